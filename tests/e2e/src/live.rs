//! The platform `cargo xtask up` leaves running for a person: a real node running the
//! storefront pods the operator builds, Traefik serving the sample tenant on
//! `acme-arena.localhost` with a certificate from the Key Vault test server (signed by a CA made
//! for the run), and a demo event created through the runtime's admin API with a staff token.
//!
//! Staff tokens come from [`EntraIssuer`], which serves plain HTTP on loopback. A Tenant's
//! `staffAuth.issuer` must be `https://`, and the runtime trusts only the public web roots
//! compiled into it, so the storefront pods cannot check tokens of a local issuer: their admin
//! API stays closed (the local tenant leaves `staffAuth` out). The admin API is served instead
//! by the same runtime binary on the host, with the pods' own ConfigMap and Secrets (the same
//! database) and the local issuer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tiqzy_crds::Platform;

use crate::router::RouterPorts;
use crate::{
    EntraIssuer, GATEWAY, KeyVaultServer, OperatorProcess, RealNodeHarness, Service, Traefik,
};

/// The sample tenant (`config/samples/tenant.yaml`).
pub const LIVE_TENANT: &str = "acme-arena";
/// The Platform's base domain: browsers and curl resolve `*.localhost` to loopback.
pub const LIVE_BASE_DOMAIN: &str = "localhost";
/// The demo event's slug: its page is `/events/opening-night`.
pub const DEMO_EVENT: &str = "opening-night";
pub const DEMO_EVENT_TITLE: &str = "Opening Night";
/// The demo event's ticket types: name, price in cents, capacity.
pub const DEMO_TICKET_TYPES: [(&str, i64, i32); 2] =
    [("Standing", 3_500, 500), ("Seated", 5_900, 200)];
/// The name of the tenant's certificate in the vault.
const CERTIFICATE: &str = "acme-arena-localhost";
/// The `aud` of staff tokens, the sample's `staffAuth.audience`.
const STAFF_AUDIENCE: &str = "api://tiqzy-acme-arena";
/// How long the printed staff token is valid.
const STAFF_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// How to bring the live platform up.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// The `tiqzy-operator` binary to run.
    pub operator: PathBuf,
    /// Where Traefik listens.
    pub ports: RouterPorts,
}

/// A running live platform. Dropping it stops everything and cleans the host (the real
/// node's cleanup). Field order is drop order.
#[derive(Debug)]
pub struct LivePlatform {
    /// `acme-arena.localhost`.
    pub host: String,
    /// What a browser on this machine opens, e.g. `https://acme-arena.localhost/`.
    pub url: String,
    /// The CA that signed the storefront's certificate (`curl --cacert`).
    pub ca_path: PathBuf,
    /// The runtime's admin API (on the host, see the module docs), e.g. `http://127.0.0.1:<port>`.
    pub admin_url: String,
    /// A staff token (all permissions) for the admin API, valid for [`STAFF_TOKEN_LIFETIME`].
    pub staff_token: String,
    _admin: Service,
    _operator: Service,
    pub router: Traefik,
    pub vault: KeyVaultServer,
    _issuer: EntraIssuer,
    pub platform: RealNodeHarness,
}

impl LivePlatform {
    /// Starts everything, saying what it is doing and how long each step took.
    pub async fn start(options: &LiveOptions) -> Result<Self> {
        crate::system::ensure_packages(&[("curl", "curl")])?;
        let platform = step(
            "starting etcd, the Kubernetes control plane, kwok, PostgreSQL, Redis, stripe-mock \
             and a real node (containerd, kubelet)",
            RealNodeHarness::start(),
        )
        .await?;
        let h = &platform.harness;
        let binary = step(
            "building the storefront runtime (cargo build -p tiqzy-runtime)",
            async { tokio::task::spawn_blocking(crate::build_runtime_binary).await? },
        )
        .await?;
        let image = step("importing the runtime image into containerd", async {
            platform.node.import_runtime_image(&binary)
        })
        .await?;
        let issuer = step(
            "starting the token issuer (npm oauth2-mock-server)",
            EntraIssuer::start("acme-directory", "unknown-app"),
        )
        .await?;
        let vault = step(
            "starting the Key Vault test server",
            KeyVaultServer::start(&h.dir, &issuer),
        )
        .await?;
        let router = step("starting Traefik", Traefik::start_on(h, options.ports)).await?;

        let host = format!("{LIVE_TENANT}.{LIVE_BASE_DOMAIN}");
        let ca_path = h.dir.join("storefront-ca.pem");
        let (chain_and_key, ca) = tenant_certificate(&host)?;
        std::fs::write(&ca_path, ca)?;
        vault.certificates.put_pem(CERTIFICATE, &chain_and_key)?;

        let operator = step("installing and starting the operator", async {
            let kubeconfig = crate::install_tiqzy(h).await?;
            configure_platform(h, &vault, &issuer, &image).await?;
            let mut operator = OperatorProcess::new(&options.operator, &kubeconfig, "operator-a");
            operator.args.extend(vault.operator_args());
            operator.start(h)
        })
        .await?;

        let port = match router.https_port {
            443 => String::new(),
            port => format!(":{port}"),
        };
        let url = format!("https://{host}{port}/");
        step(
            "applying the sample Tenant and waiting for its page through Traefik",
            async {
                apply_local_tenant(h)?;
                wait_for_page(&url, &host, router.https_port, &ca_path, "Acme Arena").await
            },
        )
        .await?;

        let (admin, admin_url) = step(
            "starting the admin API for the sample tenant",
            start_admin_api(&platform, &binary, &issuer),
        )
        .await?;
        let staff_token = issuer
            .staff_token(STAFF_AUDIENCE, "demo-staff", "admin", STAFF_TOKEN_LIFETIME)
            .await?;
        step("creating the demo event through the admin API", async {
            create_demo_event(&admin_url, &staff_token).await?;
            let page = format!("{url}events/{DEMO_EVENT}");
            wait_for_page(&page, &host, router.https_port, &ca_path, DEMO_EVENT_TITLE).await
        })
        .await?;
        Ok(Self {
            host,
            url,
            ca_path,
            admin_url,
            staff_token,
            _admin: admin,
            _operator: operator,
            router,
            vault,
            _issuer: issuer,
            platform,
        })
    }

    /// `curl` of `path` on the storefront, trusting only the run's CA, as a user on this
    /// machine asks for it.
    pub fn curl(&self, path: &str) -> Result<String> {
        curl(
            &format!("https://{}:{}{path}", self.host, self.router.https_port),
            &self.host,
            self.router.https_port,
            &self.ca_path,
        )
    }
}

/// Builds the operator as `cargo xtask up` runs it (`cargo build -p tiqzy-operator`).
pub fn build_operator_binary() -> Result<PathBuf> {
    let status = crate::cargo_command()
        .args(["build", "-p", "tiqzy-operator", "--bin", "tiqzy-operator"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build -p tiqzy-operator failed");
    }
    Ok(crate::target_dir().join("debug/tiqzy-operator"))
}

/// Runs `work`, saying what it does before and how long it took after.
pub async fn step<T>(what: &str, work: impl Future<Output = Result<T>>) -> Result<T> {
    eprintln!("tiqzy: {what} ...");
    let started = Instant::now();
    let result = work.await.with_context(|| what.to_owned());
    let outcome = if result.is_ok() { "done" } else { "failed" };
    eprintln!("tiqzy: {what}: {outcome} in {:.1?}", started.elapsed());
    result
}

/// A CA made for this run and a leaf for `host` it signed: (leaf, CA and key as PEM; the
/// CA's PEM).
fn tenant_certificate(host: &str) -> Result<(String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "Tiqzy local storefront CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let mut leaf = CertificateParams::new(vec![host.to_owned()])?;
    leaf.distinguished_name.push(DnType::CommonName, host);
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca)?;
    Ok((
        format!("{}{}{}", cert.pem(), ca.pem(), key.serialize_pem()),
        ca.pem(),
    ))
}

/// Points the Platform at what runs here: the imported image, PostgreSQL and stripe-mock on
/// the pod bridge's gateway, Traefik's IngressClass, the Key Vault test server.
async fn configure_platform(
    h: &crate::Harness,
    vault: &KeyVaultServer,
    issuer: &EntraIssuer,
    image: &str,
) -> Result<()> {
    let admin = h.kube.client().await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "kv-client" },
        "stringData": { "clientSecret": crate::pki::random_secret(24) },
    }))?;
    Api::<Secret>::namespaced(admin.clone(), "tiqzy-system")
        .create(&PostParams::default(), &secret)
        .await?;
    Api::<Platform>::all(admin)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": {
                "runtimeImage": image,
                "baseDomain": LIVE_BASE_DOMAIN,
                "postgres": { "host": GATEWAY },
                "stripe": { "apiBase": h.stripe.url },
                "routing": { "mode": "Ingress", "ingressClassName": crate::INGRESS_CLASS },
                "keyVault": {
                    "vaultUrl": vault.url,
                    "authorityHost": issuer.authority_host,
                    "auth": { "method": "ClientSecret", "clientId": "tiqzy-operator",
                              "tenantId": issuer.tenant_id,
                              "clientSecretRef": { "namespace": "tiqzy-system",
                                                   "name": "kv-client" } } } } })),
        )
        .await?;
    Ok(())
}

/// The committed sample Tenant, with what this machine needs: its certificate from the vault,
/// no cache (Redis listens on loopback, which pods cannot reach), no `staffAuth` (see the
/// module docs). Written to the run's directory and applied with kubectl.
fn apply_local_tenant(h: &crate::Harness) -> Result<()> {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/samples/tenant.yaml");
    let text = std::fs::read_to_string(&sample)?;
    let mut tenant: Value = serde_saphyr::from_str(&text)?;
    let spec = tenant["spec"]
        .as_object_mut()
        .context("the sample's spec")?;
    spec.remove("staffAuth");
    spec.insert(
        "tls".to_owned(),
        json!({ "keyVaultCertificate": CERTIFICATE }),
    );
    spec.insert("cache".to_owned(), json!({ "mode": "Disabled" }));
    let local = h.dir.join("tenant-local.json");
    std::fs::write(&local, serde_json::to_string_pretty(&tenant)?)?;
    let applied = h
        .kube
        .kubectl()
        .arg("apply")
        .arg("-f")
        .arg(&local)
        .output()?;
    if !applied.status.success() {
        bail!(
            "kubectl apply -f {} failed: {}",
            local.display(),
            String::from_utf8_lossy(&applied.stderr)
        );
    }
    Ok(())
}

/// Waits (5 minutes at most) until `url` answers 200 with a page containing `text`.
async fn wait_for_page(url: &str, host: &str, port: u16, ca: &Path, text: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let last = match curl(url, host, port, ca) {
            Ok(page) if page.contains(text) => return Ok(()),
            Ok(_) => format!("the page does not show {text:?}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("{url} did not answer within 5 minutes (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `curl --cacert <ca>` of `url`, with `host` on loopback at `port`; the body.
fn curl(url: &str, host: &str, port: u16, ca: &Path) -> Result<String> {
    let out = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "10"])
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(url)
        .output()
        .context("running curl")?;
    if !out.status.success() {
        bail!(
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The runtime binary on the host with the environment the operator gives the tenant's pods
/// (its ConfigMap and Secrets, so the same database), listening on loopback and trusting
/// staff tokens of `issuer`.
async fn start_admin_api(
    platform: &RealNodeHarness,
    binary: &Path,
    issuer: &EntraIssuer,
) -> Result<(Service, String)> {
    let h = &platform.harness;
    let client = h.kube.client().await?;
    let namespace = format!("tiqzy-{LIVE_TENANT}");
    let deployment = Api::<Deployment>::namespaced(client.clone(), &namespace)
        .get("storefront")
        .await?;
    let sources = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.env_from)
        .unwrap_or_default();
    let mut env = std::collections::BTreeMap::new();
    for source in sources {
        if let Some(map) = source.config_map_ref {
            let map = Api::<ConfigMap>::namespaced(client.clone(), &namespace)
                .get(&map.name)
                .await?;
            env.extend(map.data.unwrap_or_default());
        }
        if let Some(secret) = source.secret_ref {
            let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
                .get(&secret.name)
                .await?;
            env.extend(
                secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())),
            );
        }
    }
    let port = crate::free_port()?;
    env.insert("TIQZY_LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}"));
    env.insert(
        "TIQZY_METRICS_ADDR".to_owned(),
        format!("127.0.0.1:{}", crate::free_port()?),
    );
    env.insert("TIQZY_OAUTH_ISSUER".to_owned(), issuer.issuer());
    env.insert("TIQZY_OAUTH_AUDIENCE".to_owned(), STAFF_AUDIENCE.to_owned());
    // The credentials go through a file only root can read, not the command line.
    let env_file = h.dir.join("admin-api.env");
    let quoted: String = env
        .iter()
        .map(|(k, v)| format!("export {k}='{}'\n", v.replace('\'', r"'\''")))
        .collect();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&env_file)?
            .write_all(quoted.as_bytes())?;
    }
    let mut service = Service::spawn_long_lived(
        "admin-api",
        Path::new("/bin/sh"),
        vec![
            "-c".to_owned(),
            format!(". '{}' && exec '{}'", env_file.display(), binary.display()),
        ],
        &h.log_dir(),
    )?;
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    service
        .wait_ready(Duration::from_secs(60), || async {
            http.get(format!("{url}/readyz"))
                .send()
                .await?
                .error_for_status()?;
            Ok(())
        })
        .await?;
    Ok((service, url))
}

/// The demo event and its ticket types, through the admin API.
async fn create_demo_event(admin_url: &str, token: &str) -> Result<()> {
    let now = chrono::Utc::now();
    let starts = (now + chrono::Duration::days(30))
        .date_naive()
        .and_hms_opt(19, 0, 0)
        .context("a time")?
        .and_utc();
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let request = http
            .post(format!("{admin_url}{path}"))
            .bearer_auth(token)
            .json(&body);
        async move {
            let response = request.send().await?;
            let status = response.status();
            let text = response.text().await?;
            if status != reqwest::StatusCode::CREATED {
                bail!("POST {path}: {status}: {text}");
            }
            Ok(())
        }
    };
    post(
        "/api/admin/events".to_owned(),
        json!({
            "slug": DEMO_EVENT, "title": DEMO_EVENT_TITLE, "venue": "Acme Arena, Main Hall",
            "description": "The season opens. A demo event, created through the admin API with a staff token.",
            "starts_at": starts, "ends_at": starts + chrono::Duration::hours(3),
        }),
    )
    .await?;
    for (name, price, capacity) in DEMO_TICKET_TYPES {
        post(
            format!("/api/admin/events/{DEMO_EVENT}/ticket-types"),
            json!({
                "name": name, "price_minor": price, "currency": "EUR", "capacity": capacity,
                "per_order_limit": 6, "sales_start": now - chrono::Duration::hours(1),
                "sales_end": starts,
            }),
        )
        .await?;
    }
    Ok(())
}
