//! Stripe's events, as the payments service delivers them: verified over the raw body with
//! Stripe's own signature scheme against every configured delivery secret (so a secret can be
//! rotated), then applied exactly once. The event id is recorded in the same
//! transaction as the event's effect; a redelivery finds it and changes nothing, and events
//! arriving out of order either wait for what they need (parked) or find it already done.

mod events;
mod objects;

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use self::events::Effect;
pub use self::objects::{Event, EventObject};
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

/// How far a signature's timestamp may be from now, as Stripe's own libraries allow.
const TOLERANCE_SECS: i64 = 300;

/// `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`: one `v1` per signing secret
/// during a rotation; other schemes (`v0`) are ignored.
struct SignatureHeader {
    timestamp: i64,
    signatures: Vec<Vec<u8>>,
}

impl SignatureHeader {
    fn parse(header: &str) -> Result<Self, Rejection> {
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for (key, value) in header
            .split(',')
            .filter_map(|part| part.trim().split_once('='))
        {
            match key {
                "t" => {
                    timestamp = Some(value.parse().map_err(|_| Rejection::MalformedSignature)?);
                }
                // A value that is not hex cannot match; it is skipped like a wrong one.
                "v1" => signatures.extend(hex::decode(value).ok()),
                _ => {}
            }
        }
        // Without a timestamp or a v1 signature nothing in the header can match.
        match timestamp {
            Some(timestamp) if !signatures.is_empty() => Ok(Self {
                timestamp,
                signatures,
            }),
            _ => Err(Rejection::BadSignature),
        }
    }

    /// Whether one of the `v1` signatures is HMAC-SHA256(secret, "<t>.<payload>"), compared
    /// in constant time.
    fn signed_with(&self, secret: &str, payload: &str) -> bool {
        self.signatures.iter().any(|signature| {
            let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else {
                return false;
            };
            mac.update(self.timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(payload.as_bytes());
            mac.verify_slice(signature).is_ok()
        })
    }
}

/// Checks the signature with each secret in turn; a header is accepted when any of its `v1`
/// signatures matches, and its timestamp is within five minutes of now.
pub fn verify(
    payload: &str,
    header: Option<&str>,
    secrets: &[SecretString],
) -> Result<Event, Rejection> {
    if secrets.is_empty() {
        return Err(Rejection::NotConfigured);
    }
    let header = SignatureHeader::parse(header.ok_or(Rejection::MalformedSignature)?)?;
    if !secrets
        .iter()
        .any(|secret| header.signed_with(secret.expose_secret(), payload))
    {
        return Err(Rejection::BadSignature);
    }
    // The signature matched; the checks after it.
    if (chrono::Utc::now().timestamp() - header.timestamp).abs() > TOLERANCE_SECS {
        return Err(Rejection::Stale);
    }
    Event::parse(payload).ok_or(Rejection::Unreadable)
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
    if !store::record_event(&mut tx, &event.id, &event.type_).await? {
        return Ok(Handled::Duplicate);
    }
    let id = event.id.as_str();
    let effect = match &event.object {
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
        EventObject::ChargeDisputeClosed(dispute) => {
            events::dispute_closed(&mut tx, id, dispute).await?
        }
        EventObject::AccountUpdated(account) => events::account_updated(&mut tx, account).await?,
        EventObject::Other => Effect::Ignored,
    };
    tx.commit().await?;
    Ok(match effect {
        Effect::Ignored => Handled::Ignored,
        Effect::Applied => Handled::Applied,
        Effect::Paid { order: _, applied } => {
            after_commit(state, applied).await;
            Handled::Applied
        }
        Effect::Released => {
            super::settle_requested(state).await;
            Handled::Applied
        }
    })
}
