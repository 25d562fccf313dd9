//! Stripe's side and the storefronts' side of the webhook tests: events signed as Stripe
//! signs them, posted to the real service, and a small HTTP server playing each tenant's
//! storefront that records what it received and answers as told.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use tiqzy_e2e::payments::{DELIVERY_KEY, now, stripe_signature};
use tiqzy_payments::Config;

use super::{SECRET_KEY, serve};

pub const STRIPE_SECRET: &str = "whsec_stripeCurrent";
pub const STRIPE_OLD_SECRET: &str = "whsec_stripeRotatedOut";

/// A Tenant with its connected account, as the operator leaves it.
pub struct Shop {
    pub tenant: String,
    pub account: String,
}

pub async fn shop(admin: &kube::Client) -> Shop {
    let tenant = format!("hook-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let account = format!("acct_1{}", tenant.replace('-', ""));
    let spec = json!({ "displayName": "Webhook test", "currency": "EUR",
                       "payments": { "connectedAccountId": account } });
    tiqzy_e2e::payments::create_tenant(admin, &tenant, spec).await;
    Shop { tenant, account }
}

/// One request the storefront received.
#[derive(Debug, Clone)]
pub struct Received {
    pub tenant: String,
    pub event_id: String,
    pub body: Bytes,
    pub signature: String,
    /// Whether the storefront answered 2xx.
    pub acknowledged: bool,
}

/// Every tenant's storefront: `POST /{tenant}/webhooks/stripe`, answering 503 while down
/// (as a gateway in front of a storefront that is not there), 500 to the events it fails on
/// and 422 with a problem to the events it rejects.
#[derive(Clone)]
pub struct Storefronts {
    pub url_template: String,
    pub up: Arc<AtomicBool>,
    pub failing: Arc<Mutex<HashSet<String>>>,
    pub rejected: Arc<Mutex<HashSet<String>>>,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Storefronts {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let storefronts = Self {
            url_template: format!("http://{address}/{{tenant}}/webhooks/stripe"),
            up: Arc::new(AtomicBool::new(true)),
            failing: Arc::default(),
            rejected: Arc::default(),
            received: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/{tenant}/webhooks/stripe", axum::routing::post(receive))
            .with_state(storefronts.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        storefronts
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// How often `event_id` reached its storefront.
    pub fn attempts(&self, event_id: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.event_id == event_id)
            .count()
    }

    /// The events `tenant`'s storefront acknowledged, in the order it received them.
    pub fn acknowledged(&self, tenant: &str) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|r| r.tenant == tenant && r.acknowledged)
            .map(|r| r.event_id)
            .collect()
    }

    pub async fn wait_for(&self, tenant: &str, event_id: &str) {
        wait_until(&format!("{event_id} acknowledged by {tenant}"), || {
            self.acknowledged(tenant).iter().any(|id| id == event_id)
        })
        .await;
    }
}

async fn receive(
    State(storefronts): State<Storefronts>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
    let event_id = event["id"].as_str().unwrap_or_default().to_owned();
    let up = storefronts.up.load(Ordering::SeqCst);
    let fail = storefronts
        .failing
        .lock()
        .expect("lock")
        .contains(&event_id);
    let reject = storefronts
        .rejected
        .lock()
        .expect("lock")
        .contains(&event_id);
    let acknowledged = up && !fail && !reject;
    storefronts.received.lock().expect("lock").push(Received {
        tenant,
        event_id,
        body,
        signature: headers
            .get("stripe-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        acknowledged,
    });
    if !up {
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    } else if fail {
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    } else if reject {
        let problem = json!({ "type": "invalid-request", "title": "Invalid request", "status": 422,
            "detail": "the payment (999 EUR) does not match the order's total" });
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            [("content-type", "application/problem+json")],
            problem.to_string(),
        )
            .into_response()
    } else {
        StatusCode::OK.into_response()
    }
}

pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting: {what}");
}

/// The service on port 0, as its own ServiceAccount; `vars` override the defaults.
pub async fn start_service(
    database: &str,
    storefronts: &Storefronts,
    vars: &[(&str, &str)],
) -> String {
    let mut all: HashMap<String, String> = [
        ("DATABASE_URL", database),
        ("STRIPE_SECRET_KEY", SECRET_KEY),
        ("STRIPE_API_BASE", &tiqzy_e2e::Harness::shared().stripe.url),
        ("TIQZY_PAYMENTS_LISTEN_ADDR", "127.0.0.1:0"),
        (
            "STRIPE_WEBHOOK_SECRETS",
            &format!("{STRIPE_SECRET},{STRIPE_OLD_SECRET}"),
        ),
        ("TIQZY_PAYMENTS_DELIVERY_KEY", DELIVERY_KEY),
        ("TIQZY_PAYMENTS_DELIVERY_URL", &storefronts.url_template),
        ("TIQZY_PAYMENTS_RETRY_BASE_MS", "20"),
        ("TIQZY_PAYMENTS_POLL_MS", "50"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (name, value) in vars {
        all.insert((*name).to_owned(), (*value).to_owned());
    }
    all.retain(|_, v| !v.is_empty());
    serve(&Config::from_vars(|name| all.get(name).cloned()).expect("config")).await
}

/// An event as Stripe sends it: `object` is `data.object`.
pub fn event(object: Value, account: Option<&str>, livemode: bool) -> (String, String) {
    let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let mut body = json!({
        "id": id, "object": "event", "api_version": "2025-01-27.acacia",
        "created": now(), "data": { "object": object }, "livemode": livemode,
        "pending_webhooks": 1, "request": { "id": null, "idempotency_key": null },
        "type": "checkout.session.completed",
    });
    if let Some(account) = account {
        body["account"] = json!(account);
    }
    (id, body.to_string())
}

/// A completed checkout session carrying the tenant metadata the service sets.
pub fn session_of(tenant: Option<&str>) -> Value {
    let mut session = json!({
        "id": format!("cs_test_{}", uuid::Uuid::new_v4().simple()),
        "object": "checkout.session", "payment_status": "paid", "metadata": {},
    });
    if let Some(tenant) = tenant {
        session["metadata"]["tiqzy_tenant"] = json!(tenant);
    }
    session
}

/// HMAC-SHA256(secret, "<t>.<body>") in hex: Stripe's scheme, written here independently.
pub fn hmac_hex(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Posts `body` to the service's webhook endpoint as Stripe would.
pub async fn post_event(service: &str, body: &str, signature: &str) -> (StatusCode, Value) {
    let answer = reqwest::Client::new()
        .post(format!("{service}/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .expect("the service answers");
    let status = StatusCode::from_u16(answer.status().as_u16()).expect("status");
    (status, answer.json().await.unwrap_or(Value::Null))
}

pub async fn send(service: &str, body: &str) {
    let (status, answer) =
        post_event(service, body, &stripe_signature(STRIPE_SECRET, now(), body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

pub async fn metrics_text(service: &str) -> String {
    reqwest::get(format!("{service}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The events counted with `outcome` on the service's metrics.
pub async fn counted(service: &str, outcome: &str) -> u64 {
    let text = metrics_text(service).await;
    text.lines()
        .filter(|l| {
            l.starts_with("tiqzy_payments_webhook_events_total")
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// An event of type `kind` as Stripe sends it: `object` is `data.object`.
pub fn event_of_type(kind: &str, object: Value, account: Option<&str>) -> (String, String) {
    let (id, body) = event(object, account, false);
    let mut body: Value = serde_json::from_str(&body).expect("JSON");
    body["type"] = json!(kind);
    (id, body.to_string())
}
