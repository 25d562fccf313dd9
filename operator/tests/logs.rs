//! The operator's log file, as the log stack reads it: one JSON object per line with the
//! fields every Tiqzy binary agrees on (docs/logs-and-errors.md), and no terminal escape
//! codes, since its output is a file.

use serde_json::{Value, json};
use tiqzy_e2e::{Harness, OperatorProcess};

mod common;
use common::{create_tenant, is_ready, wait_for};

#[tokio::test]
async fn the_operator_writes_one_json_object_a_line_with_the_agreed_fields() {
    let h = Harness::shared();
    let client = h.kube.client().await.expect("client");
    let kubeconfig = tiqzy_e2e::install_tiqzy(h).await.expect("install");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    let mut operator = OperatorProcess::new(binary, &kubeconfig, "operator-logs");
    // No --log-format: the format a deployment gets, whose output is no terminal.
    operator.args.clear();
    let mut service = operator.start(h).expect("operator");

    create_tenant(
        &client,
        "logs-acme",
        json!({ "displayName": "Logs", "currency": "EUR" }),
    )
    .await;
    wait_for(&client, "logs-acme", "Ready", is_ready).await;
    service.stop();

    let bytes = std::fs::read(service.log_path()).expect("log file");
    assert!(!bytes.contains(&0x1b), "an escape code in the log file");
    let text = String::from_utf8(bytes).expect("UTF-8");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(!lines.is_empty(), "the operator logged nothing");
    for line in &lines {
        for field in ["timestamp", "level", "message", "target"] {
            assert!(line[field].is_string(), "no {field} in {line}");
        }
        let timestamp = line["timestamp"].as_str().unwrap_or_default();
        assert!(
            timestamp.ends_with('Z') && timestamp.get(10..11) == Some("T"),
            "not RFC 3339 UTC: {line}"
        );
    }
    let about_tenant = lines
        .iter()
        .find(|l| l["tenant"] == "logs-acme")
        .unwrap_or_else(|| panic!("no line names the tenant:\n{text}"));
    assert_eq!(
        about_tenant["target"]
            .as_str()
            .map(|t| t.starts_with("tiqzy_operator")),
        Some(true)
    );
}
