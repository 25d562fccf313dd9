//! TLS end to end: the operator (as its own ServiceAccount, config/rbac only) with the OpenShift
//! Route CRD from the `github.com/openshift/api` module installed, so tenants get Routes; the
//! Ingress path by switching the Platform's routing mode. Key Vault failures that need no vault
//! server (credentials missing, vault unreachable) run here; reading a vault is in
//! `key_vault.rs`.

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use tiqzy_crds::{Platform, Tenant};
use tiqzy_e2e::{Harness, OperatorProcess};

mod common;
use common::{certificate, condition, create_tenant, is_ready, wait_for};

/// The operator, started once for this test binary after the Route CRD is in place.
struct Installed {
    operator: OperatorProcess,
    _process: tiqzy_e2e::Service,
}

fn installed() -> &'static Installed {
    static INSTALLED: OnceLock<Result<Installed, String>> = OnceLock::new();
    common::once_per_binary(&INSTALLED, install)
}

async fn install() -> anyhow::Result<Installed> {
    let h = Harness::shared();
    // Before the operator starts: it discovers the Route API once, at start.
    tiqzy_e2e::install_route_crd(&h.kube.client().await?).await?;
    let kubeconfig = tiqzy_e2e::install_tiqzy(h).await?;
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    let mut operator = OperatorProcess::new(binary, &kubeconfig, "operator-tls");
    operator.args.extend([
        "--resync-seconds=3".to_owned(),
        "--key-vault-poll-seconds=2".to_owned(),
    ]);
    let process = operator.start(h)?;
    Ok(Installed {
        operator,
        _process: process,
    })
}

/// The routing mode is Platform-wide: tests that depend on it take turns.
static PLATFORM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn admin() -> kube::Client {
    installed();
    Harness::shared().kube.client().await.expect("client")
}

async fn patch_platform(client: &kube::Client, spec: serde_json::Value) {
    Api::<Platform>::all(client.clone())
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .expect("patch platform");
}

async fn routes(client: &kube::Client, namespace: &str) -> Vec<DynamicObject> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &tiqzy_operator::build::route_api_resource(),
    );
    api.list(&Default::default()).await.expect("routes").items
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what} did not happen within 60 s");
}

#[tokio::test]
async fn a_provided_secret_is_served_on_the_route_or_the_ingress_and_its_expiry_exported() {
    let client = admin().await;
    let _platform = PLATFORM.lock().await;
    let name = "tls-provided";
    let host = "tickets.provided.example";
    create_tenant(
        &client,
        name,
        json!({ "displayName": "Provided", "currency": "EUR", "hosts": [host],
                "tls": { "secretName": "own-cert" } }),
    )
    .await;
    let missing = wait_for(&client, name, "CertificateNotFound", |t| {
        condition(t, "CertificateReady").is_some_and(|c| c.reason == "CertificateNotFound")
    })
    .await;
    assert!(
        condition(&missing, "CertificateReady")
            .expect("condition")
            .message
            .contains("own-cert")
    );

    let (chain, key, not_after) = certificate(&[host], 60);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "own-cert" },
        "type": "kubernetes.io/tls",
        "stringData": { "tls.crt": chain, "tls.key": key },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), "tiqzy-tls-provided")
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let tenant = wait_for(&client, name, "SecretProvided", |t| {
        condition(t, "CertificateReady")
            .is_some_and(|c| c.status == "True" && c.reason == "SecretProvided")
    })
    .await;
    assert_eq!(
        tenant.status.as_ref().and_then(|s| s.certificate.clone()),
        None,
        "versions are recorded for Key Vault certificates only"
    );

    // OpenShift: one edge-terminated Route per host, serving the Secret.
    let served = routes(&client, "tiqzy-tls-provided").await;
    assert_eq!(served.len(), 1);
    let spec = &served[0].data["spec"];
    assert_eq!(spec["host"], host);
    assert_eq!(spec["tls"]["termination"], "edge");
    assert_eq!(spec["tls"]["externalCertificate"]["name"], "own-cert");
    // The router reads that Secret itself, with a grant for it alone.
    let role = Api::<Role>::namespaced(client.clone(), "tiqzy-tls-provided")
        .get("storefront-tls-router")
        .await
        .expect("role for the router");
    let rule = &role.rules.expect("rules")[0];
    assert_eq!(
        rule.resource_names.clone().unwrap_or_default(),
        vec!["own-cert"]
    );
    assert_eq!(rule.verbs, vec!["get", "list", "watch"]);
    let binding = Api::<RoleBinding>::namespaced(client.clone(), "tiqzy-tls-provided")
        .get("storefront-tls-router")
        .await
        .expect("binding for the router");
    let subject = &binding.subjects.expect("subjects")[0];
    assert_eq!(
        (subject.namespace.as_deref(), subject.name.as_str()),
        (Some("openshift-ingress"), "router")
    );

    let metric = format!("tiqzy_certificate_expiry_seconds{{tenant=\"{name}\"}} {not_after}");
    let operator = &installed().operator;
    wait_until("the expiry metric", || async {
        operator
            .metrics()
            .await
            .is_ok_and(|text| text.contains(&metric))
    })
    .await;

    // A plain Kubernetes cluster: the Ingress takes over, with the same Secret.
    patch_platform(&client, json!({ "routing": { "mode": "Ingress" } })).await;
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), "tiqzy-tls-provided");
    wait_until("the Ingress replacing the Route", || async {
        ingresses
            .get_opt("storefront")
            .await
            .ok()
            .flatten()
            .is_some()
            && routes(&client, "tiqzy-tls-provided").await.is_empty()
    })
    .await;
    let grants = Api::<Role>::namespaced(client.clone(), "tiqzy-tls-provided");
    wait_until("the router's grant going with the Route", || async {
        grants
            .get_opt("storefront-tls-router")
            .await
            .ok()
            .flatten()
            .is_none()
    })
    .await;
    let ingress = ingresses.get("storefront").await.expect("ingress");
    let tls = ingress.spec.and_then(|s| s.tls).expect("ingress tls");
    assert_eq!(tls[0].secret_name.as_deref(), Some("own-cert"));
    assert_eq!(tls[0].hosts.clone().unwrap_or_default(), vec![host]);
    patch_platform(&client, json!({ "routing": { "mode": "Auto" } })).await;
    wait_until("the Route coming back", || async {
        routes(&client, "tiqzy-tls-provided").await.len() == 1
    })
    .await;

    // Without tls the router's default certificate serves, and the grant goes.
    Api::<Tenant>::all(client.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "tls": null } })),
        )
        .await
        .expect("drop tls");
    wait_for(&client, name, "RouterDefaultCertificate", |t| {
        condition(t, "CertificateReady").is_some_and(|c| c.reason == "RouterDefaultCertificate")
    })
    .await;
    wait_until("the Route without the Secret", || async {
        routes(&client, "tiqzy-tls-provided")
            .await
            .first()
            .is_some_and(|r| r.data["spec"]["tls"].get("externalCertificate").is_none())
    })
    .await;
    assert_eq!(
        routes(&client, "tiqzy-tls-provided").await[0].data["spec"]["tls"]["termination"],
        "edge"
    );
    wait_until("the router's grant going", || async {
        grants
            .get_opt("storefront-tls-router")
            .await
            .ok()
            .flatten()
            .is_none()
    })
    .await;
    let metrics = installed().operator.metrics().await.expect("metrics");
    assert!(
        !metrics.contains(&format!("tenant=\"{name}\"")),
        "no expiry for the router's default certificate"
    );
}

#[tokio::test]
async fn key_vault_failures_name_their_reason_and_leave_the_storefront_serving() {
    let client = admin().await;
    let _platform = PLATFORM.lock().await;
    // Nothing listens here.
    let closed = tiqzy_e2e::free_port().expect("port");
    patch_platform(
        &client,
        json!({ "keyVault": {
            "vaultUrl": format!("https://127.0.0.1:{closed}"),
            "authorityHost": format!("http://127.0.0.1:{closed}"),
            "auth": { "method": "ClientSecret", "clientId": "tiqzy-operator", "tenantId": "contoso",
                      "clientSecretRef": { "namespace": "tiqzy-system", "name": "kv-client" } } } }),
    )
    .await;
    let name = "tls-vault";
    create_tenant(
        &client,
        name,
        json!({ "displayName": "Vault", "currency": "EUR",
                "tls": { "keyVaultCertificate": "tls-vault-cert" } }),
    )
    .await;

    // No client secret yet: the operator cannot sign in.
    let forbidden = wait_for(&client, name, "KeyVaultForbidden", |t| {
        condition(t, "CertificateReady")
            .is_some_and(|c| c.status == "False" && c.reason == "KeyVaultForbidden")
    })
    .await;
    let message = &condition(&forbidden, "CertificateReady")
        .expect("condition")
        .message;
    assert!(message.contains("tiqzy-system/kv-client"), "{message}");
    assert!(
        message.contains("router's default certificate"),
        "{message}"
    );

    let client_secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "kv-client" },
        "stringData": { "clientSecret": "do-not-print-this-secret" },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), "tiqzy-system")
        .create(&PostParams::default(), &client_secret)
        .await
        .expect("create client secret");
    let unreachable = wait_for(&client, name, "KeyVaultUnreachable", |t| {
        condition(t, "CertificateReady")
            .is_some_and(|c| c.status == "False" && c.reason == "KeyVaultUnreachable")
    })
    .await;
    let status = serde_json::to_string(&unreachable.status).expect("status");
    assert!(
        !status.contains("do-not-print-this-secret"),
        "the client secret stays out of the status"
    );
    assert!(status.contains(&format!("127.0.0.1:{closed}")), "{status}");

    // The storefront runs regardless, on the router's default certificate.
    let serving = wait_for(&client, name, "StorefrontAvailable", |t| {
        condition(t, "StorefrontAvailable").is_some_and(|c| c.status == "True")
    })
    .await;
    assert!(!is_ready(&serving), "Ready says the certificate is missing");
    assert!(
        Api::<Deployment>::namespaced(client.clone(), "tiqzy-tls-vault")
            .get_opt("storefront")
            .await
            .expect("get")
            .is_some()
    );
    let served = routes(&client, "tiqzy-tls-vault").await;
    assert_eq!(served.len(), 1);
    assert!(
        Api::<Role>::namespaced(client.clone(), "tiqzy-tls-vault")
            .get_opt("storefront-tls-router")
            .await
            .expect("get")
            .is_none(),
        "nothing for the router to read"
    );
    assert_eq!(served[0].data["spec"]["tls"]["termination"], "edge");
    assert!(
        served[0].data["spec"]["tls"]
            .get("externalCertificate")
            .is_none(),
        "no Secret to point at yet: {}",
        served[0].data["spec"]["tls"]
    );
    assert!(
        Api::<Secret>::namespaced(client.clone(), "tiqzy-tls-vault")
            .get_opt("storefront-tls")
            .await
            .expect("get")
            .is_none()
    );
    let events = Harness::shared()
        .kube
        .kubectl()
        .args(["get", "events", "-A", "-o", "json"])
        .output()
        .expect("kubectl");
    assert!(
        !String::from_utf8_lossy(&events.stdout).contains("do-not-print-this-secret"),
        "the client secret stays out of Events"
    );
    Api::<Tenant>::all(client.clone())
        .delete(name, &Default::default())
        .await
        .expect("delete");
    patch_platform(&client, json!({ "keyVault": null })).await;
}
