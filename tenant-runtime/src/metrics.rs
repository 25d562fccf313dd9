//! Prometheus metrics served at `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    /// The route template (`/api/events/{slug}`), never the raw path: bounded cardinality.
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StripeErrorLabels {
    /// What we asked Stripe to do (`create_checkout_session`, `transfer`, ...).
    pub operation: String,
    /// `unreachable`, `refused`, `server_error`, `unreadable_response`, `configuration`.
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    /// `holds` or `reservations`.
    pub limit: String,
    /// `redis` (shared by every replica) or `process` (this pod only, while Redis is away).
    pub counted_in: String,
    /// `allowed` or `refused`.
    pub outcome: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram>,
    pub holds: Family<OutcomeLabels, Counter>,
    pub expired_holds: Counter,
    pub stripe_errors: Family<StripeErrorLabels, Counter>,
    pub webhooks: Family<OutcomeLabels, Counter>,
    pub rate_limits: Family<RateLimitLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tiqzy");
        let requests = Family::<RouteLabels, Counter>::default();
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        let holds = Family::<OutcomeLabels, Counter>::default();
        let expired_holds = Counter::default();
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            request_seconds.clone(),
        );
        registry.register("holds", "Hold attempts by outcome", holds.clone());
        registry.register(
            "holds_expired",
            "Holds that expired and returned their tickets",
            expired_holds.clone(),
        );
        let stripe_errors = Family::<StripeErrorLabels, Counter>::default();
        registry.register(
            "stripe_errors",
            "Failed Stripe requests by operation and kind",
            stripe_errors.clone(),
        );
        let webhooks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "stripe_webhooks",
            "Stripe webhook deliveries by outcome",
            webhooks.clone(),
        );
        let rate_limits = Family::<RateLimitLabels, Counter>::default();
        registry.register(
            "rate_limit_checks",
            "Per-client rate limit checks by limit, where they were counted, and outcome",
            rate_limits.clone(),
        );
        Self {
            registry,
            rate_limits,
            stripe_errors,
            webhooks,
            requests,
            request_seconds,
            holds,
            expired_holds,
        }
    }

    pub fn hold(&self, outcome: &str) {
        self.holds
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn rate_limit(&self, limit: &str, counted_in: &str, allowed: bool) {
        self.rate_limits
            .get_or_create(&RateLimitLabels {
                limit: limit.to_owned(),
                counted_in: counted_in.to_owned(),
                outcome: if allowed { "allowed" } else { "refused" }.to_owned(),
            })
            .inc();
    }

    pub fn stripe_error(&self, operation: &str, kind: &str) {
        self.stripe_errors
            .get_or_create(&StripeErrorLabels {
                operation: operation.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn webhook(&self, outcome: &str) {
        self.webhooks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = RouteLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .request_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}
