//! Stripe webhooks: verified over the raw body against every configured secret (so a secret
//! can be rotated), then applied exactly once. The event id is recorded in the same
//! transaction as the event's effect; a redelivery finds it and changes nothing, and events
//! arriving out of order either wait for what they need (parked) or find it already done.

use stripe_shared::CheckoutSessionPaymentStatus;
use stripe_webhook::{Event, EventObject, Webhook, WebhookError};
use uuid::Uuid;

use super::{Applied, after_commit, apply_payment};
use crate::error::AppResult;
use crate::state::AppState;
use crate::store::ledger;
use crate::store::payments as store;

/// Why a delivery was refused; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No `Stripe-Signature` header, or one we cannot read.
    MalformedSignature,
    /// No configured secret produced any of the `v1` signatures.
    BadSignature,
    /// Signed correctly, but outside the timestamp tolerance: a possible replay.
    Stale,
    /// Signed correctly, but not an event we can read.
    Unreadable,
    /// This storefront has no webhook secret configured.
    NotConfigured,
}

impl Rejection {
    pub fn kind(self) -> &'static str {
        match self {
            Self::MalformedSignature => "malformed_signature",
            Self::BadSignature => "bad_signature",
            Self::Stale => "stale_signature",
            Self::Unreadable => "unreadable_event",
            Self::NotConfigured => "not_configured",
        }
    }
}

/// Checks the signature with each secret in turn. async-stripe accepts a header when any of
/// its `v1` signatures matches, and rejects timestamps more than 300 s from now.
pub fn verify(payload: &str, header: Option<&str>, secrets: &[String]) -> Result<Event, Rejection> {
    if secrets.is_empty() {
        return Err(Rejection::NotConfigured);
    }
    let header = header.ok_or(Rejection::MalformedSignature)?;
    for secret in secrets {
        match Webhook::construct_event(payload, header, secret) {
            Ok(event) => return Ok(event),
            Err(WebhookError::BadSignature) => continue,
            // The signature matched this secret; the checks after it failed.
            Err(WebhookError::BadTimestamp(_)) => return Err(Rejection::Stale),
            Err(WebhookError::BadParse(_)) => return Err(Rejection::Unreadable),
            Err(WebhookError::BadHeader(_) | WebhookError::BadKey) => {
                return Err(Rejection::MalformedSignature);
            }
        }
    }
    Err(Rejection::BadSignature)
}

/// What a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Applied,
    /// Seen before: no effect.
    Duplicate,
    /// Recorded, but nothing of ours (another type, or not one of our orders).
    Ignored,
}

impl Handled {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
        }
    }
}

fn order_id(
    reference: Option<&str>,
    metadata: Option<&std::collections::HashMap<String, String>>,
) -> Option<Uuid> {
    reference
        .or_else(|| metadata.and_then(|m| m.get("order_id")).map(String::as_str))
        .and_then(|id| Uuid::parse_str(id).ok())
}

async fn is_our_order(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, id: Uuid) -> AppResult<bool> {
    Ok(
        sqlx::query_scalar!("SELECT id FROM orders WHERE id = $1", id)
            .fetch_optional(&mut **tx)
            .await?
            .is_some(),
    )
}

/// Applies a verified event exactly once.
pub async fn handle(state: &AppState, event: Event) -> AppResult<Handled> {
    let mut tx = state.db.begin().await?;
    if !store::record_event(&mut tx, event.id.as_str(), event.type_.as_str()).await? {
        return Ok(Handled::Duplicate);
    }
    let mut paid: Option<(Uuid, Applied)> = None;
    let handled = match event.data.object {
        EventObject::CheckoutSessionCompleted(session) => {
            let order = order_id(
                session.client_reference_id.as_deref(),
                session.metadata.as_ref(),
            );
            let intent = session.payment_intent.as_ref().map(|p| p.id().to_string());
            match (order, intent, session.amount_total, session.currency) {
                (Some(order), Some(intent), Some(amount), Some(currency))
                    if session.payment_status == CheckoutSessionPaymentStatus::Paid
                        && is_our_order(&mut tx, order).await? =>
                {
                    let applied = apply_payment(
                        state,
                        &mut tx,
                        order,
                        &intent,
                        amount,
                        &currency.to_string(),
                    )
                    .await?;
                    paid = Some((order, applied));
                    Handled::Applied
                }
                // Unpaid (a delayed payment method) or not ours: the payment intent's own
                // event will say when the money arrives.
                _ => Handled::Ignored,
            }
        }
        EventObject::PaymentIntentSucceeded(intent) => {
            match order_id(None, Some(&intent.metadata)) {
                Some(order) if is_our_order(&mut tx, order).await? => {
                    let applied = apply_payment(
                        state,
                        &mut tx,
                        order,
                        intent.id.as_str(),
                        intent.amount_received,
                        &intent.currency.to_string(),
                    )
                    .await?;
                    paid = Some((order, applied));
                    Handled::Applied
                }
                _ => Handled::Ignored,
            }
        }
        EventObject::CheckoutSessionExpired(session) => {
            match order_id(
                session.client_reference_id.as_deref(),
                session.metadata.as_ref(),
            ) {
                Some(order) if store::checkout_expired(&mut tx, order).await? => Handled::Applied,
                _ => Handled::Ignored,
            }
        }
        EventObject::PaymentIntentPaymentFailed(intent) => {
            let message = intent
                .last_payment_error
                .as_ref()
                .and_then(|e| e.message.clone())
                .unwrap_or_else(|| "the payment was declined".to_owned());
            match order_id(None, Some(&intent.metadata)) {
                Some(order) if is_our_order(&mut tx, order).await? => {
                    store::payment_failed(&mut tx, order, &message).await?;
                    Handled::Applied
                }
                _ => Handled::Ignored,
            }
        }
        EventObject::ChargeRefunded(charge) => {
            match charge.payment_intent.as_ref().map(|p| p.id().to_string()) {
                Some(intent) => match store::order_of_payment_intent(&mut tx, &intent).await? {
                    Some(order) => {
                        ledger::charge_refunded(
                            &mut tx,
                            &order,
                            charge.amount_refunded,
                            charge.id.as_str(),
                        )
                        .await?;
                        Handled::Applied
                    }
                    None => {
                        ledger::park(
                            &mut tx,
                            event.id.as_str(),
                            &intent,
                            "charge_refunded",
                            charge.amount_refunded,
                            charge.id.as_str(),
                        )
                        .await?;
                        Handled::Applied
                    }
                },
                None => Handled::Ignored,
            }
        }
        EventObject::ChargeDisputeCreated(dispute) => match dispute
            .payment_intent
            .as_ref()
            .map(|p| p.id().to_string())
        {
            Some(intent) => match store::order_of_payment_intent(&mut tx, &intent).await? {
                Some(order) => {
                    ledger::dispute_created(&mut tx, &order, dispute.id.as_str(), dispute.amount)
                        .await?;
                    Handled::Applied
                }
                None => {
                    ledger::park(
                        &mut tx,
                        event.id.as_str(),
                        &intent,
                        "dispute_created",
                        dispute.amount,
                        dispute.id.as_str(),
                    )
                    .await?;
                    Handled::Applied
                }
            },
            None => Handled::Ignored,
        },
        EventObject::AccountUpdated(account) => {
            let known = store::account_updated(
                &mut tx,
                account.id.as_str(),
                account.details_submitted.unwrap_or(false),
                account.payouts_enabled.unwrap_or(false),
            )
            .await?;
            if known {
                Handled::Applied
            } else {
                Handled::Ignored
            }
        }
        _ => Handled::Ignored,
    };
    tx.commit().await?;
    if let Some((order, applied)) = paid {
        after_commit(state, order, applied).await;
    }
    Ok(handled)
}
