//! SQL, in small functions that take a pool or a transaction. Stock moves only through the
//! conditional UPDATEs in `holds`. Row locks are taken holds before ticket types before
//! orders, and listings before tickets, so concurrent flows cannot deadlock.

pub mod allocator;
pub mod catalog;
pub mod client_caps;
pub mod holds;
pub mod identity;
pub mod ledger;
pub mod listings;
pub mod orders;
pub mod payments;
pub mod sales;
pub mod tickets;

use rand::Rng;

use crate::domain::{Currency, Money};

/// 256 random bits, URL-safe: the secret in a buyer's order and ticket links.
pub fn access_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Money read back from a row; the table's CHECKs make a failure here a bug, hence internal.
pub(crate) fn money(amount_minor: i64, currency: &str) -> anyhow::Result<Money> {
    Ok(Money::new(amount_minor, Currency::parse(currency)?)?)
}
