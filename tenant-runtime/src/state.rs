//! What every handler can reach.

use std::sync::Arc;

use sqlx::PgPool;

use crate::auth::TokenVerifier;
use crate::cache::Cache;
use crate::config::Config;
use crate::domain::TicketSigner;
use crate::metrics::Metrics;
use crate::payments::gateway::Gateway;

#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub cache: Arc<Cache>,
    /// Checks staff tokens; `None` when the tenant has no staff sign-in configured.
    pub auth: Option<Arc<TokenVerifier>>,
    pub signer: TicketSigner,
    pub metrics: Arc<Metrics>,
    pub stripe: Arc<Gateway>,
    pub pages: Arc<minijinja::Environment<'static>>,
    /// When each order's Checkout session was last read back (the `?checkout=done` throttle).
    pub read_backs: Arc<crate::payments::checkout::ReadBacks>,
    /// Grants holds of one ticket type in batches (group commit).
    pub allocator: Arc<crate::store::allocator::Allocator>,
    /// Where panics and 500s are reported (Sentry, when `SENTRY_DSN` is set).
    pub errors: tiqzy_telemetry::Reporter,
}
