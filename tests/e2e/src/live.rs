//! The platform `cargo xtask up` leaves running for a person: a real node running the
//! storefront pods the operator builds, Traefik serving the sample tenant on
//! `acme-arena.localhost` with a certificate from the Key Vault test server (signed by a CA made
//! for the run), and a demo event created through the storefront's admin API with a staff
//! token.
//!
//! Staff tokens come from a [`StaffIssuer`] serving HTTPS on the pod bridge's gateway (port
//! 443, which the storefront's egress policy opens), with a CA made for the run that the pods
//! trust through the Platform's `caSecretRef`, as a company's own sign-in would be set up.
//!
//! Payments work as on a cluster: the operator runs `tiqzy-payments` (two pods on the node,
//! stripe-mock behind it), the storefront finds it by its cluster DNS name, and Stripe's
//! webhooks reach it on `payments.localhost` through Traefik. The sample tenant gets a
//! (stripe-mock) connected account here, so its primary sales are on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tiqzy_crds::Platform;

use crate::router::RouterPorts;
use crate::{
    EntraIssuer, GATEWAY, KeyVaultServer, OperatorProcess, RealNodeHarness, Service, StaffIssuer,
    Traefik,
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
/// The sample tenant's connected account on this machine (stripe-mock accepts any).
const LOCAL_CONNECTED_ACCOUNT: &str = "acct_1AcmeArenaLocal";
/// The name of the tenant's certificate in the vault.
const CERTIFICATE: &str = "acme-arena-localhost";
/// The `aud` of staff tokens, the sample's `staffAuth.audience`.
const STAFF_AUDIENCE: &str = "api://tiqzy-acme-arena";
/// How long the printed staff token is valid, in hours.
const STAFF_TOKEN_HOURS: i64 = 12;

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
    /// A staff token (all permissions) for the storefront's admin API (`<url>api/admin/...`),
    /// valid for [`STAFF_TOKEN_HOURS`].
    pub staff_token: String,
    /// `payments.localhost`: the payments service's host, where Stripe's webhooks arrive.
    pub payments_host: String,
    /// Where Stripe sends its events, e.g. `https://payments.localhost/webhooks/stripe`
    /// (Traefik's default certificate: the operator names none for this host).
    pub webhook_url: String,
    _operator: Service,
    /// Mailpit: the storefront's mail (SMTP on the pod bridge's gateway), its web UI at `url`.
    pub mail: crate::mailpit::Mailpit,
    /// Jaeger, the trace backend: OTLP receivers on the pod bridge's gateway, so storefront
    /// pods (and the operator, on the host) can send to it; its query API on loopback.
    pub traces: crate::jaeger::Jaeger,
    pub router: Traefik,
    pub vault: KeyVaultServer,
    _entra: EntraIssuer,
    _staff: StaffIssuer,
    pub platform: RealNodeHarness,
}

impl LivePlatform {
    /// Starts everything, saying what it is doing and how long each step took.
    pub async fn start(options: &LiveOptions) -> Result<Self> {
        crate::system::ensure_packages(&[("curl", "curl")])?;
        let platform = step(
            "starting etcd, the Kubernetes control plane, kwok, PostgreSQL, Redis, stripe-mock \
             and a real node (containerd, kubelet, kube-router, kube-proxy, CoreDNS; their first \
             builds take many minutes)",
            RealNodeHarness::start(),
        )
        .await?;
        let h = &platform.harness;
        let binary = step(
            "building the storefront runtime and the payments service \
             (cargo build -p tiqzy-operator -p tiqzy-runtime -p tiqzy-payments)",
            async { tokio::task::spawn_blocking(crate::build_runtime_binaries).await? },
        )
        .await?;
        let image = step("importing the runtime image into containerd", async {
            platform.node.import_runtime_image(&binary)
        })
        .await?;
        let issuer = step(
            "starting the Entra ID token endpoint for Key Vault (npm oauth2-mock-server)",
            EntraIssuer::start("acme-directory", "unknown-app"),
        )
        .await?;
        let staff = step(
            "starting the staff sign-in issuer on the pod network (npm oauth2-mock-server)",
            StaffIssuer::start_tls(GATEWAY, &h.dir.join("staff-issuer")),
        )
        .await?;
        let vault = step(
            "starting the Key Vault test server",
            KeyVaultServer::start(&h.dir, &issuer),
        )
        .await?;
        let router = step("starting Traefik", Traefik::start_on(h, options.ports)).await?;
        let mail = step(
            "starting Mailpit, which receives the storefront's mail (its first build takes a \
             few minutes)",
            crate::mailpit::Mailpit::start_on(&h.dir.join("mailpit"), GATEWAY),
        )
        .await?;
        let traces = step(
            "starting Jaeger, the trace backend (its first build takes about ten minutes)",
            crate::jaeger::Jaeger::start_on(&h.dir.join("jaeger"), GATEWAY),
        )
        .await?;

        let host = format!("{LIVE_TENANT}.{LIVE_BASE_DOMAIN}");
        let ca_path = h.dir.join("storefront-ca.pem");
        let (chain_and_key, ca) = tenant_certificate(&host)?;
        std::fs::write(&ca_path, ca)?;
        vault.certificates.put_pem(CERTIFICATE, &chain_and_key)?;

        let operator = step("installing and starting the operator", async {
            let kubeconfig = crate::install_tiqzy(h).await?;
            let otlp = traces.otlp_http_endpoint();
            configure_platform(h, &vault, &issuer, &staff, &image, mail.smtp_port, &otlp).await?;
            let mut operator = OperatorProcess::new(&options.operator, &kubeconfig, "operator-a");
            operator.args.extend(vault.operator_args());
            operator
                .env
                .push(("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), otlp));
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
                apply_local_tenant(h, &staff)?;
                wait_for_page(&url, &host, router.https_port, &ca_path, "Acme Arena")
                    .await
                    .map_err(|e| e.context(tenant_state(h)))
            },
        )
        .await?;

        step(
            "waiting for the payments service (tiqzy-payments, stripe-mock behind it)",
            wait_for_payments(h),
        )
        .await?;
        let payments_host = format!("payments.{LIVE_BASE_DOMAIN}");
        let webhook_url = format!("https://{payments_host}{port}/webhooks/stripe");
        step(
            "waiting for Traefik to route Stripe's webhooks to the payments service",
            wait_for_webhook_route(&webhook_url, &payments_host, router.https_port),
        )
        .await?;

        let staff_token = staff.admin_token(STAFF_AUDIENCE, STAFF_TOKEN_HOURS).await?;
        step("creating the demo event through the admin API", async {
            let admin = storefront_client(&host, router.https_port, &ca_path)?;
            create_demo_event(&admin, &url, &staff_token).await?;
            let page = format!("{url}events/{DEMO_EVENT}");
            wait_for_page(&page, &host, router.https_port, &ca_path, DEMO_EVENT_TITLE).await
        })
        .await?;
        Ok(Self {
            host,
            url,
            ca_path,
            staff_token,
            payments_host,
            webhook_url,
            _operator: operator,
            mail,
            traces,
            router,
            vault,
            _entra: issuer,
            _staff: staff,
            platform,
        })
    }

    /// An HTTPS client for the storefront (its host on the router's loopback port), trusting
    /// only the run's CA.
    pub fn client(&self) -> Result<reqwest::Client> {
        storefront_client(&self.host, self.router.https_port, &self.ca_path)
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

/// Builds the operator as `cargo xtask up` runs it (with the storefront runtime and the payments
/// service: see [`crate::build_programs`]).
pub fn build_operator_binary() -> Result<PathBuf> {
    Ok(crate::build_programs()?.join("tiqzy-operator"))
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

/// Points the Platform at what runs here: the imported image, PostgreSQL, Redis over TLS,
/// stripe-mock and Mailpit's SMTP on the pod bridge's gateway, Traefik's IngressClass, the Key
/// Vault test server, and the CAs of Redis and the staff issuer.
async fn configure_platform(
    h: &crate::Harness,
    vault: &KeyVaultServer,
    issuer: &EntraIssuer,
    staff: &StaffIssuer,
    image: &str,
    smtp_port: u16,
    otlp_endpoint: &str,
) -> Result<()> {
    let admin = h.kube.client().await?;
    let secrets = Api::<Secret>::namespaced(admin.clone(), "tiqzy-system");
    for (name, data) in [
        (
            "kv-client",
            json!({ "clientSecret": crate::pki::random_secret(24) }),
        ),
        ("redis-ca", json!({ "ca.crt": h.redis.ca_pem })),
        ("staff-issuer-ca", json!({ "ca.crt": staff.ca_pem })),
    ] {
        let secret: Secret =
            serde_json::from_value(json!({ "metadata": { "name": name }, "stringData": data }))?;
        secrets.create(&PostParams::default(), &secret).await?;
    }
    Api::<Platform>::all(admin)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": {
                "runtimeImage": image,
                "baseDomain": LIVE_BASE_DOMAIN,
                "postgres": { "host": GATEWAY },
                "redis": { "url": format!("rediss://{GATEWAY}:{}", h.redis.tls_port),
                           "caSecretRef": { "namespace": "tiqzy-system", "name": "redis-ca" } },
                "stripe": { "apiBase": h.stripe.url },
                "mail": { "host": GATEWAY, "port": smtp_port, "tls": "None",
                          "from": format!("tickets@{LIVE_BASE_DOMAIN}.test") },
                "caSecretRef": { "namespace": "tiqzy-system", "name": "staff-issuer-ca" },
                "routing": { "mode": "Ingress", "ingressClassName": crate::INGRESS_CLASS },
                "observability": { "traces": { "endpoint": otlp_endpoint } },
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
/// staff sign-in through the local issuer. Written to the run's directory and applied with
/// kubectl.
fn apply_local_tenant(h: &crate::Harness, staff: &StaffIssuer) -> Result<()> {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/samples/tenant.yaml");
    let text = std::fs::read_to_string(&sample)?;
    let mut tenant: Value = serde_saphyr::from_str(&text)?;
    let spec = tenant["spec"]
        .as_object_mut()
        .context("the sample's spec")?;
    spec.insert(
        "staffAuth".to_owned(),
        json!({ "issuer": staff.url, "audience": STAFF_AUDIENCE }),
    );
    spec.insert(
        "tls".to_owned(),
        json!({ "keyVaultCertificate": CERTIFICATE }),
    );
    spec.insert(
        "payments".to_owned(),
        json!({ "connectedAccountId": LOCAL_CONNECTED_ACCOUNT }),
    );
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

/// Waits (5 minutes at most) for the Platform's `PaymentsServiceReady=True` and the sample
/// tenant's `PaymentsReady=True`: the service has a ready pod and the storefront is told
/// where it is.
async fn wait_for_payments(h: &crate::Harness) -> Result<()> {
    let admin = h.kube.client().await?;
    let platforms = Api::<Platform>::all(admin.clone());
    let tenants = Api::<tiqzy_crds::Tenant>::all(admin);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let platform = platforms.get("default").await?;
        let tenant = tenants.get(LIVE_TENANT).await?;
        let status = |conditions: Option<
            &Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
        >,
                      type_: &str| {
            conditions
                .and_then(|all| all.iter().find(|c| c.type_ == type_))
                .map(|c| (c.status.clone(), format!("{}: {}", c.reason, c.message)))
        };
        let service = status(
            platform.status.as_ref().map(|s| &s.conditions),
            "PaymentsServiceReady",
        );
        let storefront = status(
            tenant.status.as_ref().map(|s| &s.conditions),
            "PaymentsReady",
        );
        let ready = |c: &Option<(String, String)>| c.as_ref().is_some_and(|c| c.0 == "True");
        if ready(&service) && ready(&storefront) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the payments service is not ready after 5 minutes: Platform \
                 PaymentsServiceReady {service:?}, Tenant PaymentsReady {storefront:?}; \
                 kubectl -n tiqzy-system get pods -l app.kubernetes.io/name=tiqzy-payments"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the cluster says about the sample tenant: its conditions, its pods and their recent
/// events, for an error that has to explain why the page never came.
fn tenant_state(h: &crate::Harness) -> String {
    let namespace = format!("tiqzy-{LIVE_TENANT}");
    let queries: [&[&str]; 3] = [
        &[
            "get",
            "tenant",
            LIVE_TENANT,
            "-o",
            "jsonpath={range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{\"\\n\"}{end}",
        ],
        &[
            "get",
            "pods,endpointslices,ingress",
            "-n",
            &namespace,
            "-o",
            "wide",
        ],
        &[
            "get",
            "events",
            "-n",
            &namespace,
            "--sort-by=.lastTimestamp",
        ],
    ];
    let mut state = String::from("the sample tenant's state:");
    for args in queries {
        let shown = match h.kube.kubectl().args(args).output() {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("kubectl failed: {e}"),
        };
        let tail: Vec<&str> = shown.lines().rev().take(30).collect();
        state.push_str(&format!("\n$ kubectl {}\n", args.join(" ")));
        for line in tail.into_iter().rev() {
            state.push_str(line);
            state.push('\n');
        }
    }
    state
}

/// Waits (5 minutes at most) until `url` answers 200 with a page containing `text`.
/// Waits (2 minutes at most) until the router sends `url` to the payments service: an unsigned
/// call is then refused by the service (400), not unknown to the router (404). Traefik picks up
/// a new Ingress a few seconds after the service is ready.
async fn wait_for_webhook_route(url: &str, host: &str, port: u16) -> Result<()> {
    let client = reqwest::Client::builder()
        .resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        // The operator names no certificate for the payments host: Traefik's default one.
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let unsigned = client
            .post(url)
            .header("stripe-signature", "t=1,v1=00")
            .body("{}");
        let last = match unsigned.send().await {
            Ok(answer) if answer.status() == reqwest::StatusCode::BAD_REQUEST => return Ok(()),
            Ok(answer) => format!("HTTP {}", answer.status()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("{url} is not routed to the payments service after 2 minutes (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

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

/// An HTTPS client for the storefront on `host`: loopback `port`, trusting only the run's CA.
fn storefront_client(host: &str, port: u16, ca: &Path) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?)
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// The demo event and its ticket types, through the admin API.
async fn create_demo_event(http: &reqwest::Client, url: &str, token: &str) -> Result<()> {
    let now = chrono::Utc::now();
    let starts = (now + chrono::Duration::days(30))
        .date_naive()
        .and_hms_opt(19, 0, 0)
        .context("a time")?
        .and_utc();
    let base = url.trim_end_matches('/');
    let post = |path: String, body: Value| {
        let request = http
            .post(format!("{base}{path}"))
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
