//! Payment state: checkout sessions on orders, applied Stripe events, sellers' connected
//! accounts. Effects of one webhook event run in one transaction together with the row that
//! records the event id (the money side is in `ledger`).

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::money;
use crate::domain::{Money, OrderKind};
use crate::error::AppResult;

type Tx<'a> = Transaction<'a, Postgres>;

/// What a checkout for one order needs to know.
#[derive(Debug, Clone)]
pub struct CheckoutTarget {
    pub order_id: Uuid,
    pub kind: OrderKind,
    pub state: String,
    pub buyer_email: String,
    pub total: Money,
    /// What the buyer sees on Stripe's page; they add up to `total`.
    pub items: Vec<CheckoutItem>,
    pub created_at: DateTime<Utc>,
    /// When the hold or listing reservation runs out.
    pub reserved_until: Option<DateTime<Utc>>,
    pub session_id: Option<String>,
    pub session_url: Option<String>,
    pub session_expires_at: Option<DateTime<Utc>>,
    pub access_token: String,
}

/// One line on the checkout page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutItem {
    pub description: String,
    pub unit_price: Money,
    pub quantity: u32,
}

#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn checkout_target(db: &PgPool, token: &str) -> AppResult<Option<CheckoutTarget>> {
    let Some(r) = sqlx::query!(
        "SELECT o.id, o.kind, o.state, o.buyer_email, o.total_minor, o.currency AS \"currency!\",
                o.created_at, o.access_token, o.hold_id,
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
    let total = money(r.total_minor, &r.currency)?;
    let items = match r.hold_id {
        Some(hold_id) => hold_items(db, hold_id, &r.title, total).await?,
        None => vec![CheckoutItem {
            description: format!("{}: {} (resale)", r.title, r.name),
            unit_price: total,
            quantity: 1,
        }],
    };
    Ok(Some(CheckoutTarget {
        order_id: r.id,
        kind,
        state: r.state,
        buyer_email: r.buyer_email,
        total,
        items,
        created_at: r.created_at,
        reserved_until: r.reserved_until,
        session_id: r.checkout_session_id,
        session_url: r.checkout_url,
        session_expires_at: r.checkout_expires_at,
        access_token: r.access_token,
    }))
}

/// A line per ticket type at today's price; should a price have changed since the order was
/// made, one line at the order's total instead, so the buyer always pays what they were shown.
async fn hold_items(
    db: &PgPool,
    hold_id: Uuid,
    event: &str,
    total: Money,
) -> AppResult<Vec<CheckoutItem>> {
    let lines = sqlx::query!(
        "SELECT tt.name, h.quantity, tt.price_minor, tt.currency AS \"currency!\"
         FROM holds h JOIN ticket_types tt ON tt.id = h.ticket_type_id
         WHERE h.basket_id = $1 ORDER BY tt.price_minor DESC, tt.name",
        hold_id,
    )
    .fetch_all(db)
    .await?;
    let mut items = Vec::with_capacity(lines.len());
    let mut sum = 0_i64;
    for line in &lines {
        let quantity = u32::try_from(line.quantity).map_err(anyhow::Error::from)?;
        let unit_price = money(line.price_minor, &line.currency)?;
        sum = sum.saturating_add(unit_price.times(quantity)?.amount_minor);
        items.push(CheckoutItem {
            description: format!("{event}: {}", line.name),
            unit_price,
            quantity,
        });
    }
    if sum == total.amount_minor {
        return Ok(items);
    }
    let summary: Vec<String> = lines
        .iter()
        .map(|l| format!("{} x {}", l.quantity, l.name))
        .collect();
    Ok(vec![CheckoutItem {
        description: format!("{event}: {}", summary.join(", ")),
        unit_price: total,
        quantity: 1,
    }])
}

/// The Stripe Checkout session opened for an order.
#[derive(Debug, Clone, Copy)]
pub struct OpenedCheckout<'a> {
    pub order_id: Uuid,
    pub session_id: &'a str,
    pub url: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// Remembers an order's session, so the buyer who asks to pay again is sent to the same one.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn attach_checkout(db: &PgPool, opened: &OpenedCheckout<'_>) -> AppResult<()> {
    sqlx::query!(
        "UPDATE orders SET checkout_session_id = $2, checkout_url = $3, checkout_expires_at = $4
         WHERE id = $1 AND state = 'pending'",
        opened.order_id,
        opened.session_id,
        opened.url,
        opened.expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records a Stripe event id; false when it was already applied (a duplicate delivery).
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
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

pub(crate) async fn lock_order(tx: &mut Tx<'_>, id: Uuid) -> AppResult<Option<PayableOrder>> {
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
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
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

#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
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
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
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
        super::holds::end_hold(&mut **tx, hold_id, super::holds::Ending::CheckoutExpired).await?;
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

/// A seller's connected account as Stripe reports it.
#[derive(Debug, Clone, Copy)]
pub struct AccountStatus<'a> {
    pub account_id: &'a str,
    pub details_submitted: bool,
    pub payouts_enabled: bool,
}

/// Records a seller's account status; false when we do not know the account.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn account_updated(tx: &mut Tx<'_>, status: &AccountStatus<'_>) -> AppResult<bool> {
    let updated = sqlx::query!(
        "UPDATE sellers SET details_submitted = $2, payouts_enabled = $3, updated_at = now()
         WHERE account_id = $1 RETURNING email",
        status.account_id,
        status.details_submitted,
        status.payouts_enabled,
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(updated.is_some())
}

/// A seller's payout account, bound to an address its owner proved by a sign-in link.
#[derive(Debug, Clone)]
pub struct Seller {
    pub account_id: String,
    pub ready: bool,
}

/// The address a ticket is held by, as it was typed at purchase.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn holder_of_ticket(db: &PgPool, ticket_token: &str) -> AppResult<Option<String>> {
    Ok(sqlx::query_scalar!(
        "SELECT holder_email FROM tickets WHERE access_token = $1",
        ticket_token,
    )
    .fetch_optional(db)
    .await?)
}

/// The verified seller account of `address`; accounts made before addresses were verified
/// are not theirs.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn verified_seller(db: &PgPool, address: &str) -> AppResult<Option<Seller>> {
    Ok(sqlx::query!(
        "SELECT account_id, details_submitted AND payouts_enabled AS \"ready!\"
         FROM sellers WHERE email = $1 AND verified_at IS NOT NULL",
        address,
    )
    .fetch_optional(db)
    .await?
    .map(|r| Seller {
        account_id: r.account_id,
        ready: r.ready,
    }))
}

/// Binds a new account to a verified address. An unverified account of the same address
/// (made by whoever typed it) is replaced; when a concurrent request won, its account is kept.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn save_verified_seller(
    db: &PgPool,
    address: &str,
    account_id: &str,
) -> AppResult<String> {
    Ok(sqlx::query_scalar!(
        "INSERT INTO sellers (email, account_id, verified_at) VALUES ($1, $2, now())
         ON CONFLICT (email) DO UPDATE SET
             account_id = CASE WHEN sellers.verified_at IS NULL
                               THEN excluded.account_id ELSE sellers.account_id END,
             details_submitted = sellers.verified_at IS NOT NULL AND sellers.details_submitted,
             payouts_enabled = sellers.verified_at IS NOT NULL AND sellers.payouts_enabled,
             verified_at = coalesce(sellers.verified_at, now()),
             updated_at = now()
         RETURNING account_id",
        address,
        account_id,
    )
    .fetch_one(db)
    .await?)
}

#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn next_link_number(db: &PgPool, email: &str) -> AppResult<i32> {
    Ok(sqlx::query_scalar!(
        "UPDATE sellers SET links_issued = links_issued + 1 WHERE email = $1
         RETURNING links_issued",
        email,
    )
    .fetch_one(db)
    .await?)
}

/// An order that ended unpaid and the Stripe Checkout session that may still be open for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnclosedCheckout {
    pub order_id: Uuid,
    pub session_id: String,
}

/// Orders that ended unpaid while their Stripe checkout may still be open.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn unclosed_checkouts(db: &PgPool) -> AppResult<Vec<UnclosedCheckout>> {
    let rows = sqlx::query!(
        "SELECT id, checkout_session_id AS \"session!\" FROM orders
         WHERE checkout_session_id IS NOT NULL AND checkout_closed_at IS NULL
           AND state IN ('expired', 'cancelled')
         LIMIT 100",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| UnclosedCheckout {
            order_id: r.id,
            session_id: r.session,
        })
        .collect())
}

#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn checkout_closed(db: &PgPool, order_id: Uuid) -> AppResult<()> {
    sqlx::query!(
        "UPDATE orders SET checkout_closed_at = now() WHERE id = $1",
        order_id
    )
    .execute(db)
    .await?;
    Ok(())
}
