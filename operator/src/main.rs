//! `tiqzy-operator`: parse flags, init logging, take the lease, run the controller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use tiqzy_operator::context::Settings;
use tiqzy_operator::lease::{self, LeaseSettings};
use tiqzy_operator::metrics::Metrics;
use tiqzy_operator::{controller, http};

/// Reconciles Tiqzy Tenants into running storefronts. The Kubernetes connection comes from
/// the in-cluster ServiceAccount or KUBECONFIG.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// kubeconfig to use instead of the in-cluster ServiceAccount.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "TIQZY_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect one active replica through a Lease (keep on when running more than one).
    #[arg(long, env = "TIQZY_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// The operator's own namespace: the Lease and the payments service live there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "tiqzy-system")]
    lease_namespace: String,
    /// Seconds a leader's claim lasts without renewal.
    #[arg(long, env = "TIQZY_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// This replica's identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds between looks at a converged tenant.
    #[arg(long, env = "TIQZY_RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
    /// Seconds between checks that a converged tenant's database, role and Redis user still
    /// hold what they should (a change to the Tenant, its Secrets or the Platform checks at
    /// once). Kept apart from the resync: each check opens sessions on both servers, and at a
    /// short resync with many tenants the checks alone would fill every reconcile slot.
    #[arg(long, env = "TIQZY_STORE_CHECK_SECONDS", default_value_t = 300)]
    store_check_seconds: u64,
    /// Tenants reconciled at once (bounds connections to the database server too).
    #[arg(long, env = "TIQZY_CONCURRENCY", default_value_t = 32)]
    concurrency: u16,
    /// Requests to the API server in flight at once, across all reconciles (watches excepted
    /// once they stream).
    #[arg(long, env = "TIQZY_MAX_REQUESTS", default_value_t = 24)]
    max_requests: u16,
    /// Seconds between looks for a new version of a tenant's Key Vault certificate (a Tenant
    /// change looks at once).
    #[arg(long, env = "TIQZY_KEY_VAULT_POLL_SECONDS", default_value_t = 3600)]
    key_vault_poll_seconds: u64,
    /// PEM certificates to trust besides the public roots when connecting to Key Vault and
    /// Entra ID (a private CA, a TLS-inspecting proxy; e.g. OpenShift's injected trusted CA
    /// bundle).
    #[arg(long, env = "TIQZY_EXTRA_CA_FILE")]
    extra_ca_file: Option<std::path::PathBuf>,
    /// `<host>=<ip>`: connect to this Key Vault or Entra ID host at this address instead of
    /// asking DNS (tests; a private endpoint without private DNS). The vault must still be
    /// named for its service and present a certificate valid for the name.
    #[arg(long, env = "TIQZY_KEY_VAULT_RESOLVE", value_delimiter = ',')]
    key_vault_resolve: Vec<String>,
    /// Log format: `json` or `text`; by default JSON unless stderr is a terminal (fields in
    /// docs/logs-and-errors.md).
    #[arg(long, env = "TIQZY_LOG_FORMAT")]
    log_format: Option<String>,
}

/// Built with `--features heap-profile` (benches only): every allocation is recorded.
#[cfg(feature = "heap-profile")]
#[global_allocator]
static HEAP: dhat::Alloc = dhat::Alloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Written when `main` returns (SIGTERM ends the controller): what was live at the peak
    // and at the end, by the call stack that allocated it.
    #[cfg(feature = "heap-profile")]
    let _heap = dhat::Profiler::builder()
        .file_name(
            std::env::var_os("TIQZY_HEAP_PROFILE").unwrap_or_else(|| "dhat-heap.json".into()),
        )
        .build();
    let args = Args::parse();
    // Traces go to the collector OTEL_EXPORTER_OTLP_ENDPOINT names, when it is set.
    let traces = tiqzy_telemetry::otel::Tracing::from_env("tiqzy-operator", &[])
        .map_err(anyhow::Error::msg)?;
    tiqzy_telemetry::logs::init(tiqzy_telemetry::logs::Settings {
        format: tiqzy_telemetry::logs::Format::choose(args.log_format.as_deref())
            .map_err(anyhow::Error::msg)?,
        default_filter: "info,kube=warn",
        tenant: None,
        traces: traces.clone(),
    });
    // Failed reconciles and panics go to Sentry when SENTRY_DSN is set.
    let errors = tiqzy_telemetry::Reporter::from_settings(
        "tiqzy-operator",
        &tiqzy_telemetry::errors::Settings::from_env(),
    )
    .map_err(anyhow::Error::msg)?;
    errors.report_panics_of_process(tiqzy_telemetry::Where::default());
    let transport = tiqzy_operator::external::keyvault::Transport::new(
        args.extra_ca_file.as_deref(),
        &args.key_vault_resolve,
    )
    .map_err(anyhow::Error::msg)?;
    if args.extra_ca_file.is_some() || !args.key_vault_resolve.is_empty() {
        tracing::info!(?transport, "connections to Key Vault and Entra ID");
    }
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("tiqzy-operator-{}", std::process::id()));
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    // The Lease is renewed on a client of its own, so a queue of reconcile requests never
    // delays it.
    let lease_client = kube::Client::try_from(config.clone())?;
    // Every request of a reconcile goes through one limit: each request in flight holds a
    // connection (and its buffers), and the API server is not served faster by more of them.
    let client = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&tower::limit::ConcurrencyLimitLayer::new(usize::from(
            args.max_requests.max(1),
        )))
        // One span per API server request, the child of the reconcile that made it: method
        // and path (the path names an object, never its contents).
        .with_layer(
            &tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<kube::client::Body>| {
                    tracing::info_span!(
                        "kube",
                        otel.name = format!("{} {}", request.method(), request.uri().path()),
                        otel.kind = "client",
                        http.request.method = %request.method(),
                        url.path = request.uri().path(),
                        http.response.status_code = tracing::field::Empty,
                    )
                })
                .on_response(
                    |response: &axum::http::Response<_>, _: Duration, span: &tracing::Span| {
                        span.record("http.response.status_code", response.status().as_u16());
                    },
                ),
        )
        .build();
    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(http::serve(
        args.metrics_addr,
        metrics.clone(),
        ready.clone(),
    ));
    ready.store(true, Ordering::Relaxed);
    if args.leader_elect {
        let settings = LeaseSettings {
            namespace: args.lease_namespace.clone(),
            name: "tiqzy-operator".to_owned(),
            identity: identity.clone(),
            duration: Duration::from_secs(args.lease_seconds),
        };
        lease::acquire(lease_client, settings).await?;
    }
    let settings = Settings {
        resync: Duration::from_secs(args.resync_seconds),
        store_check: Duration::from_secs(args.store_check_seconds),
        instance: identity,
        concurrency: args.concurrency,
        key_vault_poll: Duration::from_secs(args.key_vault_poll_seconds.max(1)),
        key_vault_transport: transport,
        namespace: args.lease_namespace.clone(),
        errors,
    };
    controller::run(client, metrics, settings).await;
    if let Some(traces) = traces {
        traces.shutdown();
    }
    Ok(())
}
