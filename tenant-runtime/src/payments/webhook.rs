//! Stripe webhooks: verified over the raw body against every configured secret (so a secret
//! can be rotated), then applied exactly once. The event id is recorded in the same
//! transaction as the event's effect; a redelivery finds it and changes nothing, and events
//! arriving out of order either wait for what they need (parked) or find it already done.

mod events;

use secrecy::{ExposeSecret, SecretString};
use stripe_webhook::{Event, EventObject, Webhook, WebhookError};

use self::events::Effect;
use super::after_commit;
use crate::error::AppResult;
use crate::state::AppState;
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
pub fn verify(
    payload: &str,
    header: Option<&str>,
    secrets: &[SecretString],
) -> Result<Event, Rejection> {
    if secrets.is_empty() {
        return Err(Rejection::NotConfigured);
    }
    let header = header.ok_or(Rejection::MalformedSignature)?;
    for secret in secrets {
        match Webhook::construct_event(payload, header, secret.expose_secret()) {
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

/// Applies a verified event exactly once: the event id is recorded in the transaction that
/// applies it.
pub async fn handle(state: &AppState, event: Event) -> AppResult<Handled> {
    let mut tx = state.db.begin().await?;
    if !store::record_event(&mut tx, event.id.as_str(), event.type_.as_str()).await? {
        return Ok(Handled::Duplicate);
    }
    let id = event.id.as_str();
    let effect = match &event.data.object {
        EventObject::CheckoutSessionCompleted(session) => {
            events::checkout_completed(state, &mut tx, session).await?
        }
        EventObject::CheckoutSessionExpired(session) => {
            events::checkout_expired(&mut tx, session).await?
        }
        EventObject::PaymentIntentSucceeded(intent) => {
            events::payment_succeeded(state, &mut tx, intent).await?
        }
        EventObject::PaymentIntentPaymentFailed(intent) => {
            events::payment_failed(&mut tx, intent).await?
        }
        EventObject::ChargeRefunded(charge) => events::charge_refunded(&mut tx, id, charge).await?,
        EventObject::ChargeDisputeCreated(dispute) => {
            events::dispute_created(&mut tx, id, dispute).await?
        }
        EventObject::AccountUpdated(account) => events::account_updated(&mut tx, account).await?,
        _ => Effect::Ignored,
    };
    tx.commit().await?;
    Ok(match effect {
        Effect::Ignored => Handled::Ignored,
        Effect::Applied => Handled::Applied,
        Effect::Paid { order, applied } => {
            after_commit(state, order, applied).await;
            Handled::Applied
        }
    })
}
