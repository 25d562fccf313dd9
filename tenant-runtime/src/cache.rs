//! Redis, strictly optional: rendered pages and API answers under the tenant's key prefix, and
//! the per-client rate limits. Every call is bounded in time and any failure reads as "no
//! cache", so the storefront keeps working, uncached, while Redis is away; rate limits are
//! then counted in this process instead ([`local`]), never skipped.
//!
//! Pages and answers are also kept for a second in this process ([`recent`]), in front of
//! Redis, so a rush on one page costs no Redis round trip per request.
//!
//! A `rediss://` URL is spoken to only over TLS, its certificate checked against the public
//! roots and the platform's CA (`REDIS_CA_PEM`): a server that cannot prove itself is "no
//! cache", never a plain-text connection.

mod local;
mod recent;

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

/// Long enough to absorb a rush on a popular page; short enough that availability shown
/// from cache lags by seconds only. Edits by staff invalidate at once.
pub const PAGE_TTL_SECS: u64 = 5;
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
const RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Cache {
    client: Option<redis::Client>,
    prefix: String,
    conn: Mutex<Connection>,
    local: local::LocalCounters,
    recent: recent::Recent,
    /// Whether the last rate limit was counted in this process, to log each switch once.
    counting_locally: std::sync::atomic::AtomicBool,
}

/// What a rate limit counts, per client and clock minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Holds placed.
    Holds,
    /// Resale listings reserved.
    Reservations,
}

impl Limit {
    fn key(self) -> &'static str {
        match self {
            Self::Holds => "hold",
            Self::Reservations => "reserve",
        }
    }
}

/// Where a rate limit was counted: in Redis, shared by every replica, or in this process
/// while Redis is away (or not configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountedIn {
    Redis,
    Process,
}

impl CountedIn {
    pub fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Process => "process",
        }
    }
}

#[derive(Debug, Default)]
struct Connection {
    live: Option<MultiplexedConnection>,
    failed_at: Option<Instant>,
}

impl Cache {
    pub fn new(url: Option<&str>, ca_pem: Option<&str>, prefix: &str) -> anyhow::Result<Self> {
        let client = match (url, ca_pem) {
            (None, _) => None,
            (Some(url), None) => Some(
                redis::Client::open(url)
                    .map_err(|_| anyhow::anyhow!("REDIS_URL: not a valid Redis URL"))?,
            ),
            (Some(url), Some(ca)) => Some(
                redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(trust_pem(ca)),
                    },
                )
                .map_err(|e| {
                    anyhow::anyhow!("REDIS_CA_PEM: not usable with REDIS_URL ({})", e.category())
                })?,
            ),
        };
        Ok(Self {
            client,
            prefix: prefix.to_owned(),
            conn: Mutex::new(Connection::default()),
            local: local::LocalCounters::default(),
            recent: recent::Recent::default(),
            counting_locally: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn enabled(&self) -> bool {
        self.client.is_some()
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A connection, unless Redis is disabled or failed within the last few seconds.
    async fn connection(&self) -> Option<MultiplexedConnection> {
        let client = self.client.as_ref()?;
        let mut conn = self.conn.lock().await;
        if let Some(live) = &conn.live {
            return Some(live.clone());
        }
        if conn.failed_at.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            return None;
        }
        match tokio::time::timeout(CALL_TIMEOUT, client.get_multiplexed_async_connection()).await {
            Ok(Ok(live)) => {
                conn.live = Some(live.clone());
                conn.failed_at = None;
                Some(live)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis unavailable; serving uncached");
                conn.failed_at = Some(Instant::now());
                None
            }
            Err(_) => {
                tracing::warn!("redis connect timed out; serving uncached");
                conn.failed_at = Some(Instant::now());
                None
            }
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Pipeline) -> Option<T> {
        let mut conn = self.connection().await?;
        match tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis call failed");
                self.forget().await;
                None
            }
            Err(_) => {
                tracing::warn!("redis call timed out");
                self.forget().await;
                None
            }
        }
    }

    async fn forget(&self) {
        let mut conn = self.conn.lock().await;
        conn.live = None;
        conn.failed_at = Some(Instant::now());
    }

    #[tracing::instrument(name = "redis", level = "info", skip_all, fields(otel.name = "redis GET", otel.kind = "client", db.system = "redis"))]
    pub async fn get(&self, key: &str) -> Option<String> {
        // Without Redis nothing is cached, not even here: a storefront without a cache is
        // always current.
        self.client.as_ref()?;
        if let Some(value) = self.recent.get(key) {
            return Some(value);
        }
        let (value,): (Option<String>,) = self.run(redis::pipe().get(self.key(key))).await?;
        let value = value?;
        self.recent.put(key, &value);
        Some(value)
    }

    /// Stores `value` in Redis and, once Redis has taken it, in this pod: while Redis is
    /// away nothing is cached, here either.
    #[tracing::instrument(name = "redis", level = "info", skip_all, fields(otel.name = "redis SET", otel.kind = "client", db.system = "redis"))]
    pub async fn put(&self, key: &str, value: &str, ttl_secs: u64) {
        let stored: Option<()> = self
            .run(
                redis::pipe()
                    .set_ex(self.key(key), value, ttl_secs)
                    .ignore(),
            )
            .await;
        if stored.is_some() {
            self.recent.put(key, value);
        }
    }

    #[tracing::instrument(name = "redis", level = "info", skip_all, fields(otel.name = "redis DEL", otel.kind = "client", db.system = "redis"))]
    pub async fn invalidate(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        self.recent.forget(keys);
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let _: Option<()> = self.run(redis::pipe().del(keys).ignore()).await;
    }

    /// Counts one more `limit` event for `client` in this clock minute: whether it is within
    /// `per_minute`, and where it was counted. Redis first; when Redis cannot answer, this
    /// process counts, so an outage lowers the limit's reach to one pod but never lifts it.
    #[tracing::instrument(name = "redis", level = "info", skip_all, fields(otel.name = "redis rate limit", otel.kind = "client", db.system = "redis"))]
    pub async fn allow(&self, limit: Limit, client: &str, per_minute: u32) -> (bool, CountedIn) {
        let minute = chrono::Utc::now().timestamp() / 60;
        let name = format!("rl:{}:{client}:{minute}", limit.key());
        if self.client.is_some() {
            let key = self.key(&name);
            let counted: Option<(i64,)> = self
                .run(
                    redis::pipe()
                        .atomic()
                        .incr(&key, 1)
                        .expire(&key, 120)
                        .ignore(),
                )
                .await;
            if let Some((n,)) = counted {
                self.counted_in(CountedIn::Redis);
                return (n <= i64::from(per_minute), CountedIn::Redis);
            }
        }
        self.counted_in(CountedIn::Process);
        let n = self.local.count(&name, minute);
        (n <= per_minute, CountedIn::Process)
    }

    fn counted_in(&self, now: CountedIn) {
        use std::sync::atomic::Ordering;
        let local = now == CountedIn::Process;
        if self.counting_locally.swap(local, Ordering::Relaxed) != local {
            if local && self.client.is_some() {
                tracing::warn!(
                    "redis unavailable; rate limits are counted per pod until it is back"
                );
            } else if !local {
                tracing::info!("rate limits are counted in redis again");
            }
        }
    }
}

/// `ca_pem` followed by the public roots, as PEM: the Redis client replaces its roots with
/// what it is given, and the platform's CA must add to the public roots, not replace them.
fn trust_pem(ca_pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let mut pem = ca_pem.trim_end().to_owned();
    pem.push('\n');
    for root in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let body = base64::engine::general_purpose::STANDARD.encode(root.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem.into_bytes()
}

/// The keys that hold anything derived from one event, and from the event list.
pub fn event_keys(slug: &str) -> Vec<String> {
    vec![
        "page:events".to_owned(),
        "api:events".to_owned(),
        format!("page:event:{slug}"),
        format!("api:event:{slug}"),
    ]
}
