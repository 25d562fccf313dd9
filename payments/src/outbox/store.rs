//! The outbox's SQL. A tenant's deliveries are worked on under a per-tenant advisory lock held
//! by the replica's one outbox session ([`super::session`]), so replicas never deliver one
//! tenant's events at the same time and the order of a tenant's events is the order they were
//! recorded in. What a delivery did is written (and committed) as soon as the storefront
//! answered, before the tenant's next delivery is sent: a replica killed mid-batch sends again
//! only the deliveries it was waiting on, and the locks end with its session.

use sqlx::{PgConnection, PgExecutor};

/// First key of the advisory locks the outbox takes (the second is the tenant's hash).
const LOCK_SPACE: i32 = 0x7469_717a; // "tiqz"

/// A delivery waiting for its storefront's acknowledgement.
#[derive(Debug, Clone)]
pub struct Pending {
    pub tenant: String,
    pub id: i64,
    pub event_id: String,
    pub body: Vec<u8>,
    pub attempts: i32,
    /// Failed attempts that count against the event (see [`super::SET_ASIDE_AFTER`]).
    pub refusals: i32,
    pub due: bool,
}

/// Tenants with a delivery to attempt now: their oldest pending delivery that still holds
/// back the rest (fewer than 8 refusals) is due, or one set aside is due. The tenants with
/// pending deliveries are found by skipping through the index `deliveries_pending` (one probe
/// per tenant, however many deliveries wait), each one's head by the same index. The 8 is
/// [`super::SET_ASIDE_AFTER`], written here as a literal so the planner can use the partial
/// index `deliveries_set_aside` (migration `20261203120000`).
pub async fn due_tenants(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"WITH RECURSIVE waiting (tenant) AS (
               (SELECT tenant FROM deliveries
                WHERE delivered_at IS NULL AND rejected_at IS NULL
                ORDER BY tenant LIMIT 1)
               UNION ALL
               SELECT (SELECT d.tenant FROM deliveries d
                       WHERE d.delivered_at IS NULL AND d.rejected_at IS NULL
                         AND d.tenant > waiting.tenant
                       ORDER BY d.tenant LIMIT 1)
               FROM waiting WHERE waiting.tenant IS NOT NULL
           )
           SELECT waiting.tenant AS "tenant!" FROM waiting
           WHERE waiting.tenant IS NOT NULL
             AND (SELECT d.next_attempt_at <= now() FROM deliveries d
                  WHERE d.tenant = waiting.tenant AND d.delivered_at IS NULL
                    AND d.rejected_at IS NULL AND d.refusals < 8
                  ORDER BY d.id LIMIT 1)
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

/// Takes the locks of those of `tenants` no other session holds, for this session; answers
/// the tenants locked. Release them with [`unlock`] (or by closing the connection).
pub async fn try_lock(conn: &mut PgConnection, tenants: &[String]) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT tenant AS "tenant!" FROM unnest($2::text[]) AS tenant
           WHERE pg_try_advisory_lock($1, hashtext(tenant))"#,
        LOCK_SPACE,
        tenants,
    )
    .fetch_all(conn)
    .await
}

pub async fn unlock(conn: &mut PgConnection, tenants: &[String]) -> sqlx::Result<()> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "released!" FROM unnest($2::text[]) AS tenant
           WHERE pg_advisory_unlock($1, hashtext(tenant))"#,
        LOCK_SPACE,
        tenants,
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// The oldest pending deliveries of each of `tenants` (at most `limit` each), in order (read
/// under the tenants' locks, so what another worker acknowledged before is not among them).
pub async fn pending(
    conn: &mut PgConnection,
    tenants: &[String],
    limit: i64,
) -> sqlx::Result<Vec<Pending>> {
    sqlx::query_as!(
        Pending,
        r#"SELECT d.tenant AS "tenant!", d.id AS "id!", d.event_id AS "event_id!",
                  d.body AS "body!", d.attempts AS "attempts!", d.refusals AS "refusals!",
                  d.next_attempt_at <= now() AS "due!"
           FROM unnest($1::text[]) AS t (name)
           CROSS JOIN LATERAL (
               SELECT * FROM deliveries
               WHERE tenant = t.name AND delivered_at IS NULL AND rejected_at IS NULL
               ORDER BY id
               LIMIT $2
           ) d
           ORDER BY d.tenant, d.id"#,
        tenants,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// Records that the storefronts acknowledged deliveries `ids`, in one statement.
pub async fn acknowledged(conn: &mut PgConnection, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE deliveries SET delivered_at = now(), attempts = attempts + 1, last_error = NULL
         WHERE id = ANY($1)",
        ids,
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
