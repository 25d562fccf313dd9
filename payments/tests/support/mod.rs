//! What the payments service's tests share: the service's own ServiceAccount and role, a
//! fresh database per service, storefront tokens of real ServiceAccounts, and stripe-mock
//! behind a recording proxy that plays the parts stripe-mock cannot: remembering what was
//! created (an id per idempotency key, as Stripe does), a session the buyer has paid, and
//! Stripe's rate limit.
#![allow(dead_code)]

pub mod hooks;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use kube::api::PostParams;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tiqzy_payments::{Application, Config};

pub const SECRET_KEY: &str = "sk_test_tiqzyPayments4242";

#[allow(unused_imports)] // not every test binary mints tokens
pub use tiqzy_e2e::payments::{admin, mint};

/// A database no other test uses.
pub async fn fresh_database() -> String {
    tiqzy_e2e::payments::fresh_database("pay").await
}

/// One request as the service sent it to Stripe.
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: String,
}

impl Sent {
    /// Whether the form body holds the field `name=value`, or a field named `name...` when no
    /// value is given (compared unencoded).
    pub fn has(&self, part: &str) -> bool {
        let decoded = self
            .body
            .replace("%5B", "[")
            .replace("%5D", "]")
            .replace("%40", "@")
            .replace("%3A", ":");
        decoded
            .split('&')
            .any(|field| field == part || (!part.contains('=') && field.starts_with(part)))
    }
}

/// stripe-mock behind a proxy that records what reaches it.
pub struct StripeRecorder {
    pub url: String,
    sent: Arc<Mutex<Vec<Sent>>>,
    script: Arc<Mutex<Script>>,
}

/// What the proxy plays on top of stripe-mock.
#[derive(Debug, Default)]
struct Script {
    /// Sessions the buyer paid.
    paid: tiqzy_e2e::payments::PaidSessions,
    /// How many of the next requests Stripe answers 429.
    throttle: usize,
}

/// Stripe's answer to a request over the platform's rate limit.
const RATE_LIMITED: &str = r#"{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Request rate limit exceeded."}}"#;

impl StripeRecorder {
    pub async fn start() -> Self {
        let upstream = tiqzy_e2e::Harness::shared().stripe.url.clone();
        let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
        let script: Arc<Mutex<Script>> = Arc::default();
        let http = reqwest::Client::new();
        let (record, playing) = (sent.clone(), script.clone());
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (http, upstream) = (http.clone(), upstream.clone());
                let (record, playing) = (record.clone(), playing.clone());
                async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    record.lock().expect("lock").push(Sent {
                        method: method.to_string(),
                        path: uri.path().to_owned(),
                        idempotency_key: key.clone(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    {
                        let mut script = playing.lock().expect("lock");
                        if script.throttle > 0 {
                            script.throttle -= 1;
                            return (StatusCode::TOO_MANY_REQUESTS, Bytes::from(RATE_LIMITED));
                        }
                    }
                    let mut forward = http.request(method.clone(), format!("{upstream}{uri}"));
                    for (name, value) in &headers {
                        if name != "host" && name != "content-length" {
                            forward = forward.header(name, value);
                        }
                    }
                    let answer = forward
                        .body(body)
                        .send()
                        .await
                        .expect("stripe-mock answers");
                    let status = answer.status();
                    let bytes = answer.bytes().await.expect("body");
                    if !status.is_success() {
                        return (status, bytes);
                    }
                    let mut json: Value = serde_json::from_slice(&bytes).expect("JSON");
                    tiqzy_e2e::payments::stripe_answer(
                        &playing.lock().expect("lock").paid,
                        &method,
                        &uri,
                        key.as_deref(),
                        &mut json,
                    );
                    (status, Bytes::from(json.to_string()))
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, sent, script }
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().expect("lock").clone()
    }

    /// The requests sent to `path`.
    pub fn sent_to(&self, method: &str, path: &str) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.method == method && s.path == path)
            .collect()
    }

    /// From now on Stripe reports session `id` paid: `amount` through `payment_intent`.
    pub fn pay(&self, id: &str, amount: i64, payment_intent: &str) {
        self.script
            .lock()
            .expect("lock")
            .paid
            .insert(id.to_owned(), (amount, payment_intent.to_owned()));
    }

    /// Stripe answers the next `n` requests with 429.
    pub fn throttle(&self, n: usize) {
        self.script.lock().expect("lock").throttle = n;
    }
}

/// The service on port 0, as its own ServiceAccount, with stripe-mock behind `stripe`.
pub async fn start_service(stripe: &StripeRecorder) -> String {
    start_service_with(stripe, &[]).await
}

/// The same, with more environment variables.
pub async fn start_service_with(stripe: &StripeRecorder, more: &[(&str, &str)]) -> String {
    let database = fresh_database().await;
    serve(&service_config(&database, stripe, more)).await
}

/// The service's configuration on port 0: `database`, stripe-mock behind `stripe`, and
/// `more` variables.
pub fn service_config(database: &str, stripe: &StripeRecorder, more: &[(&str, &str)]) -> Config {
    let vars = |name: &str| match name {
        "DATABASE_URL" => Some(database.to_owned()),
        "STRIPE_SECRET_KEY" => Some(SECRET_KEY.to_owned()),
        "STRIPE_API_BASE" => Some(stripe.url.clone()),
        "TIQZY_PAYMENTS_LISTEN_ADDR" => Some("127.0.0.1:0".to_owned()),
        _ => more
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned()),
    };
    Config::from_vars(vars).expect("config")
}

/// The service with `config` on its port, as its own ServiceAccount; its address.
pub async fn serve(config: &Config) -> String {
    let app = Application::build(config, tiqzy_e2e::payments::service_client().await)
        .await
        .expect("the service starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.serve());
    url
}

pub async fn create(admin: &kube::Client, object: Value) {
    let api: kube::Api<kube::core::DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => kube::Api::namespaced_with(admin.clone(), ns, &resource_of(&object)),
        None => kube::Api::all_with(admin.clone(), &resource_of(&object)),
    };
    let object: kube::core::DynamicObject = serde_json::from_value(object).expect("object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("create");
}

pub fn resource_of(object: &Value) -> kube::core::ApiResource {
    let kind = object["kind"].as_str().expect("kind");
    let gvk = kube::core::GroupVersionKind::try_from(&kube::core::TypeMeta {
        api_version: object["apiVersion"]
            .as_str()
            .expect("apiVersion")
            .to_owned(),
        kind: kind.to_owned(),
    })
    .expect("gvk");
    kube::core::ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase()))
}

/// A namespace with a ServiceAccount `account` in it.
pub async fn namespace_with_account(admin: &kube::Client, namespace: &str, account: &str) {
    tiqzy_e2e::payments::create_account(admin, namespace, account, true).await;
}

/// A tenant as the operator would leave it: the Tenant, its namespace and the storefront's
/// ServiceAccount, and a storefront token for the payments service.
pub struct Storefront {
    pub tenant: String,
    pub account: String,
    pub token: String,
}

pub async fn storefront(admin: &kube::Client, with_account: bool) -> Storefront {
    storefront_with(admin, with_account, None).await
}

/// A storefront whose Tenant sets its own fee rate.
pub async fn storefront_with(
    admin: &kube::Client,
    with_account: bool,
    fee_bps: Option<i32>,
) -> Storefront {
    let tenant = format!("pay-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let account = format!("acct_1{}", tenant.replace('-', ""));
    let mut spec = json!({ "displayName": "Payments test", "currency": "EUR" });
    if with_account {
        spec["payments"] = json!({ "connectedAccountId": account });
        if let Some(fee) = fee_bps {
            spec["payments"]["applicationFeeBps"] = fee.into();
        }
    }
    let token = tiqzy_e2e::payments::tenant_with_storefront(admin, &tenant, spec).await;
    Storefront {
        tenant,
        account,
        token,
    }
}

pub fn session_for(account: &str, order: &str) -> Value {
    json!({
        "destination_account": account,
        "currency": "EUR",
        "line_items": [{ "description": "Standing", "unit_amount": 2500, "quantity": 2 }],
        "application_fee_amount": 125,
        "client_reference_id": order,
        "customer_email": "fan@example.com",
        "success_url": "https://shop.example/orders/1?checkout=done",
        "cancel_url": "https://shop.example/orders/1",
        "expires_at": chrono_now() + 3600,
        "metadata": { "order_id": order },
    })
}

pub fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

pub async fn post_session(
    url: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/v1/checkout-sessions"))
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    answer(request).await
}

pub async fn get_session(url: &str, token: &str, id: &str) -> (StatusCode, Value) {
    answer(
        reqwest::Client::new()
            .get(format!("{url}/v1/checkout-sessions/{id}"))
            .bearer_auth(token),
    )
    .await
}

pub async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("the service answers");
    let status = response.status();
    let problem = !status.is_success();
    if problem {
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "a refusal is a JSON problem"
        );
    }
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// `POST {path}` as a storefront, with an idempotency key.
pub async fn post(
    url: &str,
    token: &str,
    path: &str,
    key: &str,
    body: &Value,
) -> (StatusCode, Value) {
    answer(
        reqwest::Client::new()
            .post(format!("{url}{path}"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body),
    )
    .await
}
