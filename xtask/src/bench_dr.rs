//! `cargo xtask bench dr --tenants N`: disaster recovery of N tenants as
//! docs/disaster-recovery.md describes it. The tenants converge, the runbook's files are
//! saved, then the operator and the whole control plane stop and etcd's data is deleted
//! (PostgreSQL and Redis keep theirs); a fresh control plane starts, the operator is
//! installed and the saved manifests re-applied. Prints how long until every tenant is Ready
//! again: from the wipe, and from the fresh control plane being up.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams, PostParams};
use tiqzy_crds::Tenant;
use tiqzy_e2e::{Harness, OperatorProcess, disaster};

pub async fn dr(tenants: usize, operator_binary: &Path) -> Result<()> {
    let mut h = Harness::start().await?;
    let kubeconfig = tiqzy_e2e::install_tiqzy(&h).await?;
    let operator = OperatorProcess::new(operator_binary, &kubeconfig, "before");
    let mut running = operator.start(&h)?;
    let client = h.kube.client().await?;
    let api: Api<Tenant> = Api::all(client);
    let started = Instant::now();
    futures::stream::iter(0..tenants)
        .map(|i| {
            let api = api.clone();
            async move {
                let tenant: Tenant = serde_json::from_value(serde_json::json!({
                    "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
                    "metadata": { "name": format!("dr-{i:04}") },
                    "spec": { "displayName": format!("DR {i}"), "currency": "EUR" }
                }))?;
                api.create(&PostParams::default(), &tenant)
                    .await
                    .context("creating a tenant")?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await?;
    all_ready(&api, tenants, &h).await?;
    eprintln!(
        "dr-bench: {tenants} new tenants Ready in {:.1?}",
        started.elapsed()
    );
    let saved = disaster::save(&h.kube, &h.dir.join("dr-backup"))?;

    running.stop();
    let wiped = Instant::now();
    h.kube.restart_wiped().await?;
    let fresh = Instant::now();
    eprintln!(
        "dr-bench: fresh control plane up in {:.1?}",
        wiped.elapsed()
    );
    let kubeconfig = tiqzy_e2e::install_tiqzy_without_platform(&h).await?;
    let operator = OperatorProcess::new(operator_binary, &kubeconfig, "after");
    let running = operator.start(&h)?;
    disaster::restore(&h.kube, &saved)?;
    let api: Api<Tenant> = Api::all(h.kube.client().await?);
    all_ready(&api, tenants, &h).await?;
    let wipe_to_ready_s = wiped.elapsed().as_secs_f64();
    let restore_to_ready_s = fresh.elapsed().as_secs_f64();
    drop(running);
    println!(
        "dr-bench tenants={tenants} wipe_to_ready_s={wipe_to_ready_s:.1} restore_to_ready_s={restore_to_ready_s:.1}"
    );
    Ok(())
}

/// Waits until `tenants` Tenants are Ready (30 minutes at most).
async fn all_ready(api: &Api<Tenant>, tenants: usize, h: &Harness) -> Result<()> {
    let started = Instant::now();
    let deadline = Duration::from_secs(1800);
    let mut last_report = Instant::now();
    loop {
        let ready = api
            .list(&ListParams::default().match_any())
            .await?
            .items
            .iter()
            .filter(|t| {
                t.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if ready >= tenants {
            return Ok(());
        }
        if started.elapsed() > deadline {
            bail!(
                "only {ready} of {tenants} tenants Ready after {deadline:?}; logs in {}",
                h.log_dir().display()
            );
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "dr-bench: {ready}/{tenants} Ready after {:.0?}",
                started.elapsed()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
