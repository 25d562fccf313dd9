//! What Stripe reports on its own: refunds made in its dashboard and disputes. One that
//! arrives before the payment it concerns is booked is parked, and booked with the payment.

use super::{NewEntry, Tx, insert_entry};
use crate::error::AppResult;
use crate::store::money;
use crate::store::payments::{PayableOrder, order_of_payment_intent};

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
}

impl<'a> Reported<'a> {
    /// The `parked_stripe_events.kind` it is parked as.
    fn kind(&self) -> &'static str {
        match self {
            Self::Refund { .. } => "charge_refunded",
            Self::Dispute { .. } => "dispute_created",
        }
    }

    fn parts(&self) -> (i64, &'a str) {
        match *self {
            Self::Refund {
                charge_id,
                amount_refunded,
            } => (amount_refunded, charge_id),
            Self::Dispute { dispute_id, amount } => (amount, dispute_id),
        }
    }

    fn unparked(kind: &str, amount_minor: i64, stripe_ref: &'a str) -> Self {
        match kind {
            "charge_refunded" => Self::Refund {
                charge_id: stripe_ref,
                amount_refunded: amount_minor,
            },
            _ => Self::Dispute {
                dispute_id: stripe_ref,
                amount: amount_minor,
            },
        }
    }
}

/// Books what Stripe reported against the order its payment paid for.
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
    sqlx::query!(
        "UPDATE orders SET disputed_at = coalesce(disputed_at, now()) WHERE id = $1",
        order.id
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
