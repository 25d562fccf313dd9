//! The local platform Tiqzy is tested against: the real upstream programs, built or installed
//! from package registries, started as processes on loopback with their data under `target/`.
//!
//! Tests call [`Harness::shared`] (one platform per test binary, stopped when the binary
//! exits); `cargo xtask up` calls [`Harness::start`] and drops it on Ctrl-C.
//!
//! Components some tests need start on demand, once per test binary, in the same way:
//! [`Mailpit::shared`] receives the storefront's mail, [`Jaeger::shared`] the operator's and
//! the storefront's traces (OTLP), which tests then find by service and attribute through
//! Jaeger's query API ([`Jaeger::traces`], [`Jaeger::wait_for`]).

pub mod azurite;
pub mod browser;
mod cargo;
mod components;
mod controlplane;
mod crds;
mod datastores;
pub mod disaster;
mod entra;
pub mod jaeger;
mod keyvault;
mod kube_router;
pub mod kwok_stages;
mod live;
pub mod mailpit;
pub mod monitoring;
mod netns;
mod node;
mod node_services;
mod npm;
pub mod olm;
mod openshift;
mod operator;
pub mod payments;
mod pki;
mod pod_network;
mod ports;
mod process;
mod prometheus;
pub mod release;
mod router;
mod staff;
mod stripe;
mod system;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};

pub use azurite::Azurite;
pub use cargo::{TEST_BUILD_ENV, build_programs, cargo_command};
pub use components::{
    Binaries, cache_dir, ensure_binaries, ensure_coredns, ensure_everything, ensure_jaeger,
    ensure_keyvault, ensure_kube_router, ensure_mailpit, ensure_promtool, ensure_traefik,
    go_module_dir,
};
pub use controlplane::ControlPlane;
pub use controlplane::NODE_NAME;
pub use crds::{install_crd, install_tiqzy_crds};
pub use datastores::{POSTGRES_TLS_ONLY_ROLE, Postgres, Redis};
pub use entra::EntraIssuer;
pub use jaeger::Jaeger;
pub use keyvault::{KeyVaultServer, VAULT_HOST, VaultCertificates};
pub use live::{
    DEMO_EVENT, DEMO_EVENT_TITLE, DEMO_TICKET_TYPES, LIVE_BASE_DOMAIN, LIVE_TENANT, LiveOptions,
    LivePlatform, build_operator_binary, step,
};
pub use mailpit::Mailpit;
pub use netns::PodBackend;
pub use node::{
    BRIDGE, CNI_PLUGINS_VERSION, CONTAINERD_VERSION, GATEWAY, NodeBinaries, PAUSE_IMAGE,
    POD_SUBNET, REAL_NODE_LABEL, REAL_NODE_NAME, RUNTIME_REPOSITORY, RealNode, RealNodeHarness,
    RuntimeBinaries, build_runtime_binaries, ensure_node_binaries,
};
pub use node_services::{CLUSTER_DNS, CLUSTER_DOMAIN};
pub use npm::{npm_package, npm_package_with_script};
pub use openshift::{OPENSHIFT_API_VERSION, install_route_crd, route_crd};
pub use operator::{
    BASE_DOMAIN, Manifests, OperatorProcess, STRIPE_TEST_KEY, STRIPE_WEBHOOK_SECRET,
    install_operator, install_tiqzy, install_tiqzy_from, install_tiqzy_without_platform,
};
pub use pod_network::{connect_from, resolve_from};
pub use ports::free_port;
pub use process::Service;
pub use prometheus::{
    PROMETHEUS_OPERATOR_VERSION, install_prometheus_operator_crds, prometheus_operator_crds, sample,
};
pub use release::{Release, previous_release};
pub use router::{INGRESS_CLASS, ROUTER_HOSTNAME, RouterPorts, Traefik, install_account};
pub use staff::StaffIssuer;
pub use stripe::{StripeMock, order_state, signed_event};
pub use system::ensure_system_packages;

/// A running local platform. Dropping it stops every process it started.
#[derive(Debug)]
pub struct Harness {
    /// This run's directory: data, logs, certificates and the kubeconfig live here.
    pub dir: PathBuf,
    pub kube: ControlPlane,
    pub postgres: Postgres,
    pub redis: Redis,
    pub stripe: StripeMock,
}

impl Harness {
    /// Builds what is missing and starts every component, each on a free loopback port.
    pub async fn start() -> Result<Self> {
        ensure_system_packages()?;
        let bins = tokio::task::spawn_blocking(ensure_binaries)
            .await
            .context("building the Go components")??;
        Self::start_with(&bins, new_run_dir()?, None).await
    }

    /// Starts every component in `dir`; `pods = Some((gateway, subnet))` has PostgreSQL and
    /// Redis also serve a real node's pods, and stripe-mock listen on the gateway (see
    /// [`RealNodeHarness`]).
    pub(crate) async fn start_with(
        bins: &Binaries,
        dir: PathBuf,
        pods: Option<(&str, &str)>,
    ) -> Result<Self> {
        let (kube, postgres, redis, stripe) = tokio::try_join!(
            ControlPlane::start_on(bins, &dir, pods.map(|(gateway, _)| gateway)),
            Postgres::start_with_pods(&dir, pods),
            Redis::start_with_pods(&dir, pods),
            StripeMock::start(bins, &dir, pods.map_or("127.0.0.1", |(gateway, _)| gateway)),
        )?;
        Ok(Self {
            dir,
            kube,
            postgres,
            redis,
            stripe,
        })
    }

    /// The platform shared by every test of this test binary, started on first use.
    ///
    /// Its processes are started from a thread that lives as long as the binary and are
    /// marked to die with it, so nothing outlives the test run, also on panic or abort.
    pub fn shared() -> &'static Harness {
        static SHARED: OnceLock<Result<Harness, String>> = OnceLock::new();
        let started = SHARED.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("tiqzy-harness".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a tokio runtime for the harness");
                    let started = runtime.block_on(Harness::start());
                    let _ = tx.send(started);
                    // Children die with the thread that spawned them (PR_SET_PDEATHSIG):
                    // keep this one alive until the process exits.
                    loop {
                        std::thread::park();
                    }
                })
                .expect("spawning the harness thread");
            rx.recv()
                .expect("the harness thread reports")
                .map_err(|e| format!("{e:#}"))
        });
        match started {
            Ok(harness) => harness,
            Err(e) => panic!("the local platform did not start: {e}"),
        }
    }

    /// Where this run's logs are.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
}

/// The workspace's `target/` directory (or `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

/// What `cell` holds once `start` has run, the first time anyone asks, on a thread with a
/// runtime of its own, so what it starts belongs to no test's runtime and lives as long as
/// the test binary. Panics, naming `what`, when it failed (every later caller too).
pub(crate) fn once_per_binary<T, F, Fut>(
    cell: &'static OnceLock<Result<T, String>>,
    what: &str,
    start: F,
) -> &'static T
where
    T: Send + Sync + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    let started = cell.get_or_init(|| {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(start()).map_err(|e| format!("{e:#}"))
        })
        .join()
        .unwrap_or_else(|_| Err("its starter panicked".to_owned()))
    });
    match started {
        Ok(value) => value,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

/// Creates `target/e2e/run-<pid>-<n>` after removing the directories of runs whose process
/// is gone.
pub(crate) fn new_run_dir() -> Result<PathBuf> {
    let root = target_dir().join("e2e");
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    for entry in std::fs::read_dir(&root)?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|n| n.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    // Several platforms may run in one process (a test starting a second one).
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = root.join(format!("run-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("logs"))?;
    Ok(std::fs::canonicalize(dir)?)
}
