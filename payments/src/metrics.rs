//! Prometheus metrics served at `/metrics`: requests by operation and outcome, and how long
//! Stripe takes to answer each kind of call.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::http::problem::ProblemKind;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Method and route template (`POST /v1/transfers/{id}/reversals`): bounded cardinality.
    pub operation: String,
    /// `ok`, or the problem's type (`account-not-yours`, `budget-exhausted`, ...).
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StripeLabels {
    /// What the service asked Stripe (`create_transfer`, `create_refund`, ...).
    pub call: String,
    /// `ok`, `refused`, `throttled`, `unavailable`.
    pub outcome: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    stripe_seconds: Family<StripeLabels, Histogram>,
    token_reviews: Family<OutcomeLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `accepted`, `refused`, `failed` (the API server did not answer).
    pub outcome: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::with(|_| {})
    }
}

impl Metrics {
    /// The service's metrics, plus those `more` registers (the webhook endpoint's and the
    /// outbox's), all served together at `/metrics`.
    pub fn with(more: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::with_prefix("tiqzy_payments");
        more(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by operation and outcome",
            requests.clone(),
        );
        let stripe_seconds = Family::<StripeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 12))
        });
        registry.register(
            "stripe_request_duration_seconds",
            "Time Stripe took to answer, by call and outcome",
            stripe_seconds.clone(),
        );
        let token_reviews = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "token_reviews",
            "TokenReviews asked of the API server (answers reused from the cache are not counted)",
            token_reviews.clone(),
        );
        Self {
            registry,
            requests,
            stripe_seconds,
            token_reviews,
        }
    }
}

impl Metrics {
    pub fn stripe_call(&self, call: &str, outcome: &str, took: Duration) {
        self.stripe_seconds
            .get_or_create(&StripeLabels {
                call: call.to_owned(),
                outcome: outcome.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn token_review(&self, outcome: &str) {
        self.token_reviews
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

/// Counts every answered request under its route and outcome.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let operation = format!(
        "{} {}",
        request.method(),
        request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| p.as_str())
    );
    let response = next.run(request).await;
    let outcome = match response.extensions().get::<ProblemKind>() {
        Some(ProblemKind(kind)) => kind.clone(),
        None if response.status().is_success() => "ok".to_owned(),
        None => response.status().as_u16().to_string(),
    };
    metrics
        .requests
        .get_or_create(&RequestLabels { operation, outcome })
        .inc();
    response
}
