//! The service's Stripe client: the only place the platform's key is used. Requests are
//! built from checked values only ([`crate::checkout::CheckedSession`], ...). Every call
//! goes through [`Stripe::call`]: timed for the metrics, held back while Stripe rate-limits
//! the platform ([`crate::backoff`]), its failure turned into the problem the storefront sees.

mod connect;

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionPaymentIntentData, CreateCheckoutSessionPaymentIntentDataTransferData,
    ExpireCheckoutSession, ProductData, RetrieveCheckoutSession,
};
use stripe_shared::CheckoutSessionPaymentStatus;

use crate::backoff::Backoff;
use crate::checkout::{CheckedSession, SessionStatus, Split};
use crate::http::problem::Problem;
use crate::metrics::Metrics;

/// How long one Stripe request may take before Stripe counts as unreachable.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Stripe {
    client: Client,
    backoff: Arc<Backoff>,
    metrics: Arc<Metrics>,
}

/// A session Stripe created.
#[derive(Debug, Clone)]
pub struct CreatedSession {
    pub id: String,
    pub url: String,
}

impl Stripe {
    pub fn new(
        secret_key: &SecretString,
        api_base: &str,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let client = ClientBuilder::new(secret_key.expose_secret())
            .url(format!("{}/", api_base.trim_end_matches('/')))
            .timeout(TIMEOUT)
            .build()
            // The builder's error may quote the key: say only which setting is wrong.
            .map_err(|_| anyhow::anyhow!("STRIPE_API_BASE or STRIPE_SECRET_KEY is unusable"))?;
        Ok(Self {
            client,
            backoff: Arc::default(),
            metrics,
        })
    }

    /// Sends one request to Stripe, unless Stripe asked the platform to slow down.
    async fn call<T>(
        &self,
        call: &'static str,
        request: impl Future<Output = Result<T, StripeError>>,
    ) -> Result<T, Problem> {
        if let Err(wait) = self.backoff.check() {
            return Err(slow_down(wait));
        }
        let started = Instant::now();
        let result = request.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(StripeError::Stripe(_, 429)) => "throttled",
            Err(StripeError::Stripe(_, status)) if *status < 500 => "refused",
            Err(_) => "unavailable",
        };
        self.metrics.stripe_call(call, outcome, started.elapsed());
        match result {
            Err(StripeError::Stripe(_, 429)) => {
                let wait = self.backoff.throttled();
                tracing::warn!(call, wait, "Stripe rate-limits the platform; backing off");
                Err(slow_down(wait))
            }
            Err(e) => {
                if !matches!(outcome, "unavailable") {
                    self.backoff.succeeded();
                }
                Err(failure(e))
            }
            Ok(answer) => {
                self.backoff.succeeded();
                Ok(answer)
            }
        }
    }

    /// A destination charge to the session's (already checked) connected account.
    pub async fn create_session(&self, s: &CheckedSession) -> Result<CreatedSession, Problem> {
        let currency = stripe_types::Currency::from_str(&s.currency.code().to_ascii_lowercase())
            .map_err(|_| Problem::invalid("Stripe does not know this currency"))?;
        let line_items = s
            .line_items
            .iter()
            .map(|line| {
                let mut price = CreateCheckoutSessionLineItemsPriceData::new(currency.clone());
                price.unit_amount = Some(line.unit_amount);
                price.product_data = Some(ProductData::new(line.description.clone()));
                let mut item = CreateCheckoutSessionLineItems::new();
                item.price_data = Some(price);
                item.quantity = Some(line.quantity);
                item
            })
            .collect::<Vec<_>>();
        let mut metadata = s.metadata.clone();
        metadata.insert("tiqzy_tenant".to_owned(), s.tenant.clone());
        let mut payment = CreateCheckoutSessionPaymentIntentData::new();
        match &s.split {
            Split::Destination {
                application_fee_amount,
            } => {
                payment.application_fee_amount = Some(*application_fee_amount);
                payment.transfer_data =
                    Some(CreateCheckoutSessionPaymentIntentDataTransferData::new(
                        s.connected_account.clone(),
                    ));
            }
            Split::Platform { transfer_group } => {
                payment.transfer_group = Some(transfer_group.clone());
            }
        }
        // On the payment intent too: its events are placed by this tenant name.
        payment.metadata = Some(metadata.clone());
        let mut create = CreateCheckoutSession::new()
            .mode(stripe_shared::CheckoutSessionMode::Payment)
            .line_items(line_items)
            .client_reference_id(s.client_reference_id.clone())
            .metadata(metadata)
            .payment_intent_data(payment)
            .success_url(s.success_url.clone())
            .cancel_url(s.cancel_url.clone())
            .expires_at(s.expires_at);
        if let Some(email) = &s.customer_email {
            create = create.customer_email(email.clone());
        }
        let key = IdempotencyKey::new(s.idempotency_key.clone())
            .map_err(|_| Problem::invalid("the Idempotency-Key is not usable"))?;
        let session = self
            .call(
                "create_checkout_session",
                create
                    .customize()
                    .request_strategy(RequestStrategy::Idempotent(key))
                    .send(&self.client),
            )
            .await?;
        let url = session
            .url
            .ok_or_else(|| Problem::internal(&"Stripe returned a session without a URL"))?;
        Ok(CreatedSession {
            id: session.id.to_string(),
            url,
        })
    }

    pub async fn session_status(&self, id: &str) -> Result<SessionStatus, Problem> {
        let session = self
            .call(
                "retrieve_checkout_session",
                RetrieveCheckoutSession::new(id).send(&self.client),
            )
            .await?;
        Ok(SessionStatus {
            id: session.id.to_string(),
            paid: session.payment_status == CheckoutSessionPaymentStatus::Paid,
            client_reference_id: session.client_reference_id,
            amount_total: session.amount_total,
            currency: session.currency.map(|c| c.to_string().to_ascii_uppercase()),
            payment_intent: session.payment_intent.map(|p| p.id().to_string()),
            metadata: session.metadata.unwrap_or_default(),
        })
    }
}

impl Stripe {
    /// Closes a session so the buyer can no longer pay (the storefront's hold ran out).
    pub async fn expire_session(&self, id: &str, idempotency_key: &str) -> Result<(), Problem> {
        let key = IdempotencyKey::new(idempotency_key)
            .map_err(|_| Problem::invalid("the Idempotency-Key is not usable"))?;
        self.call(
            "expire_checkout_session",
            ExpireCheckoutSession::new(id)
                .customize()
                .request_strategy(RequestStrategy::Idempotent(key))
                .send(&self.client),
        )
        .await?;
        Ok(())
    }
}

/// Whether Stripe refused the request itself (so nothing was made under its key).
pub fn refused(problem: &Problem) -> bool {
    problem.kind == "payment-provider-refused"
}

/// What the storefront hears while the service waits out Stripe's rate limit.
fn slow_down(wait: u64) -> Problem {
    Problem::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "payment-provider-unavailable",
        "Stripe is rate-limiting the platform; retry with the same Idempotency-Key later",
    )
    .retry_after(wait)
}

/// What the storefront hears when Stripe fails. Stripe's own message is passed on for a
/// refusal (it names the parameter, never the key); other failures are only named.
fn failure(e: StripeError) -> Problem {
    use axum::http::StatusCode;
    match e {
        // Stripe refuses the platform's own key: nothing the storefront can fix, and Stripe's
        // message quotes part of the key, so it is neither sent nor logged.
        StripeError::Stripe(_, status @ (401 | 403)) => {
            tracing::error!(status, "Stripe refused the platform's key");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "payment-provider-unavailable",
                "the payments service cannot use Stripe right now",
            )
        }
        StripeError::Stripe(err, status) if status < 500 => {
            let message = err.message.unwrap_or_default();
            tracing::info!(status, %message, "Stripe refused a request");
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "payment-provider-refused",
                format!("Stripe refused the request ({status}): {message}"),
            )
        }
        other => {
            tracing::warn!(error = %other, "Stripe request failed");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "payment-provider-unavailable",
                "Stripe could not be reached or failed; retry with the same Idempotency-Key",
            )
        }
    }
}

/// Metadata is what Stripe echoes back in webhooks; kept as given.
pub type Metadata = HashMap<String, String>;
