//! Services on the real node, as a cluster has them: kube-proxy (iptables mode, from the
//! harness's Kubernetes build) turns ClusterIPs into pod addresses, and CoreDNS answers
//! `*.svc.cluster.local` for the pods.
//!
//! CoreDNS runs as a pod of the node (`kube-system/coredns`, labelled `k8s-app=kube-dns`,
//! behind the Service `kube-dns` at [`CLUSTER_DNS`]), not on the host: the operator's
//! NetworkPolicies let pods ask DNS pods so labelled, as clusters run it, and kube-router
//! enforces exactly that. It serves the `cluster.local` zone only and forwards nothing: a pod
//! asking for another name is refused. It reads the API server as its ServiceAccount through
//! the `kubernetes` Service, which leads to the API server on the bridge gateway.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::json;

use crate::Harness;
use crate::node::{POD_SUBNET, REAL_NODE_NAME};
use crate::ports::free_port;
use crate::process::Service;
use crate::router::{apply, install_account};

/// The `kube-dns` Service's ClusterIP: the kubelet's `clusterDNS`.
pub const CLUSTER_DNS: &str = "10.96.0.10";
/// The kubelet's `clusterDomain`.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Repository of the CoreDNS image the node imports.
pub const COREDNS_REPOSITORY: &str = "tiqzy.local/coredns";
/// CoreDNS's port in its pod (unprivileged; the Service maps 53 to it).
const COREDNS_PORT: i32 = 5353;

/// Starts kube-proxy for the real node as its own ServiceAccount; returns once it answers its
/// health check and has written the `kubernetes` Service's rules.
pub(crate) async fn start_kube_proxy(h: &Harness, kube: &Path) -> Result<Service> {
    let admin = h.kube.client().await?;
    let account = ("kube-system", "kube-proxy");
    let kubeconfig = install_account(h, &admin, account, kube_proxy_role()).await?;
    let health_port = free_port()?;
    let mut service = Service::spawn(
        "kube-proxy",
        kube,
        [
            "kube-proxy".to_owned(),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--hostname-override={REAL_NODE_NAME}"),
            "--proxy-mode=iptables".to_owned(),
            format!("--cluster-cidr={POD_SUBNET}"),
            "--detect-local-mode=ClusterCIDR".to_owned(),
            format!("--healthz-bind-address=127.0.0.1:{health_port}"),
            format!("--metrics-bind-address=127.0.0.1:{}", free_port()?),
            // The VM's conntrack table and timeouts stay as they are (no sysctl writes).
            "--conntrack-max-per-core=0".to_owned(),
            "--conntrack-tcp-timeout-established=0s".to_owned(),
            "--conntrack-tcp-timeout-close-wait=0s".to_owned(),
            // No NodePorts on the host's loopback or other interfaces (route_localnet stays).
            "--iptables-localhost-nodeports=false".to_owned(),
            format!("--nodeport-addresses={}/32", crate::node::GATEWAY),
            "--v=1".to_owned(),
        ],
        &h.log_dir(),
        None,
    )?;
    wait_healthy(&mut service, health_port, kubernetes_service_routed).await?;
    Ok(service)
}

/// Waits until a node daemon answers `/healthz` on `health_port` and `done` sees its work in
/// the host's rules.
pub(crate) async fn wait_healthy(
    service: &mut Service,
    health_port: u16,
    done: fn() -> Result<()>,
) -> Result<()> {
    let health = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{health_port}/healthz");
    service
        .wait_ready(Duration::from_secs(60), || async {
            let status = health.get(&url).send().await?.status();
            if !status.is_success() {
                bail!("{url} answered {status}");
            }
            done()
        })
        .await
}

/// Succeeds once the nat table sends the `kubernetes` Service somewhere.
fn kubernetes_service_routed() -> Result<()> {
    let out = Command::new("iptables")
        .args(["-t", "nat", "-S", "KUBE-SERVICES"])
        .output()
        .context("running iptables -t nat -S KUBE-SERVICES")?;
    if String::from_utf8_lossy(&out.stdout).contains("default/kubernetes") {
        Ok(())
    } else {
        bail!("kube-proxy has not routed default/kubernetes yet")
    }
}

/// What kube-proxy reads and writes (the `system:node-proxier` role's rules).
fn kube_proxy_role() -> serde_json::Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": { "name": "tiqzy-e2e-kube-proxy" },
        "rules": [
            { "apiGroups": [""], "resources": ["endpoints", "services"],
              "verbs": ["list", "watch"] },
            { "apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["", "events.k8s.io"], "resources": ["events"],
              "verbs": ["create", "patch", "update"] },
            { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["list", "watch"] },
        ],
    })
}

/// Deploys CoreDNS from `image` in `kube-system` behind the Service `kube-dns` and waits for
/// its pod to be ready (the `kubernetes` plugin has synced).
pub(crate) async fn start_cluster_dns(h: &Harness, image: &str) -> Result<()> {
    let admin = h.kube.client().await?;
    install_account(h, &admin, ("kube-system", "coredns"), coredns_role()).await?;
    let corefile = format!(
        "{CLUSTER_DOMAIN}:{COREDNS_PORT} {{\n    errors\n    ready 0.0.0.0:8181\n    \
         kubernetes {CLUSTER_DOMAIN}\n    cache 5\n}}\n"
    );
    let labels = json!({ "k8s-app": "kube-dns" });
    let objects = [
        json!({ "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "coredns", "namespace": "kube-system" },
                "data": { "Corefile": corefile } }),
        json!({ "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": "kube-dns", "namespace": "kube-system", "labels": labels },
                "spec": { "clusterIP": CLUSTER_DNS, "selector": labels,
                          "ports": [
                              { "name": "dns", "port": 53, "protocol": "UDP",
                                "targetPort": COREDNS_PORT },
                              { "name": "dns-tcp", "port": 53, "protocol": "TCP",
                                "targetPort": COREDNS_PORT } ] } }),
        json!({ "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": "coredns", "namespace": "kube-system", "labels": labels },
                "spec": {
                    "replicas": 1,
                    "selector": { "matchLabels": labels },
                    "template": {
                        "metadata": { "labels": labels },
                        "spec": {
                            "serviceAccountName": "coredns",
                            "dnsPolicy": "Default",
                            "securityContext": { "runAsNonRoot": true,
                                                 "runAsUser": 65532, "runAsGroup": 65532,
                                                 "seccompProfile": { "type": "RuntimeDefault" } },
                            "containers": [{
                                "name": "coredns",
                                "image": image,
                                "imagePullPolicy": "IfNotPresent",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    { "name": "dns", "containerPort": COREDNS_PORT,
                                      "protocol": "UDP" },
                                    { "name": "dns-tcp", "containerPort": COREDNS_PORT,
                                      "protocol": "TCP" } ],
                                "readinessProbe": { "httpGet": { "path": "/ready",
                                                                 "port": 8181 },
                                                    "periodSeconds": 1 },
                                "securityContext": {
                                    "allowPrivilegeEscalation": false,
                                    "readOnlyRootFilesystem": true,
                                    "capabilities": { "drop": ["ALL"] } },
                                "volumeMounts": [{ "name": "config",
                                                   "mountPath": "/etc/coredns" }]
                            }],
                            "volumes": [{ "name": "config",
                                          "configMap": { "name": "coredns" } }]
                        }
                    }
                } }),
    ];
    for object in &objects {
        apply(&admin, object, Some("kube-system")).await?;
    }
    let deployments: Api<Deployment> = Api::namespaced(admin, "kube-system");
    let started = Instant::now();
    loop {
        let ready = deployments
            .get("coredns")
            .await?
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        if ready >= 1 {
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            bail!(
                "CoreDNS was not ready after 90 s (kubectl -n kube-system describe pods -l \
                 k8s-app=kube-dns; logs in {})",
                h.log_dir().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "tiqzy: cluster DNS ready at {CLUSTER_DNS} in {:.1?}",
        started.elapsed()
    );
    Ok(())
}

/// What the `kubernetes` plugin reads.
fn coredns_role() -> serde_json::Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": { "name": "tiqzy-e2e-coredns" },
        "rules": [
            { "apiGroups": [""], "resources": ["services", "pods", "namespaces", "endpoints"],
              "verbs": ["list", "watch"] },
            { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["list", "watch"] },
        ],
    })
}
