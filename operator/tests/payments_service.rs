//! The payments service end to end: the real operator binary, as its own ServiceAccount bound
//! only to config/rbac, against the harness's control plane and PostgreSQL. The Platform the
//! harness installs has Stripe keys, so the operator runs `tiqzy-payments` in its namespace,
//! and storefronts get only what they need to use it.

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tiqzy_crds::{Platform, Tenant};
use tiqzy_e2e::Harness;

mod common;
use common::{condition, create_tenant, is_ready, wait_for};

const NAMESPACE: &str = "tiqzy-system";

/// Held shared by the tests that need `Platform.spec.stripe`, alone by the one that removes it.
static STRIPE_SET: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

struct Installed {
    _operator: tiqzy_e2e::Service,
}

fn installed() -> &'static Installed {
    static INSTALLED: OnceLock<Result<Installed, String>> = OnceLock::new();
    common::once_per_binary(&INSTALLED, install)
}

async fn install() -> anyhow::Result<Installed> {
    let h = Harness::shared();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    Ok(Installed {
        _operator: tiqzy_e2e::install_operator(h, binary, 3).await?,
    })
}

async fn admin() -> kube::Client {
    installed();
    Harness::shared().kube.client().await.expect("client")
}

/// Polls until `get` returns something (60 s at most).
async fn eventually<T, F, Fut>(what: &str, get: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..600 {
        if let Some(found) = get().await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} never happened");
}

fn text(data: &std::collections::BTreeMap<String, ByteString>, key: &str) -> String {
    String::from_utf8(data[key].0.clone()).expect("utf8")
}

async fn service_secret(client: &kube::Client) -> std::collections::BTreeMap<String, ByteString> {
    let secrets = Api::<Secret>::namespaced(client.clone(), NAMESPACE);
    eventually("the payments service's Secret", || async {
        secrets.get_opt("tiqzy-payments").await.ok().flatten()?.data
    })
    .await
}

async fn payments_ready(client: &kube::Client) -> Platform {
    let platforms = Api::<Platform>::all(client.clone());
    eventually("PaymentsServiceReady=True", || async {
        let platform = platforms.get("default").await.ok()?;
        let ready = platform.status.as_ref()?.conditions.iter().any(|c| {
            c.type_ == "PaymentsServiceReady"
                && c.status == "True"
                && c.reason == "PaymentsServiceAvailable"
        });
        ready.then_some(platform)
    })
    .await
}

#[tokio::test]
async fn the_platform_runs_the_payments_service_with_its_own_database_and_a_kept_delivery_key() {
    let _configured = STRIPE_SET.read().await;
    let client = admin().await;
    let data = service_secret(&client).await;
    assert_eq!(
        text(&data, "STRIPE_SECRET_KEY"),
        tiqzy_e2e::STRIPE_TEST_KEY,
        "the platform's key, copied from the Platform's Secret"
    );
    assert_eq!(
        text(&data, "STRIPE_WEBHOOK_SECRETS"),
        tiqzy_e2e::STRIPE_WEBHOOK_SECRET
    );
    let key = text(&data, "TIQZY_PAYMENTS_DELIVERY_KEY");
    assert!(
        key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "64 hex characters"
    );
    // The credentials open the service's own database.
    let url = text(&data, "DATABASE_URL");
    let (db, connection) =
        tokio_postgres::connect(&url.replace("?sslmode=disable", ""), tokio_postgres::NoTls)
            .await
            .expect("the service's credentials work");
    tokio::spawn(connection);
    let row = db
        .query_one("SELECT current_database()", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "tiqzy_payments");

    let deployments = Api::<Deployment>::namespaced(client.clone(), NAMESPACE);
    let deployment = eventually("the Deployment", || async {
        deployments.get_opt("tiqzy-payments").await.ok().flatten()
    })
    .await;
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.expect("pod");
    assert_eq!(
        pod.containers[0].command.as_deref(),
        Some(&["tiqzy-payments".to_owned()][..])
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("tiqzy-payments"));
    Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE)
        .get("tiqzy-payments")
        .await
        .expect("ServiceAccount");
    let service = Api::<Service>::namespaced(client.clone(), NAMESPACE)
        .get("tiqzy-payments")
        .await
        .expect("Service");
    assert_eq!(
        service.spec.expect("spec").ports.expect("ports")[0].port,
        8080
    );
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), NAMESPACE)
        .get("tiqzy-payments")
        .await
        .expect("PDB");
    assert_eq!(
        pdb.spec.expect("spec").min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels("app.kubernetes.io/name=tiqzy-payments"))
        .await
        .expect("policies");
    assert_eq!(policies.items.len(), 2, "ingress and egress");
    // Stripe reaches exactly one path on payments.<baseDomain>.
    let ingress = Api::<Ingress>::namespaced(client.clone(), NAMESPACE)
        .get("tiqzy-payments")
        .await
        .expect("Ingress");
    let rules = ingress.spec.expect("spec").rules.expect("rules");
    assert_eq!(
        rules[0].host.as_deref(),
        Some(format!("payments.{}", tiqzy_e2e::BASE_DOMAIN).as_str())
    );
    let paths = &rules[0].http.as_ref().expect("http").paths;
    assert_eq!(paths.len(), 1);
    assert_eq!(paths[0].path.as_deref(), Some("/webhooks/stripe"));
    assert_eq!(paths[0].path_type, "Exact");

    payments_ready(&client).await;

    // Reconciles after the first (here: repairing a deleted Deployment) keep the key.
    deployments
        .delete("tiqzy-payments", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the Deployment's repair", || async {
        let d = deployments.get_opt("tiqzy-payments").await.ok().flatten()?;
        (d.metadata.uid != deployment.metadata.uid).then_some(())
    })
    .await;
    let again = service_secret(&client).await;
    assert_eq!(text(&again, "TIQZY_PAYMENTS_DELIVERY_KEY"), key);
    assert_eq!(text(&again, "DATABASE_URL"), url);

    // Converged, the service costs no writes: its objects and the Platform's status stay as
    // they are over resyncs (every 3 s here).
    payments_ready(&client).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = operator_write_times(&client).await;
    assert!(
        before.len() >= 8,
        "expected the service's objects, got {before:?}"
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        before,
        operator_write_times(&client).await,
        "the operator wrote to a converged payments service"
    );

    let out = Harness::shared()
        .kube
        .kubectl()
        .args(["get", "platform", "default"])
        .output()
        .expect("kubectl");
    let header = String::from_utf8_lossy(&out.stdout);
    assert!(header.contains("PAYMENTS"), "{header}");
}

/// The time of the operator's last write to each of the service's objects and the Platform.
async fn operator_write_times(client: &kube::Client) -> std::collections::BTreeMap<String, String> {
    let mut times = std::collections::BTreeMap::new();
    let mut record = |kind: &str, object: &kube::api::ObjectMeta| {
        for entry in object.managed_fields.iter().flatten() {
            if entry.manager.as_deref() == Some("tiqzy-operator") {
                let key = format!(
                    "{kind}/{}/{}",
                    object.name.clone().unwrap_or_default(),
                    entry.subresource.clone().unwrap_or_default()
                );
                times.insert(key, format!("{:?}", entry.time));
            }
        }
    };
    let platform = Api::<Platform>::all(client.clone())
        .get("default")
        .await
        .expect("platform");
    record("Platform", &platform.metadata);
    let selector = ListParams::default().labels("app.kubernetes.io/name=tiqzy-payments");
    macro_rules! each {
        ($($kind:ty),*) => {$(
            for object in Api::<$kind>::namespaced(client.clone(), NAMESPACE)
                .list(&selector)
                .await
                .expect("list")
                .items
            {
                record(stringify!($kind), &object.metadata);
            }
        )*};
    }
    each!(
        Secret,
        ServiceAccount,
        Deployment,
        Service,
        PodDisruptionBudget,
        NetworkPolicy,
        Ingress
    );
    times
}

#[tokio::test]
async fn a_storefront_gets_its_delivery_secret_and_no_stripe_key() {
    let _configured = STRIPE_SET.read().await;
    let client = admin().await;
    create_tenant(
        &client,
        "pay-shop",
        json!({ "displayName": "Pay Shop", "currency": "EUR",
                "payments": { "connectedAccountId": "acct_1PayShop" } }),
    )
    .await;
    let tenant = wait_for(&client, "pay-shop", "paid through the service", |t| {
        is_ready(t) && condition(t, "PaymentsReady").is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(
        condition(&tenant, "PaymentsReady")
            .expect("PaymentsReady")
            .reason,
        "PaymentsConfigured"
    );
    let key = text(
        &service_secret(&client).await,
        "TIQZY_PAYMENTS_DELIVERY_KEY",
    );
    let ns = "tiqzy-pay-shop";
    let secrets = Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("secrets");
    for secret in &secrets.items {
        let data = secret.data.clone().unwrap_or_default();
        assert!(
            !data.contains_key("STRIPE_SECRET_KEY")
                && !data
                    .values()
                    .any(|v| v.0 == tiqzy_e2e::STRIPE_TEST_KEY.as_bytes()),
            "the Stripe key is in {:?}",
            secret.metadata.name
        );
    }
    let payments = secrets
        .items
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("storefront-payments"))
        .and_then(|s| s.data.clone())
        .expect("storefront-payments");
    assert_eq!(
        text(&payments, "TIQZY_PAYMENTS_WEBHOOK_SECRETS"),
        tiqzy_crds::payments::delivery_secret(key.as_bytes(), "pay-shop")
    );
    let settings = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("storefront")
        .await
        .expect("config map")
        .data
        .expect("data");
    assert_eq!(
        settings["TIQZY_PAYMENTS_URL"],
        "http://tiqzy-payments.tiqzy-system.svc:8080"
    );
    assert_eq!(
        settings["TIQZY_PAYMENTS_TOKEN_FILE"],
        tiqzy_crds::payments::TOKEN_PATH
    );
    assert!(!settings.contains_key("STRIPE_API_BASE"));
    let pod = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("storefront")
        .await
        .expect("deployment")
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod");
    let token = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .find_map(|s| s.service_account_token.clone())
        .expect("a projected token");
    assert_eq!(
        token.audience.as_deref(),
        Some(tiqzy_crds::payments::AUDIENCE)
    );
    assert_eq!(token.expiration_seconds, Some(3600));
}

#[tokio::test]
async fn an_upgrade_prunes_the_storefront_s_old_stripe_secret() {
    let _configured = STRIPE_SET.read().await;
    let client = admin().await;
    create_tenant(
        &client,
        "pay-upgrade",
        json!({ "displayName": "Pay Upgrade", "currency": "EUR" }),
    )
    .await;
    let tenant = wait_for(&client, "pay-upgrade", "Ready", is_ready).await;
    // What an operator before the payments service wrote: the platform's key, owned by the
    // tenant and labelled as its.
    let old: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "storefront-stripe",
            "labels": {
                "app.kubernetes.io/managed-by": "tiqzy-operator",
                "app.kubernetes.io/name": "tiqzy-storefront",
                "app.kubernetes.io/instance": "pay-upgrade",
                "tiqzy.io/tenant": "pay-upgrade",
            },
            "ownerReferences": [{
                "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant", "name": "pay-upgrade",
                "uid": tenant.metadata.uid, "controller": true,
            }],
        },
        "stringData": { "STRIPE_SECRET_KEY": tiqzy_e2e::STRIPE_TEST_KEY },
    }))
    .expect("secret");
    let secrets = Api::<Secret>::namespaced(client.clone(), "tiqzy-pay-upgrade");
    secrets
        .create(&PostParams::default(), &old)
        .await
        .expect("create the old Secret");
    eventually("the old Secret's pruning", || async {
        match secrets.get_opt("storefront-stripe").await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await;
}

#[tokio::test]
async fn a_tenant_named_payments_is_refused() {
    let _configured = STRIPE_SET.read().await;
    let client = admin().await;
    create_tenant(
        &client,
        "payments",
        json!({ "displayName": "Squatter", "currency": "EUR",
                "database": { "deletionPolicy": "Delete" } }),
    )
    .await;
    let tenant: Tenant = wait_for(&client, "payments", "refused", |t| {
        condition(t, "Ready").is_some_and(|c| c.reason == "InvalidSpec")
    })
    .await;
    let ready = condition(&tenant, "Ready").expect("Ready");
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("payments.apps.tiqzy.test"),
        "{}",
        ready.message
    );
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    assert!(
        namespaces
            .get_opt("tiqzy-payments")
            .await
            .expect("get")
            .is_none()
    );
    // Deleting it, even with deletionPolicy Delete, leaves the service's database alone.
    let tenants = Api::<Tenant>::all(client.clone());
    tenants
        .delete("payments", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the refused tenant's deletion", || async {
        matches!(tenants.get_opt("payments").await, Ok(None)).then_some(())
    })
    .await;
    let url = text(&service_secret(&client).await, "DATABASE_URL");
    let (db, connection) =
        tokio_postgres::connect(&url.replace("?sslmode=disable", ""), tokio_postgres::NoTls)
            .await
            .expect("the service's database is still there");
    tokio::spawn(connection);
    db.query_one("SELECT 1", &[]).await.expect("query");
}

#[tokio::test]
async fn removing_stripe_from_the_platform_removes_the_service_and_its_key() {
    let _alone = STRIPE_SET.write().await;
    let client = admin().await;
    payments_ready(&client).await;
    let key = text(
        &service_secret(&client).await,
        "TIQZY_PAYMENTS_DELIVERY_KEY",
    );
    let platforms = Api::<Platform>::all(client.clone());
    let stripe = serde_json::to_value(
        platforms
            .get("default")
            .await
            .expect("Platform")
            .spec
            .stripe,
    )
    .expect("stripe");
    let set_stripe = |stripe: serde_json::Value| {
        let platforms = platforms.clone();
        async move {
            platforms
                .patch(
                    "default",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": { "stripe": stripe } })),
                )
                .await
                .expect("patch the Platform");
        }
    };
    set_stripe(serde_json::Value::Null).await;

    let deployments = Api::<Deployment>::namespaced(client.clone(), NAMESPACE);
    let secrets = Api::<Secret>::namespaced(client.clone(), NAMESPACE);
    eventually("the service's removal", || async {
        let gone = deployments.get_opt("tiqzy-payments").await.ok()?.is_none();
        let data = secrets.get_opt("tiqzy-payments").await.ok()??.data?;
        (gone && !data.contains_key("STRIPE_SECRET_KEY")).then_some(())
    })
    .await;
    let data = service_secret(&client).await;
    assert!(!data.contains_key("STRIPE_WEBHOOK_SECRETS"));
    assert_eq!(text(&data, "TIQZY_PAYMENTS_DELIVERY_KEY"), key, "kept");
    for (what, found) in [
        (
            "Service",
            Api::<Service>::namespaced(client.clone(), NAMESPACE)
                .get_opt("tiqzy-payments")
                .await
                .map(|o| o.is_some()),
        ),
        (
            "Ingress",
            Api::<Ingress>::namespaced(client.clone(), NAMESPACE)
                .get_opt("tiqzy-payments")
                .await
                .map(|o| o.is_some()),
        ),
        (
            "PodDisruptionBudget",
            Api::<PodDisruptionBudget>::namespaced(client.clone(), NAMESPACE)
                .get_opt("tiqzy-payments")
                .await
                .map(|o| o.is_some()),
        ),
    ] {
        assert!(!found.expect(what), "{what} tiqzy-payments is still there");
    }
    // Nothing the operator wrote holds the key any more (the Platform's own Secret, written
    // by the platform engineer, is the only one).
    let everywhere = Api::<Secret>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("secrets");
    let holders: Vec<String> = everywhere
        .items
        .iter()
        .filter(|s| {
            s.data
                .iter()
                .flatten()
                .any(|(_, v)| v.0 == tiqzy_e2e::STRIPE_TEST_KEY.as_bytes())
        })
        .map(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()))
        .collect();
    assert!(
        holders
            .iter()
            .all(|h| !h.ends_with("/tiqzy-payments") && !h.contains("/storefront")),
        "the Stripe key is still in {holders:?}"
    );
    eventually("PaymentsServiceReady=False", || async {
        let platform = platforms.get("default").await.ok()?;
        platform
            .status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| c.type_ == "PaymentsServiceReady" && c.reason == "PlatformNotConfigured")
            .then_some(())
    })
    .await;

    // Turned back on, the service comes back with the same delivery key.
    set_stripe(stripe).await;
    payments_ready(&client).await;
    let data = service_secret(&client).await;
    assert_eq!(text(&data, "STRIPE_SECRET_KEY"), tiqzy_e2e::STRIPE_TEST_KEY);
    assert_eq!(text(&data, "TIQZY_PAYMENTS_DELIVERY_KEY"), key);
}
