//! The outbox table: rows written with the change that causes them, claimed by one worker at
//! a time (a row lock skips rows another worker is claiming, a lease keeps them while it
//! sends), and marked sent, retried or failed.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use super::Message;

/// Wakes this process's worker soon after a message is queued (it still looks every few
/// seconds, for rows other replicas queued and retries that fell due).
pub(super) static QUEUED: Notify = Notify::const_new();

/// Queues `message` in the caller's transaction: it is sent if and only if that commits.
pub async fn enqueue(conn: &mut PgConnection, message: &Message) -> sqlx::Result<Uuid> {
    let id = Uuid::new_v4();
    let body = serde_json::to_string(message).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query!(
        "INSERT INTO mail_outbox (id, recipient, message) VALUES ($1, $2, $3::text::jsonb)",
        id,
        message.recipient(),
        body,
    )
    .execute(conn)
    .await?;
    QUEUED.notify_waiters();
    Ok(id)
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
