//! A real node, on request: containerd, runc and the CNI bridge plugin running pods for the
//! kubelet from the harness's own Kubernetes build, registered with the harness's API server.
//!
//! kwok keeps managing only its own fake node (annotation `kwok.x-k8s.io/node=fake`); while a
//! real node runs, that fake node is cordoned, so the scheduler puts every new pod here and the
//! operator's pod spec stays exactly as shipped. Tests that want real pods use
//! [`RealNodeHarness`] in a test binary of their own.
//!
//! Pods sit on the bridge [`BRIDGE`] (`10.77.0.0/16`) and reach the host through its gateway
//! [`GATEWAY`], where the harness's PostgreSQL listens too. One real node per machine: a lock
//! file serialises them.
//!
//! kube-router's firewall enforces NetworkPolicies on the node ([`crate::kube_router`]); pod
//! to pod traffic crosses the bridge, so the node needs `bridge-nf-call-iptables` on.
//! kube-proxy routes Services and CoreDNS answers their names ([`crate::node_services`]); the
//! API server listens on the gateway too, behind the `kubernetes` Service, so pods use
//! `*.svc` names and in-cluster clients as on any cluster.
//!
//! Host state is removed by a cleanup script that outlives nothing: it is started with a
//! parent-death signal, so it runs when the node is dropped *and* when the test process ends
//! any other way (the shared harness is never dropped). It kills the pods' processes (the
//! `kubepods` cgroups) and the runc shims, unmounts everything under the node's directory,
//! removes the `kubepods` cgroups, the iptables rules and chains created since the node
//! started (`CNI-*`, `KUBE-*`, and rules naming the network) and kube-router's chains and
//! ipsets, the bridge, the CNI result files, the host directories the kubelet and containerd
//! created, and restores `ip_forward` and `bridge-nf-call-iptables`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::components::{Binaries, Fnv, cache_dir, cached_or_build_as, go_module_dir, go_version};
use crate::process::Service;
use crate::{Harness, NODE_NAME};

pub const CONTAINERD_VERSION: &str = "v2.4.2";
pub const CNI_PLUGINS_VERSION: &str = "v1.10.0";
/// The real node's name.
pub const REAL_NODE_NAME: &str = "tiqzy-real-node-0";
/// Label the real node carries (`tiqzy.io/e2e-node=real`).
pub const REAL_NODE_LABEL: (&str, &str) = ("tiqzy.io/e2e-node", "real");
/// The pods' bridge; also the CNI network's name.
pub const BRIDGE: &str = "tiqzy-e2e0";
pub const POD_SUBNET: &str = "10.77.0.0/16";
/// The host's address on the bridge: the node IP, and where pods reach host services.
pub const GATEWAY: &str = "10.77.0.1";
/// The sandbox ("pause") image, built from the Kubernetes module's `pause.c`.
pub const PAUSE_IMAGE: &str = "tiqzy.local/pause:e2e";
/// Repository of the runtime image [`RealNode::import_runtime_image`] imports (the
/// storefront's `tiqzy-runtime` and the payments service's `tiqzy-payments`, as the
/// Containerfile ships them).
pub const RUNTIME_REPOSITORY: &str = "tiqzy.local/tiqzy/runtime";
const CNI_NETWORK: &str = "tiqzy-e2e";
const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
/// Host paths the kubelet, containerd and libcni create whatever their configuration says;
/// removed at cleanup when they did not exist before.
const HOST_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/lib/kubelet/device-plugins",
    "/var/lib/kubelet/pod-resources",
    "/var/lib/kubelet/plugins",
    "/var/lib/kubelet/plugins_registry",
    "/run/containerd",
    "/run/containerd/s",
    "/var/lib/cni",
    "/var/lib/cni/results",
    "/var/run/netns",
    "/opt/cni",
    "/etc/cni",
];

/// The node's programs: containerd, its runc shim and ctr; the CNI plugins; runc; kube-router;
/// CoreDNS.
#[derive(Debug, Clone)]
pub struct NodeBinaries {
    pub containerd: PathBuf,
    pub shim: PathBuf,
    pub ctr: PathBuf,
    /// Directory of `bridge`, `host-local`, `loopback`, `portmap`.
    pub cni_dir: PathBuf,
    pub runc: PathBuf,
    /// The NetworkPolicy enforcer (firewall only).
    pub kube_router: PathBuf,
    /// The cluster DNS server, run as a pod of the node.
    pub coredns: PathBuf,
}

/// Builds (first run only) containerd, the CNI plugins, kube-router and CoreDNS from their modules;
/// runc, iptables, ipset and conntrack come from Debian.
pub fn ensure_node_binaries() -> Result<NodeBinaries> {
    crate::system::ensure_packages(&[
        ("runc", "/usr/sbin/runc"),
        ("iptables", "iptables"),
        // kube-router keeps the pods a policy selects in ipsets.
        ("ipset", "ipset"),
        ("conntrack", "conntrack"),
    ])?;
    let go = go_version()?;
    let bin = cache_dir().join("bin");
    std::fs::create_dir_all(&bin)?;
    let module = "github.com/containerd/containerd/v2";
    let ldflags = format!("-X {module}/version.Version={CONTAINERD_VERSION}");
    let containerd_dir = install_packages(
        &bin,
        "containerd",
        "containerd",
        &["cmd/containerd", "cmd/containerd-shim-runc-v2", "cmd/ctr"]
            .map(|p| format!("{module}/{p}")),
        CONTAINERD_VERSION,
        &ldflags,
        &go,
    )?;
    let plugins = "github.com/containernetworking/plugins/plugins";
    let cni_dir = install_packages(
        &bin,
        "cni-plugins",
        "bridge",
        &[
            "main/bridge",
            "ipam/host-local",
            "main/loopback",
            "meta/portmap",
        ]
        .map(|p| format!("{plugins}/{p}")),
        CNI_PLUGINS_VERSION,
        "",
        &go,
    )?;
    Ok(NodeBinaries {
        containerd: containerd_dir.join("containerd"),
        shim: containerd_dir.join("containerd-shim-runc-v2"),
        ctr: containerd_dir.join("ctr"),
        cni_dir,
        runc: PathBuf::from("/usr/sbin/runc"),
        kube_router: crate::components::ensure_kube_router()?,
        coredns: crate::components::ensure_coredns()?,
    })
}

/// `go install <packages>@<version>` of one module into one cached directory.
fn install_packages(
    bin: &Path,
    label: &str,
    first: &str,
    packages: &[String],
    version: &str,
    ldflags: &str,
    go: &str,
) -> Result<PathBuf> {
    let mut key = Fnv::new();
    key.write(go.as_bytes());
    key.write(ldflags.as_bytes());
    for package in packages {
        key.write(package.as_bytes());
    }
    let target = bin.join(format!("{label}-{version}-{:016x}", key.finish()));
    let program = cached_or_build_as(&target, label, first, |out| {
        let mut cmd = Command::new("go");
        cmd.args(["install", "-trimpath", "-ldflags", ldflags])
            .args(packages.iter().map(|p| format!("{p}@{version}")))
            .env("GOBIN", out)
            // Outside any go.mod: the module's own go.mod decides.
            .current_dir(std::env::temp_dir());
        cmd
    })?;
    Ok(program.parent().context("build directory")?.to_owned())
}

/// The harness with a real node beside kwok's fake one. Field order is drop order: the node
/// goes before the control plane and PostgreSQL it uses.
#[derive(Debug)]
pub struct RealNodeHarness {
    pub node: RealNode,
    pub harness: Harness,
}

impl RealNodeHarness {
    /// Builds what is missing, creates the pod bridge, starts the harness (PostgreSQL also
    /// listening on the bridge gateway), then containerd and the kubelet.
    pub async fn start() -> Result<Self> {
        crate::ensure_system_packages()?;
        let (bins, node_bins) = tokio::task::spawn_blocking(|| {
            Ok::<_, anyhow::Error>((crate::ensure_binaries()?, ensure_node_binaries()?))
        })
        .await
        .context("building the Go components")??;
        let dir = crate::new_run_dir()?;
        let host = HostState::prepare(&dir.join("node"), &node_bins, &bins.kube)?;
        let harness = Harness::start_with(&bins, dir, Some((GATEWAY, POD_SUBNET))).await?;
        let node = RealNode::start(&node_bins, &bins, &harness, host).await?;
        Ok(Self { node, harness })
    }

    /// One per test binary, like [`Harness::shared`]: its processes die with the binary and
    /// the cleanup script then removes the node's host state.
    pub fn shared() -> &'static RealNodeHarness {
        static SHARED: OnceLock<Result<RealNodeHarness, String>> = OnceLock::new();
        let started = SHARED.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("tiqzy-real-node".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a tokio runtime for the harness");
                    let started = runtime.block_on(RealNodeHarness::start());
                    let _ = tx.send(started);
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
            Err(e) => panic!("the local platform with a real node did not start: {e}"),
        }
    }
}

/// containerd and the kubelet, and the script that cleans up after them.
#[derive(Debug)]
pub struct RealNode {
    pub name: String,
    /// containerd's socket, for `ctr --address`.
    pub socket: PathBuf,
    dir: PathBuf,
    ctr: PathBuf,
    // Drop order: kube-router, kube-proxy, kubelet, containerd, then the cleanup.
    kube_router: Service,
    kube_proxy: Service,
    kubelet: Service,
    containerd: Service,
    // Held for its Drop: the cleanup.
    _host: HostState,
}

impl RealNode {
    async fn start(
        nb: &NodeBinaries,
        bins: &Binaries,
        h: &Harness,
        host: HostState,
    ) -> Result<Self> {
        let dir = host.dir.clone();
        let logs = h.log_dir();
        let socket = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        std::fs::write(&config, containerd_config(&dir, nb))?;
        std::fs::write(dir.join("cni/net.d/10-tiqzy.conflist"), cni_config(&dir))?;
        let mut containerd = Service::spawn(
            "containerd",
            &nb.containerd,
            [format!("--config={}", config.display())],
            &logs,
            None,
        )?;
        host.record_pid("containerd", containerd.pid())?;
        let ctr_ready = || async {
            let out = ctr(&nb.ctr, &socket).arg("version").output()?;
            if out.status.success() {
                Ok(())
            } else {
                bail!("{}", String::from_utf8_lossy(&out.stderr))
            }
        };
        containerd
            .wait_ready(Duration::from_secs(30), ctr_ready)
            .await?;

        let pause = pause_image(&dir.join("images"))?;
        import_image(&nb.ctr, &socket, &pause)?;

        let kubelet_config = dir.join("kubelet.yaml");
        std::fs::write(&kubelet_config, kubelet_config_text(&dir, &socket)?)?;
        let mut kubelet = Service::spawn(
            "kubelet",
            &bins.kube,
            [
                "kubelet".to_owned(),
                format!("--config={}", kubelet_config.display()),
                format!("--kubeconfig={}", h.kube.kubeconfig.display()),
                format!("--root-dir={}", dir.join("kubelet").display()),
                format!("--cert-dir={}", dir.join("kubelet-pki").display()),
                format!("--hostname-override={REAL_NODE_NAME}"),
                format!("--node-ip={GATEWAY}"),
                format!("--node-labels={}={}", REAL_NODE_LABEL.0, REAL_NODE_LABEL.1),
                "--v=1".to_owned(),
            ],
            &logs,
            None,
        )?;
        host.record_pid("kubelet", kubelet.pid())?;
        let admin = h.kube.client().await?;
        let nodes: Api<Node> = Api::all(admin.clone());
        let ready = || async {
            let node = nodes.get(REAL_NODE_NAME).await?;
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Ready");
            match ready {
                Some(c) if c.status == "True" => Ok(()),
                other => bail!("node {REAL_NODE_NAME} is not Ready yet: {other:?}"),
            }
        };
        let started = Instant::now();
        kubelet.wait_ready(Duration::from_secs(90), ready).await?;
        eprintln!(
            "tiqzy: real node {REAL_NODE_NAME} Ready in {:.1?}",
            started.elapsed()
        );
        // New pods go to the real node: the fake one takes none while it runs.
        nodes
            .patch(
                NODE_NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "unschedulable": true } })),
            )
            .await
            .context("cordoning the kwok node")?;
        // Pods talk to each other across the bridge: the firewall sees that only with
        // bridge-nf-call-iptables on (cleanup restores what was there).
        std::fs::write(BRIDGE_NF_CALL_IPTABLES, "1")
            .with_context(|| format!("enabling {BRIDGE_NF_CALL_IPTABLES}"))?;
        let kube_router = crate::kube_router::start(h, &nb.kube_router).await?;
        host.record_pid("kube-router", kube_router.pid())?;
        let kube_proxy = crate::node_services::start_kube_proxy(h, &bins.kube).await?;
        host.record_pid("kube-proxy", kube_proxy.pid())?;
        let node = Self {
            name: REAL_NODE_NAME.to_owned(),
            socket,
            dir,
            ctr: nb.ctr.clone(),
            kube_router,
            kube_proxy,
            kubelet,
            containerd,
            _host: host,
        };
        let coredns = node.import_binary_image(
            "coredns",
            crate::node_services::COREDNS_REPOSITORY,
            &[(&nb.coredns, "/coredns")],
            "/coredns",
        )?;
        crate::node_services::start_cluster_dns(h, &coredns).await?;
        Ok(node)
    }

    /// Writes the runtime image (`tiqzy-runtime`, its entrypoint, and `tiqzy-payments` in
    /// `/usr/local/bin`, as the Containerfile ships them), imports it, and returns
    /// `tiqzy.local/tiqzy/runtime@sha256:<manifest digest>`, which containerd resolves.
    pub fn import_runtime_image(&self, binaries: &RuntimeBinaries) -> Result<String> {
        self.import_binary_image(
            "runtime",
            RUNTIME_REPOSITORY,
            &[
                (&binaries.runtime, "/usr/local/bin/tiqzy-runtime"),
                (&binaries.payments, "/usr/local/bin/tiqzy-payments"),
            ],
            "/usr/local/bin/tiqzy-runtime",
        )
    }

    /// Writes an OCI image of `programs` (each at its path, with the libraries `ldd` lists
    /// and the CA certificates, running as UID 65532), imports it, and returns
    /// `<repository>@sha256:<manifest digest>`, which containerd resolves.
    fn import_binary_image(
        &self,
        name: &str,
        repository: &str,
        programs: &[(&Path, &str)],
        entrypoint: &str,
    ) -> Result<String> {
        let rootfs = self.dir.join(format!("images/{name}-rootfs"));
        let _ = std::fs::remove_dir_all(&rootfs);
        for (binary, target) in programs {
            copy_into(&rootfs, binary, target)?;
            for library in ldd(binary)? {
                copy_into(&rootfs, &library, &library.display().to_string())?;
            }
        }
        copy_into(
            &rootfs,
            Path::new("/etc/ssl/certs/ca-certificates.crt"),
            "/etc/ssl/certs/ca-certificates.crt",
        )?;
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/sbin/nologin\nruntime:x:65532:65532::/tmp:/sbin/nologin\n",
        )?;
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\nruntime:x:65532:\n")?;
        std::fs::create_dir_all(rootfs.join("tmp"))?;
        let image = write_oci_image(
            &self.dir.join("images"),
            name,
            &rootfs,
            (repository, &format!("{repository}:e2e")),
            json!({ "Entrypoint": [entrypoint], "User": "65532:65532",
                    "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"] }),
        )?;
        import_image(&self.ctr, &self.socket, &image)?;
        Ok(image.digest_ref)
    }

    /// Where the kubelet writes the pods' logs (`<namespace>_<pod>_<uid>/<container>/`).
    pub fn pod_logs_dir(&self) -> PathBuf {
        self.dir.join("pod-logs")
    }

    /// `ctr --address <socket> -n k8s.io`, ready for arguments.
    pub fn ctr(&self) -> Command {
        ctr(&self.ctr, &self.socket)
    }

    /// Fails with the log tail if containerd, the kubelet, kube-router or kube-proxy has died.
    pub fn check_running(&mut self) -> Result<()> {
        self.containerd.check_running()?;
        self.kubelet.check_running()?;
        self.kube_router.check_running()?;
        self.kube_proxy.check_running()
    }
}

/// The programs of the runtime image.
#[derive(Debug, Clone)]
pub struct RuntimeBinaries {
    /// The storefront, `tiqzy-runtime`.
    pub runtime: PathBuf,
    /// The payments service, `tiqzy-payments`.
    pub payments: PathBuf,
}

/// Builds `tiqzy-runtime` and `tiqzy-payments` (with the operator: see
/// [`crate::build_programs`]) and returns the binaries.
pub fn build_runtime_binaries() -> Result<RuntimeBinaries> {
    let debug = crate::build_programs()?;
    let binary = |name: &str| {
        let binary = debug.join(name);
        std::fs::canonicalize(&binary).with_context(|| format!("the binary {}", binary.display()))
    };
    Ok(RuntimeBinaries {
        runtime: binary("tiqzy-runtime")?,
        payments: binary("tiqzy-payments")?,
    })
}

fn ctr(program: &Path, socket: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("--address").arg(socket).args(["-n", "k8s.io"]);
    cmd
}

/// Host state of the node: a machine-wide lock, what existed before, and the cleanup script
/// (running from now on, acting when signalled or when the harness dies).
#[derive(Debug)]
struct HostState {
    dir: PathBuf,
    cleaner: Child,
    _lock: File,
}

impl HostState {
    fn prepare(dir: &Path, nb: &NodeBinaries, kube: &Path) -> Result<Self> {
        let lock_path = Path::new("/run/lock/tiqzy-e2e-real-node.lock");
        let lock = File::create(lock_path)?;
        if lock.try_lock().is_err() {
            eprintln!("tiqzy: waiting for another real node on this machine to stop");
            lock.lock()?;
        }
        for sub in [
            "pids",
            "cni/net.d",
            "cni/ipam",
            "images",
            "kubelet",
            "state",
        ] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let script = dir.join("cleanup.sh");
        std::fs::write(&script, cleanup_script(dir, &nb.shim, kube))?;
        // Whatever a node that died without cleaning up left (same names): gone first.
        let stale = Command::new("bash").arg(&script).arg("now").output()?;
        if !stale.status.success() {
            bail!(
                "cleaning up a previous real node failed: {}",
                String::from_utf8_lossy(&stale.stderr)
            );
        }
        // What existed before, so cleanup removes only what this node adds.
        let created: Vec<&str> = HOST_PATHS
            .iter()
            .copied()
            .filter(|p| !Path::new(p).exists())
            .collect();
        std::fs::write(dir.join("created-paths"), created.join("\n"))?;
        let mut chains = String::new();
        for tool in ["iptables", "ip6tables"] {
            for table in ["filter", "nat", "mangle"] {
                let Ok(out) = Command::new(tool).args(["-t", table, "-S"]).output() else {
                    continue;
                };
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    if let Some(chain) = line.strip_prefix("-N ") {
                        chains.push_str(&format!("{tool} {table} {chain}\n"));
                    }
                }
            }
        }
        std::fs::write(dir.join("chains-before"), chains)?;
        std::fs::write(
            dir.join("ip-forward-before"),
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?.trim(),
        )?;
        std::fs::write(
            dir.join("bridge-nf-call-iptables-before"),
            std::fs::read_to_string(BRIDGE_NF_CALL_IPTABLES)
                .with_context(|| {
                    format!("reading {BRIDGE_NF_CALL_IPTABLES} (the kernel needs br_netfilter)")
                })?
                .trim(),
        )?;
        // The script's stdin shares the lock's open file description, so the lock is held
        // until the cleanup has finished, not only until this process exits: the next node
        // must not create its bridge while this one's cleanup is still deleting it.
        let cleaner = Command::new("setpriv")
            .args(["--pdeathsig", "TERM", "--", "bash"])
            .arg(&script)
            .arg("wait")
            .stdin(Stdio::from(lock.try_clone()?))
            .stdout(File::create(dir.join("cleanup.log"))?)
            .stderr(File::create(dir.join("cleanup.err"))?)
            .spawn()
            .context("starting the node's cleanup script")?;
        let host = Self {
            dir: dir.to_owned(),
            cleaner,
            _lock: lock,
        };
        let address = format!("{GATEWAY}/16");
        let bridge = [
            vec!["link", "add", BRIDGE, "type", "bridge"],
            vec!["addr", "add", &address, "dev", BRIDGE],
            vec!["link", "set", BRIDGE, "up"],
        ];
        for args in bridge {
            let out = Command::new("ip").args(&args).output()?;
            if !out.status.success() {
                bail!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(host)
    }

    fn record_pid(&self, name: &str, pid: u32) -> Result<()> {
        Ok(std::fs::write(
            self.dir.join("pids").join(name),
            pid.to_string(),
        )?)
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.cleaner.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.cleaner.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "tiqzy: the real node's cleanup did not finish in 60 s; see {}",
            self.dir.join("cleanup.log").display()
        );
    }
}

/// The cleanup script: `cleanup.sh now` cleans at once, `cleanup.sh wait` on SIGTERM.
fn cleanup_script(dir: &Path, shim: &Path, kube: &Path) -> String {
    format!(
        r#"#!/bin/bash
# Removes the host state of the harness's real node (written by tests/e2e/src/node.rs).
NODE_DIR='{dir}'
SHIM='{shim}'
KUBE='{kube}'
BRIDGE='{BRIDGE}'
NETWORK='{CNI_NETWORK}'

cleanup() {{
  set +e
  echo "cleanup started $(date +%T.%N)"
  # The node's daemons (they die with the harness too).
  for f in "$NODE_DIR"/pids/*; do
    [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
  done
  # The pods' processes (everything in the kubepods cgroups) and the runc shims, which
  # daemonise away from containerd.
  for round in 1 2 3 4 5; do
    left=0
    for procs in $(find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice -name cgroup.procs 2>/dev/null); do
      for pid in $(cat "$procs" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; left=1; done
    done
    for exe in /proc/[0-9]*/exe; do
      if [ "$(readlink "$exe" 2>/dev/null)" = "$SHIM" ]; then
        pid="${{exe#/proc/}}"; kill -KILL "${{pid%/exe}}" 2>/dev/null; left=1
      fi
    done
    [ "$left" = 0 ] && break
    sleep 0.3
  done
  # Mounts under the node's directory and the host directories it created, deepest first.
  created=""
  [ -f "$NODE_DIR/created-paths" ] && created="$(cat "$NODE_DIR/created-paths")"
  for prefix in "$NODE_DIR" $created; do
    awk '{{print $5}}' /proc/self/mountinfo | grep -E "^$prefix(/|$)" | sort -r | while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    done
  done
  # Pod cgroups, leaves first.
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [ -d "$root" ] && find "$root" -depth -type d -exec rmdir {{}} \; 2>/dev/null
  done
  # kube-proxy's own rules (the chain sweep below would catch them too).
  [ -x "$KUBE" ] && timeout 30 "$KUBE" kube-proxy --cleanup >/dev/null 2>&1
  # iptables: rules naming the network (and the chains they jump to), rules in or jumping to
  # chains created since the node started, then those chains.
  for tool in iptables ip6tables; do
    command -v $tool >/dev/null || continue
    for table in filter nat mangle; do
      new=""
      if [ -f "$NODE_DIR/chains-before" ]; then
        for chain in $($tool -t $table -S 2>/dev/null | awk '/^-N (CNI-|KUBE-)/ {{print $2}}'); do
          grep -qxF "$tool $table $chain" "$NODE_DIR/chains-before" || new="$new $chain"
        done
      fi
      # kube-router's chains: only the real node runs it, one node per machine.
      new="$new $($tool -t $table -S 2>/dev/null | awk '/^-N (KUBE-ROUTER-|KUBE-POD-FW-|KUBE-NWPLCY-)/ {{print $2}}' | tr '\n' ' ')"
      rules="$($tool -t $table -S 2>/dev/null | grep '^-A ')"
      while read -r rule; do
        [ -n "$rule" ] || continue
        drop=0
        case "$rule" in
          *"$NETWORK"*)
            drop=1
            target="$(echo "$rule" | sed -n 's/.* -j \(CNI-[^ ]*\).*/\1/p')"
            [ -n "$target" ] && new="$new $target"
            ;;
        esac
        for chain in $new; do
          case "$rule" in "-A $chain "*|*" -j $chain"|*" -j $chain "*) drop=1 ;; esac
        done
        [ "$drop" = 1 ] && eval "$tool -t $table -D ${{rule#-A }}" 2>/dev/null
      done <<< "$rules"
      for chain in $new; do $tool -t $table -F "$chain" 2>/dev/null; done
      for chain in $new; do $tool -t $table -X "$chain" 2>/dev/null; done
    done
  done
  # kube-router's ipsets, once no rule refers to them.
  if command -v ipset >/dev/null; then
    for set in $(ipset list -n 2>/dev/null | grep -E '^(inet6:)?KUBE-(SRC|DST)-'); do
      ipset destroy "$set" 2>/dev/null
    done
  fi
  ip link del "$BRIDGE" 2>/dev/null
  rm -f /var/lib/cni/results/"$NETWORK"-* 2>/dev/null
  for path in $(echo "$created" | sort -r); do rm -rf "$path"; done
  [ -f "$NODE_DIR/ip-forward-before" ] && cat "$NODE_DIR/ip-forward-before" > /proc/sys/net/ipv4/ip_forward
  [ -f "$NODE_DIR/bridge-nf-call-iptables-before" ] && cat "$NODE_DIR/bridge-nf-call-iptables-before" > {BRIDGE_NF_CALL_IPTABLES}
  echo "cleanup done $(date +%T.%N)"
}}

if [ "$1" = now ]; then
  cleanup
  exit 0
fi
trap 'cleanup; kill $sleeper 2>/dev/null; exit 0' TERM INT HUP
while :; do
  sleep 3600 & sleeper=$!
  wait $sleeper
done
"#,
        dir = dir.display(),
        shim = shim.display(),
        kube = kube.display(),
    )
}

fn containerd_config(dir: &Path, nb: &NodeBinaries) -> String {
    let d = dir.display();
    format!(
        r#"version = 3
root = "{d}/containerd/root"
state = "{d}/containerd/state"
temp = "{d}/containerd/tmp"

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins.'io.containerd.internal.v1.opt']
  path = "{d}/containerd/opt"

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins.'io.containerd.cri.v1.runtime']
  # The VM lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = "{shim}"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni}"]
    conf_dir = "{d}/cni/net.d"
"#,
        shim = nb.shim.display(),
        runc = nb.runc.display(),
        cni = nb.cni_dir.display(),
    )
}

fn cni_config(dir: &Path) -> String {
    json!({
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": dir.join("cni/ipam"),
                    "ranges": [[{ "subnet": POD_SUBNET, "gateway": GATEWAY }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    })
    .to_string()
}

fn kubelet_config_text(dir: &Path, socket: &Path) -> Result<String> {
    use crate::node_services::{CLUSTER_DNS, CLUSTER_DOMAIN};
    let port = crate::free_port()?;
    Ok(format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 on these VMs: kubelet 1.36 refuses it unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{socket}
address: {GATEWAY}
port: {port}
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
authorization:
  mode: Webhook
failSwapOn: false
podLogsDir: {dir}/pod-logs
volumePluginDir: {dir}/volume-plugins
resolvConf: ""
clusterDNS: ["{CLUSTER_DNS}"]
clusterDomain: {CLUSTER_DOMAIN}
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# No disk-based eviction (as kind does): the VM's disk is shared with other builds and at
# times nearly full (1% of its 250 GB is more than it sometimes has free, and it has dropped
# below 256 MiB), and a test node that evicts its pods for that proves nothing.
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
  imagefs.inodesFree: "0%"
"#,
        socket = socket.display(),
        dir = dir.display(),
    ))
}

/// A written OCI image archive and the names it carries.
struct OciImage {
    archive: PathBuf,
    /// `<repository>@sha256:<manifest digest>`
    digest_ref: String,
}

/// The pause image: `pause.c` from the Kubernetes module, linked statically.
fn pause_image(dir: &Path) -> Result<OciImage> {
    let source = go_module_dir("k8s.io/kubernetes", "v1.36.3")?.join("build/pause/linux/pause.c");
    let rootfs = dir.join("pause-rootfs");
    let _ = std::fs::remove_dir_all(&rootfs);
    std::fs::create_dir_all(&rootfs)?;
    let out = Command::new("gcc")
        .args(["-Os", "-static", "-Wall", "-DVERSION=v3.10-tiqzy", "-o"])
        .arg(rootfs.join("pause"))
        .arg(&source)
        .output()
        .context("running gcc for the pause image")?;
    if !out.status.success() {
        bail!(
            "gcc {}: {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (repository, _) = PAUSE_IMAGE.rsplit_once(':').context("pause image tag")?;
    write_oci_image(
        dir,
        "pause",
        &rootfs,
        (repository, PAUSE_IMAGE),
        json!({ "Entrypoint": ["/pause"], "User": "65535:65535" }),
    )
}

/// Writes an OCI image layout archive of one uncompressed layer holding `rootfs`, named
/// `tag_ref` and `<repository>@sha256:<manifest digest>`.
fn write_oci_image(
    dir: &Path,
    name: &str,
    rootfs: &Path,
    (repository, tag_ref): (&str, &str),
    config: serde_json::Value,
) -> Result<OciImage> {
    let layout = dir.join(format!("{name}-oci"));
    let _ = std::fs::remove_dir_all(&layout);
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let layer_tar = dir.join(format!("{name}-layer.tar"));
    tar(rootfs, &layer_tar)?;
    let layer = put_blob(&blobs, &std::fs::read(&layer_tar)?)?;
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", layer.0)] },
        "history": [{ "created_by": "tiqzy e2e harness (tests/e2e/src/node.rs)" }]
    }))?;
    let config = put_blob(&blobs, &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": format!("sha256:{}", config.0), "size": config.1 },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar",
                     "digest": format!("sha256:{}", layer.0), "size": layer.1 }]
    }))?;
    let manifest = put_blob(&blobs, &manifest)?;
    let digest_ref = format!("{repository}@sha256:{}", manifest.0);
    let entry = |image_name: &str| {
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", manifest.0), "size": manifest.1,
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": { "io.containerd.image.name": image_name }
        })
    };
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [entry(tag_ref), entry(&digest_ref)]
        }))?,
    )?;
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let archive = dir.join(format!("{name}.oci.tar"));
    tar(&layout, &archive)?;
    Ok(OciImage {
        archive,
        digest_ref,
    })
}

/// Stores `bytes` as a blob; returns its hex digest and size.
fn put_blob(blobs: &Path, bytes: &[u8]) -> Result<(String, usize)> {
    let digest: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(blobs.join(&digest), bytes)?;
    Ok((digest, bytes.len()))
}

/// A reproducible tar of the contents of `dir` (GNU tar: sorted, owner root, time zero).
fn tar(dir: &Path, archive: &Path) -> Result<()> {
    let out = Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
        ])
        .arg(dir)
        .arg("-cf")
        .arg(archive)
        .arg(".")
        .output()
        .context("running tar")?;
    if !out.status.success() {
        bail!(
            "tar {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn import_image(ctr_program: &Path, socket: &Path, image: &OciImage) -> Result<()> {
    let out = ctr(ctr_program, socket)
        .args(["images", "import"])
        .arg(&image.archive)
        .output()
        .context("running ctr images import")?;
    if !out.status.success() {
        bail!(
            "ctr images import {}: {}{}",
            image.archive.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The shared libraries `ldd` lists for `binary` (absolute paths, the loader included).
fn ldd(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    if !out.status.success() {
        bail!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}

/// Copies `from` (following links) to `<rootfs><to>`, keeping its mode.
fn copy_into(rootfs: &Path, from: &Path, to: &str) -> Result<()> {
    let target = rootfs.join(to.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().context("no parent")?)?;
    std::fs::copy(from, &target)
        .with_context(|| format!("copying {} into the image", from.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn the_cleanup_script_is_valid_bash() {
        let dir = std::env::temp_dir().join(format!("tiqzy-node-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test setup");
        let script = dir.join("cleanup.sh");
        let mut f = File::create(&script).expect("test setup");
        f.write_all(
            cleanup_script(
                &dir,
                Path::new("/nonexistent/shim"),
                Path::new("/nonexistent/kube"),
            )
            .as_bytes(),
        )
        .expect("test setup");
        let out = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .output()
            .expect("test setup");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_cni_network_stays_off_kwoks_pod_range() {
        assert!(POD_SUBNET.starts_with("10.77."));
        assert!(BRIDGE.len() <= 15, "interface names have at most 15 bytes");
    }
}
