//! Group commit for holds: buyers of one ticket type who arrive together are granted in one
//! transaction.
//!
//! An on-sale sends every buyer of an event at the same counter row, and a buyer's hold has
//! to wait for the previous one to commit, so one hold per commit caps the rush at what the
//! machine can commit on one row. Here each ticket type in this process has one worker and a
//! queue. The worker takes everything queued (up to [`MAX_BATCH`]), and in one transaction:
//! takes the buyers' cap locks, locks the counter row, reads what each buyer holds already,
//! decides every request in arrival order, writes all the granted holds and the new counter
//! in one statement, and commits. Only then is any buyer answered. While a batch runs, the
//! next one queues up, so batches grow with the load and a lone buyer waits for nobody.
//!
//! What does not move:
//! - the database's `sold + held <= capacity` check still guards the counter; the worker's
//!   arithmetic only decides who is told yes;
//! - per-order limits and the per-client cap are checked per request as before, and the cap
//!   locks are the same advisory locks a single hold or a resale reservation takes, taken in
//!   key order so batches of several workers or replicas cannot deadlock;
//! - a killed process or a failed commit leaves nothing: no buyer was answered, the
//!   transaction rolls back and each buyer's request fails as a whole;
//! - first come, first served within a batch: requests are decided in the order they arrived,
//!   and a request that does not fit does not stop a smaller one behind it.
//!
//! Several replicas each batch their own buyers; their batches take turns on the row.
//!
//! The workers run on a thread of their own, with connections of their own (one or two of
//! the pod's `TIQZY_DB_MAX_CONNECTIONS`). A batch's transaction is a few round trips to the
//! database, and every buyer of the ticket type waits for it: among thousands of request
//! tasks on the server's threads, each round trip also waited for the worker's turn, and a
//! batch took ten times its SQL time (`cargo xtask bench runtime` prints both).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::client_caps::{ClientCap, lock_key};
use super::holds::{self, CounterState, Hold, HoldItem, HoldLine};
use crate::error::{AppError, AppResult};
use crate::metrics::BatchMetrics;

/// Most requests decided in one transaction.
pub const MAX_BATCH: usize = 256;
/// Requests waiting for one ticket type's worker; beyond this, buyers are told to retry.
const QUEUE: usize = 8_192;
/// A worker with nothing to do for this long ends; the next buyer starts a new one.
const IDLE: Duration = Duration::from_secs(30);

/// The workers of this process, one per ticket type being bought right now.
#[derive(Debug)]
pub struct Allocator {
    /// Where the workers run, and their connections.
    thread: BatchThread,
    /// How long a hold lasts.
    ttl: Duration,
    /// Requests per batch, their wait and the batches' time, as the metrics show them.
    metrics: BatchMetrics,
    workers: Mutex<HashMap<Uuid, mpsc::Sender<Request>>>,
}

/// One buyer's hold of one ticket type, waiting for its batch.
#[derive(Debug)]
struct Request {
    line: HoldLine,
    cap: ClientCap,
    answer: oneshot::Sender<AppResult<Hold>>,
    queued_at: Instant,
}

/// A pod's `max_connections` split between its requests and its batches: the batches take
/// one, or two when there are four or more; the requests keep at least one.
pub fn split_connections(max_connections: u32) -> (u32, u32) {
    let batches = if max_connections >= 4 { 2 } else { 1 };
    (max_connections.saturating_sub(batches).max(1), batches)
}

/// The thread the workers run on, with its own runtime and pool: a database answer wakes
/// the worker waiting for it at once, not after every request task ready before it.
#[derive(Debug)]
struct BatchThread {
    runtime: tokio::runtime::Handle,
    db: PgPool,
    /// Dropped with the allocator, which ends the thread.
    _stop: oneshot::Sender<()>,
}

impl BatchThread {
    fn start(db: &PgPool, connections: u32, acquire_timeout: Duration) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        // Connections belong to the runtime they are opened on: these open on first use, on
        // the batch thread. Same server, role and TLS settings as the pod's pool.
        let pool = {
            let _on_the_thread = handle.enter();
            PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(acquire_timeout)
                .connect_lazy_with(db.connect_options().as_ref().clone())
        };
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("hold-batches".to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            runtime: handle,
            db: pool,
            _stop: stop,
        })
    }
}

impl Allocator {
    /// An allocator whose batches use `connections` connections to the server of `db`.
    pub fn new(
        ttl: Duration,
        metrics: BatchMetrics,
        db: &PgPool,
        connections: u32,
        acquire_timeout: Duration,
    ) -> std::io::Result<Self> {
        Ok(Self {
            thread: BatchThread::start(db, connections, acquire_timeout)?,
            ttl,
            metrics,
            workers: Mutex::default(),
        })
    }

    /// Holds `line` for the client of `cap`, in the next batch of its ticket type.
    pub async fn hold(self: &Arc<Self>, line: HoldLine, cap: ClientCap) -> AppResult<Hold> {
        let (answer, answered) = oneshot::channel();
        let mut request = Request {
            line,
            cap,
            answer,
            queued_at: Instant::now(),
        };
        // A worker that just ended on idleness refuses the send; start another and try again.
        loop {
            let queue = self.queue(line.ticket_type_id);
            match queue.try_send(request) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Full(_)) => return Err(AppError::busy()),
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    self.forget(line.ticket_type_id, &queue);
                    request = back;
                }
            }
        }
        // The worker answers every request it takes, unless the process is going down.
        answered.await.unwrap_or_else(|_| Err(AppError::busy()))
    }

    fn queue(self: &Arc<Self>, ticket_type_id: Uuid) -> mpsc::Sender<Request> {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers
            .entry(ticket_type_id)
            .or_insert_with(|| {
                let (queue, requests) = mpsc::channel(QUEUE);
                self.thread.runtime.spawn(work(
                    Arc::clone(self),
                    self.thread.db.clone(),
                    ticket_type_id,
                    queue.clone(),
                    requests,
                ));
                queue
            })
            .clone()
    }

    /// Drops the worker entry for `ticket_type_id` if it is still `queue`.
    fn forget(&self, ticket_type_id: Uuid, queue: &mpsc::Sender<Request>) {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if workers
            .get(&ticket_type_id)
            .is_some_and(|q| q.same_channel(queue))
        {
            workers.remove(&ticket_type_id);
        }
    }
}

/// One ticket type's worker: a batch at a time until idle.
async fn work(
    allocator: Arc<Allocator>,
    db: PgPool,
    ticket_type_id: Uuid,
    queue: mpsc::Sender<Request>,
    mut requests: mpsc::Receiver<Request>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        match tokio::time::timeout(IDLE, requests.recv_many(&mut batch, MAX_BATCH)).await {
            Ok(0) => return,
            Ok(n) => {
                let metrics = &allocator.metrics;
                metrics.sizes.observe(n as f64);
                for request in &batch {
                    metrics
                        .queued
                        .observe(request.queued_at.elapsed().as_secs_f64());
                }
                let started = Instant::now();
                decide_and_answer(&db, allocator.ttl, ticket_type_id, &mut batch).await;
                metrics.took.observe(started.elapsed().as_secs_f64());
            }
            Err(_) => {
                // Idle: leave the map first, then close, then answer any straggler that got
                // in between, so no request is ever left without an answer.
                allocator.forget(ticket_type_id, &queue);
                drop(queue);
                requests.close();
                while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
                    decide_and_answer(&db, allocator.ttl, ticket_type_id, &mut batch).await;
                }
                return;
            }
        }
    }
}

async fn decide_and_answer(
    db: &PgPool,
    ttl: Duration,
    ticket_type_id: Uuid,
    batch: &mut Vec<Request>,
) {
    match grant(db, ttl, ticket_type_id, batch).await {
        Ok(answers) => {
            for (request, answer) in batch.drain(..).zip(answers) {
                let _ = request.answer.send(answer);
            }
        }
        Err(error) => {
            tracing::warn!(%ticket_type_id, requests = batch.len(), error = %error, "hold batch failed");
            for request in batch.drain(..) {
                let _ = request.answer.send(Err(AppError::busy()));
            }
        }
    }
}

/// The batch in one transaction; one answer per request, in order. An error means nothing
/// was written.
async fn grant(
    db: &PgPool,
    ttl: Duration,
    ticket_type_id: Uuid,
    batch: &[Request],
) -> AppResult<Vec<AppResult<Hold>>> {
    let keys: BTreeSet<i32> = batch.iter().map(|r| lock_key(&r.cap.client_hash)).collect();
    let keys: Vec<String> = keys.iter().map(i32::to_string).collect();
    // Every number here is ours (a constant and i32 keys), never text from a request.
    let mut tx = db
        .begin_with(sqlx::AssertSqlSafe(format!(
            "BEGIN; SELECT count(pg_advisory_xact_lock({class}, k)) \
             FROM unnest('{{{keys}}}'::int4[]) AS k",
            class = super::client_caps::LOCK_CLASS,
            keys = keys.join(","),
        )))
        .await?;
    let Some(mut counter) = lock_counter(&mut tx, ticket_type_id).await? else {
        return Ok(batch
            .iter()
            .map(|_| Err(AppError::not_found("ticket type")))
            .collect());
    };
    let demand: i32 = batch.iter().map(|r| r.line.quantity.as_i32()).sum();
    if counter.lapsed_holds && demand > counter.available {
        holds::release_expired_of(&mut *tx, ticket_type_id).await?;
        counter = lock_counter(&mut tx, ticket_type_id)
            .await?
            .ok_or(AppError::not_found("ticket type"))?;
    }
    let mut held = client_holdings(&mut tx, counter.event_id, batch).await?;
    let mut available = counter.available;
    let mut granted = Vec::new();
    let answers: Vec<Result<(), AppError>> = batch
        .iter()
        .map(|request| {
            let quantity = request.line.quantity.as_i32();
            let holding = held.entry(request.cap.client_hash.clone()).or_insert(0);
            let refusal = refusal(&counter, request, *holding, available);
            if refusal.is_none() {
                available -= quantity;
                *holding += i64::from(quantity);
                granted.push(request);
            }
            refusal.map_or(Ok(()), Err)
        })
        .collect();
    let expires_at = place(&mut tx, ttl, ticket_type_id, &granted).await?;
    tx.commit().await?;
    let mut ids = granted.iter().map(|r| r.line).zip(expires_at.ids.iter());
    Ok(answers
        .into_iter()
        .map(|answer| {
            answer?;
            let (line, id) = ids
                .next()
                .ok_or_else(|| anyhow::anyhow!("a grant without a hold"))?;
            Ok(Hold {
                id: *id,
                expires_at: expires_at.at,
                items: vec![HoldItem {
                    ticket_type_id: line.ticket_type_id,
                    quantity: line.quantity.as_i32(),
                }],
            })
        })
        .collect())
}

/// Why `request` cannot be held, checked in the order a single hold checks: the client's
/// cap, then the counter (the event, the sale window, the per-order limit, the stock left).
fn refusal(counter: &Counter, request: &Request, holding: i64, available: i32) -> Option<AppError> {
    let quantity = request.line.quantity.as_i32();
    if holding + i64::from(quantity) > i64::from(request.cap.max_tickets) {
        return Some(super::client_caps::over_cap(
            request.cap.max_tickets,
            holding,
        ));
    }
    CounterState {
        name: &counter.name,
        cancelled: counter.cancelled,
        on_sale: counter.on_sale,
        per_order_limit: counter.per_order_limit,
        available,
    }
    .refusal(quantity)
}

/// The counter row, locked for the rest of the batch, and what decides a request.
struct Counter {
    event_id: Uuid,
    name: String,
    available: i32,
    per_order_limit: i32,
    on_sale: bool,
    cancelled: bool,
    lapsed_holds: bool,
}

async fn lock_counter(conn: &mut PgConnection, ticket_type_id: Uuid) -> AppResult<Option<Counter>> {
    let row = sqlx::query!(
        "SELECT tt.event_id, tt.name, tt.capacity - tt.sold - tt.held AS \"available!\",
                tt.per_order_limit,
                now() >= tt.sales_start AND now() < tt.sales_end AS \"on_sale!\",
                e.cancelled_at IS NOT NULL AS \"cancelled!\",
                EXISTS (SELECT 1 FROM holds h WHERE h.ticket_type_id = tt.id
                        AND h.state = 'active' AND h.expires_at <= now()) AS \"lapsed_holds!\"
         FROM ticket_types tt JOIN events e ON e.id = tt.event_id
         WHERE tt.id = $1
         FOR UPDATE OF tt",
        ticket_type_id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| Counter {
        event_id: r.event_id,
        name: r.name,
        available: r.available,
        per_order_limit: r.per_order_limit,
        on_sale: r.on_sale,
        cancelled: r.cancelled,
        lapsed_holds: r.lapsed_holds,
    }))
}

/// Tickets each client of the batch holds in the event now, counted as [`ClientCap::check`]
/// counts them (live holds and reserved listings), under the locks the batch holds.
async fn client_holdings(
    conn: &mut PgConnection,
    event_id: Uuid,
    batch: &[Request],
) -> AppResult<HashMap<Vec<u8>, i64>> {
    let clients: Vec<Vec<u8>> = batch.iter().map(|r| r.cap.client_hash.clone()).collect();
    let rows = sqlx::query!(
        "SELECT h.client_hash AS \"client!\", sum(h.quantity)::int8 AS \"n!\"
         FROM holds h JOIN ticket_types tt ON tt.id = h.ticket_type_id
         WHERE h.client_hash = ANY($1) AND h.state = 'active' AND h.expires_at > now()
           AND tt.event_id = $2
         GROUP BY h.client_hash
         UNION ALL
         SELECT l.reserved_by_client, count(*)
         FROM listings l
         JOIN tickets t ON t.id = l.ticket_id
         JOIN ticket_types tt ON tt.id = t.ticket_type_id
         WHERE l.reserved_by_client = ANY($1) AND l.state = 'reserved'
           AND l.reserved_until > now() AND tt.event_id = $2
         GROUP BY l.reserved_by_client",
        &clients,
        event_id,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut held = HashMap::new();
    for row in rows {
        *held.entry(row.client).or_insert(0) += row.n;
    }
    Ok(held)
}

/// The granted holds' ids in request order, and when they all expire.
struct Placed {
    ids: Vec<Uuid>,
    at: DateTime<Utc>,
}

/// Every granted hold and the counter, in one statement.
async fn place(
    conn: &mut PgConnection,
    ttl: Duration,
    ticket_type_id: Uuid,
    granted: &[&Request],
) -> AppResult<Placed> {
    let ids: Vec<Uuid> = granted.iter().map(|_| Uuid::new_v4()).collect();
    if granted.is_empty() {
        return Ok(Placed {
            ids,
            at: Utc::now(),
        });
    }
    let quantities: Vec<i32> = granted.iter().map(|r| r.line.quantity.as_i32()).collect();
    let clients: Vec<Vec<u8>> = granted.iter().map(|r| r.cap.client_hash.clone()).collect();
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX) as f64;
    let at = sqlx::query_scalar!(
        "WITH placed AS (
             INSERT INTO holds (id, basket_id, ticket_type_id, quantity, expires_at, client_hash)
             SELECT g.id, g.id, $1, g.quantity, now() + make_interval(secs => $5), g.client
             FROM unnest($2::uuid[], $3::int4[], $4::bytea[]) AS g (id, quantity, client)
             RETURNING quantity, expires_at
         )
         UPDATE ticket_types SET held = held + (SELECT sum(quantity) FROM placed)
         WHERE id = $1
         RETURNING (SELECT max(expires_at) FROM placed) AS \"at!\"",
        ticket_type_id,
        &ids,
        &quantities,
        &clients,
        ttl_secs,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Placed { ids, at })
}
