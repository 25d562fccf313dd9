//! Two operator replicas: one holds the Lease and reconciles, the other waits; when the
//! leader dies the standby takes over and tenants keep converging.

use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;
use tiqzy_e2e::{Harness, OperatorProcess};

mod common;
use common::{create_tenant, is_ready, wait_for};

async fn holder(client: &kube::Client) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), "tiqzy-system")
        .get_opt("tiqzy-operator")
        .await
        .ok()??;
    lease.spec?.holder_identity
}

fn reconciles(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("controller_runtime_reconcile_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_standby_takes_over_when_the_leader_dies() {
    let h = Harness::shared();
    let client = h.kube.client().await.expect("client");
    let kubeconfig = tiqzy_e2e::install_tiqzy(h).await.expect("install");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    let mut replicas: Vec<(OperatorProcess, tiqzy_e2e::Service)> = ["replica-a", "replica-b"]
        .into_iter()
        .map(|identity| {
            let mut process = OperatorProcess::new(binary, &kubeconfig, identity);
            process.args.push("--lease-seconds=4".to_owned());
            let service = process.start(h).expect("start replica");
            (process, service)
        })
        .collect();

    create_tenant(
        &client,
        "failover-one",
        json!({ "displayName": "One", "currency": "EUR" }),
    )
    .await;
    wait_for(&client, "failover-one", "Ready", is_ready).await;
    let leader = holder(&client).await.expect("a replica holds the lease");
    let (leader_index, standby_index) = if leader == "replica-a" {
        (0, 1)
    } else {
        (1, 0)
    };

    // Only the leader reconciles.
    let standby_metrics = replicas[standby_index]
        .0
        .metrics()
        .await
        .expect("standby metrics");
    assert_eq!(
        reconciles(&standby_metrics),
        0.0,
        "the standby must not reconcile:\n{standby_metrics}"
    );
    assert!(
        reconciles(
            &replicas[leader_index]
                .0
                .metrics()
                .await
                .expect("leader metrics")
        ) > 0.0
    );

    replicas[leader_index].1.stop();
    let stopped = Instant::now();
    create_tenant(
        &client,
        "failover-two",
        json!({ "displayName": "Two", "currency": "EUR" }),
    )
    .await;
    wait_for(
        &client,
        "failover-two",
        "Ready under the new leader",
        is_ready,
    )
    .await;
    let standby = replicas[standby_index].0.identity.clone();
    assert_eq!(holder(&client).await.as_deref(), Some(standby.as_str()));
    println!(
        "takeover: failover-two Ready {:.1?} after the leader stopped (lease 4 s)",
        stopped.elapsed()
    );
}
