//! The outbox's SQL. A tenant's deliveries are worked on under a per-tenant advisory lock held
//! by one database session, so replicas never deliver one tenant's events at the same time and
//! the order of a tenant's events is the order they were recorded in. What a delivery did is
//! written (and committed) as soon as the storefront answered: a replica killed mid-batch
//! sends again only the delivery it was waiting on, and the lock ends with its session.

use sqlx::{PgConnection, PgExecutor};

/// First key of the advisory locks the outbox takes (the second is the tenant's hash).
const LOCK_SPACE: i32 = 0x7469_717a; // "tiqz"

/// A delivery waiting for its storefront's acknowledgement.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub event_id: String,
    pub body: Vec<u8>,
    pub attempts: i32,
    /// Failed attempts that count against the event (see [`super::SET_ASIDE_AFTER`]).
    pub refusals: i32,
    pub due: bool,
}

/// Tenants with a delivery to attempt now: their oldest pending delivery that still holds
/// back the rest (fewer than 8 refusals) is due, or one set aside is due. The 8 is
/// [`super::SET_ASIDE_AFTER`], written here as a literal so the planner can use the partial
/// index `deliveries_set_aside` (migration `20261203120000`).
pub async fn due_tenants(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT heads.tenant AS "tenant!" FROM (
               SELECT DISTINCT ON (tenant) tenant, next_attempt_at
               FROM deliveries
               WHERE delivered_at IS NULL AND rejected_at IS NULL AND refusals < 8
               ORDER BY tenant, id
           ) heads
           WHERE heads.next_attempt_at <= now()
           UNION
           SELECT tenant FROM deliveries
           WHERE delivered_at IS NULL AND rejected_at IS NULL AND refusals >= 8
             AND next_attempt_at <= now()
           LIMIT $1"#,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Takes the tenant's lock for this session, unless another worker holds it; release it with
/// [`unlock`] (or by closing the connection).
pub async fn try_lock(conn: &mut PgConnection, tenant: &str) -> sqlx::Result<bool> {
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_lock($1, hashtext($2)) AS "locked!""#,
        LOCK_SPACE,
        tenant,
    )
    .fetch_one(conn)
    .await?;
    Ok(locked)
}

pub async fn unlock(conn: &mut PgConnection, tenant: &str) -> sqlx::Result<()> {
    sqlx::query_scalar!(
        r#"SELECT pg_advisory_unlock($1, hashtext($2)) AS "unlocked!""#,
        LOCK_SPACE,
        tenant,
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// The tenant's oldest pending deliveries, in order (read under the tenant's lock, so what
/// another worker acknowledged before is not among them).
pub async fn pending(
    conn: &mut PgConnection,
    tenant: &str,
    limit: i64,
) -> sqlx::Result<Vec<Pending>> {
    sqlx::query_as!(
        Pending,
        r#"SELECT id, event_id, body, attempts, refusals, next_attempt_at <= now() AS "due!"
           FROM deliveries
           WHERE tenant = $1 AND delivered_at IS NULL AND rejected_at IS NULL
           ORDER BY id
           LIMIT $2"#,
        tenant,
        limit,
    )
    .fetch_all(conn)
    .await
}

pub async fn acknowledged(conn: &mut PgConnection, id: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE deliveries SET delivered_at = now(), attempts = attempts + 1, last_error = NULL
         WHERE id = $1",
        id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Schedules the next attempt `delay_ms` from now; `error` says what the storefront did, and
/// `counts` whether the attempt counts against the event (a refusal, not a storefront that is
/// not there).
pub async fn postponed(
    conn: &mut PgConnection,
    id: i64,
    delay_ms: i64,
    error: &str,
    counts: bool,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE deliveries
         SET attempts = attempts + 1,
             refusals = refusals + CASE WHEN $4 THEN 1 ELSE 0 END,
             next_attempt_at = now() + make_interval(secs => $2::float8 / 1000.0),
             last_error = $3
         WHERE id = $1",
        id,
        delay_ms as f64,
        error,
        counts,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Closes the delivery as rejected for good: kept with `reason`, never attempted again.
pub async fn rejected(conn: &mut PgConnection, id: i64, reason: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE deliveries
         SET attempts = attempts + 1, refusals = refusals + 1, rejected_at = now(),
             last_error = $2
         WHERE id = $1",
        id,
        reason,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deliveries their storefronts rejected for good.
pub async fn rejected_count(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM deliveries WHERE rejected_at IS NOT NULL"#
    )
    .fetch_one(db)
    .await
}

/// Seconds since the oldest pending delivery was written; 0 when none is pending.
pub async fn oldest_pending_age(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    let age = sqlx::query_scalar!(
        r#"SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::bigint AS "age!"
           FROM deliveries WHERE delivered_at IS NULL AND rejected_at IS NULL"#
    )
    .fetch_one(db)
    .await?;
    Ok(age)
}
