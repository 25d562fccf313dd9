//! The record of which tenant created which Checkout Session. Stripe knows only the
//! platform; this table is what lets the service refuse one tenant another tenant's session.

use sqlx::PgExecutor;

/// A session as it is recorded when Stripe has created it.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub connected_account: &'a str,
    pub client_reference_id: &'a str,
    pub idempotency_key: &'a str,
}

/// Records a session. A retried request gets the same session from Stripe (same idempotency
/// key), so recording it again changes nothing.
pub async fn record(db: impl PgExecutor<'_>, session: &NewSession<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO checkout_sessions
             (id, tenant, connected_account, client_reference_id, idempotency_key)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO NOTHING",
        session.id,
        session.tenant,
        session.connected_account,
        session.client_reference_id,
        session.idempotency_key,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The tenant that created session `id`, if this service created it at all.
pub async fn owner(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<Option<String>> {
    let row = sqlx::query_scalar!("SELECT tenant FROM checkout_sessions WHERE id = $1", id)
        .fetch_optional(db)
        .await?;
    Ok(row)
}
