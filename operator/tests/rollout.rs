//! A new runtime image rolls across tenants a few at a time: never more than
//! `Platform.spec.rollout.maxConcurrentTenantRollouts` tenants mid-rollout at once.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use tiqzy_crds::Platform;
use tiqzy_e2e::Harness;

mod common;
use common::{create_tenant, is_ready, wait_for};

fn image(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()
}

fn rolled_out(d: &Deployment) -> bool {
    let status = d.status.clone().unwrap_or_default();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && status.updated_replicas.unwrap_or(0) >= want
        && status.available_replicas.unwrap_or(0) >= want
        && status.replicas.unwrap_or(0) <= status.updated_replicas.unwrap_or(0)
}

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
    for name in &names {
        wait_for(&client, name, "Ready", is_ready).await;
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

    let deployments: Api<Deployment> = Api::all(client.clone());
    let selector = ListParams::default().labels("app.kubernetes.io/name=tiqzy-storefront");
    let mut most_at_once = 0;
    let mut ever_rolling = BTreeSet::new();
    let mut done = false;
    for _ in 0..3000 {
        let list = deployments.list(&selector).await.expect("list").items;
        let mine: Vec<&Deployment> = list
            .iter()
            .filter(|d| {
                d.metadata
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| names.iter().any(|n| ns == format!("tiqzy-{n}")))
            })
            .collect();
        let rolling: Vec<&&Deployment> = mine
            .iter()
            .filter(|d| image(d).as_deref() == Some(new_image.as_str()) && !rolled_out(d))
            .collect();
        most_at_once = most_at_once.max(rolling.len());
        ever_rolling.extend(rolling.iter().filter_map(|d| d.metadata.namespace.clone()));
        if mine.len() == 10
            && mine
                .iter()
                .all(|d| image(d).as_deref() == Some(new_image.as_str()) && rolled_out(d))
        {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(done, "all ten storefronts end up on the new image");
    assert!(
        most_at_once <= 2,
        "{most_at_once} tenants were mid-rollout at once; the limit is 2"
    );
    println!(
        "most tenants mid-rollout at once: {most_at_once}; seen rolling: {}",
        ever_rolling.len()
    );
}
