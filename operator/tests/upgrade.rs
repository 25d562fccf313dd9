//! Upgrading the operator (docs/upgrades.md): the previous release (operator/PREVIOUS_RELEASE,
//! built from its release commit) installs its CRDs and RBAC and runs tenants; then it stops, this
//! checkout's CRDs and RBAC are applied and this checkout's operator starts, as an upgrade does.
//!
//! What the tenants notice: nothing. Every object stored before is still served and reads back;
//! every tenant stays Ready; no storefront pod is replaced unless this version changes its pod
//! template, and those that change roll at most `maxConcurrentTenantRollouts` at a time; the new
//! operator makes a few writes per tenant at most, then none. A new runtime image afterwards
//! rolls within the same limit under the new operator.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::json;
use tiqzy_crds::{Platform, Tenant};
use tiqzy_e2e::{Harness, OperatorProcess, sample};

mod common;
use common::{create_tenant, is_ready, rolled_out, wait_for, watch_rollout};

const TENANTS: usize = 6;
/// The harness Platform's `maxConcurrentTenantRollouts`.
const MAX_CONCURRENT_ROLLOUTS: usize = 2;
/// Writes the new operator may make per tenant when it first reconciles what the previous
/// release made (a changed pod template, a new label or condition): an upgrade that rewrites
/// every object of every tenant breaks it. docs/upgrades.md promises it.
const WRITES_PER_TENANT: u64 = 3;
const RESYNC_SECONDS: u64 = 5;

/// What a user sees of one storefront: its Deployment's generation and pod template, and its
/// pods.
#[derive(Debug, Clone, PartialEq)]
struct Storefront {
    generation: i64,
    template: serde_json::Value,
    pods: BTreeSet<String>,
}

async fn storefronts(client: &kube::Client, names: &[String]) -> BTreeMap<String, Storefront> {
    let mut all = BTreeMap::new();
    for name in names {
        let ns = format!("tiqzy-{name}");
        let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels("app.kubernetes.io/name=tiqzy-storefront"))
            .await
            .expect("list Deployments")
            .items
            .pop()
            .unwrap_or_else(|| panic!("{name} has a storefront Deployment"));
        let pods = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels("app.kubernetes.io/name=tiqzy-storefront"))
            .await
            .expect("list Pods")
            .items
            .into_iter()
            .filter_map(|p| p.metadata.uid)
            .collect();
        all.insert(
            name.clone(),
            Storefront {
                generation: deployment.metadata.generation.unwrap_or(0),
                template: serde_json::to_value(&deployment.spec.expect("spec").template)
                    .expect("template"),
                pods,
            },
        );
    }
    all
}

/// Objects of every version each CRD serves, by (CRD, version).
async fn stored(client: &kube::Client) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for crd in Api::<CustomResourceDefinition>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list CRDs")
        .items
        .into_iter()
        .filter(|c| c.spec.group == "tiqzy.io")
    {
        let name = crd.metadata.name.clone().expect("name");
        let served = crd.spec.versions.iter().filter(|v| v.served);
        for version in served {
            let gvk = GroupVersionKind::gvk(&crd.spec.group, &version.name, &crd.spec.names.kind);
            let resource = ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural);
            let listed = Api::<DynamicObject>::all_with(client.clone(), &resource)
                .list(&ListParams::default())
                .await
                .unwrap_or_else(|e| panic!("listing {name} as {}: {e}", version.name));
            counts.insert((name.clone(), version.name.clone()), listed.items.len());
        }
    }
    counts
}

/// Every version a CRD has stored objects in is still served, and exactly one is stored.
async fn assert_stored_versions_served(client: &kube::Client) {
    for crd in Api::<CustomResourceDefinition>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list CRDs")
        .items
        .into_iter()
        .filter(|c| c.spec.group == "tiqzy.io")
    {
        let name = crd.metadata.name.clone().expect("name");
        let stored_versions = crd
            .status
            .and_then(|s| s.stored_versions)
            .unwrap_or_default();
        assert!(
            !stored_versions.is_empty(),
            "{name} records no stored version"
        );
        for version in &stored_versions {
            assert!(
                crd.spec
                    .versions
                    .iter()
                    .any(|v| &v.name == version && v.served),
                "{name} holds objects stored as {version} but no longer serves {version}"
            );
        }
        let storage = crd.spec.versions.iter().filter(|v| v.storage).count();
        assert_eq!(storage, 1, "{name} has one storage version");
    }
}

/// The operator's writes so far.
async fn writes(process: &OperatorProcess) -> u64 {
    let metrics = process.metrics().await.expect("the operator's metrics");
    sample(&metrics, "tiqzy_operator_writes_total").unwrap_or(0.0) as u64
}

async fn reconciled(process: &OperatorProcess) -> u64 {
    let metrics = process.metrics().await.unwrap_or_default();
    sample(
        &metrics,
        r#"controller_runtime_reconcile_total{controller="tenant",result="success"}"#,
    )
    .unwrap_or(0.0) as u64
}

/// What the tenants showed while the new operator took over.
#[derive(Debug, Default)]
struct Takeover {
    /// The most storefronts mid-rollout to a template the previous release did not write.
    most_rolling_at_once: usize,
    /// Tenants seen other than Ready.
    not_ready: BTreeSet<String>,
}

/// The names of the Tenants that are Ready now.
async fn ready_tenants(client: &kube::Client) -> BTreeSet<String> {
    Api::<Tenant>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter(|t| is_ready(t))
        .filter_map(|t| t.metadata.name.clone())
        .collect()
}

/// Samples the tenants until the new operator has reconciled each of them and every
/// storefront is rolled out and Ready (two minutes at most).
async fn take_over(
    client: &kube::Client,
    process: &OperatorProcess,
    names: &[String],
    before: &BTreeMap<String, Storefront>,
) -> Takeover {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let selector = ListParams::default().labels("app.kubernetes.io/name=tiqzy-storefront");
    let mut seen = Takeover::default();
    for _ in 0..1200 {
        let ready = ready_tenants(client).await;
        seen.not_ready
            .extend(names.iter().filter(|n| !ready.contains(*n)).cloned());
        let mut rolling = 0;
        let mut all_rolled_out = true;
        for d in deployments.list(&selector).await.expect("list").items {
            let Some(name) = d
                .metadata
                .namespace
                .as_deref()
                .and_then(|ns| ns.strip_prefix("tiqzy-"))
                .filter(|n| before.contains_key(*n))
            else {
                continue;
            };
            let template =
                serde_json::to_value(&d.spec.as_ref().expect("spec").template).expect("template");
            let done = rolled_out(&d);
            all_rolled_out &= done;
            if !done && template != before[name].template {
                rolling += 1;
            }
        }
        seen.most_rolling_at_once = seen.most_rolling_at_once.max(rolling);
        if ready.len() >= names.len()
            && all_rolled_out
            && reconciled(process).await >= names.len() as u64
        {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the new operator never took over every tenant: {seen:?}");
}

#[tokio::test]
async fn the_previous_release_upgrades_without_restarts_or_a_write_storm() {
    let started = Instant::now();
    let release = tokio::task::spawn_blocking(tiqzy_e2e::previous_release)
        .await
        .expect("join")
        .expect("the previous release");
    println!(
        "previous release {} ({}) built or cached in {:.1?}",
        release.tag,
        &release.commit[..12],
        started.elapsed()
    );
    let h = Harness::shared();
    let client = h.kube.client().await.expect("client");

    // The previous release, installed from its own manifests.
    let kubeconfig = tiqzy_e2e::install_tiqzy_from(h, &release.manifests)
        .await
        .expect("installing the previous release");
    let mut previous = OperatorProcess::new(&release.operator, &kubeconfig, "operator-previous")
        .start(h)
        .expect("starting the previous release");
    let names: Vec<String> = (0..TENANTS).map(|i| format!("upgrade-{i}")).collect();
    for name in &names {
        create_tenant(
            &client,
            name,
            json!({ "displayName": name, "currency": "EUR" }),
        )
        .await;
    }
    for name in &names {
        wait_for(&client, name, "Ready under the previous release", is_ready).await;
    }
    let before = storefronts(&client, &names).await;
    for (name, storefront) in &before {
        assert!(!storefront.pods.is_empty(), "{name}'s storefront runs pods");
    }
    let stored_before = stored(&client).await;

    // The upgrade: stop the old operator, apply this checkout's CRDs and RBAC, start this one.
    previous.stop();
    // The previous release can reconcile one tenant twice at once (two queue keys per
    // Tenant), which may leave a Ready tenant showing Progressing when it stops: that is not
    // the new operator's doing, so only the tenants Ready at the handover must stay Ready.
    let ready_at_handover = ready_tenants(&client).await;
    let left_not_ready: BTreeSet<String> = names
        .iter()
        .filter(|n| !ready_at_handover.contains(*n))
        .cloned()
        .collect();
    let kubeconfig = tiqzy_e2e::install_tiqzy_without_platform(h)
        .await
        .expect("applying this checkout's CRDs and RBAC");
    assert_stored_versions_served(&client).await;
    let stored_after = stored(&client).await;
    for (key, count) in &stored_before {
        assert_eq!(
            stored_after.get(key),
            Some(count),
            "{} as {}: what the previous release stored is served after the upgrade",
            key.0,
            key.1
        );
    }
    // And it reads back through this checkout's types.
    let tenants = Api::<Tenant>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("Tenants read back as this version's type");
    for name in &names {
        assert!(
            tenants
                .items
                .iter()
                .any(|t| t.metadata.name.as_ref() == Some(name)),
            "{name} is listed after the upgrade"
        );
    }
    Api::<Platform>::all(client.clone())
        .get("default")
        .await
        .expect("the Platform reads back as this version's type");

    let mut process = OperatorProcess::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator")),
        &kubeconfig,
        "operator-current",
    );
    process
        .args
        .push(format!("--resync-seconds={RESYNC_SECONDS}"));
    let _current = process.start(h).expect("starting this checkout's operator");
    let takeover = take_over(&client, &process, &names, &before).await;
    // Every tenant has had its first reconcile by the new operator once a resync has passed.
    tokio::time::sleep(Duration::from_secs(RESYNC_SECONDS + 1)).await;
    let converged = writes(&process).await;
    tokio::time::sleep(Duration::from_secs(2 * RESYNC_SECONDS + 2)).await;
    let idle = writes(&process).await - converged;
    let after = storefronts(&client, &names).await;

    let changed: BTreeSet<&String> = names
        .iter()
        .filter(|n| after[*n].template != before[*n].template)
        .collect();
    println!(
        "upgrade: {converged} writes to converge {TENANTS} tenants, {idle} idle; pod templates \
         changed for {} tenants; most rolling at once: {}",
        changed.len(),
        takeover.most_rolling_at_once
    );
    for name in &names {
        if changed.contains(name) {
            continue;
        }
        assert_eq!(
            after[name], before[name],
            "{name}'s storefront is not restarted: its pod template did not change"
        );
    }
    let unexpected: Vec<&String> = takeover
        .not_ready
        .iter()
        .filter(|n| !changed.contains(n) && !left_not_ready.contains(*n))
        .collect();
    if !left_not_ready.is_empty() {
        println!("upgrade: the previous release left {left_not_ready:?} not Ready");
    }
    assert!(
        unexpected.is_empty(),
        "tenants whose storefront did not change stay Ready throughout: {unexpected:?} did not"
    );
    assert!(
        takeover.most_rolling_at_once <= MAX_CONCURRENT_ROLLOUTS,
        "{} storefronts rolled to the new template at once; the limit is {MAX_CONCURRENT_ROLLOUTS}",
        takeover.most_rolling_at_once
    );
    assert!(
        converged <= WRITES_PER_TENANT * TENANTS as u64,
        "the new operator wrote {converged} times taking over {TENANTS} tenants; at most \
         {WRITES_PER_TENANT} per tenant"
    );
    assert_eq!(idle, 0, "the new operator writes nothing once converged");

    // Under the new operator a new runtime image still rolls within the limit.
    let new_image = format!("quay.io/tiqzy/runtime@sha256:{}", "3".repeat(64));
    Api::<Platform>::all(client.clone())
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "runtimeImage": new_image } })),
        )
        .await
        .expect("new runtime image");
    let seen = watch_rollout(&client, &names, &new_image).await;
    assert!(seen.done, "every storefront ends up on the new image");
    assert!(
        seen.most_at_once <= MAX_CONCURRENT_ROLLOUTS,
        "{} tenants were mid-rollout at once; the limit is {MAX_CONCURRENT_ROLLOUTS}",
        seen.most_at_once
    );
    for name in &names {
        wait_for(&client, name, "Ready on the new image", is_ready).await;
    }
    println!(
        "image rollout under the new operator: most at once {}, seen rolling {}",
        seen.most_at_once,
        seen.seen_rolling.len()
    );
}
