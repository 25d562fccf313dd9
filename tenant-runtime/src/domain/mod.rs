//! The ticketing vocabulary: values that cannot be invalid once constructed, and the pure rules
//! (order transitions, resale caps, ticket codes) the stores and handlers rely on.

mod fees;
mod money;
mod order;
mod ticket_code;
mod values;

pub use fees::{BasisPoints, Split};
pub use money::{Currency, Money, MoneyError, PriceCap};
pub use order::{OrderKind, OrderState};
pub use ticket_code::{CodeError, PublicKey, TicketCode, TicketSigner};
pub use values::{Email, Quantity, Slug, ValueError};
