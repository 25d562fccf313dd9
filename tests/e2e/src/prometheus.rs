//! The Prometheus Operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule), as shipped in
//! its Go module, so `config/prometheus` can be applied to the harness's API server.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
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

/// The module's directory in the Go module cache, downloaded if needed.
fn module_dir() -> Result<PathBuf> {
    let out = Command::new("go")
        .args(["mod", "download", "-json"])
        .arg(format!("{MODULE}@{PROMETHEUS_OPERATOR_VERSION}"))
        // Outside any go.mod, so only the module itself is resolved.
        .current_dir(std::env::temp_dir())
        .output()
        .context("running go mod download for the Prometheus Operator CRDs")?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "reading go mod download output: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(error) = info["Error"].as_str() {
        bail!("go mod download {MODULE}@{PROMETHEUS_OPERATOR_VERSION}: {error}");
    }
    let dir = info["Dir"]
        .as_str()
        .context("go mod download gave no module directory for prometheus-operator")?;
    Ok(PathBuf::from(dir))
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
