//! Issued tickets as their holder sees them, and check-in at the door.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::money;
use crate::domain::{Money, TicketCode};
use crate::error::{AppError, AppResult};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Ticket {
    pub id: Uuid,
    pub epoch: i32,
    #[serde(skip)]
    pub access_token: String,
    pub event_slug: String,
    pub event_title: String,
    pub venue: String,
    pub starts_at: DateTime<Utc>,
    pub ticket_type: String,
    #[schema(value_type = crate::http::schema::MoneySchema)]
    pub face_value: Money,
    /// Whether it is on the resale market right now (then it cannot be checked in).
    pub listed: bool,
    pub checked_in_at: Option<DateTime<Utc>>,
    /// False once its order is refunded, cancelled or disputed, or its event cancelled.
    pub valid: bool,
}

macro_rules! ticket_query {
    ($where:literal, $arg:expr) => {
        sqlx::query!(
            "SELECT t.id, t.epoch, t.access_token, e.slug, e.title, e.venue, e.starts_at,
                    tt.name, tt.price_minor, tt.currency as \"currency!\",
                    EXISTS (SELECT 1 FROM listings l WHERE l.ticket_id = t.id
                            AND l.state IN ('open', 'reserved')) AS \"listed!\",
                    c.checked_in_at AS \"checked_in_at?\",
                    (o.state = 'paid' AND e.cancelled_at IS NULL
                     AND o.dispute_status IS DISTINCT FROM 'open'
                     AND o.dispute_status IS DISTINCT FROM 'lost') AS \"valid!\"
             FROM tickets t
             JOIN ticket_types tt ON tt.id = t.ticket_type_id
             JOIN events e ON e.id = tt.event_id
             JOIN orders o ON o.id = t.order_id
             LEFT JOIN check_ins c ON c.ticket_id = t.id AND c.epoch = t.epoch
             WHERE "
                + $where
                + "
             ORDER BY t.created_at, t.id",
            $arg
        )
    };
}

#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn find_ticket_by_token(db: &PgPool, token: &str) -> AppResult<Option<Ticket>> {
    let rows = ticket_query!("t.access_token = $1", token)
        .fetch_all(db)
        .await?;
    let Some(r) = rows.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(Ticket {
        id: r.id,
        epoch: r.epoch,
        access_token: r.access_token,
        event_slug: r.slug,
        event_title: r.title,
        venue: r.venue,
        starts_at: r.starts_at,
        ticket_type: r.name,
        face_value: money(r.price_minor, &r.currency)?,
        listed: r.listed,
        checked_in_at: r.checked_in_at,
        valid: r.valid,
    }))
}

/// The tickets an order currently owns (a resold ticket moves to the buyer's order).
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn tickets_of_order(
    db: impl sqlx::PgExecutor<'_>,
    order_id: Uuid,
) -> AppResult<Vec<Ticket>> {
    let rows = ticket_query!("t.order_id = $1", order_id)
        .fetch_all(db)
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Ticket {
                id: r.id,
                epoch: r.epoch,
                access_token: r.access_token,
                event_slug: r.slug,
                event_title: r.title,
                venue: r.venue,
                starts_at: r.starts_at,
                ticket_type: r.name,
                face_value: money(r.price_minor, &r.currency)?,
                listed: r.listed,
                checked_in_at: r.checked_in_at,
                valid: r.valid,
            })
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CheckIn {
    pub ticket_id: Uuid,
    /// When this ticket got in.
    pub checked_in_at: DateTime<Utc>,
    /// The gate the scan named, if any.
    pub gate: Option<String>,
    /// The event's slug and title, and the ticket type: what the staff member tells the guest.
    pub event: String,
    pub event_title: String,
    pub ticket_type: String,
}

/// Admits, at event `event` (its slug) and `gate`, the ticket a verified code names, once.
/// Refused with what the code is for when it is another event's; with when and where it got
/// in when it already did (a copied code); and when it was superseded by a resale, its order
/// is not paid, its event was cancelled, or it is listed for resale.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn check_in(
    db: &PgPool,
    code: TicketCode,
    event: &str,
    gate: Option<&str>,
) -> AppResult<CheckIn> {
    let mut tx = db.begin().await?;
    let t = sqlx::query!(
        "SELECT t.epoch, o.state AS order_state, o.dispute_status,
                e.cancelled_at IS NOT NULL AS \"cancelled!\",
                e.slug, e.title, e.venue, e.starts_at, tt.name AS ticket_type,
                EXISTS (SELECT 1 FROM listings l WHERE l.ticket_id = t.id
                        AND l.state IN ('open', 'reserved')) AS \"listed!\"
         FROM tickets t
         JOIN orders o ON o.id = t.order_id
         JOIN ticket_types tt ON tt.id = t.ticket_type_id
         JOIN events e ON e.id = tt.event_id
         WHERE t.id = $1
         FOR UPDATE OF t",
        code.ticket_id,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(AppError::not_found("ticket"))?;
    if t.slug != event {
        return Err(AppError::conflict(
            "wrong-event",
            format!(
                "this ticket is for {} at {} on {} (event `{}`), not for this event",
                t.title,
                t.venue,
                t.starts_at.format("%Y-%m-%d %H:%M UTC"),
                t.slug
            ),
        ));
    }
    if code.epoch != t.epoch {
        return Err(AppError::conflict(
            "code-superseded",
            "this code was replaced when the ticket was resold; it no longer admits anyone",
        ));
    }
    if t.cancelled {
        return Err(AppError::conflict(
            "event-cancelled",
            "this event has been cancelled",
        ));
    }
    if let Some(refusal) = super::listings::dispute_refusal(t.dispute_status.as_deref()) {
        return Err(refusal);
    }
    if t.order_state != "paid" {
        return Err(AppError::conflict(
            "ticket-not-valid",
            "this ticket's order was refunded or cancelled",
        ));
    }
    if t.listed {
        return Err(AppError::conflict(
            "ticket-listed",
            "this ticket is listed for resale; the holder must withdraw the listing first",
        ));
    }
    let admitted = sqlx::query_scalar!(
        "INSERT INTO check_ins (ticket_id, epoch, gate) VALUES ($1, $2, $3)
         ON CONFLICT (ticket_id) DO NOTHING RETURNING checked_in_at",
        code.ticket_id,
        code.epoch,
        gate,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(checked_in_at) = admitted else {
        let first = sqlx::query!(
            "SELECT checked_in_at, gate FROM check_ins WHERE ticket_id = $1",
            code.ticket_id
        )
        .fetch_one(&mut *tx)
        .await?;
        return Err(AppError::conflict(
            "already-admitted",
            format!(
                "this ticket was already admitted at {}{}: this may be a copied code",
                first.checked_in_at.format("%Y-%m-%d %H:%M:%S UTC"),
                first
                    .gate
                    .map_or_else(String::new, |gate| format!(" through gate {gate}")),
            ),
        ));
    };
    tx.commit().await?;
    Ok(CheckIn {
        ticket_id: code.ticket_id,
        checked_in_at,
        gate: gate.map(str::to_owned),
        event: t.slug,
        event_title: t.title,
        ticket_type: t.ticket_type,
    })
}
