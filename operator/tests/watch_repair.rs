//! Drift is repaired because the operator watches what it made, not because it happens to
//! look again: with a five-minute resync, a deleted or edited object comes back in seconds,
//! and the router admitting a Route (OpenShift's Route CRD is installed here) shows in the
//! Tenant's `Routed` condition in seconds too.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::json;
use tiqzy_e2e::Harness;

mod common;
use common::{condition, create_tenant, is_ready, wait_for};

/// Polls `check` for up to 30 s (a tenth of the resync period).
async fn within_seconds<F, Fut>(what: &str, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, Duration::from_secs(30), check).await
}

/// Polls `check` for up to `limit`.
async fn within<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within {limit:?} (resync is 300 s)");
}

#[tokio::test]
async fn deleted_and_edited_objects_come_back_before_any_resync() {
    let h = Harness::shared();
    let client = h.kube.client().await.expect("client");
    // Before the operator starts: it discovers the Route API once, at start.
    tiqzy_e2e::install_route_crd(&client)
        .await
        .expect("Route CRD");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    let _operator = tiqzy_e2e::install_operator(h, binary, 300)
        .await
        .expect("operator");
    create_tenant(
        &client,
        "watched",
        json!({ "displayName": "Watched", "currency": "EUR" }),
    )
    .await;
    wait_for(&client, "watched", "Ready", is_ready).await;
    let ns = "tiqzy-watched";

    // The router's admission, written to the Route's status the way the router does, once
    // the tenant has settled (nothing else left to bring it back to the queue).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let routes: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &tiqzy_operator::build::route_api_resource(),
    );
    let route = routes
        .list(&Default::default())
        .await
        .expect("routes")
        .items
        .into_iter()
        .next()
        .expect("a Route for the tenant");
    let tenants: Api<tiqzy_crds::Tenant> = Api::all(client.clone());
    let routed = |t: &tiqzy_crds::Tenant| {
        condition(t, "Routed").is_some_and(|c| c.status == "True" && c.reason == "Admitted")
    };
    assert!(
        !routed(&tenants.get("watched").await.expect("tenant")),
        "not admitted before the router says so"
    );
    let host = route.data["spec"]["host"].clone();
    routes
        .patch_status(
            &route.metadata.name.clone().expect("name"),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "ingress": [{
                "host": host, "routerName": "default",
                "conditions": [{ "type": "Admitted", "status": "True" }],
            }] } })),
        )
        .await
        .expect("admit the Route");
    // Without a Route watch the operator notices only when something else brings the tenant
    // back to the queue (seen: 12 s); with it, in well under a second.
    let took = within(
        "the Route's admission in the Tenant's status",
        Duration::from_secs(5),
        || async { tenants.get("watched").await.is_ok_and(|t| routed(&t)) },
    )
    .await;
    println!("Routed=True after {took:.1?}");

    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    services
        .delete("storefront", &DeleteParams::default())
        .await
        .expect("delete the Service");
    let took = within_seconds("the deleted Service", || async {
        services
            .get_opt("storefront")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    println!("Service back after {took:.1?}");

    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    policies
        .delete("default-deny", &DeleteParams::default())
        .await
        .expect("delete the default-deny policy");
    let took = within_seconds("the deleted default-deny NetworkPolicy", || async {
        policies
            .get_opt("default-deny")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    println!("NetworkPolicy back after {took:.1?}");

    let config: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    config
        .patch(
            "storefront",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "TIQZY_DISPLAY_NAME": "Hijacked" } })),
        )
        .await
        .expect("edit the ConfigMap");
    let took = within_seconds("the edited ConfigMap", || async {
        config
            .get("storefront")
            .await
            .ok()
            .and_then(|c| c.data)
            .is_some_and(|d| d["TIQZY_DISPLAY_NAME"] == "Watched")
    })
    .await;
    println!("ConfigMap restored after {took:.1?}");
}
