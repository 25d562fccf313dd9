//! `cargo xtask bench storefronts --tenants N`: on the live platform (`cargo xtask up`'s: a real
//! node, Traefik, the operator), applies N tenants one after another and measures, for each,
//! the time from `kubectl apply` to its first page served through the router from its own
//! pod. Prints each time and the median.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kube::api::{Api, PostParams};
use tiqzy_crds::Tenant;
use tiqzy_e2e::{LiveOptions, LivePlatform, RouterPorts};

pub async fn storefronts(tenants: usize, operator: std::path::PathBuf) -> Result<()> {
    let live = LivePlatform::start(&LiveOptions {
        operator,
        ports: RouterPorts::Free,
    })
    .await?;
    let client = live.platform.harness.kube.client().await?;
    let api: Api<Tenant> = Api::all(client);
    let port = live.router.https_port;
    let mut times = Vec::with_capacity(tenants);
    for i in 0..tenants {
        let name = format!("bench-shop-{i:02}");
        let host = format!("{name}.localhost");
        let display = format!("Bench Shop {i}");
        let tenant: Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
            "metadata": { "name": name },
            "spec": { "displayName": display, "currency": "EUR",
                      "storefront": { "replicas": { "min": 1, "max": 1 } } }
        }))?;
        // No certificate of its own: the router's default one, which this client accepts;
        // what is measured is the path to a served page, not the certificate.
        let http = reqwest::Client::builder()
            .resolve(&host, SocketAddr::from(([127, 0, 0, 1], port)))
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = format!("https://{host}:{port}/");
        let applied = Instant::now();
        api.create(&PostParams::default(), &tenant).await?;
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.status() == reqwest::StatusCode::OK
                && response
                    .text()
                    .await
                    .is_ok_and(|page| page.contains(&display))
            {
                break;
            }
            if applied.elapsed() > Duration::from_secs(300) {
                bail!("{name} served no page within 5 minutes");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = applied.elapsed().as_secs_f64();
        eprintln!("bench: {name} first page after {took:.2} s");
        times.push(took);
    }
    times.sort_by(f64::total_cmp);
    let p50 = times[times.len() / 2];
    let max = times.last().copied().unwrap_or_default();
    println!(
        "storefront-bench tenants={tenants} apply_to_first_page_p50_s={p50:.2} max_s={max:.2}"
    );
    Ok(())
}
