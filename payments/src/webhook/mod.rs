//! Stripe's events, delivered to the storefront (docs/payments-protocol.md): the one endpoint
//! Stripe calls, `POST /webhooks/stripe`. An event is verified, recorded once, placed with a
//! tenant and written to the outbox in one transaction; [`crate::outbox`] delivers it.

pub mod clues;
pub mod config;
pub mod http;
pub mod metrics;
pub mod recorder;
pub mod route;
pub mod signature;
pub mod store;

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;
pub use metrics::WebhookMetrics;

/// Everything the endpoint and the outbox share, one field of [`crate::AppState`].
#[derive(Debug, Clone)]
pub struct Webhooks {
    /// `None` when `STRIPE_WEBHOOK_SECRETS` or `TIQZY_PAYMENTS_DELIVERY_KEY` is missing: the
    /// endpoint answers 503 and nothing is recorded.
    pub endpoint: Option<Arc<Endpoint>>,
    pub metrics: WebhookMetrics,
    /// Wakes this replica's outbox worker when a delivery was written.
    pub written: Arc<crate::outbox::Wakes>,
    /// Owners of sessions, payments and seller accounts found before.
    pub owners: Arc<clues::Owners>,
    /// Places and records the endpoint's events, several in one commit; started with the
    /// Tenant watch ([`Webhooks::start_recording`]).
    pub recorder: Option<recorder::Recorder>,
}

/// What the endpoint checks events against.
#[derive(Debug)]
pub struct Endpoint {
    /// Stripe's signing secrets, any of which may have signed an event (rotation).
    pub secrets: Vec<SecretString>,
    /// Events must be of the platform key's mode (`sk_live_`/`rk_live_` or test).
    pub livemode: bool,
}

impl Webhooks {
    pub fn new(config: &Config) -> Self {
        let endpoint = (!config.webhooks.stripe_secrets.is_empty()
            && config.webhooks.delivery_key.is_some())
        .then(|| {
            Arc::new(Endpoint {
                secrets: config.webhooks.stripe_secrets.clone(),
                livemode: key_is_live(&config.stripe_secret_key),
            })
        });
        Self {
            endpoint,
            metrics: WebhookMetrics::new(),
            written: Arc::default(),
            owners: Arc::default(),
            recorder: None,
        }
    }

    /// Starts recording the endpoint's events (when it is configured) on the current runtime.
    pub fn start_recording(&mut self, db: &sqlx::PgPool, registry: &crate::registry::Registry) {
        self.recorder = self.endpoint.as_ref().map(|endpoint| {
            recorder::Recorder::start(
                db.clone(),
                registry.clone(),
                self.owners.clone(),
                endpoint.livemode,
            )
        });
    }
}

/// Whether the platform key is a live-mode key.
pub fn key_is_live(key: &SecretString) -> bool {
    let key = key.expose_secret();
    key.starts_with("sk_live_") || key.starts_with("rk_live_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_is_the_keys() {
        assert!(key_is_live(&"sk_live_abc".into()));
        assert!(key_is_live(&"rk_live_abc".into()));
        assert!(!key_is_live(&"sk_test_abc".into()));
        assert!(!key_is_live(&"rk_test_abc".into()));
    }
}
