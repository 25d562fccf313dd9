//! `cargo xtask`: the README's commands.
//!
//! - `up`: build what is missing, start the local platform, keep it running until Ctrl-C.
//! - `test`: every check and test, unit to end-to-end (what `.ci/run` calls).

mod bench;
mod bench_runtime;
mod bundle;
mod sqlx;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tiqzy_e2e::Harness;

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
    /// Apply many tenants at once; print time to all Ready, peak RSS and idle writes.
    Operator {
        #[arg(long, default_value_t = 1000)]
        tenants: usize,
        /// The operator's resync period; idle writes are counted over two of them.
        #[arg(long, default_value_t = 300)]
        resync_seconds: u64,
        /// Leave PostgreSQL and Redis out of the Platform, to see what provisioning costs.
        #[arg(long)]
        without_stores: bool,
    },
    /// An on-sale rush (2,000 buyers, 500 tickets) and the cached event page under wrk.
    Runtime,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Generated {
    /// `crds/*.yaml` from the Rust types in `crds/src`.
    Crds,
    /// `tenant-runtime/.sqlx/` from the runtime's queries and migrations.
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
        Task::Bench { what } => bench(what),
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

fn test(args: &[String]) -> Result<()> {
    prepare()?;
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    eprintln!("xtask: checking tenant-runtime/.sqlx against the runtime's queries");
    sqlx::prepare(true)?;
    let mut test = vec!["test", "--workspace", "--no-fail-fast"];
    test.extend(args.iter().map(String::as_str));
    cargo(&test)
}

fn bench(what: Bench) -> Result<()> {
    prepare()?;
    match what {
        Bench::Operator {
            tenants,
            resync_seconds,
            without_stores,
        } => {
            cargo(&["build", "--release", "--package", "tiqzy-operator"])?;
            let binary = tiqzy_e2e::target_dir().join("release/tiqzy-operator");
            current_thread()?.block_on(bench::operator(
                tenants,
                resync_seconds,
                !without_stores,
                &binary,
            ))
        }
        Bench::Runtime => bench_runtime::run(),
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
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args[0]))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn up() -> Result<()> {
    prepare()?;
    let runtime = current_thread()?;
    cargo(&["build", "--package", "tiqzy-operator"])?;
    let operator_binary = tiqzy_e2e::target_dir().join("debug/tiqzy-operator");
    runtime.block_on(async {
        let started = std::time::Instant::now();
        let harness = Harness::start().await?;
        let _operator = tiqzy_e2e::install_operator(&harness, &operator_binary, 300).await?;
        let sample = workspace_root().join("config/samples/tenant.yaml");
        let applied = harness
            .kube
            .kubectl()
            .arg("apply")
            .arg("-f")
            .arg(&sample)
            .status()?;
        if !applied.success() {
            bail!("kubectl apply -f {} failed", sample.display());
        }
        wait_for_sample(&harness).await;
        print_welcome(&harness, started.elapsed());
        let _ = harness.kube.kubectl().args(["get", "tenants"]).status();
        // Ctrl-C, or the terminal closing, or `kill`/`timeout`: every one stops the processes.
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted?,
            _ = terminate.recv() => {}
            _ = hangup.recv() => {}
        }
        eprintln!("\nxtask: stopping the platform");
        drop(harness);
        Ok(())
    })
}

/// Waits (up to a minute) for the sample tenant to be Ready, so the printed table shows it.
async fn wait_for_sample(h: &Harness) {
    for _ in 0..120 {
        let out = h
            .kube
            .kubectl()
            .args([
                "get",
                "tenant",
                "acme-arena",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .output();
        if out.is_ok_and(|o| o.stdout == b"True") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

fn print_welcome(h: &Harness, took: std::time::Duration) {
    let kubectl = h.kube.kubectl.display();
    let kubeconfig = h.kube.kubeconfig.display();
    println!(
        "Tiqzy local platform is up (started in {took:.1?}).

  Kubernetes API   {server}
  kubeconfig       {kubeconfig}
  kubectl          {kubectl}
  PostgreSQL       {pg}
  Redis            {redis}
  Redis over TLS   {redis_tls} (CA {redis_ca})
  stripe-mock      {stripe}
  logs             {logs}
  operator         running as ServiceAccount tiqzy-system/tiqzy-operator (config/rbac)

Try:
  export KUBECONFIG={kubeconfig}
  {kubectl} get nodes
  {kubectl} get tenants
  {kubectl} describe tenant acme-arena

Ctrl-C stops everything.",
        server = h.kube.server,
        pg = h.postgres.admin_url("postgres"),
        redis = h.redis.admin_url(),
        redis_tls = h.redis.admin_tls_url(),
        redis_ca = h.redis.ca_file.display(),
        stripe = h.stripe.url,
        logs = h.log_dir().display(),
    );
}
