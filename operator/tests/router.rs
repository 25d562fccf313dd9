//! A storefront served by a real ingress controller: Traefik (built from
//! `tests/e2e/go/traefik`, running as its own ServiceAccount) serves the operator's Ingress with
//! the certificate the operator wrote from Key Vault into `storefront-tls`, proxies to the
//! address the storefront Service's EndpointSlice lists (kwok's pod IP, made real by a network
//! namespace on this host), redirects plain HTTP to HTTPS, and writes the Ingress status that
//! turns `Routed` True.
//!
//! Traefik's first build takes many minutes (see the README); later runs reuse the cache.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tiqzy_crds::Platform;
use tiqzy_e2e::{EntraIssuer, Harness, KeyVaultServer, OperatorProcess, PodBackend, Traefik};

mod common;
use common::{
    ca_of, certificate, client_for, condition, create_tenant, ders, is_ready, peer_leaf, wait_for,
};

/// Everything this binary's tests share: the vault and its issuer, the router, the operator.
struct Installed {
    vault: KeyVaultServer,
    router: Traefik,
    _issuer: EntraIssuer,
    _operator: tiqzy_e2e::Service,
}

fn installed() -> &'static Installed {
    static INSTALLED: OnceLock<Result<Installed, String>> = OnceLock::new();
    common::once_per_binary(&INSTALLED, install)
}

async fn install() -> anyhow::Result<Installed> {
    let h = Harness::shared();
    let issuer = EntraIssuer::start("contoso", "unknown-app").await?;
    let vault = KeyVaultServer::start(&h.dir, &issuer).await?;
    let router = Traefik::start(h).await?;
    let kubeconfig = tiqzy_e2e::install_tiqzy(h).await?;
    let client = h.kube.client().await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "kv-client" },
        "stringData": { "clientSecret": "kv-client-secret-value" },
    }))?;
    Api::<Secret>::namespaced(client.clone(), "tiqzy-system")
        .create(&PostParams::default(), &secret)
        .await?;
    Api::<Platform>::all(client)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": {
                "routing": { "mode": "Ingress", "ingressClassName": tiqzy_e2e::INGRESS_CLASS },
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
    let mut operator = OperatorProcess::new(binary, &kubeconfig, "operator-router");
    operator.args.extend([
        "--resync-seconds=3".to_owned(),
        "--key-vault-poll-seconds=2".to_owned(),
    ]);
    operator.args.extend(vault.operator_args());
    let operator = operator.start(h)?;
    Ok(Installed {
        vault,
        router,
        _issuer: issuer,
        _operator: operator,
    })
}

/// Polls `check` every 200 ms for up to 60 s; panics naming `what` with the last answer.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for _ in 0..300 {
        match check().await {
            Ok(value) => return value,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{what} did not happen within 60 s (last: {last}); Traefik's log: {}",
        installed().router.log_path().display()
    );
}

/// The ready address and port the storefront Service's EndpointSlices list.
async fn endpoint(client: &kube::Client, namespace: &str) -> Result<(Ipv4Addr, u16), String> {
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels("kubernetes.io/service-name=storefront"))
        .await
        .map_err(|e| e.to_string())?;
    for slice in slices.items {
        let port = slice
            .ports
            .as_ref()
            .and_then(|ports| ports.first())
            .and_then(|p| p.port);
        let ready = slice
            .endpoints
            .iter()
            .find(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false));
        if let (Some(port), Some(endpoint)) = (port, ready) {
            let address = endpoint.addresses[0]
                .parse()
                .map_err(|e| format!("{e}: {:?}", endpoint.addresses))?;
            return Ok((address, u16::try_from(port).map_err(|e| e.to_string())?));
        }
    }
    Err("no ready endpoint yet".to_owned())
}

#[tokio::test]
async fn the_router_serves_the_tenant_host_with_its_vault_certificate_and_admits_it() {
    let installed = installed();
    let client = Harness::shared().kube.client().await.expect("client");
    let (name, host) = ("routed", "tickets.routed.example");
    let namespace = "tiqzy-routed";
    let (chain, key, _) = certificate(&[host], 60);
    installed
        .vault
        .certificates
        .put_pem("routed-cert", &format!("{chain}{key}"))
        .expect("put");
    create_tenant(
        &client,
        name,
        json!({ "displayName": "Routed", "currency": "EUR", "hosts": [host],
                "tls": { "keyVaultCertificate": "routed-cert" } }),
    )
    .await;

    // The Secret the operator wrote is what the router must serve.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let want = ders(chain.as_bytes());
    let served_chain = eventually("storefront-tls holding the vault's certificate", || async {
        let secret = secrets
            .get_opt("storefront-tls")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no Secret yet")?;
        let crt = secret
            .data
            .as_ref()
            .and_then(|d| d.get("tls.crt"))
            .map(|c| ders(&c.0))
            .unwrap_or_default();
        if crt == want {
            Ok(crt)
        } else {
            Err("another certificate".to_owned())
        }
    })
    .await;

    // The controller admits the host: Ingress status, then Routed.
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), namespace);
    eventually("the Ingress status naming the router", || async {
        let ingress = ingresses
            .get("storefront")
            .await
            .map_err(|e| e.to_string())?;
        let hostnames: Vec<String> = ingress
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.hostname)
            .collect();
        if hostnames.iter().any(|h| h == tiqzy_e2e::ROUTER_HOSTNAME) {
            Ok(())
        } else {
            Err(format!("status hostnames {hostnames:?}"))
        }
    })
    .await;
    wait_for(&client, name, "Routed=True Admitted and Ready", |t| {
        is_ready(t)
            && condition(t, "Routed").is_some_and(|c| c.status == "True" && c.reason == "Admitted")
    })
    .await;

    // The pod's address, made real on this host, with a server behind it.
    let (address, port) = eventually("a ready storefront endpoint", || {
        endpoint(&client, namespace)
    })
    .await;
    let _backend = PodBackend::start(address, port).expect("backend in a network namespace");

    // HTTPS to the tenant's host: its certificate (the whole chain checked against its CA),
    // and the answer of the backend the EndpointSlice names.
    let ca = ca_of(&chain);
    let https = client_for(host, installed.router.https_port, &[&ca]);
    let url = format!(
        "https://{host}:{}/events?from=router",
        installed.router.https_port
    );
    let (peer, body) = eventually("an answer through the router", || async {
        let response = https.get(&url).send().await.map_err(|e| format!("{e:?}"))?;
        let peer = peer_leaf(&response).ok_or("no peer certificate")?;
        let status = response.status();
        let body = response.text().await.map_err(|e| e.to_string())?;
        if status == reqwest::StatusCode::OK {
            Ok((peer, body))
        } else {
            Err(format!("{status}: {body}"))
        }
    })
    .await;
    assert_eq!(
        peer, served_chain[0],
        "the router presents the leaf of storefront-tls"
    );
    assert!(
        body.contains(&format!("backend {address}:{port}")),
        "{body}"
    );
    assert!(
        body.contains("request GET /events?from=router HTTP/1.1"),
        "{body}"
    );
    assert!(body.contains(&format!("host {host}")), "{body}");
    assert!(body.contains("x-forwarded-proto https"), "{body}");

    // Plain HTTP is redirected to HTTPS on the same host.
    let http = client_for(host, installed.router.http_port, &[&ca]);
    let response = http
        .get(format!(
            "http://{host}:{}/events",
            installed.router.http_port
        ))
        .send()
        .await
        .expect("plain HTTP");
    assert!(response.status().is_redirection(), "{}", response.status());
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default();
    assert!(
        location.starts_with(&format!("https://{host}")),
        "{location}"
    );

    // Another host gets the router's default certificate, not the tenant's.
    let other = reqwest::Client::builder()
        .resolve(
            "unknown.example",
            SocketAddr::from(([127, 0, 0, 1], installed.router.https_port)),
        )
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .build()
        .expect("client");
    let response = other
        .get(format!(
            "https://unknown.example:{}/",
            installed.router.https_port
        ))
        .send()
        .await
        .expect("unknown host");
    let peer = peer_leaf(&response).expect("peer certificate");
    assert_ne!(peer, served_chain[0]);
    assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND);
}
