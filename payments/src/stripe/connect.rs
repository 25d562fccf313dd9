//! Money after the checkout: resale sellers' connected accounts and their onboarding links,
//! transfers to sellers and their reversals, refunds. The same calls and parameters the
//! storefront made when it held a key of its own, plus `tiqzy_tenant` in the metadata so
//! Stripe's events can be placed.

use std::collections::HashMap;
use std::str::FromStr;

use stripe::{IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_checkout::checkout_session::ListCheckoutSession;
use stripe_connect::account::{CreateAccount, CreateAccountType};
use stripe_connect::account_link::{CreateAccountLink, CreateAccountLinkType};
use stripe_connect::transfer::CreateTransfer;
use stripe_connect::transfer_reversal::CreateIdTransferReversal;
use stripe_core::refund::CreateRefund;

use super::Stripe;
use crate::http::problem::Problem;
use crate::idempotency::IdempotencyKey as TenantKey;

fn strategy(key: &TenantKey) -> Result<RequestStrategy, Problem> {
    let key = IdempotencyKey::new(key.as_str())
        .map_err(|_| Problem::invalid("the Idempotency-Key is not usable"))?;
    Ok(RequestStrategy::Idempotent(key))
}

fn currency(code: &str) -> Result<stripe_types::Currency, Problem> {
    stripe_types::Currency::from_str(&code.to_ascii_lowercase())
        .map_err(|_| Problem::invalid("Stripe does not know this currency"))
}

fn metadata(tenant: &str, pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut map = HashMap::from([("tiqzy_tenant".to_owned(), tenant.to_owned())]);
    for (name, value) in pairs {
        map.insert((*name).to_owned(), (*value).to_owned());
    }
    map
}

impl Stripe {
    /// An Express account for a resale seller.
    pub async fn create_seller_account(
        &self,
        tenant: &str,
        seller_key: &str,
        email: &str,
        key: &TenantKey,
    ) -> Result<String, Problem> {
        let account = CreateAccount::new()
            .type_(CreateAccountType::Express)
            .email(email.to_owned())
            .metadata(metadata(tenant, &[("seller_key", seller_key)]))
            .customize()
            .request_strategy(strategy(key)?)
            .send(&self.client);
        let account = self.call("create_account", account).await?;
        Ok(account.id.to_string())
    }

    /// A one-time link to Stripe's hosted onboarding of `account`.
    pub async fn create_onboarding_link(
        &self,
        account: &str,
        refresh_url: &str,
        return_url: &str,
        key: &TenantKey,
    ) -> Result<String, Problem> {
        let link =
            CreateAccountLink::new(account.to_owned(), CreateAccountLinkType::AccountOnboarding)
                .refresh_url(refresh_url.to_owned())
                .return_url(return_url.to_owned())
                .customize()
                .request_strategy(strategy(key)?)
                .send(&self.client);
        Ok(self.call("create_account_link", link).await?.url)
    }

    /// Pays a resale seller out of the group's charge.
    pub async fn create_transfer(
        &self,
        tenant: &str,
        transfer: &crate::transfers::CheckedTransfer,
        key: &TenantKey,
    ) -> Result<String, Problem> {
        let request =
            CreateTransfer::new(currency(&transfer.currency)?, transfer.destination.clone())
                .amount(transfer.amount)
                .transfer_group(transfer.transfer_group.clone())
                .metadata(metadata(tenant, &[("ledger_id", &transfer.ledger_id)]))
                .customize()
                .request_strategy(strategy(key)?)
                .send(&self.client);
        Ok(self.call("create_transfer", request).await?.id.to_string())
    }

    /// Takes (part of) a seller's payout back.
    pub async fn reverse_transfer(
        &self,
        tenant: &str,
        transfer_id: &str,
        amount: i64,
        ledger_id: &str,
        key: &TenantKey,
    ) -> Result<String, Problem> {
        let request = CreateIdTransferReversal::new(transfer_id.to_owned())
            .amount(amount)
            .metadata(metadata(tenant, &[("ledger_id", ledger_id)]))
            .customize()
            .request_strategy(strategy(key)?)
            .send(&self.client);
        Ok(self
            .call("create_transfer_reversal", request)
            .await?
            .id
            .to_string())
    }

    /// Refunds a buyer. For a destination charge the tenant's transfer and the platform's fee
    /// are reversed in proportion (`reverse_transfer`, `refund_application_fee`).
    pub async fn refund(
        &self,
        tenant: &str,
        refund: &crate::refunds::CheckedRefund,
        key: &TenantKey,
    ) -> Result<String, Problem> {
        let mut request = CreateRefund::new()
            .payment_intent(refund.payment_intent.clone())
            .amount(refund.amount)
            .metadata(metadata(tenant, &[("ledger_id", &refund.ledger_id)]));
        if refund.destination_charge {
            request = request.reverse_transfer(true).refund_application_fee(true);
        }
        let request = request
            .customize()
            .request_strategy(strategy(key)?)
            .send(&self.client);
        Ok(self.call("create_refund", request).await?.id.to_string())
    }

    /// The Checkout Sessions that took `payment_intent` (Stripe's answer when the service has
    /// not yet seen the session paid).
    pub async fn sessions_of_payment_intent(
        &self,
        payment_intent: &str,
    ) -> Result<Vec<String>, Problem> {
        let request = ListCheckoutSession::new()
            .payment_intent(payment_intent.to_owned())
            .limit(10);
        let list = self
            .call("list_checkout_sessions", request.send(&self.client))
            .await?;
        Ok(list.data.into_iter().map(|s| s.id.to_string()).collect())
    }
}
