//! `cargo xtask bench payments`: signed Stripe events posted to the release `tiqzy-payments`
//! binary (real kube-apiserver serving the Tenants, real PostgreSQL), delivered to one
//! storefront receiver per tenant run here; each event's time from being posted to being
//! received.
//!
//! Last line: `payments-bench tenants=.. events=.. events_per_s=.. delivered_p99_ms=..
//! duplicates=.. lost=..`; the line before it gives the CPU time the service and PostgreSQL
//! (all its processes) used per 1,000 events, from `/proc`, which other load on the machine
//! changes far less than it changes the rates. `TIQZY_BENCH_PAYMENTS_BINARY` runs another
//! build of the service (an earlier one, to compare).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use hmac::{KeyInit, Mac};
use kube::api::{Api, PostParams};
use tiqzy_crds::Tenant;
use tiqzy_e2e::free_port;

const STRIPE_SECRET: &str = "whsec_benchStripe";
const DELIVERY_KEY: &str = "bench-delivery-key";
/// Events in flight towards the service at once.
const CONCURRENCY: usize = 64;

/// Kills the service when the bench ends, however it ends.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// When each event reached its storefront (every arrival, so repeats show).
type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

pub fn run(tenants: usize, events: usize, binary: &Path) -> Result<()> {
    let other = std::env::var_os("TIQZY_BENCH_PAYMENTS_BINARY").map(std::path::PathBuf::from);
    let binary = other.as_deref().unwrap_or(binary);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(tenants.max(1), events, binary))
}

async fn bench(tenants: usize, events: usize, binary: &Path) -> Result<()> {
    let h = tiqzy_e2e::Harness::start().await?;
    let admin = h.kube.client().await?;
    tiqzy_e2e::install_tiqzy_crds(&admin).await?;
    let role: serde_json::Value =
        serde_saphyr::from_str(include_str!("../../payments/deploy/cluster-role.yaml"))?;
    let kubeconfig = tiqzy_e2e::install_account(
        &h,
        &admin,
        ("tiqzy-payments-system", "tiqzy-payments"),
        role,
    )
    .await?;
    let names: Vec<String> = (0..tenants).map(|i| format!("paybench-{i:04}")).collect();
    for name in &names {
        let tenant: Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
            "metadata": { "name": name },
            "spec": { "displayName": name, "currency": "EUR",
                      "payments": { "connectedAccountId": format!("acct_1{}", name.replace('-', "")) } },
        }))?;
        Api::<Tenant>::all(admin.clone())
            .create(&PostParams::default(), &tenant)
            .await
            .context("creating a tenant")?;
    }
    let (db, connection) =
        tokio_postgres::connect(&h.postgres.admin_config("postgres"), tokio_postgres::NoTls)
            .await?;
    tokio::spawn(connection);
    db.simple_query("CREATE DATABASE payments_bench").await?;

    let arrivals: Arrivals = Arc::default();
    let receiver = receiver(arrivals.clone()).await?;
    let port = free_port()?;
    let run = tiqzy_e2e::target_dir().join("bench-payments");
    std::fs::create_dir_all(&run)?;
    let service = Service(
        Command::new(binary)
            .env("KUBECONFIG", &kubeconfig)
            .env("DATABASE_URL", h.postgres.admin_url("payments_bench"))
            .env("STRIPE_SECRET_KEY", "sk_test_bench")
            .env("STRIPE_API_BASE", &h.stripe.url)
            .env("STRIPE_WEBHOOK_SECRETS", STRIPE_SECRET)
            .env("TIQZY_PAYMENTS_DELIVERY_KEY", DELIVERY_KEY)
            .env(
                "TIQZY_PAYMENTS_DELIVERY_URL",
                format!("{receiver}/{{tenant}}/webhooks/stripe"),
            )
            .env("TIQZY_PAYMENTS_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(run.join("payments.log"))?)
            .spawn()
            .context("starting tiqzy-payments")?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()?;
    wait_ready(&http, &base).await?;
    let postmaster = postmaster(h.postgres.port)?;
    let cpu_before = (
        cpu_ticks(service.0.id(), false)?,
        cpu_ticks(postmaster, true)?,
    );
    let commits_before = commits(&db).await?;

    let posted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let started = Instant::now();
    let refused = futures::stream::iter(0..events)
        .map(|i| {
            let (http, base, posted) = (http.clone(), base.clone(), posted.clone());
            let tenant = names[i % names.len()].clone();
            async move {
                let id = format!("evt_bench{i:08}");
                let body = serde_json::json!({
                    "id": id, "object": "event", "type": "checkout.session.completed",
                    "livemode": false, "created": now(),
                    "data": { "object": { "id": format!("cs_bench{i:08}"), "object": "checkout.session",
                                          "metadata": { "tiqzy_tenant": tenant } } },
                })
                .to_string();
                posted.lock().expect("lock").insert(id, Instant::now());
                let answer = http
                    .post(format!("{base}/webhooks/stripe"))
                    .header("content-type", "application/json")
                    .header("stripe-signature", sign(STRIPE_SECRET, now(), &body))
                    .body(body)
                    .send()
                    .await;
                !matches!(answer, Ok(a) if a.status().is_success())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|refused| std::future::ready(*refused))
        .count()
        .await;
    let accepted_in = started.elapsed();
    if refused > 0 {
        bail!("the service refused {refused} of {events} events");
    }

    // Everything posted is delivered, unless something is lost: wait until nothing new comes.
    let mut last = (0, Instant::now());
    loop {
        let received = arrivals.lock().expect("lock").len();
        if received >= events && received == last.0 {
            break;
        }
        if received != last.0 {
            last = (received, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu_after = (
        cpu_ticks(service.0.id(), false)?,
        cpu_ticks(postmaster, true)?,
    );
    let per_1000 = |before: u64, after: u64| {
        after.saturating_sub(before) as f64 * 10.0 * 1000.0 / events as f64
    };
    // PostgreSQL's statistics reach pg_stat_database within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let commits_after = commits(&db).await?;
    println!(
        "payments-bench cpu_ms_per_1000_events payments={:.0} postgres={:.0} commits_per_1000_events={:.0}",
        per_1000(cpu_before.0, cpu_after.0),
        per_1000(cpu_before.1, cpu_after.1),
        commits_after.saturating_sub(commits_before) as f64 * 1000.0 / events as f64,
    );
    let arrivals = arrivals.lock().expect("lock").clone();
    let posted = posted.lock().expect("lock").clone();
    let mut first: HashMap<&str, Instant> = HashMap::new();
    for (id, at) in &arrivals {
        first.entry(id.as_str()).or_insert(*at);
    }
    let duplicates = arrivals.len() - first.len();
    let lost = posted
        .keys()
        .filter(|id| !first.contains_key(id.as_str()))
        .count();
    let mut latencies: Vec<u128> = first
        .iter()
        .filter_map(|(id, at)| Some(at.duration_since(*posted.get(*id)?).as_millis()))
        .collect();
    latencies.sort_unstable();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    println!(
        "payments-bench tenants={tenants} events={events} events_per_s={:.0} delivered_p99_ms={p99} duplicates={duplicates} lost={lost}",
        events as f64 / accepted_in.as_secs_f64()
    );
    Ok(())
}

/// The storefronts: records each event id it receives, answers 200.
async fn receiver(arrivals: Arrivals) -> Result<String> {
    let app = axum::Router::new().route(
        "/{tenant}/webhooks/stripe",
        axum::routing::post(move |body: axum::body::Bytes| {
            let arrivals = arrivals.clone();
            async move {
                let at = Instant::now();
                let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let id = event["id"].as_str().unwrap_or_default().to_owned();
                arrivals.lock().expect("lock").push((id, at));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> Result<()> {
    for _ in 0..600 {
        if let Ok(answer) = http.get(format!("{base}/healthz")).send().await
            && answer.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("tiqzy-payments did not become ready; see target/bench-payments/payments.log")
}

/// Transactions committed in the service's database so far.
async fn commits(db: &tokio_postgres::Client) -> Result<u64> {
    let row = db
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = 'payments_bench'",
            &[],
        )
        .await?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// The PostgreSQL server listening on `port`: the process started with `-p <port>`.
fn postmaster(port: u16) -> Result<u32> {
    let port = port.to_string();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"/postgres"))
            && args
                .windows(2)
                .any(|w| w[0] == b"-p" && w[1] == port.as_bytes())
        {
            return Ok(pid);
        }
    }
    bail!("no PostgreSQL server on port {port} in /proc")
}

/// User and system CPU time of `pid` in clock ticks (1/100 s); with `tree`, also of its
/// children now running and those it has waited for (PostgreSQL's backends).
fn cpu_ticks(pid: u32, tree: bool) -> Result<u64> {
    let fields = |pid: u32| -> Result<Vec<u64>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // After the command's closing parenthesis: field 3 (state) onwards.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        Ok(rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect())
    };
    // utime, stime, cutime, cstime are fields 14..=17: indexes 11..=14 after the state.
    let own = fields(pid)?;
    let mut ticks = own[11] + own[12];
    if tree {
        ticks += own[13] + own[14];
        for entry in std::fs::read_dir("/proc")? {
            let Ok(child) = entry?.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = fields(child)
                && stat.get(1).copied() == Some(u64::from(pid))
            {
                ticks += stat[11] + stat[12];
            }
        }
    }
    Ok(ticks)
}

fn sign(secret: &str, t: i64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
