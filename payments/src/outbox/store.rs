//! The outbox's SQL. A tenant's deliveries are worked on under a per-tenant advisory lock held
//! for one transaction, so replicas never deliver one tenant's events at the same time and
//! the order of a tenant's events is the order they were recorded in.

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
    pub due: bool,
}

/// Tenants with a delivery to attempt now: their oldest pending delivery that still holds
/// back the rest (fewer than `set_aside_after` attempts) is due, or one set aside is due.
pub async fn due_tenants(
    db: impl PgExecutor<'_>,
    limit: i64,
    set_aside_after: i32,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT heads.tenant AS "tenant!" FROM (
               SELECT DISTINCT ON (tenant) tenant, next_attempt_at
               FROM deliveries WHERE delivered_at IS NULL AND attempts < $2
               ORDER BY tenant, id
           ) heads
           WHERE heads.next_attempt_at <= now()
           UNION
           SELECT tenant FROM deliveries
           WHERE delivered_at IS NULL AND attempts >= $2 AND next_attempt_at <= now()
           LIMIT $1"#,
        limit,
        set_aside_after,
    )
    .fetch_all(db)
    .await
}

/// Takes the tenant's lock for the rest of the transaction, unless another worker holds it.
pub async fn try_lock(tx: &mut PgConnection, tenant: &str) -> sqlx::Result<bool> {
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS "locked!""#,
        LOCK_SPACE,
        tenant,
    )
    .fetch_one(tx)
    .await?;
    Ok(locked)
}

/// The tenant's oldest pending deliveries, in order (read under the tenant's lock, so what
/// another worker acknowledged before is not among them).
pub async fn pending(
    tx: &mut PgConnection,
    tenant: &str,
    limit: i64,
) -> sqlx::Result<Vec<Pending>> {
    sqlx::query_as!(
        Pending,
        r#"SELECT id, event_id, body, attempts, next_attempt_at <= now() AS "due!"
           FROM deliveries
           WHERE tenant = $1 AND delivered_at IS NULL
           ORDER BY id
           LIMIT $2"#,
        tenant,
        limit,
    )
    .fetch_all(tx)
    .await
}

pub async fn acknowledged(tx: &mut PgConnection, id: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE deliveries SET delivered_at = now(), attempts = attempts + 1, last_error = NULL
         WHERE id = $1",
        id,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Schedules the next attempt `delay_ms` from now; `error` says what the storefront did.
pub async fn postponed(
    tx: &mut PgConnection,
    id: i64,
    delay_ms: i64,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE deliveries
         SET attempts = attempts + 1,
             next_attempt_at = now() + make_interval(secs => $2::float8 / 1000.0),
             last_error = $3
         WHERE id = $1",
        id,
        delay_ms as f64,
        error,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Seconds since the oldest pending delivery was written; 0 when none is pending.
pub async fn oldest_pending_age(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    let age = sqlx::query_scalar!(
        r#"SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::bigint AS "age!"
           FROM deliveries WHERE delivered_at IS NULL"#
    )
    .fetch_one(db)
    .await?;
    Ok(age)
}
