//! `tiqzy-payments` for the tests of the service and of the storefronts that use it: its own
//! ServiceAccount bound to the ClusterRole it is deployed with, a database of its own, tenants
//! as the operator leaves them (the `Tenant`, its namespace, the storefront's ServiceAccount
//! and a real token of it), Stripe's signature scheme, and the program itself as a child
//! process a test can kill and start again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::Harness;

/// The platform delivery key (`TIQZY_PAYMENTS_DELIVERY_KEY`) the tests' services derive each
/// tenant's delivery secret from.
pub const DELIVERY_KEY: &str = "tiqzy-test-delivery-key-5f1c0a9e";

/// The ClusterRole the service is deployed with.
const CLUSTER_ROLE: &str = include_str!("../../../payments/deploy/cluster-role.yaml");

/// The kubeconfig of the service's own ServiceAccount, bound to its ClusterRole; installed
/// (with the Tiqzy CRDs) once per test binary, so the service runs with exactly the
/// permissions it is deployed with.
pub fn service_kubeconfig() -> &'static Path {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    crate::once_per_binary::<PathBuf, _, _>(
        &INSTALLED,
        "installing the payments service's account",
        || async {
            let h = Harness::shared();
            let admin = h.kube.client().await?;
            crate::install_tiqzy_crds(&admin).await?;
            let role: Value = serde_saphyr::from_str(CLUSTER_ROLE)?;
            crate::install_account(h, &admin, ("tiqzy-payments-system", "tiqzy-payments"), role)
                .await
        },
    )
}

/// The harness's admin, once the CRDs and the service's account are installed.
pub async fn admin() -> kube::Client {
    service_kubeconfig();
    Harness::shared().kube.client().await.expect("admin client")
}

/// A client acting as the service's ServiceAccount, for a service run in the test's process.
pub async fn service_client() -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(service_kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config");
    kube::Client::try_from(config).expect("client")
}

/// A database named `<prefix>_<random>` on the harness's PostgreSQL that no other test uses;
/// its admin URL.
pub async fn fresh_database(prefix: &str) -> String {
    let h = Harness::shared();
    let name = format!("{prefix}_{}", uuid_like());
    let (db, connection) =
        tokio_postgres::connect(&h.postgres.admin_config("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect as admin");
    let connection = tokio::spawn(connection);
    // The name is ours (a prefix and hex digits), never input.
    db.simple_query(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    drop(db);
    let _ = connection.await;
    h.postgres.admin_url(&name)
}

/// 32 hex digits no other call in this machine's tests returns.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{:08x}{:08x}", nanos as u64, std::process::id(), n)
}

/// A token of ServiceAccount `namespace/account` for `audience` (TokenRequest API), valid
/// for an hour.
pub async fn mint(admin: &kube::Client, namespace: &str, account: &str, audience: &str) -> String {
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": { "audiences": [audience], "expirationSeconds": 3600 }
    }))
    .expect("request");
    Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("TokenRequest")
        .status
        .expect("a token")
        .token
}

/// The `Tenant` `name` with `spec`.
pub async fn create_tenant(admin: &kube::Client, name: &str, spec: Value) {
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

/// The ServiceAccount `account` in `namespace`, the namespace created first when `new`.
pub async fn create_account(admin: &kube::Client, namespace: &str, account: &str, new: bool) {
    if new {
        Api::<Namespace>::all(admin.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({ "metadata": { "name": namespace } }))
                    .expect("namespace"),
            )
            .await
            .expect("create the namespace");
    }
    Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": account } }))
                .expect("service account"),
        )
        .await
        .expect("create the ServiceAccount");
}

/// A tenant as the operator leaves it: the `Tenant` with `spec`, its namespace
/// `tiqzy-<name>` and the storefront's ServiceAccount; the storefront's token for the
/// payments service.
pub async fn tenant_with_storefront(admin: &kube::Client, name: &str, spec: Value) -> String {
    create_tenant(admin, name, spec).await;
    let namespace = format!("tiqzy-{name}");
    let account = tiqzy_crds::payments::STOREFRONT_SERVICE_ACCOUNT;
    create_account(admin, &namespace, account, true).await;
    mint(admin, &namespace, account, tiqzy_crds::payments::AUDIENCE).await
}

/// The secret the service signs `tenant`'s deliveries with, as the operator writes it into
/// the storefront's `TIQZY_PAYMENTS_WEBHOOK_SECRETS`.
pub fn delivery_secret(tenant: &str) -> String {
    tiqzy_crds::payments::delivery_secret(DELIVERY_KEY.as_bytes(), tenant)
}

/// `Stripe-Signature` over `body` with `secret` at unix time `t`, Stripe's own scheme.
pub fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    stripe_webhook::Webhook::generate_test_header(body, secret, Some(t))
}

/// Checkout sessions Stripe knows the buyer paid: id -> (amount_total, payment intent).
pub type PaidSessions = std::collections::HashMap<String, (i64, String)>;

/// Edits stripe-mock's `answer` to `method` `uri` (sent with idempotency key `key`) into the
/// one Stripe would give, for what stateless stripe-mock cannot play: an object created under
/// a key has an id of its own (the same key, the same id), and a session in `paid` reads back
/// as paid, also when listed by its payment intent.
pub fn stripe_answer(
    paid: &PaidSessions,
    method: &http::Method,
    uri: &http::Uri,
    key: Option<&str>,
    answer: &mut Value,
) {
    let path = uri.path();
    if method == http::Method::POST {
        if let (Some(key), Some(id)) = (key, answer["id"].as_str())
            && !path.ends_with("/expire")
        {
            answer["id"] = json!(id_under(id, key));
        }
        return;
    }
    let report = |session: &mut Value, id: &str| {
        if let Some((amount, intent)) = paid.get(id) {
            session["id"] = json!(id);
            session["payment_status"] = json!("paid");
            session["status"] = json!("complete");
            session["amount_total"] = json!(amount);
            session["currency"] = json!("eur");
            session["payment_intent"] = json!(intent);
        }
    };
    if let Some(id) = path.strip_prefix("/v1/checkout/sessions/") {
        report(answer, id);
    } else if path == "/v1/checkout/sessions" {
        let wanted = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|p| p.strip_prefix("payment_intent="));
        let template = answer["data"][0].clone();
        let sessions: Vec<Value> = paid
            .iter()
            .filter(|(_, (_, intent))| Some(intent.as_str()) == wanted)
            .map(|(id, _)| {
                let mut session = template.clone();
                report(&mut session, id);
                session
            })
            .collect();
        answer["data"] = json!(sessions);
    }
}

/// The id of the object created under idempotency key `key`: stripe-mock's id with its last
/// part replaced by one derived from the key.
fn id_under(fixture_id: &str, key: &str) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let prefix = fixture_id
        .rsplit_once('_')
        .map_or("obj", |(prefix, _)| prefix);
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    format!("{prefix}_{:016x}", hasher.finish())
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The service's `/metrics` text once it has a line starting with `line` (as the outbox's
/// gauges are refreshed about once a second); fails after a minute.
pub async fn metrics_with(service: &str, line: &str) -> String {
    let mut text = String::new();
    for _ in 0..600 {
        text = reqwest::get(format!("{service}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        if text.lines().any(|l| l.starts_with(line)) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no `{line}` in the service's metrics:\n{text}")
}

/// The debug `tiqzy-payments` binary, built once per test binary (a no-op when it is up to
/// date; see [`crate::build_programs`]).
pub fn payments_binary() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let binary = crate::build_programs()
            .map_err(|e| format!("{e:#}"))?
            .join("tiqzy-payments");
        std::fs::canonicalize(&binary).map_err(|e| format!("{}: {e}", binary.display()))
    });
    match built {
        Ok(path) => path,
        Err(e) => panic!("building tiqzy-payments failed: {e}"),
    }
}

/// `tiqzy-payments` running as a program of its own, as its ServiceAccount, on a fixed
/// loopback port (so Stripe and storefronts find it again after a restart). It dies with the
/// thread that started it and is killed when dropped.
#[derive(Debug)]
pub struct PaymentsProcess {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl PaymentsProcess {
    /// Starts the program with `env` (`TIQZY_PAYMENTS_LISTEN_ADDR` and `KUBECONFIG` are
    /// set here) and waits until it serves `/readyz`.
    pub async fn start(env: &[(&str, &str)]) -> Result<Self> {
        let port = crate::free_port()?;
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.push((
            "TIQZY_PAYMENTS_LISTEN_ADDR".into(),
            format!("127.0.0.1:{port}"),
        ));
        env.push((
            "KUBECONFIG".into(),
            service_kubeconfig().display().to_string(),
        ));
        let log = Harness::shared()
            .log_dir()
            .join(format!("tiqzy-payments-{port}.log"));
        let mut process = Self {
            url: format!("http://127.0.0.1:{port}"),
            env,
            child: None,
            log,
        };
        process.restart().await?;
        Ok(process)
    }

    /// Ends the program at once (SIGKILL), as a crash or a node failure would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the program again with the same environment (after [`Self::kill`]).
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--"])
            .arg(payments_binary())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        self.child = Some(command.spawn().context("starting tiqzy-payments")?);
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "tiqzy-payments exited ({status}):\n{}",
                    crate::process::log_tail(&self.log, 40)
                );
            }
            if let Ok(answer) = http.get(format!("{}/readyz", self.url)).send().await
                && answer.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "tiqzy-payments was not ready within a minute:\n{}",
            crate::process::log_tail(&self.log, 40)
        )
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for PaymentsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
