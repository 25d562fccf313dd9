//! What every handler shares.

use std::sync::Arc;

use crate::budget::Budget;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::stripe::Stripe;

#[derive(Clone)]
pub struct AppState {
    /// Stripe's webhook endpoint and the outbox it feeds.
    pub webhooks: crate::webhook::Webhooks,
    pub db: sqlx::PgPool,
    /// Checks storefront tokens (TokenReview); with the service's own ServiceAccount.
    pub kube: kube::Client,
    /// Recent TokenReview verdicts.
    pub verdicts: Arc<crate::caller::Verdicts>,
    pub registry: Registry,
    pub stripe: Stripe,
    /// Each tenant's share of the Stripe rate limit.
    pub budget: Arc<Budget>,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("webhooks", &self.webhooks)
            .field("db", &self.db)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}
