//! Stripe Checkout for a pending order, and confirming a returning buyer by reading the
//! session back from Stripe (the redirect itself proves nothing).

use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::gateway::{CheckoutRequest, CheckoutSplit, StripeFailure};
use super::{VerifiedPayment, after_commit, application_fee, apply_payment, transfer_group};
use crate::domain::{OrderKind, Split};
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::store::payments as store;

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
/// whenever the session is created while the hold lasts (holds last at most two hours, see
/// `TIQZY_HOLD_TTL_SECONDS`), and it is derived from stored times only, so a retried request
/// sends the same parameters under the same idempotency key.
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
    let stripe = &state.config.payments;
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
                application_fee: Split::of(target.total, application_fee(state)).fee,
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
        items: target.items.clone(),
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
    let opened = store::OpenedCheckout {
        order_id: target.order_id,
        session_id: &session.id,
        url: &session.url,
        expires_at,
    };
    store::attach_checkout(&state.db, &opened).await?;
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
        // The platform's side is misconfigured (token, ServiceAccount): not the buyer's doing.
        StripeFailure::NotAdmitted(_) => AppError::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "payments-unavailable",
            "Payments unavailable",
            format!(
                "this storefront cannot take payments right now: the payment service did not \
                 accept its credentials. Please try again later.{kept}"
            ),
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

/// How often one order's session is read back at most (per pod): a buyer reloading the page
/// they came back to, or a script replaying the link, must not spend the tenant's share of the
/// payments service's budget. The webhook delivery settles the order in any case.
pub const READ_BACK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// Orders remembered at most; past it, old entries are dropped first, then all.
const READ_BACKS_KEPT: usize = 10_000;

/// When each order's session was last read back.
#[derive(Debug, Default)]
pub struct ReadBacks(std::sync::Mutex<std::collections::HashMap<uuid::Uuid, std::time::Instant>>);

impl ReadBacks {
    /// Whether `order` may be read back now; if so, the time is noted.
    pub fn allow(&self, order: uuid::Uuid, now: std::time::Instant) -> bool {
        let mut last = self.0.lock().expect("read-backs");
        if last
            .get(&order)
            .is_some_and(|at| now.duration_since(*at) < READ_BACK_EVERY)
        {
            return false;
        }
        if last.len() >= READ_BACKS_KEPT {
            last.retain(|_, at| now.duration_since(*at) < READ_BACK_EVERY);
            if last.len() >= READ_BACKS_KEPT {
                last.clear();
            }
        }
        last.insert(order, now);
        true
    }
}

/// The buyer is back from Stripe: ask Stripe (not the redirect) whether they paid, at most
/// once per [`READ_BACK_EVERY`] for an order.
pub async fn confirm_from_stripe(state: &AppState, order_token: &str) -> AppResult<()> {
    let Some(target) = store::checkout_target(&state.db, order_token).await? else {
        return Ok(());
    };
    let (Some(session_id), "pending") = (&target.session_id, target.state.as_str()) else {
        return Ok(());
    };
    if !state
        .read_backs
        .allow(target.order_id, std::time::Instant::now())
    {
        return Ok(());
    }
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
    let payment = VerifiedPayment {
        order_id: target.order_id,
        payment_intent: &intent,
        amount_minor: amount,
        currency: &currency,
    };
    let mut tx = state.db.begin().await?;
    let applied = apply_payment(state, &mut tx, &payment).await?;
    tx.commit().await?;
    after_commit(state, applied).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use super::{READ_BACK_EVERY, ReadBacks, session_expiry};

    #[test]
    fn an_order_is_read_back_once_per_interval() {
        let read_backs = ReadBacks::default();
        let (order, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let now = std::time::Instant::now();
        assert!(read_backs.allow(order, now));
        assert!(!read_backs.allow(order, now + READ_BACK_EVERY / 2));
        assert!(
            read_backs.allow(other, now),
            "another order is not held back"
        );
        assert!(read_backs.allow(order, now + READ_BACK_EVERY));
    }

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
