//! The event record and the outbox row, written together: an event is either recorded with
//! its delivery (or as unroutable) or not at all, so a retry by Stripe finds it or redoes it.
//! The endpoint records the events that arrive together in one statement
//! ([`super::recorder`]).

use std::collections::HashSet;

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

/// One event of a batch for [`record_all`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub event: &'a Envelope,
    pub body: &'a [u8],
    pub placed: &'a Result<String, Unroutable>,
}

/// Records each event of `rows` (distinct ids) once, with a delivery to the tenant it was
/// placed with or the reason it has none, in one statement (one round trip, one
/// commit, atomic: all of them or none). Deliveries are written in the order of `rows`.
/// Answers the ids recorded now; the others were seen before.
pub async fn record_all(
    db: impl PgExecutor<'_>,
    rows: &[Row<'_>],
) -> sqlx::Result<HashSet<String>> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut kinds = Vec::with_capacity(rows.len());
    let mut tenants = Vec::with_capacity(rows.len());
    let mut bodies = Vec::with_capacity(rows.len());
    let mut reasons = Vec::with_capacity(rows.len());
    let mut sessions = Vec::with_capacity(rows.len());
    let mut payment_intents = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.event.id.clone());
        kinds.push(row.event.kind.clone());
        tenants.push(row.placed.as_ref().ok().cloned());
        bodies.push(row.body.to_vec());
        reasons.push(row.placed.as_ref().err().map(ToString::to_string));
        let (session, payment_intent) = match row.event.checkout_session_payment() {
            Some((session, payment_intent)) => {
                (Some(session.to_owned()), Some(payment_intent.to_owned()))
            }
            None => (None, None),
        };
        sessions.push(session);
        payment_intents.push(payment_intent);
    }
    // Not a checked `query!`: its arrays of nullable values are bound as they are.
    sqlx::query_scalar::<_, String>(
        r#"WITH input AS (
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[],
                                    $6::text[], $7::text[])
                   WITH ORDINALITY AS i (id, type, tenant, body, reason, session, payment_intent, n)
           ), event AS (
               INSERT INTO stripe_events (id, type, tenant)
               SELECT id, type, tenant FROM input ORDER BY n
               ON CONFLICT (id) DO NOTHING
               RETURNING id
           ), delivery AS (
               INSERT INTO deliveries (event_id, tenant, body)
               SELECT input.id, input.tenant, input.body FROM input JOIN event USING (id)
               WHERE input.tenant IS NOT NULL
               ORDER BY input.n
           ), unroutable AS (
               INSERT INTO unroutable_events (event_id, reason, body)
               SELECT input.id, input.reason, input.body FROM input JOIN event USING (id)
               WHERE input.tenant IS NULL
           ), payment AS (
               UPDATE checkout_sessions SET payment_intent = input.payment_intent
               FROM input
               WHERE checkout_sessions.id = input.session
                 AND checkout_sessions.tenant = input.tenant
                 AND checkout_sessions.payment_intent IS NULL
                 AND input.payment_intent IS NOT NULL
           )
           SELECT id FROM event"#,
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&tenants)
    .bind(&bodies)
    .bind(&reasons)
    .bind(&sessions)
    .bind(&payment_intents)
    .fetch_all(db)
    .await
    .map(|new| new.into_iter().collect())
}

/// SQLSTATE of a missing table or column.
const UNDEFINED_TABLE: &str = "42P01";
const UNDEFINED_COLUMN: &str = "42703";

/// The tenants the seller accounts among `accounts` (`acct_...` the service created for a
/// tenant's seller) were recorded for. The seller accounts table comes with the operations
/// migration; where it is not there yet, no account is a seller account.
pub async fn seller_tenants(
    db: impl PgExecutor<'_>,
    accounts: &[String],
) -> sqlx::Result<Vec<(String, String)>> {
    let found = sqlx::query!(
        "SELECT account, tenant FROM seller_accounts WHERE account = ANY($1)",
        accounts
    )
    .fetch_all(db)
    .await
    .map(|rows| rows.into_iter().map(|r| (r.account, r.tenant)).collect());
    match found {
        Err(sqlx::Error::Database(e))
            if matches!(
                e.code().as_deref(),
                Some(UNDEFINED_TABLE | UNDEFINED_COLUMN)
            ) =>
        {
            Ok(Vec::new())
        }
        other => other,
    }
}
