//! Checkout Sessions a storefront may open: a destination charge to the tenant's own
//! connected account, in the tenant's currency, under an idempotency key of the tenant's own.
//! [`check`] decides without I/O; the handlers in `http::checkout` do the talking.

use serde::{Deserialize, Serialize};
use tiqzy_crds::Currency;

use crate::caller::Caller;
use crate::http::problem::Problem;
use crate::registry::TenantPayments;
use crate::stripe::Metadata;

/// Stripe's limit on idempotency keys.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Stripe's limits on line items per session.
const MAX_LINE_ITEMS: usize = 100;

/// `POST /v1/checkout-sessions`, as a storefront sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCheckoutSession {
    /// Must be the tenant's own connected account; named so a mismatch is refused loudly
    /// rather than silently redirected.
    pub destination_account: String,
    /// ISO 4217, must be the tenant's currency.
    pub currency: String,
    pub line_items: Vec<LineItem>,
    /// The platform's share, integer minor units.
    pub application_fee_amount: i64,
    /// Our order id; comes back on the session and in webhooks.
    pub client_reference_id: String,
    #[serde(default)]
    pub customer_email: Option<String>,
    pub success_url: String,
    pub cancel_url: String,
    /// Unix seconds; Stripe requires 30 minutes to 24 hours ahead.
    pub expires_at: i64,
    #[serde(default)]
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineItem {
    pub description: String,
    /// Integer minor units.
    pub unit_amount: i64,
    pub quantity: u64,
}

/// A request that passed every check, with the key and account it will be sent with.
#[derive(Debug, Clone)]
pub struct CheckedSession {
    pub tenant: String,
    pub connected_account: String,
    pub currency: Currency,
    pub line_items: Vec<LineItem>,
    pub application_fee_amount: i64,
    pub client_reference_id: String,
    pub customer_email: Option<String>,
    pub success_url: String,
    pub cancel_url: String,
    pub expires_at: i64,
    pub metadata: Metadata,
    pub idempotency_key: String,
}

/// `201` answer to a created session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedSession {
    pub id: String,
    pub url: String,
}

/// A session as Stripe reports it when read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub id: String,
    pub paid: bool,
    pub client_reference_id: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub payment_intent: Option<String>,
    pub metadata: Metadata,
}

/// The idempotency key must be the tenant's own (`tiqzy:<tenant>:...`): Stripe keeps keys per
/// platform account, so a key borrowed from another tenant would return that tenant's session.
pub fn idempotency_key(caller: &Caller, key: Option<&str>) -> Result<String, Problem> {
    let key =
        key.ok_or_else(|| Problem::invalid("an Idempotency-Key header is required on every POST"))?;
    let prefix = format!("tiqzy:{}:", caller.tenant);
    if !key.starts_with(&prefix) || key.len() == prefix.len() {
        return Err(Problem::invalid(format!(
            "the Idempotency-Key must start with `{prefix}` followed by the operation and your id"
        )));
    }
    if key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(Problem::invalid(format!(
            "the Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters"
        )));
    }
    Ok(key.to_owned())
}

/// Everything a destination checkout must satisfy before Stripe is asked.
pub fn check(
    caller: &Caller,
    tenant: &TenantPayments,
    request: NewCheckoutSession,
    idempotency_key: String,
) -> Result<CheckedSession, Problem> {
    if request.destination_account != tenant.connected_account {
        return Err(Problem::forbidden(
            "account-not-yours",
            "destination_account is not this tenant's connected account",
        ));
    }
    if !request
        .currency
        .eq_ignore_ascii_case(tenant.currency.code())
    {
        return Err(Problem::invalid(format!(
            "currency must be the tenant's currency {}",
            tenant.currency.code()
        )));
    }
    if request.line_items.is_empty() || request.line_items.len() > MAX_LINE_ITEMS {
        return Err(Problem::invalid(format!(
            "line_items must hold 1 to {MAX_LINE_ITEMS} items"
        )));
    }
    let mut total: i64 = 0;
    for line in &request.line_items {
        if line.unit_amount <= 0 || line.quantity == 0 || line.description.trim().is_empty() {
            return Err(Problem::invalid(
                "each line item needs a description, a positive unit_amount and a quantity",
            ));
        }
        let amount = i64::try_from(line.quantity)
            .ok()
            .and_then(|q| q.checked_mul(line.unit_amount))
            .and_then(|a| total.checked_add(a));
        total = amount.ok_or_else(|| Problem::invalid("the total is too large"))?;
    }
    if request.application_fee_amount < 0 || request.application_fee_amount > total {
        return Err(Problem::invalid(
            "application_fee_amount must be between 0 and the session's total",
        ));
    }
    if request.client_reference_id.is_empty() || request.client_reference_id.len() > 200 {
        return Err(Problem::invalid(
            "client_reference_id must hold 1 to 200 characters",
        ));
    }
    if request.metadata.contains_key("tiqzy_tenant") {
        return Err(Problem::invalid(
            "metadata key `tiqzy_tenant` is set by the payments service",
        ));
    }
    Ok(CheckedSession {
        tenant: caller.tenant.clone(),
        connected_account: tenant.connected_account.clone(),
        currency: tenant.currency,
        line_items: request.line_items,
        application_fee_amount: request.application_fee_amount,
        client_reference_id: request.client_reference_id,
        customer_email: request.customer_email,
        success_url: request.success_url,
        cancel_url: request.cancel_url,
        expires_at: request.expires_at,
        metadata: request.metadata,
        idempotency_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            tenant: "acme".into(),
        }
    }

    fn tenant() -> TenantPayments {
        TenantPayments {
            connected_account: "acct_1Acme".into(),
            currency: Currency::EUR,
        }
    }

    fn request() -> NewCheckoutSession {
        NewCheckoutSession {
            destination_account: "acct_1Acme".into(),
            currency: "eur".into(),
            line_items: vec![LineItem {
                description: "Standing".into(),
                unit_amount: 2500,
                quantity: 2,
            }],
            application_fee_amount: 125,
            client_reference_id: "order-1".into(),
            customer_email: None,
            success_url: "https://acme.example/ok".into(),
            cancel_url: "https://acme.example/no".into(),
            expires_at: 0,
            metadata: Metadata::new(),
        }
    }

    fn kind(result: Result<CheckedSession, Problem>) -> String {
        result.expect_err("refused").kind
    }

    #[test]
    fn a_sale_to_the_own_account_passes() {
        let checked = check(
            &caller(),
            &tenant(),
            request(),
            "tiqzy:acme:checkout:1".into(),
        )
        .expect("accepted");
        assert_eq!(checked.connected_account, "acct_1Acme");
        assert_eq!(checked.tenant, "acme");
    }

    #[test]
    fn another_account_currency_or_fee_is_refused() {
        let key = || "tiqzy:acme:checkout:1".to_owned();
        let mut other = request();
        other.destination_account = "acct_1Other".into();
        assert_eq!(
            kind(check(&caller(), &tenant(), other, key())),
            "account-not-yours"
        );
        let mut usd = request();
        usd.currency = "USD".into();
        assert_eq!(
            kind(check(&caller(), &tenant(), usd, key())),
            "invalid-request"
        );
        let mut greedy = request();
        greedy.application_fee_amount = 5001;
        assert_eq!(
            kind(check(&caller(), &tenant(), greedy, key())),
            "invalid-request"
        );
        let mut overflow = request();
        overflow.line_items[0].unit_amount = i64::MAX;
        assert_eq!(
            kind(check(&caller(), &tenant(), overflow, key())),
            "invalid-request"
        );
    }

    #[test]
    fn idempotency_keys_must_be_the_tenants_own() {
        let c = caller();
        assert!(idempotency_key(&c, Some("tiqzy:acme:checkout:1")).is_ok());
        assert!(idempotency_key(&c, None).is_err());
        assert!(idempotency_key(&c, Some("tiqzy:acme-2:checkout:1")).is_err());
        assert!(idempotency_key(&c, Some("tiqzy:other:checkout:1")).is_err());
        assert!(idempotency_key(&c, Some("tiqzy:acme:")).is_err());
        let long = format!("tiqzy:acme:{}", "x".repeat(250));
        assert!(idempotency_key(&c, Some(&long)).is_err());
    }
}
