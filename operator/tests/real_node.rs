//! The storefront as its users meet it. A kubelet, containerd and runc run the pods the
//! operator builds (unchanged, under Pod Security `restricted`), from an image of the
//! workspace's `tiqzy-runtime` binary, against the harness's PostgreSQL on the pod bridge;
//! Traefik serves the operator's Ingress with the certificate the operator took from the Key
//! Vault test server, and proxies to those pods. The operator and the pods send their traces
//! to a Jaeger on the gateway.
//!
//! Its own test binary, because it uses [`RealNodeHarness`]: kwok's fake node is cordoned while
//! the real node runs, so every pod of this binary lands on the real node.

use std::io::{Read, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tiqzy_crds::{Platform, Tenant};
use tiqzy_e2e::{
    EntraIssuer, GATEWAY, KeyVaultServer, OperatorProcess, REAL_NODE_NAME, RealNodeHarness,
    StaffIssuer, Traefik,
};

mod common;
use common::{
    ca_of, certificate, client_for, condition, create_tenant, ders, peer_leaf, spki_hash,
};
use tiqzy_e2e::browser::{Browser, SessionOptions, keep_screenshot};

/// What this binary's tests share: the vault and its issuer, the router, the operator.
struct Installed {
    vault: KeyVaultServer,
    router: Traefik,
    /// Staff tokens for the admin API, from an issuer the pods reach on the gateway over
    /// HTTPS and trust through the Platform's `caSecretRef`.
    staff: StaffIssuer,
    _issuer: EntraIssuer,
    _operator: tiqzy_e2e::Service,
    /// Where the operator, the storefront pods and the payments service pod send traces: OTLP
    /// on the gateway, which the pods reach.
    traces: tiqzy_e2e::Jaeger,
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
    eprintln!("runtime image {image}");
    let issuer = EntraIssuer::start("contoso", "unknown-app").await?;
    let vault = KeyVaultServer::start(&h.dir, &issuer).await?;
    let router = Traefik::start(h).await?;
    let staff = StaffIssuer::start_tls(GATEWAY, &h.dir.join("staff-issuer")).await?;
    let traces = tiqzy_e2e::Jaeger::start_on(&h.dir.join("jaeger"), GATEWAY).await?;
    let kubeconfig = tiqzy_e2e::install_tiqzy(h).await?;
    let admin = h.kube.client().await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "kv-client" },
        "stringData": { "clientSecret": "kv-client-secret-value" },
    }))?;
    Api::<Secret>::namespaced(admin.clone(), "tiqzy-system")
        .create(&PostParams::default(), &secret)
        .await?;
    let redis_ca: Secret = serde_json::from_value(json!({
        "metadata": { "name": "redis-ca" },
        "stringData": { "ca.crt": h.redis.ca_pem },
    }))?;
    Api::<Secret>::namespaced(admin.clone(), "tiqzy-system")
        .create(&PostParams::default(), &redis_ca)
        .await?;
    // The staff issuer's CA, which storefronts trust through the Platform.
    let issuer_ca: Secret = serde_json::from_value(json!({
        "metadata": { "name": "staff-issuer-ca" },
        "stringData": { "ca.crt": staff.ca_pem },
    }))?;
    Api::<Secret>::namespaced(admin.clone(), "tiqzy-system")
        .create(&PostParams::default(), &issuer_ca)
        .await?;
    // The pods reach PostgreSQL, Redis over TLS and stripe-mock on the bridge gateway; the
    // image is the one just imported.
    Api::<Platform>::all(admin)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": {
                "runtimeImage": image,
                "postgres": { "host": GATEWAY },
                "stripe": { "apiBase": h.stripe.url },
                "caSecretRef": { "namespace": "tiqzy-system", "name": "staff-issuer-ca" },
                "redis": { "url": format!("rediss://{GATEWAY}:{}", h.redis.tls_port),
                           "caSecretRef": { "namespace": "tiqzy-system", "name": "redis-ca" } },
                "routing": { "mode": "Ingress", "ingressClassName": tiqzy_e2e::INGRESS_CLASS },
                "observability": { "traces": { "endpoint": traces.otlp_http_endpoint() } },
                "keyVault": {
                    "vaultUrl": vault.url,
                    "authorityHost": issuer.authority_host,
                    "auth": { "method": "ClientSecret", "clientId": "tiqzy-operator",
                              "tenantId": issuer.tenant_id,
                              "clientSecretRef": { "namespace": "tiqzy-system",
                                                   "name": "kv-client" } } } } })),
        )
        .await?;
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    let mut operator = OperatorProcess::new(binary, &kubeconfig, "operator-real-node");
    operator.args.push("--key-vault-poll-seconds=2".to_owned());
    operator.args.extend(vault.operator_args());
    operator.env.push((
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
        traces.otlp_http_endpoint(),
    ));
    let operator = operator.start(h)?;
    Ok(Installed {
        vault,
        router,
        staff,
        _issuer: issuer,
        _operator: operator,
        traces,
    })
}

/// Waits (4 minutes at most) for `StorefrontAvailable=True`, naming the pods' states if not.
async fn wait_available(admin: &kube::Client, tenant: &str) -> Tenant {
    let tenants: Api<Tenant> = Api::all(admin.clone());
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &format!("tiqzy-{tenant}"));
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let t = tenants.get(tenant).await.expect("get tenant");
        if condition(&t, "StorefrontAvailable").is_some_and(|c| c.status == "True") {
            return t;
        }
        if Instant::now() > deadline {
            let pod_states: Vec<_> = pods
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .into_iter()
                        .map(|p| (p.name_any(), p.status))
                        .collect()
                })
                .unwrap_or_default();
            panic!(
                "StorefrontAvailable never became True; tenant status: {:#?}\npods: {pod_states:#?}\nlogs in {}",
                t.status,
                RealNodeHarness::shared().harness.log_dir().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_storefront_pod_runs_on_a_real_node_and_serves_its_events_page() {
    const TENANT: &str = "real-node-shop";
    const DISPLAY_NAME: &str = "Real Node Tickets";
    let _ = installed();
    let admin = RealNodeHarness::shared()
        .harness
        .kube
        .client()
        .await
        .expect("admin client");
    create_tenant(
        &admin,
        TENANT,
        json!({ "displayName": DISPLAY_NAME, "currency": "EUR" }),
    )
    .await;
    let tenant = wait_available(&admin, TENANT).await;
    eprintln!(
        "StorefrontAvailable: {}",
        condition(&tenant, "StorefrontAvailable").map_or("", |c| c.message.as_str())
    );

    let namespace = format!("tiqzy-{TENANT}");
    let ns = Api::<Namespace>::all(admin.clone())
        .get(&namespace)
        .await
        .expect("namespace");
    assert_eq!(
        ns.labels()["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let running: Vec<Pod> = Api::<Pod>::namespaced(admin.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase == "Running")
        })
        .collect();
    assert!(!running.is_empty(), "no running storefront pod");
    for pod in &running {
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some(REAL_NODE_NAME));
        let status = pod.status.as_ref().expect("status");
        let statuses = status.container_statuses.clone().unwrap_or_default();
        assert!(
            statuses.iter().all(|c| c.ready && c.container_id.is_some()),
            "containers not ready: {statuses:#?}"
        );
    }
    let pod_ip = running[0]
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP");
    assert!(
        pod_ip.starts_with("10.77."),
        "pod IP {pod_ip} is on the bridge"
    );

    // Connected before the page is asked for: a cached page lives for 5 seconds only.
    let redis = &RealNodeHarness::shared().harness.redis;
    let mut conn = redis
        .tls_client(&redis.admin_tls_url())
        .expect("admin over TLS")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connects over TLS");
    let host = format!("{TENANT}.{}", tiqzy_e2e::BASE_DOMAIN);
    let page = tokio::task::spawn_blocking(move || http_get(&pod_ip, 8080, &host, "/"))
        .await
        .expect("http thread");
    let cached: Option<String> = ::redis::cmd("GET")
        .arg(format!("t:{TENANT}:page:events"))
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert!(
        page.starts_with("HTTP/1.1 200"),
        "the storefront answered: {page}"
    );
    assert!(
        page.contains(DISPLAY_NAME),
        "the events page does not show the display name: {page}"
    );

    // The cache: the operator made the tenant's user over TLS, told the pod `rediss://` with
    // the Platform's CA, and the pod cached the page it served there (read above).
    assert_eq!(
        condition(&tenant, "CacheReady").map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("True", "CacheProvisioned"))
    );
    let cache = Api::<Secret>::namespaced(admin.clone(), &namespace)
        .get("storefront-cache")
        .await
        .expect("the cache Secret");
    let data = cache.data.unwrap_or_default();
    let text = |key: &str| String::from_utf8_lossy(&data[key].0).into_owned();
    assert!(
        text("REDIS_URL").starts_with(&format!("rediss://tiqzy-{TENANT}:")),
        "the pod is told to use TLS"
    );
    assert_eq!(text("REDIS_CA_PEM").trim(), redis.ca_pem.trim());
    assert!(
        cached.is_some_and(|page| page.contains(DISPLAY_NAME)),
        "the pod did not cache its events page in Redis over TLS"
    );
}

/// What a client polling the storefront through the router saw.
#[derive(Debug, Default)]
struct Seen {
    answered: usize,
    failures: Vec<String>,
    /// The leaf certificates presented, in order, each once per run of equal ones.
    leaves: Vec<Vec<u8>>,
}

/// Asks for `url` every 100 ms, on a new connection each time, until `stop` is set.
async fn poll(client: reqwest::Client, url: String, stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        match client.get(&url).send().await {
            Ok(response) => {
                let leaf = peer_leaf(&response);
                let status = response.status();
                if status == reqwest::StatusCode::OK {
                    seen.answered += 1;
                } else {
                    seen.failures.push(format!("{status}"));
                }
                if let Some(leaf) = leaf
                    && seen.leaves.last() != Some(&leaf)
                {
                    seen.leaves.push(leaf);
                }
            }
            Err(e) => seen.failures.push(format!("{e:?}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// The whole path a buyer takes: `kubectl apply` of a Tenant naming a Key Vault certificate,
/// then its own host over HTTPS through the router, answered by the storefront pod the
/// operator deployed, with the vault's certificate; a new version in the vault reaches clients
/// while they keep being served.
#[tokio::test]
async fn a_vault_certificate_reaches_buyers_through_the_router_and_rotates_without_a_failed_request()
 {
    const TENANT: &str = "live-shop";
    const DISPLAY_NAME: &str = "Live Arena Tickets";
    let host = "tickets.live-arena.example";
    let installed = installed();
    let h = &RealNodeHarness::shared().harness;
    let admin = h.kube.client().await.expect("admin client");
    let (chain, key, _) = certificate(&[host], 60);
    installed
        .vault
        .certificates
        .put_pem("live-cert", &format!("{chain}{key}"))
        .expect("put");

    let applied = Instant::now();
    let manifest = serde_json::to_string(&json!({
        "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
        "metadata": { "name": TENANT },
        "spec": { "displayName": DISPLAY_NAME, "currency": "EUR", "hosts": [host],
                  "cache": { "mode": "Disabled" },
                  "storefront": { "replicas": { "min": 1, "max": 1 } },
                  "tls": { "keyVaultCertificate": "live-cert" } }
    }))
    .expect("manifest");
    let manifest_path = h.dir.join("live-shop.json");
    std::fs::write(&manifest_path, manifest).expect("manifest file");
    let status = h
        .kube
        .kubectl()
        .arg("apply")
        .arg("-f")
        .arg(&manifest_path)
        .status()
        .expect("kubectl");
    assert!(status.success(), "kubectl apply failed");

    // The first page through the router, over the vault's certificate, from the real pod.
    let first_ca = ca_of(&chain);
    let router_port = installed.router.https_port;
    let url = format!("https://{host}:{router_port}/");
    let https = client_for(host, router_port, &[&first_ca]);
    let (leaf, page) = first_page(&https, &url, applied, &admin, TENANT).await;
    eprintln!(
        "apply -> first page through the router: {:.1?}",
        applied.elapsed()
    );
    assert_eq!(
        leaf.as_deref(),
        Some(ders(chain.as_bytes())[0].as_slice()),
        "the router presents the vault's certificate"
    );
    assert!(
        page.contains(DISPLAY_NAME),
        "the page is the tenant's storefront: {page}"
    );
    // The same page in Chromium, which trusts this one certificate and asks for the host on
    // the router's port, as a buyer's browser would on 443.
    let browser = Browser::start().await.expect("chromedriver");
    let window = browser
        .session(&SessionOptions {
            host_rules: Some(format!("MAP {host} 127.0.0.1:{router_port}")),
            trusted_keys: vec![spki_hash(&ders(chain.as_bytes())[0])],
            ..SessionOptions::default()
        })
        .await;
    window.go(&format!("https://{host}/")).await;
    let heading = window.text("header a").await;
    assert_eq!(heading, DISPLAY_NAME, "title: {}", window.title().await);
    let shot = keep_screenshot(
        "live-storefront-through-router.png",
        &window.screenshot().await,
    )
    .expect("screenshot");
    eprintln!("screenshot: {}", shot.display());
    window.close().await;

    let tenant = wait_available(&admin, TENANT).await;
    let pods = Api::<Pod>::namespaced(admin.clone(), &format!("tiqzy-{TENANT}"))
        .list(&ListParams::default())
        .await
        .expect("pods");
    assert!(
        pods.items
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(REAL_NODE_NAME)),
        "the page came from a pod on the real node"
    );
    assert!(
        condition(&tenant, "Routed").is_some_and(|c| c.status == "True"),
        "{:#?}",
        tenant.status
    );

    // A new version in the vault, while a buyer keeps asking: every request answered, the
    // new certificate seen on new connections.
    let (next_chain, next_key, _) = certificate(&[host], 90);
    let next_ca = ca_of(&next_chain);
    let next_leaf = ders(next_chain.as_bytes())[0].clone();
    let stop = AtomicBool::new(false);
    let poller = poll(
        client_for(host, router_port, &[&first_ca, &next_ca]),
        url.clone(),
        &stop,
    );
    let rotate = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        installed
            .vault
            .certificates
            .put_pem("live-cert", &format!("{next_chain}{next_key}"))
            .expect("rotate");
        let checker = client_for(host, router_port, &[&next_ca]);
        let rotated = Instant::now();
        let mut took = None;
        while rotated.elapsed() < Duration::from_secs(60) {
            if let Ok(response) = checker.get(&url).send().await
                && peer_leaf(&response).as_ref() == Some(&next_leaf)
            {
                took = Some(rotated.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A few more seconds of polling on the new certificate.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        took
    };
    let (seen, took) = tokio::join!(poller, rotate);
    let took = took.expect("the new certificate never reached a client within 60 s");
    eprintln!(
        "rotation reached clients after {took:.1?}; {} requests answered during it",
        seen.answered
    );
    assert!(
        seen.failures.is_empty(),
        "requests failed during the rotation: {:?}",
        seen.failures
    );
    assert!(
        seen.answered >= 20,
        "the client kept asking: {}",
        seen.answered
    );
    assert_eq!(
        seen.leaves.last(),
        Some(&next_leaf),
        "the polling client ends on the new certificate"
    );
}

/// The first `200` for `url` (5 minutes at most after `applied`): the leaf certificate and
/// the page. Panics with the tenant's status and Traefik's log when none comes.
async fn first_page(
    https: &reqwest::Client,
    url: &str,
    applied: Instant,
    admin: &kube::Client,
    tenant: &str,
) -> (Option<Vec<u8>>, String) {
    let deadline = applied + Duration::from_secs(300);
    loop {
        let answer = match https.get(url).send().await {
            Ok(response) if response.status() == reqwest::StatusCode::OK => {
                let leaf = peer_leaf(&response);
                Ok((leaf, response.text().await.unwrap_or_default()))
            }
            Ok(response) => Err(format!("{}", response.status())),
            Err(e) => Err(format!("{e:?}")),
        };
        match answer {
            Ok(answer) => return answer,
            Err(last) if Instant::now() > deadline => {
                let status = Api::<Tenant>::all(admin.clone()).get(tenant).await;
                panic!(
                    "no page through the router after 5 minutes (last: {last}); tenant: {:#?}; Traefik's log: {}",
                    status.map(|t| t.status),
                    installed().router.log_path().display()
                );
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// A buyer's afternoon, all through the router from the real pod: staff put an event on sale
/// through the admin API with a token of the tenant's issuer; a buyer in Chromium picks a
/// ticket, leaves an e-mail and goes to Stripe Checkout, which the storefront gets from the
/// payments service pods on the same node; Stripe (stripe-mock, and a signed
/// `checkout.session.completed` posted to the payments host as Stripe would send it) confirms
/// the payment; back on the storefront the order is paid and the ticket shows its QR code.
/// No tenant namespace holds the Stripe key.
#[tokio::test]
async fn a_buyer_in_chromium_buys_a_ticket_through_the_router_and_sees_its_qr_code() {
    const TENANT: &str = "harbour-hall";
    const DISPLAY_NAME: &str = "Harbour Hall";
    let host = "tickets.harbour-hall.example";
    let audience = "api://tiqzy-harbour-hall";
    let installed = installed();
    let h = &RealNodeHarness::shared().harness;
    let admin = h.kube.client().await.expect("admin client");
    let (chain, key, _) = certificate(&[host], 60);
    installed
        .vault
        .certificates
        .put_pem("harbour-cert", &format!("{chain}{key}"))
        .expect("put");
    let applied = Instant::now();
    create_tenant(
        &admin,
        TENANT,
        json!({ "displayName": DISPLAY_NAME, "currency": "EUR", "hosts": [host],
                "branding": { "primaryColor": "#0e7490" },
                "cache": { "mode": "Disabled" },
                "storefront": { "replicas": { "min": 1, "max": 1 } },
                "tls": { "keyVaultCertificate": "harbour-cert" },
                "payments": { "connectedAccountId": "acct_1HarbourHall" },
                "staffAuth": { "issuer": installed.staff.url, "audience": audience } }),
    )
    .await;
    let router_port = installed.router.https_port;
    let base = format!("https://{host}");
    let https = client_for(host, router_port, &[&ca_of(&chain)]);
    let at = |path: &str| format!("{base}:{router_port}{path}");
    first_page(&https, &at("/"), applied, &admin, TENANT).await;
    // The payments service is up and the storefront told where it is.
    let tenants: Api<Tenant> = Api::all(admin.clone());
    loop {
        let tenant = tenants.get(TENANT).await.expect("tenant");
        let payments = condition(&tenant, "PaymentsReady").cloned();
        if payments.as_ref().is_some_and(|c| c.status == "True") {
            break;
        }
        assert!(
            Instant::now() < deadline(applied),
            "PaymentsReady never became True: {payments:#?}; logs in {}",
            h.log_dir().display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Staff put an event on sale.
    let token = installed
        .staff
        .admin_token(audience, 1)
        .await
        .expect("staff token");
    let starts = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .expect("time")
    };
    let slug = "harbour-lights";
    let created = https
        .post(at("/api/admin/events"))
        .bearer_auth(&token)
        .json(
            &json!({ "slug": slug, "title": "Harbour Lights", "venue": "Pier 4",
                       "description": "Lanterns on the water.",
                       "starts_at": rfc3339(starts),
                       "ends_at": rfc3339(starts + time::Duration::hours(3)) }),
        )
        .send()
        .await
        .expect("create event");
    assert_eq!(
        created.status(),
        201,
        "{}",
        created.text().await.unwrap_or_default()
    );
    let now = time::OffsetDateTime::now_utc();
    let tickets = https
        .post(at(&format!("/api/admin/events/{slug}/ticket-types")))
        .bearer_auth(&token)
        .json(
            &json!({ "name": "Deck", "price_minor": 3_500, "currency": "EUR",
                       "capacity": 50, "per_order_limit": 4,
                       "sales_start": rfc3339(now - time::Duration::hours(1)),
                       "sales_end": rfc3339(now + time::Duration::days(29)) }),
        )
        .send()
        .await
        .expect("create ticket type");
    assert_eq!(
        tickets.status(),
        201,
        "{}",
        tickets.text().await.unwrap_or_default()
    );

    // A buyer, in a browser that trusts the vault's certificate and nothing else unknown.
    let browser = Browser::start().await.expect("chromedriver");
    let window = browser
        .session(&SessionOptions {
            phone: true,
            host_rules: Some(format!(
                "MAP {host} 127.0.0.1:{router_port}, MAP checkout.stripe.com ~NOTFOUND"
            )),
            trusted_keys: vec![spki_hash(&ders(chain.as_bytes())[0])],
        })
        .await;
    window.go(&format!("{base}/")).await;
    assert_eq!(window.text("header a").await, DISPLAY_NAME);
    assert_eq!(
        window.css("header", "background-color").await,
        "rgba(14, 116, 144, 1)",
        "the tenant's colour"
    );
    window.click(&format!("a[href='/events/{slug}']")).await;
    window.wait_for_url(&format!("/events/{slug}")).await;
    assert!(window.text("main").await.contains("€35.00"));
    window.click("form button[type=submit]").await;
    window.wait_for_url("/checkout/").await;
    window.type_into("#email", "ada@example.com").await;
    window.click("form button[type=submit]").await;
    let order_url = window.wait_for_url("/orders/").await;
    let order_token = order_url
        .rsplit("/orders/")
        .next()
        .and_then(|rest| rest.split(['?', '#']).next())
        .expect("order token")
        .to_owned();
    assert_eq!(window.text(".badge").await, "pending");
    // Paying goes through the platform's payments service: the storefront (no Stripe key of
    // its own) calls `tiqzy-payments.tiqzy-system.svc` (cluster DNS, kube-proxy), which asks
    // Stripe (stripe-mock) for the checkout session and sends the buyer there.
    window.click("form button[type=submit]").await;
    let checkout = window.wait_for_url("checkout.stripe.com").await;
    eprintln!("the buyer is sent to Stripe Checkout: {checkout}");
    assert!(
        checkout.starts_with("https://checkout.stripe.com/"),
        "{checkout}"
    );

    // Stripe: the buyer paid. Its signed event goes to the payments host through the router
    // (the Ingress the operator made for payments.<baseDomain>); the service places it with
    // the tenant by the metadata it set on the session and delivers it to the storefront.
    let order_url = at(&format!("/api/orders/{order_token}"));
    let (payload, signature) = h
        .stripe
        .paid_event(&https, &order_url, TENANT)
        .await
        .expect("the paid event");
    let payments_host = format!("payments.{}", tiqzy_e2e::BASE_DOMAIN);
    let stripe = stripe_client(&payments_host, router_port);
    let webhook = format!("https://{payments_host}:{router_port}/webhooks/stripe");
    let delivered = loop {
        // The router serves the payments Ingress once it has seen it and its endpoints.
        let response = stripe
            .post(&webhook)
            .header("content-type", "application/json")
            .header("stripe-signature", &signature)
            .body(payload.clone())
            .send()
            .await
            .expect("webhook");
        if response.status() != reqwest::StatusCode::NOT_FOUND || Instant::now() > deadline(applied)
        {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        delivered.status(),
        200,
        "{}",
        delivered.text().await.unwrap_or_default()
    );

    // The service's delivery reaches the storefront: the order is paid without the buyer
    // coming back from Checkout (whose `?checkout=done` reads the session back instead).
    let state = tiqzy_e2e::order_state(&https, &order_url, "paid", deadline(applied))
        .await
        .expect("the order");
    assert_eq!(
        state,
        "paid",
        "the event was not delivered; the payments pods' logs are under {}",
        RealNodeHarness::shared().node.pod_logs_dir().display()
    );

    // Back from Stripe: paid, and the ticket's QR code.
    window
        .go(&format!("{base}/orders/{order_token}?checkout=done"))
        .await;
    assert_eq!(window.text(".badge").await, "paid");
    window.click("a[href^='/tickets/']").await;
    window.wait_for_url("/tickets/").await;
    window.find(".qr svg").await;
    let shot = keep_screenshot("live-ticket-qr-phone.png", &window.screenshot().await)
        .expect("screenshot");
    eprintln!(
        "apply -> ticket with QR code in Chromium, paid through the payments service: {:.1?}; \
         screenshot: {}",
        applied.elapsed(),
        shot.display()
    );
    window.close().await;

    // What the platform team sees in Jaeger: the storefront pod's traces name the tenant, and
    // the checkout's trace goes on in the payments service's pod (its `traceparent`
    // crossed the cluster network); the operator's reconciles name the tenant too.
    let jaeger = &installed.traces;
    let storefront = jaeger
        .wait_for(
            "tiqzy-runtime",
            &[("tiqzy.tenant", TENANT)],
            Duration::from_secs(60),
            |traces| {
                traces
                    .iter()
                    .any(|t| t.spans.iter().any(|s| s.service == "tiqzy-payments"))
            },
        )
        .await
        .expect("the purchase's traces, across storefront and payments service, in Jaeger");
    let checkout = storefront
        .iter()
        .find(|t| t.spans.iter().any(|s| s.service == "tiqzy-payments"))
        .expect("checkout trace");
    let served = checkout
        .spans
        .iter()
        .find(|s| s.service == "tiqzy-payments")
        .expect("payments span");
    let caller = checkout
        .spans
        .iter()
        .find(|s| Some(&s.span_id) == served.parent_span_id.as_ref())
        .expect("the payments span's parent is in the trace");
    assert_eq!(caller.service, "tiqzy-runtime");
    assert_eq!(caller.tag("span.kind"), Some("client"));
    jaeger
        .wait_for(
            "tiqzy-operator",
            &[("tenant", TENANT), ("outcome", "success")],
            Duration::from_secs(60),
            |traces| !traces.is_empty(),
        )
        .await
        .expect("the operator's reconciles of the tenant in Jaeger");

    // The Stripe key is in the operator's namespace only (`kubectl get secrets -A`).
    let holders: Vec<String> = Api::<Secret>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .expect("secrets")
        .items
        .into_iter()
        .filter(|secret| {
            secret
                .data
                .iter()
                .flatten()
                .any(|(_, value)| value.0 == tiqzy_e2e::STRIPE_TEST_KEY.as_bytes())
        })
        .map(|secret| {
            format!(
                "{}/{}",
                secret.namespace().unwrap_or_default(),
                secret.name_any()
            )
        })
        .collect();
    assert!(
        !holders.is_empty()
            && holders
                .iter()
                .all(|holder| holder.starts_with("tiqzy-system/")),
        "{holders:?}"
    );
}

/// Five minutes after `applied`: how long a step of a buyer's path may take here.
fn deadline(applied: Instant) -> Instant {
    applied + Duration::from_secs(300)
}

/// A client as Stripe calls the payments host: to the router's loopback port, over TLS.
/// The operator's payments Ingress names no certificate, so the router presents its default
/// one, which is not checked here.
fn stripe_client(host: &str, port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A plain HTTP/1.1 GET, the whole response as text.
fn http_get(ip: &str, port: u16, host: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect((ip, port)).expect("connecting to the pod");
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
