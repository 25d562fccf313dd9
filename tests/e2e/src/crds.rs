//! Installing Tiqzy's CRDs (and others a test needs) into the harness's API server.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, Patch, PatchParams};

/// Server-side applies `crd` and waits until the API server serves it.
pub async fn install_crd(client: &kube::Client, crd: &CustomResourceDefinition) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().context("CRD without a name")?;
    crds.patch(
        &name,
        &PatchParams::apply("tiqzy-e2e").force(),
        &Patch::Apply(crd),
    )
    .await
    .with_context(|| format!("applying CRD {name}"))?;
    for _ in 0..300 {
        let current = crds.get(&name).await?;
        let established = current
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("CRD {name} was not established within 30 s")
}

/// Installs Tenant and Platform, as generated from `tiqzy-crds`.
pub async fn install_tiqzy_crds(client: &kube::Client) -> Result<()> {
    install_crd(client, &tiqzy_crds::Platform::crd()).await?;
    install_crd(client, &tiqzy_crds::Tenant::crd()).await
}
