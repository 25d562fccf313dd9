//! Installing the operator the way the project ships it (config/rbac) and running it as its
//! own ServiceAccount, for the end-to-end tests and `cargo xtask up`.

use std::path::Path;

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::json;
use tiqzy_crds::Platform;

use crate::{Harness, Service};

/// The Stripe API key in the Platform the harness installs (test mode, for stripe-mock).
pub const STRIPE_TEST_KEY: &str = "sk_test_tiqzye2e";
/// The webhook signing secret in the Platform the harness installs.
pub const STRIPE_WEBHOOK_SECRET: &str = "whsec_tiqzy_e2e";

/// Base domain of the Platform the harness installs.
pub const BASE_DOMAIN: &str = "apps.tiqzy.test";

/// What an installation applies before any Platform: the CRDs and config/rbac.
#[derive(Debug, Clone)]
pub struct Manifests {
    pub crds: Vec<CustomResourceDefinition>,
    /// config/rbac's manifests, as (path, text).
    pub rbac: Vec<(String, String)>,
}

impl Manifests {
    /// This checkout's: the CRDs generated from `tiqzy-crds` and config/rbac as committed.
    pub fn current() -> Result<Self> {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let rbac = [
            "service_account",
            "role",
            "leader_election_role",
            "role_binding",
            "payments_service_account",
            "payments_role",
            "payments_role_binding",
        ]
        .iter()
        .map(|file| {
            let path = format!("config/rbac/{file}.yaml");
            let text = std::fs::read_to_string(format!("{root}/{path}"))
                .with_context(|| format!("reading {path}"))?;
            Ok((path, text))
        })
        .collect::<Result<_>>()?;
        Ok(Self {
            crds: vec![Platform::crd(), tiqzy_crds::Tenant::crd()],
            rbac,
        })
    }
}

/// Server-side applies every document of a manifest (`path` names it in errors).
async fn apply_yaml(client: &kube::Client, path: &str, text: &str) -> Result<()> {
    for doc in text.split("\n---\n") {
        let object: DynamicObject =
            serde_saphyr::from_str(doc).with_context(|| format!("parsing {path}"))?;
        let types = object.types.clone().context("apiVersion and kind")?;
        let gvk = kube::api::GroupVersionKind::try_from(&types)?;
        let resource = kube::api::ApiResource::from_gvk(&gvk);
        let api: Api<DynamicObject> = match object.metadata.namespace.as_deref() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &object.name_any(),
            &PatchParams::apply("tiqzy-e2e").force(),
            &Patch::Apply(&object),
        )
        .await
        .with_context(|| format!("applying {path}"))?;
    }
    Ok(())
}

/// Installs the CRDs, config/rbac, admin Secrets and a Platform pointing at the harness's
/// PostgreSQL and Redis, then starts `binary` as the operator's own ServiceAccount. Tenants
/// are looked at again, and their stores checked, every `resync_seconds`.
pub async fn install_operator(h: &Harness, binary: &Path, resync_seconds: u64) -> Result<Service> {
    let kubeconfig = install_tiqzy(h).await?;
    let mut operator = OperatorProcess::new(binary, &kubeconfig, "operator-a");
    operator.args.extend([
        format!("--resync-seconds={resync_seconds}"),
        format!("--store-check-seconds={resync_seconds}"),
    ]);
    operator.start(h)
}

/// How to start one operator replica.
#[derive(Debug, Clone)]
pub struct OperatorProcess {
    pub binary: std::path::PathBuf,
    pub identity: String,
    /// Port of its /metrics, /healthz and /readyz.
    pub metrics_port: u16,
    /// Flags beyond kubeconfig, identity, metrics address and lease namespace.
    pub args: Vec<String>,
    /// Environment variables beyond the test's own (`OTEL_EXPORTER_OTLP_ENDPOINT`, say).
    pub env: Vec<(String, String)>,
    kubeconfig: std::path::PathBuf,
}

impl OperatorProcess {
    pub fn new(binary: &Path, kubeconfig: &Path, identity: &str) -> Self {
        Self {
            binary: binary.to_owned(),
            identity: identity.to_owned(),
            metrics_port: crate::free_port().unwrap_or(0),
            args: vec!["--log-format=text".to_owned()],
            env: Vec::new(),
            kubeconfig: kubeconfig.to_owned(),
        }
    }

    /// Starts the replica; it lives until the returned Service is stopped or dropped.
    pub fn start(&self, h: &Harness) -> Result<Service> {
        let mut args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--metrics-addr=127.0.0.1:{}", self.metrics_port),
            "--lease-namespace=tiqzy-system".to_owned(),
            format!("--identity={}", self.identity),
        ];
        args.extend(self.args.iter().cloned());
        // `env NAME=value… <binary> <args>` when it needs variables of its own.
        let (program, args) = if self.env.is_empty() {
            (self.binary.clone(), args)
        } else {
            let mut with_env: Vec<String> = self
                .env
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            with_env.push(self.binary.display().to_string());
            with_env.extend(args);
            (std::path::PathBuf::from("/usr/bin/env"), with_env)
        };
        Service::spawn_long_lived(
            &format!("tiqzy-operator-{}", self.identity),
            &program,
            args,
            &h.log_dir(),
        )
    }

    /// The text of its /metrics.
    pub async fn metrics(&self) -> Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok(response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default())
    }
}

/// Installs the CRDs, config/rbac, admin Secrets and the Platform, and returns a kubeconfig
/// authenticating as the operator's ServiceAccount (token from the TokenRequest API).
pub async fn install_tiqzy(h: &Harness) -> Result<std::path::PathBuf> {
    install_tiqzy_from(h, &Manifests::current()?).await
}

/// [`install_tiqzy`] with the CRDs and RBAC of `manifests` (a previous release's, say).
pub async fn install_tiqzy_from(h: &Harness, manifests: &Manifests) -> Result<std::path::PathBuf> {
    let kubeconfig = install_without_platform(h, manifests).await?;
    let admin = h.kube.client().await?;
    let platform: Platform = serde_json::from_value(json!({
        "apiVersion": "tiqzy.io/v1alpha1", "kind": "Platform",
        "metadata": { "name": "default" },
        "spec": {
            "runtimeImage": format!("quay.io/tiqzy/runtime@sha256:{}", "1".repeat(64)),
            "baseDomain": BASE_DOMAIN,
            "postgres": { "host": "127.0.0.1", "port": h.postgres.port, "sslMode": "disable",
                          "adminSecretRef": { "namespace": "tiqzy-system", "name": "postgres-admin" } },
            "redis": { "url": format!("redis://127.0.0.1:{}", h.redis.port),
                       "adminSecretRef": { "namespace": "tiqzy-system", "name": "redis-admin" } },
            "stripe": { "secretKeyRef": { "namespace": "tiqzy-system", "name": "stripe" },
                        "webhookSecretRef": { "namespace": "tiqzy-system", "name": "stripe" },
                        "defaultApplicationFeeBps": 250 },
            "rollout": { "maxConcurrentTenantRollouts": 2 }
        }
    }))?;
    Api::<Platform>::all(admin.clone())
        .patch(
            "default",
            &PatchParams::apply("tiqzy-e2e"),
            &Patch::Apply(&platform),
        )
        .await?;
    Ok(kubeconfig)
}

/// What an administrator puts into a fresh cluster before any Platform: the CRDs,
/// config/rbac, the `tiqzy-system` namespace with the PostgreSQL and Redis admin Secrets and
/// the Stripe Secret. Returns a kubeconfig authenticating as the operator's ServiceAccount
/// (token from the TokenRequest API).
pub async fn install_tiqzy_without_platform(h: &Harness) -> Result<std::path::PathBuf> {
    install_without_platform(h, &Manifests::current()?).await
}

async fn install_without_platform(
    h: &Harness,
    manifests: &Manifests,
) -> Result<std::path::PathBuf> {
    let admin = h.kube.client().await?;
    for crd in &manifests.crds {
        crate::install_crd(&admin, crd).await?;
    }
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": "tiqzy-system" } }))?;
    Api::<Namespace>::all(admin.clone())
        .patch(
            "tiqzy-system",
            &PatchParams::apply("tiqzy-e2e"),
            &Patch::Apply(&ns),
        )
        .await?;
    for (path, text) in &manifests.rbac {
        apply_yaml(&admin, path, text).await?;
    }

    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "tiqzy-system");
    for (name, user, password) in [
        (
            "postgres-admin",
            &h.postgres.admin_user,
            &h.postgres.admin_password,
        ),
        ("redis-admin", &h.redis.admin_user, &h.redis.admin_password),
    ] {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": { "name": name },
            "stringData": { "username": user, "password": password }
        }))?;
        secrets
            .patch(
                name,
                &PatchParams::apply("tiqzy-e2e"),
                &Patch::Apply(&secret),
            )
            .await?;
    }
    // The platform's Stripe keys: stripe-mock accepts any test-mode key.
    let stripe: Secret = serde_json::from_value(json!({
        "metadata": { "name": "stripe" },
        "stringData": { "secretKey": STRIPE_TEST_KEY, "webhookSecret": STRIPE_WEBHOOK_SECRET }
    }))?;
    secrets
        .patch(
            "stripe",
            &PatchParams::apply("tiqzy-e2e"),
            &Patch::Apply(&stripe),
        )
        .await?;
    let request: TokenRequest =
        serde_json::from_value(json!({ "spec": { "expirationSeconds": 7200 } }))?;
    let token = Api::<ServiceAccount>::namespaced(admin, "tiqzy-system")
        .create_token_request("tiqzy-operator", &PostParams::default(), &request)
        .await?
        .status
        .ok_or_else(|| anyhow::anyhow!("TokenRequest returned no token"))?
        .token;
    h.kube.kubeconfig_for_token("tiqzy-operator", &token)
}
