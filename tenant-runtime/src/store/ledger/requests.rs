//! The ledger rows that still need a Stripe request (refunds, seller payouts, reversals),
//! claimed one at a time and settled with Stripe's answer.

use uuid::Uuid;

use super::Tx;
use crate::domain::{Money, OrderKind};
use crate::error::AppResult;
use crate::store::money;

/// A ledger row that still needs a Stripe request.
#[derive(Debug, Clone)]
pub struct Requested {
    pub id: Uuid,
    pub kind: String,
    pub order_id: Uuid,
    pub order_kind: OrderKind,
    pub amount: Money,
    pub party: String,
    pub payment_intent: Option<String>,
    /// For a reversal: the transfer to take back.
    pub reversed_transfer: Option<String>,
}

/// Claims the oldest requested row; the lock keeps other replicas off it until `settle`.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn next_requested(tx: &mut Tx<'_>) -> AppResult<Option<Requested>> {
    let Some(r) = sqlx::query!(
        "SELECT l.id, l.kind, l.order_id, o.kind AS order_kind, l.amount_minor,
                l.currency AS \"currency!\", l.party, o.payment_intent_id,
                p.stripe_ref AS \"reversed_transfer?\"
         FROM ledger l
         JOIN orders o ON o.id = l.order_id
         LEFT JOIN ledger p ON p.id = l.reverses
         WHERE l.state = 'requested' AND (l.reverses IS NULL OR p.state = 'done')
         ORDER BY l.created_at, l.id
         LIMIT 1
         FOR UPDATE OF l SKIP LOCKED",
    )
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(Requested {
        id: r.id,
        kind: r.kind,
        order_id: r.order_id,
        order_kind: OrderKind::parse(&r.order_kind)
            .ok_or_else(|| anyhow::anyhow!("unknown order kind"))?,
        amount: money(r.amount_minor, &r.currency)?,
        party: r.party,
        payment_intent: r.payment_intent_id,
        reversed_transfer: r.reversed_transfer,
    }))
}

/// The request went out but no clear answer came back; it stays requested.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn attempted(tx: &mut Tx<'_>, id: Uuid) -> AppResult<()> {
    sqlx::query!("UPDATE ledger SET attempted_at = now() WHERE id = $1", id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Stripe answered: done with its object id, or failed for good with the reason.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn settle(tx: &mut Tx<'_>, id: Uuid, outcome: Result<&str, &str>) -> AppResult<()> {
    let (state, stripe_ref, note) = match outcome {
        Ok(reference) => ("done", Some(reference), None),
        Err(reason) => ("failed", None, Some(reason)),
    };
    sqlx::query!(
        "UPDATE ledger SET state = $2, stripe_ref = coalesce($3, stripe_ref),
                note = coalesce($4, note), settled_at = now()
         WHERE id = $1",
        id,
        state,
        stripe_ref,
        note,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
