//! The operator end to end: the real binary, running as its own ServiceAccount bound only to
//! config/rbac, against the harness's control plane, PostgreSQL and Redis.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;
use tiqzy_crds::Tenant;
use tiqzy_e2e::Harness;

mod common;
use common::{condition, create_tenant, eventually_events, is_ready, wait_for};

/// The operator process, started once for this test binary.
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

#[tokio::test]
async fn a_tenant_becomes_ready_with_its_url_database_and_cache() {
    let client = admin().await;
    // On a platform whose payments service is still starting, a tenant's payments are rightly
    // reported down and then recovered (two Warnings and a recovery Event): the Events checked
    // below are those of a tenant created on a running platform.
    payments_service_ready(&client).await;
    create_tenant(
        &client,
        "shop-ready",
        json!({ "displayName": "Shop Ready", "currency": "EUR",
                "payments": { "connectedAccountId": "acct_1ShopReady" } }),
    )
    .await;
    let tenant = wait_for(&client, "shop-ready", "Ready", is_ready).await;
    let status = tenant.status.clone().expect("status");
    assert_eq!(
        status.url.as_deref(),
        Some("https://shop-ready.apps.tiqzy.test")
    );
    assert_eq!(status.namespace.as_deref(), Some("tiqzy-shop-ready"));
    for type_ in [
        "DatabaseReady",
        "CacheReady",
        "StorefrontAvailable",
        "CertificateReady",
        "PaymentsReady",
    ] {
        let c = condition(&tenant, type_).unwrap_or_else(|| panic!("{type_} missing"));
        assert_eq!(c.status, "True", "{type_}: {}", c.message);
        assert_eq!(c.observed_generation, tenant.metadata.generation);
    }
    // No ingress controller runs here: the Ingress waits for one, which does not hold back
    // Ready (the router's admission is tested in router.rs).
    let routed = condition(&tenant, "Routed").expect("Routed");
    assert_eq!(
        (routed.status.as_str(), routed.reason.as_str()),
        ("False", "IngressCreated"),
        "{}",
        routed.message
    );
    let ns = Api::<Namespace>::all(client.clone())
        .get("tiqzy-shop-ready")
        .await
        .expect("namespace");
    assert_eq!(
        ns.labels()["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let secret = Api::<Secret>::namespaced(client.clone(), "tiqzy-shop-ready")
        .get("storefront-database")
        .await
        .expect("db secret");
    let data = secret.data.expect("data");
    let url = String::from_utf8(data["DATABASE_URL"].0.clone()).expect("utf8");
    // The credentials in the Secret really open the tenant's own database.
    let (db, connection) =
        tokio_postgres::connect(&url.replace("?sslmode=disable", ""), tokio_postgres::NoTls)
            .await
            .expect("tenant credentials work");
    tokio::spawn(connection);
    let row = db
        .query_one("SELECT current_database()", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "tiqzy_shop_ready");

    // The storefront can take payments through the payments service: the secret its events
    // are signed with (never the platform's Stripe key), the tenant's account and fee.
    let payments = Api::<Secret>::namespaced(client.clone(), "tiqzy-shop-ready")
        .get("storefront-payments")
        .await
        .expect("payments secret")
        .data
        .expect("data");
    assert_eq!(
        payments.keys().collect::<Vec<_>>(),
        vec!["TIQZY_PAYMENTS_WEBHOOK_SECRETS"]
    );
    let settings = Api::<ConfigMap>::namespaced(client.clone(), "tiqzy-shop-ready")
        .get("storefront")
        .await
        .expect("config map")
        .data
        .expect("data");
    assert_eq!(settings["TIQZY_STRIPE_ACCOUNT"], "acct_1ShopReady");
    assert_eq!(settings["TIQZY_APPLICATION_FEE_BPS"], "250");
    assert_eq!(
        settings["TIQZY_PAYMENTS_URL"],
        "http://tiqzy-payments.tiqzy-system.svc:8080"
    );

    let h = Harness::shared();
    let out = h
        .kube
        .kubectl()
        .args(["get", "tenants", "shop-ready"])
        .output()
        .expect("kubectl");
    let text = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, vec!["NAME", "READY", "URL", "AGE"], "{text}");
    assert!(
        text.contains("True") && text.contains("https://shop-ready.apps.tiqzy.test"),
        "{text}"
    );

    // `kubectl describe tenant` tells the news, not every step: Ready once, and none of
    // the parts that were merely created.
    let told = eventually_events(&client, "shop-ready", |told| {
        told.iter().any(|e| e.is("Normal", "Reconciled"))
    })
    .await;
    let created = [
        "DatabaseProvisioned",
        "CacheProvisioned",
        "Available",
        "PaymentsConfigured",
        "IngressCreated",
        "Progressing",
    ];
    assert!(
        told.iter().all(|e| !created.contains(&e.reason.as_str())),
        "{told:#?}"
    );
    assert_eq!(
        told.iter().filter(|e| e.reason == "Reconciled").count(),
        1,
        "{told:#?}"
    );
}

/// Waits until the Platform reports its payments service ready.
async fn payments_service_ready(client: &kube::Client) {
    let platforms = Api::<tiqzy_crds::Platform>::all(client.clone());
    for _ in 0..240 {
        let platform = platforms.get_opt("default").await.expect("platform");
        let ready = platform.and_then(|p| p.status).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "PaymentsServiceReady" && c.status == "True")
        });
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the payments service never became ready");
}

#[tokio::test]
async fn drift_is_repaired() {
    let client = admin().await;
    create_tenant(
        &client,
        "shop-drift",
        json!({ "displayName": "Drift", "currency": "EUR" }),
    )
    .await;
    wait_for(&client, "shop-drift", "Ready", is_ready).await;
    let ns = "tiqzy-shop-drift";
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    services
        .delete("storefront", &DeleteParams::default())
        .await
        .expect("delete service");
    deployments
        .patch("storefront", &PatchParams::default(), &Patch::Merge(json!({
            "spec": { "template": { "spec": { "containers": [{ "name": "runtime", "image": "evil.example/miner:1" }] } } }
        })))
        .await
        .expect("tamper");
    let mut repaired = false;
    for _ in 0..300 {
        let service = services.get_opt("storefront").await.expect("get");
        let image = deployments
            .get("storefront")
            .await
            .expect("get")
            .spec
            .and_then(|s| s.template.spec)
            .map(|p| p.containers[0].image.clone());
        if service.is_some()
            && image
                .flatten()
                .is_some_and(|i| i.starts_with("quay.io/tiqzy/runtime@sha256:"))
        {
            repaired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        repaired,
        "the Service came back and the Deployment's image was restored"
    );
}

/// A database administrator who takes away a converged tenant's login and deletes its Redis
/// user breaks its storefront; the next store check (`--store-check-seconds`, as often as the
/// resync here) puts both back with the passwords in the tenant's Secrets, without any change
/// to the Tenant.
#[tokio::test]
async fn drift_on_the_servers_is_repaired_at_the_next_store_check() {
    let client = admin().await;
    let name = "shop-server-drift";
    create_tenant(
        &client,
        name,
        json!({ "displayName": "Server Drift", "currency": "EUR" }),
    )
    .await;
    wait_for(&client, name, "Ready", is_ready).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "tiqzy-shop-server-drift");
    let value = |secret: &Secret, key: &str| {
        let data = secret.data.as_ref().expect("data");
        String::from_utf8(data[key].0.clone()).expect("utf8")
    };
    let database = secrets.get("storefront-database").await.expect("db secret");
    let database_url = value(&database, "DATABASE_URL").replace("?sslmode=disable", "");
    let cache = secrets.get("storefront-cache").await.expect("cache secret");
    let redis_url = value(&cache, "REDIS_URL");
    let works = || async {
        let database = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
            .await
            .is_ok();
        let cache = match redis::Client::open(redis_url.as_str()) {
            Ok(c) => c.get_multiplexed_async_connection().await.is_ok(),
            Err(_) => false,
        };
        (database, cache)
    };
    assert_eq!(works().await, (true, true), "the tenant's credentials work");

    let h = Harness::shared();
    let (pg, connection) =
        tokio_postgres::connect(&h.postgres.admin_url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL admin");
    tokio::spawn(connection);
    pg.batch_execute("ALTER ROLE tiqzy_shop_server_drift NOLOGIN")
        .await
        .expect("take the login away");
    let mut redis_admin = redis::Client::open(h.redis.admin_url())
        .expect("admin url")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis admin");
    let deleted: i64 = redis::cmd("ACL")
        .arg("DELUSER")
        .arg("tiqzy-shop-server-drift")
        .query_async(&mut redis_admin)
        .await
        .expect("ACL DELUSER");
    assert_eq!(deleted, 1, "the tenant's Redis user existed");
    assert_eq!(works().await, (false, false), "the drift broke both");

    let mut seen = (false, false);
    for _ in 0..60 {
        seen = works().await;
        if seen == (true, true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(seen, (true, true), "login and Redis user restored");
    // The repair is reported as the stores being in order, not as a fault.
    wait_for(&client, name, "with its stores ready", |t| {
        ["DatabaseReady", "CacheReady"]
            .iter()
            .all(|type_| condition(t, type_).is_some_and(|c| c.status == "True"))
    })
    .await;
}

/// A value the schema lets through but the API server refuses in the Deployment (a CPU
/// request above its limit) shows on the Tenant, with the server's words, instead of a silent
/// retry loop; fixing the spec recovers.
#[tokio::test]
async fn an_object_the_api_server_refuses_is_reported_on_the_tenant() {
    let client = admin().await;
    let resources = json!({ "requests": { "cpu": "2" }, "limits": { "cpu": "1" } });
    create_tenant(
        &client,
        "shop-refused",
        json!({ "displayName": "Refused", "currency": "EUR",
                "storefront": { "resources": resources } }),
    )
    .await;
    let refused = wait_for(&client, "shop-refused", "ObjectRefused", |t| {
        condition(t, "Ready").is_some_and(|c| c.status == "False" && c.reason == "ObjectRefused")
    })
    .await;
    let message = &condition(&refused, "Ready").expect("ready").message;
    assert!(
        message.contains("Deployment tiqzy-shop-refused/storefront"),
        "{message}"
    );
    assert!(
        message.contains("must be less than or equal to cpu limit"),
        "{message}"
    );
    // A Warning Event on the Tenant says why.
    eventually_events(&client, "shop-refused", |told| {
        told.iter().any(|e| e.is("Warning", "ObjectRefused"))
    })
    .await;
    // No hot loop: the operator waits for a change, so the status stays as written.
    let written = refused.metadata.resource_version.clone();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = Api::<Tenant>::all(client.clone())
        .get("shop-refused")
        .await
        .expect("tenant");
    assert_eq!(
        later.metadata.resource_version, written,
        "nothing rewritten: was {:#?}\nnow {:#?}",
        refused.status, later.status
    );
    let fixed = json!({ "spec": { "storefront": { "resources": {
        "requests": { "cpu": "100m" }, "limits": { "cpu": "1" } } } } });
    Api::<Tenant>::all(client.clone())
        .patch(
            "shop-refused",
            &PatchParams::default(),
            &Patch::Merge(&fixed),
        )
        .await
        .expect("fix the spec");
    wait_for(&client, "shop-refused", "Ready", is_ready).await;
}

#[tokio::test]
async fn a_host_claimed_by_an_older_tenant_is_not_stolen() {
    let client = admin().await;
    create_tenant(
        &client,
        "host-first",
        json!({ "displayName": "First", "currency": "EUR", "hosts": ["tickets.shared.test"] }),
    )
    .await;
    wait_for(&client, "host-first", "Ready", is_ready).await;
    create_tenant(
        &client,
        "host-second",
        json!({ "displayName": "Second", "currency": "EUR", "hosts": ["tickets.shared.test"] }),
    )
    .await;
    let second = wait_for(&client, "host-second", "HostConflict", |t| {
        condition(t, "Routed").is_some_and(|c| c.status == "False" && c.reason == "HostConflict")
    })
    .await;
    assert!(
        condition(&second, "Routed")
            .expect("routed")
            .message
            .contains("host-first")
    );
    assert!(!is_ready(&second));
    let ingresses: Api<k8s_openapi::api::networking::v1::Ingress> =
        Api::namespaced(client.clone(), "tiqzy-host-second");
    assert!(
        ingresses
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "no Ingress for the later tenant"
    );
    let first = Api::<Tenant>::all(client.clone())
        .get("host-first")
        .await
        .expect("first");
    assert!(is_ready(&first), "the first tenant keeps serving");
}

#[tokio::test]
async fn suspending_scales_to_zero_and_resuming_restores_autoscaling() {
    let client = admin().await;
    create_tenant(
        &client,
        "shop-pause",
        json!({ "displayName": "Pause", "currency": "EUR" }),
    )
    .await;
    wait_for(&client, "shop-pause", "Ready", is_ready).await;
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .patch(
            "shop-pause",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "storefront": { "suspended": true } } })),
        )
        .await
        .expect("suspend");
    wait_for(&client, "shop-pause", "Suspended", |t| {
        t.status.as_ref().and_then(|s| s.phase) == Some(tiqzy_crds::TenantPhase::Suspended)
    })
    .await;
    let ns = "tiqzy-shop-pause";
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("storefront")
        .await
        .expect("deployment");
    assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(0));
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    assert!(
        hpas.get_opt("storefront").await.expect("get").is_none(),
        "no autoscaler while suspended"
    );
    assert!(
        Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt("storefront-database")
            .await
            .expect("get")
            .is_some(),
        "data kept"
    );
    tenants
        .patch(
            "shop-pause",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "storefront": { "suspended": false } } })),
        )
        .await
        .expect("resume");
    wait_for(&client, "shop-pause", "Ready again", is_ready).await;
    assert!(
        hpas.get_opt("storefront").await.expect("get").is_some(),
        "autoscaler back"
    );
}

#[tokio::test]
async fn deleting_a_tenant_removes_its_namespace_and_per_policy_its_database() {
    let client = admin().await;
    create_tenant(&client, "shop-gone", json!({ "displayName": "Gone", "currency": "EUR", "database": { "deletionPolicy": "Delete" } })).await;
    create_tenant(
        &client,
        "shop-kept",
        json!({ "displayName": "Kept", "currency": "EUR" }),
    )
    .await;
    wait_for(&client, "shop-gone", "Ready", is_ready).await;
    wait_for(&client, "shop-kept", "Ready", is_ready).await;
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .delete("shop-gone", &DeleteParams::default())
        .await
        .expect("delete");
    tenants
        .delete("shop-kept", &DeleteParams::default())
        .await
        .expect("delete");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut gone = false;
    for _ in 0..900 {
        let tenants_gone = tenants.get_opt("shop-gone").await.expect("get").is_none()
            && tenants.get_opt("shop-kept").await.expect("get").is_none();
        let ns_gone = namespaces
            .get_opt("tiqzy-shop-gone")
            .await
            .expect("get")
            .is_none();
        if tenants_gone && ns_gone {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the tenant and its namespace are deleted");
    let h = Harness::shared();
    let (pg, connection) =
        tokio_postgres::connect(&h.postgres.admin_config("postgres"), tokio_postgres::NoTls)
            .await
            .expect("admin");
    tokio::spawn(connection);
    let databases: Vec<String> = pg
        .query("SELECT datname FROM pg_database WHERE datname IN ('tiqzy_shop_gone', 'tiqzy_shop_kept')", &[])
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        databases,
        vec!["tiqzy_shop_kept".to_owned()],
        "Delete drops, Retain keeps"
    );
}

#[tokio::test]
async fn a_converged_tenant_causes_no_writes() {
    let client = admin().await;
    create_tenant(
        &client,
        "shop-quiet",
        json!({ "displayName": "Quiet", "currency": "EUR" }),
    )
    .await;
    wait_for(&client, "shop-quiet", "Ready", is_ready).await;
    // Let the rollout and the platform settle (on a loaded machine the payments service and
    // the pods may come up after Ready, and their conditions change then): the conditions
    // must read the same over two resyncs. An idle write changes no condition, so it is not
    // waited out here but caught below. Then record when the operator last wrote each object.
    let tenants: Api<Tenant> = Api::all(client.clone());
    let conditions = || async {
        let tenant = tenants.get("shop-quiet").await.expect("tenant");
        tenant
            .status
            .map(|s| {
                s.conditions
                    .into_iter()
                    .map(|c| (c.type_, c.status, c.reason))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let mut seen = conditions().await;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_secs(7)).await;
        let now = conditions().await;
        if now == seen {
            break;
        }
        seen = now;
    }
    let before = operator_write_times(&client, "shop-quiet").await;
    assert!(
        before.len() >= 10,
        "expected the tenant's objects, got {before:?}"
    );
    // The operator resyncs every 3 s: this spans at least two resyncs.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = operator_write_times(&client, "shop-quiet").await;
    assert_eq!(before, after, "the operator wrote to a converged tenant");
}

/// For every object of the tenant: the time of the operator's last write (from managedFields).
async fn operator_write_times(client: &kube::Client, tenant: &str) -> BTreeMap<String, String> {
    let ns = format!("tiqzy-{tenant}");
    let mut times = BTreeMap::new();
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
    let t = Api::<Tenant>::all(client.clone())
        .get(tenant)
        .await
        .expect("tenant");
    record("Tenant", &t.metadata);
    let discovery_kinds = [
        ("", "v1", "Secret", "secrets"),
        ("", "v1", "ConfigMap", "configmaps"),
        ("", "v1", "Service", "services"),
        ("", "v1", "ServiceAccount", "serviceaccounts"),
        ("apps", "v1", "Deployment", "deployments"),
        (
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
        ),
        (
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
        ),
        (
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
        ),
        ("networking.k8s.io", "v1", "Ingress", "ingresses"),
    ];
    for (group, version, kind, plural) in discovery_kinds {
        let resource = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(group, version, kind),
            plural,
        );
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
        for object in api.list(&ListParams::default()).await.expect("list").items {
            record(kind, &object.metadata);
        }
    }
    let namespace = Api::<Namespace>::all(client.clone())
        .get(&ns)
        .await
        .expect("namespace");
    record("Namespace", &namespace.metadata);
    times
}
