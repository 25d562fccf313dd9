//! Where payment lands: Stripe Checkout for the buyer, verified webhooks (or a verified
//! read-back) for the result, and the ledger's requested refunds, payouts and reversals sent
//! to Stripe after the transaction that decided them.

pub mod checkout;
pub mod gateway;
mod settle;
pub mod webhook;

pub use checkout::{Checkout, confirm_from_stripe, start_checkout, unavailable};
pub use settle::{close_lapsed_checkouts, settle_requested};

use serde::Serialize;
use sha2::Digest;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::domain::BasisPoints;
use crate::error::{AppError, AppResult};
use crate::identity::{self, Session};
use crate::mail::{self, Message};
use crate::state::AppState;
use crate::store::ledger::{self, LedgerEntry, LedgerOf, PaymentBooking, RefundRequest};
use crate::store::orders::{self, Payment, PaymentOutcome};
use crate::store::payments as store;
use crate::store::tickets;

/// Records a confirmed payment and sends the buyer their ticket links. Safe to repeat.
pub async fn payment_received(
    state: &AppState,
    order_id: Uuid,
    payment_ref: &str,
) -> AppResult<Payment> {
    let mut tx = state.db.begin().await?;
    let payment = orders::record_payment(&mut tx, order_id, payment_ref).await?;
    if let Payment::Recorded { .. } = &payment {
        mail_tickets(state, &mut tx, order_id).await?;
    }
    tx.commit().await?;
    Ok(payment)
}

/// Queues the mail with the links to the tickets the order now holds, in the transaction
/// that issued them.
async fn mail_tickets(
    state: &AppState,
    tx: &mut Transaction<'_, Postgres>,
    order_id: Uuid,
) -> AppResult<()> {
    let Some(to) = sqlx::query_scalar!("SELECT buyer_email FROM orders WHERE id = $1", order_id)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(());
    };
    let ticket_urls = tickets::tickets_of_order(&mut **tx, order_id)
        .await?
        .iter()
        .map(|t| format!("{}/tickets/{}", state.config.public_url, t.access_token))
        .collect();
    mail::enqueue(tx, &Message::Tickets { to, ticket_urls }).await?;
    Ok(())
}

pub(crate) fn application_fee(state: &AppState) -> BasisPoints {
    BasisPoints::new(state.config.payments.application_fee_bps)
        .unwrap_or(BasisPoints::new(0).expect("0 bps"))
}

fn seller_fee(state: &AppState) -> BasisPoints {
    BasisPoints::new(state.config.resale.seller_fee_bps)
        .unwrap_or(BasisPoints::new(0).expect("0 bps"))
}

pub fn transfer_group(order_id: Uuid) -> String {
    format!("order_{}", order_id.simple())
}

/// What applying a payment did, to act on after commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The order is paid now: mail the tickets.
    Paid,
    /// Already paid before: nothing to do.
    Duplicate,
    /// The order had expired or was cancelled: a full refund was requested.
    Refunding,
}

/// A payment Stripe confirmed, by a verified webhook or a read-back.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedPayment<'a> {
    pub order_id: Uuid,
    pub payment_intent: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
}

/// Applies a verified payment inside the caller's transaction. An amount or currency that
/// does not match the order is refused (and nothing changes).
pub async fn apply_payment(
    state: &AppState,
    tx: &mut Transaction<'_, Postgres>,
    payment: &VerifiedPayment<'_>,
) -> AppResult<Applied> {
    let VerifiedPayment {
        order_id,
        payment_intent,
        amount_minor,
        currency,
    } = *payment;
    let order = orders::find_order(&state.db, order_id)
        .await?
        .ok_or(AppError::not_found("order"))?;
    if order.total.amount_minor != amount_minor
        || !order.total.currency.as_str().eq_ignore_ascii_case(currency)
    {
        return Err(AppError::invalid(format!(
            "the payment ({amount_minor} {currency}) does not match the order's total"
        )));
    }
    Ok(
        match orders::record_payment_in(tx, order_id, payment_intent).await? {
            PaymentOutcome::Recorded { .. } => {
                let booking = PaymentBooking {
                    order_id,
                    payment_intent,
                    tenant_account: state.config.payments.connected_account.as_deref(),
                    application_fee: application_fee(state),
                    seller_fee: seller_fee(state),
                };
                ledger::book_payment(tx, &booking).await?;
                ledger::unpark(tx, payment_intent).await?;
                mail_tickets(state, tx, order_id).await?;
                Applied::Paid
            }
            PaymentOutcome::AlreadyPaid => Applied::Duplicate,
            PaymentOutcome::TooLate { state: was } => {
                // A second notification of the same late payment finds the refund requested.
                let refunded = sqlx::query_scalar!(
                    "SELECT refunded_minor >= total_minor AS \"done!\" FROM orders WHERE id = $1",
                    order_id
                )
                .fetch_one(&mut **tx)
                .await?;
                if refunded {
                    Applied::Duplicate
                } else {
                    ledger::book_late_payment(tx, order_id, payment_intent, &was).await?;
                    ledger::unpark(tx, payment_intent).await?;
                    Applied::Refunding
                }
            }
        },
    )
}

/// After commit: send whatever Stripe requests the ledger now holds (the tickets' mail was
/// queued in the transaction).
pub async fn after_commit(state: &AppState, applied: Applied) {
    if applied != Applied::Duplicate {
        settle_requested(state).await;
    }
}

/// Staff refund: partial or full. The Stripe refund is sent right after commit, and retried
/// by the sweeper with the same idempotency key if Stripe cannot be reached.
pub async fn refund_order(
    state: &AppState,
    order_id: Uuid,
    amount_minor: Option<i64>,
    reason: &str,
) -> AppResult<LedgerEntry> {
    let mut tx = state.db.begin().await?;
    let refund = RefundRequest {
        order_id,
        amount_minor,
        note: reason,
        late: false,
    };
    let entry = ledger::request_refund(&mut tx, &refund).await?;
    mail_refund(state, &mut tx, &entry).await?;
    tx.commit().await?;
    settle_requested(state).await;
    Ok(ledger::ledger(&state.db, LedgerOf::Order(order_id))
        .await?
        .into_iter()
        .find(|e| e.id == entry.id)
        .unwrap_or(entry))
}

/// Tells the buyer their money goes back, in the transaction that requested the refund.
async fn mail_refund(
    state: &AppState,
    tx: &mut Transaction<'_, Postgres>,
    entry: &LedgerEntry,
) -> AppResult<()> {
    let Some(order) = sqlx::query!(
        "SELECT buyer_email, access_token FROM orders WHERE id = $1",
        entry.order_id
    )
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(());
    };
    let currency = crate::domain::Currency::parse(&entry.currency).map_err(anyhow::Error::from)?;
    let message = Message::Refunded {
        to: order.buyer_email,
        order_url: format!("{}/orders/{}", state.config.public_url, order.access_token),
        amount: mail::Amount {
            minor: entry.amount_minor.abs(),
            currency,
        },
    };
    mail::enqueue(tx, &message).await?;
    Ok(())
}

/// Where a seller finishes Stripe onboarding before they can list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Onboarding {
    pub account_id: String,
    /// Stripe's hosted onboarding page (single use, short-lived).
    pub onboarding_url: String,
    /// Whether the seller can list already.
    pub ready: bool,
}

/// Creates the payout account of the ticket's verified holder on first use, and a fresh
/// onboarding link. Only a session verified for the ticket's holder address gets here, so
/// nobody binds an account to an address they cannot read mail at.
pub async fn start_onboarding(
    state: &AppState,
    session: Option<&Session>,
    ticket_token: &str,
) -> AppResult<Onboarding> {
    let session = session.ok_or_else(identity::sign_in_required)?;
    let holder = store::holder_of_ticket(&state.db, ticket_token)
        .await?
        .ok_or(AppError::not_found("ticket"))?;
    let address = identity::verified_holder(Some(session), &holder)?.as_str();
    let (account_id, ready) = match store::verified_seller(&state.db, address).await? {
        Some(seller) => (seller.account_id, seller.ready),
        None => {
            // Derived from the verified address (hashed: no personal data in Stripe's request
            // logs), and unlike any key of the unverified accounts made before.
            let digest = sha2::Sha256::new()
                .chain_update(b"verified:")
                .chain_update(address.as_bytes())
                .finalize();
            let seller_key = hex::encode(&digest[..16]);
            let account = state
                .stripe
                .create_seller_account(&seller_key, address)
                .await
                .map_err(|f| unavailable(&f, None))?;
            (
                store::save_verified_seller(&state.db, address, &account).await?,
                false,
            )
        }
    };
    let number = store::next_link_number(&state.db, address).await?;
    let ticket_url = format!("{}/tickets/{ticket_token}", state.config.public_url);
    let url = state
        .stripe
        .create_onboarding_link(&account_id, number, &ticket_url, &ticket_url)
        .await
        .map_err(|f| unavailable(&f, None))?;
    Ok(Onboarding {
        account_id,
        onboarding_url: url,
        ready,
    })
}
