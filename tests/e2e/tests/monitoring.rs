//! The alerts of `config/prometheus` and the dashboards of `config/grafana`, checked by
//! Prometheus' own promtool: the rules load, their unit tests (config/prometheus/tests) pass
//! and cover every alert firing and staying quiet, and every dashboard query parses. Whether
//! the metrics they read are really exported is checked by each program's tests
//! (operator/tests/monitoring.rs, tenant-runtime/tests/it/monitoring.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};
use tiqzy_e2e::monitoring::{
    alert_queries, alerts, dashboard_queries, dashboards, exporter_of, metric_names, names_in_use,
    repo, rules_file_text,
};

fn promtool() -> PathBuf {
    tiqzy_e2e::ensure_promtool().expect("building promtool")
}

/// An empty directory of this test's own under the target directory.
fn scratch(name: &str) -> PathBuf {
    let dir =
        tiqzy_e2e::target_dir().join(format!("monitoring-tests/{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn run_promtool(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running promtool")
}

fn assert_success(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The unit test files, by name.
fn rule_tests() -> BTreeMap<String, String> {
    let dir = repo().join("config/prometheus/tests");
    std::fs::read_dir(&dir)
        .expect("config/prometheus/tests")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".test.yaml"))
        .map(|path| {
            (
                path.file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
                std::fs::read_to_string(&path).expect("test file"),
            )
        })
        .collect()
}

#[test]
fn the_alert_rules_load_and_their_unit_tests_pass() {
    let dir = scratch("rules");
    std::fs::write(
        dir.join("alerts.rules.yaml"),
        rules_file_text().expect("rules"),
    )
    .expect("write");
    let tests = rule_tests();
    assert!(
        !tests.is_empty(),
        "no unit tests in config/prometheus/tests"
    );
    for (name, text) in &tests {
        std::fs::write(dir.join(name), text).expect("write");
    }

    let checked = assert_success(
        &run_promtool(&dir, &["check", "rules", "alerts.rules.yaml"]),
        "promtool check rules",
    );
    let alerts = alerts().expect("alerts");
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{checked}"
    );

    let mut args = vec!["test", "rules"];
    args.extend(tests.keys().map(String::as_str));
    let tested = assert_success(&run_promtool(&dir, &args), "promtool test rules");
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() {
    let mut fired = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for (name, text) in rule_tests() {
        let file: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(file["rule_files"], json!(["alerts.rules.yaml"]), "{name}");
        for test in file["tests"].as_array().expect("tests") {
            for case in test["alert_rule_test"].as_array().into_iter().flatten() {
                let alert = case["alertname"].as_str().expect("alertname").to_owned();
                let expected = case["exp_alerts"].as_array().map_or(0, Vec::len);
                if expected == 0 {
                    quiet.insert(alert);
                } else {
                    // promtool compares labels and annotations exactly: ask for both.
                    for exp in case["exp_alerts"].as_array().into_iter().flatten() {
                        assert!(exp["exp_labels"]["severity"].is_string(), "{alert}: {exp}");
                        assert!(
                            exp["exp_annotations"]["summary"].is_string(),
                            "{alert}: {exp}"
                        );
                    }
                    fired.insert(alert);
                }
            }
        }
    }
    let names: BTreeSet<String> = alerts().expect("alerts").into_keys().collect();
    assert_eq!(fired, names, "alerts shown firing by a unit test");
    assert_eq!(quiet, names, "alerts shown quiet by a unit test");
}

#[test]
fn the_platform_teams_alerts_are_there() {
    let alerts = alerts().expect("alerts");
    for name in [
        "TiqzyOperatorDown",
        "TiqzyOperatorNotLeading",
        "TiqzyReconcileErrors",
        "TiqzyTenantNotReady",
        "TiqzyCertificateExpiring",
        "TiqzyBackupTooOld",
        "TiqzyStorefrontErrors",
        "TiqzyStorefrontSlow",
        "TiqzyPaymentsOutboxStuck",
    ] {
        let rule = alerts
            .get(name)
            .unwrap_or_else(|| panic!("no alert {name}"));
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["warning", "critical"].contains(&severity),
            "{name}: {severity}"
        );
        assert!(rule["annotations"]["description"].is_string(), "{name}");
    }
    // Per tenant: the storefront alerts keep the `tenant` label the PodMonitor sets.
    for name in ["TiqzyStorefrontErrors", "TiqzyStorefrontSlow"] {
        assert!(
            alerts[name]["expr"]
                .as_str()
                .is_some_and(|e| e.contains("by (tenant")),
            "{name}"
        );
    }
}

#[test]
fn every_dashboard_query_parses() {
    let queries = dashboard_queries().expect("dashboards");
    assert!(queries.len() > 20, "{queries:?}");
    // Each query as a recording rule, for Prometheus' own parser ...
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| json!({ "record": format!("tiqzy:dashboard_query:{i}"), "expr": q.expr }))
        .collect();
    let dir = scratch("dashboards");
    std::fs::write(
        dir.join("dashboards.rules.yaml"),
        serde_json::to_string_pretty(
            &json!({ "groups": [{ "name": "dashboards", "rules": rules }] }),
        )
        .expect("json"),
    )
    .expect("write");
    let checked = assert_success(
        &run_promtool(&dir, &["check", "rules", "dashboards.rules.yaml"]),
        "promtool check rules (dashboard queries)",
    );
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{checked}"
    );
    // ... and for the parser the metric names are read with.
    for query in &queries {
        let names = metric_names(&query.expr).unwrap_or_else(|e| panic!("{}: {e}", query.origin));
        assert!(!names.is_empty(), "{} reads no metric", query.origin);
    }
}

#[test]
fn every_metric_read_belongs_to_a_program_that_exports_it() {
    let names = names_in_use().expect("queries");
    let orphans: Vec<_> = names
        .iter()
        .filter(|(name, _)| exporter_of(name).is_none())
        .collect();
    assert!(orphans.is_empty(), "no program exports {orphans:?}");
    // Alerts and dashboards together read all three programs.
    let exporters: BTreeSet<_> = names.keys().filter_map(|n| exporter_of(n)).collect();
    assert_eq!(exporters.len(), 4, "{exporters:?}");
    assert!(alert_queries().expect("alerts").len() >= 9);
}

#[test]
fn the_dashboards_are_what_the_platform_team_and_a_tenant_look_at() {
    let dashboards = dashboards().expect("dashboards");
    let titles = |file: &str| -> Vec<String> {
        dashboards[file]["panels"]
            .as_array()
            .expect("panels")
            .iter()
            .map(|p| p["title"].as_str().expect("title").to_owned())
            .collect()
    };
    assert_eq!(
        dashboards.keys().map(String::as_str).collect::<Vec<_>>(),
        ["platform-overview.json", "storefront.json"]
    );
    for (file, dashboard) in &dashboards {
        let uid = dashboard["uid"].as_str().expect("uid");
        assert!(uid.starts_with("tiqzy-"), "{file}: {uid}");
        let panels = dashboard["panels"].as_array().expect("panels");
        let ids: BTreeSet<_> = panels.iter().map(|p| p["id"].as_u64()).collect();
        assert_eq!(ids.len(), panels.len(), "{file}: panel ids repeat");
        // Every query goes to the Prometheus the viewer picks.
        for panel in panels {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: {}",
                panel["title"]
            );
        }
    }
    for wanted in [
        "Tenants by phase",
        "Reconciles by result",
        "Reconcile errors by reason",
        "Reconcile latency",
        "Operator writes",
    ] {
        assert!(
            titles("platform-overview.json").iter().any(|t| t == wanted),
            "{wanted}"
        );
    }
    for wanted in [
        "Requests by status",
        "Latency",
        "Holds by outcome",
        "Orders placed",
        "Sold out",
        "Payment events by outcome",
    ] {
        assert!(
            titles("storefront.json").iter().any(|t| t == wanted),
            "{wanted}"
        );
    }
    // The storefront dashboard shows one tenant: every query selects it.
    let storefront = &dashboards["storefront.json"];
    let variables: Vec<&str> = storefront["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(variables.contains(&"tenant"), "{variables:?}");
    for panel in storefront["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let selectors = expr.matches("tiqzy_").count();
            let of_tenant = expr.matches("tenant=\"$tenant\"").count();
            assert_eq!(selectors, of_tenant, "{}: {expr}", panel["title"]);
        }
    }
}

#[test]
fn the_dashboards_ship_as_configmaps_for_grafanas_sidecar() {
    let binaries = tiqzy_e2e::ensure_binaries().expect("kubectl");
    let out = std::process::Command::new(&binaries.kubectl)
        .args(["kustomize", "config/grafana"])
        .current_dir(repo())
        .output()
        .expect("kubectl kustomize");
    let rendered = assert_success(&out, "kubectl kustomize config/grafana");
    let config_maps: Vec<Value> = rendered
        .split("\n---\n")
        .map(|doc| serde_saphyr::from_str(doc).expect("YAML"))
        .collect();
    let dashboards = dashboards().expect("dashboards");
    assert_eq!(config_maps.len(), dashboards.len());
    for (file, dashboard) in &dashboards {
        let config_map = config_maps
            .iter()
            .find(|cm| cm["data"].get(file).is_some())
            .unwrap_or_else(|| panic!("no ConfigMap carries {file}"));
        assert_eq!(config_map["kind"], "ConfigMap");
        assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
        let carried: Value =
            serde_json::from_str(config_map["data"][file].as_str().expect("text")).expect("JSON");
        assert_eq!(&carried, dashboard, "{file}");
    }
}
