//! What every reconcile shares: the client, the tenant cache, metrics, the Event recorder,
//! per-tenant backoff and the rollout gate.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;

use crate::cache::{Caches, PlatformSecrets};
use crate::external::keyvault::{KeyVault, VaultConfig};
use crate::metrics::Metrics;
use crate::reconcile::{GuardedTenant, Observed};

#[derive(Debug, Clone)]
pub struct Settings {
    /// How often a converged tenant is looked at again.
    pub resync: Duration,
    /// Identity in Events.
    pub instance: String,
    /// Tenants reconciled at once.
    pub concurrency: u16,
    /// How often Key Vault is asked for a new version of a tenant's certificate.
    pub key_vault_poll: Duration,
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
    failures: Mutex<HashMap<String, u32>>,
    rolling: Mutex<BTreeSet<String>>,
    stores: Mutex<HashMap<String, ConvergedStores>>,
    /// The Key Vault client (one Platform, one vault), kept for its token.
    vault: Mutex<Option<Arc<KeyVault>>>,
    certificates: Mutex<HashMap<String, PolledCertificate>>,
}

/// When a tenant's Key Vault certificate was last looked at, and what was found.
#[derive(Debug, Clone)]
pub struct PolledCertificate {
    /// What the look depended on (certificate name, hosts, vault settings).
    pub inputs: String,
    pub checked: std::time::Instant,
    /// Failed looks in a row (0 after a success).
    pub failures: u32,
    pub observed: Observed,
    /// The version found, when it could be served.
    pub version: Option<String>,
    /// Versions whose near expiry was announced.
    pub warned: BTreeSet<String>,
}

/// What the database and cache servers were last found to hold for a tenant.
struct ConvergedStores {
    inputs: String,
    checked: std::time::Instant,
    conditions: Vec<Observed>,
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
            failures: Mutex::default(),
            rolling: Mutex::default(),
            stores: Mutex::default(),
            vault: Mutex::default(),
            certificates: Mutex::default(),
        }
    }

    /// The cached Tenants, shared (not copied: a reconcile reads all of them).
    pub fn tenant_snapshot(&self) -> Vec<std::sync::Arc<GuardedTenant>> {
        self.tenants.state()
    }

    /// Counts a failure of `tenant` and returns how many in a row.
    pub fn failed(&self, tenant: &str) -> u32 {
        let mut failures = self.failures.lock().expect("failures lock");
        let count = failures.entry(tenant.to_owned()).or_default();
        *count += 1;
        *count - 1
    }

    pub fn succeeded(&self, tenant: &str) {
        self.failures.lock().expect("failures lock").remove(tenant);
    }

    /// The conditions found when `tenant`'s stores were last checked with the same inputs,
    /// if that was less than one resync ago.
    pub fn stores_converged(&self, tenant: &str, inputs: &str) -> Option<Vec<Observed>> {
        let stores = self.stores.lock().expect("stores lock");
        let entry = stores.get(tenant)?;
        (entry.inputs == inputs && entry.checked.elapsed() < self.settings.resync)
            .then(|| entry.conditions.clone())
    }

    pub fn remember_stores(&self, tenant: &str, inputs: String, conditions: Vec<Observed>) {
        let entry = ConvergedStores {
            inputs,
            checked: std::time::Instant::now(),
            conditions,
        };
        self.stores
            .lock()
            .expect("stores lock")
            .insert(tenant.to_owned(), entry);
    }

    /// Forgets a deleted tenant.
    pub fn forget(&self, tenant: &str) {
        self.caches.applied.forget(tenant);
        self.stores.lock().expect("stores lock").remove(tenant);
        self.certificates
            .lock()
            .expect("certificates lock")
            .remove(tenant);
        self.metrics.forget_certificate(tenant);
        self.rollout_finished(tenant);
        self.succeeded(tenant);
    }

    /// The Key Vault client for `config`, reused while the config stays the same.
    pub fn key_vault(&self, config: VaultConfig) -> Result<Arc<KeyVault>, String> {
        let mut vault = self.vault.lock().expect("vault lock");
        if let Some(existing) = vault.as_ref().filter(|v| *v.config() == config) {
            return Ok(existing.clone());
        }
        let client = Arc::new(KeyVault::new(config)?);
        *vault = Some(client.clone());
        Ok(client)
    }

    /// The last look at `tenant`'s Key Vault certificate.
    pub fn polled_certificate(&self, tenant: &str) -> Option<PolledCertificate> {
        self.certificates
            .lock()
            .expect("certificates lock")
            .get(tenant)
            .cloned()
    }

    pub fn remember_certificate(&self, tenant: &str, polled: PolledCertificate) {
        self.certificates
            .lock()
            .expect("certificates lock")
            .insert(tenant.to_owned(), polled);
    }

    /// Admits `tenant` to roll to a new image when fewer than `limit` tenants are rolling.
    pub fn try_start_rollout(&self, tenant: &str, limit: usize) -> bool {
        let mut rolling = self.rolling.lock().expect("rollout lock");
        if rolling.contains(tenant) {
            return true;
        }
        if rolling.len() < limit {
            rolling.insert(tenant.to_owned());
            return true;
        }
        false
    }

    /// Records that `tenant` is mid-rollout (seen after a restart, say).
    pub fn rollout_observed(&self, tenant: &str) {
        self.rolling
            .lock()
            .expect("rollout lock")
            .insert(tenant.to_owned());
    }

    pub fn rollout_finished(&self, tenant: &str) {
        self.rolling.lock().expect("rollout lock").remove(tenant);
    }
}
