//! A new runtime image rolls across tenants a few at a time: never more than
//! `Platform.spec.rollout.maxConcurrentTenantRollouts` tenants mid-rollout at once.

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tiqzy_crds::Platform;
use tiqzy_e2e::Harness;

mod common;
use common::{create_tenant, is_ready_with_payments, wait_for, watch_rollout};

#[tokio::test]
async fn ten_tenants_roll_two_at_a_time() {
    let h = Harness::shared();
    let client = h.kube.client().await.expect("client");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    // The harness Platform allows two concurrent tenant rollouts.
    let _operator = tiqzy_e2e::install_operator(h, binary, 300)
        .await
        .expect("operator");
    let names: Vec<String> = (0..10).map(|i| format!("roll-{i}")).collect();
    for name in &names {
        create_tenant(
            &client,
            name,
            json!({ "displayName": name, "currency": "EUR" }),
        )
        .await;
    }
    // Settled first: a storefront's own configuration arriving late (its payments Secret)
    // rolls its pods on whatever image it runs, outside the image rollout counted here.
    for name in &names {
        wait_for(&client, name, "Ready with payments", is_ready_with_payments).await;
    }

    let new_image = format!("quay.io/tiqzy/runtime@sha256:{}", "2".repeat(64));
    Api::<Platform>::all(client.clone())
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "runtimeImage": new_image } })),
        )
        .await
        .expect("new runtime image");

    let seen = watch_rollout(&client, &names, &new_image).await;
    assert!(seen.done, "all ten storefronts end up on the new image");
    assert!(
        seen.most_at_once <= 2,
        "{} tenants were mid-rollout at once; the limit is 2: {:#?}",
        seen.most_at_once,
        seen.busiest
    );
    println!(
        "most tenants mid-rollout at once: {}; seen rolling: {}",
        seen.most_at_once,
        seen.seen_rolling.len()
    );
}
