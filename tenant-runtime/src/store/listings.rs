//! Resale: a fan lists a paid ticket at no more than the cap; a buyer reserves the listing
//! while paying; payment re-issues the ticket to the buyer.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{access_token, money, orders};
use crate::config::ResalePolicy;
use crate::domain::{Email, Money, OrderKind};
use crate::error::{AppError, AppResult};
use crate::identity::{self, Session};
use crate::mail::{self, Amount, Message};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Listing {
    pub id: Uuid,
    pub event_slug: String,
    pub event_title: String,
    pub ticket_type: String,
    #[schema(value_type = crate::http::schema::MoneySchema)]
    pub price: Money,
    #[schema(value_type = crate::http::schema::MoneySchema)]
    pub face_value: Money,
    pub starts_at: DateTime<Utc>,
}

/// A listing just made, and who to tell.
#[derive(Debug, Clone)]
pub struct Listed {
    pub listing: Listing,
    /// The verified seller's address.
    pub seller: String,
}

/// Puts the ticket behind `ticket_token` on the market at `price`, for its holder signed in
/// as `seller`, in the caller's transaction.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn create_listing(
    tx: &mut Transaction<'_, Postgres>,
    seller: &Session,
    ticket_token: &str,
    price: Money,
    policy: &ResalePolicy,
) -> AppResult<Listed> {
    if !policy.enabled {
        return Err(AppError::conflict(
            "resale-disabled",
            "resale is not offered by this storefront",
        ));
    }
    let price = price.chargeable()?;
    // Locking the ticket serialises listing against check-in and re-issue of this ticket.
    let t = sqlx::query!(
        "SELECT t.id, t.epoch, t.order_id, t.holder_email, tt.price_minor,
                tt.currency as \"currency!\", tt.name, e.slug, e.title,
                e.starts_at, e.cancelled_at IS NOT NULL AS \"cancelled!\",
                o.state AS order_state, o.dispute_status,
                EXISTS (SELECT 1 FROM check_ins c WHERE c.ticket_id = t.id) AS \"checked_in!\"
         FROM tickets t
         JOIN ticket_types tt ON tt.id = t.ticket_type_id
         JOIN events e ON e.id = tt.event_id
         JOIN orders o ON o.id = t.order_id
         WHERE t.access_token = $1
         FOR UPDATE OF t",
        ticket_token,
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(AppError::not_found("ticket"))?;
    let seller = identity::verified_holder(Some(seller), &t.holder_email)?;
    if t.cancelled || t.starts_at <= Utc::now() {
        return Err(AppError::conflict(
            "event-not-resellable",
            "tickets for a cancelled or started event cannot be resold",
        ));
    }
    if t.checked_in {
        return Err(AppError::conflict(
            "ticket-used",
            "this ticket has already been checked in",
        ));
    }
    if let Some(refusal) = dispute_refusal(t.dispute_status.as_deref()) {
        return Err(refusal);
    }
    if t.order_state != "paid" {
        return Err(AppError::conflict(
            "ticket-not-valid",
            "only a paid, valid ticket can be resold",
        ));
    }
    let face_value = money(t.price_minor, &t.currency)?;
    let price = price.in_currency(face_value.currency)?;
    if !policy.price_cap.allows(face_value, price) {
        return Err(AppError::invalid(format!(
            "the price may be at most {} ({}% of face value {})",
            policy.price_cap.ceiling(face_value).display(),
            policy.price_cap.percent(),
            face_value.display()
        )));
    }
    if price.amount_minor == 0 {
        return Err(AppError::invalid("a resale price must be above zero"));
    }
    // The seller is paid by a transfer to their connected account: no account, no listing.
    let seller_account = sqlx::query!(
        "SELECT account_id, details_submitted AND payouts_enabled AS \"ready!\"
         FROM sellers WHERE email = $1 AND verified_at IS NOT NULL",
        seller.as_str(),
    )
    .fetch_optional(&mut **tx)
    .await?
    .filter(|s| s.ready)
    .map(|s| s.account_id)
    .ok_or_else(|| {
        AppError::conflict(
            "seller-not-onboarded",
            "set up payouts first: finish Stripe onboarding from the ticket page, then list",
        )
    })?;
    let id = sqlx::query_scalar!(
        "INSERT INTO listings (id, ticket_id, price_minor, currency, seller_account,
                               ticket_epoch, seller_order_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id",
        Uuid::new_v4(),
        t.id,
        price.amount_minor,
        price.currency.as_str() as &str,
        seller_account,
        t.epoch,
        t.order_id,
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(Listed {
        listing: Listing {
            id,
            event_slug: t.slug,
            event_title: t.title,
            ticket_type: t.name,
            price,
            face_value,
            starts_at: t.starts_at,
        },
        seller: seller.as_str().to_owned(),
    })
}

/// Why a ticket whose payment is disputed cannot change hands, if it is.
pub fn dispute_refusal(dispute_status: Option<&str>) -> Option<AppError> {
    match dispute_status {
        Some("open") => Some(AppError::conflict(
            "ticket-frozen",
            "this ticket is frozen by a dispute: the buyer's bank is disputing its payment",
        )),
        Some("lost") => Some(AppError::conflict(
            "ticket-not-valid",
            "this ticket is void: its payment was disputed and taken back",
        )),
        _ => None,
    }
}

/// Takes an unreserved listing off the market, for the ticket's holder signed in as
/// `holder`; a listing being bought stays until that ends (409).
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn withdraw_listing(db: &PgPool, holder: &Session, ticket_token: &str) -> AppResult<()> {
    let holder_email = sqlx::query_scalar!(
        "SELECT holder_email FROM tickets WHERE access_token = $1",
        ticket_token,
    )
    .fetch_optional(db)
    .await?
    .ok_or(AppError::not_found("ticket"))?;
    identity::verified_holder(Some(holder), &holder_email)?;
    let mut tx = db.begin().await?;
    // The listing is locked first, as a payment locks it: a sale in between ends the listing
    // (and changes the ticket's link), so nothing is found here then.
    let listing = sqlx::query!(
        "SELECT l.id, l.state = 'reserved' AND l.reserved_until > now() AS \"reserved!\"
         FROM listings l JOIN tickets t ON t.id = l.ticket_id
         WHERE t.access_token = $1 AND l.state IN ('open', 'reserved')
         FOR UPDATE OF l",
        ticket_token,
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(AppError::conflict(
        "not-listed",
        "this ticket has no open listing",
    ))?;
    if listing.reserved {
        return Err(AppError::conflict(
            "listing-reserved",
            "a buyer is paying for this listing right now; it can be withdrawn if they do not",
        ));
    }
    end_listings(&mut tx, &[listing.id]).await?;
    tx.commit().await?;
    Ok(())
}

/// Withdraws listings and expires the unpaid orders of lapsed or live reservations of them.
async fn end_listings(tx: &mut Transaction<'_, Postgres>, ids: &[Uuid]) -> AppResult<()> {
    sqlx::query!(
        "WITH withdrawn AS (
             UPDATE listings SET state = 'withdrawn'
             WHERE id = ANY($1) AND state IN ('open', 'reserved')
             RETURNING id
         )
         UPDATE orders SET state = 'expired'
         WHERE state = 'pending' AND listing_id IN (SELECT id FROM withdrawn)",
        ids,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The tickets an order holds are no longer valid (refunded, cancelled, disputed): their
/// listings come off the market in the same transaction, reserved ones too (the buyer's
/// payment, should it still come, is refunded). Returns how many were withdrawn.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn withdraw_listings_of_order(
    tx: &mut Transaction<'_, Postgres>,
    order_id: Uuid,
) -> AppResult<u64> {
    let ids = sqlx::query_scalar!(
        "SELECT l.id FROM listings l JOIN tickets t ON t.id = l.ticket_id
         WHERE t.order_id = $1 AND l.state IN ('open', 'reserved')
         ORDER BY l.id FOR UPDATE OF l",
        order_id,
    )
    .fetch_all(&mut **tx)
    .await?;
    end_listings(tx, &ids).await?;
    Ok(ids.len() as u64)
}

/// Listings a buyer can reserve now, including reservations that lapsed without payment.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn open_listings(db: &PgPool, event_slug: Option<&str>) -> AppResult<Vec<Listing>> {
    let rows = sqlx::query!(
        "SELECT l.id, l.price_minor, l.currency as \"currency!\", tt.price_minor AS face_minor,
                tt.name, e.slug, e.title, e.starts_at
         FROM listings l
         JOIN tickets t ON t.id = l.ticket_id
         JOIN ticket_types tt ON tt.id = t.ticket_type_id
         JOIN events e ON e.id = tt.event_id
         WHERE (l.state = 'open' OR (l.state = 'reserved' AND l.reserved_until <= now()))
           AND e.cancelled_at IS NULL AND e.starts_at > now() AND listing_sellable(l.id)
           AND ($1::text IS NULL OR e.slug = $1)
         ORDER BY e.starts_at, l.price_minor LIMIT 500",
        event_slug,
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Listing {
                id: r.id,
                event_slug: r.slug,
                event_title: r.title,
                ticket_type: r.name,
                price: money(r.price_minor, &r.currency)?,
                face_value: money(r.face_minor, &r.currency)?,
                starts_at: r.starts_at,
            })
        })
        .collect()
}

/// Reserves a listing for one buyer while they pay, and opens their resale order. A lapsed
/// reservation is taken over, and its unpaid order expires. `client_hash` is whose per-client
/// cap the reservation counts against (see `client_caps`).
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn reserve_listing(
    tx: &mut Transaction<'_, Postgres>,
    listing_id: Uuid,
    buyer: &Email,
    ttl: Duration,
    client_hash: &[u8],
) -> AppResult<orders::Order> {
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX) as f64;
    let listing = sqlx::query!(
        "UPDATE listings SET state = 'reserved', reserved_until = now() + make_interval(secs => $2),
                             reserved_by_client = $3
         WHERE id = $1 AND (state = 'open' OR (state = 'reserved' AND reserved_until <= now()))
           AND listing_sellable(id)
         RETURNING price_minor, currency as \"currency!\"",
        listing_id,
        ttl_secs,
        client_hash,
    )
    .fetch_optional(&mut **tx)
    .await?;
    let Some(listing) = listing else {
        let exists = sqlx::query_scalar!("SELECT id FROM listings WHERE id = $1", listing_id)
            .fetch_optional(&mut **tx)
            .await?;
        return Err(match exists {
            None => AppError::not_found("listing"),
            Some(_) => AppError::conflict(
                "listing-unavailable",
                "this listing is being bought by someone else or is no longer for sale",
            ),
        });
    };
    sqlx::query!(
        "UPDATE orders SET state = 'expired' WHERE listing_id = $1 AND state = 'pending'",
        listing_id,
    )
    .execute(&mut **tx)
    .await?;
    let price = money(listing.price_minor, &listing.currency)?;
    let new = orders::NewOrder {
        kind: OrderKind::Resale,
        hold_id: None,
        listing_id: Some(listing_id),
        buyer,
        total: price,
    };
    let order = orders::insert_order(tx, &new).await?;
    Ok(order)
}

/// Sold: the ticket moves to the buyer with a new epoch and a new link, so the seller's code
/// and link stop working. `None` when the listing is no longer reserved for this order, or
/// its ticket is no longer valid (then the listing is withdrawn, and the payment refunded).
pub(crate) async fn complete_resale(
    tx: &mut Transaction<'_, Postgres>,
    listing_id: Uuid,
    order_id: Uuid,
    buyer_email: &str,
) -> AppResult<Option<Vec<Uuid>>> {
    let Some(sold) = sqlx::query!(
        "UPDATE listings SET state = 'sold', sold_at = now()
         WHERE id = $1 AND state = 'reserved' AND listing_sellable(id)
           AND EXISTS (SELECT 1 FROM orders o
                       WHERE o.id = $2 AND o.listing_id = $1 AND o.state = 'pending')
         RETURNING ticket_id, price_minor, currency AS \"currency!\"",
        listing_id,
        order_id,
    )
    .fetch_optional(&mut **tx)
    .await?
    else {
        sqlx::query!(
            "UPDATE listings SET state = 'withdrawn'
             WHERE id = $1 AND state IN ('open', 'reserved') AND NOT listing_sellable(id)",
            listing_id,
        )
        .execute(&mut **tx)
        .await?;
        return Ok(None);
    };
    let ticket_id = sold.ticket_id;
    let seller = sqlx::query_scalar!(
        "UPDATE tickets t SET epoch = t.epoch + 1, holder_email = $2, access_token = $3,
                order_id = $4
         FROM tickets before WHERE before.id = t.id AND t.id = $1
         RETURNING before.holder_email",
        ticket_id,
        buyer_email,
        access_token(),
        order_id,
    )
    .fetch_one(&mut **tx)
    .await?;
    // The seller learns it in the transaction of the sale; their payout follows.
    let price = money(sold.price_minor, &sold.currency)?;
    let message = Message::ResaleSold {
        to: seller,
        price: Amount::of(price),
    };
    mail::enqueue(tx, &message).await?;
    Ok(Some(vec![ticket_id]))
}

/// Lapsed reservations go back on the market (unless their ticket is no longer valid) and
/// their unpaid orders expire.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn release_lapsed_reservations(db: &PgPool) -> AppResult<u64> {
    let n = sqlx::query_scalar!(
        "WITH lapsed AS (
             UPDATE listings
             SET state = CASE WHEN listing_sellable(id) THEN 'open' ELSE 'withdrawn' END,
                 reserved_until = NULL
             WHERE state = 'reserved' AND reserved_until <= now()
             RETURNING id
         ), expired AS (
             UPDATE orders SET state = 'expired'
             WHERE state = 'pending' AND listing_id IN (SELECT id FROM lapsed)
             RETURNING id
         )
         SELECT count(*) AS \"n!\" FROM lapsed",
    )
    .fetch_one(db)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}
