//! `cargo xtask bench operator --tenants N`: applies N tenants at once to the local platform
//! and prints how long until all are Ready, the operator's peak memory and its memory once
//! settled, how many writes it made per tenant (by kind and bytes, see
//! [`crate::bench_writes`]), and how many it makes once everything has converged.
//!
//! With `--floor` the same N tenants are then written directly on a fresh platform (see
//! [`crate::bench_floor`]) and the line gains `floor_s` and `ratio`, the operator's time over
//! the floor's. With `--single` 50 tenants are applied one after another to an idle platform
//! instead (see [`crate::bench_latency`]); with both, the latency run comes last.
//!
//! With `--without-stores` the Platform has no PostgreSQL and Redis, and a tenant counts once
//! its storefront is available and routed: the difference between the two runs is what
//! provisioning databases and cache users costs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams, PostParams};
use tiqzy_crds::Tenant;
use tiqzy_e2e::{Harness, OperatorProcess, Service};

use crate::bench_writes::{self, Writes};

/// What `cargo xtask bench operator` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub tenants: usize,
    /// The operator's resync period; idle writes are counted over two of them.
    pub resync_seconds: u64,
    pub with_stores: bool,
    pub floor: bool,
    pub single: bool,
    /// Where the operator (built with `heap-profile`) writes its heap profile.
    pub heap_profile: Option<std::path::PathBuf>,
    /// Environment variables for the operator process alone.
    pub operator_env: Vec<(String, String)>,
}

pub async fn operator(options: &Options, operator_binary: &std::path::Path) -> Result<()> {
    let mut lines = Vec::new();
    if !options.single || options.floor {
        let run = bulk(options, operator_binary).await?;
        let tenants = options.tenants;
        let floor = if options.floor {
            let floor =
                crate::bench_floor::floor(tenants, options.with_stores, &run.sample).await?;
            for line in floor.writes.lines("floor", tenants) {
                eprintln!("bench: {line}");
            }
            eprintln!(
                "bench: the floor had written every object and store after {:.1} s",
                floor.objects_s
            );
            lines.push(format!(
                "operator-floor tenants={tenants} floor_s={:.1}",
                floor.floor_s
            ));
            Some(floor.floor_s)
        } else {
            None
        };
        lines.extend(run.writes.lines("operator", tenants));
        lines.extend(run.heap);
        let floor = floor.map_or_else(String::new, |floor_s| {
            format!(
                " floor_s={floor_s:.1} ratio={:.2}",
                run.ready_s / floor_s.max(0.001)
            )
        });
        let stores = if options.with_stores {
            ""
        } else {
            " stores=false"
        };
        lines.push(format!(
            "operator-bench tenants={tenants} ready_s={:.1}{floor} rss_peak_mib={:.1} rss_settled_mib={:.1} idle_writes={} writes_per_tenant={:.1}{stores}",
            run.ready_s,
            run.rss_peak_mib,
            run.rss_settled_mib,
            run.idle_writes,
            run.writes.total() / tenants.max(1) as f64,
        ));
    }
    if options.single {
        let latency = crate::bench_latency::latency(options, operator_binary).await?;
        lines.push(format!(
            "operator-latency tenants={} p50_ms={:.0} p99_ms={:.0}",
            latency.tenants, latency.p50_ms, latency.p99_ms
        ));
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// The status the operator wrote for one tenant of the bulk run, for the floor to write.
#[derive(Debug, Clone)]
pub struct StatusSample {
    pub tenant: String,
    pub status: serde_json::Value,
}

/// What the bulk run measured.
#[derive(Debug)]
struct Bulk {
    ready_s: f64,
    rss_peak_mib: f64,
    /// Resident memory after convergence and the idle window.
    rss_settled_mib: f64,
    /// `heap-*` lines, with `--heap-profile`.
    heap: Vec<String>,
    idle_writes: u64,
    writes: Writes,
    sample: StatusSample,
}

/// N tenants applied at once, timed until all are Ready.
async fn bulk(options: &Options, operator_binary: &std::path::Path) -> Result<Bulk> {
    let &Options {
        tenants,
        resync_seconds,
        with_stores,
        ..
    } = options;
    let h = Harness::start().await?;
    let kubeconfig = tiqzy_e2e::install_tiqzy(&h).await?;
    let client = h.kube.client().await?;
    if !with_stores {
        remove_stores(&client).await?;
    }
    let mut process = operator_process(&kubeconfig, operator_binary, options);
    if let Some(file) = &options.heap_profile {
        let _ = std::fs::remove_file(file);
        process
            .env
            .push(("TIQZY_HEAP_PROFILE".to_owned(), file.display().to_string()));
    }
    let operator = process.start(&h)?;
    let pid = operator.pid();

    let before = bench_writes::counters(&client).await?;
    let api: Api<Tenant> = Api::all(client.clone());
    let started = Instant::now();
    futures::stream::iter(0..tenants)
        .map(|i| create_tenant(&client, i))
        .buffer_unordered(32)
        .try_for_each(|_| async { Ok(()) })
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
            .filter(|t| settled(t, with_stores))
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
    let mut writes = Writes::between(&before, &bench_writes::counters(&client).await?);
    writes.add_tenant_events(&client, "tiqzy-operator").await?;
    eprintln!(
        "bench: the operator counted {} writes of its own (tiqzy_operator_writes_total: applies, deletes, statuses)",
        counted_writes(&process.metrics().await?)
    );
    let sample_tenant = tenant_name(0);
    let status = api
        .get(&sample_tenant)
        .await?
        .status
        .context("a Ready tenant has a status")?;
    let sample = StatusSample {
        tenant: sample_tenant,
        status: serde_json::to_value(status)?,
    };

    // Let in-flight work settle, then count writes over two resync periods.
    tokio::time::sleep(Duration::from_secs(resync_seconds)).await;
    let before = counted_writes(&process.metrics().await?);
    tokio::time::sleep(Duration::from_secs(2 * resync_seconds + 2)).await;
    let idle_writes = counted_writes(&process.metrics().await?) - before;
    let rss_peak_mib = rss_kib(pid, "VmHWM")? as f64 / 1024.0;
    let rss_settled_mib = rss_kib(pid, "VmRSS")? as f64 / 1024.0;
    let metrics = process.metrics().await?;
    for line in metrics.lines().filter(|l| {
        l.starts_with("controller_runtime_reconcile_total")
            || l.starts_with("controller_runtime_reconcile_time_seconds_sum")
            || l.starts_with("controller_runtime_reconcile_time_seconds_count")
            || l.starts_with("controller_runtime_reconcile_errors_total")
    }) {
        eprintln!("bench: {line}");
    }
    let heap = match &options.heap_profile {
        Some(file) => {
            // SIGTERM ends the controller; the profile is written as `main` returns.
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
            crate::bench_heap::wait_for(pid, file)?;
            crate::bench_heap::summary(file, 12)?
        }
        None => Vec::new(),
    };
    drop(operator);
    finish(h);
    Ok(Bulk {
        heap,
        ready_s,
        rss_peak_mib,
        rss_settled_mib,
        idle_writes,
        writes,
        sample,
    })
}

/// Starts the release operator as the bench runs it: its default concurrency, request limit
/// and store check interval, the options' resync and environment, JSON logs.
pub fn start_operator(
    h: &Harness,
    kubeconfig: &std::path::Path,
    binary: &std::path::Path,
    options: &Options,
) -> Result<(OperatorProcess, Service)> {
    let process = operator_process(kubeconfig, binary, options);
    let operator = process.start(h)?;
    Ok((process, operator))
}

fn operator_process(
    kubeconfig: &std::path::Path,
    binary: &std::path::Path,
    options: &Options,
) -> OperatorProcess {
    let mut process = OperatorProcess::new(binary, kubeconfig, "bench");
    process.args = vec![
        format!("--resync-seconds={}", options.resync_seconds),
        "--log-format=json".to_owned(),
    ];
    process.env.clone_from(&options.operator_env);
    process
}

/// Takes PostgreSQL and Redis out of the Platform.
pub async fn remove_stores(client: &kube::Client) -> Result<()> {
    let patch = serde_json::json!({ "spec": { "postgres": null, "redis": null } });
    Api::<tiqzy_crds::Platform>::all(client.clone())
        .patch(
            "default",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .context("removing the stores from the Platform")?;
    Ok(())
}

pub fn tenant_name(i: usize) -> String {
    format!("bench-{i:05}")
}

/// Creates the bench's tenant number `i` (as the admin, as a user would).
pub async fn create_tenant(client: &kube::Client, i: usize) -> Result<Tenant> {
    let tenant: Tenant = serde_json::from_value(serde_json::json!({
        "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
        "metadata": { "name": tenant_name(i) },
        "spec": { "displayName": format!("Bench {i}"), "currency": "EUR" }
    }))?;
    Api::<Tenant>::all(client.clone())
        .create(&PostParams::default(), &tenant)
        .await
        .context("creating a tenant")
}

/// Whether `tenant` is as ready as this platform lets it be: `Ready`, or without stores
/// serving and routed. No router runs here, so an Ingress waiting for one
/// (`Routed=False IngressCreated`) is as routed as it gets.
pub fn settled(tenant: &Tenant, with_stores: bool) -> bool {
    let done: &[&str] = if with_stores {
        &["Ready"]
    } else {
        &["StorefrontAvailable", "Routed"]
    };
    tenant.status.as_ref().is_some_and(|s| {
        done.iter().all(|type_| {
            s.conditions
                .iter()
                .any(|c| &c.type_ == type_ && (c.status == "True" || c.reason == "IngressCreated"))
        })
    })
}

/// Stops the platform and removes its data (a thousand databases take gigabytes).
pub fn finish(h: Harness) {
    let dir = h.dir.clone();
    drop(h);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("bench: could not remove {}: {e}", dir.display());
    }
}

fn counted_writes(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("tiqzy_operator_writes_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// A memory figure of the process: `VmHWM` (the most it was ever resident) or `VmRSS` (now).
fn rss_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}
