//! A Kubernetes control plane from upstream code: etcd, kube-apiserver (TLS, token auth for
//! the admin, RBAC, service-account signing keys, Pod Security admission),
//! kube-controller-manager, kube-scheduler, and kwok playing the kubelet of fake nodes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::components::Binaries;
use crate::pki::{Pki, random_secret};
use crate::ports::{accepting, free_port};
use crate::process::Service;

/// The fake node every harness registers; kwok keeps it Ready and runs its pods.
pub const NODE_NAME: &str = "kwok-node-0";
/// ClusterIPs come from here (kube-router's firewall must know it too).
pub(crate) const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The API server's port when a real node's pods reach it (through the `kubernetes` Service):
/// the port clusters use, which the operator's egress policies open.
pub const POD_APISERVER_PORT: u16 = 6443;

/// A running control plane and how to reach it.
#[derive(Debug)]
pub struct ControlPlane {
    /// `https://127.0.0.1:<port>` (with a real node: `https://<gateway>:6443`)
    pub server: String,
    /// PEM of the CA that signed the API server's certificate.
    pub ca_pem: String,
    pub ca_file: PathBuf,
    /// Bearer token of `admin` (group `system:masters`).
    pub admin_token: String,
    /// kubeconfig for the admin.
    pub kubeconfig: PathBuf,
    /// kubectl built from the same Kubernetes release.
    pub kubectl: PathBuf,
    dir: PathBuf,
    layout: Layout,
    processes: Processes,
}

/// Where and how the control plane's processes run: kept so the same plane (addresses,
/// certificates, admin token) can be started again after [`ControlPlane::stop`].
#[derive(Debug, Clone)]
struct Layout {
    bins: Binaries,
    dir: PathBuf,
    logs: PathBuf,
    pki: Pki,
    etcd_port: u16,
    peer_port: u16,
    /// The API server's address and port.
    address: String,
    port: u16,
    tokens: PathBuf,
    kubeconfig: PathBuf,
}

/// The control plane's processes. Field order is drop order: clients of the API server
/// first, etcd last.
#[derive(Debug)]
struct Processes {
    kwok: Service,
    scheduler: Service,
    controller_manager: Service,
    apiserver: Service,
    etcd: Service,
}

impl ControlPlane {
    pub async fn start(bins: &Binaries, run: &Path) -> Result<Self> {
        Self::start_on(bins, run, None).await
    }

    /// Like [`ControlPlane::start`]; with `pod_gateway = Some(address)` the API server listens
    /// on that address (a real node's bridge gateway) at [`POD_APISERVER_PORT`] instead of a
    /// free loopback port, and advertises it, so the `kubernetes` Service leads pods to it.
    pub async fn start_on(bins: &Binaries, run: &Path, pod_gateway: Option<&str>) -> Result<Self> {
        let dir = run.join("kube");
        std::fs::create_dir_all(&dir)?;
        let pki = Pki::create(&dir.join("pki"), pod_gateway)?;
        let admin_token = random_secret(40);
        let tokens = dir.join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{admin_token},admin,admin-uid,\"system:masters\"\n"),
        )?;
        let (address, port) = match pod_gateway {
            Some(gateway) => (gateway, POD_APISERVER_PORT),
            None => ("127.0.0.1", free_port()?),
        };
        let server = format!("https://{address}:{port}");
        let kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(&kubeconfig, &server, &pki.ca_cert, "admin", &admin_token)?;
        let layout = Layout {
            bins: bins.clone(),
            dir: dir.clone(),
            logs: run.join("logs"),
            pki: pki.clone(),
            etcd_port: free_port()?,
            peer_port: free_port()?,
            address: address.to_owned(),
            port,
            tokens,
            kubeconfig: kubeconfig.clone(),
        };
        let processes = Processes::start(&layout).await?;
        Ok(Self {
            server,
            ca_pem: pki.ca_pem.clone(),
            ca_file: pki.ca_cert.clone(),
            admin_token,
            kubeconfig,
            kubectl: bins.kubectl.clone(),
            dir,
            layout,
            processes,
        })
    }

    /// Stops the whole control plane (kwok, scheduler, controller manager, API server, etcd),
    /// leaving etcd's data where it is.
    pub fn stop(&mut self) {
        self.processes.stop();
    }

    /// Disaster: stops the control plane, throws etcd's data away and starts a fresh, empty
    /// control plane on the same addresses with the same certificates and admin token (what a
    /// rebuilt cluster behind the same DNS name looks like to clients and kubeconfigs).
    pub async fn restart_wiped(&mut self) -> Result<()> {
        self.processes.stop();
        let data = self.layout.dir.join("etcd");
        match std::fs::remove_dir_all(&data) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", data.display()));
            }
            _ => {}
        }
        self.processes = Processes::start(&self.layout).await?;
        Ok(())
    }

    /// A client authenticated as the cluster admin.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from(&self.kubeconfig).await
    }

    /// Writes a kubeconfig that authenticates with `token` (for instance a ServiceAccount
    /// token from the TokenRequest API) and returns its path.
    pub fn kubeconfig_for_token(&self, name: &str, token: &str) -> Result<PathBuf> {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        write_kubeconfig(&path, &self.server, &self.ca_file, name, token)?;
        Ok(path)
    }

    /// A client authenticated with `token`.
    pub async fn client_for_token(&self, name: &str, token: &str) -> Result<kube::Client> {
        client_from(&self.kubeconfig_for_token(name, token)?).await
    }

    /// `kubectl --kubeconfig <admin>`, ready for arguments.
    pub fn kubectl(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// Fails with the component's log tail if any control-plane process has died.
    pub fn check_running(&mut self) -> Result<()> {
        let p = &mut self.processes;
        for service in [
            &mut p.etcd,
            &mut p.apiserver,
            &mut p.controller_manager,
            &mut p.scheduler,
            &mut p.kwok,
        ] {
            service.check_running()?;
        }
        Ok(())
    }
}

impl Processes {
    /// Starts etcd, the API server, the controllers and kwok as `layout` says, and registers
    /// the fake node (again, when etcd was wiped).
    async fn start(layout: &Layout) -> Result<Self> {
        let Layout {
            bins,
            dir,
            logs,
            pki,
            etcd_port,
            peer_port,
            address,
            port,
            tokens,
            kubeconfig,
        } = layout;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Service::spawn(
            "etcd",
            &bins.etcd,
            [
                "--name=e2e".to_owned(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                "--unsafe-no-fsync=true".to_owned(),
                "--log-level=warn".to_owned(),
            ],
            logs,
            None,
        )?;
        let etcd_port = *etcd_port;
        etcd.wait_ready(Duration::from_secs(30), || accepting(etcd_port))
            .await?;

        let mut apiserver = Service::spawn(
            "kube-apiserver",
            &bins.kube,
            [
                "kube-apiserver".to_owned(),
                format!("--etcd-servers={etcd_url}"),
                format!("--bind-address={address}"),
                format!("--advertise-address={address}"),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", pki.server_cert.display()),
                format!("--tls-private-key-file={}", pki.server_key.display()),
                format!("--token-auth-file={}", tokens.display()),
                "--authorization-mode=RBAC".to_owned(),
                "--enable-admission-plugins=PodSecurity".to_owned(),
                "--allow-privileged=true".to_owned(),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
                format!(
                    "--service-account-key-file={}",
                    pki.service_account_pub.display()
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    pki.service_account_key.display()
                ),
                "--profiling=false".to_owned(),
                "--v=1".to_owned(),
            ],
            logs,
            None,
        )?;
        let admin = client_from(kubeconfig).await?;
        apiserver
            .wait_ready(Duration::from_secs(90), || readyz(&admin))
            .await?;

        let kubeconfig_flag = format!("--kubeconfig={}", kubeconfig.display());
        let controller_manager = Service::spawn(
            "kube-controller-manager",
            &bins.kube,
            [
                "kube-controller-manager".to_owned(),
                kubeconfig_flag.clone(),
                "--leader-elect=false".to_owned(),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={}", free_port()?),
                format!("--cert-dir={}", dir.join("kcm-certs").display()),
                format!(
                    "--service-account-private-key-file={}",
                    pki.service_account_key.display()
                ),
                format!("--root-ca-file={}", pki.ca_cert.display()),
                "--use-service-account-credentials=false".to_owned(),
                // The defaults (20 QPS, 5 syncs) suit a shared production API server; here
                // they, not the operator, would bound how fast a thousand tenants get pods.
                "--kube-api-qps=500".to_owned(),
                "--kube-api-burst=1000".to_owned(),
                "--concurrent-deployment-syncs=20".to_owned(),
                "--concurrent-replicaset-syncs=20".to_owned(),
                "--v=1".to_owned(),
            ],
            logs,
            None,
        )?;
        let scheduler = Service::spawn(
            "kube-scheduler",
            &bins.kube,
            [
                "kube-scheduler".to_owned(),
                kubeconfig_flag.clone(),
                "--leader-elect=false".to_owned(),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={}", free_port()?),
                format!("--cert-dir={}", dir.join("scheduler-certs").display()),
                "--kube-api-qps=500".to_owned(),
                "--kube-api-burst=1000".to_owned(),
                "--v=1".to_owned(),
            ],
            logs,
            None,
        )?;
        let stages = dir.join("kwok-stages.yaml");
        std::fs::write(
            &stages,
            crate::kwok_stages::configuration(&bins.kwok_stages)?,
        )?;
        let kwok = Service::spawn(
            "kwok",
            &bins.kwok,
            [
                kubeconfig_flag,
                format!("--config={}", stages.display()),
                // Only its own fake nodes: a real node (see node.rs) has a kubelet.
                "--manage-all-nodes=false".to_owned(),
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".to_owned(),
                format!("--server-address=127.0.0.1:{}", free_port()?),
                "--cidr=10.244.0.0/16".to_owned(),
                "--node-ip=127.0.0.1".to_owned(),
            ],
            logs,
            None,
        )?;
        let mut processes = Self {
            kwok,
            scheduler,
            controller_manager,
            apiserver,
            etcd,
        };
        processes.register_node(&admin).await?;
        Ok(processes)
    }

    /// Stops the clients of the API server, then the API server, then etcd.
    fn stop(&mut self) {
        self.kwok.stop();
        self.scheduler.stop();
        self.controller_manager.stop();
        self.apiserver.stop();
        self.etcd.stop();
    }

    /// Creates the fake node and waits until kwok reports it Ready.
    async fn register_node(&mut self, client: &kube::Client) -> Result<()> {
        let nodes: Api<Node> = Api::all(client.clone());
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "kwok.x-k8s.io/node": "fake",
                },
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "status": {
                // Room for the operator benchmark's thousand storefronts (100m CPU and
                // 64Mi each), with rollouts' surge pods on top.
                "allocatable": { "cpu": "512", "memory": "1Ti", "pods": "4000" },
                "capacity": { "cpu": "512", "memory": "1Ti", "pods": "4000" },
            },
        }))?;
        nodes
            .create(&PostParams::default(), &node)
            .await
            .context("registering the kwok node")?;
        let kwok_ready = || async {
            let node = nodes.get(NODE_NAME).await?;
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                Ok(())
            } else {
                bail!("node {NODE_NAME} is not Ready yet")
            }
        };
        self.kwok
            .wait_ready(Duration::from_secs(60), kwok_ready)
            .await
    }
}

async fn readyz(client: &kube::Client) -> Result<()> {
    let request = http::Request::get("/readyz").body(Vec::new())?;
    let text = client.request_text(request).await?;
    if text.trim() == "ok" {
        Ok(())
    } else {
        bail!("/readyz said {text}")
    }
}

async fn client_from(kubeconfig: &Path) -> Result<kube::Client> {
    let config = Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn write_kubeconfig(path: &Path, server: &str, ca: &Path, user: &str, token: &str) -> Result<()> {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: tiqzy-e2e
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: {user}@tiqzy-e2e
  context:
    cluster: tiqzy-e2e
    user: {user}
current-context: {user}@tiqzy-e2e
",
        ca = ca.display()
    );
    std::fs::write(path, text)?;
    Ok(())
}
