//! What Stripe reports on its own: refunds made in its dashboard and disputes. One that
//! arrives before the payment it concerns is booked is parked, and booked with the payment.
//! A dispute freezes the disputed order's tickets (not admitted, not listable, not bought)
//! and holds the resale payouts it concerns until it ends: won, they are released; lost, the
//! tickets stay void and the payouts are never sent.

use super::{NewEntry, Tx, insert_entry};
use crate::error::AppResult;
use crate::store::payments::{PayableOrder, order_of_payment_intent};
use crate::store::{listings, money};

/// Money Stripe reports moving back on a payment, whoever moved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported<'a> {
    /// A charge's refunded total so far, not the latest refund alone.
    Refund {
        charge_id: &'a str,
        amount_refunded: i64,
    },
    /// The buyer's bank disputes a charge.
    Dispute { dispute_id: &'a str, amount: i64 },
    /// A dispute ended.
    DisputeClosed {
        dispute_id: &'a str,
        outcome: DisputeOutcome,
    },
}

/// How a dispute ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeOutcome {
    /// Decided for the merchant (or an inquiry closed without a chargeback).
    Won,
    /// The money went back to the cardholder.
    Lost,
}

impl<'a> Reported<'a> {
    /// The `parked_stripe_events.kind` it is parked as.
    fn kind(&self) -> &'static str {
        match self {
            Self::Refund { .. } => "charge_refunded",
            Self::Dispute { .. } => "dispute_created",
            Self::DisputeClosed {
                outcome: DisputeOutcome::Won,
                ..
            } => "dispute_won",
            Self::DisputeClosed {
                outcome: DisputeOutcome::Lost,
                ..
            } => "dispute_lost",
        }
    }

    fn parts(&self) -> (i64, &'a str) {
        match *self {
            Self::Refund {
                charge_id,
                amount_refunded,
            } => (amount_refunded, charge_id),
            Self::Dispute { dispute_id, amount } => (amount, dispute_id),
            Self::DisputeClosed { dispute_id, .. } => (0, dispute_id),
        }
    }

    fn unparked(kind: &str, amount_minor: i64, stripe_ref: &'a str) -> Self {
        match kind {
            "charge_refunded" => Self::Refund {
                charge_id: stripe_ref,
                amount_refunded: amount_minor,
            },
            "dispute_won" => Self::DisputeClosed {
                dispute_id: stripe_ref,
                outcome: DisputeOutcome::Won,
            },
            "dispute_lost" => Self::DisputeClosed {
                dispute_id: stripe_ref,
                outcome: DisputeOutcome::Lost,
            },
            _ => Self::Dispute {
                dispute_id: stripe_ref,
                amount: amount_minor,
            },
        }
    }
}

/// Books what Stripe reported against the order its payment paid for.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn book_reported(
    tx: &mut Tx<'_>,
    order: &PayableOrder,
    reported: &Reported<'_>,
) -> AppResult<()> {
    match *reported {
        Reported::Refund {
            charge_id,
            amount_refunded,
        } => charge_refunded(tx, order, amount_refunded, charge_id).await,
        Reported::Dispute { dispute_id, amount } => {
            dispute_created(tx, order, dispute_id, amount).await
        }
        Reported::DisputeClosed {
            dispute_id,
            outcome,
        } => dispute_closed(tx, order, dispute_id, outcome).await,
    }
}

/// Stripe reports a charge's refunded total; what we did not ask for ourselves (a refund
/// from the Stripe dashboard) is booked now. Repeating it changes nothing.
async fn charge_refunded(
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
    let refunded = sqlx::query_scalar!(
        "UPDATE orders SET refunded_minor = refunded_minor + $2,
                state = CASE WHEN refunded_minor + $2 = total_minor AND state = 'paid'
                             THEN 'refunded' ELSE state END
         WHERE id = $1
         RETURNING state = 'refunded' AS \"refunded!\"",
        order.id,
        unknown,
    )
    .fetch_one(&mut **tx)
    .await?;
    if refunded {
        listings::withdraw_listings_of_order(tx, order.id).await?;
    }
    Ok(())
}

async fn dispute_created(
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
    // A dispute whose end arrived first (events come in any order) stays ended.
    let status = sqlx::query_scalar!(
        "UPDATE orders SET disputed_at = coalesce(disputed_at, now()), dispute_id = $2,
                dispute_status = CASE WHEN dispute_id = $2 AND dispute_status IN ('won', 'lost')
                                      THEN dispute_status ELSE 'open' END
         WHERE id = $1
         RETURNING dispute_status AS \"status!\"",
        order.id,
        dispute_id,
    )
    .fetch_one(&mut **tx)
    .await?;
    match status.as_str() {
        "open" => freeze(tx, order.id).await,
        "lost" => void(tx, order.id).await,
        _ => Ok(()),
    }
}

/// `charge.dispute.closed`: won releases what the dispute froze; lost leaves the tickets
/// void and cancels the held payouts. A dispute other than the order's latest changes nothing.
async fn dispute_closed(
    tx: &mut Tx<'_>,
    order: &PayableOrder,
    dispute_id: &str,
    outcome: DisputeOutcome,
) -> AppResult<()> {
    let status = match outcome {
        DisputeOutcome::Won => "won",
        DisputeOutcome::Lost => "lost",
    };
    let closed = sqlx::query!(
        "UPDATE orders SET disputed_at = coalesce(disputed_at, now()), dispute_id = $2,
                dispute_status = $3
         WHERE id = $1 AND (dispute_id IS NULL OR dispute_id = $2)
         RETURNING id",
        order.id,
        dispute_id,
        status,
    )
    .fetch_optional(&mut **tx)
    .await?;
    if closed.is_none() {
        return Ok(());
    }
    match outcome {
        DisputeOutcome::Won => release(tx, order.id).await,
        DisputeOutcome::Lost => void(tx, order.id).await,
    }
}

/// The order's tickets come off the market (a reserved listing too: the buyer's payment, if
/// it comes, is refunded), and the payouts the dispute concerns that are not yet sent are
/// held: the order's own (a disputed resale) and those of listings of its tickets (a seller
/// who disputes what they paid for the ticket they resold). A payout whose request may have
/// reached Stripe already is left to finish.
async fn freeze(tx: &mut Tx<'_>, order_id: uuid::Uuid) -> AppResult<()> {
    listings::withdraw_listings_of_order(tx, order_id).await?;
    sqlx::query!(
        "UPDATE ledger SET state = 'held', note = 'held: the payment is disputed'
         WHERE kind = 'seller_payout' AND state = 'requested' AND attempted_at IS NULL
           AND (order_id = $1
                OR listing_id IN (SELECT id FROM listings WHERE seller_order_id = $1))",
        order_id,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A won dispute: held payouts that no other open or lost dispute holds go out again.
async fn release(tx: &mut Tx<'_>, order_id: uuid::Uuid) -> AppResult<()> {
    sqlx::query!(
        "UPDATE ledger p SET state = 'requested', note = ''
         FROM orders o
         LEFT JOIN listings l ON l.id = o.listing_id
         LEFT JOIN orders so ON so.id = l.seller_order_id
         WHERE o.id = p.order_id AND p.kind = 'seller_payout' AND p.state = 'held'
           AND (p.order_id = $1 OR l.seller_order_id = $1)
           AND o.dispute_status IS DISTINCT FROM 'open' AND o.dispute_status IS DISTINCT FROM 'lost'
           AND so.dispute_status IS DISTINCT FROM 'open'
           AND so.dispute_status IS DISTINCT FROM 'lost'",
        order_id,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A lost dispute: the tickets stay void and the payouts it held are never sent.
async fn void(tx: &mut Tx<'_>, order_id: uuid::Uuid) -> AppResult<()> {
    listings::withdraw_listings_of_order(tx, order_id).await?;
    sqlx::query!(
        "UPDATE ledger SET state = 'cancelled', settled_at = now(),
                note = 'not sent: the payment was disputed and the dispute lost'
         WHERE kind = 'seller_payout' AND state IN ('held', 'requested') AND attempted_at IS NULL
           AND (order_id = $1
                OR listing_id IN (SELECT id FROM listings WHERE seller_order_id = $1))",
        order_id,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A refund or dispute Stripe reported for a payment that is not booked yet.
#[derive(Debug, Clone, Copy)]
pub struct ParkedEvent<'a> {
    pub event_id: &'a str,
    pub payment_intent: &'a str,
    pub reported: Reported<'a>,
}

/// Keeps a refund or dispute until its payment is booked.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
pub async fn park(tx: &mut Tx<'_>, parked: &ParkedEvent<'_>) -> AppResult<()> {
    let (amount_minor, stripe_ref) = parked.reported.parts();
    sqlx::query!(
        "INSERT INTO parked_stripe_events (event_id, payment_intent, kind, amount_minor, stripe_ref)
         VALUES ($1, $2, $3, $4, $5)",
        parked.event_id,
        parked.payment_intent,
        parked.reported.kind(),
        amount_minor,
        stripe_ref,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Applies what was parked for a payment that has just been booked.
#[tracing::instrument(level = "info", skip_all, fields(otel.kind = "client", db.system = "postgresql"))]
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
        let reported = Reported::unparked(&p.kind, p.amount_minor, &p.stripe_ref);
        book_reported(tx, &order, &reported).await?;
    }
    Ok(())
}
