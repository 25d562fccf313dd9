//! `cargo xtask bench operator --tenants N`: applies N tenants at once to the local platform
//! and prints how long until all are Ready, the operator's peak memory, and how many writes
//! it makes once everything has converged.
//!
//! With `--without-stores` the Platform has no PostgreSQL and Redis, and a tenant counts once
//! its storefront is available and routed: the difference between the two runs is what
//! provisioning databases and cache users costs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams, PostParams};
use tiqzy_crds::Tenant;
use tiqzy_e2e::{Harness, OperatorProcess};

/// `resync_seconds` is the operator's resync period; idle writes are counted over two of them.
pub async fn operator(
    tenants: usize,
    resync_seconds: u64,
    with_stores: bool,
    operator_binary: &std::path::Path,
) -> Result<()> {
    let h = Harness::start().await?;
    let kubeconfig = tiqzy_e2e::install_tiqzy(&h).await?;
    let client = h.kube.client().await?;
    if !with_stores {
        let patch = serde_json::json!({ "spec": { "postgres": null, "redis": null } });
        Api::<tiqzy_crds::Platform>::all(client.clone())
            .patch(
                "default",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .context("removing the stores from the Platform")?;
    }
    // Without stores a tenant is as ready as it can be when it serves and is routed; no
    // router runs here, so an Ingress waiting for one (`Routed=False IngressCreated`) is as
    // routed as it gets.
    let done: &[&str] = if with_stores {
        &["Ready"]
    } else {
        &["StorefrontAvailable", "Routed"]
    };
    let mut process = OperatorProcess::new(operator_binary, &kubeconfig, "bench");
    process.args = vec![
        format!("--resync-seconds={resync_seconds}"),
        "--log-format=json".to_owned(),
    ];
    let operator = process.start(&h)?;
    let pid = operator.pid();

    let api: Api<Tenant> = Api::all(client.clone());
    let started = Instant::now();
    futures::stream::iter(0..tenants)
        .map(|i| {
            let api = api.clone();
            async move {
                let tenant: Tenant = serde_json::from_value(serde_json::json!({
                    "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
                    "metadata": { "name": format!("bench-{i:05}") },
                    "spec": { "displayName": format!("Bench {i}"), "currency": "EUR" }
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
    eprintln!(
        "bench: {tenants} tenants applied in {:.1?}",
        started.elapsed()
    );

    let deadline = Duration::from_secs(1800);
    let mut last_report = Instant::now();
    let ready_s = loop {
        // From the API server's watch cache: the bench should not load etcd itself.
        let ready = api
            .list(&ListParams::default().match_any())
            .await?
            .items
            .iter()
            .filter(|t| {
                t.status.as_ref().is_some_and(|s| {
                    done.iter().all(|type_| {
                        s.conditions.iter().any(|c| {
                            &c.type_ == type_
                                && (c.status == "True" || c.reason == "IngressCreated")
                        })
                    })
                })
            })
            .count();
        if ready >= tenants {
            break started.elapsed().as_secs_f64();
        }
        if started.elapsed() > deadline {
            bail!(
                "only {ready} of {tenants} tenants Ready after {deadline:?}; logs in {}",
                h.log_dir().display()
            );
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "bench: {ready}/{tenants} Ready after {:.0?}",
                started.elapsed()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Let in-flight work settle, then count writes over two resync periods.
    tokio::time::sleep(Duration::from_secs(resync_seconds)).await;
    let before = writes(&process.metrics().await?);
    tokio::time::sleep(Duration::from_secs(2 * resync_seconds + 2)).await;
    let idle_writes = writes(&process.metrics().await?) - before;
    let rss_peak_mib = peak_rss_kib(pid)? as f64 / 1024.0;
    let metrics = process.metrics().await?;
    for line in metrics.lines().filter(|l| {
        l.starts_with("controller_runtime_reconcile_total")
            || l.starts_with("controller_runtime_reconcile_time_seconds_sum")
            || l.starts_with("controller_runtime_reconcile_time_seconds_count")
            || l.starts_with("controller_runtime_reconcile_errors_total")
    }) {
        eprintln!("bench: {line}");
    }
    drop(operator);
    println!(
        "operator-bench tenants={tenants} ready_s={ready_s:.1} rss_peak_mib={rss_peak_mib:.1} idle_writes={idle_writes} stores={with_stores}"
    );
    Ok(())
}

fn writes(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("tiqzy_operator_writes_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// VmHWM: the most resident memory the process ever had.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/<pid>/status")
}
