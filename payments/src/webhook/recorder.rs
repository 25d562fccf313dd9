//! Group commit for the endpoint: the events of requests that arrive while the database is busy
//! with earlier ones are placed and recorded together, with one lookup per kind of clue and one
//! statement (one commit) for the whole batch. Each request is answered when its batch has
//! committed, so Stripe's `2xx` still means the event is durably recorded; a batch that fails
//! answers every request in it with an error and has written nothing (one statement), so Stripe
//! retries each of them.
//!
//! Batches form by themselves: a batch is whatever arrived while [`IN_FLIGHT`] batches were
//! being written, so one event alone is written at once, and under load a batch grows until
//! the database keeps up. Nothing waits for a timer.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use axum::body::Bytes;
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::clues::{self, Owners};
use super::route::{self, Envelope, Unroutable};
use super::store::{self, Recorded};
use crate::registry::Registry;

/// Batches being placed and written at the same time.
pub const IN_FLIGHT: usize = 2;
/// Events in one batch at most.
pub const MAX_BATCH: usize = 256;

/// The batch an event was in failed; nothing of it was written. The cause is logged once for
/// the batch, not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("recording the batch of events failed")]
pub struct Failed;

/// What became of one event: recorded now or seen before, and where it was placed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub recorded: Recorded,
    pub placed: Result<String, Unroutable>,
}

struct Job {
    event: Envelope,
    body: Bytes,
    reply: oneshot::Sender<Result<Outcome, Failed>>,
}

/// What a batch needs to place and record events.
struct Context {
    db: PgPool,
    registry: Registry,
    owners: Arc<Owners>,
    livemode: bool,
}

/// The endpoint's handle on the recording task.
#[derive(Debug, Clone)]
pub struct Recorder {
    jobs: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("event", &self.event.id)
            .finish()
    }
}

impl Recorder {
    /// Starts the recording task on the current runtime.
    pub fn start(db: PgPool, registry: Registry, owners: Arc<Owners>, livemode: bool) -> Self {
        let (jobs, received) = mpsc::unbounded_channel();
        let context = Arc::new(Context {
            db,
            registry,
            owners,
            livemode,
        });
        tokio::spawn(run(context, received));
        Self { jobs }
    }

    /// Places and records `event` (its `body` as Stripe sent it) with the events arriving
    /// with it; answers once its batch has committed.
    pub async fn record(&self, event: Envelope, body: Bytes) -> Result<Outcome, Failed> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { event, body, reply })
            .map_err(|_| Failed)?;
        answer.await.map_err(|_| Failed)?
    }
}

async fn run(context: Arc<Context>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = jobs.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let context = context.clone();
        tokio::spawn(async move {
            context.write(batch).await;
            drop(slot);
        });
    }
}

impl Context {
    async fn write(&self, batch: Vec<Job>) {
        let size = batch.len();
        match self.place_and_record(&batch).await {
            Ok(outcomes) => {
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = size,
                    "recording Stripe events failed; each is answered 500 and Stripe retries it");
                for job in batch {
                    let _ = job.reply.send(Err(Failed));
                }
            }
        }
    }

    /// One outcome per job, in order. An event id that comes twice in the batch is recorded
    /// for its first arrival; the later ones are duplicates of it.
    async fn place_and_record(&self, batch: &[Job]) -> sqlx::Result<Vec<Outcome>> {
        let mut first_of: HashMap<&str, usize> = HashMap::new();
        let mut unique = Vec::new();
        for (i, job) in batch.iter().enumerate() {
            if let Entry::Vacant(first) = first_of.entry(job.event.id.as_str()) {
                first.insert(i);
                unique.push(i);
            }
        }
        let events: Vec<&Envelope> = unique.iter().map(|&i| &batch[i].event).collect();
        let clues = clues::gather_all(
            &self.db,
            &self.registry,
            &self.owners,
            &events,
            self.livemode,
        )
        .await?;
        let placed: Vec<Result<String, Unroutable>> = clues
            .iter()
            .map(|clues| route::place(clues, |tenant| self.registry.exists(tenant)))
            .collect();
        let rows: Vec<store::Row<'_>> = unique
            .iter()
            .zip(&placed)
            .map(|(&i, placed)| store::Row {
                event: &batch[i].event,
                body: &batch[i].body,
                placed,
            })
            .collect();
        let new = store::record_all(&self.db, &rows).await?;
        let mut placed_by_id: HashMap<&str, &Result<String, Unroutable>> = HashMap::new();
        for (&i, placed) in unique.iter().zip(&placed) {
            placed_by_id.insert(batch[i].event.id.as_str(), placed);
        }
        Ok(batch
            .iter()
            .enumerate()
            .map(|(i, job)| {
                let id = job.event.id.as_str();
                let recorded = if first_of[id] == i && new.contains(id) {
                    Recorded::New
                } else {
                    Recorded::Duplicate
                };
                Outcome {
                    recorded,
                    placed: placed_by_id[id].clone(),
                }
            })
            .collect())
    }
}
