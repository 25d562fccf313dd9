//! What every reconcile shares: the client, the watch-fed caches, metrics, the Event recorder
//! and the operator's settings. What a step remembers between reconciles lives with the step.

use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;

use crate::cache::{Caches, GuardedTenant, PlatformSecrets};
use crate::external::keyvault::Transport;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct Settings {
    /// How often a converged tenant is looked at again.
    pub resync: Duration,
    /// How often a converged tenant's database and Redis user are checked on their servers.
    pub store_check: Duration,
    /// Identity in Events.
    pub instance: String,
    /// Tenants reconciled at once.
    pub concurrency: u16,
    /// How often Key Vault is asked for a new version of a tenant's certificate.
    pub key_vault_poll: Duration,
    /// Extra trusted roots and address overrides for Key Vault and Entra ID.
    pub key_vault_transport: Transport,
    /// The operator's own namespace (`POD_NAMESPACE`), where the payments service runs.
    pub namespace: String,
    /// Where failed reconciles and panics are reported (Sentry, when `SENTRY_DSN` is set).
    pub errors: tiqzy_telemetry::Reporter,
}

pub struct Context {
    pub client: kube::Client,
    pub tenants: Store<GuardedTenant>,
    /// Everything else the operator reads from the cluster, kept by watches.
    pub caches: Caches,
    pub platform_secrets: PlatformSecrets,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub settings: Settings,
    /// Whether the API server serves route.openshift.io/v1 (discovered at start).
    pub route_api: bool,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: kube::Client,
        tenants: Store<GuardedTenant>,
        caches: Caches,
        metrics: Metrics,
        settings: Settings,
        route_api: bool,
    ) -> Self {
        let reporter = Reporter {
            controller: "tiqzy-operator".into(),
            instance: Some(settings.instance.clone()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            tenants,
            caches,
            platform_secrets: PlatformSecrets::default(),
            metrics,
            settings,
            route_api,
        }
    }

    /// The cached Tenants, shared (not copied: a reconcile reads all of them).
    pub fn tenant_snapshot(&self) -> Vec<std::sync::Arc<GuardedTenant>> {
        self.tenants.state()
    }
}
