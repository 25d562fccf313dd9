//! The real `tiqzy-payments` for the runtime's tests, started in-process per test in front of
//! the test's recording Stripe proxy (stripe-mock behind it), with a database of its own and
//! the harness's kube-apiserver: the tenant is a real `Tenant`, and the storefront presents
//! a real ServiceAccount token (TokenRequest, audience `tiqzy-payments`) read from a file,
//! as the operator mounts it in the pod.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;
use serde_json::{Value, json};
pub use tiqzy_e2e::payments::DELIVERY_KEY;
use tiqzy_e2e::payments::{admin, create_account, mint};
use tiqzy_runtime::Application;
use tiqzy_runtime::config::Config;
use uuid::Uuid;

use super::stripe::{self, StripeProxy};
use super::{Issuer, Options, config_vars, fresh_database};

/// One tenant as the operator leaves it, and the payments service it talks to.
#[derive(Debug, Clone)]
pub struct Payments {
    /// `rt-<random>`: the Tenant, and the storefront's `TIQZY_TENANT`.
    pub tenant: String,
    /// The service's address (`TIQZY_PAYMENTS_URL`): a gate in front of it.
    pub url: String,
    refusing: Arc<AtomicBool>,
    /// Where the storefront's token is (`TIQZY_PAYMENTS_TOKEN_FILE`).
    pub token_file: PathBuf,
    /// Stripe as the service sees it: stripe-mock behind the recording proxy.
    pub stripe: StripeProxy,
}

impl Payments {
    /// A tenant with the test's connected account, and the service for it.
    pub async fn start() -> Self {
        Self::start_with(true).await
    }

    pub async fn start_with(connected_account: bool) -> Self {
        Self::start_as(connected_account, None).await
    }

    /// A tenant whose budget at the service is `burst` requests, hardly ever refilled.
    pub async fn start_with_budget(burst: u32) -> Self {
        Self::start_as(true, Some(burst)).await
    }

    async fn start_as(connected_account: bool, burst: Option<u32>) -> Self {
        let admin = admin().await;
        let tenant = format!("rt-{}", &Uuid::new_v4().simple().to_string()[..10]);
        let mut spec = json!({ "displayName": "Runtime test", "currency": "EUR" });
        if connected_account {
            spec["payments"] = json!({
                "connectedAccountId": stripe::TENANT_ACCOUNT,
                "applicationFeeBps": stripe::APPLICATION_FEE_BPS,
            });
        }
        let token = tiqzy_e2e::payments::tenant_with_storefront(&admin, &tenant, spec).await;
        let token_file = token_dir(&tenant).join("token");
        std::fs::write(&token_file, token).expect("write the token file");
        let stripe = StripeProxy::start().await;
        let service = start_service(&stripe, burst).await;
        let refusing = Arc::new(AtomicBool::new(false));
        let url = start_gate(service, refusing.clone()).await;
        Self {
            tenant,
            url,
            refusing,
            token_file,
            stripe,
        }
    }

    /// While `true`, the service answers every request `401 unauthorized`, as it does when it
    /// no longer accepts the storefront's token.
    pub fn refuse_every_token(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// The secret the service signs this tenant's deliveries with.
    pub fn delivery_secret(&self) -> String {
        tiqzy_crds::payments::delivery_secret(DELIVERY_KEY.as_bytes(), &self.tenant)
    }

    /// A fresh token of the tenant's storefront (its ServiceAccount made again if it was
    /// removed), as the kubelet would write after a rotation.
    pub async fn fresh_token(&self) -> String {
        let admin = admin().await;
        let namespace = format!("tiqzy-{}", self.tenant);
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), &namespace);
        let storefront = tiqzy_crds::payments::STOREFRONT_SERVICE_ACCOUNT;
        if accounts
            .get_opt(storefront)
            .await
            .expect("read the ServiceAccount")
            .is_none()
        {
            create_account(&admin, &namespace, storefront, false).await;
        }
        mint(
            &admin,
            &namespace,
            storefront,
            tiqzy_crds::payments::AUDIENCE,
        )
        .await
    }
}

fn token_dir(tenant: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("tiqzy-runtime-tokens")
        .join(tenant);
    std::fs::create_dir_all(&dir).expect("token directory");
    dir
}

/// A pass-through in front of the service that can answer 401 instead.
async fn start_gate(service: String, refusing: Arc<AtomicBool>) -> String {
    let http = reqwest::Client::new();
    let gate = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (http, service, refusing) = (http.clone(), service.clone(), refusing.clone());
            async move {
                if refusing.load(Ordering::SeqCst) {
                    let problem = json!({ "type": "unauthorized", "title": "Unauthorized",
                        "status": 401, "detail": "the token is not accepted" });
                    return (
                        StatusCode::UNAUTHORIZED,
                        [("content-type", "application/problem+json")],
                        problem.to_string(),
                    )
                        .into_response();
                }
                let mut forward = http.request(method, format!("{service}{uri}"));
                for (name, value) in &headers {
                    if name != "host" && name != "content-length" {
                        forward = forward.header(name, value);
                    }
                }
                match forward.body(body).send().await {
                    Ok(answer) => passed_on(answer).await,
                    Err(_) => StatusCode::BAD_GATEWAY.into_response(),
                }
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the gate");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, gate).await });
    url
}

async fn passed_on(answer: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::builder().status(status);
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    let body = answer.bytes().await.unwrap_or_default();
    response
        .body(axum::body::Body::from(body))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// The service on port 0, as its own ServiceAccount, with Stripe behind `stripe`; it stops
/// with the test's runtime.
async fn start_service(stripe: &StripeProxy, burst: Option<u32>) -> String {
    let database = tiqzy_e2e::payments::fresh_database("pay").await;
    // Deliveries are sent by the tests themselves; the service's go nowhere.
    let mut vars = service_vars(&database, stripe, "http://127.0.0.1:9/{tenant}");
    if let Some(burst) = burst {
        vars.insert(
            "TIQZY_PAYMENTS_TENANT_REQUESTS_PER_SECOND".into(),
            "0.0001".into(),
        );
        vars.insert("TIQZY_PAYMENTS_TENANT_BURST".into(), burst.to_string());
    }
    vars.insert("TIQZY_PAYMENTS_LISTEN_ADDR".into(), "127.0.0.1:0".into());
    let config =
        tiqzy_payments::Config::from_vars(|name| vars.get(name).cloned()).expect("payments config");
    serve(&config).await
}

/// The service's environment: its database, Stripe behind `stripe`, deliveries to
/// `delivery_url`, and budgets no test of the runtime runs out of unless it means to (300
/// buyers at once).
pub fn service_vars(
    database: &str,
    stripe: &StripeProxy,
    delivery_url: &str,
) -> HashMap<String, String> {
    [
        ("DATABASE_URL", database),
        ("STRIPE_SECRET_KEY", stripe::SECRET_KEY),
        ("STRIPE_API_BASE", &stripe.url),
        ("STRIPE_WEBHOOK_SECRETS", stripe::PLATFORM_WEBHOOK_SECRET),
        ("TIQZY_PAYMENTS_DELIVERY_KEY", DELIVERY_KEY),
        ("TIQZY_PAYMENTS_DELIVERY_URL", delivery_url),
        ("TIQZY_PAYMENTS_TENANT_REQUESTS_PER_SECOND", "100000"),
        ("TIQZY_PAYMENTS_TENANT_BURST", "100000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The service with `config`, in this process, as its own ServiceAccount; its address.
pub async fn serve(config: &tiqzy_payments::Config) -> String {
    let kube = tiqzy_e2e::payments::service_client().await;
    let app = tiqzy_payments::Application::build(config, kube)
        .await
        .expect("the payments service starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.serve());
    url
}

/// The cluster's Services as the payments service sees them: `POST /{tenant}/webhooks/stripe`
/// is passed to that tenant's storefront wherever it runs now (the address changes when it is
/// started again), and answered `503` when nothing listens there, as a gateway with no
/// endpoint behind it answers. Every answer a storefront gave is noted, in order.
#[derive(Debug, Clone)]
pub struct Network {
    /// `TIQZY_PAYMENTS_DELIVERY_URL` for the service.
    pub url_template: String,
    inner: Arc<NetworkState>,
}

#[derive(Debug, Default)]
struct NetworkState {
    http: reqwest::Client,
    routes: Mutex<HashMap<String, String>>,
    /// Tenants whose storefront's answers take this long to come back.
    slow: Mutex<HashMap<String, Duration>>,
    /// Deliveries the storefront has answered whose answer is held back (slow tenants).
    holding: Mutex<HashMap<String, usize>>,
    answered: Mutex<Vec<Answered>>,
}

/// A delivery the storefront answered.
#[derive(Debug, Clone)]
pub struct Answered {
    pub tenant: String,
    pub event_id: String,
    pub status: u16,
}

impl Network {
    pub async fn start() -> Self {
        let inner = Arc::new(NetworkState::default());
        let app = axum::Router::new()
            .route("/{tenant}/webhooks/stripe", axum::routing::post(pass))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the network");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url_template: format!("http://{address}/{{tenant}}/webhooks/stripe"),
            inner,
        }
    }

    fn route(&self, tenant: &str, url: &str) {
        self.inner
            .routes
            .lock()
            .expect("routes")
            .insert(tenant.to_owned(), url.to_owned());
    }

    /// From now on `tenant`'s storefront answers only `delay` after it has applied an event.
    pub fn slow(&self, tenant: &str, delay: Duration) {
        self.inner
            .slow
            .lock()
            .expect("slow")
            .insert(tenant.to_owned(), delay);
    }

    /// Deliveries to `tenant` the storefront has answered, whose answer the sender is still
    /// waiting for.
    pub fn holding(&self, tenant: &str) -> usize {
        let holding = self.inner.holding.lock().expect("holding");
        holding.get(tenant).copied().unwrap_or(0)
    }

    /// The events `tenant`'s storefront acknowledged (`2xx`), in the order it answered.
    pub fn acknowledged(&self, tenant: &str) -> Vec<String> {
        self.answered()
            .into_iter()
            .filter(|a| a.tenant == tenant && (200..300).contains(&a.status))
            .map(|a| a.event_id)
            .collect()
    }

    pub fn answered(&self) -> Vec<Answered> {
        self.inner.answered.lock().expect("answered").clone()
    }
}

/// Counts a delivery while its answer is held, until it is passed on or the sender is gone.
struct Holding(Arc<NetworkState>, String);

impl Holding {
    fn new(network: &Arc<NetworkState>, tenant: &str) -> Self {
        *network
            .holding
            .lock()
            .expect("holding")
            .entry(tenant.to_owned())
            .or_default() += 1;
        Self(network.clone(), tenant.to_owned())
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        if let Some(n) = self.0.holding.lock().expect("holding").get_mut(&self.1) {
            *n = n.saturating_sub(1);
        }
    }
}

async fn pass(
    axum::extract::State(network): axum::extract::State<Arc<NetworkState>>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(url) = network.routes.lock().expect("routes").get(&tenant).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let event_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|e| e["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut forward = network.http.post(format!("{url}/webhooks/stripe"));
    for name in ["content-type", "stripe-signature"] {
        if let Some(value) = headers.get(name) {
            forward = forward.header(name, value);
        }
    }
    let response = match forward.body(body).send().await {
        Ok(answer) => {
            network.answered.lock().expect("answered").push(Answered {
                tenant: tenant.clone(),
                event_id,
                status: answer.status().as_u16(),
            });
            passed_on(answer).await
        }
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let delay = network.slow.lock().expect("slow").get(&tenant).copied();
    if let Some(delay) = delay {
        let _holding = Holding::new(&network, &tenant);
        tokio::time::sleep(delay).await;
    }
    response
}

/// A tenant's storefront among many sharing one payments service, as on the platform: the
/// real runtime with a database of its own, its `Tenant` (namespace, ServiceAccount and token)
/// on the API server, its delivery secret, reached through the [`Network`]. Staff tokens come
/// from one issuer shared by all.
pub struct Shop {
    pub tenant: String,
    /// Where the storefront serves now.
    pub url: String,
    metrics_url: String,
    config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    http: reqwest::Client,
}

/// What every shop of a test shares.
#[derive(Clone)]
pub struct Platform {
    pub service: String,
    pub stripe: StripeProxy,
    pub network: Network,
    pub issuer: Arc<Issuer>,
}

impl Shop {
    /// A new tenant with its storefront serving.
    pub async fn open(platform: &Platform) -> Self {
        let admin = admin().await;
        let tenant = format!("fl-{}", &Uuid::new_v4().simple().to_string()[..10]);
        let spec = json!({ "displayName": "Fleet test", "currency": "EUR", "payments": {
            "connectedAccountId": stripe::TENANT_ACCOUNT,
            "applicationFeeBps": stripe::APPLICATION_FEE_BPS,
        } });
        let token = tiqzy_e2e::payments::tenant_with_storefront(&admin, &tenant, spec).await;
        let token_file = token_dir(&tenant).join("token");
        std::fs::write(&token_file, token).expect("write the token file");
        let payments = Payments {
            tenant: tenant.clone(),
            url: platform.service.clone(),
            refusing: Arc::default(),
            token_file,
            stripe: platform.stripe.clone(),
        };
        let options = Options {
            // Fifty of them share the one PostgreSQL.
            db_pool: Some((3, 30_000)),
            ..Options::default()
        };
        let database = fresh_database().await;
        let mut vars = config_vars(&database, &platform.issuer, &payments, &options);
        vars.insert(
            tiqzy_crds::payments::WEBHOOK_SECRETS_VAR.into(),
            tiqzy_e2e::payments::delivery_secret(&tenant),
        );
        let mut shop = Self {
            tenant,
            url: String::new(),
            metrics_url: String::new(),
            config: Config::from_vars(&vars).expect("config"),
            stop: None,
            http: reqwest::Client::new(),
        };
        shop.start(&platform.network).await;
        shop
    }

    /// Starts the storefront (again, on its database) and routes its deliveries to it.
    pub async fn start(&mut self, network: &Network) {
        let app = Application::build(self.config.clone())
            .await
            .expect("the storefront starts");
        self.url = format!("http://127.0.0.1:{}", app.port());
        self.metrics_url = format!("http://127.0.0.1:{}/metrics", app.metrics_port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(stop);
        tokio::spawn(app.serve(async move {
            let _ = stopped.await;
        }));
        network.route(&self.tenant, &self.url);
    }

    /// Stops the storefront: its listener is closed, nothing answers at its address.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        while tokio::net::TcpStream::connect(self.url.trim_start_matches("http://"))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `count` pending orders of one ticket each, for an event staff created: the orders'
    /// JSON, as the buyer sees it.
    pub async fn pending_orders(&self, issuer: &Issuer, count: usize) -> Vec<Value> {
        let staff = issuer.token_with(Some("admin"), json!({})).await;
        let slug = format!("show-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let now = chrono::Utc::now();
        let event = json!({
            "slug": slug, "title": "Night Show", "venue": "Hall 1", "description": "A night.",
            "starts_at": now + chrono::Duration::days(30),
            "ends_at": now + chrono::Duration::days(30) + chrono::Duration::hours(4),
        });
        let created = self.call("/api/admin/events", Some(&staff), &event).await;
        let tickets = json!({
            "name": "Standing", "price_minor": 2_000, "currency": "EUR", "capacity": 100,
            "per_order_limit": 4, "sales_start": now - chrono::Duration::hours(1),
            "sales_end": now + chrono::Duration::days(29),
        });
        let path = format!(
            "/api/admin/events/{}/ticket-types",
            created["slug"].as_str().unwrap_or(&slug)
        );
        let tt = self.call(&path, Some(&staff), &tickets).await["id"].clone();
        let mut orders = Vec::new();
        for n in 0..count {
            let hold = json!({ "ticket_type_id": tt, "quantity": 1 });
            let hold = self.call("/api/holds", None, &hold).await;
            let order = json!({ "hold_id": hold["id"], "email": format!("buyer{n}@example.org") });
            orders.push(self.call("/api/orders", None, &order).await);
        }
        orders
    }

    async fn call(&self, path: &str, token: Option<&str>, body: &Value) -> Value {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let answer = request.send().await.expect("the storefront answers");
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or_default();
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    /// The order's page as its buyer sees it.
    pub async fn order_page(&self, order: &Value) -> Value {
        let token = order["access_token"].as_str().expect("the order's link");
        self.http
            .get(format!("{}/api/orders/{token}", self.url))
            .send()
            .await
            .expect("the storefront answers")
            .json()
            .await
            .expect("the order page")
    }

    /// The storefront's count of Stripe events with `outcome` (`applied`, `duplicate`,
    /// `ignored`) since it started.
    pub async fn webhooks(&self, outcome: &str) -> u64 {
        let text = self
            .http
            .get(&self.metrics_url)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        let series = format!("tiqzy_stripe_webhooks_total{{outcome=\"{outcome}\"}}");
        tiqzy_e2e::sample(&text, &series).map_or(0, |n| n as u64)
    }
}

/// Stripe's `checkout.session.completed` once the buyer of `order` in `tenant`'s shop paid,
/// carrying the tenant the service set on the session: (event id, payload).
pub async fn paid_event(tenant: &str, order: &Value) -> (String, String) {
    let mut session = stripe::session_event("checkout.session.completed", order, true).await;
    session["metadata"][tiqzy_payments::webhook::route::TENANT_METADATA] = json!(tenant);
    stripe::event(None, "checkout.session.completed", session)
}

/// Posts `payload` to the service's one webhook endpoint as Stripe does: the status, or `None`
/// when nothing answered.
pub async fn post_to_platform(service: &str, payload: &str) -> Option<u16> {
    let signature = stripe::sign(payload, stripe::PLATFORM_WEBHOOK_SECRET, None);
    reqwest::Client::new()
        .post(format!("{service}/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(payload.to_owned())
        .send()
        .await
        .ok()
        .map(|answer| answer.status().as_u16())
}
