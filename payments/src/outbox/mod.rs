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
//!
//! Delivery starts as soon as an event is recorded: the endpoint wakes this replica's worker
//! (which asks again shortly while another replica holds the tenant), PostgreSQL's
//! notifications wake every replica for replayed deliveries, and a periodic look finds retries
//! that came due. Up to `TIQZY_PAYMENTS_DELIVERY_CONCURRENCY` tenants are delivered to at once, each in
//! order, under locks held by the replica's one outbox session ([`session`]).

pub mod retention;
pub mod session;
pub mod store;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;

use crate::webhook::metrics::{Delivered, WebhookMetrics};
use crate::webhook::signature;
use session::{Lost, Outcome, Session};

/// How long a storefront has to acknowledge a delivery.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
pub const MAX_RETRY_DELAY_MS: u64 = 5 * 60 * 1000;
/// Deliveries of one tenant read at a time.
const BATCH: i64 = 50;
/// Refusals after which a delivery no longer holds back the tenant's later ones (about two
/// minutes with the default one-second base). Also written into `store::due_tenants`' SQL and
/// the partial index it uses.
pub const SET_ASIDE_AFTER: i32 = 8;
/// How much of a rejecting storefront's problem `detail` is kept as the reason.
const REASON_CHARS: usize = 300;
/// Tenants one look at the outbox wakes at most.
const DUE_TENANTS: i64 = 10_000;
/// The channel PostgreSQL notifies when a delivery is replayed (migration `20261204120000`).
pub const WAKE_CHANNEL: &str = "tiqzy_payments_deliveries";

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
    /// `TIQZY_PAYMENTS_DELIVERY_CONCURRENCY`: tenants delivered to at the same time.
    pub concurrency: usize,
    /// `TIQZY_PAYMENTS_RETENTION_DAYS`, as a duration.
    pub retention: Duration,
    pub metrics: WebhookMetrics,
    /// Wake-ups of this replica's worker, by tenant.
    pub wakes: Arc<Wakes>,
}

/// Tells this replica's worker that a tenant has a delivery to make now. The endpoint wakes
/// it for the events it records; PostgreSQL's notifications wake it for deliveries an operator
/// replays. An event recorded while another replica holds the tenant's lock is tried again
/// shortly ([`CONTENDED_RETRY`]) until this replica gets the lock or finds nothing left.
#[derive(Debug)]
pub struct Wakes {
    sender: mpsc::UnboundedSender<String>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl Default for Wakes {
    fn default() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

impl Wakes {
    pub fn wake(&self, tenant: &str) {
        let _ = self.sender.send(tenant.to_owned());
    }

    /// The worker's end; there is one.
    fn take(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.receiver.lock().expect("wakes").take()
    }
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
            concurrency: config.concurrency,
            retention: config.retention,
            metrics: webhooks.metrics.clone(),
            wakes: webhooks.written.clone(),
        })
    }

    /// Starts the worker on the current runtime: the dispatcher, the database session it
    /// delivers under, the listener for replayed deliveries, and the periodic look at
    /// the outbox (retries that came due, the gauges, pruning).
    pub fn start(self) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| anyhow::anyhow!("building the delivery client: {e}"))?;
        let wakes = self
            .wakes
            .take()
            .ok_or_else(|| anyhow::anyhow!("the outbox worker was started twice"))?;
        tokio::spawn(listen(self.db.clone(), self.wakes.clone()));
        tokio::spawn(look(self.clone()));
        let session = Session::start(self.db.clone(), BATCH);
        let worker = Arc::new(Worker {
            outbox: self,
            http,
            session,
        });
        Ok(tokio::spawn(worker.run(wakes)))
    }
}

/// Wakes the worker for every delivery PostgreSQL reports replayed. A lost connection loses
/// notifications; the periodic look finds what they were about.
async fn listen(db: sqlx::PgPool, wakes: Arc<Wakes>) {
    loop {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&db).await?;
            listener.listen(WAKE_CHANNEL).await?;
            loop {
                let notification = listener.recv().await?;
                wakes.wake(notification.payload());
            }
        };
        let ended: sqlx::Result<()> = listener.await;
        if let Err(e) = ended {
            tracing::warn!(error = %e, "listening for deliveries failed; retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every `poll`: wakes the tenants whose deliveries came due (retries), refreshes the gauges,
/// and now and then prunes what the retention period no longer keeps.
async fn look(outbox: Outbox) {
    let mut pruned_at: Option<Instant> = None;
    loop {
        match store::due_tenants(&outbox.db, DUE_TENANTS).await {
            Ok(tenants) => tenants.iter().for_each(|t| outbox.wakes.wake(t)),
            Err(e) => tracing::warn!(error = %e, "reading the outbox failed"),
        }
        match store::oldest_pending_age(&outbox.db).await {
            Ok(age) => outbox.metrics.oldest_pending(age),
            Err(e) => tracing::warn!(error = %e, "reading the outbox's age failed"),
        }
        match store::rejected_count(&outbox.db).await {
            Ok(count) => outbox.metrics.rejected(count),
            Err(e) => tracing::warn!(error = %e, "counting rejected deliveries failed"),
        }
        if pruned_at.is_none_or(|at| at.elapsed() >= retention::PRUNE_EVERY) {
            pruned_at = Some(Instant::now());
            match retention::prune(&outbox.db, outbox.retention).await {
                Ok(pruned) if pruned.any() => tracing::info!(?pruned, "pruned the outbox"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning the outbox failed"),
            }
        }
        tokio::time::sleep(outbox.poll).await;
    }
}

/// Whether this replica got the tenant's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    Held,
    HeldElsewhere,
}

/// How soon a tenant another replica was delivering to is tried again.
const CONTENDED_RETRY: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Worker {
    outbox: Outbox,
    http: reqwest::Client,
    session: Session,
}

/// The dispatcher's view of the tenants: those being delivered to (and whether they were
/// woken again meanwhile) and those waiting for a free slot, in the order they were woken.
#[derive(Debug, Default)]
struct Tenants {
    busy: HashMap<String, bool>,
    waiting: VecDeque<String>,
    queued: HashSet<String>,
}

impl Tenants {
    fn woken(&mut self, tenant: String) {
        if let Some(again) = self.busy.get_mut(&tenant) {
            *again = true;
        } else if self.queued.insert(tenant.clone()) {
            self.waiting.push_back(tenant);
        }
    }

    /// A worker finished with `tenant`; it is woken again if something came meanwhile.
    fn finished(&mut self, tenant: &str) {
        if self.busy.remove(tenant) == Some(true) {
            self.woken(tenant.to_owned());
        }
    }

    /// The next tenant to deliver to, if fewer than `limit` are busy.
    fn next(&mut self, limit: usize) -> Option<String> {
        if self.busy.len() >= limit {
            return None;
        }
        let tenant = self.waiting.pop_front()?;
        self.queued.remove(&tenant);
        self.busy.insert(tenant.clone(), false);
        Some(tenant)
    }
}

impl Worker {
    async fn run(self: Arc<Self>, mut wakes: mpsc::UnboundedReceiver<String>) {
        let (done, mut finished) = mpsc::unbounded_channel::<String>();
        let mut tenants = Tenants::default();
        loop {
            tokio::select! {
                woken = wakes.recv() => match woken {
                    Some(tenant) => tenants.woken(tenant),
                    None => return,
                },
                Some(tenant) = finished.recv() => tenants.finished(&tenant),
            }
            while let Some(tenant) = tenants.next(self.outbox.concurrency.max(1)) {
                let (worker, done) = (self.clone(), done.clone());
                tokio::spawn(async move {
                    match worker.deliver(&tenant).await {
                        Ok(Claim::Held) => {}
                        // Another replica delivers to the tenant; what was recorded here after
                        // its last read would wait for the periodic look: ask again soon.
                        Ok(Claim::HeldElsewhere) => {
                            let wakes = worker.outbox.wakes.clone();
                            let tenant = tenant.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(CONTENDED_RETRY).await;
                                wakes.wake(&tenant);
                            });
                        }
                        Err(e) => {
                            tracing::warn!(%tenant, error = %e, "delivering to a storefront stopped");
                        }
                    }
                    let _ = done.send(tenant);
                });
            }
        }
    }

    /// Sends the tenant's due deliveries in order until one fails (one set aside does not stop
    /// the rest), under the tenant's lock; nothing when another replica holds it.
    async fn deliver(&self, tenant: &str) -> Result<Claim, Lost> {
        let Some(batch) = self.session.claim(tenant).await? else {
            return Ok(Claim::HeldElsewhere);
        };
        let delivered = self.deliver_locked(tenant, batch).await;
        self.session.release(tenant);
        delivered.map(|()| Claim::Held)
    }

    /// [`Self::deliver`] once the lock is held; each outcome is committed before the next
    /// delivery is sent.
    async fn deliver_locked(
        &self,
        tenant: &str,
        mut batch: Vec<store::Pending>,
    ) -> Result<(), Lost> {
        let secret = tiqzy_crds::payments::delivery_secret(
            self.outbox.delivery_key.expose_secret().as_bytes(),
            tenant,
        );
        let url = self.outbox.url_template.replace("{tenant}", tenant);
        loop {
            // Fewer than a batch read: everything pending was read. What is recorded after
            // the read wakes the tenant again (this replica's own events) or is found by the
            // replica that recorded it, so reading again would find nothing to do.
            let all_read = batch.len() < usize::try_from(BATCH).unwrap_or(usize::MAX);
            let mut attempted = false;
            for delivery in batch {
                let set_aside = delivery.refusals >= SET_ASIDE_AFTER;
                if !delivery.due {
                    if set_aside {
                        continue;
                    }
                    return Ok(());
                }
                attempted = true;
                if !self.attempt(tenant, &url, &secret, &delivery).await? {
                    return Ok(());
                }
            }
            // Everything read was attempted or set aside: read on while that did something
            // and more may be waiting.
            if !attempted || all_read {
                return Ok(());
            }
            batch = self.session.next(tenant).await?;
        }
    }

    /// Sends one delivery and writes what became of it; `false` when the tenant's later
    /// deliveries must wait (it failed and still holds them back).
    async fn attempt(
        &self,
        tenant: &str,
        url: &str,
        secret: &str,
        delivery: &store::Pending,
    ) -> Result<bool, Lost> {
        let failure = match self.send(url, secret, &delivery.body).await {
            Ok(()) => {
                self.session
                    .write(tenant, delivery.id, Outcome::Acknowledged)
                    .await?;
                self.outbox.metrics.delivery(Delivered::Acknowledged);
                tracing::debug!(%tenant, event = %delivery.event_id, "event delivered");
                return Ok(true);
            }
            Err(failure) => failure,
        };
        if let Failure::Rejected { .. } = failure {
            let reason = failure.to_string();
            self.session
                .write(tenant, delivery.id, Outcome::Rejected { reason })
                .await?;
            self.outbox.metrics.delivery(Delivered::Rejected);
            tracing::warn!(%tenant, event = %delivery.event_id, reason = %failure,
                "the storefront rejected the event for good; it is kept and not retried");
            return Ok(true);
        }
        let attempt = u32::try_from(delivery.attempts).unwrap_or(0) + 1;
        let delay_ms = retry_delay_ms(self.outbox.retry_base, attempt, rand::random());
        let counts = failure.counts_against_the_event();
        let postponed = Outcome::Postponed {
            delay_ms,
            error: failure.to_string(),
            counts,
        };
        self.session.write(tenant, delivery.id, postponed).await?;
        self.outbox.metrics.delivery(match failure {
            Failure::Refused(_) => Delivered::Refused,
            _ => Delivered::Unreachable,
        });
        tracing::info!(%tenant, event = %delivery.event_id, attempt, delay_ms,
            reason = %failure, "delivery to the storefront will be retried");
        Ok(delivery.refusals + i32::from(counts) >= SET_ASIDE_AFTER)
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
