//! Drift is repaired because the operator watches what it made, not because it happens to
//! look again: with a five-minute resync, a deleted or edited object comes back in seconds.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tiqzy_e2e::Harness;

mod common;
use common::{create_tenant, is_ready, wait_for};

/// Polls `check` for up to 30 s (a tenth of the resync period).
async fn within_seconds<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if check().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} was not repaired within 30 s (resync is 300 s)");
}

#[tokio::test]
async fn deleted_and_edited_objects_come_back_before_any_resync() {
    let h = Harness::shared();
    let client = h.kube.client().await.expect("client");
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
