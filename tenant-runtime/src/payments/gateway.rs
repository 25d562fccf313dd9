//! The one place that asks for money to move: an HTTP client of `tiqzy-payments`, which holds
//! the platform's Stripe key and acts for this tenant only (docs/payments-protocol.md). Every
//! POST carries an idempotency key built from our own ids, which the service passes to
//! Stripe, so repeating a request (after a timeout, by another replica, by the sweeper)
//! returns the first answer instead of charging, refunding or transferring twice.

mod failure;
mod token;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::Instrument;

pub use self::failure::StripeFailure;
use self::failure::{Problem, refusal};
use self::token::TokenFile;
use crate::config::PaymentsConfig;
use crate::domain::Money;
use crate::metrics::Metrics;

/// How long one request may take before we call the payments service unreachable. The
/// service itself gives Stripe 10 s.
const TIMEOUT: Duration = Duration::from_secs(15);

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

#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

/// A checkout session as Stripe reports it when we read it back.
#[derive(Debug, Clone, Deserialize)]
pub struct SessionStatus {
    pub paid: bool,
    #[serde(rename = "client_reference_id")]
    pub order_id: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub payment_intent: Option<String>,
}

#[derive(Debug)]
pub struct Gateway {
    service: Option<Service>,
    tenant: String,
    metrics: Arc<Metrics>,
}

/// Where `tiqzy-payments` answers, and how we prove who we are.
#[derive(Debug)]
struct Service {
    base: reqwest::Url,
    http: reqwest::Client,
    token: TokenFile,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

impl Gateway {
    pub fn new(
        config: &PaymentsConfig,
        tenant: &str,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let service = match &config.service_url {
            None => None,
            Some(url) => Some(Service {
                // A trailing slash, so joined paths land under the service's own path.
                base: reqwest::Url::parse(&format!("{url}/"))
                    .map_err(|_| anyhow::anyhow!("TIQZY_PAYMENTS_URL is not a URL"))?,
                http: reqwest::Client::builder()
                    .timeout(TIMEOUT)
                    // The service never redirects; a redirect would carry our token elsewhere.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()?,
                token: TokenFile::new(config.token_file.clone()),
            }),
        };
        Ok(Self {
            service,
            tenant: tenant.to_owned(),
            metrics,
        })
    }

    pub fn enabled(&self) -> bool {
        self.service.is_some()
    }

    /// `tiqzy:<tenant>:<purpose>:<our id>`: the same operation on the same object always
    /// carries the same key.
    pub fn idempotency_key(&self, purpose: &str, id: impl std::fmt::Display) -> String {
        format!("tiqzy:{}:{purpose}:{id}", self.tenant)
    }

    fn failed(&self, operation: &str, failure: StripeFailure) -> StripeFailure {
        self.metrics.stripe_error(operation, failure.kind());
        tracing::warn!(operation, kind = failure.kind(), error = %failure, "payments request failed");
        failure
    }

    /// One request to the service: `path` is made of segments (escaped here), `key` the
    /// idempotency key of a POST. A 401 is answered by reading the token file again and
    /// trying once more: the kubelet may have rotated the token within the minute we keep it.
    async fn call<T: DeserializeOwned>(
        &self,
        operation: &str,
        method: Method,
        path: &[&str],
        key: Option<String>,
        body: Option<&Value>,
    ) -> Result<Option<T>, StripeFailure> {
        let span = tracing::info_span!(
            "payments",
            otel.name = format!("payments {operation}"),
            otel.kind = "client",
            operation,
        );
        let result = self
            .exchange(method, path, key, body)
            .instrument(span)
            .await;
        result.map_err(|failure| self.failed(operation, failure))
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        key: Option<String>,
        body: Option<&Value>,
    ) -> Result<Option<T>, StripeFailure> {
        let service = self.service.as_ref().ok_or(StripeFailure::Configuration)?;
        let mut url = service.base.clone();
        url.path_segments_mut()
            .map_err(|_| StripeFailure::Configuration)?
            .pop_if_empty()
            .extend(path);
        let mut refreshed = false;
        loop {
            let token = service
                .token
                .current()
                .await
                .map_err(|e| StripeFailure::NotAdmitted(e.to_string()))?;
            let mut request = service
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret());
            if let Some(key) = &key {
                request = request.header("Idempotency-Key", key);
            }
            let mut trace_context = axum::http::HeaderMap::new();
            tiqzy_telemetry::otel::inject_into(&tracing::Span::current(), &mut trace_context);
            request = request.headers(trace_context);
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = request
                .send()
                .await
                .map_err(|_| StripeFailure::Unreachable)?;
            let status = answer.status();
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                service.token.forget().await;
                refreshed = true;
                continue;
            }
            if status == StatusCode::NO_CONTENT {
                return Ok(None);
            }
            if status.is_success() {
                return answer
                    .json()
                    .await
                    .map(Some)
                    .map_err(|_| StripeFailure::UnreadableResponse);
            }
            // The body of a refusal is only read for its type and detail.
            let problem = answer.json::<Problem>().await.unwrap_or(Problem {
                kind: String::new(),
                detail: String::new(),
            });
            return Err(refusal(status, problem));
        }
    }

    /// A POST that must answer with a body.
    async fn post<T: DeserializeOwned>(
        &self,
        operation: &str,
        path: &[&str],
        key: String,
        body: &Value,
    ) -> Result<T, StripeFailure> {
        self.call(operation, Method::POST, path, Some(key), Some(body))
            .await?
            .ok_or_else(|| self.failed(operation, StripeFailure::UnreadableResponse))
    }

    pub async fn create_checkout_session(
        &self,
        req: &CheckoutRequest,
    ) -> Result<CheckoutSession, StripeFailure> {
        let line_items: Vec<Value> = req
            .items
            .iter()
            .map(|line| {
                json!({
                    "description": line.description,
                    "unit_amount": line.unit_price.amount_minor,
                    "quantity": line.quantity,
                })
            })
            .collect();
        let order_id = req.order_id.to_string();
        let currency = req.items.first().map(|l| l.unit_price.currency.as_str());
        let mut body = json!({
            "currency": currency,
            "line_items": line_items,
            "client_reference_id": order_id,
            "customer_email": req.buyer_email,
            "success_url": req.success_url,
            "cancel_url": req.cancel_url,
            "expires_at": req.expires_at,
            // Also on the payment intent: its events find the order by it.
            "metadata": { "order_id": order_id },
        });
        match &req.split {
            CheckoutSplit::Destination {
                account,
                application_fee,
            } => {
                body["destination_account"] = json!(account);
                body["application_fee_amount"] = json!(application_fee.amount_minor);
            }
            CheckoutSplit::Platform { transfer_group } => {
                body["transfer_group"] = json!(transfer_group);
            }
        }
        let key = self.idempotency_key("checkout", req.order_id);
        self.post(
            "create_checkout_session",
            &["v1", "checkout-sessions"],
            key,
            &body,
        )
        .await
    }

    /// Reads a session back: how a buyer returning from checkout is confirmed without
    /// trusting the redirect.
    pub async fn checkout_session_status(&self, id: &str) -> Result<SessionStatus, StripeFailure> {
        const OP: &str = "retrieve_checkout_session";
        self.call(
            OP,
            Method::GET,
            &["v1", "checkout-sessions", id],
            None,
            None,
        )
        .await?
        .ok_or_else(|| self.failed(OP, StripeFailure::UnreadableResponse))
    }

    /// Closes a session whose hold ran out, so the buyer can no longer pay for it.
    pub async fn expire_checkout_session(
        &self,
        order_id: uuid::Uuid,
        id: &str,
    ) -> Result<(), StripeFailure> {
        let key = self.idempotency_key("expire-checkout", order_id);
        self.call::<Value>(
            "expire_checkout_session",
            Method::POST,
            &["v1", "checkout-sessions", id, "expire"],
            Some(key),
            None,
        )
        .await
        .map(|_| ())
    }

    /// A connected account for a resale seller, created once per seller.
    pub async fn create_seller_account(
        &self,
        seller_key: &str,
        email: &str,
    ) -> Result<String, StripeFailure> {
        #[derive(Deserialize)]
        struct Account {
            account: String,
        }
        let key = self.idempotency_key("seller-account", seller_key);
        let body = json!({ "seller_key": seller_key, "email": email });
        let created: Account = self
            .post("create_account", &["v1", "seller-accounts"], key, &body)
            .await?;
        Ok(created.account)
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
        #[derive(Deserialize)]
        struct Link {
            url: String,
        }
        let key = self.idempotency_key("account-link", format!("{account}:{link_number}"));
        let body = json!({
            "link_number": link_number,
            "refresh_url": refresh_url,
            "return_url": return_url,
        });
        let link: Link = self
            .post(
                "create_account_link",
                &["v1", "seller-accounts", account, "onboarding-links"],
                key,
                &body,
            )
            .await?;
        Ok(link.url)
    }

    /// Pays a resale seller. `ledger_id` is the payout's ledger row.
    pub async fn transfer(
        &self,
        ledger_id: uuid::Uuid,
        amount: Money,
        destination: &str,
        transfer_group: &str,
    ) -> Result<String, StripeFailure> {
        let key = self.idempotency_key("transfer", ledger_id);
        let body = json!({
            "ledger_id": ledger_id,
            "amount": amount.amount_minor,
            "currency": amount.currency.as_str(),
            "destination": destination,
            "transfer_group": transfer_group,
        });
        let created: Created = self
            .post("create_transfer", &["v1", "transfers"], key, &body)
            .await?;
        Ok(created.id)
    }

    /// Takes a seller's payout back, e.g. when the event is cancelled.
    pub async fn reverse_transfer(
        &self,
        ledger_id: uuid::Uuid,
        transfer_id: &str,
        amount: Money,
    ) -> Result<String, StripeFailure> {
        let key = self.idempotency_key("transfer-reversal", ledger_id);
        let body = json!({ "ledger_id": ledger_id, "amount": amount.amount_minor });
        let created: Created = self
            .post(
                "create_transfer_reversal",
                &["v1", "transfers", transfer_id, "reversals"],
                key,
                &body,
            )
            .await?;
        Ok(created.id)
    }

    /// Refunds a buyer. For a destination charge the tenant's transfer and the platform's
    /// fee are reversed in proportion.
    pub async fn refund(
        &self,
        ledger_id: uuid::Uuid,
        payment_intent: &str,
        amount: Money,
        destination_charge: bool,
    ) -> Result<String, StripeFailure> {
        let key = self.idempotency_key("refund", ledger_id);
        let body = json!({
            "ledger_id": ledger_id,
            "payment_intent": payment_intent,
            "amount": amount.amount_minor,
            "destination_charge": destination_charge,
        });
        let created: Created = self
            .post("create_refund", &["v1", "refunds"], key, &body)
            .await?;
        Ok(created.id)
    }
}
