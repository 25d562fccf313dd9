//! The OpenShift Route CRD, as shipped in the `github.com/openshift/api` Go module, so the
//! operator's Route path runs against the harness's API server.

use std::path::PathBuf;

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The openshift/api commit (it has no release tags) whose Route CRD the tests install.
pub const OPENSHIFT_API_VERSION: &str = "v0.0.0-20251015095338-264e80a2b6e7";

const MODULE: &str = "github.com/openshift/api";
/// The CRD with every feature gate merged in (spec.tls.externalCertificate included).
const ROUTE_CRD: &str = "route/v1/zz_generated.crd-manifests/routes.crd.yaml";

fn module_dir() -> Result<PathBuf> {
    crate::go_module_dir(MODULE, OPENSHIFT_API_VERSION)
}

/// `routes.route.openshift.io`, read from the pinned module.
pub fn route_crd() -> Result<CustomResourceDefinition> {
    let path = module_dir()?.join(ROUTE_CRD);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Installs the Route CRD and waits until `route.openshift.io/v1` is served.
pub async fn install_route_crd(client: &kube::Client) -> Result<()> {
    let crd = tokio::task::spawn_blocking(route_crd).await??;
    crate::install_crd(client, &crd).await
}
