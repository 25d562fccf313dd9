//! Counters of the webhook endpoint and the outbox; [`WebhookMetrics::register`] adds them to
//! the service's registry, served at `/metrics`.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// Stripe's event type; `unverified` when the signature did not check out (an
    /// unverified body chooses no label values).
    pub event_type: String,
    pub outcome: &'static str,
}

/// What became of an event Stripe (or someone) sent.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Received {
    Verified,
    BadSignature,
    Duplicate,
    Unroutable,
}

impl Received {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::BadSignature => "bad-signature",
            Self::Duplicate => "duplicate",
            Self::Unroutable => "unroutable",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub outcome: &'static str,
}

/// What one delivery attempt to a storefront did.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Delivered {
    Acknowledged,
    /// Refused for good (`422`): not retried.
    Rejected,
    Refused,
    Unreachable,
}

impl Delivered {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acknowledged => "acknowledged",
            Self::Rejected => "rejected",
            Self::Refused => "refused",
            Self::Unreachable => "unreachable",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    events: Family<EventLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    oldest_pending: Gauge<i64, AtomicI64>,
    rejected: Gauge<i64, AtomicI64>,
}

impl WebhookMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the metrics to `registry` (give it the `tiqzy_payments` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "webhook_events",
            "Stripe events received, by type and outcome",
            self.events.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Delivery attempts to storefronts, by outcome",
            self.deliveries.clone(),
        );
        registry.register(
            "outbox_oldest_pending_seconds",
            "Age of the oldest delivery not yet acknowledged (0 when none is pending)",
            self.oldest_pending.clone(),
        );
        registry.register(
            "outbox_rejected_deliveries",
            "Deliveries their storefronts rejected for good (422), kept with the reason in the outbox",
            self.rejected.clone(),
        );
    }

    pub fn event(&self, kind: &str, outcome: Received) {
        self.events
            .get_or_create(&EventLabels {
                event_type: kind.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub fn delivery(&self, outcome: Delivered) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub fn oldest_pending(&self, seconds: i64) {
        self.oldest_pending.set(seconds);
    }

    pub fn rejected(&self, count: i64) {
        self.rejected.set(count);
    }
}
