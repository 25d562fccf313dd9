//! The real `tiqzy-payments` for the runtime's tests, started in-process per test in front of
//! the test's recording Stripe proxy (stripe-mock behind it), with a database of its own and
//! the harness's kube-apiserver: the tenant is a real `Tenant`, and the storefront presents
//! a real ServiceAccount token (TokenRequest, audience `tiqzy-payments`) read from a file,
//! as the operator mounts it in the pod.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use uuid::Uuid;

use super::stripe::{self, StripeProxy};

/// The platform's delivery key the service derives each tenant's delivery secret from.
pub const DELIVERY_KEY: &str = "tiqzy-test-delivery-key-5f1c0a9e";

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
        create_tenant(&admin, &tenant, spec).await;
        let namespace = format!("tiqzy-{tenant}");
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({ "metadata": { "name": namespace } }))
                    .expect("namespace"),
            )
            .await
            .expect("create the tenant's namespace");
        create_storefront_account(&admin, &namespace).await;
        let token = mint(&admin, &namespace, tiqzy_crds::payments::AUDIENCE).await;
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
        if accounts
            .get_opt("storefront")
            .await
            .expect("read the ServiceAccount")
            .is_none()
        {
            create_storefront_account(&admin, &namespace).await;
        }
        mint(&admin, &namespace, tiqzy_crds::payments::AUDIENCE).await
    }
}

fn token_dir(tenant: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("tiqzy-runtime-tokens")
        .join(tenant);
    std::fs::create_dir_all(&dir).expect("token directory");
    dir
}

/// The service's own ServiceAccount, bound to its ClusterRole, once per test binary: the
/// service runs with exactly the permissions it is deployed with.
fn service_kubeconfig() -> &'static PathBuf {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime
                .block_on(async {
                    let h = tiqzy_e2e::Harness::shared();
                    let admin = h.kube.client().await?;
                    tiqzy_e2e::install_tiqzy_crds(&admin).await?;
                    let role: Value = serde_saphyr::from_str(include_str!(
                        "../../../../payments/deploy/cluster-role.yaml"
                    ))?;
                    tiqzy_e2e::install_account(
                        h,
                        &admin,
                        ("tiqzy-payments-system", "tiqzy-payments"),
                        role,
                    )
                    .await
                })
                .map_err(|e| format!("{e:#}"))
        })
        .join()
        .expect("install thread")
    });
    match installed {
        Ok(path) => path,
        Err(e) => panic!("installing the payments service's account failed: {e}"),
    }
}

async fn admin() -> kube::Client {
    service_kubeconfig();
    tiqzy_e2e::Harness::shared()
        .kube
        .client()
        .await
        .expect("admin client")
}

async fn create_storefront_account(admin: &kube::Client, namespace: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": tiqzy_crds::payments::STOREFRONT_SERVICE_ACCOUNT }
            }))
            .expect("service account"),
        )
        .await
        .expect("create the storefront's ServiceAccount");
}

async fn create_tenant(admin: &kube::Client, name: &str, spec: Value) {
    let tenant: tiqzy_crds::Tenant = serde_json::from_value(json!({
        "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
        "metadata": { "name": name }, "spec": spec,
    }))
    .expect("a valid Tenant");
    Api::<tiqzy_crds::Tenant>::all(admin.clone())
        .create(&PostParams::default(), &tenant)
        .await
        .expect("create the Tenant");
}

/// A token of the namespace's `storefront` ServiceAccount for `audience`.
pub async fn mint(admin: &kube::Client, namespace: &str, audience: &str) -> String {
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": { "audiences": [audience], "expirationSeconds": 3600 }
    }))
    .expect("request");
    Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request("storefront", &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("a token")
        .token
}

/// A database no other test uses, for the service.
async fn fresh_database() -> String {
    use sqlx::Connection;
    let h = tiqzy_e2e::Harness::shared();
    let name = format!("pay_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&h.postgres.admin_url("postgres"))
        .await
        .expect("connect as admin");
    // The name is ours (a UUID), never input.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    h.postgres.admin_url(&name)
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
    let database = fresh_database().await;
    let vars = |name: &str| match name {
        "DATABASE_URL" => Some(database.clone()),
        "STRIPE_SECRET_KEY" => Some(stripe::SECRET_KEY.to_owned()),
        "STRIPE_API_BASE" => Some(stripe.url.clone()),
        "STRIPE_WEBHOOK_SECRETS" => Some(stripe::PLATFORM_WEBHOOK_SECRET.to_owned()),
        "TIQZY_PAYMENTS_DELIVERY_KEY" => Some(DELIVERY_KEY.to_owned()),
        // Deliveries are sent by the tests themselves; the service's go nowhere.
        "TIQZY_PAYMENTS_DELIVERY_URL" => Some("http://127.0.0.1:9/{tenant}".to_owned()),
        "TIQZY_PAYMENTS_LISTEN_ADDR" => Some("127.0.0.1:0".to_owned()),
        // Most of the runtime's tests (300 buyers at once) are not about the tenant's budget.
        "TIQZY_PAYMENTS_TENANT_REQUESTS_PER_SECOND" => {
            Some(burst.map_or("100000", |_| "0.0001").to_owned())
        }
        "TIQZY_PAYMENTS_TENANT_BURST" => Some(burst.map_or(100_000, |b| b).to_string()),
        _ => None,
    };
    let config = tiqzy_payments::Config::from_vars(vars).expect("payments config");
    let kubeconfig = kube::config::Kubeconfig::read_from(service_kubeconfig()).expect("kubeconfig");
    let kube_config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config");
    let kube = kube::Client::try_from(kube_config).expect("client");
    let app = tiqzy_payments::Application::build(&config, kube)
        .await
        .expect("the payments service starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.serve());
    url
}
