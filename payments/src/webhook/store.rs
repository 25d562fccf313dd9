//! The event record and the outbox row, written together: an event is either recorded with
//! its delivery (or as unroutable) or not at all, so a retry by Stripe finds it or redoes it.

use sqlx::PgExecutor;

use super::route::{Envelope, Unroutable};

/// What recording an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// New: its delivery (or its unroutable record) was written.
    New,
    /// Seen before: nothing was written.
    Duplicate,
}

/// Records `event` once, with a delivery to `placed` or the reason it has none, in one
/// statement (one round trip, atomic). When the event reports the payment intent of a checkout
/// session recorded for the tenant it is placed with, the session keeps it: later events about
/// that payment (refunds, disputes) are placed by it.
pub async fn record(
    db: impl PgExecutor<'_>,
    event: &Envelope,
    body: &[u8],
    placed: &Result<String, Unroutable>,
) -> sqlx::Result<Recorded> {
    let tenant = placed.as_ref().ok();
    let reason = placed.as_ref().err().map(ToString::to_string);
    let (session, payment_intent) = match event.checkout_session_payment() {
        Some((session, payment_intent)) => (Some(session), Some(payment_intent)),
        None => (None, None),
    };
    let new = sqlx::query_scalar!(
        r#"WITH event AS (
               INSERT INTO stripe_events (id, type, tenant) VALUES ($1, $2, $3)
               ON CONFLICT (id) DO NOTHING
               RETURNING id
           ), delivery AS (
               INSERT INTO deliveries (event_id, tenant, body)
               SELECT id, $3, $4 FROM event WHERE $3::text IS NOT NULL
           ), unroutable AS (
               INSERT INTO unroutable_events (event_id, reason, body)
               SELECT id, $5, $4 FROM event WHERE $3::text IS NULL
           ), payment AS (
               UPDATE checkout_sessions SET payment_intent = $7
               WHERE id = $6 AND tenant = $3 AND payment_intent IS NULL
                 AND $7::text IS NOT NULL
           )
           SELECT count(*) AS "new!" FROM event"#,
        event.id,
        event.kind,
        tenant,
        body,
        reason,
        session,
        payment_intent,
    )
    .fetch_one(db)
    .await?;
    Ok(if new > 0 {
        Recorded::New
    } else {
        Recorded::Duplicate
    })
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
