//! Stripe for the tests: the harness's stripe-mock behind a small recording reverse proxy
//! (so tests see the requests the payments service really sends for the runtime, and can make
//! Stripe fail), and events built from stripe-mock's own objects and signed the way Stripe,
//! and the payments service delivering them, sign them. stripe-mock is stateless; the proxy
//! plays the little state the service relies on: an object created under an idempotency key
//! has an id of its own (the same key, the same id), and a session Stripe told the storefront
//! was paid reads back as paid.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

/// The platform's key: the payments service's, never the storefront's.
pub const SECRET_KEY: &str = "sk_test_tiqzyRuntime4242";
/// What Stripe signs its events to the platform's endpoint (the payments service) with.
pub const PLATFORM_WEBHOOK_SECRET: &str = "whsec_tiqzy_platform_endpoint_42";
/// The secrets the storefront accepts deliveries signed with (`TIQZY_PAYMENTS_WEBHOOK_SECRETS`):
/// the current one, and the one used before a rotation.
pub const WEBHOOK_SECRET: &str = "whsec_tiqzy_current_0123456789";
pub const OLD_WEBHOOK_SECRET: &str = "whsec_tiqzy_previous_9876543210";
pub const TENANT_ACCOUNT: &str = "acct_1TiqzyTenant";
pub const APPLICATION_FEE_BPS: u32 = 250;

/// One request as the payments service sent it for the runtime.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: String,
}

/// Sessions Stripe knows are paid: id -> (amount_total, payment intent).
type PaidSessions = Arc<Mutex<tiqzy_e2e::payments::PaidSessions>>;

#[derive(Debug, Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    lose_answers: Arc<AtomicU32>,
    paid: PaidSessions,
}

/// A reverse proxy in front of stripe-mock that records every request.
#[derive(Debug, Clone)]
pub struct StripeProxy {
    pub url: String,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    lose_answers: Arc<AtomicU32>,
    paid: PaidSessions,
}

impl StripeProxy {
    pub async fn start() -> Self {
        let upstream = tiqzy_e2e::Harness::shared().stripe.url.clone();
        let state = ProxyState {
            upstream,
            http: reqwest::Client::new(),
            recorded: Arc::default(),
            lose_answers: Arc::default(),
            paid: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let proxy = Self {
            url,
            recorded: state.recorded.clone(),
            lose_answers: state.lose_answers.clone(),
            paid: state.paid.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        proxy
    }

    /// The next `n` POSTs reach stripe-mock (Stripe acts on them) but their answers are lost
    /// on the way back, as after a timeout: the runtime sees a 503. Reads are answered.
    pub fn lose_next_answers(&self, n: u32) {
        self.lose_answers.store(n, Ordering::SeqCst);
    }

    /// From now on Stripe reports session `id` paid: `amount` through `payment_intent`.
    pub fn pay(&self, id: &str, amount: i64, payment_intent: &str) {
        self.paid
            .lock()
            .expect("paid")
            .insert(id.to_owned(), (amount, payment_intent.to_owned()));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().expect("recorded").clone()
    }

    pub fn posts_to(&self, path_prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.starts_with(path_prefix))
            .collect()
    }
}

async fn forward(
    State(state): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    state.recorded.lock().expect("recorded").push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let mut request = state
        .http
        .request(method.clone(), format!("{}{path}", state.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let lost = method == Method::POST
        && state
            .lose_answers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    if lost {
        let error =
            json!({ "error": { "type": "api_error", "message": "answer lost in transit" } });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(error)).into_response();
    }
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let mut body = answer.bytes().await.unwrap_or_default();
    if status.is_success()
        && let Ok(mut object) = serde_json::from_slice::<Value>(&body)
    {
        let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
        let paid = state.paid.lock().expect("paid");
        tiqzy_e2e::payments::stripe_answer(&paid, &method, &uri, key, &mut object);
        body = Bytes::from(object.to_string());
    }
    if status.is_client_error() {
        // Shown with the failing test's output: what stripe-mock refused, and why.
        eprintln!(
            "stripe-mock refused {path}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    (status, [("content-type", content_type)], body).into_response()
}

/// A Stripe object of this kind as stripe-mock returns it, to be edited into an event.
pub async fn fixture(path: &str) -> Value {
    let h = tiqzy_e2e::Harness::shared();
    reqwest::Client::new()
        .get(format!("{}/v1/{path}", h.stripe.url))
        .basic_auth(SECRET_KEY, Some(""))
        .send()
        .await
        .expect("stripe-mock answers")
        .json()
        .await
        .expect("a JSON object")
}

/// An event envelope around `object`, with a fresh id unless one is given.
pub fn event(id: Option<&str>, kind: &str, object: Value) -> (String, String) {
    let id = id.map_or_else(|| format!("evt_{}", Uuid::new_v4().simple()), str::to_owned);
    let body = json!({
        "id": id,
        "object": "event",
        "api_version": "2025-01-27.acacia",
        "created": chrono::Utc::now().timestamp(),
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": kind,
    });
    (id, body.to_string())
}

/// The `Stripe-Signature` header Stripe (or the payments service, delivering) would send:
/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<payload>")>`.
pub fn sign(payload: &str, secret: &str, at: Option<i64>) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let at = at.unwrap_or_else(|| chrono::Utc::now().timestamp());
    let mut mac =
        <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("{at}.{payload}").as_bytes());
    format!("t={at},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The payment intent id the tests use for an order.
pub fn intent_of(order_id: &str) -> String {
    format!("pi_{}", order_id.replace('-', ""))
}

/// `checkout.session.completed` (or `.expired`) for an order, as Stripe would send it.
pub async fn session_event(kind: &str, order: &Value, paid: bool) -> Value {
    let order_id = order["id"].as_str().expect("order id");
    let mut session = fixture(&format!(
        "checkout/sessions/cs_test_{}",
        Uuid::new_v4().simple()
    ))
    .await;
    session["client_reference_id"] = json!(order_id);
    session["metadata"] = json!({ "order_id": order_id });
    session["amount_total"] = order["total"]["amount_minor"].clone();
    session["currency"] = json!(
        order["total"]["currency"]
            .as_str()
            .expect("currency")
            .to_lowercase()
    );
    session["payment_intent"] = json!(intent_of(order_id));
    session["payment_status"] = json!(if paid { "paid" } else { "unpaid" });
    session["status"] = json!(if kind.ends_with("completed") {
        "complete"
    } else {
        "expired"
    });
    session
}

pub async fn payment_intent_object(order: &Value, status: &str) -> Value {
    let order_id = order["id"].as_str().expect("order id");
    let mut intent = fixture(&format!("payment_intents/{}", intent_of(order_id))).await;
    let amount = order["total"]["amount_minor"].clone();
    intent["amount"] = amount.clone();
    intent["amount_received"] = if status == "succeeded" {
        amount
    } else {
        json!(0)
    };
    intent["currency"] = json!(
        order["total"]["currency"]
            .as_str()
            .expect("currency")
            .to_lowercase()
    );
    intent["metadata"] = json!({ "order_id": order_id });
    intent["status"] = json!(status);
    intent
}

pub async fn charge_refunded_object(order: &Value, amount_refunded: i64) -> Value {
    let order_id = order["id"].as_str().expect("order id");
    let mut charge = fixture(&format!("charges/ch_{}", Uuid::new_v4().simple())).await;
    charge["amount"] = order["total"]["amount_minor"].clone();
    charge["amount_refunded"] = json!(amount_refunded);
    charge["refunded"] =
        json!(amount_refunded == order["total"]["amount_minor"].as_i64().expect("total"));
    charge["currency"] = json!(
        order["total"]["currency"]
            .as_str()
            .expect("currency")
            .to_lowercase()
    );
    charge["payment_intent"] = json!(intent_of(order_id));
    charge["metadata"] = json!({ "order_id": order_id });
    charge
}

pub async fn dispute_object(order: &Value, amount: i64) -> Value {
    let order_id = order["id"].as_str().expect("order id");
    let mut dispute = fixture(&format!("disputes/dp_{}", Uuid::new_v4().simple())).await;
    dispute["amount"] = json!(amount);
    dispute["currency"] = json!(
        order["total"]["currency"]
            .as_str()
            .expect("currency")
            .to_lowercase()
    );
    dispute["payment_intent"] = json!(intent_of(order_id));
    dispute
}

pub async fn account_object(account_id: &str, onboarded: bool) -> Value {
    let mut account = fixture(&format!("accounts/{account_id}")).await;
    account["id"] = json!(account_id);
    account["details_submitted"] = json!(onboarded);
    account["payouts_enabled"] = json!(onboarded);
    account["charges_enabled"] = json!(onboarded);
    account
}

/// One field of a form-encoded Stripe request, by its bracketed name.
pub fn form_value<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.replace("%5B", "[").replace("%5D", "]") == key).then_some(v)
    })
}
