//! What the alerts and dashboards read from the operator, scraped from the real program: two
//! replicas, one leading (`tiqzy_operator_leader` 1) and one standing by (0); the leader
//! exports every metric name `config/prometheus` and `config/grafana` read from it once the
//! events behind them happened (reconciles, a tenant's own certificate, a Tenant it cannot
//! read), except the backup gauges, which need backup storage this test does not start.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::CustomResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use tiqzy_crds::Tenant;
use tiqzy_e2e::monitoring::{Exporter, unexported};
use tiqzy_e2e::{Harness, OperatorProcess, sample};

mod common;
use common::{certificate, condition, create_tenant, wait_for};

/// Exported only for tenants with `spec.backup` on a Platform with backup storage (Azure Blob):
/// operator/tests/backup.rs drives them; here only their registration is checked.
const NOT_DRIVEN: [&str; 2] = [
    "tiqzy_backup_interval_seconds",
    "tiqzy_backup_last_success_timestamp_seconds",
];

/// The replicas' scrapes once one of them leads and `done` holds for the leader's; fails after
/// a minute.
async fn scrapes_once(replicas: &[OperatorProcess], done: impl Fn(&str) -> bool) -> Vec<String> {
    let mut scrapes = Vec::new();
    for _ in 0..600 {
        scrapes.clear();
        for replica in replicas {
            scrapes.push(replica.metrics().await.unwrap_or_default());
        }
        if scrapes
            .iter()
            .any(|s| sample(s, "tiqzy_operator_leader") == Some(1.0) && done(s))
        {
            return scrapes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no replica leads with the metrics expected:\n{scrapes:#?}")
}

/// Stores a Tenant the operator's types reject (under a loosened schema, then restores it):
/// the operator counts a `MalformedTenant` reconcile error.
async fn store_unreadable_tenant(client: &kube::Client) {
    let mut loose = Tenant::crd();
    let schema = loose.spec.versions[0]
        .schema
        .as_mut()
        .and_then(|s| s.open_api_v3_schema.as_mut())
        .expect("schema");
    *schema = serde_json::from_value(
        json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true }),
    )
    .expect("loose schema");
    tiqzy_e2e::install_crd(client, &loose)
        .await
        .expect("loose CRD");
    let raw = json!({
        "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
        "metadata": { "name": "monitored-unreadable" },
        "spec": { "displayName": 42, "currency": "EUR" }
    });
    let request = http::Request::post("/apis/tiqzy.io/v1alpha1/tenants")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&raw).expect("json"))
        .expect("request");
    client
        .request::<serde_json::Value>(request)
        .await
        .expect("the loose schema stores it");
    tiqzy_e2e::install_crd(client, &Tenant::crd())
        .await
        .expect("real CRD");
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

    // A tenant served with its own certificate: reconciles, and the certificate's expiry.
    let host = "tickets.monitored.example";
    create_tenant(
        &client,
        "monitored",
        json!({ "displayName": "Monitored", "currency": "EUR", "hosts": [host],
                "tls": { "secretName": "own-cert" } }),
    )
    .await;
    wait_for(&client, "monitored", "CertificateNotFound", |t| {
        condition(t, "CertificateReady").is_some_and(|c| c.reason == "CertificateNotFound")
    })
    .await;
    let (chain, key, not_after) = certificate(&[host], 60);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "own-cert" },
        "type": "kubernetes.io/tls",
        "stringData": { "tls.crt": chain, "tls.key": key },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), "tiqzy-monitored")
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    wait_for(&client, "monitored", "SecretProvided", |t| {
        condition(t, "CertificateReady").is_some_and(|c| c.status == "True")
    })
    .await;
    // A reconcile error.
    store_unreadable_tenant(&client).await;

    let scrapes = scrapes_once(&replicas, |s| {
        s.contains("controller_runtime_reconcile_errors_total{")
            && s.contains("tiqzy_certificate_expiry_seconds{")
    })
    .await;
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
    let leader = &scrapes[leaders
        .iter()
        .position(|l| *l == Some(1.0))
        .expect("leader")];

    let missing: Vec<String> = unexported(Exporter::Operator, leader)
        .expect("queries")
        .into_iter()
        .filter(|m| !NOT_DRIVEN.iter().any(|n| m.starts_with(&format!("{n} "))))
        .collect();
    assert!(
        missing.is_empty(),
        "the operator does not export {missing:#?}\n{leader}"
    );
    let registered =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs"))
            .expect("metrics.rs");
    for name in NOT_DRIVEN {
        assert!(registered.contains(&format!("\"{name}\"")), "{name}");
    }

    assert_eq!(
        sample(
            leader,
            "tiqzy_certificate_expiry_seconds{tenant=\"monitored\"}"
        ),
        Some(not_after as f64),
        "{leader}"
    );
    assert!(
        leader.contains(
            "controller_runtime_reconcile_errors_total{controller=\"tenant\",reason=\"MalformedTenant\"}"
        ),
        "{leader}"
    );
    assert!(
        sample(leader, "tiqzy_tenants{phase=\"Ready\"}").is_some(),
        "{leader}"
    );
}
