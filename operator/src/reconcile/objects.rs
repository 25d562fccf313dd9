//! Applying the tenant's Kubernetes objects through the one [`Applier`], pruning what is no
//! longer wanted. Each group is destructured without `..`, so a new kind cannot be forgotten.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::apply::Applier;
use crate::build::{Credentials, Workload};
use crate::error::Error;

/// The namespace and the tenant's Secrets: first, because the external stores use the
/// credentials only once Kubernetes holds them.
pub async fn apply_credentials(applier: &Applier, credentials: Credentials) -> Result<(), Error> {
    let Credentials { namespace, secrets } = credentials;
    let ns = namespace.metadata.name.clone().unwrap_or_default();
    applier.apply_cluster::<Namespace>(namespace).await?;
    let names: Vec<String> = secrets
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    for secret in secrets {
        applier.apply(secret).await?;
    }
    applier.prune::<Secret>(&ns, &names).await
}

/// The storefront's workload. Its parts do not depend on each other, so they are applied
/// side by side. Returns the Deployment as the API server has it.
pub async fn apply_workload(
    applier: &Applier,
    ns: &str,
    workload: Workload,
) -> Result<Deployment, Error> {
    let Workload {
        service_account,
        config_map,
        deployment,
        service,
        hpa,
        pdb,
        network_policies,
    } = workload;
    let policies = async {
        let names: Vec<String> = network_policies
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        futures::future::try_join_all(network_policies.into_iter().map(|p| applier.apply(p)))
            .await?;
        applier.prune::<NetworkPolicy>(ns, &names).await
    };
    let autoscaler = async {
        match hpa {
            Some(hpa) => applier.apply(hpa).await.map(drop),
            None => applier.prune::<HorizontalPodAutoscaler>(ns, &[]).await,
        }
    };
    let (_, _, (), deployment, _, _, ()) = tokio::try_join!(
        applier.apply(service_account),
        applier.apply(config_map),
        policies,
        applier.apply(deployment),
        applier.apply(service),
        applier.apply(pdb),
        autoscaler,
    )?;
    // The watch cache can hold an older copy of the Deployment than the API server has: at
    // 1,000 tenants two storefronts stayed "waiting for a storefront pod" for minutes, across
    // resyncs and a Tenant change, after their Deployments had become available. While the
    // copy at hand does not look available, the API server is asked (one read, only then).
    if super::status::rolling(&deployment)
        && let Some(live) = applier.read(&deployment).await?
    {
        return Ok(live);
    }
    Ok(deployment)
}
