//! The record of which tenant created which Checkout Session. Stripe knows only the
//! platform; this table is what lets the service refuse one tenant another tenant's session,
//! payment intent or transfer group.

use sqlx::PgExecutor;

/// A session as it is recorded when Stripe has created it.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub connected_account: &'a str,
    pub client_reference_id: &'a str,
    pub idempotency_key: &'a str,
    pub destination_charge: bool,
    pub transfer_group: Option<&'a str>,
}

/// Records a session. A retried request gets the same session from Stripe (same idempotency
/// key), so recording it again changes nothing.
pub async fn record(db: impl PgExecutor<'_>, session: &NewSession<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO checkout_sessions
             (id, tenant, connected_account, client_reference_id, idempotency_key,
              destination_charge, transfer_group)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO NOTHING",
        session.id,
        session.tenant,
        session.connected_account,
        session.client_reference_id,
        session.idempotency_key,
        session.destination_charge,
        session.transfer_group,
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

/// The tenants that created those of sessions `ids` this service created.
pub async fn owners(
    db: impl PgExecutor<'_>,
    ids: &[String],
) -> sqlx::Result<Vec<(String, String)>> {
    let rows = sqlx::query!(
        "SELECT id, tenant FROM checkout_sessions WHERE id = ANY($1)",
        ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.tenant)).collect())
}

/// For each of `payment_intents` a recorded session took, the tenant whose session it was.
pub async fn payment_owners(
    db: impl PgExecutor<'_>,
    payment_intents: &[String],
) -> sqlx::Result<Vec<(String, String)>> {
    let rows = sqlx::query!(
        "SELECT DISTINCT ON (payment_intent) payment_intent AS \"payment_intent!\", tenant
         FROM checkout_sessions WHERE payment_intent = ANY($1)
         ORDER BY payment_intent",
        payment_intents
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.payment_intent, r.tenant))
        .collect())
}

/// What Stripe reported about a session when it was read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed<'a> {
    pub id: &'a str,
    pub paid: bool,
    pub amount_total: Option<i64>,
    pub currency: Option<&'a str>,
    pub payment_intent: Option<&'a str>,
}

/// Keeps what Stripe said: a paid session stays paid, and its payment intent becomes the
/// tenant's to refund.
pub async fn observe(db: impl PgExecutor<'_>, seen: &Observed<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE checkout_sessions
            SET paid = paid OR $2,
                amount_paid = CASE WHEN $2 THEN $3 ELSE amount_paid END,
                currency = COALESCE($4, currency),
                payment_intent = COALESCE($5, payment_intent)
          WHERE id = $1",
        seen.id,
        seen.paid,
        seen.amount_total,
        seen.currency,
        seen.payment_intent,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A session of a tenant, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub id: String,
    pub destination_charge: bool,
    pub paid: bool,
    pub amount_paid: Option<i64>,
    pub currency: Option<String>,
}

/// The tenant's session that took payment intent `payment_intent`, if recorded.
pub async fn of_payment_intent(
    db: impl PgExecutor<'_>,
    tenant: &str,
    payment_intent: &str,
) -> sqlx::Result<Option<Recorded>> {
    sqlx::query_as!(
        Recorded,
        "SELECT id, destination_charge, paid, amount_paid, currency
           FROM checkout_sessions
          WHERE tenant = $1 AND payment_intent = $2
          LIMIT 1",
        tenant,
        payment_intent,
    )
    .fetch_optional(db)
    .await
}

/// The tenant's session `id`, if recorded.
pub async fn of_tenant(
    db: impl PgExecutor<'_>,
    tenant: &str,
    id: &str,
) -> sqlx::Result<Option<Recorded>> {
    sqlx::query_as!(
        Recorded,
        "SELECT id, destination_charge, paid, amount_paid, currency
           FROM checkout_sessions
          WHERE tenant = $1 AND id = $2",
        tenant,
        id,
    )
    .fetch_optional(db)
    .await
}

/// The tenant's resale sessions in `transfer_group`.
pub async fn in_group(
    db: impl PgExecutor<'_>,
    tenant: &str,
    transfer_group: &str,
) -> sqlx::Result<Vec<Recorded>> {
    sqlx::query_as!(
        Recorded,
        "SELECT id, destination_charge, paid, amount_paid, currency
           FROM checkout_sessions
          WHERE tenant = $1 AND transfer_group = $2 AND NOT destination_charge
          ORDER BY created_at",
        tenant,
        transfer_group,
    )
    .fetch_all(db)
    .await
}

/// Claims `transfer_group` for `tenant`; answers the tenant that holds it (the first to ask).
pub async fn claim_transfer_group(
    db: &sqlx::PgPool,
    tenant: &str,
    transfer_group: &str,
) -> sqlx::Result<String> {
    sqlx::query!(
        "INSERT INTO transfer_groups (transfer_group, tenant) VALUES ($1, $2)
         ON CONFLICT (transfer_group) DO NOTHING",
        transfer_group,
        tenant,
    )
    .execute(db)
    .await?;
    sqlx::query_scalar!(
        "SELECT tenant FROM transfer_groups WHERE transfer_group = $1",
        transfer_group
    )
    .fetch_one(db)
    .await
}
