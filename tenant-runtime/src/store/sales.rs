//! What staff see of their sales, and cancelling an event.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::AppResult;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SalesLine {
    pub order_id: Uuid,
    pub kind: String,
    pub paid_at: DateTime<Utc>,
    pub ticket_type: String,
    pub quantity: i32,
    pub total_minor: i64,
    pub currency: String,
    pub buyer_email: String,
}

/// Paid and refunded orders of one event, oldest first: the rows of the CSV report.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn sales_lines(db: &PgPool, event_id: Uuid) -> AppResult<Vec<SalesLine>> {
    Ok(sqlx::query_as!(
        SalesLine,
        "SELECT o.id AS \"order_id!\", o.kind AS \"kind!\", o.paid_at AS \"paid_at!\",
                CASE WHEN count(*) = 1 THEN min(tt.name)
                     ELSE string_agg(tt.name || ' x ' || h.quantity, ', ' ORDER BY tt.name)
                END AS \"ticket_type!\",
                sum(h.quantity)::int AS \"quantity!\", o.total_minor AS \"total_minor!\",
                o.currency AS \"currency!\", o.buyer_email AS \"buyer_email!\"
         FROM orders o
         JOIN holds h ON h.basket_id = o.hold_id
         JOIN ticket_types tt ON tt.id = h.ticket_type_id
         WHERE tt.event_id = $1 AND o.paid_at IS NOT NULL
         GROUP BY o.id
         UNION ALL
         SELECT o.id, o.kind, o.paid_at, tt.name, 1, o.total_minor, o.currency, o.buyer_email
         FROM orders o
         JOIN listings l ON l.id = o.listing_id
         JOIN tickets lt ON lt.id = l.ticket_id
         JOIN ticket_types tt ON tt.id = lt.ticket_type_id
         WHERE tt.event_id = $1 AND o.paid_at IS NOT NULL
         ORDER BY 3, 1",
        event_id,
    )
    .fetch_all(db)
    .await?)
}

/// Cancels an event: no new holds, live holds return their tickets, unpaid orders and open
/// listings end, and every paid order is refunded in full and cancelled (the refunds and
/// any payout reversals are requested in the ledger and sent to Stripe after commit).
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn cancel_event(db: &PgPool, event_id: Uuid, public_url: &str) -> AppResult<bool> {
    let mut tx = db.begin().await?;
    let cancelled = sqlx::query!(
        "UPDATE events SET cancelled_at = now(), updated_at = now()
         WHERE id = $1 AND cancelled_at IS NULL RETURNING id",
        event_id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if cancelled.is_none() {
        return Ok(false);
    }
    // Same lock order as everywhere: holds, then counters (in id order, as baskets take
    // them), then orders.
    sqlx::query!(
        "WITH released AS (
             UPDATE holds h SET state = 'released'
             FROM ticket_types tt
             WHERE tt.id = h.ticket_type_id AND tt.event_id = $1 AND h.state = 'active'
             RETURNING h.id, h.ticket_type_id, h.quantity
         ), locked AS MATERIALIZED (
             SELECT id FROM ticket_types WHERE id IN (SELECT ticket_type_id FROM released)
             ORDER BY id FOR UPDATE
         ), returned AS (
             UPDATE ticket_types tt SET held = tt.held - s.quantity
             FROM (SELECT ticket_type_id, sum(quantity) AS quantity FROM released
                   GROUP BY ticket_type_id) s
             JOIN locked ON locked.id = s.ticket_type_id
             WHERE tt.id = s.ticket_type_id
             RETURNING tt.id
         )
         UPDATE orders SET state = 'cancelled'
         WHERE state = 'pending' AND hold_id IN (SELECT id FROM released)",
        event_id,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "WITH withdrawn AS (
             UPDATE listings l SET state = 'withdrawn'
             FROM tickets t JOIN ticket_types tt ON tt.id = t.ticket_type_id
             WHERE t.id = l.ticket_id AND tt.event_id = $1 AND l.state IN ('open', 'reserved')
             RETURNING l.id
         )
         UPDATE orders SET state = 'cancelled'
         WHERE state = 'pending' AND listing_id IN (SELECT id FROM withdrawn)",
        event_id,
    )
    .execute(&mut *tx)
    .await?;
    super::ledger::refund_cancelled_event(&mut tx, event_id, public_url).await?;
    tx.commit().await?;
    Ok(true)
}
