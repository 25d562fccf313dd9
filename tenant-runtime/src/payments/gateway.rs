//! The one place that talks to Stripe. Every POST carries an idempotency key built from our
//! own ids, so repeating a request (after a timeout, by another replica, by the sweeper)
//! returns the first answer instead of charging, refunding or transferring twice.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionPaymentIntentData, CreateCheckoutSessionPaymentIntentDataTransferData,
    ExpireCheckoutSession, ProductData, RetrieveCheckoutSession,
};
use stripe_connect::account::{CreateAccount, CreateAccountType};
use stripe_connect::account_link::{CreateAccountLink, CreateAccountLinkType};
use stripe_connect::transfer::CreateTransfer;
use stripe_connect::transfer_reversal::CreateIdTransferReversal;
use stripe_core::refund::CreateRefund;
use stripe_shared::CheckoutSessionPaymentStatus;

use crate::config::StripeConfig;
use crate::domain::{Currency, Money};
use crate::metrics::Metrics;

/// How long one Stripe request may take before we call Stripe unreachable.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a Stripe request did not succeed; the kind is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum StripeFailure {
    #[error("Stripe could not be reached")]
    Unreachable,
    #[error("Stripe refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("Stripe failed to handle the request ({0})")]
    ServerError(u16),
    #[error("Stripe's answer could not be read")]
    UnreadableResponse,
    #[error("payments are not configured for this storefront")]
    Configuration,
}

impl StripeFailure {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Refused { .. } => "refused",
            Self::ServerError(_) => "server_error",
            Self::UnreadableResponse => "unreadable_response",
            Self::Configuration => "configuration",
        }
    }

    /// Worth trying again later with the same idempotency key.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable | Self::ServerError(_) | Self::UnreadableResponse
        )
    }
}

impl From<StripeError> for StripeFailure {
    fn from(e: StripeError) -> Self {
        match e {
            StripeError::Stripe(_, status) if status >= 500 => Self::ServerError(status),
            StripeError::Stripe(errors, status) => Self::Refused {
                status,
                message: errors.message.unwrap_or_default(),
            },
            StripeError::JSONDeserialize(_) => Self::UnreadableResponse,
            StripeError::ClientError(_) | StripeError::Timeout => Self::Unreachable,
            StripeError::ConfigError(_) => Self::Configuration,
        }
    }
}

/// What a primary sale or resale asks Stripe's hosted checkout to collect.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub order_id: uuid::Uuid,
    pub items: Vec<crate::store::payments::CheckoutItem>,
    pub buyer_email: String,
    pub success_url: String,
    pub cancel_url: String,
    pub expires_at: i64,
    pub split: CheckoutSplit,
}

/// Where the money of a checkout goes.
#[derive(Debug, Clone)]
pub enum CheckoutSplit {
    /// Primary sale: a destination charge to the tenant's account, minus the platform's fee.
    Destination {
        account: String,
        application_fee: Money,
    },
    /// Resale: the platform is charged; the seller is paid by a transfer in this group.
    Platform { transfer_group: String },
}

#[derive(Debug, Clone)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

/// A checkout session as Stripe reports it when we read it back.
#[derive(Debug, Clone)]
pub struct SessionStatus {
    pub paid: bool,
    pub order_id: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub payment_intent: Option<String>,
}

#[derive(Debug)]
pub struct Gateway {
    client: Option<Client>,
    tenant: String,
    metrics: Arc<Metrics>,
}

impl Gateway {
    pub fn new(config: &StripeConfig, tenant: &str, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let client = match &config.secret_key {
            None => None,
            Some(key) => Some(
                ClientBuilder::new(key.expose_secret())
                    .url(format!("{}/", config.api_base))
                    .timeout(TIMEOUT)
                    .build()
                    .map_err(|_| {
                        anyhow::anyhow!("STRIPE_API_BASE or STRIPE_SECRET_KEY is unusable")
                    })?,
            ),
        };
        Ok(Self {
            client,
            tenant: tenant.to_owned(),
            metrics,
        })
    }

    pub fn enabled(&self) -> bool {
        self.client.is_some()
    }

    /// `tiqzy:<tenant>:<purpose>:<our id>`: the same operation on the same object always
    /// carries the same key.
    pub fn idempotency_key(&self, purpose: &str, id: impl std::fmt::Display) -> String {
        format!("tiqzy:{}:{purpose}:{id}", self.tenant)
    }

    fn strategy(
        &self,
        purpose: &str,
        id: impl std::fmt::Display,
    ) -> Result<RequestStrategy, StripeFailure> {
        let key = IdempotencyKey::new(self.idempotency_key(purpose, id))
            .map_err(|_| StripeFailure::Configuration)?;
        Ok(RequestStrategy::Idempotent(key))
    }

    fn client(&self, operation: &str) -> Result<&Client, StripeFailure> {
        self.client
            .as_ref()
            .ok_or_else(|| self.failed(operation, StripeFailure::Configuration))
    }

    fn failed(&self, operation: &str, failure: StripeFailure) -> StripeFailure {
        self.metrics.stripe_error(operation, failure.kind());
        tracing::warn!(operation, kind = failure.kind(), error = %failure, "Stripe request failed");
        failure
    }

    fn outcome<T>(
        &self,
        operation: &str,
        result: Result<T, StripeError>,
    ) -> Result<T, StripeFailure> {
        result.map_err(|e| self.failed(operation, e.into()))
    }

    pub async fn create_checkout_session(
        &self,
        req: &CheckoutRequest,
    ) -> Result<CheckoutSession, StripeFailure> {
        const OP: &str = "create_checkout_session";
        let client = self.client(OP)?;
        let line_items = req
            .items
            .iter()
            .map(|line| {
                let mut price = CreateCheckoutSessionLineItemsPriceData::new(stripe_currency(
                    line.unit_price.currency,
                ));
                price.unit_amount = Some(line.unit_price.amount_minor);
                price.product_data = Some(ProductData::new(line.description.clone()));
                let mut item = CreateCheckoutSessionLineItems::new();
                item.price_data = Some(price);
                item.quantity = Some(u64::from(line.quantity));
                item
            })
            .collect::<Vec<_>>();
        let order_id = req.order_id.to_string();
        let metadata = HashMap::from([("order_id".to_owned(), order_id.clone())]);
        let mut payment = CreateCheckoutSessionPaymentIntentData::new();
        payment.metadata = Some(metadata.clone());
        match &req.split {
            CheckoutSplit::Destination {
                account,
                application_fee,
            } => {
                payment.application_fee_amount = Some(application_fee.amount_minor);
                payment.transfer_data = Some(
                    CreateCheckoutSessionPaymentIntentDataTransferData::new(account.clone()),
                );
            }
            CheckoutSplit::Platform { transfer_group } => {
                payment.transfer_group = Some(transfer_group.clone());
            }
        }
        let session = CreateCheckoutSession::new()
            .mode(stripe_shared::CheckoutSessionMode::Payment)
            .line_items(line_items)
            .client_reference_id(order_id.clone())
            .customer_email(req.buyer_email.clone())
            .metadata(metadata)
            .payment_intent_data(payment)
            .success_url(req.success_url.clone())
            .cancel_url(req.cancel_url.clone())
            .expires_at(req.expires_at)
            .customize()
            .request_strategy(self.strategy("checkout", req.order_id)?)
            .send(client)
            .await;
        let session = self.outcome(OP, session)?;
        let url = session
            .url
            .ok_or_else(|| self.failed(OP, StripeFailure::UnreadableResponse))?;
        Ok(CheckoutSession {
            id: session.id.to_string(),
            url,
        })
    }

    /// Reads a session back: how a buyer returning from checkout is confirmed without
    /// trusting the redirect.
    pub async fn checkout_session_status(&self, id: &str) -> Result<SessionStatus, StripeFailure> {
        const OP: &str = "retrieve_checkout_session";
        let client = self.client(OP)?;
        let session = RetrieveCheckoutSession::new(id).send(client).await;
        let session = self.outcome(OP, session)?;
        Ok(SessionStatus {
            paid: session.payment_status == CheckoutSessionPaymentStatus::Paid,
            order_id: session.client_reference_id,
            amount_total: session.amount_total,
            currency: session.currency.map(|c| c.to_string().to_ascii_uppercase()),
            payment_intent: session.payment_intent.map(|p| p.id().to_string()),
        })
    }

    /// Closes a session whose hold ran out, so the buyer can no longer pay for it.
    pub async fn expire_checkout_session(
        &self,
        order_id: uuid::Uuid,
        id: &str,
    ) -> Result<(), StripeFailure> {
        const OP: &str = "expire_checkout_session";
        let client = self.client(OP)?;
        let result = ExpireCheckoutSession::new(id)
            .customize()
            .request_strategy(self.strategy("expire-checkout", order_id)?)
            .send(client)
            .await;
        self.outcome(OP, result).map(|_| ())
    }

    /// A connected account for a resale seller, created once per seller.
    pub async fn create_seller_account(
        &self,
        seller_key: &str,
        email: &str,
    ) -> Result<String, StripeFailure> {
        const OP: &str = "create_account";
        let client = self.client(OP)?;
        let account = CreateAccount::new()
            .type_(CreateAccountType::Express)
            .email(email.to_owned())
            .customize()
            .request_strategy(self.strategy("seller-account", seller_key)?)
            .send(client)
            .await;
        Ok(self.outcome(OP, account)?.id.to_string())
    }

    /// A one-time link to Stripe's hosted onboarding. `link_number` counts the seller's links,
    /// so a retried request returns the same link and a new request a new one.
    pub async fn create_onboarding_link(
        &self,
        account: &str,
        link_number: i32,
        refresh_url: &str,
        return_url: &str,
    ) -> Result<String, StripeFailure> {
        const OP: &str = "create_account_link";
        let client = self.client(OP)?;
        let link =
            CreateAccountLink::new(account.to_owned(), CreateAccountLinkType::AccountOnboarding)
                .refresh_url(refresh_url.to_owned())
                .return_url(return_url.to_owned())
                .customize()
                .request_strategy(
                    self.strategy("account-link", format!("{account}:{link_number}"))?,
                )
                .send(client)
                .await;
        Ok(self.outcome(OP, link)?.url)
    }

    /// Pays a resale seller. `ledger_id` is the payout's ledger row.
    pub async fn transfer(
        &self,
        ledger_id: uuid::Uuid,
        amount: Money,
        destination: &str,
        transfer_group: &str,
    ) -> Result<String, StripeFailure> {
        const OP: &str = "create_transfer";
        let client = self.client(OP)?;
        let transfer =
            CreateTransfer::new(stripe_currency(amount.currency), destination.to_owned())
                .amount(amount.amount_minor)
                .transfer_group(transfer_group.to_owned())
                .metadata(HashMap::from([(
                    "ledger_id".to_owned(),
                    ledger_id.to_string(),
                )]))
                .customize()
                .request_strategy(self.strategy("transfer", ledger_id)?)
                .send(client)
                .await;
        Ok(self.outcome(OP, transfer)?.id.to_string())
    }

    /// Takes a seller's payout back, e.g. when the event is cancelled.
    pub async fn reverse_transfer(
        &self,
        ledger_id: uuid::Uuid,
        transfer_id: &str,
        amount: Money,
    ) -> Result<String, StripeFailure> {
        const OP: &str = "create_transfer_reversal";
        let client = self.client(OP)?;
        let reversal = CreateIdTransferReversal::new(transfer_id.to_owned())
            .amount(amount.amount_minor)
            .customize()
            .request_strategy(self.strategy("transfer-reversal", ledger_id)?)
            .send(client)
            .await;
        Ok(self.outcome(OP, reversal)?.id.to_string())
    }

    /// Refunds a buyer. For a destination charge the tenant's transfer and the platform's
    /// fee are reversed in proportion (`reverse_transfer`, `refund_application_fee`).
    pub async fn refund(
        &self,
        ledger_id: uuid::Uuid,
        payment_intent: &str,
        amount: Money,
        destination_charge: bool,
    ) -> Result<String, StripeFailure> {
        const OP: &str = "create_refund";
        let client = self.client(OP)?;
        let mut refund = CreateRefund::new()
            .payment_intent(payment_intent.to_owned())
            .amount(amount.amount_minor)
            .metadata(HashMap::from([(
                "ledger_id".to_owned(),
                ledger_id.to_string(),
            )]));
        if destination_charge {
            refund = refund.reverse_transfer(true).refund_application_fee(true);
        }
        let refund = refund
            .customize()
            .request_strategy(self.strategy("refund", ledger_id)?)
            .send(client)
            .await;
        Ok(self.outcome(OP, refund)?.id.to_string())
    }
}

fn stripe_currency(currency: Currency) -> stripe_types::Currency {
    // Stripe names currencies in lower case; unknown codes pass through as they are.
    stripe_types::Currency::from_str(&currency.as_str().to_ascii_lowercase())
        .unwrap_or_else(|e| match e {})
}
