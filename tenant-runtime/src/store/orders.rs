//! Orders: created from a hold (primary) or a listing reservation (resale); made paid only by
//! [`record_payment`], which the payment step (Stripe webhook) calls exactly once per order.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{access_token, money};
use crate::domain::{Email, Money, OrderKind, OrderState};
use crate::error::{AppError, AppResult};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Order {
    pub id: Uuid,
    pub kind: OrderKind,
    pub state: OrderState,
    #[serde(skip)]
    pub buyer_email: String,
    /// The secret in the buyer's order link.
    pub access_token: String,
    #[schema(value_type = crate::http::schema::MoneySchema)]
    pub total: Money,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    /// Minor units given back so far.
    pub refunded_minor: i64,
    /// Why the last payment attempt failed, while the order waits for payment.
    pub payment_error: Option<String>,
}

struct OrderRow {
    id: Uuid,
    kind: String,
    state: String,
    buyer_email: String,
    access_token: String,
    total_minor: i64,
    currency: String,
    created_at: DateTime<Utc>,
    paid_at: Option<DateTime<Utc>>,
    refunded_minor: i64,
    payment_error: Option<String>,
}

impl TryFrom<OrderRow> for Order {
    type Error = AppError;
    fn try_from(r: OrderRow) -> AppResult<Self> {
        let unknown = || anyhow::anyhow!("order {} has an unknown kind or state", r.id);
        Ok(Self {
            id: r.id,
            kind: OrderKind::parse(&r.kind).ok_or_else(unknown)?,
            state: OrderState::parse(&r.state).ok_or_else(unknown)?,
            total: money(r.total_minor, &r.currency)?,
            buyer_email: r.buyer_email,
            access_token: r.access_token,
            created_at: r.created_at,
            paid_at: r.paid_at,
            refunded_minor: r.refunded_minor,
            payment_error: r.payment_error,
        })
    }
}

/// Turns a live hold into a pending order at its ticket types' prices, and queues the mail
/// `link` writes for the order's secret link. One order per hold.
///
/// Two round trips and no explicit transaction (the rush path): the prices are read and
/// summed first; then one statement inserts the order, only if every row of the hold is still
/// active (locking those rows, so a sweeper cannot expire them half-way), and its mail with
/// it. `conn` must not be in a transaction: the statement commits as it ends.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn create_primary_order(
    conn: &mut PgConnection,
    hold_id: Uuid,
    buyer: &Email,
    link: impl FnOnce(&str) -> crate::mail::Message,
) -> AppResult<Order> {
    let expired = || AppError::conflict("hold-expired", "this hold has expired or was used");
    let lines = sqlx::query!(
        "SELECT h.quantity, tt.price_minor, tt.currency as \"currency!\",
                h.state = 'active' AND h.expires_at > now() AS \"live!\"
         FROM holds h JOIN ticket_types tt ON tt.id = h.ticket_type_id
         WHERE h.basket_id = $1",
        hold_id,
    )
    .fetch_all(&mut *conn)
    .await?;
    if lines.is_empty() || lines.iter().any(|l| !l.live) {
        return Err(expired());
    }
    let mut total: Option<Money> = None;
    for line in &lines {
        let quantity = u32::try_from(line.quantity).map_err(anyhow::Error::from)?;
        let amount = money(line.price_minor, &line.currency)?.times(quantity)?;
        Money::accumulate(&mut total, amount)?;
    }
    let total = total.ok_or_else(expired)?;
    let rows = i64::try_from(lines.len()).map_err(anyhow::Error::from)?;
    let token = access_token();
    let mail = link(&token);
    let row = sqlx::query_as!(
        OrderRow,
        "WITH hold AS (
             SELECT id FROM holds
             WHERE basket_id = $5 AND state = 'active' AND expires_at > now()
             ORDER BY id FOR UPDATE
         ), placed AS (
             INSERT INTO orders (id, kind, buyer_email, access_token, hold_id, total_minor, currency)
             SELECT $1, 'primary', $2, $3, $5, $4, $6
             WHERE (SELECT count(*) FROM hold) = $7
             RETURNING id, kind, state, buyer_email, access_token, total_minor, currency,
                       created_at, paid_at, refunded_minor, payment_error
         ), mailed AS (
             INSERT INTO mail_outbox (id, recipient, message)
             SELECT $8, $9, $10::text::jsonb FROM placed
         )
         SELECT id, kind, state, buyer_email, access_token, total_minor,
                currency as \"currency!\", created_at, paid_at, refunded_minor, payment_error
         FROM placed",
        Uuid::new_v4(),
        buyer.as_str(),
        token,
        total.amount_minor,
        hold_id,
        total.currency.as_str() as &str,
        rows,
        Uuid::new_v4(),
        mail.recipient(),
        crate::mail::body(&mail)?,
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(order_conflict)?
    .ok_or_else(expired)?;
    crate::mail::queued(&mail);
    row.try_into()
}

/// The unique constraints that mean "an order for this already exists".
fn order_conflict(e: sqlx::Error) -> AppError {
    match e.as_database_error().and_then(|d| d.constraint()) {
        Some("orders_hold_key" | "orders_one_pending_per_listing") => {
            AppError::conflict("already-ordered", "an order for this already exists")
        }
        _ => e.into(),
    }
}

/// An order to open for a hold (primary) or a listing (resale).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewOrder<'a> {
    pub kind: OrderKind,
    pub hold_id: Option<Uuid>,
    pub listing_id: Option<Uuid>,
    pub buyer: &'a Email,
    pub total: Money,
}

pub(crate) async fn insert_order(
    tx: &mut Transaction<'_, Postgres>,
    new: &NewOrder<'_>,
) -> AppResult<Order> {
    let NewOrder {
        kind,
        hold_id,
        listing_id,
        buyer,
        total,
    } = *new;
    let kind = match kind {
        OrderKind::Primary => "primary",
        OrderKind::Resale => "resale",
    };
    let row = sqlx::query_as!(
        OrderRow,
        "INSERT INTO orders (id, kind, buyer_email, access_token, hold_id, listing_id,
                             total_minor, currency)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING id, kind, state, buyer_email, access_token, total_minor,
                   currency as \"currency!\", created_at, paid_at, refunded_minor, payment_error",
        Uuid::new_v4(),
        kind,
        buyer.as_str(),
        access_token(),
        hold_id,
        listing_id,
        total.amount_minor,
        total.currency.as_str() as &str,
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(order_conflict)?;
    row.try_into()
}

#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn find_order_by_token(db: &PgPool, token: &str) -> AppResult<Option<Order>> {
    let row = sqlx::query_as!(
        OrderRow,
        "SELECT id, kind, state, buyer_email, access_token, total_minor,
                currency as \"currency!\", created_at, paid_at, refunded_minor, payment_error
         FROM orders WHERE access_token = $1",
        token,
    )
    .fetch_optional(db)
    .await?;
    row.map(Order::try_from).transpose()
}

/// Every order placed with `email` (compared without regard to ASCII case), newest first.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn orders_of_buyer(db: &PgPool, email: &str) -> AppResult<Vec<Order>> {
    let rows = sqlx::query_as!(
        OrderRow,
        "SELECT id, kind, state, buyer_email, access_token, total_minor,
                currency as \"currency!\", created_at, paid_at, refunded_minor, payment_error
         FROM orders WHERE lower(buyer_email) = lower($1)
         ORDER BY created_at DESC, id LIMIT 500",
        email,
    )
    .fetch_all(db)
    .await?;
    rows.into_iter().map(Order::try_from).collect()
}

#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn find_order(db: &PgPool, id: Uuid) -> AppResult<Option<Order>> {
    let row = sqlx::query_as!(
        OrderRow,
        "SELECT id, kind, state, buyer_email, access_token, total_minor,
                currency as \"currency!\", created_at, paid_at, refunded_minor, payment_error
         FROM orders WHERE id = $1",
        id,
    )
    .fetch_optional(db)
    .await?;
    row.map(Order::try_from).transpose()
}

/// What a recorded payment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payment {
    /// The order is now paid; these tickets were issued or re-issued to the buyer.
    Recorded { ticket_ids: Vec<Uuid> },
    /// It was already paid: a duplicate notification changes nothing.
    AlreadyPaid,
}

/// What a payment found when it arrived, inside the caller's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    Recorded {
        ticket_ids: Vec<Uuid>,
    },
    AlreadyPaid,
    /// The order had expired or was cancelled first: the money must go back.
    TooLate {
        state: String,
    },
}

/// Marks a pending order paid and hands the buyer their tickets, in the caller's transaction
/// (which also queues the buyer's mail).
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn record_payment(
    tx: &mut Transaction<'_, Postgres>,
    order_id: Uuid,
    payment_ref: &str,
) -> AppResult<Payment> {
    match record_payment_in(tx, order_id, payment_ref).await? {
        PaymentOutcome::Recorded { ticket_ids } => Ok(Payment::Recorded { ticket_ids }),
        PaymentOutcome::AlreadyPaid => Ok(Payment::AlreadyPaid),
        PaymentOutcome::TooLate { state } => Err(AppError::conflict(
            "order-not-payable",
            format!("the order is {state} and can no longer be paid"),
        )),
    }
}

/// The payment step inside the caller's transaction (the webhook's, which also records the
/// event id). A primary order converts its hold into sold tickets; a resale order re-issues
/// the listed ticket to the buyer (new epoch, new link), which voids the seller's code.
/// Locks follow the store's order: the hold or listing first, then the order.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn record_payment_in(
    tx: &mut Transaction<'_, Postgres>,
    order_id: Uuid,
    payment_ref: &str,
) -> AppResult<PaymentOutcome> {
    let order = sqlx::query!(
        "SELECT hold_id, listing_id, buyer_email FROM orders WHERE id = $1",
        order_id,
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(AppError::not_found("order"))?;
    if let Some(hold_id) = order.hold_id {
        sqlx::query!(
            "SELECT id FROM holds WHERE basket_id = $1 ORDER BY id FOR UPDATE",
            hold_id
        )
        .fetch_all(&mut **tx)
        .await?;
    }
    if let Some(listing_id) = order.listing_id {
        sqlx::query!(
            "SELECT id FROM listings WHERE id = $1 FOR UPDATE",
            listing_id
        )
        .fetch_one(&mut **tx)
        .await?;
    }
    let state = sqlx::query_scalar!(
        "SELECT state FROM orders WHERE id = $1 FOR UPDATE",
        order_id
    )
    .fetch_one(&mut **tx)
    .await?;
    match state.as_str() {
        "pending" => {}
        "paid" => return Ok(PaymentOutcome::AlreadyPaid),
        _ => return Ok(PaymentOutcome::TooLate { state }),
    }
    let ticket_ids = match (order.hold_id, order.listing_id) {
        (Some(hold_id), _) => convert_hold(tx, hold_id, order_id, &order.buyer_email).await?,
        (None, Some(listing_id)) => {
            super::listings::complete_resale(tx, listing_id, order_id, &order.buyer_email).await?
        }
        (None, None) => return Err(anyhow::anyhow!("order {order_id} pays for nothing").into()),
    };
    let Some(ticket_ids) = ticket_ids else {
        // The hold or reservation is gone although the order is still pending (a sweeper
        // has yet to expire it): the payment came too late all the same.
        return Ok(PaymentOutcome::TooLate {
            state: "expired".to_owned(),
        });
    };
    sqlx::query!(
        "UPDATE orders SET state = 'paid', paid_at = now(), payment_ref = $2, payment_error = NULL
         WHERE id = $1",
        order_id,
        payment_ref,
    )
    .execute(&mut **tx)
    .await?;
    Ok(PaymentOutcome::Recorded { ticket_ids })
}

/// One ticket type of a converted hold. Ordered by ticket type first, the order counter rows
/// are locked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SoldLine {
    ticket_type_id: Uuid,
    quantity: i32,
}

/// Hold -> sold tickets. `None` when any of its rows is no longer active (expired or
/// converted): a hold is paid for whole or not at all.
async fn convert_hold(
    tx: &mut Transaction<'_, Postgres>,
    hold_id: Uuid,
    order_id: Uuid,
    buyer_email: &str,
) -> AppResult<Option<Vec<Uuid>>> {
    // Lock order: the hold's rows first (the caller locked them), then its counter rows in id
    // order (see `store`).
    let lines = sqlx::query!(
        "UPDATE holds SET state = 'converted'
         WHERE basket_id = $1 AND state = 'active'
           AND NOT EXISTS (SELECT 1 FROM holds WHERE basket_id = $1 AND state <> 'active')
         RETURNING ticket_type_id, quantity",
        hold_id,
    )
    .fetch_all(&mut **tx)
    .await?;
    if lines.is_empty() {
        return Ok(None);
    }
    let mut lines: Vec<SoldLine> = lines
        .into_iter()
        .map(|l| SoldLine {
            ticket_type_id: l.ticket_type_id,
            quantity: l.quantity,
        })
        .collect();
    lines.sort_unstable();
    let mut ids = Vec::new();
    for SoldLine {
        ticket_type_id,
        quantity,
    } in lines
    {
        sqlx::query!(
            "UPDATE ticket_types SET held = held - $2, sold = sold + $2 WHERE id = $1",
            ticket_type_id,
            quantity,
        )
        .execute(&mut **tx)
        .await?;
        for _ in 0..quantity {
            let id = Uuid::new_v4();
            sqlx::query!(
                "INSERT INTO tickets (id, ticket_type_id, holder_email, access_token, order_id)
                 VALUES ($1, $2, $3, $4, $5)",
                id,
                ticket_type_id,
                buyer_email,
                access_token(),
                order_id,
            )
            .execute(&mut **tx)
            .await?;
            ids.push(id);
        }
    }
    Ok(Some(ids))
}
