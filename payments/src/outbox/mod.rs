//! The durable outbox: every recorded event goes to its tenant's storefront, signed with the
//! tenant's delivery secret, until a `2xx` acknowledges it. Each replica runs one worker;
//! a per-tenant advisory lock lets one worker at a time deliver a tenant's events, oldest
//! first, and a failing storefront holds back only its own events. What a failed attempt
//! means depends on the storefront's answer ([`Failure`]): `422` rejects the event for good
//! (the delivery is closed, kept with the reason and counted, never retried); no connection or
//! a gateway's `502`/`503`/`504` means the storefront is not there, and the tenant's events
//! wait for it in order however long that takes; any other refusal counts against the event,
//! and a delivery refused [`SET_ASIDE_AFTER`] times stops holding back the tenant's later
//! events (one event the storefront keeps refusing must not stop all its payments) and is
//! retried on its own.

pub mod store;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Notify, Semaphore};

use crate::webhook::metrics::{Delivered, WebhookMetrics};
use crate::webhook::signature;

/// How long a storefront has to acknowledge a delivery.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
pub const MAX_RETRY_DELAY_MS: u64 = 5 * 60 * 1000;
/// Tenants one worker delivers to at the same time.
const CONCURRENT_TENANTS: usize = 4;
/// Deliveries of one tenant sent under one hold of its lock.
const BATCH: i64 = 50;
/// Refusals after which a delivery no longer holds back the tenant's later ones (about two
/// minutes with the default one-second base). Also written into `store::due_tenants`' SQL and
/// the partial index it uses.
pub const SET_ASIDE_AFTER: i32 = 8;
/// How much of a rejecting storefront's problem `detail` is kept as the reason.
const REASON_CHARS: usize = 300;
/// How often the oldest-pending gauge is refreshed at most.
const GAUGE_EVERY: Duration = Duration::from_secs(1);

/// What a worker needs; built from [`crate::Config`] when a delivery key is configured.
#[derive(Debug, Clone)]
pub struct Outbox {
    pub db: sqlx::PgPool,
    /// `TIQZY_PAYMENTS_DELIVERY_KEY`: tenant secrets are derived from it.
    pub delivery_key: SecretString,
    /// `TIQZY_PAYMENTS_DELIVERY_URL`, `{tenant}` replaced by the tenant's name.
    pub url_template: String,
    pub retry_base: Duration,
    pub poll: Duration,
    pub metrics: WebhookMetrics,
    /// Notified when this replica wrote a delivery.
    pub written: Arc<Notify>,
}

/// Why an attempt did not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Failure {
    /// `422`: the storefront read the event and will never apply it.
    #[error("the storefront rejected the event for good ({status}): {detail}")]
    Rejected { status: u16, detail: String },
    #[error("the storefront answered {0}")]
    Refused(u16),
    /// No answer; `connected` when a connection was made (the storefront is there, but did
    /// not answer in time).
    #[error("the storefront did not answer: {error}")]
    Unreachable { error: String, connected: bool },
}

impl Failure {
    /// Whether the attempt says something about this event, rather than about a storefront
    /// that is not there (no connection; a gateway's `502`/`503`/`504` in front of it).
    fn counts_against_the_event(&self) -> bool {
        match self {
            Self::Rejected { .. } => true,
            Self::Refused(status) => !matches!(status, 502..=504),
            Self::Unreachable { connected, .. } => *connected,
        }
    }
}

impl Outbox {
    /// The outbox of a replica whose configuration has a delivery key; without one nothing
    /// can be signed, so nothing is delivered (and nothing is recorded to deliver).
    pub fn new(
        db: &sqlx::PgPool,
        config: &crate::webhook::config::WebhookConfig,
        webhooks: &crate::webhook::Webhooks,
    ) -> Option<Self> {
        Some(Self {
            db: db.clone(),
            delivery_key: config.delivery_key.clone()?,
            url_template: config.delivery_url.clone(),
            retry_base: config.retry_base,
            poll: config.poll,
            metrics: webhooks.metrics.clone(),
            written: webhooks.written.clone(),
        })
    }

    /// Starts the worker on the current runtime.
    pub fn start(self) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("building the delivery client: {e}"))?;
        Ok(tokio::spawn(Arc::new(Worker { outbox: self, http }).run()))
    }
}

#[derive(Debug)]
struct Worker {
    outbox: Outbox,
    http: reqwest::Client,
}

impl Worker {
    async fn run(self: Arc<Self>) {
        let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
        let permits = Arc::new(Semaphore::new(CONCURRENT_TENANTS));
        let finished = Arc::new(Notify::new());
        let mut gauge_at: Option<Instant> = None;
        loop {
            if gauge_at.is_none_or(|at| at.elapsed() >= GAUGE_EVERY) {
                gauge_at = Some(Instant::now());
                match store::oldest_pending_age(&self.outbox.db).await {
                    Ok(age) => self.outbox.metrics.oldest_pending(age),
                    Err(e) => tracing::warn!(error = %e, "reading the outbox's age failed"),
                }
                match store::rejected_count(&self.outbox.db).await {
                    Ok(count) => self.outbox.metrics.rejected(count),
                    Err(e) => tracing::warn!(error = %e, "counting rejected deliveries failed"),
                }
            }
            match store::due_tenants(&self.outbox.db, 64).await {
                Ok(tenants) => {
                    for tenant in tenants {
                        if !busy.lock().expect("busy set").insert(tenant.clone()) {
                            continue;
                        }
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            busy.lock().expect("busy set").remove(&tenant);
                            break;
                        };
                        let (worker, busy, finished) =
                            (self.clone(), busy.clone(), finished.clone());
                        tokio::spawn(async move {
                            if let Err(e) = worker.deliver(&tenant).await {
                                tracing::warn!(%tenant, error = %e, "delivering to a storefront failed");
                            }
                            busy.lock().expect("busy set").remove(&tenant);
                            drop(permit);
                            finished.notify_one();
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading the outbox failed"),
            }
            tokio::select! {
                () = self.outbox.written.notified() => {}
                () = finished.notified() => {}
                () = tokio::time::sleep(self.outbox.poll) => {}
            }
        }
    }

    /// Sends the tenant's due deliveries in order until one fails (one set aside does not stop
    /// the rest), under the tenant's lock.
    async fn deliver(&self, tenant: &str) -> sqlx::Result<()> {
        let mut conn = self.outbox.db.acquire().await?;
        if !store::try_lock(&mut conn, tenant).await? {
            return Ok(());
        }
        let delivered = self.deliver_locked(&mut conn, tenant).await;
        let unlocked = store::unlock(&mut conn, tenant).await;
        if delivered.is_err() || unlocked.is_err() {
            // A lock must not go back to the pool with its connection: closing the
            // connection ends the session, and the lock with it.
            conn.close_on_drop();
        }
        delivered.and(unlocked)
    }

    /// [`Self::deliver`] once the lock is held; each outcome is committed as it happens.
    async fn deliver_locked(
        &self,
        conn: &mut sqlx::PgConnection,
        tenant: &str,
    ) -> sqlx::Result<()> {
        let secret = tiqzy_crds::payments::delivery_secret(
            self.outbox.delivery_key.expose_secret().as_bytes(),
            tenant,
        );
        let url = self.outbox.url_template.replace("{tenant}", tenant);
        for delivery in store::pending(&mut *conn, tenant, BATCH).await? {
            let set_aside = delivery.refusals >= SET_ASIDE_AFTER;
            if !delivery.due {
                if set_aside {
                    continue;
                }
                break;
            }
            let failure = match self.send(&url, &secret, &delivery.body).await {
                Ok(()) => {
                    store::acknowledged(&mut *conn, delivery.id).await?;
                    self.outbox.metrics.delivery(Delivered::Acknowledged);
                    tracing::debug!(%tenant, event = %delivery.event_id, "event delivered");
                    continue;
                }
                Err(failure) => failure,
            };
            if let Failure::Rejected { .. } = failure {
                store::rejected(&mut *conn, delivery.id, &failure.to_string()).await?;
                self.outbox.metrics.delivery(Delivered::Rejected);
                tracing::warn!(%tenant, event = %delivery.event_id, reason = %failure,
                    "the storefront rejected the event for good; it is kept and not retried");
                continue;
            }
            let attempt = u32::try_from(delivery.attempts).unwrap_or(0) + 1;
            let delay = retry_delay_ms(self.outbox.retry_base, attempt, rand::random());
            let counts = failure.counts_against_the_event();
            store::postponed(&mut *conn, delivery.id, delay, &failure.to_string(), counts).await?;
            self.outbox.metrics.delivery(match failure {
                Failure::Refused(_) => Delivered::Refused,
                _ => Delivered::Unreachable,
            });
            tracing::info!(%tenant, event = %delivery.event_id, attempt, delay_ms = delay,
                reason = %failure, "delivery to the storefront will be retried");
            if delivery.refusals + i32::from(counts) < SET_ASIDE_AFTER {
                break;
            }
        }
        Ok(())
    }

    async fn send(&self, url: &str, secret: &str, body: &[u8]) -> Result<(), Failure> {
        let header = signature::header(secret, signature::now(), body);
        let answer = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("stripe-signature", header)
            .body(body.to_vec())
            .send()
            .await
            // Without the URL: it names only the tenant's storefront, but the error's own
            // wording is enough to tell a timeout from a refused connection.
            .map_err(|e| Failure::Unreachable {
                connected: !e.is_connect(),
                error: e.without_url().to_string(),
            })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        if status != reqwest::StatusCode::UNPROCESSABLE_ENTITY {
            return Err(Failure::Refused(status.as_u16()));
        }
        // The storefront's problem says why (the runtime's `detail` names no secret).
        let problem: serde_json::Value = answer.json().await.unwrap_or_default();
        let detail = problem["detail"]
            .as_str()
            .or_else(|| problem["title"].as_str())
            .unwrap_or("no reason given");
        Err(Failure::Rejected {
            status: status.as_u16(),
            detail: detail.chars().take(REASON_CHARS).collect(),
        })
    }
}

/// The wait before attempt `attempt + 1`: `base` doubling per failed attempt, capped at five
/// minutes, then jittered into its upper half (`unit` in [0, 1)) so a storefront coming back
/// is not hit by every replica's retries at once.
pub fn retry_delay_ms(base: Duration, attempt: u32, unit: f64) -> i64 {
    let base = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(1);
    let doubled = base
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(30))
        .min(MAX_RETRY_DELAY_MS);
    let half = doubled / 2;
    let jitter = (half as f64 * unit.clamp(0.0, 1.0)) as u64;
    i64::try_from(doubled - half + jitter).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_says_something_about_the_event_counts_against_it() {
        let rejected = Failure::Rejected {
            status: 422,
            detail: "no".into(),
        };
        assert!(rejected.counts_against_the_event());
        for status in [400, 401, 404, 409, 500] {
            assert!(
                Failure::Refused(status).counts_against_the_event(),
                "{status}"
            );
        }
        for status in [502, 503, 504] {
            assert!(
                !Failure::Refused(status).counts_against_the_event(),
                "{status}"
            );
        }
        let timeout = Failure::Unreachable {
            error: "timed out".into(),
            connected: true,
        };
        assert!(timeout.counts_against_the_event());
        let no_connection = Failure::Unreachable {
            error: "connection refused".into(),
            connected: false,
        };
        assert!(!no_connection.counts_against_the_event());
    }

    #[test]
    fn retries_double_from_the_base_up_to_five_minutes_with_jitter() {
        let second = Duration::from_secs(1);
        assert_eq!(retry_delay_ms(second, 1, 1.0), 1_000);
        assert_eq!(retry_delay_ms(second, 1, 0.0), 500);
        assert_eq!(retry_delay_ms(second, 2, 1.0), 2_000);
        assert_eq!(retry_delay_ms(second, 4, 1.0), 8_000);
        assert_eq!(retry_delay_ms(second, 9, 1.0), 256_000);
        for attempt in [10, 11, 40, u32::MAX] {
            let delay = retry_delay_ms(second, attempt, 1.0);
            assert_eq!(delay, 300_000, "attempt {attempt}");
            assert!(retry_delay_ms(second, attempt, 0.0) >= 150_000);
        }
    }
}
