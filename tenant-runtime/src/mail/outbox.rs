//! The outbox table: rows written with the change that causes them, claimed by one worker at
//! a time (a row lock skips rows another worker is claiming, a lease keeps them while it
//! sends), and marked sent, retried or failed.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use super::Message;
use crate::metrics::MAIL;

/// Wakes this process's worker soon after a message is queued (it still looks every few
/// seconds, for rows other replicas queued and retries that fell due).
pub(super) static QUEUED: Notify = Notify::const_new();

/// Queues `message` in the caller's transaction: it is sent if and only if that commits.
pub async fn enqueue(conn: &mut PgConnection, message: &Message) -> sqlx::Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query!(
        "INSERT INTO mail_outbox (id, recipient, message) VALUES ($1, $2, $3::text::jsonb)",
        id,
        message.recipient(),
        body(message)?,
    )
    .execute(conn)
    .await?;
    queued(message);
    Ok(id)
}

/// The outbox row's `message` for `message`, for a statement that queues it itself.
pub fn body(message: &Message) -> sqlx::Result<String> {
    serde_json::to_string(message).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Counts `message` as queued and wakes the sender: once the row that queues it is written.
pub fn queued(message: &Message) {
    MAIL.queued(message.kind());
    QUEUED.notify_waiters();
}

/// Queues many messages in one statement, in the caller's transaction (an event cancelled
/// tells every buyer at once).
pub async fn enqueue_all(conn: &mut PgConnection, messages: &[Message]) -> sqlx::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(messages.len());
    let mut recipients = Vec::with_capacity(messages.len());
    let mut bodies = Vec::with_capacity(messages.len());
    for message in messages {
        ids.push(Uuid::new_v4());
        recipients.push(message.recipient().to_owned());
        bodies.push(body(message)?);
    }
    sqlx::query!(
        "INSERT INTO mail_outbox (id, recipient, message)
         SELECT id, recipient, body::jsonb
         FROM unnest($1::uuid[], $2::text[], $3::text[]) AS m (id, recipient, body)",
        &ids,
        &recipients,
        &bodies,
    )
    .execute(conn)
    .await?;
    messages.iter().for_each(queued);
    Ok(())
}

/// The `Message-ID` of an outbox row: the same on every attempt, so a resend after a crash
/// is recognisable as the same message.
pub fn message_id(row: Uuid, host: &str) -> String {
    format!("<{}@{host}>", row.simple())
}

/// A row a worker holds the lease of.
#[derive(Debug)]
pub(super) struct Claimed {
    pub id: Uuid,
    /// `None` when this version cannot read the message (a newer replica's kind, during a
    /// rollout): it is left for a replica that can.
    pub message: Option<Message>,
    pub attempts: i32,
}

/// Up to `limit` due rows, leased for `lease`.
pub(super) async fn claim(db: &PgPool, limit: i64, lease: Duration) -> sqlx::Result<Vec<Claimed>> {
    let rows = sqlx::query!(
        "UPDATE mail_outbox o
         SET leased_until = now() + make_interval(secs => $2), attempts = o.attempts + 1
         FROM (SELECT id FROM mail_outbox
               WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
                 AND (leased_until IS NULL OR leased_until <= now())
               ORDER BY next_attempt_at
               LIMIT $1
               FOR UPDATE SKIP LOCKED) due
         WHERE o.id = due.id
         RETURNING o.id, o.message::text AS \"message!\", o.attempts",
        limit,
        lease.as_secs_f64(),
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Claimed {
            id: r.id,
            message: serde_json::from_str(&r.message).ok(),
            attempts: r.attempts,
        })
        .collect())
}

pub(super) async fn mark_sent(db: &PgPool, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE mail_outbox SET sent_at = now(), leased_until = NULL, last_error = NULL
         WHERE id = $1",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

pub(super) async fn retry_later(
    db: &PgPool,
    id: Uuid,
    after: Duration,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE mail_outbox
         SET leased_until = NULL, next_attempt_at = now() + make_interval(secs => $2),
             last_error = $3
         WHERE id = $1",
        id,
        after.as_secs_f64(),
        error,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub(super) async fn mark_failed(db: &PgPool, id: Uuid, error: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE mail_outbox SET failed_at = now(), leased_until = NULL, last_error = $2
         WHERE id = $1",
        id,
        error,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Refreshes the outbox gauges: how many mails wait and how long the oldest has.
pub(super) async fn measure(db: &PgPool) -> sqlx::Result<()> {
    let r = sqlx::query!(
        "SELECT count(*) AS \"depth!\",
                coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS \"oldest!\"
         FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL",
    )
    .fetch_one(db)
    .await?;
    MAIL.outbox_depth.set(r.depth);
    MAIL.outbox_oldest_seconds.set(r.oldest);
    Ok(())
}

/// Rows deleted per statement, so pruning never holds many locks or a long transaction.
const PRUNE_BATCH: i64 = 1_000;

/// Deletes sent rows older than `retention`, a batch at a time; returns how many.
pub(super) async fn prune(db: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    let mut pruned = 0;
    loop {
        let n = sqlx::query!(
            "DELETE FROM mail_outbox WHERE id IN (
                 SELECT id FROM mail_outbox
                 WHERE sent_at < now() - make_interval(secs => $1)
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED)",
            retention.as_secs_f64(),
            PRUNE_BATCH,
        )
        .execute(db)
        .await?
        .rows_affected();
        pruned += n;
        MAIL.pruned.inc_by(n);
        if n < PRUNE_BATCH.unsigned_abs() {
            return Ok(pruned);
        }
    }
}
