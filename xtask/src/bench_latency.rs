//! `cargo xtask bench operator --single`: the latency of one tenant. On a fresh platform
//! whose operator has settled (the payments service it runs is available), 50 tenants are
//! server-side applied one after another, each timed from the apply until the Tenant says
//! Ready (watched, not polled); prints p50 and p99.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use tiqzy_crds::conditions::types;
use tiqzy_crds::{Platform, Tenant};
use tiqzy_e2e::Harness;

use crate::bench::{self, Options};

/// Tenants applied one after another.
pub const TENANTS: usize = 50;

#[derive(Debug)]
pub struct Latency {
    pub tenants: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub async fn latency(options: &Options, operator_binary: &std::path::Path) -> Result<Latency> {
    let h = Harness::start().await?;
    let kubeconfig = tiqzy_e2e::install_tiqzy(&h).await?;
    let client = h.kube.client().await?;
    if !options.with_stores {
        bench::remove_stores(&client).await?;
    }
    let (_process, operator) = bench::start_operator(&h, &kubeconfig, operator_binary, options)?;
    settle(&client).await?;

    let api: Api<Tenant> = Api::all(client.clone());
    let mut samples = Vec::with_capacity(TENANTS);
    for i in 0..TENANTS {
        let name = format!("single-{i:02}");
        let tenant: Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
            "metadata": { "name": name },
            "spec": { "displayName": format!("Single {i}"), "currency": "EUR" }
        }))?;
        let with_stores = options.with_stores;
        let started = Instant::now();
        api.patch(
            &name,
            &PatchParams::apply("tiqzy-bench"),
            &Patch::Apply(&tenant),
        )
        .await
        .with_context(|| format!("applying {name}"))?;
        let ready = await_condition(api.clone(), &name, move |t: Option<&Tenant>| {
            t.is_some_and(|t| bench::settled(t, with_stores))
        });
        match tokio::time::timeout(Duration::from_secs(120), ready).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e).with_context(|| format!("watching {name}")),
            Err(_) => bail!(
                "{name} was not Ready 120 s after it was applied; logs in {}",
                h.log_dir().display()
            ),
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        eprintln!("bench: {name} Ready {ms:.0} ms after it was applied");
        samples.push(ms);
    }
    drop(operator);
    bench::finish(h);
    samples.sort_by(f64::total_cmp);
    Ok(Latency {
        tenants: TENANTS,
        p50_ms: percentile(&samples, 0.50),
        p99_ms: percentile(&samples, 0.99),
    })
}

/// Waits until the operator has started the payments service (its first burst of work), so
/// the first tenant meets an idle platform.
async fn settle(client: &kube::Client) -> Result<()> {
    let api: Api<Platform> = Api::all(client.clone());
    let available = |p: Option<&Platform>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == types::PAYMENTS_SERVICE_READY && c.status == "True")
        })
    };
    let started = Instant::now();
    let ready = await_condition(api, "default", available);
    match tokio::time::timeout(Duration::from_secs(180), ready).await {
        Ok(result) => {
            result.context("watching the Platform")?;
        }
        Err(_) => {
            eprintln!("bench: the payments service is not available after 3 minutes; going on")
        }
    }
    eprintln!(
        "bench: the operator settled after {:.1?}",
        started.elapsed()
    );
    // The Ready Platform's own follow-up (its status write, the Deployment's rollout).
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// The nearest-rank percentile of sorted `samples`.
fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let rank = (p * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.50), 25.0);
        assert_eq!(percentile(&samples, 0.99), 50.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }
}
