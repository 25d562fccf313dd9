//! The ledger: where every amount of an order or listing went. Rows Stripe already settled
//! are written `done`; refunds, seller payouts and reversals are written `requested` inside
//! the transaction that decided them and sent to Stripe after it commits.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::payments::lock_order;
use super::{listings, money};
use crate::domain::{BasisPoints, Money, OrderKind, Split};
use crate::error::{AppError, AppResult};
use crate::mail::{self, Message};

mod reported;
mod requests;

pub use reported::{DisputeOutcome, ParkedEvent, Reported, book_reported, park, unpark};
pub use requests::{Requested, attempted, next_requested, settle};

type Tx<'a> = Transaction<'a, Postgres>;

/// One row of the ledger, for the admin API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    pub id: Uuid,
    pub order_id: Uuid,
    pub listing_id: Option<Uuid>,
    /// charge, application_fee, tenant_share, platform_fee, seller_payout, refund,
    /// transfer_reversal or dispute.
    pub kind: String,
    pub amount_minor: i64,
    pub currency: String,
    /// Who received it: `buyer`, `platform`, or a connected account id.
    pub party: String,
    /// requested (Stripe not yet done), held (a payout waiting for a dispute to end), done,
    /// failed, cancelled.
    pub state: String,
    pub stripe_ref: Option<String>,
    pub note: String,
    pub created_at: DateTime<Utc>,
}

/// A row to write; `insert_entry` settles it at once when it is `done`.
struct NewEntry<'a> {
    order_id: Uuid,
    listing_id: Option<Uuid>,
    kind: &'a str,
    amount: Money,
    party: &'a str,
    state: &'a str,
    stripe_ref: Option<&'a str>,
    reverses: Option<Uuid>,
    note: &'a str,
}

async fn insert_entry(tx: &mut Tx<'_>, e: NewEntry<'_>) -> AppResult<Uuid> {
    Ok(sqlx::query_scalar!(
        "INSERT INTO ledger (id, order_id, listing_id, kind, amount_minor, currency, party, state,
                             stripe_ref, reverses, note, settled_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                 CASE WHEN $8 = 'done' THEN now() END)
         RETURNING id",
        Uuid::new_v4(),
        e.order_id,
        e.listing_id,
        e.kind,
        e.amount.amount_minor,
        e.amount.currency.as_str() as &str,
        e.party,
        e.state,
        e.stripe_ref,
        e.reverses,
        e.note,
    )
    .fetch_one(&mut **tx)
    .await?)
}

/// A payment to book, with the fees of the storefront it was made at.
#[derive(Debug, Clone, Copy)]
pub struct PaymentBooking<'a> {
    pub order_id: Uuid,
    pub payment_intent: &'a str,
    /// The tenant's connected account, which a primary sale's share goes to.
    pub tenant_account: Option<&'a str>,
    /// The platform's share of a primary sale.
    pub application_fee: BasisPoints,
    /// The platform's share of a resale.
    pub seller_fee: BasisPoints,
}

/// After a payment was recorded: remembers the payment intent and writes down where the
/// money went. A resale's seller payout is requested here and sent after commit.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn book_payment(tx: &mut Tx<'_>, booking: &PaymentBooking<'_>) -> AppResult<()> {
    let PaymentBooking {
        order_id,
        payment_intent,
        tenant_account,
        application_fee,
        seller_fee,
    } = *booking;
    set_payment_intent(tx, order_id, payment_intent).await?;
    let order = lock_order(tx, order_id)
        .await?
        .ok_or(AppError::not_found("order"))?;
    let entry = |kind, amount, party, state| NewEntry {
        order_id,
        listing_id: order.listing_id,
        kind,
        amount,
        party,
        state,
        stripe_ref: Some(payment_intent),
        reverses: None,
        note: "",
    };
    insert_entry(tx, entry("charge", order.total, "platform", "done")).await?;
    match order.kind {
        OrderKind::Primary => {
            let split = Split::of(order.total, application_fee);
            let tenant = tenant_account.unwrap_or("tenant");
            insert_entry(tx, entry("application_fee", split.fee, "platform", "done")).await?;
            insert_entry(tx, entry("tenant_share", split.payee, tenant, "done")).await?;
        }
        OrderKind::Resale => {
            let split = Split::of(order.total, seller_fee);
            let seller = order
                .seller_account
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("listing of order {order_id} has no seller"))?;
            insert_entry(tx, entry("platform_fee", split.fee, "platform", "done")).await?;
            let mut payout = entry("seller_payout", split.payee, seller, "requested");
            payout.stripe_ref = None;
            insert_entry(tx, payout).await?;
        }
    }
    Ok(())
}

async fn set_payment_intent(
    tx: &mut Tx<'_>,
    order_id: Uuid,
    payment_intent: &str,
) -> AppResult<()> {
    sqlx::query!(
        "UPDATE orders SET payment_intent_id = $2 WHERE id = $1",
        order_id,
        payment_intent,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A payment for an order that had already expired or been cancelled: it all goes back.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn book_late_payment(
    tx: &mut Tx<'_>,
    order_id: Uuid,
    payment_intent: &str,
    state: &str,
) -> AppResult<()> {
    set_payment_intent(tx, order_id, payment_intent).await?;
    let note = format!("paid after the order was {state}: refunded in full");
    let refund = RefundRequest {
        order_id,
        amount_minor: None,
        note: &note,
        late: true,
    };
    request_refund(tx, &refund).await?;
    Ok(())
}

/// A refund to ask Stripe for.
#[derive(Debug, Clone, Copy)]
pub struct RefundRequest<'a> {
    pub order_id: Uuid,
    /// The whole remaining amount when `None`.
    pub amount_minor: Option<i64>,
    /// Kept in the ledger.
    pub note: &'a str,
    /// The money came after the order expired or was cancelled: refunded whatever its state.
    pub late: bool,
}

/// Asks for a refund. A full refund of a paid order makes it refunded (its tickets stop
/// admitting); a full refund of a resale also cancels the seller's payout, or reverses it
/// when it was already sent.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn request_refund(tx: &mut Tx<'_>, refund: &RefundRequest<'_>) -> AppResult<LedgerEntry> {
    let RefundRequest {
        order_id,
        amount_minor: amount,
        note,
        late,
    } = *refund;
    let order = lock_order(tx, order_id)
        .await?
        .ok_or(AppError::not_found("order"))?;
    if !late && order.state != "paid" {
        return Err(AppError::conflict(
            "order-not-refundable",
            format!(
                "only a paid order can be refunded; this one is {}",
                order.state
            ),
        ));
    }
    let remaining = order.total.amount_minor - order.refunded_minor;
    let amount = amount.unwrap_or(remaining);
    if amount <= 0 || amount > remaining {
        return Err(AppError::invalid(format!(
            "a refund must be between 1 and {remaining} minor units (what is left to refund)"
        )));
    }
    let refund = money(amount, order.total.currency.as_str())?.chargeable()?;
    let id = insert_entry(
        tx,
        NewEntry {
            order_id,
            listing_id: order.listing_id,
            kind: "refund",
            amount: refund,
            party: "buyer",
            state: "requested",
            stripe_ref: None,
            reverses: None,
            note,
        },
    )
    .await?;
    let full = amount == remaining;
    sqlx::query!(
        "UPDATE orders SET refunded_minor = refunded_minor + $2,
                state = CASE WHEN $3 AND state = 'paid' THEN 'refunded' ELSE state END
         WHERE id = $1",
        order_id,
        amount,
        full,
    )
    .execute(&mut **tx)
    .await?;
    if full {
        // Its tickets stop being valid: whatever of them is on the market comes off now.
        listings::withdraw_listings_of_order(tx, order_id).await?;
        if order.kind == OrderKind::Resale {
            take_back_payout(tx, order_id).await?;
        }
    }
    ledger_entry(tx, id).await
}

/// An unsent seller payout is cancelled; a sent one gets a transfer reversal requested.
async fn take_back_payout(tx: &mut Tx<'_>, order_id: Uuid) -> AppResult<()> {
    let Some(payout) = sqlx::query!(
        "SELECT id, state, amount_minor, currency AS \"currency!\", listing_id,
                attempted_at IS NOT NULL AS \"attempted!\"
         FROM ledger WHERE order_id = $1 AND kind = 'seller_payout' FOR UPDATE",
        order_id,
    )
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(());
    };
    // A payout whose request may have reached Stripe is taken back by a reversal, which
    // waits until the payout's retry has settled.
    let state = match payout.state.as_str() {
        "requested" if payout.attempted => "done",
        state => state,
    };
    match state {
        "requested" | "held" | "failed" => {
            sqlx::query!(
                "UPDATE ledger SET state = 'cancelled', settled_at = now(),
                        note = 'not sent: the buyer was refunded'
                 WHERE id = $1",
                payout.id,
            )
            .execute(&mut **tx)
            .await?;
        }
        "done" => {
            let already = sqlx::query_scalar!(
                "SELECT EXISTS (SELECT 1 FROM ledger WHERE reverses = $1) AS \"exists!\"",
                payout.id
            )
            .fetch_one(&mut **tx)
            .await?;
            if !already {
                insert_entry(
                    tx,
                    NewEntry {
                        order_id,
                        listing_id: payout.listing_id,
                        kind: "transfer_reversal",
                        amount: money(payout.amount_minor, &payout.currency)?,
                        party: "platform",
                        state: "requested",
                        stripe_ref: None,
                        reverses: Some(payout.id),
                        note: "taken back from the seller: the buyer was refunded",
                    },
                )
                .await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Cancelling an event: every paid order is refunded in full and becomes cancelled, and
/// every buyer holding its tickets is told by mail (one per order, queued together).
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn refund_cancelled_event(
    tx: &mut Tx<'_>,
    event_id: Uuid,
    public_url: &str,
) -> AppResult<u64> {
    let orders = sqlx::query_scalar!(
        "SELECT o.id FROM orders o
         LEFT JOIN holds h ON h.id = o.hold_id
         LEFT JOIN listings l ON l.id = o.listing_id
         LEFT JOIN tickets lt ON lt.id = l.ticket_id
         JOIN ticket_types tt ON tt.id = coalesce(h.ticket_type_id, lt.ticket_type_id)
         WHERE tt.event_id = $1 AND o.state = 'paid'
         ORDER BY o.id",
        event_id,
    )
    .fetch_all(&mut **tx)
    .await?;
    let holders = sqlx::query!(
        "SELECT o.buyer_email, o.access_token, e.title
         FROM orders o JOIN events e ON e.id = $1
         WHERE o.id = ANY($2) AND EXISTS (SELECT 1 FROM tickets t WHERE t.order_id = o.id)
         ORDER BY o.id",
        event_id,
        &orders,
    )
    .fetch_all(&mut **tx)
    .await?;
    let messages: Vec<Message> = holders
        .into_iter()
        .map(|h| Message::EventCancelled {
            to: h.buyer_email,
            event_title: h.title,
            order_url: format!("{public_url}/orders/{}", h.access_token),
        })
        .collect();
    mail::enqueue_all(tx, &messages).await?;
    for &order_id in &orders {
        let has_left = sqlx::query_scalar!(
            "SELECT total_minor > refunded_minor AS \"left!\" FROM orders WHERE id = $1",
            order_id
        )
        .fetch_one(&mut **tx)
        .await?;
        if has_left {
            let refund = RefundRequest {
                order_id,
                amount_minor: None,
                note: "event cancelled",
                late: false,
            };
            request_refund(tx, &refund).await?;
        } else {
            take_back_payout(tx, order_id).await?;
        }
        sqlx::query!(
            "UPDATE orders SET state = 'cancelled' WHERE id = $1 AND state IN ('paid', 'refunded')",
            order_id
        )
        .execute(&mut **tx)
        .await?;
        listings::withdraw_listings_of_order(tx, order_id).await?;
    }
    Ok(orders.len() as u64)
}

async fn ledger_entry(tx: &mut Tx<'_>, id: Uuid) -> AppResult<LedgerEntry> {
    Ok(sqlx::query_as!(
        LedgerEntry,
        "SELECT id, order_id, listing_id, kind, amount_minor, currency AS \"currency!\", party,
                state, stripe_ref, note, created_at
         FROM ledger WHERE id = $1",
        id,
    )
    .fetch_one(&mut **tx)
    .await?)
}

/// Whose money a ledger read follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerOf {
    Order(Uuid),
    /// Every order of one resale listing.
    Listing(Uuid),
}

/// Where the money of one order, or of every order of one listing, went.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn ledger(db: &PgPool, of: LedgerOf) -> AppResult<Vec<LedgerEntry>> {
    let (order_id, listing_id) = match of {
        LedgerOf::Order(id) => (Some(id), None),
        LedgerOf::Listing(id) => (None, Some(id)),
    };
    Ok(sqlx::query_as!(
        LedgerEntry,
        "SELECT id, order_id, listing_id, kind, amount_minor, currency AS \"currency!\", party,
                state, stripe_ref, note, created_at
         FROM ledger
         WHERE ($1::uuid IS NULL OR order_id = $1) AND ($2::uuid IS NULL OR listing_id = $2)
         ORDER BY created_at, id",
        order_id,
        listing_id,
    )
    .fetch_all(db)
    .await?)
}
