//! Payment state: checkout sessions on orders, applied Stripe events, sellers' connected
//! accounts, and the ledger of where money went. Effects of one webhook event run in one
//! transaction together with the row that records the event id.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::money;
use crate::domain::{BasisPoints, Money, OrderKind, Split};
use crate::error::{AppError, AppResult};

type Tx<'a> = Transaction<'a, Postgres>;

/// What a checkout for one order needs to know.
#[derive(Debug, Clone)]
pub struct CheckoutTarget {
    pub order_id: Uuid,
    pub kind: OrderKind,
    pub state: String,
    pub buyer_email: String,
    pub total: Money,
    pub quantity: u32,
    pub description: String,
    pub created_at: DateTime<Utc>,
    /// When the hold or listing reservation runs out.
    pub reserved_until: Option<DateTime<Utc>>,
    pub session_id: Option<String>,
    pub session_url: Option<String>,
    pub session_expires_at: Option<DateTime<Utc>>,
    pub access_token: String,
}

pub async fn checkout_target(db: &PgPool, token: &str) -> AppResult<Option<CheckoutTarget>> {
    let Some(r) = sqlx::query!(
        "SELECT o.id, o.kind, o.state, o.buyer_email, o.total_minor, o.currency AS \"currency!\",
                o.created_at, o.access_token, coalesce(h.quantity, 1) AS \"quantity!\",
                coalesce(h.expires_at, l.reserved_until) AS reserved_until,
                e.title, tt.name, o.checkout_session_id, o.checkout_url, o.checkout_expires_at
         FROM orders o
         LEFT JOIN holds h ON h.id = o.hold_id
         LEFT JOIN listings l ON l.id = o.listing_id
         LEFT JOIN tickets lt ON lt.id = l.ticket_id
         JOIN ticket_types tt ON tt.id = coalesce(h.ticket_type_id, lt.ticket_type_id)
         JOIN events e ON e.id = tt.event_id
         WHERE o.access_token = $1",
        token,
    )
    .fetch_optional(db)
    .await?
    else {
        return Ok(None);
    };
    let kind = OrderKind::parse(&r.kind).ok_or_else(|| anyhow::anyhow!("unknown order kind"))?;
    let resale = if kind == OrderKind::Resale {
        " (resale)"
    } else {
        ""
    };
    Ok(Some(CheckoutTarget {
        order_id: r.id,
        kind,
        state: r.state,
        buyer_email: r.buyer_email,
        total: money(r.total_minor, &r.currency)?,
        quantity: u32::try_from(r.quantity).map_err(anyhow::Error::from)?,
        description: format!("{}: {}{resale}", r.title, r.name),
        created_at: r.created_at,
        reserved_until: r.reserved_until,
        session_id: r.checkout_session_id,
        session_url: r.checkout_url,
        session_expires_at: r.checkout_expires_at,
        access_token: r.access_token,
    }))
}

pub async fn attach_checkout(
    db: &PgPool,
    order_id: Uuid,
    session_id: &str,
    url: &str,
    expires_at: DateTime<Utc>,
) -> AppResult<()> {
    sqlx::query!(
        "UPDATE orders SET checkout_session_id = $2, checkout_url = $3, checkout_expires_at = $4
         WHERE id = $1 AND state = 'pending'",
        order_id,
        session_id,
        url,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records a Stripe event id; false when it was already applied (a duplicate delivery).
pub async fn record_event(tx: &mut Tx<'_>, id: &str, kind: &str) -> AppResult<bool> {
    let inserted = sqlx::query_scalar!(
        "INSERT INTO stripe_events (id, type) VALUES ($1, $2)
         ON CONFLICT (id) DO NOTHING RETURNING id",
        id,
        kind,
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(inserted.is_some())
}

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
    /// requested (Stripe not yet done), done, failed, cancelled.
    pub state: String,
    pub stripe_ref: Option<String>,
    pub note: String,
    pub created_at: DateTime<Utc>,
}

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

/// An order as the payment steps see it, locked for the rest of the transaction.
#[derive(Debug, Clone)]
pub struct PayableOrder {
    pub id: Uuid,
    pub kind: OrderKind,
    pub state: String,
    pub total: Money,
    pub refunded_minor: i64,
    pub listing_id: Option<Uuid>,
    pub seller_account: Option<String>,
    pub payment_intent_id: Option<String>,
}

async fn lock_order(tx: &mut Tx<'_>, id: Uuid) -> AppResult<Option<PayableOrder>> {
    let Some(r) = sqlx::query!(
        "SELECT o.id, o.kind, o.state, o.total_minor, o.currency AS \"currency!\",
                o.refunded_minor, o.listing_id, l.seller_account AS \"seller_account?\",
                o.payment_intent_id
         FROM orders o LEFT JOIN listings l ON l.id = o.listing_id
         WHERE o.id = $1 FOR UPDATE OF o",
        id,
    )
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(PayableOrder {
        id: r.id,
        kind: OrderKind::parse(&r.kind).ok_or_else(|| anyhow::anyhow!("unknown order kind"))?,
        state: r.state,
        total: money(r.total_minor, &r.currency)?,
        refunded_minor: r.refunded_minor,
        listing_id: r.listing_id,
        seller_account: r.seller_account,
        payment_intent_id: r.payment_intent_id,
    }))
}

/// The order a payment intent paid for, locked; `None` when no payment for it is known yet.
pub async fn order_of_payment_intent(
    tx: &mut Tx<'_>,
    payment_intent: &str,
) -> AppResult<Option<PayableOrder>> {
    let id = sqlx::query_scalar!(
        "SELECT id FROM orders WHERE payment_intent_id = $1",
        payment_intent
    )
    .fetch_optional(&mut **tx)
    .await?;
    match id {
        Some(id) => lock_order(tx, id).await,
        None => Ok(None),
    }
}

/// After a payment was recorded: remembers the payment intent and writes down where the
/// money went. A resale's seller payout is requested here and sent after commit.
pub async fn book_payment(
    tx: &mut Tx<'_>,
    order_id: Uuid,
    payment_intent: &str,
    tenant_account: Option<&str>,
    application_fee: BasisPoints,
    seller_fee: BasisPoints,
) -> AppResult<()> {
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
pub async fn book_late_payment(
    tx: &mut Tx<'_>,
    order_id: Uuid,
    payment_intent: &str,
    state: &str,
) -> AppResult<()> {
    set_payment_intent(tx, order_id, payment_intent).await?;
    let note = format!("paid after the order was {state}: refunded in full");
    request_refund(tx, order_id, None, &note, true).await?;
    Ok(())
}

/// Asks for a refund of `amount` (the whole remaining amount when `None`). A full refund of a
/// paid order makes it refunded (its tickets stop admitting); a full refund of a resale also
/// cancels the seller's payout, or reverses it when it was already sent.
pub async fn request_refund(
    tx: &mut Tx<'_>,
    order_id: Uuid,
    amount: Option<i64>,
    note: &str,
    late: bool,
) -> AppResult<LedgerEntry> {
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
    let refund = money(amount, order.total.currency.as_str())?;
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
    if full && order.kind == OrderKind::Resale {
        take_back_payout(tx, order_id).await?;
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
        "requested" | "failed" => {
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

/// Cancelling an event: every paid order is refunded in full and becomes cancelled.
pub async fn refund_cancelled_event(tx: &mut Tx<'_>, event_id: Uuid) -> AppResult<u64> {
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
    for &order_id in &orders {
        let has_left = sqlx::query_scalar!(
            "SELECT total_minor > refunded_minor AS \"left!\" FROM orders WHERE id = $1",
            order_id
        )
        .fetch_one(&mut **tx)
        .await?;
        if has_left {
            request_refund(tx, order_id, None, "event cancelled", false).await?;
        } else {
            take_back_payout(tx, order_id).await?;
        }
        sqlx::query!(
            "UPDATE orders SET state = 'cancelled' WHERE id = $1 AND state IN ('paid', 'refunded')",
            order_id
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(orders.len() as u64)
}

/// Stripe reports a charge's refunded total; what we did not ask for ourselves (a refund
/// from the Stripe dashboard) is booked now. Repeating it changes nothing.
pub async fn charge_refunded(
    tx: &mut Tx<'_>,
    order: &PayableOrder,
    amount_refunded: i64,
    charge_id: &str,
) -> AppResult<()> {
    let unknown = amount_refunded.min(order.total.amount_minor) - order.refunded_minor;
    if unknown <= 0 {
        return Ok(());
    }
    insert_entry(
        tx,
        NewEntry {
            order_id: order.id,
            listing_id: order.listing_id,
            kind: "refund",
            amount: money(unknown, order.total.currency.as_str())?,
            party: "buyer",
            state: "done",
            stripe_ref: Some(charge_id),
            reverses: None,
            note: "refunded in Stripe",
        },
    )
    .await?;
    sqlx::query!(
        "UPDATE orders SET refunded_minor = refunded_minor + $2,
                state = CASE WHEN refunded_minor + $2 = total_minor AND state = 'paid'
                             THEN 'refunded' ELSE state END
         WHERE id = $1",
        order.id,
        unknown,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn dispute_created(
    tx: &mut Tx<'_>,
    order: &PayableOrder,
    dispute_id: &str,
    amount: i64,
) -> AppResult<()> {
    insert_entry(
        tx,
        NewEntry {
            order_id: order.id,
            listing_id: order.listing_id,
            kind: "dispute",
            amount: money(amount, order.total.currency.as_str())?,
            party: "buyer",
            state: "done",
            stripe_ref: Some(dispute_id),
            reverses: None,
            note: "the buyer's bank disputed the charge",
        },
    )
    .await?;
    sqlx::query!(
        "UPDATE orders SET disputed_at = coalesce(disputed_at, now()) WHERE id = $1",
        order.id
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn payment_failed(tx: &mut Tx<'_>, order_id: Uuid, message: &str) -> AppResult<()> {
    sqlx::query!(
        "UPDATE orders SET payment_error = $2 WHERE id = $1 AND state = 'pending'",
        order_id,
        message,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Stripe closed the checkout unpaid: the order expires and its hold or listing reservation
/// is given back now rather than at its own expiry. Locks: hold/listing, counter, order.
pub async fn checkout_expired(tx: &mut Tx<'_>, order_id: Uuid) -> AppResult<bool> {
    let Some(order) = sqlx::query!(
        "SELECT hold_id, listing_id FROM orders WHERE id = $1",
        order_id
    )
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(false);
    };
    if let Some(hold_id) = order.hold_id {
        let pending = sqlx::query_scalar!(
            "SELECT state = 'pending' AS \"pending!\" FROM orders WHERE id = $1",
            order_id
        )
        .fetch_one(&mut **tx)
        .await?;
        if !pending {
            return Ok(false);
        }
        sqlx::query!(
            "WITH expired AS (
                 UPDATE holds SET state = 'expired' WHERE id = $1 AND state = 'active'
                 RETURNING ticket_type_id, quantity
             )
             UPDATE ticket_types tt SET held = tt.held - expired.quantity
             FROM expired WHERE tt.id = expired.ticket_type_id",
            hold_id,
        )
        .execute(&mut **tx)
        .await?;
    }
    if let Some(listing_id) = order.listing_id {
        sqlx::query!(
            "UPDATE listings SET state = 'open', reserved_until = NULL
             WHERE id = $1 AND state = 'reserved'
               AND EXISTS (SELECT 1 FROM orders WHERE id = $2 AND state = 'pending')",
            listing_id,
            order_id,
        )
        .execute(&mut **tx)
        .await?;
    }
    let expired = sqlx::query!(
        "UPDATE orders SET state = 'expired', checkout_closed_at = now()
         WHERE id = $1 AND state = 'pending' RETURNING id",
        order_id
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(expired.is_some())
}

/// A seller's account as Stripe reports it; false when we do not know the account.
pub async fn account_updated(
    tx: &mut Tx<'_>,
    account_id: &str,
    details_submitted: bool,
    payouts_enabled: bool,
) -> AppResult<bool> {
    let updated = sqlx::query!(
        "UPDATE sellers SET details_submitted = $2, payouts_enabled = $3, updated_at = now()
         WHERE account_id = $1 RETURNING email",
        account_id,
        details_submitted,
        payouts_enabled,
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(updated.is_some())
}

#[derive(Debug, Clone)]
pub struct Seller {
    pub email: String,
    pub account_id: Option<String>,
    pub ready: bool,
}

/// The holder of a ticket, as a (possible) seller.
pub async fn seller_of_ticket(db: &PgPool, ticket_token: &str) -> AppResult<Option<Seller>> {
    Ok(sqlx::query!(
        "SELECT t.holder_email, s.account_id AS \"account_id?\",
                coalesce(s.details_submitted AND s.payouts_enabled, false) AS \"ready!\"
         FROM tickets t LEFT JOIN sellers s ON s.email = t.holder_email
         WHERE t.access_token = $1",
        ticket_token,
    )
    .fetch_optional(db)
    .await?
    .map(|r| Seller {
        email: r.holder_email,
        account_id: r.account_id,
        ready: r.ready,
    }))
}

/// Remembers a seller's new account; when a concurrent request won, its account is kept.
pub async fn save_seller(db: &PgPool, email: &str, account_id: &str) -> AppResult<String> {
    Ok(sqlx::query_scalar!(
        "INSERT INTO sellers (email, account_id) VALUES ($1, $2)
         ON CONFLICT (email) DO UPDATE SET updated_at = now()
         RETURNING account_id",
        email,
        account_id,
    )
    .fetch_one(db)
    .await?)
}

pub async fn next_link_number(db: &PgPool, email: &str) -> AppResult<i32> {
    Ok(sqlx::query_scalar!(
        "UPDATE sellers SET links_issued = links_issued + 1 WHERE email = $1
         RETURNING links_issued",
        email,
    )
    .fetch_one(db)
    .await?)
}

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
pub async fn attempted(tx: &mut Tx<'_>, id: Uuid) -> AppResult<()> {
    sqlx::query!("UPDATE ledger SET attempted_at = now() WHERE id = $1", id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Stripe answered: done with its object id, or failed for good with the reason.
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

/// Where the money of one order, or of every order of one listing, went.
pub async fn ledger(
    db: &PgPool,
    order_id: Option<Uuid>,
    listing_id: Option<Uuid>,
) -> AppResult<Vec<LedgerEntry>> {
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

/// Orders that ended unpaid while their Stripe checkout may still be open.
pub async fn unclosed_checkouts(db: &PgPool) -> AppResult<Vec<(Uuid, String)>> {
    let rows = sqlx::query!(
        "SELECT id, checkout_session_id AS \"session!\" FROM orders
         WHERE checkout_session_id IS NOT NULL AND checkout_closed_at IS NULL
           AND state IN ('expired', 'cancelled')
         LIMIT 100",
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.session)).collect())
}

pub async fn checkout_closed(db: &PgPool, order_id: Uuid) -> AppResult<()> {
    sqlx::query!(
        "UPDATE orders SET checkout_closed_at = now() WHERE id = $1",
        order_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A refund or dispute for a payment not booked yet, kept until it is.
pub async fn park(
    tx: &mut Tx<'_>,
    event_id: &str,
    payment_intent: &str,
    kind: &str,
    amount_minor: i64,
    stripe_ref: &str,
) -> AppResult<()> {
    sqlx::query!(
        "INSERT INTO parked_stripe_events (event_id, payment_intent, kind, amount_minor, stripe_ref)
         VALUES ($1, $2, $3, $4, $5)",
        event_id,
        payment_intent,
        kind,
        amount_minor,
        stripe_ref,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Applies what was parked for a payment that has just been booked.
pub async fn unpark(tx: &mut Tx<'_>, payment_intent: &str) -> AppResult<()> {
    let parked = sqlx::query!(
        "DELETE FROM parked_stripe_events WHERE payment_intent = $1
         RETURNING kind, amount_minor, stripe_ref, parked_at",
        payment_intent,
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut parked = parked;
    parked.sort_by_key(|p| p.parked_at);
    for p in parked {
        let Some(order) = order_of_payment_intent(tx, payment_intent).await? else {
            return Ok(());
        };
        match p.kind.as_str() {
            "charge_refunded" => charge_refunded(tx, &order, p.amount_minor, &p.stripe_ref).await?,
            _ => dispute_created(tx, &order, &p.stripe_ref, p.amount_minor).await?,
        }
    }
    Ok(())
}
