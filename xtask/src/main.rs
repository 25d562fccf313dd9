//! `cargo xtask`: the README's commands.
//!
//! - `up`: build what is missing, start the local platform, keep it running until Ctrl-C.
//! - `test`: every check and test, unit to end-to-end (what `.ci/run` calls).

mod bench;
mod bench_backup;
mod bench_dr;
mod bench_floor;
mod bench_heap;
mod bench_latency;
mod bench_mail;
mod bench_payments;
mod bench_runtime;
mod bench_storefront;
mod bench_writes;
mod bundle;
mod sqlx;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tiqzy_e2e::{LiveOptions, LivePlatform, RouterPorts};

#[derive(Debug, Parser)]
#[command(about = "Tiqzy's development commands")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Start a complete local platform and keep it running until Ctrl-C.
    Up,
    /// Run every check and test: formatting, clippy, unit, integration and end-to-end.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Benchmarks that print figures (never pass/fail).
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
    /// Regenerate committed files from their sources.
    Gen {
        #[arg(value_enum)]
        what: Generated,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Apply many tenants at once; print time to all Ready, peak RSS, writes per tenant and
    /// idle writes.
    ///
    /// Last line: `operator-bench tenants= ready_s= [floor_s= ratio=] rss_peak_mib=
    /// idle_writes= writes_per_tenant=`, after `operator-writes` (writes per tenant by kind,
    /// from the API server's request counters and the operator's Events) and
    /// `operator-write-kib` (KiB per tenant by kind). Each run starts its own platform (API
    /// server, etcd, controllers, kwok, PostgreSQL, Redis) and removes it afterwards.
    Operator {
        #[arg(long, default_value_t = 1000)]
        tenants: usize,
        /// The operator's resync period; idle writes are counted over two of them.
        #[arg(long, default_value_t = 300)]
        resync_seconds: u64,
        /// Leave PostgreSQL and Redis out of the Platform, to see what provisioning costs.
        #[arg(long)]
        without_stores: bool,
        /// Then measure the machine's floor on a fresh platform: the same objects (the
        /// operator's own builders), databases, roles and Redis users for the same tenants,
        /// written directly with the operator's field manager, ServiceAccount, request limit
        /// and concurrency, without reconcile logic. Prints `operator-floor tenants=
        /// floor_s=` and adds `floor_s` and `ratio` (ready_s / floor_s) to the last line.
        #[arg(long)]
        floor: bool,
        /// Instead (after the run, with --floor): on an idle platform, apply 50 tenants one
        /// after another, each timed from apply to Ready. Prints `operator-latency tenants=50
        /// p50_ms= p99_ms=`.
        #[arg(long)]
        single: bool,
        /// Build the operator with its `heap-profile` feature (dhat; every allocation is
        /// recorded, so it runs slower), write the profile to this file when the bulk run
        /// ends, and print where the live memory at the peak and at the end was allocated
        /// (`heap-profile`, `heap-peak`, `heap-end` lines).
        #[arg(long, value_name = "FILE")]
        heap_profile: Option<std::path::PathBuf>,
        /// An environment variable for the operator only (repeatable), to compare settings
        /// such as `MALLOC_ARENA_MAX=2` on the same build.
        #[arg(long, value_name = "NAME=VALUE", value_parser = name_value)]
        operator_env: Vec<(String, String)>,
    },
    /// An on-sale rush (2,000 buyers, 500 tickets) and the cached event page under wrk.
    Runtime {
        /// Trace every request to a Jaeger started for the run (OTLP/HTTP, every trace
        /// kept), to see what tracing costs against a run without.
        #[arg(long)]
        traces: bool,
    },
    /// The mail outbox of the release runtime sending to Mailpit: messages per second,
    /// duplicates and losses.
    Mail {
        #[arg(long, default_value_t = 2_000)]
        messages: usize,
    },
    /// Signed Stripe events through the release payments service to storefront receivers:
    /// events accepted per second, p99 from posted to delivered, duplicates, lost.
    Payments {
        #[arg(long, default_value_t = 100)]
        tenants: usize,
        #[arg(long, default_value_t = 10_000)]
        events: usize,
    },
    /// On the live platform (real node, Traefik): apply tenants one by one and time each from
    /// `kubectl apply` to its first page through the router; print the median.
    Storefronts {
        #[arg(long, default_value_t = 10)]
        tenants: usize,
    },
    /// Disaster recovery (docs/disaster-recovery.md): wipe etcd under N Ready tenants,
    /// restore from the saved manifests; print the time until all are Ready again.
    Dr {
        #[arg(long, default_value_t = 50)]
        tenants: usize,
    },
    /// A tenant with this many sold tickets backed up by the release operator to azurite and
    /// restored into a new tenant: backup and restore time, backup size.
    Backup {
        #[arg(long, default_value_t = 100_000)]
        tickets: u32,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Generated {
    /// `crds/*.yaml` from the Rust types in `crds/src`.
    Crds,
    /// `tenant-runtime/.sqlx/` and `payments/.sqlx/` from each crate's queries and migrations.
    Sqlx,
    /// `bundle/` and `bundle.Containerfile` (OLM, OperatorHub) from `config/` and `crds/`.
    Bundle,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Up => up(),
        Task::Test { args } => test(&args),
        Task::Gen { what } => generate(what),
        Task::Bench { what } => in_release().and_then(|()| bench(what)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn prepare() -> Result<tiqzy_e2e::Binaries> {
    tiqzy_e2e::ensure_system_packages()?;
    tiqzy_e2e::ensure_binaries()
}

/// fmt, clippy, the `.sqlx` check, then `cargo test`. On a fresh machine most of the time goes
/// into first builds: the Go programs (and the previous release's operator) build on a thread
/// of their own alongside clippy and the Rust test build, sqlx-cli installs alongside clippy,
/// and every first build is done before the first test starts, so no test's time limit pays for
/// one.
fn test(args: &[String]) -> Result<()> {
    tiqzy_e2e::ensure_system_packages()?;
    cargo(&["fmt", "--all", "--", "--check"])?;
    let first_builds = std::thread::spawn(tiqzy_e2e::ensure_everything);
    let sqlx_cli = std::thread::spawn(sqlx::ensure_sqlx_cli);
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    joined(sqlx_cli, "installing sqlx-cli")?;
    eprintln!("xtask: checking tenant-runtime/.sqlx and payments/.sqlx against their queries");
    sqlx::prepare(true)?;
    // The build's arguments are the test run's up to `--` (what follows goes to the tests).
    let build_args: Vec<&str> = std::iter::once("--workspace")
        .chain(
            args.iter()
                .map(String::as_str)
                .take_while(|arg| *arg != "--"),
        )
        .collect();
    let mut build = vec!["test", "--no-run"];
    build.extend(&build_args);
    cargo(&build)?;
    eprintln!("xtask: waiting for the first builds of the Go components to finish");
    joined(first_builds, "building the Go components")?;
    let mut test = vec!["test", "--workspace", "--no-fail-fast"];
    test.extend(args.iter().map(String::as_str));
    // Tests that run the operator or the runtime find them built by the build above.
    eprintln!("xtask: cargo {}", test.join(" "));
    let status = tiqzy_e2e::cargo_command()
        .args(&test)
        .env(tiqzy_e2e::TEST_BUILD_ENV, build_args.join(" "))
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", test.join(" "));
    }
    Ok(())
}

/// The result of the work on `thread`, which does `what`.
fn joined<T>(thread: std::thread::JoinHandle<Result<T>>, what: &str) -> Result<T> {
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("{what}: the thread panicked"))?
        .with_context(|| what.to_owned())
}

/// The release build of this tool and of the operator, in one invocation: built apart, their
/// features unify differently and the operator's library compiled twice (4 min 24 s measured).
/// `bench operator` asks for the same, so after this it builds nothing.
const RELEASE_BUILD: [&str; 6] = [
    "build",
    "--release",
    "--package",
    "xtask",
    "--package",
    "tiqzy-operator",
];

/// Benchmarks measure the programs under test, not the load sent at them: a debug build of
/// this tool (what `cargo xtask` runs) spends more CPU sending an on-sale rush than the
/// runtime spends answering it, on the same two cores. So a debug build builds this tool in
/// release and hands over to it (once; the release build goes on).
fn in_release() -> Result<()> {
    if !cfg!(debug_assertions) {
        return Ok(());
    }
    cargo(&RELEASE_BUILD)?;
    let release = tiqzy_e2e::target_dir().join("release/xtask");
    let failed = std::os::unix::process::CommandExt::exec(
        std::process::Command::new(&release).args(std::env::args_os().skip(1)),
    );
    Err(failed).with_context(|| format!("running {}", release.display()))
}

/// `NAME=VALUE`, as `--operator-env` takes it.
fn name_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

fn bench(what: Bench) -> Result<()> {
    prepare()?;
    match what {
        Bench::Operator {
            tenants,
            resync_seconds,
            without_stores,
            floor,
            single,
            heap_profile,
            operator_env,
        } => {
            let mut build = RELEASE_BUILD.to_vec();
            if heap_profile.is_some() {
                build.extend(["--features", "tiqzy-operator/heap-profile"]);
            }
            cargo(&build)?;
            let binary = tiqzy_e2e::target_dir().join("release/tiqzy-operator");
            let heap_profile = heap_profile
                .map(|f| std::path::absolute(&f))
                .transpose()
                .context("the heap profile's path")?;
            let options = bench::Options {
                tenants,
                resync_seconds,
                with_stores: !without_stores,
                floor,
                single,
                heap_profile,
                operator_env,
            };
            current_thread()?.block_on(bench::operator(&options, &binary))
        }
        Bench::Runtime { traces } => bench_runtime::run(traces),
        Bench::Mail { messages } => bench_mail::run(messages),
        Bench::Payments { tenants, events } => {
            cargo(&["build", "--release", "--package", "tiqzy-payments"])?;
            let binary = tiqzy_e2e::target_dir().join("release/tiqzy-payments");
            bench_payments::run(tenants, events, &binary)
        }
        Bench::Storefronts { tenants } => {
            let operator = tiqzy_e2e::build_operator_binary()?;
            current_thread()?.block_on(bench_storefront::storefronts(tenants, operator))
        }
        Bench::Dr { tenants } => {
            let operator = tiqzy_e2e::build_operator_binary()?;
            current_thread()?.block_on(bench_dr::dr(tenants, &operator))
        }
        Bench::Backup { tickets } => {
            cargo(&["build", "--release", "--package", "tiqzy-operator"])?;
            let binary = tiqzy_e2e::target_dir().join("release/tiqzy-operator");
            current_thread()?.block_on(bench_backup::backup(tickets, &binary))
        }
    }
}

/// A runtime on the calling thread: the platform's processes die with the thread that
/// started them.
fn current_thread() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn generate(what: Generated) -> Result<()> {
    match what {
        Generated::Crds => {
            let dir = workspace_root().join("crds");
            for (file, yaml) in tiqzy_crds::crd_files() {
                std::fs::write(dir.join(&file), yaml)?;
                eprintln!("xtask: wrote crds/{file}");
            }
        }
        Generated::Sqlx => sqlx::prepare(false)?,
        Generated::Bundle => bundle::write(&workspace_root())?,
    }
    Ok(())
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn cargo(args: &[&str]) -> Result<()> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = tiqzy_e2e::cargo_command()
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args[0]))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn up() -> Result<()> {
    let started = std::time::Instant::now();
    timed(
        "system packages and the Go components (built once, then cached)",
        prepare,
    )?;
    let operator = timed(
        "cargo build -p tiqzy-operator -p tiqzy-runtime -p tiqzy-payments",
        tiqzy_e2e::build_operator_binary,
    )?;
    current_thread()?.block_on(async {
        let live = LivePlatform::start(&LiveOptions {
            operator,
            ports: RouterPorts::Standard,
        })
        .await?;
        print_welcome(&live, started.elapsed());
        let _ = live
            .platform
            .harness
            .kube
            .kubectl()
            .args(["get", "tenants"])
            .status();
        // Ctrl-C, or the terminal closing, or `kill`/`timeout`: every one stops the processes.
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted?,
            _ = terminate.recv() => {}
            _ = hangup.recv() => {}
        }
        eprintln!("\nxtask: stopping the platform and cleaning up the host");
        drop(live);
        Ok(())
    })
}

/// Runs a long step, saying what it is and how long it took.
fn timed<T>(what: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("xtask: {what} ...");
    let started = std::time::Instant::now();
    let result = work();
    let outcome = if result.is_ok() { "done" } else { "failed" };
    eprintln!("xtask: {what}: {outcome} in {:.1?}", started.elapsed());
    result
}

fn print_welcome(live: &LivePlatform, took: std::time::Duration) {
    let h = &live.platform.harness;
    let kubectl = h.kube.kubectl.display();
    let kubeconfig = h.kube.kubeconfig.display();
    let ca = live.ca_path.display();
    let local = live.url.trim_end_matches('/');
    let port = live.router.https_port;
    let resolve = if port == 443 {
        String::new()
    } else {
        format!(" --resolve {}:{port}:127.0.0.1", live.host)
    };
    println!(
        "Tiqzy is up (in {took:.0?}).

  Storefront       {url}
  Demo event       {local}/events/{event}
  CA certificate   {ca}
                   curl --cacert {ca}{resolve} {url}
                   A browser warns about the certificate unless it trusts this CA (it was
                   made for this run); accept the warning, or import the CA, to continue.
  Admin API        {local}/api/admin/... (the storefront's own; staff tokens come from a
                   local issuer the pods trust through the Platform's caSecretRef)
  Staff token      {token}
                   valid 12 hours, permission admin; for example:
                   curl --cacert {ca}{resolve} -H 'Authorization: Bearer {token}' {local}/api/admin/events/{event}/sales

  Kubernetes API   {server}
  kubeconfig       {kubeconfig}
  kubectl          {kubectl}
  logs             {logs}
  operator         running as ServiceAccount tiqzy-system/tiqzy-operator (config/rbac)
  storefront pods  on the real node {node} (containerd, runc), bridge {bridge}
  services         routed by kube-proxy, named by CoreDNS ({dns}, a pod in kube-system)
  payments         tiqzy-payments (2 pods in tiqzy-system) holds the Stripe key and calls
                   stripe-mock at {stripe}; checkout sends buyers to stripe-mock's
                   checkout.stripe.com address, which is not served here
  Stripe webhooks  {webhook}
                   (Traefik's default certificate), signed with the secret in the Secret
                   tiqzy-system/stripe (key webhookSecret)
  router           Traefik, HTTPS on 127.0.0.1:{port}, HTTP on 127.0.0.1:{http_port} (redirects)
  mail             Mailpit {mail}: every mail the storefront sends (order links, tickets,
                   sign-in links), over SMTP at {smtp_host}:{smtp_port}
  traces           Jaeger {jaeger}: its query API (/api/services, /api/traces?service=...;
                   the web UI is not part of Jaeger's Go module, so that page is a placeholder);
                   OTLP/HTTP {otlp_http}, OTLP/gRPC {otlp_grpc}; the operator, the storefront
                   and the payments service send it their traces (services tiqzy-operator,
                   tiqzy-runtime, tiqzy-payments)

Try:
  export KUBECONFIG={kubeconfig}
  {kubectl} get tenants
  {kubectl} describe tenant {tenant}
  {kubectl} -n tiqzy-{tenant} get pods -o wide

Ctrl-C stops everything and cleans up the host.",
        url = live.url,
        event = tiqzy_e2e::DEMO_EVENT,
        token = live.staff_token,
        server = h.kube.server,
        logs = h.log_dir().display(),
        node = tiqzy_e2e::REAL_NODE_NAME,
        bridge = tiqzy_e2e::BRIDGE,
        dns = tiqzy_e2e::CLUSTER_DNS,
        stripe = h.stripe.url,
        webhook = live.webhook_url,
        http_port = live.router.http_port,
        mail = live.mail.url,
        smtp_host = live.mail.smtp_host,
        smtp_port = live.mail.smtp_port,
        jaeger = live.traces.ui_url(),
        otlp_http = live.traces.otlp_http_endpoint(),
        otlp_grpc = live.traces.otlp_grpc_endpoint(),
        tenant = tiqzy_e2e::LIVE_TENANT,
    );
}
