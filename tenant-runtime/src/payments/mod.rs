//! Where orders start and where payment lands: Stripe Checkout for the buyer, verified
//! webhooks (or a verified read-back) for the result, and the ledger's requested refunds,
//! payouts and reversals sent to Stripe after the transaction that decided them.

pub mod gateway;
pub mod webhook;

use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sha2::Digest;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::domain::{BasisPoints, Email, OrderKind};
use crate::error::{AppError, AppResult};
use crate::mail::Mail;
use crate::state::AppState;
use crate::store::orders::{self, Order, Payment, PaymentOutcome};
use crate::store::payments::{self as store, LedgerEntry};
use crate::store::{listings, tickets};
use gateway::{CheckoutRequest, CheckoutSplit, StripeFailure};

/// A pending primary order for a live hold; the buyer gets the order link by mail.
pub async fn open_order(state: &AppState, hold_id: Uuid, buyer: &Email) -> AppResult<Order> {
    let order = orders::create_primary_order(&state.db, hold_id, buyer).await?;
    send_order_link(state, &order);
    Ok(order)
}

/// A pending resale order with the listing reserved for this buyer.
pub async fn open_resale_order(
    state: &AppState,
    listing_id: Uuid,
    buyer: &Email,
) -> AppResult<Order> {
    let order =
        listings::reserve_listing(&state.db, listing_id, buyer, state.config.hold_ttl).await?;
    send_order_link(state, &order);
    Ok(order)
}

/// Records a confirmed payment and sends the buyer their ticket links. Safe to repeat.
pub async fn payment_received(
    state: &AppState,
    order_id: Uuid,
    payment_ref: &str,
) -> AppResult<Payment> {
    let payment = orders::record_payment(&state.db, order_id, payment_ref).await?;
    if let Payment::Recorded { .. } = &payment {
        send_tickets(state, order_id).await?;
    }
    Ok(payment)
}

/// Mails the buyer the links to the tickets their order now holds.
async fn send_tickets(state: &AppState, order_id: Uuid) -> AppResult<()> {
    if let Some(order) = orders::find_order(&state.db, order_id).await? {
        let links: Vec<String> = tickets::tickets_of_order(&state.db, order.id)
            .await?
            .iter()
            .map(|t| format!("{}/tickets/{}", state.config.public_url, t.access_token))
            .collect();
        state.mailer.send(Mail {
            to: order.buyer_email.clone(),
            subject: format!("Your tickets from {}", state.config.branding.display_name),
            body: format!("Your tickets:\n{}\n", links.join("\n")),
        });
    }
    Ok(())
}

fn send_order_link(state: &AppState, order: &Order) {
    state.mailer.send(Mail {
        to: order.buyer_email.clone(),
        subject: format!("Your order at {}", state.config.branding.display_name),
        body: format!(
            "Your order: {}/orders/{}\n",
            state.config.public_url, order.access_token
        ),
    });
}

/// Where the buyer goes to pay.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Checkout {
    /// Stripe's hosted payment page.
    pub checkout_url: String,
    pub session_id: String,
    /// The tickets stay reserved until then.
    pub reserved_until: Option<DateTime<Utc>>,
}

/// Stripe wants a checkout session to live 30 minutes to 24 hours from its creation; ours is
/// closed by the sweeper as soon as the hold runs out. Half an hour past the hold is valid
/// whenever the session is created while the hold lasts, and it is derived from stored times
/// only, so a retried request sends the same parameters under the same idempotency key.
fn session_expiry(
    created_at: DateTime<Utc>,
    reserved_until: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let latest = created_at + Duration::hours(23);
    reserved_until
        .map_or(created_at + Duration::minutes(45), |until| {
            until + Duration::minutes(31)
        })
        .min(latest)
}

/// Opens (or reopens) Stripe Checkout for a pending order. When Stripe cannot be reached the
/// buyer is told so, and the hold stays theirs until it expires.
pub async fn start_checkout(state: &AppState, order_token: &str) -> AppResult<Checkout> {
    let target = store::checkout_target(&state.db, order_token)
        .await?
        .ok_or(AppError::not_found("order"))?;
    if target.state != "pending" {
        return Err(AppError::conflict(
            "order-not-payable",
            format!("this order is {} and cannot be paid", target.state),
        ));
    }
    if target
        .reserved_until
        .is_some_and(|until| until <= Utc::now())
    {
        return Err(AppError::conflict(
            "hold-expired",
            "your reservation has expired; please start again",
        ));
    }
    if let (Some(id), Some(url)) = (&target.session_id, &target.session_url)
        && target.session_expires_at.is_some_and(|at| at > Utc::now())
    {
        return Ok(Checkout {
            checkout_url: url.clone(),
            session_id: id.clone(),
            reserved_until: target.reserved_until,
        });
    }
    let stripe = &state.config.stripe;
    let split = match target.kind {
        OrderKind::Primary => {
            let account = stripe.connected_account.clone().ok_or_else(|| {
                AppError::client(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "payments-not-set-up",
                    "Payments not set up",
                    "this storefront cannot take payments yet: it has no Stripe account connected",
                )
            })?;
            CheckoutSplit::Destination {
                account,
                application_fee: crate::domain::Split::of(target.total, application_fee(state)).fee,
            }
        }
        OrderKind::Resale => CheckoutSplit::Platform {
            transfer_group: transfer_group(target.order_id),
        },
    };
    let expires_at = session_expiry(target.created_at, target.reserved_until);
    let public = &state.config.public_url;
    let request = CheckoutRequest {
        order_id: target.order_id,
        description: target.description.clone(),
        unit_price: crate::domain::Money::new(
            target.total.amount_minor / i64::from(target.quantity.max(1)),
            target.total.currency,
        )?,
        quantity: target.quantity,
        buyer_email: target.buyer_email.clone(),
        success_url: format!("{public}/orders/{}?checkout=done", target.access_token),
        cancel_url: format!("{public}/orders/{}", target.access_token),
        expires_at: expires_at.timestamp(),
        split,
    };
    let session = state
        .stripe
        .create_checkout_session(&request)
        .await
        .map_err(|failure| unavailable(&failure, target.reserved_until))?;
    store::attach_checkout(
        &state.db,
        target.order_id,
        &session.id,
        &session.url,
        expires_at,
    )
    .await?;
    Ok(Checkout {
        checkout_url: session.url,
        session_id: session.id,
        reserved_until: target.reserved_until,
    })
}

/// What the buyer is told when Stripe did not do what we asked. Nothing of theirs is lost.
pub fn unavailable(failure: &StripeFailure, reserved_until: Option<DateTime<Utc>>) -> AppError {
    let kept = reserved_until.map_or(String::new(), |until| {
        format!(
            " Your tickets stay reserved until {} UTC.",
            until.format("%H:%M")
        )
    });
    match failure {
        StripeFailure::Configuration => AppError::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "payments-not-set-up",
            "Payments not set up",
            "this storefront cannot take payments yet",
        ),
        StripeFailure::Refused { .. } => AppError::client(
            StatusCode::BAD_GATEWAY,
            "payment-refused",
            "Payment could not be started",
            format!("our payment provider refused to start this payment.{kept}"),
        ),
        _ => AppError::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "payment-provider-unavailable",
            "Payment provider unavailable",
            format!(
                "we cannot reach our payment provider right now; please try again in a minute.{kept}"
            ),
        ),
    }
}

fn application_fee(state: &AppState) -> BasisPoints {
    BasisPoints::new(state.config.stripe.application_fee_bps)
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

/// A verified payment of `amount` for `order_id`, inside the caller's transaction. An amount
/// or currency that does not match the order is refused (and nothing changes).
pub async fn apply_payment(
    state: &AppState,
    tx: &mut Transaction<'_, Postgres>,
    order_id: Uuid,
    payment_intent: &str,
    amount_minor: i64,
    currency: &str,
) -> AppResult<Applied> {
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
                store::book_payment(
                    tx,
                    order_id,
                    payment_intent,
                    state.config.stripe.connected_account.as_deref(),
                    application_fee(state),
                    seller_fee(state),
                )
                .await?;
                store::unpark(tx, payment_intent).await?;
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
                    store::book_late_payment(tx, order_id, payment_intent, &was).await?;
                    store::unpark(tx, payment_intent).await?;
                    Applied::Refunding
                }
            }
        },
    )
}

/// After commit: mail tickets and send whatever Stripe requests the ledger now holds.
pub async fn after_commit(state: &AppState, order_id: Uuid, applied: Applied) {
    if applied == Applied::Paid
        && let Err(e) = send_tickets(state, order_id).await
    {
        tracing::warn!(error = %e, "mailing tickets failed");
    }
    if applied != Applied::Duplicate {
        settle_requested(state).await;
    }
}

/// The buyer is back from Stripe: ask Stripe (not the redirect) whether they paid.
pub async fn confirm_from_stripe(state: &AppState, order_token: &str) -> AppResult<()> {
    let Some(target) = store::checkout_target(&state.db, order_token).await? else {
        return Ok(());
    };
    let (Some(session_id), "pending") = (&target.session_id, target.state.as_str()) else {
        return Ok(());
    };
    let status = match state.stripe.checkout_session_status(session_id).await {
        Ok(status) => status,
        // The webhook will still come; the page shows the order as pending meanwhile.
        Err(_) => return Ok(()),
    };
    let ours = status.order_id.as_deref() == Some(target.order_id.to_string().as_str());
    let (true, true, Some(amount), Some(currency), Some(intent)) = (
        status.paid,
        ours,
        status.amount_total,
        status.currency,
        status.payment_intent,
    ) else {
        return Ok(());
    };
    let mut tx = state.db.begin().await?;
    let applied =
        apply_payment(state, &mut tx, target.order_id, &intent, amount, &currency).await?;
    tx.commit().await?;
    after_commit(state, target.order_id, applied).await;
    Ok(())
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
    let entry = store::request_refund(&mut tx, order_id, amount_minor, reason, false).await?;
    tx.commit().await?;
    settle_requested(state).await;
    Ok(store::ledger(&state.db, Some(order_id), None)
        .await?
        .into_iter()
        .find(|e| e.id == entry.id)
        .unwrap_or(entry))
}

/// Sends every requested refund, payout and reversal to Stripe, one row at a time; a row
/// whose request fails transiently stays requested and is retried on the next sweep.
pub async fn settle_requested(state: &AppState) {
    if !state.stripe.enabled() {
        return;
    }
    // Bounded, so one sweep cannot run forever when Stripe keeps failing.
    for _ in 0..100 {
        match settle_one(state).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "settling the ledger failed");
                return;
            }
        }
    }
}

/// Returns whether a row was handled and more may wait.
async fn settle_one(state: &AppState) -> AppResult<bool> {
    let mut tx = state.db.begin().await?;
    let Some(row) = store::next_requested(&mut tx).await? else {
        return Ok(false);
    };
    let result = match row.kind.as_str() {
        "refund" => match &row.payment_intent {
            Some(intent) => {
                state
                    .stripe
                    .refund(
                        row.id,
                        intent,
                        row.amount,
                        row.order_kind == OrderKind::Primary,
                    )
                    .await
            }
            None => Err(StripeFailure::Refused {
                status: 0,
                message: "the order has no payment to refund".to_owned(),
            }),
        },
        "seller_payout" => {
            state
                .stripe
                .transfer(
                    row.id,
                    row.amount,
                    &row.party,
                    &transfer_group(row.order_id),
                )
                .await
        }
        "transfer_reversal" => match &row.reversed_transfer {
            Some(transfer) => {
                state
                    .stripe
                    .reverse_transfer(row.id, transfer, row.amount)
                    .await
            }
            None => Err(StripeFailure::Refused {
                status: 0,
                message: "the payout to reverse has no transfer".to_owned(),
            }),
        },
        other => {
            return Err(
                anyhow::anyhow!("ledger row {} of kind {other} cannot be sent", row.id).into(),
            );
        }
    };
    match result {
        Ok(reference) => store::settle(&mut tx, row.id, Ok(&reference)).await?,
        Err(failure) if failure.is_transient() => {
            // Left requested; the sweeper tries again with the same idempotency key.
            store::attempted(&mut tx, row.id).await?;
            tx.commit().await?;
            return Ok(false);
        }
        Err(failure) => store::settle(&mut tx, row.id, Err(&failure.to_string())).await?,
    }
    tx.commit().await?;
    Ok(true)
}

/// Closes Stripe checkouts of orders that expired or were cancelled, so nobody pays for
/// tickets they no longer hold. A payment that still slips through is refunded.
pub async fn close_lapsed_checkouts(state: &AppState) {
    if !state.stripe.enabled() {
        return;
    }
    let Ok(open) = store::unclosed_checkouts(&state.db).await else {
        return;
    };
    for (order_id, session_id) in open {
        match state
            .stripe
            .expire_checkout_session(order_id, &session_id)
            .await
        {
            // Refused: Stripe says it is complete or expired already; either way, closed.
            Ok(()) | Err(StripeFailure::Refused { .. }) => {
                let _ = store::checkout_closed(&state.db, order_id).await;
            }
            Err(_) => return,
        }
    }
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

/// Creates the ticket holder's connected account on first use and a fresh onboarding link.
pub async fn start_onboarding(state: &AppState, ticket_token: &str) -> AppResult<Onboarding> {
    let seller = store::seller_of_ticket(&state.db, ticket_token)
        .await?
        .ok_or(AppError::not_found("ticket"))?;
    let account_id = match seller.account_id {
        Some(account) => account,
        None => {
            // Derived from the email (hashed: no personal data in Stripe's request logs).
            let seller_key = hex::encode(&sha2::Sha256::digest(seller.email.as_bytes())[..16]);
            let account = state
                .stripe
                .create_seller_account(&seller_key, &seller.email)
                .await
                .map_err(|f| unavailable(&f, None))?;
            store::save_seller(&state.db, &seller.email, &account).await?
        }
    };
    let number = store::next_link_number(&state.db, &seller.email).await?;
    let ticket_url = format!("{}/tickets/{ticket_token}", state.config.public_url);
    let url = state
        .stripe
        .create_onboarding_link(&account_id, number, &ticket_url, &ticket_url)
        .await
        .map_err(|f| unavailable(&f, None))?;
    Ok(Onboarding {
        account_id,
        onboarding_url: url,
        ready: seller.ready,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use super::session_expiry;

    #[test]
    fn a_session_created_while_the_hold_lasts_is_within_stripes_window() {
        let created = Utc
            .with_ymd_and_hms(2026, 11, 26, 12, 0, 0)
            .single()
            .expect("time");
        // Stripe accepts 30 minutes to 24 hours after the session is created, which happens
        // between the order's creation and the end of the hold.
        for hold_minutes in [1, 10, 60, 6 * 60, 22 * 60] {
            let until = created + Duration::minutes(hold_minutes);
            let expires = session_expiry(created, Some(until));
            for now in [created, until - Duration::seconds(1)] {
                let ahead = expires - now;
                assert!(
                    ahead >= Duration::minutes(30) && ahead <= Duration::hours(24),
                    "hold of {hold_minutes} min, session at {now}: {ahead}"
                );
            }
        }
        // Derived from stored times only: the same inputs give the same expiry (retry-safe).
        let until = created + Duration::minutes(10);
        assert_eq!(
            session_expiry(created, Some(until)),
            until + Duration::minutes(31)
        );
    }
}
