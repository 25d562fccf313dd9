//! The Prometheus Operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule), as shipped in
//! its Go module, so `config/prometheus` can be applied to the harness's API server.

use std::path::PathBuf;

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The prometheus-operator release whose CRDs the tests install.
pub const PROMETHEUS_OPERATOR_VERSION: &str = "v0.85.0";

const MODULE: &str = "github.com/prometheus-operator/prometheus-operator";

/// The kinds `config/prometheus` uses, by their file in `example/prometheus-operator-crd/`.
const CRD_FILES: [&str; 3] = [
    "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.coreos.com_podmonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
];

fn module_dir() -> Result<PathBuf> {
    crate::go_module_dir(MODULE, PROMETHEUS_OPERATOR_VERSION)
}

/// ServiceMonitor, PodMonitor and PrometheusRule, read from the pinned module.
pub fn prometheus_operator_crds() -> Result<Vec<CustomResourceDefinition>> {
    let dir = module_dir()?.join("example/prometheus-operator-crd");
    CRD_FILES
        .iter()
        .map(|file| {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))
        })
        .collect()
}

/// Installs ServiceMonitor, PodMonitor and PrometheusRule and waits until they are served.
pub async fn install_prometheus_operator_crds(client: &kube::Client) -> Result<()> {
    let crds = tokio::task::spawn_blocking(prometheus_operator_crds).await??;
    for crd in &crds {
        crate::install_crd(client, crd).await?;
    }
    Ok(())
}

/// The value of one series in Prometheus' text format: `series` is the metric's name with its
/// labels as the exporter writes them (`tiqzy_holds_total{outcome="held"}`); `None` when the
/// exporter has not written it.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}
