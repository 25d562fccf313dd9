//! Storefront rollouts that fail, against the real control plane: kwok's stages make pods of
//! marked images fail as a kubelet would (tiqzy_e2e::kwok_stages). A failing tenant says why in
//! its conditions and frees its rollout slot; a new Platform image that fails on the first
//! tenants halts its rollout and sends them back to the last good image.
//!
//! The tests share one Platform (a singleton), so they run one at a time, each from a clean
//! slate.

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use tiqzy_crds::{Platform, Tenant};
use tiqzy_e2e::Harness;
use tiqzy_e2e::kwok_stages::{FAIL_CRASH, FAIL_PULL, FAIL_READY};

mod common;
use common::{condition, create_tenant, events_on, is_ready, wait_for};

struct Installed {
    _operator: tiqzy_e2e::Service,
}

fn installed() -> &'static Installed {
    static INSTALLED: OnceLock<Result<Installed, String>> = OnceLock::new();
    common::once_per_binary(&INSTALLED, install)
}

async fn install() -> anyhow::Result<Installed> {
    let h = Harness::shared();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tiqzy-operator"));
    Ok(Installed {
        _operator: tiqzy_e2e::install_operator(h, binary, 300).await?,
    })
}

/// One test at a time: each sets the Platform's image.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A digest-pinned image whose repository carries `marker` (empty: a healthy image).
fn image(marker: &str, digit: char) -> String {
    let repository = if marker.is_empty() {
        "runtime".to_owned()
    } else {
        format!("runtime-{marker}")
    };
    format!(
        "quay.io/tiqzy/{repository}@sha256:{}",
        digit.to_string().repeat(64)
    )
}

async fn admin() -> kube::Client {
    installed();
    Harness::shared().kube.client().await.expect("client")
}

async fn set_platform(client: &kube::Client, image: &str, progress_deadline_seconds: i32) {
    Api::<Platform>::all(client.clone())
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": {
                "runtimeImage": image,
                "rollout": { "maxConcurrentTenantRollouts": 2,
                             "progressDeadlineSeconds": progress_deadline_seconds },
            } })),
        )
        .await
        .expect("patch the Platform");
}

/// Polls `check` every 200 ms, 180 s at most.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..900 {
        if let Some(found) = check().await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("never: {what}");
}

fn storefront_image(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()
}

fn rolled_out(d: &Deployment) -> bool {
    let status = d.status.clone().unwrap_or_default();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && status.updated_replicas.unwrap_or(0) >= want
        && status.available_replicas.unwrap_or(0) >= want
        && status.replicas.unwrap_or(0) <= status.updated_replicas.unwrap_or(0)
}

async fn storefronts(client: &kube::Client) -> Vec<Deployment> {
    Api::<Deployment>::all(client.clone())
        .list(&ListParams::default().labels("app.kubernetes.io/name=tiqzy-storefront"))
        .await
        .expect("list deployments")
        .items
}

/// No Tenant and no storefront left from an earlier test.
async fn clean_slate(client: &kube::Client) {
    let tenants: Api<Tenant> = Api::all(client.clone());
    for tenant in tenants
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
    {
        let _ = tenants
            .delete(&tenant.name_any(), &DeleteParams::default())
            .await;
    }
    eventually(
        "every Tenant and storefront of earlier tests is gone",
        async || {
            let left = tenants.list(&ListParams::default()).await.ok()?.items.len();
            (left == 0 && storefronts(client).await.is_empty()).then_some(())
        },
    )
    .await;
}

/// The tenant once its `StorefrontAvailable` has `reason`.
async fn storefront_reason(client: &kube::Client, name: &str, reason: &str) -> Tenant {
    let api: Api<Tenant> = Api::all(client.clone());
    eventually(&format!("{name} reports {reason}"), async || {
        let tenant = api.get_opt(name).await.ok()??;
        let available = condition(&tenant, "StorefrontAvailable")?;
        (available.reason == reason).then_some(tenant.clone())
    })
    .await
}

/// A failed storefront, as `kubectl describe tenant` shows it: `Ready=False` and
/// `StorefrontAvailable=False` with `reason`, and a Warning Event with that reason.
async fn assert_reported(client: &kube::Client, name: &str, reason: &str) -> String {
    let tenant = storefront_reason(client, name, reason).await;
    let available = condition(&tenant, "StorefrontAvailable").expect("StorefrontAvailable");
    assert_eq!(available.status, "False");
    let ready = condition(&tenant, "Ready").expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", reason)
    );
    let events = eventually(&format!("an Event {reason} on {name}"), async || {
        let events = events_on(client, "Tenant", name).await;
        events.iter().any(|e| e.reason == reason).then_some(events)
    })
    .await;
    assert!(
        events.iter().any(|e| e.is("Warning", reason)),
        "{events:#?}"
    );
    available.message.clone()
}

#[tokio::test]
async fn a_storefront_whose_image_cannot_be_pulled_reports_image_pull_back_off() {
    let _one = one_at_a_time().await;
    let client = admin().await;
    clean_slate(&client).await;
    let bad = image(FAIL_PULL, '3');
    set_platform(&client, &bad, 300).await;
    create_tenant(
        &client,
        "pull-1",
        json!({ "displayName": "Pull", "currency": "EUR" }),
    )
    .await;
    let message = assert_reported(&client, "pull-1", "ImagePullBackOff").await;
    assert!(
        message.contains(&format!("cannot pull image {bad}")),
        "{message}"
    );
    assert!(
        message.contains("not found"),
        "the kubelet's words: {message}"
    );
}

#[tokio::test]
async fn a_crash_looping_storefront_reports_crash_loop_back_off() {
    let _one = one_at_a_time().await;
    let client = admin().await;
    clean_slate(&client).await;
    set_platform(&client, &image(FAIL_CRASH, '4'), 300).await;
    create_tenant(
        &client,
        "crash-1",
        json!({ "displayName": "Crash", "currency": "EUR" }),
    )
    .await;
    let message = assert_reported(&client, "crash-1", "CrashLoopBackOff").await;
    assert!(message.contains("container runtime restarted"), "{message}");
    assert!(message.contains("last exit code 1 (Error)"), "{message}");
    assert!(
        message.contains("back-off"),
        "the kubelet's words: {message}"
    );
    // The pod keeps crashing: its restarts rise, as `kubectl get pods` shows.
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(client.clone(), "tiqzy-crash-1");
    eventually("the crashing pod restarts again and again", async || {
        let list = pods.list(&ListParams::default()).await.ok()?.items;
        list.iter()
            .flat_map(|p| {
                p.status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
            })
            .any(|c| c.restart_count >= 3)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_storefront_that_never_becomes_ready_reports_progress_deadline_exceeded() {
    let _one = one_at_a_time().await;
    let client = admin().await;
    clean_slate(&client).await;
    set_platform(&client, &image(FAIL_READY, '5'), 5).await;
    create_tenant(
        &client,
        "unready-1",
        json!({ "displayName": "Unready", "currency": "EUR" }),
    )
    .await;
    let message = assert_reported(&client, "unready-1", "ProgressDeadlineExceeded").await;
    assert!(
        message.contains("timed out progressing"),
        "the Deployment's words: {message}"
    );
    assert!(
        message.contains("containers with unready status: [runtime]"),
        "the pod's words: {message}"
    );
    let deployment = Api::<Deployment>::namespaced(client.clone(), "tiqzy-unready-1")
        .get("storefront")
        .await
        .expect("storefront");
    assert_eq!(
        deployment.spec.and_then(|s| s.progress_deadline_seconds),
        Some(5),
        "the Platform's deadline is the Deployment's"
    );
}

async fn platform(client: &kube::Client) -> Platform {
    Api::<Platform>::all(client.clone())
        .get("default")
        .await
        .expect("platform")
}

fn platform_condition(
    p: &Platform,
    type_: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// Every tenant's storefront runs `image`, rolled out.
async fn all_on(client: &kube::Client, names: &[String], image: &str) {
    eventually(&format!("every storefront runs {image}"), async || {
        let list = storefronts(client).await;
        let done = names.iter().all(|n| {
            list.iter().any(|d| {
                d.namespace().as_deref() == Some(&format!("tiqzy-{n}"))
                    && storefront_image(d).as_deref() == Some(image)
                    && rolled_out(d)
            })
        });
        done.then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_failing_platform_image_halts_on_the_first_tenants_rolls_them_back_and_a_new_image_proceeds()
 {
    let _one = one_at_a_time().await;
    let client = admin().await;
    clean_slate(&client).await;
    let good = image("", '6');
    set_platform(&client, &good, 300).await;
    let names: Vec<String> = (0..5).map(|i| format!("halt-{i}")).collect();
    for name in &names {
        create_tenant(
            &client,
            name,
            json!({ "displayName": name, "currency": "EUR" }),
        )
        .await;
    }
    for name in &names {
        wait_for(&client, name, "Ready", is_ready).await;
    }
    all_on(&client, &names, &good).await;
    eventually("the Platform records the good image", async || {
        let rollout = platform(&client).await.status?.rollout?;
        (rollout.last_good_image.as_deref() == Some(good.as_str())).then_some(())
    })
    .await;

    // A new image that cannot be pulled.
    let bad = image(FAIL_PULL, '7');
    set_platform(&client, &bad, 300).await;
    let halted = eventually("the rollout halts", async || {
        let p = platform(&client).await;
        let c = platform_condition(&p, "RolloutHalted")?;
        (c.status == "True").then_some(p)
    })
    .await;
    let c = platform_condition(&halted, "RolloutHalted").expect("condition");
    assert_eq!(c.reason, "ImagePullBackOff");
    assert!(c.message.contains(&bad), "{}", c.message);
    assert!(
        c.message.contains(&good),
        "names where tenants go back: {}",
        c.message
    );
    let rollout = halted
        .status
        .clone()
        .and_then(|s| s.rollout)
        .expect("status.rollout");
    assert_eq!(rollout.last_good_image.as_deref(), Some(good.as_str()));
    let halt = rollout.halted.expect("status.rollout.halted");
    assert_eq!(halt.image, bad);
    assert!(!halt.failed_tenants.is_empty());
    assert!(halt.failed_tenants.iter().all(|t| names.contains(t)));

    // Every tenant ends on the good image, serving; the Platform says why.
    all_on(&client, &names, &good).await;
    for name in &names {
        let tenant = storefront_reason(&client, name, "RolloutHalted").await;
        assert!(is_ready(&tenant), "{name} serves the last good image");
    }
    let halted = platform(&client).await;
    let halt = halted
        .status
        .and_then(|s| s.rollout)
        .and_then(|r| r.halted)
        .expect("halted");
    assert!(
        !halt.rolled_back_tenants.is_empty(),
        "the tenants that got the bad image were rolled back"
    );
    let events = events_on(&client, "Platform", "default").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason == "RolloutHalted" && e.note.contains(&bad)),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.reason == "RolledBack"),
        "{events:?}"
    );

    // The bad image reached only the first tenants: their ReplicaSets are the record.
    let replica_sets = Api::<ReplicaSet>::all(client.clone())
        .list(&ListParams::default().labels("app.kubernetes.io/name=tiqzy-storefront"))
        .await
        .expect("replica sets")
        .items;
    let got_bad: BTreeSet<String> = replica_sets
        .iter()
        .filter(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .and_then(|p| p.containers.first())
                .and_then(|c| c.image.as_deref())
                == Some(bad.as_str())
        })
        .filter_map(|rs| rs.namespace())
        .collect();
    assert!(
        !got_bad.is_empty() && got_bad.len() <= 2,
        "the bad image reached {got_bad:?}; at most maxConcurrentTenantRollouts (2) may get it"
    );
    for tenant in halt.failed_tenants.iter().chain(&halt.rolled_back_tenants) {
        assert!(
            got_bad.contains(&format!("tiqzy-{tenant}")),
            "{tenant} in {got_bad:?}"
        );
    }

    // A new, good image clears the halt and reaches every tenant.
    let fixed = image("", '8');
    set_platform(&client, &fixed, 300).await;
    all_on(&client, &names, &fixed).await;
    let resumed = eventually(
        "the halt clears and the new image is recorded good",
        async || {
            let p = platform(&client).await;
            let c = platform_condition(&p, "RolloutHalted")?;
            let rollout = p.status.clone()?.rollout?;
            (c.status == "False" && rollout.last_good_image.as_deref() == Some(fixed.as_str()))
                .then_some((c, rollout))
        },
    )
    .await;
    assert_eq!(resumed.0.reason, "RolloutHealthy");
    assert_eq!(resumed.1.halted, None);
    for name in &names {
        storefront_reason(&client, name, "Available").await;
    }
    let events = events_on(&client, "Platform", "default").await;
    assert!(
        events.iter().any(|e| e.reason == "RolloutResumed"),
        "{events:?}"
    );
}
