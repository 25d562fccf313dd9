//! Holds: tickets reserved for one buyer for a few minutes. The only place stock moves.
//!
//! A hold is one conditional UPDATE of its ticket type's counter row, so concurrent buyers of
//! different ticket types never wait for each other, and buyers of the same ticket type wait
//! only for that single statement. Expired holds give their tickets back through
//! [`release_expired`], called by the sweeper and lazily whenever a hold is refused.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::Quantity;
use crate::error::{AppError, AppResult};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Hold {
    pub id: Uuid,
    pub ticket_type_id: Uuid,
    pub quantity: i32,
    pub expires_at: DateTime<Utc>,
}

/// Reserves `quantity` tickets, or says precisely why not.
pub async fn place_hold(
    db: &PgPool,
    ticket_type_id: Uuid,
    quantity: Quantity,
    ttl: Duration,
) -> AppResult<Hold> {
    let refused = match try_reserve(db, ticket_type_id, quantity, ttl).await? {
        Attempt::Placed(hold) => return Ok(hold),
        Attempt::Refused(refused) => refused,
    };
    // Sold out, but lapsed holds still counted as held: return them and try once more (also
    // when a sweeper returned them first, between our attempt and this release).
    if refused.lapsed_holds {
        release_expired(db, Some(ticket_type_id)).await?;
        return match try_reserve(db, ticket_type_id, quantity, ttl).await? {
            Attempt::Placed(hold) => Ok(hold),
            Attempt::Refused(refused) => Err(refused.error),
        };
    }
    Err(refused.error)
}

enum Attempt {
    Placed(Hold),
    Refused(Refusal),
}

/// One statement, one round trip: the conditional UPDATE of the counter row (locked only while
/// the statement runs, never across a round trip), the hold row, and, when refused, what the
/// buyer needs to be told.
async fn try_reserve(
    db: &PgPool,
    ticket_type_id: Uuid,
    quantity: Quantity,
    ttl: Duration,
) -> AppResult<Attempt> {
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX) as f64;
    let row = sqlx::query!(
        "WITH reserved AS (
             UPDATE ticket_types tt SET held = tt.held + $2
             FROM events e
             WHERE tt.id = $1 AND e.id = tt.event_id AND e.cancelled_at IS NULL
               AND now() >= tt.sales_start AND now() < tt.sales_end
               AND $2 <= tt.per_order_limit
               AND tt.sold + tt.held + $2 <= tt.capacity
             RETURNING tt.id
         ), placed AS (
             INSERT INTO holds (id, ticket_type_id, quantity, expires_at)
             SELECT $3, reserved.id, $2, now() + make_interval(secs => $4) FROM reserved
             RETURNING id, ticket_type_id, quantity, expires_at
         )
         SELECT placed.id AS \"id?\", placed.expires_at AS \"expires_at?\",
                tt.capacity - tt.sold - tt.held AS \"available!\", tt.per_order_limit,
                now() >= tt.sales_start AND now() < tt.sales_end AS \"on_sale!\",
                e.cancelled_at IS NOT NULL AS \"cancelled!\",
                -- A subquery in CASE runs only when the hold was refused.
                CASE WHEN placed.id IS NULL THEN EXISTS (
                    SELECT 1 FROM holds h WHERE h.ticket_type_id = tt.id
                    AND h.state = 'active' AND h.expires_at <= now()) END AS lapsed_holds
         FROM ticket_types tt JOIN events e ON e.id = tt.event_id
         LEFT JOIN placed ON true
         WHERE tt.id = $1",
        ticket_type_id,
        quantity.as_i32(),
        Uuid::new_v4(),
        ttl_secs,
    )
    .fetch_optional(db)
    .await?;
    let Some(row) = row else {
        return Ok(Attempt::Refused(Refusal {
            error: AppError::not_found("ticket type"),
            lapsed_holds: false,
        }));
    };
    if let (Some(id), Some(expires_at)) = (row.id, row.expires_at) {
        return Ok(Attempt::Placed(Hold {
            id,
            ticket_type_id,
            quantity: quantity.as_i32(),
            expires_at,
        }));
    }
    let lapsed_holds = row.lapsed_holds.unwrap_or(false);
    let error = if row.cancelled {
        AppError::conflict("event-cancelled", "this event has been cancelled")
    } else if !row.on_sale {
        AppError::conflict("not-on-sale", "this ticket type is not on sale right now")
    } else if quantity.as_i32() > row.per_order_limit {
        AppError::invalid(format!(
            "at most {} tickets of this type per order",
            row.per_order_limit
        ))
    } else if row.available < quantity.as_i32() {
        sold_out(row.available)
    } else {
        // The row read above is the statement's snapshot; another buyer took the tickets
        // while this statement waited for the counter row. Read the counter again.
        let available = sqlx::query_scalar!(
            "SELECT capacity - sold - held AS \"n!\" FROM ticket_types WHERE id = $1",
            ticket_type_id
        )
        .fetch_one(db)
        .await?;
        sold_out(available)
    };
    let lapsed_holds = lapsed_holds
        && matches!(
            &error,
            AppError::Client {
                kind: "sold-out",
                ..
            }
        );
    Ok(Attempt::Refused(Refusal {
        error,
        lapsed_holds,
    }))
}

fn sold_out(available: i32) -> AppError {
    AppError::conflict(
        "sold-out",
        format!(
            "only {} tickets of this type are available",
            available.max(0)
        ),
    )
}

struct Refusal {
    error: AppError,
    /// Whether lapsed holds still count against capacity, so a retry after releasing them
    /// may succeed.
    lapsed_holds: bool,
}

pub async fn find_hold(db: impl PgExecutor<'_>, id: Uuid) -> AppResult<Option<Hold>> {
    Ok(sqlx::query_as!(
        Hold,
        "SELECT id, ticket_type_id, quantity, expires_at FROM holds
         WHERE id = $1 AND state = 'active' AND expires_at > now()",
        id,
    )
    .fetch_optional(db)
    .await?)
}

/// Gives a hold's tickets back early, e.g. when the buyer leaves the checkout.
pub async fn release_hold(db: &PgPool, id: Uuid) -> AppResult<bool> {
    let released = sqlx::query_scalar!(
        "WITH released AS (
             UPDATE holds SET state = 'released'
             WHERE id = $1 AND state = 'active'
               AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.hold_id = $1 AND o.state = 'pending')
             RETURNING ticket_type_id, quantity
         )
         UPDATE ticket_types tt SET held = tt.held - released.quantity
         FROM released WHERE tt.id = released.ticket_type_id
         RETURNING tt.id",
        id,
    )
    .fetch_optional(db)
    .await?;
    Ok(released.is_some())
}

/// Expires lapsed holds of one ticket type (or of all, one ticket type at a time) and returns
/// their tickets; their pending orders expire with them. Returns how many holds expired.
pub async fn release_expired(db: &PgPool, ticket_type_id: Option<Uuid>) -> AppResult<u64> {
    let types = match ticket_type_id {
        Some(id) => vec![id],
        None => {
            sqlx::query_scalar!(
                "SELECT DISTINCT ticket_type_id FROM holds
                 WHERE state = 'active' AND expires_at <= now()"
            )
            .fetch_all(db)
            .await?
        }
    };
    let mut expired = 0;
    for ticket_type_id in types {
        expired += release_expired_of(db, ticket_type_id).await?;
    }
    Ok(expired)
}

/// One ticket type per statement, so two replicas' sweepers lock at most one counter row each
/// and cannot deadlock; SKIP LOCKED leaves holds that a payment is converting right now.
async fn release_expired_of(db: &PgPool, ticket_type_id: Uuid) -> AppResult<u64> {
    let expired = sqlx::query_scalar!(
        "WITH due AS (
             SELECT id FROM holds
             WHERE ticket_type_id = $1 AND state = 'active' AND expires_at <= now()
             FOR UPDATE SKIP LOCKED
         ), expired AS (
             UPDATE holds h SET state = 'expired' FROM due WHERE h.id = due.id
             RETURNING h.id, h.quantity
         ), returned AS (
             UPDATE ticket_types SET held = held - (SELECT coalesce(sum(quantity), 0) FROM expired)
             WHERE id = $1 AND EXISTS (SELECT 1 FROM expired)
             RETURNING id
         ), orders_expired AS (
             UPDATE orders SET state = 'expired'
             WHERE state = 'pending' AND hold_id IN (SELECT id FROM expired)
             RETURNING id
         )
         SELECT count(*) AS \"n!\" FROM expired",
        ticket_type_id,
    )
    .fetch_one(db)
    .await?;
    Ok(u64::try_from(expired).unwrap_or(0))
}

/// Before showing availability: returns lapsed holds of an event's ticket types.
pub async fn release_expired_for_event(db: &PgPool, event_id: Uuid) -> AppResult<()> {
    let types = sqlx::query_scalar!(
        "SELECT DISTINCT h.ticket_type_id FROM holds h JOIN ticket_types tt ON tt.id = h.ticket_type_id
         WHERE tt.event_id = $1 AND h.state = 'active' AND h.expires_at <= now()",
        event_id,
    )
    .fetch_all(db)
    .await?;
    for ticket_type_id in types {
        release_expired_of(db, ticket_type_id).await?;
    }
    Ok(())
}
