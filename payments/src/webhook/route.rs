//! Which tenant a verified Stripe event belongs to. Every clue the event carries must name the
//! same tenant: the `tiqzy_tenant` metadata the service set on what it created, the checkout
//! session it recorded for a tenant, the payment intent of such a session (what a charge, a
//! refund or a dispute names: they carry none of our metadata), and for a Connect event the
//! connected account. An event that cannot be placed is never guessed at; it is kept as
//! unroutable.

use serde::Deserialize;

/// Metadata key the service sets on every session, payment intent and account it creates.
pub const TENANT_METADATA: &str = "tiqzy_tenant";

/// The parts of Stripe's event envelope the service reads; the body itself is delivered as
/// Stripe sent it.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub livemode: bool,
    /// The connected account a Connect event happened on.
    #[serde(default)]
    pub account: Option<String>,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

impl Envelope {
    /// `data.object.metadata.tiqzy_tenant`, when set.
    pub fn metadata_tenant(&self) -> Option<&str> {
        self.data
            .object
            .get("metadata")?
            .get(TENANT_METADATA)?
            .as_str()
    }

    /// The checkout session the event is about and the payment intent it reports, when it is
    /// about a session that took a payment.
    pub fn checkout_session_payment(&self) -> Option<(&str, &str)> {
        let session = self.checkout_session()?;
        Some((session, id_of(self.data.object.get("payment_intent")?)?))
    }

    /// The payment intent a charge, refund or dispute belongs to (or the payment intent the
    /// event is about).
    pub fn payment_intent(&self) -> Option<&str> {
        let object = &self.data.object;
        match object.get("object")?.as_str()? {
            "charge" | "refund" | "dispute" => id_of(object.get("payment_intent")?),
            "payment_intent" => object.get("id")?.as_str(),
            _ => None,
        }
    }

    /// The checkout session the event is about, when it is about one.
    pub fn checkout_session(&self) -> Option<&str> {
        let object = &self.data.object;
        if object.get("object")?.as_str()? == "checkout.session" {
            object.get("id")?.as_str()
        } else {
            None
        }
    }
}

/// An id Stripe gives as a string, or as the object itself when expanded.
fn id_of(value: &serde_json::Value) -> Option<&str> {
    value
        .as_str()
        .or_else(|| value.get("id")?.as_str())
        .filter(|id| !id.is_empty())
}

/// What the service found out about an event before placing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clues {
    /// The event's `livemode` is the mode of the platform key.
    pub mode_matches: bool,
    pub metadata_tenant: Option<String>,
    /// The tenant the event's checkout session was recorded for.
    pub session_tenant: Option<String>,
    /// The tenant whose recorded session took the event's payment intent.
    pub payment_tenant: Option<String>,
    /// For a Connect event: its account, and the tenant owning it (as connected account or
    /// seller), if any does.
    pub account: Option<(String, Option<String>)>,
}

/// Why an event was not delivered; stored with it and used as a log field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    #[error("livemode does not match the platform key's mode")]
    ModeMismatch,
    #[error("event account {0} belongs to no tenant")]
    UnknownAccount(String),
    #[error("no tenant metadata, recorded session, recorded payment or connected account")]
    NoTenant,
    #[error("the event's clues name different tenants: {0:?}")]
    Disagreement(Vec<String>),
    #[error("tenant `{0}` does not exist")]
    UnknownTenant(String),
}

/// The tenant every clue agrees on, if that tenant exists.
pub fn place(clues: &Clues, exists: impl Fn(&str) -> bool) -> Result<String, Unroutable> {
    if !clues.mode_matches {
        return Err(Unroutable::ModeMismatch);
    }
    let account_owner = match &clues.account {
        Some((account, None)) => return Err(Unroutable::UnknownAccount(account.clone())),
        Some((_, Some(owner))) => Some(owner),
        None => None,
    };
    let mut named: Vec<String> = [
        clues.metadata_tenant.as_ref(),
        clues.session_tenant.as_ref(),
        clues.payment_tenant.as_ref(),
        account_owner,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    named.sort();
    named.dedup();
    let tenant = match named.as_slice() {
        [] => return Err(Unroutable::NoTenant),
        [one] => one.clone(),
        _ => return Err(Unroutable::Disagreement(named)),
    };
    if !exists(&tenant) {
        return Err(Unroutable::UnknownTenant(tenant));
    }
    Ok(tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clues() -> Clues {
        Clues {
            mode_matches: true,
            ..Clues::default()
        }
    }

    fn exists(tenant: &str) -> bool {
        tenant == "acme" || tenant == "globex"
    }

    #[test]
    fn any_single_clue_places_an_event_and_agreeing_clues_too() {
        let by_metadata = Clues {
            metadata_tenant: Some("acme".into()),
            ..clues()
        };
        assert_eq!(place(&by_metadata, exists), Ok("acme".into()));
        let by_session = Clues {
            session_tenant: Some("acme".into()),
            ..clues()
        };
        assert_eq!(place(&by_session, exists), Ok("acme".into()));
        let all = Clues {
            metadata_tenant: Some("acme".into()),
            session_tenant: Some("acme".into()),
            account: Some(("acct_1".into(), Some("acme".into()))),
            ..clues()
        };
        assert_eq!(place(&all, exists), Ok("acme".into()));
    }

    #[test]
    fn another_tenants_account_unknown_accounts_and_no_clue_are_unroutable() {
        let crossed = Clues {
            metadata_tenant: Some("acme".into()),
            account: Some(("acct_globex".into(), Some("globex".into()))),
            ..clues()
        };
        assert!(matches!(
            place(&crossed, exists),
            Err(Unroutable::Disagreement(_))
        ));
        let stranger = Clues {
            metadata_tenant: Some("acme".into()),
            account: Some(("acct_x".into(), None)),
            ..clues()
        };
        assert_eq!(
            place(&stranger, exists),
            Err(Unroutable::UnknownAccount("acct_x".into()))
        );
        assert_eq!(place(&clues(), exists), Err(Unroutable::NoTenant));
        let ghost = Clues {
            metadata_tenant: Some("ghost".into()),
            ..clues()
        };
        assert_eq!(
            place(&ghost, exists),
            Err(Unroutable::UnknownTenant("ghost".into()))
        );
    }

    #[test]
    fn an_event_of_the_other_mode_is_unroutable_whatever_it_says() {
        let test_event = Clues {
            mode_matches: false,
            metadata_tenant: Some("acme".into()),
            ..clues()
        };
        assert_eq!(place(&test_event, exists), Err(Unroutable::ModeMismatch));
    }

    #[test]
    fn a_dispute_is_placed_by_the_payment_it_disputes_and_the_account_still_counts() {
        let disputed = Clues {
            payment_tenant: Some("acme".into()),
            ..clues()
        };
        assert_eq!(place(&disputed, exists), Ok("acme".into()));
        let crossed = Clues {
            payment_tenant: Some("acme".into()),
            account: Some(("acct_globex".into(), Some("globex".into()))),
            ..clues()
        };
        assert!(matches!(
            place(&crossed, exists),
            Err(Unroutable::Disagreement(_))
        ));
        let stranger = Clues {
            payment_tenant: Some("acme".into()),
            account: Some(("acct_x".into(), None)),
            ..clues()
        };
        assert_eq!(
            place(&stranger, exists),
            Err(Unroutable::UnknownAccount("acct_x".into()))
        );
    }

    #[test]
    fn charges_refunds_and_disputes_name_their_payment_intent() {
        let object = |object: serde_json::Value| -> Envelope {
            serde_json::from_value(serde_json::json!({
                "id": "evt_1", "type": "charge.dispute.created", "livemode": false,
                "data": { "object": object }
            }))
            .expect("an event")
        };
        let dispute = object(serde_json::json!({
            "id": "dp_1", "object": "dispute", "charge": "ch_1", "payment_intent": "pi_1"
        }));
        assert_eq!(dispute.payment_intent(), Some("pi_1"));
        assert_eq!(dispute.checkout_session(), None);
        let charge = object(serde_json::json!({
            "id": "ch_1", "object": "charge", "payment_intent": { "id": "pi_2", "object": "payment_intent" }
        }));
        assert_eq!(charge.payment_intent(), Some("pi_2"));
        let refund =
            object(serde_json::json!({ "id": "re_1", "object": "refund", "payment_intent": null }));
        assert_eq!(refund.payment_intent(), None);
        let session = object(serde_json::json!({
            "id": "cs_1", "object": "checkout.session", "payment_intent": "pi_3"
        }));
        assert_eq!(session.checkout_session_payment(), Some(("cs_1", "pi_3")));
        assert_eq!(session.payment_intent(), None);
    }

    #[test]
    fn the_envelope_yields_metadata_and_session() {
        let event: Envelope = serde_json::from_value(serde_json::json!({
            "id": "evt_1", "type": "checkout.session.completed", "livemode": false,
            "data": { "object": { "id": "cs_1", "object": "checkout.session",
                                  "metadata": { "tiqzy_tenant": "acme" } } }
        }))
        .expect("an event");
        assert_eq!(event.metadata_tenant(), Some("acme"));
        assert_eq!(event.checkout_session(), Some("cs_1"));
        assert_eq!(event.account, None);
    }
}
