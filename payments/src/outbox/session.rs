//! The replica's one outbox session: a database connection that holds the tenant locks of
//! every delivery in progress and writes what the storefronts answered. Workers ask it over a
//! channel; whatever they asked at about the same time is done together (one statement for
//! all acknowledgements, one for all locks taken, one for all batches read), so delivering to
//! many tenants at once costs a few statements per round, not a few per event. Each worker
//! waits for its answer before sending the tenant's next event, so what a storefront answered
//! is committed before the next delivery goes out.
//!
//! If the connection fails, its locks are gone: every worker's next request is refused
//! ([`Lost`]), so nobody goes on delivering without the lock, and the session reconnects.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};

use super::store::{self, Pending};

/// Requests done together at most.
const ROUND: usize = 512;
/// Wait before reconnecting a session that failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The tenant's lock was lost (the session failed) or never held: stop delivering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the outbox session lost the tenant's lock")]
pub struct Lost;

/// What a worker writes about a delivery it sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Acknowledged,
    Postponed {
        delay_ms: i64,
        error: String,
        counts: bool,
    },
    Rejected {
        reason: String,
    },
}

#[derive(Debug)]
enum Request {
    /// Take the tenant's lock and read its first batch; `None` when another session holds it.
    Claim {
        tenant: String,
        reply: oneshot::Sender<Result<Option<Vec<Pending>>, Lost>>,
    },
    /// The tenant's next batch (lock held).
    Next {
        tenant: String,
        reply: oneshot::Sender<Result<Vec<Pending>, Lost>>,
    },
    Write {
        tenant: String,
        id: i64,
        outcome: Outcome,
        reply: oneshot::Sender<Result<(), Lost>>,
    },
    Release {
        tenant: String,
    },
}

/// A worker's handle on the session.
#[derive(Debug, Clone)]
pub struct Session {
    requests: mpsc::UnboundedSender<Request>,
}

impl Session {
    /// Starts the session's task; it connects with the pool's settings on first use.
    pub fn start(db: PgPool, batch: i64) -> Self {
        let (requests, received) = mpsc::unbounded_channel();
        tokio::spawn(serve(db, batch, received));
        Self { requests }
    }

    pub async fn claim(&self, tenant: &str) -> Result<Option<Vec<Pending>>, Lost> {
        let (reply, answer) = oneshot::channel();
        self.ask(Request::Claim {
            tenant: tenant.to_owned(),
            reply,
        })?;
        answer.await.map_err(|_| Lost)?
    }

    pub async fn next(&self, tenant: &str) -> Result<Vec<Pending>, Lost> {
        let (reply, answer) = oneshot::channel();
        self.ask(Request::Next {
            tenant: tenant.to_owned(),
            reply,
        })?;
        answer.await.map_err(|_| Lost)?
    }

    /// Writes (and commits) what became of delivery `id`.
    pub async fn write(&self, tenant: &str, id: i64, outcome: Outcome) -> Result<(), Lost> {
        let (reply, answer) = oneshot::channel();
        self.ask(Request::Write {
            tenant: tenant.to_owned(),
            id,
            outcome,
            reply,
        })?;
        answer.await.map_err(|_| Lost)?
    }

    /// Gives the tenant's lock back (after this worker's last write, which it waited for).
    pub fn release(&self, tenant: &str) {
        let _ = self.requests.send(Request::Release {
            tenant: tenant.to_owned(),
        });
    }

    fn ask(&self, request: Request) -> Result<(), Lost> {
        self.requests.send(request).map_err(|_| Lost)
    }
}

async fn serve(db: PgPool, batch: i64, mut received: mpsc::UnboundedReceiver<Request>) {
    let mut connection: Option<PgConnection> = None;
    // The tenants whose locks the current connection holds.
    let mut locked: HashSet<String> = HashSet::new();
    while let Some(first) = received.recv().await {
        let mut round = vec![first];
        while round.len() < ROUND {
            match received.try_recv() {
                Ok(request) => round.push(request),
                Err(_) => break,
            }
        }
        if connection.is_none() {
            match PgConnection::connect_with(&db.connect_options()).await {
                Ok(opened) => connection = Some(opened),
                Err(e) => {
                    tracing::warn!(error = %e, "the outbox cannot reach its database; retrying");
                    drop(round);
                    tokio::time::sleep(RECONNECT_AFTER).await;
                    continue;
                }
            }
        }
        let Some(conn) = connection.as_mut() else {
            continue;
        };
        if let Err(e) = serve_round(conn, batch, &mut locked, round).await {
            // Closing the connection ends the session and every lock it held; the workers
            // waiting on this round are answered `Lost` (their reply is dropped).
            tracing::warn!(error = %e, "the outbox session failed; its deliveries stop and resume");
            connection = None;
            locked.clear();
        }
    }
}

/// Does one round of requests: first what was written (each tenant has one request in flight
/// at most, so a write is never behind a release or claim of its own tenant), then releases,
/// then claims, then reads.
async fn serve_round(
    conn: &mut PgConnection,
    batch: i64,
    locked: &mut HashSet<String>,
    round: Vec<Request>,
) -> sqlx::Result<()> {
    let mut acknowledged = Vec::new();
    let mut releases = Vec::new();
    let mut claims = Vec::new();
    let mut reads = Vec::new();
    for request in round {
        match request {
            Request::Write {
                tenant,
                id,
                outcome,
                reply,
            } => {
                if !locked.contains(&tenant) {
                    let _ = reply.send(Err(Lost));
                    continue;
                }
                match outcome {
                    Outcome::Acknowledged => acknowledged.push((id, reply)),
                    Outcome::Postponed {
                        delay_ms,
                        error,
                        counts,
                    } => {
                        store::postponed(&mut *conn, id, delay_ms, &error, counts).await?;
                        let _ = reply.send(Ok(()));
                    }
                    Outcome::Rejected { reason } => {
                        store::rejected(&mut *conn, id, &reason).await?;
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            Request::Release { tenant } => {
                if locked.remove(&tenant) {
                    releases.push(tenant);
                }
            }
            Request::Claim { tenant, reply } => {
                if locked.contains(&tenant) {
                    reads.push(tenant.clone());
                }
                claims.push((tenant, reply.into()));
            }
            Request::Next { tenant, reply } => {
                if locked.contains(&tenant) {
                    reads.push(tenant.clone());
                    claims.push((tenant, ReplyTo::next(reply)));
                } else {
                    let _ = reply.send(Err(Lost));
                }
            }
        }
    }
    if !acknowledged.is_empty() {
        let ids: Vec<i64> = acknowledged.iter().map(|(id, _)| *id).collect();
        store::acknowledged(&mut *conn, &ids).await?;
        for (_, reply) in acknowledged {
            let _ = reply.send(Ok(()));
        }
    }
    if !releases.is_empty() {
        store::unlock(&mut *conn, &releases).await?;
    }
    let wanted: Vec<String> = claims
        .iter()
        .filter(|(tenant, reply)| reply.is_claim() && !locked.contains(tenant))
        .map(|(tenant, _)| tenant.clone())
        .collect();
    let taken = if wanted.is_empty() {
        Vec::new()
    } else {
        store::try_lock(&mut *conn, &wanted).await?
    };
    locked.extend(taken.iter().cloned());
    reads.extend(taken);
    let mut batches: HashMap<String, Vec<Pending>> = HashMap::new();
    if !reads.is_empty() {
        for delivery in store::pending(&mut *conn, &reads, batch).await? {
            batches
                .entry(delivery.tenant.clone())
                .or_default()
                .push(delivery);
        }
    }
    for (tenant, reply) in claims {
        let held = locked.contains(&tenant);
        let found = batches.remove(&tenant).unwrap_or_default();
        reply.send(held, found);
    }
    Ok(())
}

/// Where a claim's or a read's answer goes.
#[derive(Debug)]
enum ReplyTo {
    Claim(oneshot::Sender<Result<Option<Vec<Pending>>, Lost>>),
    Next(oneshot::Sender<Result<Vec<Pending>, Lost>>),
}

impl ReplyTo {
    fn next(reply: oneshot::Sender<Result<Vec<Pending>, Lost>>) -> Self {
        Self::Next(reply)
    }

    fn is_claim(&self) -> bool {
        matches!(self, Self::Claim(_))
    }

    fn send(self, held: bool, found: Vec<Pending>) {
        match self {
            Self::Claim(reply) => {
                let _ = reply.send(Ok(held.then_some(found)));
            }
            Self::Next(reply) => {
                let _ = reply.send(if held { Ok(found) } else { Err(Lost) });
            }
        }
    }
}

impl From<oneshot::Sender<Result<Option<Vec<Pending>>, Lost>>> for ReplyTo {
    fn from(reply: oneshot::Sender<Result<Option<Vec<Pending>>, Lost>>) -> Self {
        Self::Claim(reply)
    }
}
