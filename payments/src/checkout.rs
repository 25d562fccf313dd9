//! Checkout Sessions a storefront may open, in the tenant's currency, under an idempotency key
//! of the tenant's own: a primary sale is a destination charge to the tenant's own connected
//! account with at least the tenant's fee; a resale is a platform charge in a transfer group,
//! whose seller is paid later by a transfer out of that group. [`check`] decides without I/O;
//! the handlers in `http::checkout` do the talking.

use serde::{Deserialize, Serialize};
use tiqzy_crds::Currency;

use crate::caller::Caller;
use crate::http::problem::Problem;
use crate::registry::TenantPayments;
use crate::stripe::Metadata;

/// A transfer group name's longest length.
const MAX_TRANSFER_GROUP: usize = 200;
/// Stripe's limits on line items per session.
const MAX_LINE_ITEMS: usize = 100;

/// `POST /v1/checkout-sessions`, as a storefront sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCheckoutSession {
    /// Primary sale: must be the tenant's own connected account; named so a mismatch is
    /// refused loudly rather than silently redirected.
    #[serde(default)]
    pub destination_account: Option<String>,
    /// ISO 4217, must be the tenant's currency.
    pub currency: String,
    pub line_items: Vec<LineItem>,
    /// Primary sale: the platform's share, integer minor units.
    #[serde(default)]
    pub application_fee_amount: Option<i64>,
    /// Resale: the platform is charged; the seller is paid by a transfer in this group.
    #[serde(default)]
    pub transfer_group: Option<String>,
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
    /// The tenant's connected account (the destination of a primary sale).
    pub connected_account: String,
    pub split: Split,
    pub currency: Currency,
    pub line_items: Vec<LineItem>,
    /// What the buyer pays, integer minor units.
    pub total: i64,
    pub client_reference_id: String,
    pub customer_email: Option<String>,
    pub success_url: String,
    pub cancel_url: String,
    pub expires_at: i64,
    pub metadata: Metadata,
    pub idempotency_key: String,
}

/// Where the money of a checkout goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// Primary sale: a destination charge to the tenant's account, minus the platform's fee.
    Destination { application_fee_amount: i64 },
    /// Resale: a platform charge; the seller is paid by a transfer in this group.
    Platform { transfer_group: String },
}

impl Split {
    pub fn is_destination_charge(&self) -> bool {
        matches!(self, Self::Destination { .. })
    }

    pub fn transfer_group(&self) -> Option<&str> {
        match self {
            Self::Destination { .. } => None,
            Self::Platform { transfer_group } => Some(transfer_group),
        }
    }
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

/// Everything a checkout must satisfy before Stripe is asked.
pub fn check(
    caller: &Caller,
    tenant: &TenantPayments,
    request: NewCheckoutSession,
    idempotency_key: String,
) -> Result<CheckedSession, Problem> {
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
    let split = split(tenant, &request, total)?;
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
        split,
        currency: tenant.currency,
        line_items: request.line_items,
        total,
        client_reference_id: request.client_reference_id,
        customer_email: request.customer_email,
        success_url: request.success_url,
        cancel_url: request.cancel_url,
        expires_at: request.expires_at,
        metadata: request.metadata,
        idempotency_key,
    })
}

/// A primary sale pays the tenant's own account at least the tenant's fee; a resale names a
/// transfer group instead. Exactly one of the two.
fn split(
    tenant: &TenantPayments,
    request: &NewCheckoutSession,
    total: i64,
) -> Result<Split, Problem> {
    match (
        &request.destination_account,
        request.application_fee_amount,
        &request.transfer_group,
    ) {
        (Some(account), Some(fee), None) => {
            if *account != tenant.connected_account {
                return Err(Problem::forbidden(
                    "account-not-yours",
                    "destination_account is not this tenant's connected account",
                ));
            }
            if fee < 0 || fee > total {
                return Err(Problem::invalid(
                    "application_fee_amount must be between 0 and the session's total",
                ));
            }
            let least = least_fee(total, tenant.application_fee_bps, tenant.currency);
            if fee < least {
                return Err(Problem::invalid(format!(
                    "application_fee_amount must be at least {least}: the tenant's fee is {} basis \
                     points of the total {total}",
                    tenant.application_fee_bps
                )));
            }
            Ok(Split::Destination {
                application_fee_amount: fee,
            })
        }
        (None, None, Some(group)) => {
            if group.is_empty()
                || group.len() > MAX_TRANSFER_GROUP
                || !group.chars().all(|c| c.is_ascii_graphic())
            {
                return Err(Problem::invalid(format!(
                    "transfer_group must hold 1 to {MAX_TRANSFER_GROUP} printable ASCII characters"
                )));
            }
            Ok(Split::Platform {
                transfer_group: group.clone(),
            })
        }
        _ => Err(Problem::invalid(
            "give either destination_account and application_fee_amount (a primary sale) or \
             transfer_group (a resale)",
        )),
    }
}

/// The tenant's fee on `total`, rounded down to a step Stripe can charge (10 minor units for
/// three-decimal currencies), as the storefront computes it.
pub fn least_fee(total: i64, bps: u32, currency: Currency) -> i64 {
    let step: i128 = if currency.exponent() == 3 { 10 } else { 1 };
    let fee = i128::from(total) * i128::from(bps) / (10_000 * step) * step;
    i64::try_from(fee).unwrap_or(total)
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
            application_fee_bps: 0,
        }
    }

    fn request() -> NewCheckoutSession {
        NewCheckoutSession {
            destination_account: Some("acct_1Acme".into()),
            currency: "eur".into(),
            line_items: vec![LineItem {
                description: "Standing".into(),
                unit_amount: 2500,
                quantity: 2,
            }],
            application_fee_amount: Some(125),
            transfer_group: None,
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
        other.destination_account = Some("acct_1Other".into());
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
        greedy.application_fee_amount = Some(5001);
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
    fn a_primary_sale_pays_at_least_the_tenants_fee() {
        let key = || "tiqzy:acme:checkout:1".to_owned();
        // 2.5 % of 50.00 EUR is 1.25 EUR: 1.25 passes, 1.24 does not.
        let mut at_rate = tenant();
        at_rate.application_fee_bps = 250;
        assert!(check(&caller(), &at_rate, request(), key()).is_ok());
        let mut cheap = request();
        cheap.application_fee_amount = Some(124);
        let problem = check(&caller(), &at_rate, cheap, key()).expect_err("refused");
        assert_eq!(
            (problem.status, problem.kind.as_str()),
            (422, "invalid-request")
        );
        assert!(problem.detail.contains("125"), "{}", problem.detail);
        // Rounded down as the storefront rounds: 2.5 % of 29.99 is 0.74975.
        assert_eq!(least_fee(2999, 250, Currency::EUR), 74);
        assert_eq!(least_fee(1_001, 250, Currency::JPY), 25);
        assert_eq!(least_fee(12_345, 250, Currency::KWD), 300);
        assert_eq!(least_fee(5000, 0, Currency::EUR), 0);
    }

    #[test]
    fn a_resale_names_a_transfer_group_and_no_fee() {
        let key = || "tiqzy:acme:checkout:1".to_owned();
        let mut resale = request();
        resale.destination_account = None;
        resale.application_fee_amount = None;
        resale.transfer_group = Some("order_0f3c".into());
        let checked = check(&caller(), &tenant(), resale.clone(), key()).expect("accepted");
        assert_eq!(
            checked.split,
            Split::Platform {
                transfer_group: "order_0f3c".into()
            }
        );
        assert_eq!(checked.total, 5000);
        let mut both = resale.clone();
        both.destination_account = Some("acct_1Acme".into());
        both.application_fee_amount = Some(125);
        assert_eq!(
            kind(check(&caller(), &tenant(), both, key())),
            "invalid-request"
        );
        let mut neither = resale.clone();
        neither.transfer_group = None;
        assert_eq!(
            kind(check(&caller(), &tenant(), neither, key())),
            "invalid-request"
        );
        let mut spaced = resale;
        spaced.transfer_group = Some("order 1".into());
        assert_eq!(
            kind(check(&caller(), &tenant(), spaced, key())),
            "invalid-request"
        );
    }
}
