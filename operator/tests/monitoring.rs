//! What the alerts and dashboards read from the operator, scraped from the real program: two
//! replicas, one leading (`tiqzy_operator_leader` 1) and one standing by (0), each exporting
//! every metric name `config/prometheus` and `config/grafana` read from it.

use std::time::Duration;

use serde_json::json;
use tiqzy_e2e::monitoring::{Exporter, unexported};
use tiqzy_e2e::{Harness, OperatorProcess, sample};

mod common;
use common::{create_tenant, is_ready, wait_for};

/// The replicas' scrapes once one of them leads; fails after a minute.
async fn once_one_leads(replicas: &[OperatorProcess]) -> Vec<String> {
    let mut scrapes = Vec::new();
    for _ in 0..600 {
        scrapes.clear();
        for replica in replicas {
            scrapes.push(replica.metrics().await.unwrap_or_default());
        }
        if scrapes
            .iter()
            .any(|s| sample(s, "tiqzy_operator_leader") == Some(1.0))
        {
            return scrapes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no replica reports that it leads:\n{scrapes:#?}")
}

#[tokio::test]
async fn the_operator_exports_what_the_alerts_and_dashboards_read() {
    let h = Harness::shared();
    let client = h.kube.client().await.expect("client");
    let kubeconfig = tiqzy_e2e::install_tiqzy(h).await.expect("install");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    let replicas: Vec<OperatorProcess> = ["monitor-a", "monitor-b"]
        .into_iter()
        .map(|identity| OperatorProcess::new(binary, &kubeconfig, identity))
        .collect();
    let _running: Vec<tiqzy_e2e::Service> = replicas
        .iter()
        .map(|r| r.start(h).expect("start replica"))
        .collect();

    // A reconcile, so the reconcile counters and histogram carry samples too.
    create_tenant(
        &client,
        "monitored",
        json!({ "displayName": "Monitored", "currency": "EUR" }),
    )
    .await;
    wait_for(&client, "monitored", "Ready", is_ready).await;

    let scrapes = once_one_leads(&replicas).await;
    let leaders: Vec<Option<f64>> = scrapes
        .iter()
        .map(|s| sample(s, "tiqzy_operator_leader"))
        .collect();
    let mut sorted = leaders.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    assert_eq!(
        sorted,
        [Some(0.0), Some(1.0)],
        "one leader and one standby: {leaders:?}"
    );
    for scrape in &scrapes {
        let missing = unexported(Exporter::Operator, scrape).expect("queries");
        assert!(
            missing.is_empty(),
            "the operator does not export {missing:#?}\n{scrape}"
        );
    }
    let leader = &scrapes[leaders
        .iter()
        .position(|l| *l == Some(1.0))
        .expect("leader")];
    assert!(
        leader
            .lines()
            .any(|l| l.starts_with("controller_runtime_reconcile_total{")),
        "{leader}"
    );
    assert!(sample(leader, "tiqzy_tenants{phase=\"Ready\"}").is_some_and(|n| n >= 1.0));
}
