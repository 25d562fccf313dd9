//! What each Stripe event type we act on does, one function per type. Each runs inside the
//! transaction that records the event id, so an effect and the record of it commit together.

use std::collections::HashMap;

use uuid::Uuid;

use super::objects::{Account, Charge, CheckoutSession, Dispute, PaymentIntent};
use crate::error::AppResult;
use crate::payments::{Applied, VerifiedPayment, apply_payment};
use crate::state::AppState;
use crate::store::ledger::{self, DisputeOutcome, ParkedEvent, Reported};
use crate::store::payments::{self as store, AccountStatus};

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

/// What an event did, and what is left to do once it has committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    /// Nothing of ours: another account's object, an unpaid session, an unknown order.
    Ignored,
    Applied,
    /// An order's payment: tickets to mail and Stripe requests to send after commit.
    Paid {
        order: Uuid,
        applied: Applied,
    },
    /// Payouts may have been released: Stripe requests to send after commit.
    Released,
}

/// Our order id: a session's client reference, else the `order_id` we put in its metadata.
fn session_order(session: &CheckoutSession) -> Option<Uuid> {
    session
        .client_reference_id
        .as_deref()
        .or_else(|| metadata_order(session.metadata.as_ref()?))
        .and_then(|id| Uuid::parse_str(id).ok())
}

/// Our order id, from the `order_id` we put in a payment intent's metadata.
fn intent_order(intent: &PaymentIntent) -> Option<Uuid> {
    metadata_order(&intent.metadata).and_then(|id| Uuid::parse_str(id).ok())
}

fn metadata_order(metadata: &HashMap<String, String>) -> Option<&str> {
    metadata.get("order_id").map(String::as_str)
}

/// An id in the metadata proves nothing by itself: it must name one of this tenant's orders.
async fn our_order(tx: &mut Tx<'_>, id: Option<Uuid>) -> AppResult<Option<Uuid>> {
    let Some(id) = id else {
        return Ok(None);
    };
    Ok(
        sqlx::query_scalar!("SELECT id FROM orders WHERE id = $1", id)
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// Mailing the tickets and settling with Stripe wait until the transaction has committed.
async fn paid(
    state: &AppState,
    tx: &mut Tx<'_>,
    payment: &VerifiedPayment<'_>,
) -> AppResult<Effect> {
    let applied = apply_payment(state, tx, payment).await?;
    Ok(Effect::Paid {
        order: payment.order_id,
        applied,
    })
}

/// `checkout.session.completed`: paid now, unless the method pays later (a delayed payment
/// method), in which case the payment intent's own event says when the money arrives.
pub(super) async fn checkout_completed(
    state: &AppState,
    tx: &mut Tx<'_>,
    session: &CheckoutSession,
) -> AppResult<Effect> {
    let order = session_order(session);
    let intent = session.payment_intent.as_ref().map(|p| p.id().to_owned());
    let (Some(order), Some(intent), Some(amount_minor), Some(currency)) =
        (order, intent, session.amount_total, &session.currency)
    else {
        return Ok(Effect::Ignored);
    };
    if session.payment_status != "paid" {
        return Ok(Effect::Ignored);
    }
    let Some(order) = our_order(tx, Some(order)).await? else {
        return Ok(Effect::Ignored);
    };
    let payment = VerifiedPayment {
        order_id: order,
        payment_intent: &intent,
        amount_minor,
        currency,
    };
    paid(state, tx, &payment).await
}

/// `payment_intent.succeeded`: the money arrived.
pub(super) async fn payment_succeeded(
    state: &AppState,
    tx: &mut Tx<'_>,
    intent: &PaymentIntent,
) -> AppResult<Effect> {
    let Some(order) = our_order(tx, intent_order(intent)).await? else {
        return Ok(Effect::Ignored);
    };
    let payment = VerifiedPayment {
        order_id: order,
        payment_intent: intent.id.as_str(),
        amount_minor: intent.amount_received,
        currency: &intent.currency,
    };
    paid(state, tx, &payment).await
}

/// `checkout.session.expired`: the order ends unpaid and gives its tickets back now.
pub(super) async fn checkout_expired(
    tx: &mut Tx<'_>,
    session: &CheckoutSession,
) -> AppResult<Effect> {
    Ok(match session_order(session) {
        Some(order) if store::checkout_expired(tx, order).await? => Effect::Applied,
        _ => Effect::Ignored,
    })
}

/// `payment_intent.payment_failed`: the order stays payable and shows why the attempt failed.
pub(super) async fn payment_failed(tx: &mut Tx<'_>, intent: &PaymentIntent) -> AppResult<Effect> {
    let Some(order) = our_order(tx, intent_order(intent)).await? else {
        return Ok(Effect::Ignored);
    };
    let message = intent
        .last_payment_error
        .as_ref()
        .and_then(|e| e.message.as_deref())
        .unwrap_or("the payment was declined");
    store::payment_failed(tx, order, message).await?;
    Ok(Effect::Applied)
}

/// `charge.refunded`: a refund, possibly one made in the Stripe dashboard.
pub(super) async fn charge_refunded(
    tx: &mut Tx<'_>,
    event_id: &str,
    charge: &Charge,
) -> AppResult<Effect> {
    let reported = Reported::Refund {
        charge_id: charge.id.as_str(),
        amount_refunded: charge.amount_refunded,
    };
    let intent = charge.payment_intent.as_ref().map(|p| p.id().to_owned());
    book_or_park(tx, event_id, intent, reported).await
}

/// `charge.dispute.created`: the buyer's bank disputes a charge.
pub(super) async fn dispute_created(
    tx: &mut Tx<'_>,
    event_id: &str,
    dispute: &Dispute,
) -> AppResult<Effect> {
    let reported = Reported::Dispute {
        dispute_id: dispute.id.as_str(),
        amount: dispute.amount,
    };
    let intent = dispute.payment_intent.as_ref().map(|p| p.id().to_owned());
    book_or_park(tx, event_id, intent, reported).await
}

/// `charge.dispute.closed`: won (or an inquiry closed) releases the order's tickets and the
/// payouts the dispute held, which are sent after commit; lost leaves them void. A dispute
/// that is not closed yet changes nothing.
pub(super) async fn dispute_closed(
    tx: &mut Tx<'_>,
    event_id: &str,
    dispute: &Dispute,
) -> AppResult<Effect> {
    let outcome = match dispute.status.as_deref() {
        Some("won" | "warning_closed") => DisputeOutcome::Won,
        Some("lost") => DisputeOutcome::Lost,
        _ => return Ok(Effect::Ignored),
    };
    let reported = Reported::DisputeClosed {
        dispute_id: dispute.id.as_str(),
        outcome,
    };
    let intent = dispute.payment_intent.as_ref().map(|p| p.id().to_owned());
    Ok(match book_or_park(tx, event_id, intent, reported).await? {
        Effect::Applied if outcome == DisputeOutcome::Won => Effect::Released,
        effect => effect,
    })
}

/// Booked against the order the payment intent paid for; when that payment is not booked
/// yet (events arrive in any order), parked until it is.
async fn book_or_park(
    tx: &mut Tx<'_>,
    event_id: &str,
    payment_intent: Option<String>,
    reported: Reported<'_>,
) -> AppResult<Effect> {
    let Some(payment_intent) = payment_intent else {
        return Ok(Effect::Ignored);
    };
    match store::order_of_payment_intent(tx, &payment_intent).await? {
        Some(order) => ledger::book_reported(tx, &order, &reported).await?,
        None => {
            let parked = ParkedEvent {
                event_id,
                payment_intent: &payment_intent,
                reported,
            };
            ledger::park(tx, &parked).await?;
        }
    }
    Ok(Effect::Applied)
}

/// `account.updated`: a seller's onboarding moved on.
pub(super) async fn account_updated(tx: &mut Tx<'_>, account: &Account) -> AppResult<Effect> {
    let status = AccountStatus {
        account_id: account.id.as_str(),
        details_submitted: account.details_submitted.unwrap_or(false),
        payouts_enabled: account.payouts_enabled.unwrap_or(false),
    };
    Ok(if store::account_updated(tx, &status).await? {
        Effect::Applied
    } else {
        Effect::Ignored
    })
}
