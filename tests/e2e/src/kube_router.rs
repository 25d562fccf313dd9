//! The real node's NetworkPolicy enforcer: kube-router (`tests/e2e/go/kube-router`) with only
//! its firewall running (`--run-firewall`; no routing, no service proxy), as a cluster runs it
//! beside another CNI. It turns the policies into iptables chains (`KUBE-ROUTER-*`,
//! `KUBE-POD-FW-*`, `KUBE-NWPLCY-*`) and ipsets (`KUBE-SRC-*`, `KUBE-DST-*`), which the node's
//! cleanup script removes.
//!
//! Like kube-router everywhere, it always lets a node reach its own pods (a NetworkPolicy
//! cannot block a pod's own node): the host's tests and Traefik, which runs on the host, keep
//! reaching pod IPs. Pods are filtered by what their policies allow, pod to pod across the
//! bridge (`bridge-nf-call-iptables`) and pod to host (PostgreSQL on the gateway).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::Harness;
use crate::controlplane::SERVICE_CIDR;
use crate::node::REAL_NODE_NAME;
use crate::ports::free_port;
use crate::process::Service;
use crate::router::install_account;

/// Namespace and name of kube-router's ServiceAccount.
const ACCOUNT: (&str, &str) = ("kube-system", "kube-router");
/// The chain kube-router hooks into FORWARD once its first sync has run.
const FORWARD_CHAIN: &str = "KUBE-ROUTER-FORWARD";

/// Starts kube-router for the real node as its own ServiceAccount; returns once it has
/// hooked its chains into the host's firewall and answers its health check.
pub(crate) async fn start(h: &Harness, binary: &Path) -> Result<Service> {
    let admin = h.kube.client().await?;
    let kubeconfig = install_account(h, &admin, ACCOUNT, cluster_role()).await?;
    let health_port = free_port()?;
    let mut service = Service::spawn(
        "kube-router",
        binary,
        [
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--hostname-override={REAL_NODE_NAME}"),
            "--run-firewall=true".to_owned(),
            "--run-router=false".to_owned(),
            "--run-service-proxy=false".to_owned(),
            "--enable-cni=false".to_owned(),
            "--enable-ipv4=true".to_owned(),
            "--enable-ipv6=false".to_owned(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            format!("--health-port={health_port}"),
            "--metrics-port=0".to_owned(),
            "--cache-sync-timeout=60s".to_owned(),
            "--v=1".to_owned(),
        ],
        &h.log_dir(),
        None,
    )?;
    crate::node_services::wait_healthy(&mut service, health_port, hooked).await?;
    Ok(service)
}

/// Succeeds once FORWARD jumps to kube-router's chain.
fn hooked() -> Result<()> {
    let out = Command::new("iptables")
        .args(["-t", "filter", "-S", "FORWARD"])
        .output()
        .context("running iptables -S FORWARD")?;
    let rules = String::from_utf8_lossy(&out.stdout);
    if rules.contains(&format!("-j {FORWARD_CHAIN}")) {
        Ok(())
    } else {
        bail!("FORWARD does not jump to {FORWARD_CHAIN} yet")
    }
}

/// What kube-router's firewall reads: it starts informers on all of these and waits for them
/// to sync (upstream's `daemonset/kube-router-firewall-daemonset.yaml` grants the same reads,
/// plus writes only its router and load balancer use).
fn cluster_role() -> serde_json::Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": { "name": "tiqzy-e2e-kube-router" },
        "rules": [
            { "apiGroups": [""],
              "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
              "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
              "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["get", "list", "watch"] },
        ],
    })
}
