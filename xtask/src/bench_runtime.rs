//! `cargo xtask bench runtime`: an on-sale rush against the release runtime binary on real
//! PostgreSQL (committing to disk, as in production) and Redis, then the cached event page
//! under wrk from a second process. Each figure comes with this machine's floor, measured in
//! the same run:
//! - `floor_updates_per_min`: pgbench's one-row `UPDATE … SET n = n + 1` from as many
//!   connections as the runtime's pool, on the same server: what one commit per buyer on one
//!   hot counter row could reach at most here. `ratio` is orders per minute over it; above 1
//!   only batching (several buyers per commit) gets there.
//! - `static_rps`: wrk against a static file of the same runtime, the HTTP floor beside the
//!   event page.
//!
//! Last line: `runtime-bench buyers=.. capacity=.. sold=.. oversold=.. orders_per_min=..
//! floor_updates_per_min=.. ratio=.. page_rps=.. page_p99_ms=.. static_rps=.. rss_idle_mib=..`

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const BUYERS: usize = 2_000;
const CAPACITY: i32 = 500;
const SLUG: &str = "bench-night";
/// The runtime's default database pool: as many transactions as can contend at once.
const POOL: u32 = 10;

pub fn run(traces: bool) -> Result<()> {
    let binary = build_runtime()?;
    let wrk = ensure_wrk()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // block_on keeps the datastores' processes on this thread, which outlives them.
    runtime.block_on(async {
        let run = tiqzy_e2e::target_dir().join("bench-runtime");
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(run.join("logs"))?;
        let (postgres, redis) = tokio::try_join!(
            tiqzy_e2e::Postgres::start_durable(&run),
            tiqzy_e2e::Redis::start(&run)
        )?;
        let (db, connection) =
            tokio_postgres::connect(&postgres.admin_config("postgres"), tokio_postgres::NoTls)
                .await?;
        tokio::spawn(connection);
        db.simple_query("CREATE DATABASE bench").await?;

        let jaeger = match traces {
            true => Some(tiqzy_e2e::jaeger::Jaeger::start(&run.join("jaeger")).await?),
            false => None,
        };
        let tracing_env = jaeger.iter().flat_map(|jaeger| {
            [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_http_endpoint()),
                ("OTEL_TRACES_SAMPLER", "always_on".to_owned()),
            ]
        });
        let port = free_port()?;
        let metrics_port = free_port()?;
        let started = Instant::now();
        let server = Server(
            Command::new(&binary)
                .envs(runtime_env(
                    &postgres.admin_url("bench"),
                    &redis.admin_url(),
                    port,
                ))
                .envs(tracing_env)
                .env("TIQZY_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(run.join("logs/runtime.log"))?)
                .spawn()
                .context("starting tiqzy-runtime")?,
        );
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(BUYERS)
            .build()?;
        wait_ready(&http, &base).await?;
        let ready_ms = started.elapsed().as_millis();
        let rss_idle_mib = rss_mib(server.0.id())?;

        let (bench_db, connection) =
            tokio_postgres::connect(&postgres.admin_config("bench"), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let ticket_type = seed(&bench_db).await?;
        let floor_updates_per_min = floor(&postgres, &bench_db).await? * 60.0;

        let processes = [
            ("runtime", server.0.id(), false),
            ("postgres", postgres.pid(), true),
            ("redis", redis.pid(), false),
            ("buyers", std::process::id(), false),
        ];
        bench_db
            .batch_execute(
                "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
                 SELECT pg_stat_statements_reset();",
            )
            .await?;
        let cpu_before = processes.map(|(_, pid, children)| cpu_seconds(pid, children));
        let (orders, took, stages) = rush(&http, &base, &ticket_type).await?;
        let cpu: Vec<String> = processes
            .iter()
            .zip(cpu_before)
            .map(|((name, pid, children), before)| {
                format!("{name}_cpu_s={:.2}", cpu_seconds(*pid, *children) - before)
            })
            .collect();
        let batches = server_stages(&http, metrics_port).await?;
        let statements = statements(&bench_db).await?;
        let row = bench_db
            .query_one(
                "SELECT sold + held, capacity FROM ticket_types WHERE id = $1::text::uuid",
                &[&ticket_type],
            )
            .await?;
        let (taken, capacity): (i32, i32) = (row.get(0), row.get(1));
        let oversold = (taken - capacity).max(0);
        let orders_per_min = orders as f64 / took.as_secs_f64() * 60.0;
        let ratio = orders_per_min / floor_updates_per_min;

        let (page_rps, page_p99_ms) = page_load(&wrk, &format!("{base}/events/{SLUG}"))?;
        let (static_rps, _) = page_load(&wrk, &format!("{base}/static/countdown.js"))?;
        drop(server);
        if let Some(jaeger) = &jaeger {
            // What the runtime exported while it ran (its exporter sends a batch every 5 s).
            let kept = jaeger.traces("tiqzy-runtime", &[]).await?.len();
            eprintln!(
                "Jaeger holds {kept} of the runtime's traces (the query returns 1,000 at most)"
            );
        }
        let traces = if jaeger.is_some() { "jaeger" } else { "off" };
        eprintln!("runtime start to ready: {ready_ms} ms; rush took {took:.2?}");
        eprintln!("{stages}");
        eprintln!(
            "rush cpu: {} (wall {:.2} s, 2 cores)",
            cpu.join(" "),
            took.as_secs_f64()
        );
        eprintln!("{batches}");
        eprintln!("{statements}");
        println!(
            "runtime-bench buyers={BUYERS} capacity={CAPACITY} sold={orders} oversold={oversold} \
             orders_per_min={orders_per_min:.0} floor_updates_per_min={floor_updates_per_min:.0} \
             ratio={ratio:.2} page_rps={page_rps:.0} page_p99_ms={page_p99_ms:.2} \
             static_rps={static_rps:.0} rss_idle_mib={rss_idle_mib:.1} traces={traces}"
        );
        Ok(())
    })
}

/// Stops the runtime when the benchmark ends, however it ends.
#[derive(Debug)]
pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn build_runtime() -> Result<PathBuf> {
    let status = tiqzy_e2e::cargo_command()
        .args([
            "build",
            "--release",
            "-p",
            "tiqzy-runtime",
            "--bin",
            "tiqzy-runtime",
        ])
        .status()?;
    if !status.success() {
        bail!("building tiqzy-runtime failed ({status})");
    }
    Ok(tiqzy_e2e::target_dir().join("release/tiqzy-runtime"))
}

fn ensure_wrk() -> Result<PathBuf> {
    let found = |p: &Path| p.is_file().then(|| p.to_path_buf());
    if let Some(wrk) = found(Path::new("/usr/bin/wrk")) {
        return Ok(wrk);
    }
    let root = Command::new("id")
        .arg("-u")
        .output()?
        .stdout
        .starts_with(b"0");
    if !root {
        bail!("the page benchmark needs wrk: sudo apt-get install -y wrk");
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "wrk"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !status.success() {
        bail!("apt-get install wrk failed ({status})");
    }
    Ok(PathBuf::from("/usr/bin/wrk"))
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn runtime_env(
    database_url: &str,
    redis_url: &str,
    port: u16,
) -> Vec<(&'static str, String)> {
    let fixed = [
        ("TIQZY_TENANT", "bench"),
        ("TIQZY_DISPLAY_NAME", "Bench Live"),
        ("TIQZY_CURRENCY", "EUR"),
        ("TIQZY_LOCALE", "en-GB"),
        ("TIQZY_BRAND_PRIMARY_COLOR", "#1d4ed8"),
        ("TIQZY_BRAND_ACCENT_COLOR", "#f59e0b"),
        ("TIQZY_SUPPORT_EMAIL", "help@bench.example"),
        ("TIQZY_RESALE_ENABLED", "true"),
        ("TIQZY_RESALE_PRICE_CAP_PERCENT", "100"),
        ("TIQZY_RESALE_SELLER_FEE_BPS", "0"),
        ("TIQZY_PUBLIC_URL", "http://bench.localhost"),
        ("TIQZY_CACHE_KEY_PREFIX", "t:bench:"),
        // The admin API is not exercised; nothing is fetched from here.
        ("TIQZY_OAUTH_ISSUER", "http://127.0.0.1:9"),
        ("TIQZY_OAUTH_AUDIENCE", "bench"),
        ("TIQZY_HOLD_RATE_LIMIT_PER_MINUTE", "1000000"),
        // Every buyer here opens a connection of their own (2,000 at once), where a router
        // would hold a pool of keep-alive connections to the pod: above the default cap of
        // 1,024 the rest would wait for idle ones to time out (30 s), not for the runtime.
        ("TIQZY_MAX_CONNECTIONS", "4096"),
        ("RUST_LOG", "warn"),
    ];
    let mut env: Vec<(&'static str, String)> =
        fixed.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
    env.push(("DATABASE_URL", database_url.to_owned()));
    env.push(("REDIS_URL", redis_url.to_owned()));
    env.push(("TIQZY_LISTEN_ADDR", format!("127.0.0.1:{port}")));
    env.push(("TIQZY_METRICS_ADDR", "127.0.0.1:0".to_owned()));
    env.push(("TIQZY_TICKET_SIGNING_KEY", "ab".repeat(32)));
    env
}

pub(crate) async fn wait_ready(http: &reqwest::Client, base: &str) -> Result<()> {
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("tiqzy-runtime did not become ready; see target/bench-runtime/logs/runtime.log")
}

/// CPU seconds (user and system) `pid` has used, with its children's when asked
/// (PostgreSQL's backends: the live ones, and those that ended, which the kernel adds to
/// their parent's count once reaped); 0 for what cannot be read.
fn cpu_seconds(pid: u32, children: bool) -> f64 {
    // Linux reports these in USER_HZ, which is 100 on every architecture it runs on here.
    const TICKS: f64 = 100.0;
    let stat = |pid: &str, reaped: bool| -> Option<(u32, f64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces:
        // utime, stime, cutime and cstime are the 12th to the 15th.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let parent = fields.get(1)?.parse().ok()?;
        let counted = if reaped { 11..15 } else { 11..13 };
        let mut ticks = 0.0;
        for field in counted {
            ticks += fields.get(field)?.parse::<f64>().ok()?;
        }
        Some((parent, ticks / TICKS))
    };
    let mut total = stat(&pid.to_string(), children).map_or(0.0, |(_, s)| s);
    if children && let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.bytes().all(|b| b.is_ascii_digit())
                && let Some((parent, seconds)) = stat(&name, false)
                && parent == pid
            {
                total += seconds;
            }
        }
    }
    total
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    Ok(kib / 1024.0)
}

/// One event on sale now with one ticket type, written the way the admin API would.
async fn seed(db: &tokio_postgres::Client) -> Result<String> {
    db.batch_execute(&format!(
        "INSERT INTO events (id, slug, title, venue, starts_at, ends_at)
         VALUES (gen_random_uuid(), '{SLUG}', 'Bench Night', 'Hall', now() + interval '30 days',
                 now() + interval '30 days 4 hours');
         INSERT INTO ticket_types (id, event_id, name, price_minor, currency, capacity,
                                   per_order_limit, sales_start, sales_end)
         SELECT gen_random_uuid(), id, 'Standing', 2500, 'EUR', {CAPACITY}, 4,
                now() - interval '1 hour', now() + interval '29 days'
         FROM events WHERE slug = '{SLUG}';"
    ))
    .await?;
    let row = db
        .query_one("SELECT id::text FROM ticket_types", &[])
        .await?;
    Ok(row.get(0))
}

/// What pgbench's one-row update reaches on this server at the runtime's pool size, per
/// second: a table of its own in the benchmark's database, five seconds.
async fn floor(postgres: &tiqzy_e2e::Postgres, db: &tokio_postgres::Client) -> Result<f64> {
    db.batch_execute(
        "CREATE TABLE floor_counter (id integer PRIMARY KEY, n bigint NOT NULL);
         INSERT INTO floor_counter VALUES (1, 0);",
    )
    .await?;
    let script = "UPDATE floor_counter SET n = n + 1 WHERE id = 1;\n";
    // pgbench blocks; the runtime's other threads keep the datastores' connections served.
    tokio::task::block_in_place(|| postgres.pgbench("bench", script, POOL, 5))
}

/// How the rush went, stage by stage: time to answer a hold and an order, in ms.
#[derive(Debug, Default)]
struct Stages {
    holds: Vec<f64>,
    orders: Vec<f64>,
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let quantiles = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            let at = |q: f64| {
                v.get(((v.len() as f64 - 1.0) * q).round() as usize)
                    .copied()
            };
            (at(0.5).unwrap_or(0.0), at(0.99).unwrap_or(0.0))
        };
        let (hold_p50, hold_p99) = quantiles(&self.holds);
        let (order_p50, order_p99) = quantiles(&self.orders);
        write!(
            f,
            "stages: holds={} hold_p50_ms={hold_p50:.1} hold_p99_ms={hold_p99:.1} \
             orders={} order_p50_ms={order_p50:.1} order_p99_ms={order_p99:.1}",
            self.holds.len(),
            self.orders.len()
        )
    }
}

/// Every buyer holds one ticket and orders it; returns the orders made, the time taken and
/// each stage's answer times.
async fn rush(
    http: &reqwest::Client,
    base: &str,
    ticket_type: &str,
) -> Result<(usize, Duration, Stages)> {
    let started = Instant::now();
    let mut buyers = tokio::task::JoinSet::new();
    for i in 0..BUYERS {
        let (http, base, ticket_type) = (http.clone(), base.to_owned(), ticket_type.to_owned());
        buyers.spawn(async move {
            // Each buyer from an address of their own, as the router writes it: the per-client
            // ticket cap and rate limit apply per buyer, as on a real on-sale.
            let asked = Instant::now();
            let hold = http
                .post(format!("{base}/api/holds"))
                .header(
                    "x-forwarded-for",
                    format!("198.18.{}.{}", i / 250, i % 250 + 1),
                )
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"ticket_type_id":"{ticket_type}","quantity":1}}"#
                ))
                .send()
                .await?;
            let held = hold.status() == 201;
            let hold: String = hold.text().await?;
            let hold_ms = asked.elapsed().as_secs_f64() * 1000.0;
            if !held {
                return anyhow::Ok((hold_ms, None));
            }
            let hold_id = hold
                .split(r#""id":""#)
                .nth(1)
                .and_then(|s| s.split('"').next())
                .context("hold id")?
                .to_owned();
            let asked = Instant::now();
            let order = http
                .post(format!("{base}/api/orders"))
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"hold_id":"{hold_id}","email":"buyer{i}@bench.example"}}"#
                ))
                .send()
                .await?;
            let ordered = order.status() == 201;
            order.bytes().await?;
            let order_ms = asked.elapsed().as_secs_f64() * 1000.0;
            Ok((hold_ms, ordered.then_some(order_ms)))
        });
    }
    let mut stages = Stages::default();
    while let Some(buyer) = buyers.join_next().await {
        let (hold_ms, order_ms) = buyer??;
        stages.holds.push(hold_ms);
        stages.orders.extend(order_ms);
    }
    Ok((stages.orders.len(), started.elapsed(), stages))
}

/// Where the rush's time went inside the runtime, from its metrics: each API route's
/// requests and time, and for holds the wait for a batch and the batches themselves.
async fn server_stages(http: &reqwest::Client, metrics_port: u16) -> Result<String> {
    let metrics = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let value = |series| tiqzy_e2e::sample(&metrics, series).unwrap_or(0.0);
    // Summed over the series of `name` for `route` (every method and status).
    let sum = |name: &str, route: &str| -> f64 {
        metrics
            .lines()
            .filter_map(crate::bench_writes::sample)
            .filter(|(n, labels, _)| *n == name && labels.get("route") == Some(&route))
            .map(|(_, _, value)| value)
            .sum()
    };
    let route = |path: &str| {
        let seconds = sum("tiqzy_http_request_duration_seconds_sum", path);
        let count = sum("tiqzy_http_request_duration_seconds_count", path);
        format!(
            "{count:.0} answered, mean {:.1} ms ({seconds:.2} s in all)",
            seconds * 1000.0 / count.max(1.0)
        )
    };
    let requests = value("tiqzy_hold_batch_size_sum");
    let batches = value("tiqzy_hold_batch_size_count");
    let queued = value("tiqzy_hold_queue_duration_seconds_sum");
    let took = value("tiqzy_hold_batch_duration_seconds_sum");
    Ok(format!(
        "runtime stages:\n  POST /api/holds: {}\n    waiting for a batch: mean {:.1} ms\n    \
         {batches:.0} batches for {requests:.0} requests ({:.1} per commit), mean {:.1} ms each \
         ({took:.2} s in all)\n  POST /api/orders: {}",
        route("/api/holds"),
        queued * 1000.0 / requests.max(1.0),
        requests / batches.max(1.0),
        took * 1000.0 / batches.max(1.0),
        route("/api/orders"),
    ))
}

/// PostgreSQL's statements of the rush by the time they took (`pg_stat_statements`, reset
/// before the rush): what the database spent its time on.
async fn statements(db: &tokio_postgres::Client) -> Result<String> {
    let rows = db
        .query(
            "SELECT calls, total_exec_time, rows,
                    left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
             FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
             ORDER BY total_exec_time DESC LIMIT 8",
            &[],
        )
        .await?;
    let mut text = String::from("postgres statements of the rush, by time:");
    for row in rows {
        let (calls, ms, returned, query): (i64, f64, i64, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        text.push_str(&format!(
            "\n  {ms:8.1} ms {calls:6} calls {returned:6} rows  {query}"
        ));
    }
    Ok(text)
}

/// wrk from a second process: requests per second and the 99th percentile in ms.
fn page_load(wrk: &Path, url: &str) -> Result<(f64, f64)> {
    let out = Command::new(wrk)
        .args(["-t2", "-c64", "-d10s", "--latency", url])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("wrk output:\n{text}"))?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(str::trim)
        .and_then(duration_ms)
        .with_context(|| format!("wrk output:\n{text}"))?;
    Ok((rps, p99))
}

/// wrk prints `812.00us`, `3.41ms` or `1.02s`.
fn duration_ms(v: &str) -> Option<f64> {
    if let Some(us) = v.strip_suffix("us") {
        return us.parse::<f64>().ok().map(|u| u / 1000.0);
    }
    if let Some(ms) = v.strip_suffix("ms") {
        return ms.parse().ok();
    }
    v.strip_suffix('s')?.parse::<f64>().ok().map(|s| s * 1000.0)
}
