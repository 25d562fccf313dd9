//! What the operator knows of the cluster without asking: one watch-fed cache per kind it
//! writes, plus a short-lived cache of the Platform's own Secrets.
//!
//! A converged tenant's reconcile compares what it wants with these caches and makes no
//! request at all, so resyncing a thousand tenants costs the API server nothing. Cached
//! objects are kept without `managedFields` and the last-applied annotation, which are most
//! of an object's size and never read here.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tiqzy_crds::{Platform, SecretRef};

use crate::build::TENANT_LABEL;

/// Label selecting every object the operator manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=tiqzy-operator";

/// How long a Platform Secret (database and cache admins, Stripe keys) is used before it is
/// read again: a rotated admin password is picked up within this time.
const PLATFORM_SECRET_TTL: Duration = Duration::from_secs(30);

/// Watch-fed caches of every kind the operator applies.
#[derive(Clone)]
pub struct Caches {
    pub namespaces: Store<Namespace>,
    pub secrets: Store<Secret>,
    pub config_maps: Store<ConfigMap>,
    pub service_accounts: Store<ServiceAccount>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub autoscalers: Store<HorizontalPodAutoscaler>,
    pub disruption_budgets: Store<PodDisruptionBudget>,
    pub network_policies: Store<NetworkPolicy>,
    pub ingresses: Store<Ingress>,
    pub platforms: Store<Platform>,
}

/// The writing halves of [`Caches`], consumed by the watches in the controller.
pub struct CacheWriters {
    pub namespaces: Writer<Namespace>,
    pub secrets: Writer<Secret>,
    pub config_maps: Writer<ConfigMap>,
    pub service_accounts: Writer<ServiceAccount>,
    pub deployments: Writer<Deployment>,
    pub services: Writer<Service>,
    pub autoscalers: Writer<HorizontalPodAutoscaler>,
    pub disruption_budgets: Writer<PodDisruptionBudget>,
    pub network_policies: Writer<NetworkPolicy>,
    pub ingresses: Writer<Ingress>,
    pub platforms: Writer<Platform>,
}

impl Debug for CacheWriters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheWriters").finish_non_exhaustive()
    }
}

impl Debug for PlatformSecrets {
    // Values never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformSecrets").finish_non_exhaustive()
    }
}

impl Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

impl Caches {
    pub fn new() -> (Self, CacheWriters) {
        let (namespaces, namespaces_w) = reflector::store();
        let (secrets, secrets_w) = reflector::store();
        let (config_maps, config_maps_w) = reflector::store();
        let (service_accounts, service_accounts_w) = reflector::store();
        let (deployments, deployments_w) = reflector::store();
        let (services, services_w) = reflector::store();
        let (autoscalers, autoscalers_w) = reflector::store();
        let (disruption_budgets, disruption_budgets_w) = reflector::store();
        let (network_policies, network_policies_w) = reflector::store();
        let (ingresses, ingresses_w) = reflector::store();
        let (platforms, platforms_w) = reflector::store();
        let caches = Self {
            namespaces,
            secrets,
            config_maps,
            service_accounts,
            deployments,
            services,
            autoscalers,
            disruption_budgets,
            network_policies,
            ingresses,
            platforms,
        };
        let writers = CacheWriters {
            namespaces: namespaces_w,
            secrets: secrets_w,
            config_maps: config_maps_w,
            service_accounts: service_accounts_w,
            deployments: deployments_w,
            services: services_w,
            autoscalers: autoscalers_w,
            disruption_budgets: disruption_budgets_w,
            network_policies: network_policies_w,
            ingresses: ingresses_w,
            platforms: platforms_w,
        };
        (caches, writers)
    }

    /// Waits until every cache has been filled by its first list.
    pub async fn ready(&self) {
        // Err only when a writer is dropped, i.e. the controller is shutting down.
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.secrets.wait_until_ready().await;
        let _ = self.config_maps.wait_until_ready().await;
        let _ = self.service_accounts.wait_until_ready().await;
        let _ = self.deployments.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
        let _ = self.autoscalers.wait_until_ready().await;
        let _ = self.disruption_budgets.wait_until_ready().await;
        let _ = self.network_policies.wait_until_ready().await;
        let _ = self.ingresses.wait_until_ready().await;
        let _ = self.platforms.wait_until_ready().await;
    }

    /// The data of a Secret the operator wrote, as text.
    pub fn secret_data(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let secret = self.secrets.get(&ObjectRef::new(name).within(namespace))?;
        Some(
            secret
                .data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|v| (k, v)))
                .collect(),
        )
    }
}

/// A kind the operator applies, with the cache that holds it.
pub trait Cached:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
    fn cache(caches: &Caches) -> &Store<Self>;

    /// The cached object of this kind.
    fn cached(
        caches: &Caches,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<std::sync::Arc<Self>> {
        let reference = ObjectRef::new(name);
        let reference = match namespace {
            Some(ns) => reference.within(ns),
            None => reference,
        };
        Self::cache(caches).get(&reference)
    }

    /// Names of the cached objects of `tenant` in `namespace`.
    fn names_of(caches: &Caches, namespace: Option<&str>, tenant: &str) -> Vec<String> {
        Self::cache(caches)
            .state()
            .iter()
            .filter(|o| o.namespace().as_deref() == namespace)
            .filter(|o| o.labels().get(TENANT_LABEL).map(String::as_str) == Some(tenant))
            .map(|o| o.name_any())
            .collect()
    }
}

macro_rules! cached {
    ($($kind:ty => $field:ident),* $(,)?) => {
        $(impl Cached for $kind {
            fn cache(caches: &Caches) -> &Store<Self> {
                &caches.$field
            }
        })*
    };
}

cached! {
    Namespace => namespaces,
    Secret => secrets,
    ConfigMap => config_maps,
    ServiceAccount => service_accounts,
    Deployment => deployments,
    Service => services,
    HorizontalPodAutoscaler => autoscalers,
    PodDisruptionBudget => disruption_budgets,
    NetworkPolicy => network_policies,
    Ingress => ingresses,
}

/// A cluster-wide watch of `K` (selected by `config`) feeding `writer`, with the parts of each object the
/// operator never reads dropped before caching. Yields every object that changed.
pub fn reflected<K>(
    client: &kube::Client,
    config: watcher::Config,
    writer: Writer<K>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .touched_objects()
        .boxed()
}

fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// When a Platform Secret was read, and its data.
type ReadSecret = (Instant, BTreeMap<String, ByteString>);

/// Secrets the Platform refers to, read at most once per [`PLATFORM_SECRET_TTL`].
#[derive(Default)]
pub struct PlatformSecrets {
    read: Mutex<HashMap<(String, String), ReadSecret>>,
}

impl PlatformSecrets {
    /// The data of the Secret `r` names; the error names the Secret, never a value.
    pub async fn get(
        &self,
        client: &kube::Client,
        r: &SecretRef,
    ) -> Result<BTreeMap<String, ByteString>, String> {
        let key = (r.namespace.clone(), r.name.clone());
        if let Some((read, data)) = self.read.lock().expect("secrets lock").get(&key)
            && read.elapsed() < PLATFORM_SECRET_TTL
        {
            return Ok(data.clone());
        }
        let secret = Api::<Secret>::namespaced(client.clone(), &r.namespace)
            .get_opt(&r.name)
            .await
            .map_err(|e| format!("reading Secret {}/{}: {e}", r.namespace, r.name))?
            .ok_or_else(|| format!("Secret {}/{} does not exist", r.namespace, r.name))?;
        let data = secret.data.unwrap_or_default();
        self.read
            .lock()
            .expect("secrets lock")
            .insert(key, (Instant::now(), data.clone()));
        Ok(data)
    }
}
