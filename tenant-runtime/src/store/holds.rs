//! Holds: tickets reserved for one buyer for a few minutes. The only place stock moves.
//!
//! A hold covers one or more ticket types of one event (a basket). Each ticket type in it is
//! one `holds` row and one conditional UPDATE of that type's counter row, so concurrent buyers
//! of different ticket types never wait for each other, and buyers of the same ticket type
//! wait only for that single statement. A basket of several types takes its counter rows in
//! id order inside one transaction, all or nothing, so two baskets cannot deadlock. Expired
//! holds give their tickets back through [`release_expired`], called by the sweeper and
//! lazily whenever a hold is refused.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::client_caps::{CapOf, ClientCap};
use crate::domain::Quantity;
use crate::error::{AppError, AppResult};

/// Most ticket types one hold may cover.
pub const MAX_ITEMS: usize = 20;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Hold {
    /// What the buyer orders with and releases by.
    pub id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub items: Vec<HoldItem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HoldItem {
    pub ticket_type_id: Uuid,
    pub quantity: i32,
}

/// One ticket type of a hold request, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLine {
    pub ticket_type_id: Uuid,
    pub quantity: Quantity,
}

impl Hold {
    /// Tickets held, over every ticket type.
    pub fn tickets(&self) -> i32 {
        self.items.iter().map(|i| i.quantity).sum()
    }
}

/// Reserves every requested ticket type, or none and says precisely why not. With a `cap`,
/// the hold is the client's and counts against their cap in the event (see [`ClientCap`]).
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn place_hold(
    db: &PgPool,
    items: &[HoldLine],
    ttl: Duration,
    cap: Option<&ClientCap>,
) -> AppResult<Hold> {
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(AppError::invalid(format!(
            "a hold covers between 1 and {MAX_ITEMS} ticket types"
        )));
    }
    let distinct: HashSet<Uuid> = items.iter().map(|i| i.ticket_type_id).collect();
    if distinct.len() != items.len() {
        return Err(AppError::invalid(
            "each ticket type may appear only once in a hold",
        ));
    }
    let basket = Uuid::new_v4();
    let refused = match reserve_all(db, basket, items, ttl, cap).await? {
        Attempt::Placed(hold) => return Ok(hold),
        Attempt::Refused(refused) => refused,
    };
    // Sold out, but lapsed holds still counted as held: return them and try once more (also
    // when a sweeper returned them first, between our attempt and this release).
    if let Some(ticket_type_id) = refused.lapsed_holds {
        release_expired(db, Some(ticket_type_id)).await?;
        return match reserve_all(db, basket, items, ttl, cap).await? {
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

/// Without a cap, one ticket type is a single statement, no transaction. With a cap, the
/// client's count and the reservation share one transaction under the client's lock; counter
/// rows are still locked only by the reserving statements.
async fn reserve_all(
    db: &PgPool,
    basket: Uuid,
    items: &[HoldLine],
    ttl: Duration,
    cap: Option<&ClientCap>,
) -> AppResult<Attempt> {
    let client_hash = cap.map(|c| c.client_hash.as_slice());
    let Some(cap) = cap else {
        if let [line] = items {
            let mut conn = db.acquire().await?;
            return reserve_one(&mut conn, basket, line, ttl, None).await;
        }
        let mut tx = db.begin().await?;
        let attempt = reserve_basket(&mut tx, basket, items, ttl, None).await?;
        if matches!(attempt, Attempt::Placed(_)) {
            tx.commit().await?;
        }
        return Ok(attempt);
    };
    let adding: i32 = items.iter().map(|i| i.quantity.as_i32()).sum();
    let mut tx = cap.begin(db).await?;
    cap.check(&mut tx, CapOf::TicketType(items[0].ticket_type_id), adding)
        .await?;
    let attempt = match items {
        [line] => reserve_one(&mut tx, basket, line, ttl, client_hash).await?,
        _ => reserve_basket(&mut tx, basket, items, ttl, client_hash).await?,
    };
    if matches!(attempt, Attempt::Placed(_)) {
        tx.commit().await?;
    }
    Ok(attempt)
}

async fn reserve_one(
    conn: &mut PgConnection,
    basket: Uuid,
    line: &HoldLine,
    ttl: Duration,
    client_hash: Option<&[u8]>,
) -> AppResult<Attempt> {
    let reservation = Reservation {
        id: basket,
        basket,
        line: *line,
        ttl,
        client_hash,
    };
    Ok(match reserve(conn, &reservation).await? {
        Reserved::Yes(expires_at) => Attempt::Placed(Hold {
            id: basket,
            expires_at,
            items: vec![item(line)],
        }),
        Reserved::No(refused) => Attempt::Refused(refused),
    })
}

/// Several ticket types in the caller's transaction: their counter rows locked in id order
/// first, then each reserved; any refusal is returned for the caller to roll back.
async fn reserve_basket(
    tx: &mut PgConnection,
    basket: Uuid,
    items: &[HoldLine],
    ttl: Duration,
    client_hash: Option<&[u8]>,
) -> AppResult<Attempt> {
    let mut ids: Vec<Uuid> = items.iter().map(|i| i.ticket_type_id).collect();
    ids.sort_unstable();
    let events = sqlx::query_scalar!(
        "SELECT event_id FROM ticket_types WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &ids,
    )
    .fetch_all(&mut *tx)
    .await?;
    if events.len() != ids.len() {
        return Err(AppError::not_found("ticket type"));
    }
    if events.iter().collect::<HashSet<_>>().len() > 1 {
        return Err(AppError::invalid(
            "a hold covers ticket types of one event only",
        ));
    }
    let mut expires_at = None;
    for (n, line) in items.iter().enumerate() {
        // The basket's id is its first row's, so the first row must exist before the others.
        let id = if n == 0 { basket } else { Uuid::new_v4() };
        let reservation = Reservation {
            id,
            basket,
            line: *line,
            ttl,
            client_hash,
        };
        match reserve(&mut *tx, &reservation).await? {
            Reserved::Yes(at) => expires_at = expires_at.or(Some(at)),
            Reserved::No(refused) => return Ok(Attempt::Refused(refused)),
        }
    }
    Ok(Attempt::Placed(Hold {
        id: basket,
        expires_at: expires_at.ok_or_else(|| anyhow::anyhow!("a basket without items"))?,
        items: items.iter().map(item).collect(),
    }))
}

fn item(line: &HoldLine) -> HoldItem {
    HoldItem {
        ticket_type_id: line.ticket_type_id,
        quantity: line.quantity.as_i32(),
    }
}

/// One `holds` row to place: `id` is the row's, `basket` the hold's (its first row's id),
/// `client_hash` whose cap it counts against.
#[derive(Debug, Clone, Copy)]
struct Reservation<'a> {
    id: Uuid,
    basket: Uuid,
    line: HoldLine,
    ttl: Duration,
    client_hash: Option<&'a [u8]>,
}

enum Reserved {
    Yes(DateTime<Utc>),
    No(Refusal),
}

/// One statement, one round trip: the conditional UPDATE of the counter row (locked only while
/// the statement runs, never across a round trip, unless the caller's transaction holds it),
/// the hold row, and, when refused, what the buyer needs to be told.
async fn reserve(conn: &mut PgConnection, reservation: &Reservation<'_>) -> AppResult<Reserved> {
    let Reservation {
        id,
        basket,
        line: HoldLine {
            ticket_type_id,
            quantity,
        },
        ttl,
        client_hash,
    } = *reservation;
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
             INSERT INTO holds (id, basket_id, ticket_type_id, quantity, expires_at, client_hash)
             SELECT $3, $5, reserved.id, $2, now() + make_interval(secs => $4), $6
             FROM reserved
             RETURNING expires_at
         )
         SELECT placed.expires_at AS \"expires_at?\", tt.name,
                tt.capacity - tt.sold - tt.held AS \"available!\", tt.per_order_limit,
                now() >= tt.sales_start AND now() < tt.sales_end AS \"on_sale!\",
                e.cancelled_at IS NOT NULL AS \"cancelled!\",
                -- A subquery in CASE runs only when the hold was refused.
                CASE WHEN placed.expires_at IS NULL THEN EXISTS (
                    SELECT 1 FROM holds h WHERE h.ticket_type_id = tt.id
                    AND h.state = 'active' AND h.expires_at <= now()) END AS lapsed_holds
         FROM ticket_types tt JOIN events e ON e.id = tt.event_id
         LEFT JOIN placed ON true
         WHERE tt.id = $1",
        ticket_type_id,
        quantity.as_i32(),
        id,
        ttl_secs,
        basket,
        client_hash,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(Reserved::No(Refusal {
            error: AppError::not_found("ticket type"),
            lapsed_holds: None,
        }));
    };
    if let Some(expires_at) = row.expires_at {
        return Ok(Reserved::Yes(expires_at));
    }
    let counter = CounterState {
        name: &row.name,
        cancelled: row.cancelled,
        on_sale: row.on_sale,
        per_order_limit: row.per_order_limit,
        available: row.available,
    };
    let error = match counter.refusal(quantity.as_i32()) {
        Some(error) => error,
        None => {
            // The row read above is the statement's snapshot; another buyer took the tickets
            // while this statement waited for the counter row. Read the counter again.
            let available = sqlx::query_scalar!(
                "SELECT capacity - sold - held AS \"n!\" FROM ticket_types WHERE id = $1",
                ticket_type_id
            )
            .fetch_one(&mut *conn)
            .await?;
            sold_out(&row.name, available)
        }
    };
    let sold_out = matches!(
        &error,
        AppError::Client {
            kind: "sold-out",
            ..
        }
    );
    Ok(Reserved::No(Refusal {
        error,
        lapsed_holds: (sold_out && row.lapsed_holds == Some(true)).then_some(ticket_type_id),
    }))
}

/// A ticket type's counter as read, and what decides whether a hold fits it.
pub(super) struct CounterState<'a> {
    pub name: &'a str,
    pub cancelled: bool,
    pub on_sale: bool,
    pub per_order_limit: i32,
    pub available: i32,
}

impl CounterState<'_> {
    /// Why `quantity` tickets cannot be held: the event, the sale window, the per-order limit,
    /// then the stock left; `None` when they fit.
    pub(super) fn refusal(&self, quantity: i32) -> Option<AppError> {
        let name = self.name;
        if self.cancelled {
            Some(AppError::conflict(
                "event-cancelled",
                "this event has been cancelled",
            ))
        } else if !self.on_sale {
            Some(AppError::conflict(
                "not-on-sale",
                format!("{name} tickets are not on sale right now"),
            ))
        } else if quantity > self.per_order_limit {
            Some(AppError::invalid(format!(
                "at most {} {name} tickets per order",
                self.per_order_limit
            )))
        } else if quantity > self.available {
            Some(sold_out(name, self.available))
        } else {
            None
        }
    }
}

fn sold_out(name: &str, available: i32) -> AppError {
    AppError::conflict(
        "sold-out",
        format!("only {} {name} tickets are available", available.max(0)),
    )
}

struct Refusal {
    error: AppError,
    /// The ticket type whose lapsed holds still count against its capacity, so a retry after
    /// releasing them may succeed.
    lapsed_holds: Option<Uuid>,
}

/// A live hold: every ticket type in it still held and not lapsed.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn find_hold(db: impl PgExecutor<'_>, id: Uuid) -> AppResult<Option<Hold>> {
    let rows = sqlx::query!(
        "SELECT ticket_type_id, quantity, expires_at,
                state = 'active' AND expires_at > now() AS \"live!\"
         FROM holds WHERE basket_id = $1 ORDER BY id = basket_id DESC, created_at, id",
        id,
    )
    .fetch_all(db)
    .await?;
    if rows.is_empty() || rows.iter().any(|r| !r.live) {
        return Ok(None);
    }
    Ok(Some(Hold {
        id,
        expires_at: rows[0].expires_at,
        items: rows
            .iter()
            .map(|r| HoldItem {
                ticket_type_id: r.ticket_type_id,
                quantity: r.quantity,
            })
            .collect(),
    }))
}

/// Gives a hold's tickets back early, e.g. when the buyer leaves the checkout; not while an
/// order for it waits for payment.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn release_hold(db: &PgPool, id: Uuid) -> AppResult<bool> {
    end_hold(db, id, Ending::Released).await
}

/// How a hold ends before its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The buyer let it go; refused while an order for it is pending.
    Released,
    /// Its order's checkout closed unpaid; the caller has checked the order.
    CheckoutExpired,
}

/// Ends every active row of a hold and returns their tickets, in one statement. Counter rows
/// are taken in id order, as a basket takes them.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn end_hold(db: impl PgExecutor<'_>, id: Uuid, ending: Ending) -> AppResult<bool> {
    let (state, even_if_ordered) = match ending {
        Ending::Released => ("released", false),
        Ending::CheckoutExpired => ("expired", true),
    };
    let returned = sqlx::query_scalar!(
        "WITH ended AS (
             UPDATE holds SET state = $2
             WHERE basket_id = $1 AND state = 'active'
               AND ($3 OR NOT EXISTS (
                   SELECT 1 FROM orders o WHERE o.hold_id = $1 AND o.state = 'pending'))
             RETURNING ticket_type_id, quantity
         ), locked AS MATERIALIZED (
             SELECT id FROM ticket_types WHERE id IN (SELECT ticket_type_id FROM ended)
             ORDER BY id FOR UPDATE
         )
         UPDATE ticket_types tt SET held = tt.held - ended.quantity
         FROM ended JOIN locked ON locked.id = ended.ticket_type_id
         WHERE tt.id = ended.ticket_type_id
         RETURNING tt.id",
        id,
        state,
        even_if_ordered,
    )
    .fetch_all(db)
    .await?;
    Ok(!returned.is_empty())
}

/// Expires lapsed holds of one ticket type (or of all, one ticket type at a time) and returns
/// their tickets; their pending orders expire with them. Returns how many holds expired.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
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
pub(super) async fn release_expired_of(
    db: impl PgExecutor<'_>,
    ticket_type_id: Uuid,
) -> AppResult<u64> {
    let expired = sqlx::query_scalar!(
        "WITH due AS (
             SELECT id FROM holds
             WHERE ticket_type_id = $1 AND state = 'active' AND expires_at <= now()
             FOR UPDATE SKIP LOCKED
         ), expired AS (
             UPDATE holds h SET state = 'expired' FROM due WHERE h.id = due.id
             RETURNING h.id, h.basket_id, h.quantity
         ), returned AS (
             UPDATE ticket_types SET held = held - (SELECT coalesce(sum(quantity), 0) FROM expired)
             WHERE id = $1 AND EXISTS (SELECT 1 FROM expired)
             RETURNING id
         ), orders_expired AS (
             UPDATE orders SET state = 'expired'
             WHERE state = 'pending' AND hold_id IN (SELECT basket_id FROM expired)
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
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
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
