//! stripe-mock: Stripe's own API simulator, validating requests against Stripe's OpenAPI
//! description and answering with fixtures.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::components::Binaries;
use crate::ports::{accepting_on, free_port};
use crate::process::Service;

#[derive(Debug)]
pub struct StripeMock {
    /// `http://<address>:<port>`: give it to async-stripe's `ClientBuilder::url`.
    pub url: String,
    service: Service,
}

impl StripeMock {
    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        self.service.log_path()
    }

    /// Starts stripe-mock on `address` (loopback, or a real node's bridge gateway so its
    /// pods reach it too).
    pub async fn start(bins: &Binaries, run: &Path, address: &str) -> Result<Self> {
        let port = free_port()?;
        let mut service = Service::spawn(
            "stripe-mock",
            &bins.stripe_mock,
            // Both listeners on free ports: left alone, HTTPS takes the fixed 12112 and two
            // platforms on one machine collide.
            [
                format!("-http-addr={address}:{port}"),
                format!("-https-addr={address}:{}", free_port()?),
            ],
            &run.join("logs"),
            None,
        )?;
        service
            .wait_ready(Duration::from_secs(30), || accepting_on(address, port))
            .await?;
        Ok(Self {
            url: format!("http://{address}:{port}"),
            service,
        })
    }
}

impl StripeMock {
    /// A Stripe object as stripe-mock returns it (`path` under `/v1/`), to be edited into
    /// what Stripe would send.
    pub async fn fixture(&self, path: &str) -> Result<serde_json::Value> {
        let response = reqwest::Client::new()
            .get(format!("{}/v1/{path}", self.url))
            .basic_auth(crate::STRIPE_TEST_KEY, Some(""))
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json().await?)
    }

    /// The Checkout Session of `checkout.session.completed` once the buyer of `order` (the
    /// runtime's order, as `GET /api/orders/{token}` shows it) has paid.
    pub async fn paid_session(&self, order: &serde_json::Value) -> Result<serde_json::Value> {
        let id = order["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("an order without id: {order}"))?;
        let mut session = self
            .fixture(&format!(
                "checkout/sessions/cs_test_{}",
                id.replace('-', "")
            ))
            .await?;
        session["client_reference_id"] = id.into();
        session["metadata"] = serde_json::json!({ "order_id": id });
        session["amount_total"] = order["total"]["amount_minor"].clone();
        session["currency"] = order["total"]["currency"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .into();
        session["payment_intent"] = format!("pi_{}", id.replace('-', "")).into();
        session["payment_status"] = "paid".into();
        session["status"] = "complete".into();
        Ok(session)
    }

    /// Stripe's signed `checkout.session.completed` for the order at `order_url` (the
    /// storefront's `/api/orders/{token}`, read with `client`) of tenant `tenant`, as the
    /// payments service receives it: (payload, signature).
    pub async fn paid_event(
        &self,
        client: &reqwest::Client,
        order_url: &str,
        tenant: &str,
    ) -> Result<(String, String)> {
        let order: serde_json::Value = client
            .get(order_url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut session = self.paid_session(&order["order"]).await?;
        session["metadata"]["tiqzy_tenant"] = tenant.into();
        Ok(signed_event(
            "checkout.session.completed",
            session,
            crate::STRIPE_WEBHOOK_SECRET,
        ))
    }
}

/// The state of the order at `order_url` (`/api/orders/{token}`) once it is `wanted`, or
/// whatever it is when `deadline` passes.
pub async fn order_state(
    client: &reqwest::Client,
    order_url: &str,
    wanted: &str,
    deadline: std::time::Instant,
) -> Result<serde_json::Value> {
    loop {
        let order: serde_json::Value = client.get(order_url).send().await?.json().await?;
        let state = order["order"]["state"].clone();
        if state == wanted || std::time::Instant::now() > deadline {
            return Ok(state);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An event of `kind` around `object` as Stripe delivers it, and its `Stripe-Signature`
/// header made with `secret` by async-stripe's own helper: (payload, signature).
pub fn signed_event(kind: &str, object: serde_json::Value, secret: &str) -> (String, String) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SENT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let id = format!(
        "evt_e2e{}x{}x{}",
        now.as_nanos(),
        std::process::id(),
        SENT.fetch_add(1, Ordering::Relaxed)
    );
    let payload = serde_json::json!({
        "id": id, "object": "event", "api_version": "2025-01-27.acacia",
        "created": now.as_secs(), "data": { "object": object }, "livemode": false,
        "pending_webhooks": 1, "request": { "id": null, "idempotency_key": null },
        "type": kind,
    })
    .to_string();
    let signature = stripe_webhook::Webhook::generate_test_header(&payload, secret, None);
    (payload, signature)
}
