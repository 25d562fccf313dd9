//! The event record and the outbox row, written together: an event is either recorded with
//! its delivery (or as unroutable) or not at all, so a retry by Stripe finds it or redoes it.

use sqlx::{PgExecutor, PgPool};

use super::route::{Envelope, Unroutable};

/// What recording an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// New: its delivery (or its unroutable record) was written.
    New,
    /// Seen before: nothing was written.
    Duplicate,
}

/// Records `event` once, with a delivery to `placed` or the reason it has none.
pub async fn record(
    db: &PgPool,
    event: &Envelope,
    body: &[u8],
    placed: &Result<String, Unroutable>,
) -> sqlx::Result<Recorded> {
    let mut tx = db.begin().await?;
    let tenant = placed.as_ref().ok();
    let inserted = sqlx::query_scalar!(
        "INSERT INTO stripe_events (id, type, tenant) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
        event.id,
        event.kind,
        tenant,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        return Ok(Recorded::Duplicate);
    }
    match placed {
        Ok(tenant) => {
            sqlx::query!(
                "INSERT INTO deliveries (event_id, tenant, body) VALUES ($1, $2, $3)",
                event.id,
                tenant,
                body,
            )
            .execute(&mut *tx)
            .await?;
        }
        Err(reason) => {
            sqlx::query!(
                "INSERT INTO unroutable_events (event_id, reason, body) VALUES ($1, $2, $3)",
                event.id,
                reason.to_string(),
                body,
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Recorded::New)
}

/// SQLSTATE of a missing table or column.
const UNDEFINED_TABLE: &str = "42P01";
const UNDEFINED_COLUMN: &str = "42703";

/// The tenant a seller account (`acct_...` the service created for a tenant's seller) was
/// recorded for. The seller accounts table comes with the operations migration; where it is
/// not there yet, no account is a seller account.
pub async fn seller_tenant(db: impl PgExecutor<'_>, account: &str) -> sqlx::Result<Option<String>> {
    let found =
        sqlx::query_scalar::<_, String>("SELECT tenant FROM seller_accounts WHERE account = $1")
            .bind(account)
            .fetch_optional(db)
            .await;
    match found {
        Err(sqlx::Error::Database(e))
            if matches!(
                e.code().as_deref(),
                Some(UNDEFINED_TABLE | UNDEFINED_COLUMN)
            ) =>
        {
            Ok(None)
        }
        other => other,
    }
}
