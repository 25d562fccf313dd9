//! Mail to buyers and sellers, through a durable outbox: a [`Message`] is written with
//! [`enqueue`] in the transaction of the change that causes it, and [`worker::run`] sends it
//! over SMTP (or, without a relay, logs its recipient and subject: bodies hold capability
//! links), retrying with backoff until the relay accepts it.

mod message;
mod outbox;
pub mod worker;

pub use message::{Amount, Letterhead, Message, Rendered};
pub use outbox::{body, enqueue, enqueue_all, message_id, queued};
