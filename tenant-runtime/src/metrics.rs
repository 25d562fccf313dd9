//! Prometheus metrics served at `/metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MailLabels {
    /// The message kind (`order_link`, `tickets`, `sign_in_link`, `resale_sold`, ...).
    pub kind: String,
}

/// The mail outbox's counters and gauges. Process-wide (one tenant per process): the outbox
/// and its worker count into it without holding the app's state.
#[derive(Debug, Default)]
pub struct MailMetrics {
    /// Written to the outbox (counted when written; a rolled-back transaction's mail is
    /// counted but never sent).
    pub queued: Family<MailLabels, Counter>,
    /// Accepted by the relay.
    pub sent: Family<MailLabels, Counter>,
    /// Refused for good (never retried).
    pub failed: Family<MailLabels, Counter>,
    /// Attempts that failed and will be retried.
    pub retried: Family<MailLabels, Counter>,
    /// Rows neither sent nor failed.
    pub outbox_depth: Gauge,
    /// Age of the oldest such row, in seconds (0 when none).
    pub outbox_oldest_seconds: Gauge<f64, AtomicU64>,
    /// Sent rows deleted after the retention period.
    pub pruned: Counter,
}

impl MailMetrics {
    fn by_kind(family: &Family<MailLabels, Counter>, kind: &str) {
        family
            .get_or_create(&MailLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn queued(&self, kind: &str) {
        Self::by_kind(&self.queued, kind);
    }

    pub fn sent(&self, kind: &str) {
        Self::by_kind(&self.sent, kind);
    }

    pub fn failed(&self, kind: &str) {
        Self::by_kind(&self.failed, kind);
    }

    pub fn retried(&self, kind: &str) {
        Self::by_kind(&self.retried, kind);
    }
}

/// The allocator's batches, as [`Metrics`] registers them.
#[derive(Debug, Clone)]
pub struct BatchMetrics {
    pub sizes: Histogram,
    pub queued: Histogram,
    pub took: Histogram,
}

impl Default for BatchMetrics {
    fn default() -> Self {
        let seconds = || Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        Self {
            sizes: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
            queued: seconds(),
            took: seconds(),
        }
    }
}

/// The process's mail metrics.
pub static MAIL: LazyLock<MailMetrics> = LazyLock::new(MailMetrics::default);

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram>,
    pub holds: Family<OutcomeLabels, Counter>,
    /// What the allocator's batches did: requests per batch, the wait before one, its time.
    pub hold_batches: BatchMetrics,
    pub expired_holds: Counter,
    pub stripe_errors: Family<StripeErrorLabels, Counter>,
    pub webhooks: Family<OutcomeLabels, Counter>,
    pub rate_limits: Family<RateLimitLabels, Counter>,
    /// Sign-in links by outcome: `requested` (mailed), `limited` (429), `used`, `refused`.
    pub sign_in_links: Family<OutcomeLabels, Counter>,
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
        let hold_batches = BatchMetrics::default();
        registry.register(
            "hold_batch_size",
            "Hold requests of one ticket type decided in one transaction",
            hold_batches.sizes.clone(),
        );
        registry.register(
            "hold_queue_duration_seconds",
            "Time a hold request waited for its batch to start",
            hold_batches.queued.clone(),
        );
        registry.register(
            "hold_batch_duration_seconds",
            "Time of one batch's transaction, from its first lock to its commit",
            hold_batches.took.clone(),
        );
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
        let sign_in_links = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "sign_in_links",
            "Sign-in links requested, limited, used and refused",
            sign_in_links.clone(),
        );
        register_mail(&mut registry);
        Self {
            sign_in_links,
            registry,
            rate_limits,
            stripe_errors,
            webhooks,
            requests,
            request_seconds,
            holds,
            hold_batches,
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

    pub fn sign_in_link(&self, outcome: &str) {
        self.sign_in_links
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

/// The mail metrics are shared by every registry of the process (one per app).
fn register_mail(registry: &mut Registry) {
    let mail = &*MAIL;
    registry.register(
        "mail_queued",
        "Mails written to the outbox, by kind",
        mail.queued.clone(),
    );
    registry.register(
        "mail_sent",
        "Mails the relay accepted, by kind",
        mail.sent.clone(),
    );
    registry.register(
        "mail_failed",
        "Mails the relay refused for good, by kind",
        mail.failed.clone(),
    );
    registry.register(
        "mail_retried",
        "Mail sends that failed and will be retried, by kind",
        mail.retried.clone(),
    );
    registry.register(
        "mail_outbox_depth",
        "Mails in the outbox neither sent nor failed",
        mail.outbox_depth.clone(),
    );
    registry.register(
        "mail_outbox_oldest_seconds",
        "Age of the oldest unsent mail in the outbox",
        mail.outbox_oldest_seconds.clone(),
    );
    registry.register(
        "mail_pruned",
        "Sent mails deleted after the retention period",
        mail.pruned.clone(),
    );
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
