//! State outside Kubernetes that a tenant owns: its PostgreSQL database and role, its Redis
//! ACL user (each with idempotent `ensure_*` and `remove_*` functions); and Key Vault, which
//! the tenant's TLS certificate is read from.

pub mod blob;
pub mod keyvault;
mod pg_tls;
pub mod postgres;
pub mod redis;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// RFC 3986 unreserved characters stay as they are in URL user info and paths.
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `part` percent-encoded for the user info or path of a connection URL.
fn url_part(part: &str) -> String {
    utf8_percent_encode(part, URL_COMPONENT).to_string()
}

/// A host for a URL authority: IPv6 addresses in brackets.
fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Why a tenant's state outside Kubernetes could not be ensured or removed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] postgres::DatabaseError),
    #[error(transparent)]
    Cache(#[from] redis::CacheError),
    /// A server's admin credentials or address could not be read (the message names the
    /// Secret or the URL, never a value).
    #[error("{0}")]
    Admin(String),
}
