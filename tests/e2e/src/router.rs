//! A real ingress controller for the tests: Traefik (`tests/e2e/go/traefik`), run as its own
//! ServiceAccount, serving Ingresses of its IngressClass on loopback ports (HTTPS, and plain
//! HTTP that redirects to HTTPS) and writing their status, as a cluster's router does.
//!
//! Opt-in: its first build takes many minutes, so only tests that need a router start one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

use crate::Harness;
use crate::ports::{accepting, free_port};
use crate::process::Service;

/// The IngressClass Traefik serves (`controller: traefik.io/ingress-controller`).
pub const INGRESS_CLASS: &str = "traefik";
/// What Traefik writes into `status.loadBalancer.ingress[].hostname` of the Ingresses it serves.
pub const ROUTER_HOSTNAME: &str = "router.tiqzy.test";
/// Namespace and name of Traefik's ServiceAccount.
const ACCOUNT: (&str, &str) = ("tiqzy-router", "traefik");

/// A running Traefik. Stops when dropped (and with the test binary).
#[derive(Debug)]
pub struct Traefik {
    /// Loopback port of the `websecure` entrypoint (TLS).
    pub https_port: u16,
    /// Loopback port of the `web` entrypoint (plain HTTP, redirecting to `websecure`).
    pub http_port: u16,
    service: Service,
}

/// Which loopback ports Traefik's entrypoints take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterPorts {
    /// Free ports the system picks (tests: several routers may run side by side).
    Free,
    /// 127.0.0.1:443 and :80 where they are free (and may be bound: root), each otherwise a
    /// free port: URLs without a port where the machine allows (`cargo xtask up`).
    Standard,
}

impl RouterPorts {
    fn pick(self) -> Result<(u16, u16)> {
        let pick = |standard: u16| match self {
            Self::Standard if std::net::TcpListener::bind(("127.0.0.1", standard)).is_ok() => {
                Ok(standard)
            }
            _ => free_port(),
        };
        Ok((pick(443)?, pick(80)?))
    }
}

impl Traefik {
    /// Builds Traefik if needed, gives it a ServiceAccount allowed what an ingress controller
    /// reads and writes, creates its IngressClass and starts it against `h`'s API server, on
    /// free loopback ports.
    pub async fn start(h: &Harness) -> Result<Self> {
        Self::start_on(h, RouterPorts::Free).await
    }

    /// Like [`Traefik::start`], with the entrypoints on `ports`.
    pub async fn start_on(h: &Harness, ports: RouterPorts) -> Result<Self> {
        let binary = tokio::task::spawn_blocking(crate::components::ensure_traefik)
            .await
            .context("building Traefik")??;
        let admin = h.kube.client().await?;
        let kubeconfig = install_account(h, &admin, ACCOUNT, cluster_role()).await?;
        apply(&admin, &ingress_class(), None).await?;

        let (https_port, http_port) = ports.pick()?;
        let mut service = Service::spawn_long_lived(
            "traefik",
            Path::new("/usr/bin/env"),
            [
                format!("KUBECONFIG={}", kubeconfig.display()),
                binary.display().to_string(),
            ]
            .into_iter()
            .chain(flags(https_port, http_port))
            .collect(),
            &h.log_dir(),
        )?;
        service
            .wait_ready(Duration::from_secs(30), || async {
                accepting(https_port).await?;
                accepting(http_port).await
            })
            .await?;
        Ok(Self {
            https_port,
            http_port,
            service,
        })
    }

    pub fn log_path(&self) -> &Path {
        self.service.log_path()
    }

    /// Fails with Traefik's log tail if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.service.check_running()
    }
}

/// Traefik's command line: entrypoints on loopback, the Kubernetes Ingress provider writing
/// Ingress status, no calls home.
fn flags(https_port: u16, http_port: u16) -> Vec<String> {
    vec![
        "--global.checknewversion=false".to_owned(),
        "--global.sendanonymoususage=false".to_owned(),
        "--log.level=INFO".to_owned(),
        "--log.nocolor=true".to_owned(),
        "--accesslog=true".to_owned(),
        format!("--entrypoints.websecure.address=127.0.0.1:{https_port}"),
        "--entrypoints.websecure.http.tls=true".to_owned(),
        format!("--entrypoints.web.address=127.0.0.1:{http_port}"),
        "--entrypoints.web.http.redirections.entrypoint.to=websecure".to_owned(),
        "--entrypoints.web.http.redirections.entrypoint.scheme=https".to_owned(),
        "--providers.kubernetesingress=true".to_owned(),
        format!("--providers.kubernetesingress.ingressendpoint.hostname={ROUTER_HOSTNAME}"),
    ]
}

/// A component's ServiceAccount `account` (namespace, name; the namespace is created when
/// missing), the ClusterRole `role` and its binding; returns a kubeconfig with a token of that
/// account (TokenRequest API), so the component can do exactly what its role allows. The token
/// is good for a week: `cargo xtask up` may run all day, and a component whose token expired
/// stops following the cluster while it keeps serving what it last saw.
pub async fn install_account(
    h: &Harness,
    admin: &kube::Client,
    (namespace, name): (&str, &str),
    role: serde_json::Value,
) -> Result<PathBuf> {
    apply(
        admin,
        &json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": namespace } }),
        None,
    )
    .await?;
    apply(
        admin,
        &json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": { "name": name, "namespace": namespace } }),
        Some(namespace),
    )
    .await?;
    let role_name = role["metadata"]["name"]
        .as_str()
        .context("a ClusterRole with a name")?
        .to_owned();
    apply(admin, &role, None).await?;
    apply(
        admin,
        &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": role_name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": role_name },
            "subjects": [{ "kind": "ServiceAccount", "namespace": namespace, "name": name }],
        }),
        None,
    )
    .await?;
    let request: TokenRequest =
        serde_json::from_value(json!({ "spec": { "expirationSeconds": 7 * 24 * 3600 } }))?;
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await?
        .status
        .context("TokenRequest returned no token")?
        .token;
    h.kube.kubeconfig_for_token(name, &token)
}

/// What Traefik's Kubernetes Ingress provider reads, and the Ingress status it writes.
fn cluster_role() -> serde_json::Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": { "name": "tiqzy-e2e-traefik" },
        "rules": [
            // Traefik v3.6 also watches nodes (for `nodePortLB`) and serves nothing until
            // that informer has synced.
            { "apiGroups": [""], "resources": ["services", "secrets", "nodes"],
              "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"],
              "verbs": ["get", "list", "watch"] },
            { "apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"],
              "verbs": ["update"] },
        ],
    })
}

fn ingress_class() -> serde_json::Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": { "name": INGRESS_CLASS },
        "spec": { "controller": "traefik.io/ingress-controller" },
    })
}

/// Server-side applies `object` (as the harness's field manager).
pub(crate) async fn apply(
    client: &kube::Client,
    object: &serde_json::Value,
    namespace: Option<&str>,
) -> Result<()> {
    let object: DynamicObject = serde_json::from_value(object.clone())?;
    let types = object.types.clone().context("apiVersion and kind")?;
    let resource = ApiResource::from_gvk(&GroupVersionKind::try_from(&types)?);
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let name = object.metadata.name.clone().context("a name")?;
    api.patch(
        &name,
        &PatchParams::apply("tiqzy-e2e").force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| format!("applying {} {name}", types.kind))?;
    Ok(())
}
