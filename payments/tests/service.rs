//! The payments service against the real programs: the harness's kube-apiserver checks real
//! ServiceAccount tokens (TokenRequest -> TokenReview) and serves the Tenants, PostgreSQL
//! keeps the session records, stripe-mock (behind a recording proxy) plays Stripe. The
//! service itself runs with the token of its own ServiceAccount bound to
//! `payments/deploy/cluster-role.yaml`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;
use tiqzy_crds::Tenant;
use tiqzy_payments::{Application, Config};

const SECRET_KEY: &str = "sk_test_tiqzyPayments4242";

/// A namespace and ServiceAccount for the service, its ClusterRole, once per test binary.
fn service_kubeconfig() -> &'static std::path::PathBuf {
    static INSTALLED: OnceLock<Result<std::path::PathBuf, String>> = OnceLock::new();
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
                    let role: Value =
                        serde_saphyr::from_str(include_str!("../deploy/cluster-role.yaml"))?;
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

/// The admin, once the Tiqzy CRDs and the service's account are installed.
async fn admin() -> kube::Client {
    service_kubeconfig();
    tiqzy_e2e::Harness::shared()
        .kube
        .client()
        .await
        .expect("admin client")
}

/// A database no other test uses.
async fn fresh_database() -> String {
    let h = tiqzy_e2e::Harness::shared();
    let name = format!("pay_{}", uuid::Uuid::new_v4().simple());
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

/// One request as the service sent it to Stripe.
#[derive(Debug, Clone)]
struct Sent {
    path: String,
    idempotency_key: Option<String>,
    body: String,
}

/// stripe-mock behind a proxy that records what reaches it.
struct StripeRecorder {
    url: String,
    sent: Arc<Mutex<Vec<Sent>>>,
}

impl StripeRecorder {
    async fn start() -> Self {
        let upstream = tiqzy_e2e::Harness::shared().stripe.url.clone();
        let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
        let http = reqwest::Client::new();
        let record = sent.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (http, upstream, record) = (http.clone(), upstream.clone(), record.clone());
                async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    record.lock().expect("lock").push(Sent {
                        path: uri.path().to_owned(),
                        idempotency_key: key,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    let mut forward = http.request(method, format!("{upstream}{uri}"));
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
                    (status, bytes)
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, sent }
    }

    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().expect("lock").clone()
    }
}

/// The service on port 0, as its own ServiceAccount, with stripe-mock behind `stripe`.
async fn start_service(stripe: &StripeRecorder) -> String {
    let database = fresh_database().await;
    let vars = |name: &str| match name {
        "DATABASE_URL" => Some(database.clone()),
        "STRIPE_SECRET_KEY" => Some(SECRET_KEY.to_owned()),
        "STRIPE_API_BASE" => Some(stripe.url.clone()),
        "TIQZY_PAYMENTS_LISTEN_ADDR" => Some("127.0.0.1:0".to_owned()),
        _ => None,
    };
    let config = Config::from_vars(vars).expect("config");
    let kubeconfig = kube::config::Kubeconfig::read_from(service_kubeconfig()).expect("kubeconfig");
    let kube_config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config");
    let kube = kube::Client::try_from(kube_config).expect("client");
    let app = Application::build(&config, kube)
        .await
        .expect("the service starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.serve());
    url
}

/// A token of ServiceAccount `namespace/name` for `audience` (TokenRequest API).
async fn mint(admin: &kube::Client, namespace: &str, name: &str, audience: &str) -> String {
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": { "audiences": [audience], "expirationSeconds": 3600 }
    }))
    .expect("request");
    Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("a token")
        .token
}

async fn create(admin: &kube::Client, object: Value) {
    let api: kube::Api<kube::core::DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => kube::Api::namespaced_with(admin.clone(), ns, &resource_of(&object)),
        None => kube::Api::all_with(admin.clone(), &resource_of(&object)),
    };
    let object: kube::core::DynamicObject = serde_json::from_value(object).expect("object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("create");
}

fn resource_of(object: &Value) -> kube::core::ApiResource {
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
async fn namespace_with_account(admin: &kube::Client, namespace: &str, account: &str) {
    create(
        admin,
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": namespace } }),
    )
    .await;
    create(
        admin,
        json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": { "name": account, "namespace": namespace } }),
    )
    .await;
}

/// A tenant as the operator would leave it: the Tenant, its namespace and the storefront's
/// ServiceAccount, and a storefront token for the payments service.
struct Storefront {
    tenant: String,
    account: String,
    token: String,
}

async fn storefront(admin: &kube::Client, with_account: bool) -> Storefront {
    let tenant = format!("pay-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let account = format!("acct_1{}", tenant.replace('-', ""));
    let mut spec = json!({ "displayName": "Payments test", "currency": "EUR" });
    if with_account {
        spec["payments"] = json!({ "connectedAccountId": account });
    }
    create(
        admin,
        json!({ "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
                "metadata": { "name": tenant }, "spec": spec }),
    )
    .await;
    let namespace = format!("tiqzy-{tenant}");
    namespace_with_account(admin, &namespace, "storefront").await;
    let token = mint(admin, &namespace, "storefront", "tiqzy-payments").await;
    Storefront {
        tenant,
        account,
        token,
    }
}

fn session_for(account: &str, order: &str) -> Value {
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

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

async fn post_session(
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

async fn get_session(url: &str, token: &str, id: &str) -> (StatusCode, Value) {
    answer(
        reqwest::Client::new()
            .get(format!("{url}/v1/checkout-sessions/{id}"))
            .bearer_auth(token),
    )
    .await
}

async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
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

#[tokio::test]
async fn only_storefront_tokens_for_this_audience_get_in() {
    let admin = admin().await;
    let shop = storefront(&admin, true).await;
    // Tokens of the same cluster that must not get in.
    let other_audience = mint(
        &admin,
        &format!("tiqzy-{}", shop.tenant),
        "storefront",
        "https://kubernetes.default.svc.cluster.local",
    )
    .await;
    let namespace = format!("tiqzy-{}", shop.tenant);
    namespace_with_account(&admin, &format!("{namespace}-x"), "storefront").await;
    create(
        &admin,
        json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": { "name": "intruder", "namespace": namespace } }),
    )
    .await;
    let intruder = mint(&admin, &namespace, "intruder", "tiqzy-payments").await;
    let elsewhere = mint(
        &admin,
        &format!("{namespace}-x"),
        "storefront",
        "tiqzy-payments",
    )
    .await;
    let outside = format!(
        "pay-outside-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    namespace_with_account(&admin, &outside, "storefront").await;
    let not_a_tenant_namespace = mint(&admin, &outside, "storefront", "tiqzy-payments").await;
    let ghost = format!(
        "tiqzy-ghost-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    namespace_with_account(&admin, &ghost, "storefront").await;
    let no_such_tenant = mint(&admin, &ghost, "storefront", "tiqzy-payments").await;

    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;
    let body = session_for(&shop.account, "order-auth");
    let key = format!("tiqzy:{}:checkout:order-auth", shop.tenant);

    let cases: [(&str, Option<&str>, StatusCode, &str); 7] = [
        ("no token", None, StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            "not a token",
            Some("not-a-jwt"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "a token for the API server",
            Some(&other_audience),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "another ServiceAccount in the tenant namespace",
            Some(&intruder),
            StatusCode::FORBIDDEN,
            "not-a-storefront",
        ),
        (
            "a storefront account outside tenant namespaces",
            Some(&not_a_tenant_namespace),
            StatusCode::FORBIDDEN,
            "not-a-storefront",
        ),
        (
            "a namespace whose tenant name has a suffix",
            Some(&elsewhere),
            StatusCode::FORBIDDEN,
            "unknown-tenant",
        ),
        (
            "a tenant namespace without a Tenant",
            Some(&no_such_tenant),
            StatusCode::FORBIDDEN,
            "unknown-tenant",
        ),
    ];
    for (what, token, status, kind) in cases {
        let (got, problem) = post_session(&url, token, Some(&key), &body).await;
        assert_eq!(
            (got, problem["type"].as_str()),
            (status, Some(kind)),
            "{what}: {problem}"
        );
        if let Some(token) = token {
            assert!(!problem.to_string().contains(token), "{what}: token echoed");
        }
    }
    assert!(
        stripe.sent().is_empty(),
        "no refused request reached Stripe"
    );

    // The storefront's own token works, until its ServiceAccount is deleted.
    let (status, created) = post_session(&url, Some(&shop.token), Some(&key), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    Api::<ServiceAccount>::namespaced(admin.clone(), &namespace)
        .delete("storefront", &DeleteParams::default())
        .await
        .expect("delete the ServiceAccount");
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, problem) = get_session(&url, &shop.token, "cs_test_any").await;
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(problem["type"], "unauthorized");
            return;
        }
        last = problem;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("a deleted ServiceAccount's token still gets in: {last}");
}

#[tokio::test]
async fn a_storefront_opens_and_reads_its_own_checkout_session() {
    let admin = admin().await;
    let shop = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;
    let key = format!("tiqzy:{}:checkout:order-1", shop.tenant);

    let (status, created) = post_session(
        &url,
        Some(&shop.token),
        Some(&key),
        &session_for(&shop.account, "order-1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("an id");
    assert!(id.starts_with("cs_"), "{created}");
    assert!(
        created["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://"))
    );

    let sent = stripe.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].path, "/v1/checkout/sessions");
    assert_eq!(sent[0].idempotency_key.as_deref(), Some(key.as_str()));
    let form = &sent[0].body;
    for part in [
        format!(
            "payment_intent_data[transfer_data][destination]={}",
            shop.account
        ),
        "payment_intent_data[application_fee_amount]=125".to_owned(),
        format!("metadata[tiqzy_tenant]={}", shop.tenant),
        "client_reference_id=order-1".to_owned(),
    ] {
        let encoded = part.replace('[', "%5B").replace(']', "%5D");
        assert!(
            form.contains(&part) || form.contains(&encoded),
            "{part} missing from {form}"
        );
    }

    let (status, read) = get_session(&url, &shop.token, id).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["id"], id);

    // Without a key, or with a key that is not the tenant's own, nothing is sent.
    let (status, problem) = post_session(
        &url,
        Some(&shop.token),
        None,
        &session_for(&shop.account, "order-2"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, problem) = post_session(
        &url,
        Some(&shop.token),
        Some("checkout:order-2"),
        &session_for(&shop.account, "order-2"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(stripe.sent().len(), 2, "only the create and the read");
}

#[tokio::test]
async fn a_tenant_cannot_touch_another_tenants_account_or_sessions() {
    let admin = admin().await;
    let acme = storefront(&admin, true).await;
    let rival = storefront(&admin, true).await;
    let unpaid = storefront(&admin, false).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;

    let acme_key = format!("tiqzy:{}:checkout:o-1", acme.tenant);
    let (status, created) = post_session(
        &url,
        Some(&acme.token),
        Some(&acme_key),
        &session_for(&acme.account, "o-1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let acme_session = created["id"].as_str().expect("id").to_owned();
    let before = stripe.sent().len();

    // The rival charges to acme's account: refused before Stripe.
    let rival_key = format!("tiqzy:{}:checkout:o-9", rival.tenant);
    let (status, problem) = post_session(
        &url,
        Some(&rival.token),
        Some(&rival_key),
        &session_for(&acme.account, "o-9"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["type"], "account-not-yours");

    // The rival replays acme's idempotency key (which would fetch acme's session from Stripe).
    let (status, problem) = post_session(
        &url,
        Some(&rival.token),
        Some(&acme_key),
        &session_for(&rival.account, "o-1"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");

    // The rival reads or expires acme's session: as unknown as a made-up one.
    let (status, problem) = get_session(&url, &rival.token, &acme_session).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, _) = get_session(&url, &rival.token, "cs_test_madeup").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let expire_key = format!("tiqzy:{}:expire-checkout:o-1", rival.tenant);
    let (status, problem) = expire_session(&url, &rival.token, &acme_session, &expire_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");

    // A tenant without a connected account cannot sell at all, not even to another's.
    let (status, problem) = post_session(
        &url,
        Some(&unpaid.token),
        Some(&format!("tiqzy:{}:checkout:o-5", unpaid.tenant)),
        &session_for(&acme.account, "o-5"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["type"], "payments-not-set-up");
    assert_eq!(
        stripe.sent().len(),
        before,
        "no refused attempt reached Stripe"
    );

    // The rival's own sale still works, and acme still reads its own session.
    let (status, created) = post_session(
        &url,
        Some(&rival.token),
        Some(&rival_key),
        &session_for(&rival.account, "o-9"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _) = get_session(&url, &acme.token, &acme_session).await;
    assert_eq!(status, StatusCode::OK);
    // And acme may expire it, with its own key passed through.
    let expire_key = format!("tiqzy:{}:expire-checkout:o-1", acme.tenant);
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/checkout-sessions/{acme_session}/expire"))
        .bearer_auth(&acme.token)
        .header("Idempotency-Key", &expire_key)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let sent = stripe.sent();
    let last = sent.last().expect("the expiry reached Stripe");
    assert_eq!(
        last.path,
        format!("/v1/checkout/sessions/{acme_session}/expire")
    );
    assert_eq!(last.idempotency_key.as_deref(), Some(expire_key.as_str()));
}

async fn expire_session(url: &str, token: &str, id: &str, key: &str) -> (StatusCode, Value) {
    answer(
        reqwest::Client::new()
            .post(format!("{url}/v1/checkout-sessions/{id}/expire"))
            .bearer_auth(token)
            .header("Idempotency-Key", key),
    )
    .await
}

#[tokio::test]
async fn a_changed_connected_account_is_followed_from_the_tenant() {
    let admin = admin().await;
    let shop = storefront(&admin, true).await;
    let stripe = StripeRecorder::start().await;
    let url = start_service(&stripe).await;
    let moved = format!("{}moved", shop.account);
    Api::<Tenant>::all(admin.clone())
        .patch(
            &shop.tenant,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "payments": { "connectedAccountId": moved } } })),
        )
        .await
        .expect("patch the Tenant");
    let key = format!("tiqzy:{}:checkout:o-1", shop.tenant);
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, answer) = post_session(
            &url,
            Some(&shop.token),
            Some(&key),
            &session_for(&moved, "o-1"),
        )
        .await;
        if status == StatusCode::CREATED {
            let (status, problem) = post_session(
                &url,
                Some(&shop.token),
                Some(&format!("tiqzy:{}:checkout:o-2", shop.tenant)),
                &session_for(&shop.account, "o-2"),
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "the old account: {problem}");
            return;
        }
        last = answer;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the new account was never accepted: {last}");
}
