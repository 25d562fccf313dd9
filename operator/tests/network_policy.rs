//! The operator's NetworkPolicies, enforced on a real node (kube-router's firewall, see
//! `tests/e2e/src/kube_router.rs`), as a tenant's neighbours meet them: a pod of another
//! namespace finds the storefront's port closed, a pod slipped into the tenant's namespace can
//! reach neither the storefront nor PostgreSQL, while a pod of a namespace labelled as the
//! router's gets the page, the storefront reaches its database (and not other ports on the
//! host), and the host and Traefik on it keep serving the page. The payments service, reached
//! by its cluster DNS name through its Service (kube-proxy), takes calls from storefronts only.
//!
//! Probes are pause containers (there is no shell in any image): the test connects from their
//! network namespaces, so the packets carry the probe pod's address.
//!
//! Its own test binary, because it uses [`RealNodeHarness`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tiqzy_crds::{Platform, Tenant};
use tiqzy_e2e::{GATEWAY, OperatorProcess, PAUSE_IMAGE, RealNodeHarness, Traefik, connect_from};

mod common;
use common::{condition, create_tenant};

const TENANT: &str = "fenced-shop";
const DISPLAY_NAME: &str = "Fenced Arena Tickets";
/// A tenant kept suspended: its namespace and policies exist, its storefront does not.
const NEIGHBOUR: &str = "fenced-neighbour";
/// The storefront's ports (`operator/src/build/mod.rs`).
const HTTP_PORT: u16 = 8080;
const METRICS_PORT: u16 = 9090;
/// The payments service's port (`operator/src/build/payments_service.rs`).
const PAYMENTS_PORT: u16 = 8080;
/// How long a single connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long kube-router may take to turn a new pod or policy into rules.
const ENFORCED_WITHIN: Duration = Duration::from_secs(45);

/// What this binary's tests share: the router, the operator, the running storefront and the
/// probe pods around it.
struct Installed {
    router: Traefik,
    _operator: tiqzy_e2e::Service,
    storefront: Probe,
    /// A pod in a namespace nobody labelled.
    outsider: Probe,
    /// A pod in a namespace labelled `tiqzy.io/storefront-ingress`, where a cluster's router runs.
    router_pod: Probe,
    /// A pod that is not the storefront, in the tenant's own namespace.
    stowaway: Probe,
    /// A pod in another tenant's namespace.
    neighbour: Probe,
}

/// A pod on the real node: its address and the PID whose network namespace is the pod's.
#[derive(Debug, Clone)]
struct Probe {
    name: String,
    ip: String,
    pid: u32,
}

fn installed() -> &'static Installed {
    static INSTALLED: OnceLock<Result<Installed, String>> = OnceLock::new();
    common::once_per_binary(&INSTALLED, install)
}

async fn install() -> anyhow::Result<Installed> {
    let started = Instant::now();
    let rn = RealNodeHarness::shared();
    let h = &rn.harness;
    eprintln!("real node harness up after {:.1?}", started.elapsed());
    let runtime = tokio::task::spawn_blocking(tiqzy_e2e::build_runtime_binaries).await??;
    let image = rn.node.import_runtime_image(&runtime)?;
    let router = Traefik::start(h).await?;
    let kubeconfig = tiqzy_e2e::install_tiqzy(h).await?;
    let admin = h.kube.client().await?;
    // The pods reach PostgreSQL on the bridge gateway; the image is the one just imported.
    Api::<Platform>::all(admin.clone())
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": {
                "runtimeImage": image,
                "postgres": { "host": GATEWAY },
                "routing": { "mode": "Ingress",
                             "ingressClassName": tiqzy_e2e::INGRESS_CLASS } } })),
        )
        .await?;
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    let operator = OperatorProcess::new(binary, &kubeconfig, "operator-network-policy").start(h)?;

    create_tenant(
        &admin,
        TENANT,
        json!({ "displayName": DISPLAY_NAME, "currency": "EUR",
                "cache": { "mode": "Disabled" },
                "storefront": { "replicas": { "min": 1, "max": 1 } } }),
    )
    .await;
    create_tenant(
        &admin,
        NEIGHBOUR,
        json!({ "displayName": "Next Door", "currency": "EUR",
                "cache": { "mode": "Disabled" },
                "storefront": { "suspended": true } }),
    )
    .await;
    let namespace = format!("tiqzy-{TENANT}");
    wait_available(&admin, TENANT).await?;
    let storefront = running_storefront(&admin, &namespace).await?;

    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for (name, labels) in [
        ("fenced-outsiders", json!({})),
        (
            "fenced-router",
            json!({ "tiqzy.io/storefront-ingress": "" }),
        ),
    ] {
        let ns: Namespace =
            serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } }))?;
        namespaces.create(&PostParams::default(), &ns).await?;
    }
    let neighbour_namespace = format!("tiqzy-{NEIGHBOUR}");
    wait_for_namespace(&namespaces, &neighbour_namespace).await?;
    let (outsider, router_pod, stowaway, neighbour) = tokio::try_join!(
        probe_pod(&admin, "fenced-outsiders", "outsider"),
        probe_pod(&admin, "fenced-router", "router"),
        probe_pod(&admin, &namespace, "stowaway"),
        probe_pod(&admin, &neighbour_namespace, "neighbour"),
    )?;
    let storefront = Probe {
        pid: rn.node.pod_sandbox_pid(&namespace, &storefront.0)?,
        name: storefront.0,
        ip: storefront.1,
    };
    Ok(Installed {
        router,
        _operator: operator,
        storefront,
        outsider,
        router_pod,
        stowaway,
        neighbour,
    })
}

/// Waits (4 minutes at most) for `StorefrontAvailable=True`.
async fn wait_available(admin: &kube::Client, tenant: &str) -> anyhow::Result<()> {
    let tenants: Api<Tenant> = Api::all(admin.clone());
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let t = tenants.get(tenant).await?;
        if condition(&t, "StorefrontAvailable").is_some_and(|c| c.status == "True") {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "StorefrontAvailable never became True; tenant status: {:#?}; logs in {}",
                t.status,
                RealNodeHarness::shared().harness.log_dir().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The name and IP of the tenant's running storefront pod.
async fn running_storefront(
    admin: &kube::Client,
    namespace: &str,
) -> anyhow::Result<(String, String)> {
    let pods = Api::<Pod>::namespaced(admin.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    pods.items
        .into_iter()
        .find_map(|p| {
            let status = p.status.as_ref()?;
            (status.phase.as_deref() == Some("Running"))
                .then(|| Some((p.name_any(), status.pod_ip.clone()?)))
                .flatten()
        })
        .ok_or_else(|| anyhow::anyhow!("no running storefront pod in {namespace}"))
}

async fn wait_for_namespace(namespaces: &Api<Namespace>, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while namespaces.get_opt(name).await?.is_none() {
        if Instant::now() > deadline {
            anyhow::bail!("the operator never created namespace {name}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// A pod running only the pause image (as Pod Security `restricted` wants it), once Running.
async fn probe_pod(admin: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<Probe> {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": "fenced-probe" } },
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65535,
                                 "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "pause", "image": PAUSE_IMAGE, "imagePullPolicy": "Never",
                "securityContext": { "allowPrivilegeEscalation": false,
                                     "readOnlyRootFilesystem": true,
                                     "capabilities": { "drop": ["ALL"] } },
            }],
        },
    }))?;
    // A brand-new namespace takes pods once its default ServiceAccount exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("pod {namespace}/{name} not created yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    loop {
        let p = pods.get(name).await?;
        let status = p.status.unwrap_or_default();
        if status.phase.as_deref() == Some("Running")
            && let Some(ip) = status.pod_ip
        {
            let pid = RealNodeHarness::shared()
                .node
                .pod_sandbox_pid(namespace, name)?;
            return Ok(Probe {
                name: format!("{namespace}/{name}"),
                ip,
                pid,
            });
        }
        if Instant::now() > deadline {
            anyhow::bail!("probe pod {namespace}/{name} is not Running: {status:#?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What a client in `from`'s network namespace gets when it connects to `to`.
#[derive(Debug, PartialEq)]
enum Reach {
    Connected,
    /// Not connected, and why (kube-router rejects what no policy allows: refused).
    Blocked(std::io::ErrorKind),
}

fn reach(from: &Probe, to: SocketAddr) -> Reach {
    match connect_from(from.pid, to, CONNECT_TIMEOUT) {
        Ok(_) => Reach::Connected,
        Err(e) => Reach::Blocked(e.kind()),
    }
}

/// Polls (off the async runtime) until `from` reaching `to` gives `wanted`, at most
/// [`ENFORCED_WITHIN`]; returns what it last got.
async fn settle(from: &Probe, to: SocketAddr, wanted: fn(&Reach) -> bool) -> Reach {
    let from = from.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + ENFORCED_WITHIN;
        loop {
            let got = reach(&from, to);
            if wanted(&got) || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
    .await
    .expect("probe thread")
}

/// Refused or timed out: what a client notices when a firewall stops it (any other error
/// would say nothing about the policies).
fn blocked(r: &Reach) -> bool {
    matches!(
        r,
        Reach::Blocked(std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut)
    )
}

fn connected(r: &Reach) -> bool {
    *r == Reach::Connected
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("socket address")
}

/// A plain HTTP/1.1 GET of `/` over `stream`, the whole response as text.
fn http_get(stream: TcpStream, host: &str) -> String {
    http_get_path(stream, host, "/")
}

/// A plain HTTP/1.1 GET of `path` over `stream`, the whole response as text.
fn http_get_path(mut stream: TcpStream, host: &str, path: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

fn storefront_host() -> String {
    format!("{TENANT}.{}", tiqzy_e2e::BASE_DOMAIN)
}

fn postgres() -> SocketAddr {
    addr(GATEWAY, RealNodeHarness::shared().harness.postgres.port)
}

/// Who may open the storefront's port: its router's namespace and its own node, nobody else.
#[tokio::test]
async fn only_the_router_reaches_the_storefront() {
    let i = installed();
    let web = addr(&i.storefront.ip, HTTP_PORT);

    for intruder in [&i.outsider, &i.neighbour, &i.stowaway] {
        let got = settle(intruder, web, blocked).await;
        assert!(
            blocked(&got),
            "{} reached the storefront {web}: {got:?}",
            intruder.name
        );
        eprintln!("{} -> storefront {web}: {got:?}", intruder.name);
    }

    // A router running as a pod, in a namespace labelled for it, gets the page (once
    // kube-router has put the new pod into the namespace's set)...
    let got = settle(&i.router_pod, web, connected).await;
    assert_eq!(got, Reach::Connected, "the router's namespace is let in");
    let from = i.router_pod.pid;
    let page = tokio::task::spawn_blocking(move || {
        http_get(
            connect_from(from, web, CONNECT_TIMEOUT).expect("connect"),
            &storefront_host(),
        )
    })
    .await
    .expect("http thread");
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains(DISPLAY_NAME),
        "the router pod did not get the storefront page: {page}"
    );
    // ... but not the metrics port, which only monitoring may scrape.
    let metrics = addr(&i.storefront.ip, METRICS_PORT);
    let got = reach(&i.router_pod, metrics);
    assert!(blocked(&got), "the router pod reached {metrics}: {got:?}");

    // The node reaches its pods whatever the policies say: the host (tests, kubelet probes)
    // and Traefik, which runs on the host, proxy to the pod IP.
    let ip = i.storefront.ip.clone();
    let page = tokio::task::spawn_blocking(move || {
        let stream = TcpStream::connect_timeout(&addr(&ip, HTTP_PORT), CONNECT_TIMEOUT)
            .expect("the host connects to the pod");
        http_get(stream, &storefront_host())
    })
    .await
    .expect("http thread");
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains(DISPLAY_NAME),
        "the host did not get the page: {page}"
    );
    let https = i.router.https_port;
    let through_router = reqwest::Client::builder()
        .resolve(
            &storefront_host(),
            SocketAddr::from(([127, 0, 0, 1], https)),
        )
        // No certificate configured for the tenant: Traefik presents its default one.
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let url = format!("https://{}:{https}/", storefront_host());
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        let last = match through_router.get(&url).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => {
                break r.text().await.expect("body");
            }
            Ok(r) => format!("{}", r.status()),
            Err(e) => format!("{e:?}"),
        };
        assert!(
            Instant::now() < deadline,
            "no page through Traefik in 60 s (last: {last}); its log: {}",
            i.router.log_path().display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(page.contains(DISPLAY_NAME), "{page}");
}

/// What may leave the tenant's namespace: the storefront reaches its database and nothing it
/// was not granted; any other pod there reaches nothing.
#[tokio::test]
async fn only_the_storefront_reaches_the_database() {
    let i = installed();
    let database = postgres();
    // stripe-mock listens on the gateway too, on a port no policy grants a storefront.
    let stripe: SocketAddr = RealNodeHarness::shared()
        .harness
        .stripe
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("stripe-mock address");

    // The port is open to a pod that no policy restricts ...
    let got = settle(&i.outsider, stripe, connected).await;
    assert_eq!(
        got,
        Reach::Connected,
        "{stripe} is open to unrestricted pods"
    );
    // ... and closed to the storefront, whose egress is DNS, HTTPS and its stores.
    let got = settle(&i.storefront, stripe, blocked).await;
    assert!(blocked(&got), "the storefront reached {stripe}: {got:?}");
    eprintln!("storefront -> {stripe}: {got:?}");
    let got = reach(&i.storefront, database);
    assert_eq!(got, Reach::Connected, "the storefront reaches PostgreSQL");

    for intruder in [&i.stowaway, &i.neighbour] {
        let got = settle(intruder, database, blocked).await;
        assert!(
            blocked(&got),
            "{} reached PostgreSQL at {database}: {got:?}",
            intruder.name
        );
        eprintln!("{} -> PostgreSQL {database}: {got:?}", intruder.name);
    }

    // The storefront still answers from its database: the events page carries its name.
    let ip = i.storefront.ip.clone();
    let page = tokio::task::spawn_blocking(move || {
        let stream = TcpStream::connect_timeout(&addr(&ip, HTTP_PORT), CONNECT_TIMEOUT)
            .expect("the host connects to the pod");
        http_get(stream, &storefront_host())
    })
    .await
    .expect("http thread");
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains(DISPLAY_NAME),
        "the storefront did not serve its page: {page}"
    );
}

/// The payments service's Service address, once one of its pods accepts connections (the
/// operator deploys it from the Platform's Stripe settings).
async fn payments_service(admin: &kube::Client) -> SocketAddr {
    let services: Api<Service> = Api::namespaced(admin.clone(), "tiqzy-system");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "tiqzy-system");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let cluster_ip = services
            .get_opt("tiqzy-payments")
            .await
            .expect("service")
            .and_then(|s| s.spec?.cluster_ip);
        let ready = pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=tiqzy-payments"))
            .await
            .expect("pods")
            .items
            .into_iter()
            .any(|p| {
                p.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        if let (Some(ip), true) = (cluster_ip, ready) {
            return addr(&ip, PAYMENTS_PORT);
        }
        assert!(
            Instant::now() < deadline,
            "the payments service never got a ready pod; logs in {}",
            RealNodeHarness::shared().harness.log_dir().display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Who may call the payments service: the storefront finds it by its cluster DNS name and
/// reaches it through its Service (kube-proxy), and so does the router's namespace (Stripe's
/// webhooks); a pod of another namespace, of another tenant or slipped into the tenant's
/// namespace finds it closed, and the last cannot even ask the cluster DNS.
#[tokio::test]
async fn only_storefronts_reach_the_payments_service_by_its_name() {
    let i = installed();
    let admin = RealNodeHarness::shared()
        .harness
        .kube
        .client()
        .await
        .expect("admin client");
    let service = payments_service(&admin).await;
    let dns = addr(tiqzy_e2e::CLUSTER_DNS, 53);
    let name = format!(
        "tiqzy-payments.tiqzy-system.svc.{}",
        tiqzy_e2e::CLUSTER_DOMAIN
    );

    let from = i.storefront.pid;
    let asked = name.clone();
    let resolved = tokio::task::spawn_blocking(move || {
        tiqzy_e2e::resolve_from(from, dns, &asked, CONNECT_TIMEOUT)
    })
    .await
    .expect("dns thread")
    .expect("the storefront asks the cluster DNS");
    assert_eq!(
        resolved
            .iter()
            .map(|ip| addr(&ip.to_string(), PAYMENTS_PORT))
            .collect::<Vec<_>>(),
        vec![service],
        "{name} is the Service's address"
    );
    let got = settle(&i.storefront, service, connected).await;
    assert_eq!(got, Reach::Connected, "the storefront reaches {service}");
    let answer = tokio::task::spawn_blocking(move || {
        let stream = connect_from(from, service, CONNECT_TIMEOUT).expect("connect");
        http_get_path(stream, "tiqzy-payments", "/healthz")
    })
    .await
    .expect("http thread");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = settle(&i.router_pod, service, connected).await;
    assert_eq!(got, Reach::Connected, "the router's namespace is let in");

    for intruder in [&i.outsider, &i.neighbour, &i.stowaway] {
        let got = settle(intruder, service, blocked).await;
        assert!(
            blocked(&got),
            "{} reached the payments service {service}: {got:?}",
            intruder.name
        );
        eprintln!("{} -> payments {service}: {got:?}", intruder.name);
    }
    let from = i.stowaway.pid;
    let got = tokio::task::spawn_blocking(move || {
        tiqzy_e2e::resolve_from(from, dns, &name, CONNECT_TIMEOUT)
    })
    .await
    .expect("dns thread");
    assert!(
        got.as_ref().is_err_and(|e| matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::WouldBlock
        )),
        "a pod the tenant's policies do not name asked the cluster DNS: {got:?}"
    );
}
