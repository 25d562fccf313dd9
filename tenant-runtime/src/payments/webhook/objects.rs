//! The parts of Stripe's events the storefront reads, as plain serde types: an event the
//! payments service delivers is Stripe's JSON unchanged, and only these fields decide anything.

use std::collections::HashMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// A verified event: its id (recorded once), its type, and the object we act on.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub type_: String,
    pub object: EventObject,
}

/// The event types we act on; every other type is recorded and ignored.
#[derive(Debug, Clone)]
pub enum EventObject {
    CheckoutSessionCompleted(CheckoutSession),
    CheckoutSessionExpired(CheckoutSession),
    PaymentIntentSucceeded(PaymentIntent),
    PaymentIntentPaymentFailed(PaymentIntent),
    ChargeRefunded(Charge),
    ChargeDisputeCreated(Dispute),
    ChargeDisputeClosed(Dispute),
    AccountUpdated(Account),
    Other,
}

#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    type_: String,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    object: serde_json::Value,
}

impl Event {
    /// `None` when the payload is not an event, or an event we act on lacks what we read.
    pub fn parse(payload: &str) -> Option<Self> {
        let envelope: Envelope = serde_json::from_str(payload).ok()?;
        fn read<T: DeserializeOwned>(object: serde_json::Value) -> Option<T> {
            serde_json::from_value(object).ok()
        }
        let object = envelope.data.object;
        let object = match envelope.type_.as_str() {
            "checkout.session.completed" => EventObject::CheckoutSessionCompleted(read(object)?),
            "checkout.session.expired" => EventObject::CheckoutSessionExpired(read(object)?),
            "payment_intent.succeeded" => EventObject::PaymentIntentSucceeded(read(object)?),
            "payment_intent.payment_failed" => {
                EventObject::PaymentIntentPaymentFailed(read(object)?)
            }
            "charge.refunded" => EventObject::ChargeRefunded(read(object)?),
            "charge.dispute.created" => EventObject::ChargeDisputeCreated(read(object)?),
            "charge.dispute.closed" => EventObject::ChargeDisputeClosed(read(object)?),
            "account.updated" => EventObject::AccountUpdated(read(object)?),
            _ => EventObject::Other,
        };
        Some(Self {
            id: envelope.id,
            type_: envelope.type_,
            object,
        })
    }
}

/// A reference Stripe sends either as an id or, expanded, as the object itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Expandable {
    Id(String),
    Object { id: String },
}

impl Expandable {
    pub fn id(&self) -> &str {
        match self {
            Self::Id(id) | Self::Object { id } => id,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSession {
    #[serde(default)]
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    pub payment_intent: Option<Expandable>,
    #[serde(default)]
    pub amount_total: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    #[serde(default)]
    pub amount_received: i64,
    pub currency: String,
    #[serde(default)]
    pub last_payment_error: Option<PaymentError>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentError {
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Charge {
    pub id: String,
    pub amount_refunded: i64,
    #[serde(default)]
    pub payment_intent: Option<Expandable>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dispute {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub payment_intent: Option<Expandable>,
    /// `won`, `lost`, `warning_closed` (an inquiry that ended without a chargeback), or one
    /// of the open states.
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    pub id: String,
    #[serde(default)]
    pub details_submitted: Option<bool>,
    #[serde(default)]
    pub payouts_enabled: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_read_as_ids_or_expanded_objects_and_unknown_types_are_kept_as_other() {
        let event = |kind: &str, object: serde_json::Value| {
            serde_json::json!({ "id": "evt_1", "type": kind, "data": { "object": object } })
                .to_string()
        };
        let charge = Event::parse(&event(
            "charge.refunded",
            serde_json::json!({ "id": "ch_1", "amount_refunded": 5, "payment_intent": { "id": "pi_1" } }),
        ))
        .expect("a charge");
        let EventObject::ChargeRefunded(charge) = charge.object else {
            panic!("not a refund")
        };
        assert_eq!(
            charge.payment_intent.as_ref().map(Expandable::id),
            Some("pi_1")
        );
        let dispute = Event::parse(&event(
            "charge.dispute.created",
            serde_json::json!({ "id": "dp_1", "amount": 5, "payment_intent": "pi_2" }),
        ))
        .expect("a dispute");
        let EventObject::ChargeDisputeCreated(dispute) = dispute.object else {
            panic!("not a dispute")
        };
        assert_eq!(
            dispute.payment_intent.as_ref().map(Expandable::id),
            Some("pi_2")
        );
        let other = Event::parse(&event("invoice.paid", serde_json::json!({ "x": 1 })));
        assert!(matches!(other.map(|e| e.object), Some(EventObject::Other)));
        // A type we act on without the fields we read is unreadable, not ignored.
        assert!(
            Event::parse(&event(
                "charge.refunded",
                serde_json::json!({ "id": "ch_1" })
            ))
            .is_none()
        );
        assert!(Event::parse("not json").is_none());
    }
}
