//! What the operator knows of the cluster without asking: one watch-fed cache per kind it
//! writes, plus a short-lived cache of the Platform's own Secrets.
//!
//! A converged tenant's reconcile compares what it wants with these caches and makes no
//! request at all, so resyncing a thousand tenants costs the API server nothing.
//!
//! To keep a thousand tenants in a few tens of MiB, a cached object is not the object: each
//! watched object is fingerprinted (everything but its status and resourceVersion), then cut
//! down to what the reconcile reads (names, owner references, Secret data, the storefront's
//! image and rollout status, the Ingress's load balancer). No label or annotation map is kept
//! (a map of one entry costs about 600 bytes, and a tenant has 15 objects): the fingerprint
//! takes the place of the resourceVersion, which nothing reads from a cached object, and a
//! tenant's objects are found by their owner reference. The applier remembers, per object,
//! what it last applied and the fingerprint the object had then; while both still hold, the
//! object is as wanted and nothing is sent.

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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tiqzy_crds::{Platform, SecretRef};

use crate::build::{CERTIFICATE_ANNOTATION, VERSION_ANNOTATION};

/// A Tenant as the watch delivers it: one that does not deserialize (stored under an older
/// schema, say) arrives as an error instead of breaking the watch for every tenant.
pub type GuardedTenant = kube::core::DeserializeGuard<tiqzy_crds::Tenant>;

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
    /// What the applier last sent, per object.
    pub applied: std::sync::Arc<AppliedRecords>,
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
            applied: Default::default(),
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
        Some(text_data(&secret))
    }
}

/// A Secret's values that are text.
pub fn text_data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| String::from_utf8(v.0.clone()).ok().map(|v| (k.clone(), v)))
        .collect()
}

/// What an object holds apart from its status and the fields that change with it (the first
/// 12 bytes of a SHA-256): equal fingerprints mean nobody changed the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 12]);

impl Fingerprint {
    pub fn of<K: serde::Serialize>(object: &K) -> Self {
        use sha2::{Digest, Sha256};
        let mut value = serde_json::to_value(object).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove("status");
            if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                meta.remove("resourceVersion");
                meta.remove("managedFields");
            }
        }
        let digest = Sha256::digest(serde_json::to_vec(&value).unwrap_or_default());
        let mut bytes = [0; 12];
        bytes.copy_from_slice(&digest[..12]);
        Self(bytes)
    }

    /// The fingerprint of a cached object, taken before it was cut down (see [`reflected`]).
    pub fn of_cached<K: Resource>(cached: &K) -> Option<Self> {
        let text = cached.meta().resource_version.as_deref()?.as_bytes();
        let mut bytes = [0; 12];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        (text.len() == 24).then_some(Self(bytes))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A kind the operator applies, with the cache that holds it.
pub trait Cached:
    Resource<DynamicType = ()>
    + Clone
    + Debug
    + DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    fn cache(caches: &Caches) -> &Store<Self>;

    /// Cuts the object down to what the reconcile reads of it.
    fn slim(&mut self);

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

    /// Names of the cached objects in `namespace` that `owner` owns.
    fn names_of(caches: &Caches, namespace: Option<&str>, owner: &OwnerReference) -> Vec<String> {
        Self::cache(caches)
            .state()
            .iter()
            .filter(|o| o.namespace().as_deref() == namespace)
            .filter(|o| o.owner_references().iter().any(|r| r.uid == owner.uid))
            .map(|o| o.name_any())
            .collect()
    }
}

macro_rules! cached {
    ($($kind:ty => $field:ident, |$o:ident| $slim:block),* $(,)?) => {
        $(impl Cached for $kind {
            fn cache(caches: &Caches) -> &Store<Self> {
                &caches.$field
            }
            fn slim(&mut self) {
                let $o = self;
                $slim
            }
        })*
    };
}

cached! {
    Namespace => namespaces, |o| { o.spec = None; o.status = None; slim_meta(&mut o.metadata) },
    // Data is read (the credentials kept across reconciles), and the Key Vault certificate's
    // name and version.
    Secret => secrets, |o| {
        let kept: BTreeMap<String, String> = o
            .metadata
            .annotations
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k == CERTIFICATE_ANNOTATION || k == VERSION_ANNOTATION)
            .collect();
        slim_meta(&mut o.metadata);
        o.metadata.annotations = (!kept.is_empty()).then_some(kept);
    },
    ConfigMap => config_maps, |o| { o.data = None; o.binary_data = None; slim_meta(&mut o.metadata) },
    ServiceAccount => service_accounts, |o| {
        o.secrets = None;
        o.image_pull_secrets = None;
        slim_meta(&mut o.metadata)
    },
    // The rollout gate reads the image and the rollout's progress.
    Deployment => deployments, |o| {
        if let Some(spec) = o.spec.as_mut() {
            let image = spec
                .template
                .spec
                .as_ref()
                .and_then(|p| p.containers.first())
                .and_then(|c| c.image.clone());
            spec.selector = Default::default();
            spec.strategy = None;
            spec.template = k8s_openapi::api::core::v1::PodTemplateSpec {
                metadata: None,
                spec: Some(k8s_openapi::api::core::v1::PodSpec {
                    containers: vec![k8s_openapi::api::core::v1::Container {
                        image,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            };
        }
        // Only a stuck rollout's condition is kept: the operator reports and halts it.
        if let Some(status) = o.status.as_mut() {
            status.conditions = status.conditions.take().and_then(|c| {
                let stuck: Vec<_> = c
                    .into_iter()
                    .filter(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
                    .collect();
                (!stuck.is_empty()).then_some(stuck)
            });
        }
        slim_meta(&mut o.metadata)
    },
    Service => services, |o| { o.spec = None; o.status = None; slim_meta(&mut o.metadata) },
    HorizontalPodAutoscaler => autoscalers, |o| {
        o.spec = None;
        o.status = None;
        slim_meta(&mut o.metadata)
    },
    PodDisruptionBudget => disruption_budgets, |o| {
        o.spec = None;
        o.status = None;
        slim_meta(&mut o.metadata)
    },
    NetworkPolicy => network_policies, |o| { o.spec = None; slim_meta(&mut o.metadata) },
    // `Routed` reads the load balancer's status.
    Ingress => ingresses, |o| { o.spec = None; slim_meta(&mut o.metadata) },
    // Read whole: the reconcile works from its spec.
    Platform => platforms, |_platform| {},
}

/// Keeps the name, namespace, generation and the owner references (the controller maps a
/// changed object to its Tenant through them, and a tenant's objects are found by them).
fn slim_meta(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.labels = None;
    meta.annotations = None;
    meta.managed_fields = None;
    meta.finalizers = None;
    meta.uid = None;
    meta.creation_timestamp = None;
}

/// What the applier last sent for one object and the fingerprint the object had after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub desired: Fingerprint,
    pub fingerprint: Fingerprint,
}

/// [`Applied`] per tenant, per object (`Kind/namespace/name`).
#[derive(Debug, Default)]
pub struct AppliedRecords {
    tenants: Mutex<HashMap<String, HashMap<String, Applied>>>,
}

impl AppliedRecords {
    pub fn get(&self, tenant: &str, object: &str) -> Option<Applied> {
        self.tenants
            .lock()
            .expect("records lock")
            .get(tenant)?
            .get(object)
            .copied()
    }

    pub fn set(&self, tenant: &str, object: String, applied: Applied) {
        self.tenants
            .lock()
            .expect("records lock")
            .entry(tenant.to_owned())
            .or_default()
            .insert(object, applied);
    }

    pub fn forget(&self, tenant: &str) {
        self.tenants.lock().expect("records lock").remove(tenant);
    }
}

/// A cluster-wide watch of `K` (selected by `config`) feeding `writer`, with the parts of each object the
/// operator never reads dropped before caching. Yields every object that changed.
pub fn reflected<K>(
    client: &kube::Client,
    config: watcher::Config,
    writer: Writer<K>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Cached,
{
    watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        // The watcher has taken the resourceVersion it resumes from before this runs.
        .modify(cut_down)
        .reflect(writer)
        .touched_objects()
        .boxed()
}

/// Cuts a watched object down for its cache, its fingerprint in place of its resourceVersion.
fn cut_down<K: Cached>(object: &mut K) {
    let fingerprint = Fingerprint::of(object);
    object.slim();
    object.meta_mut().resource_version = Some(fingerprint.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cached_object_keeps_what_the_reconcile_reads_and_its_fingerprint() {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {
                "name": "storefront-tls", "namespace": "tiqzy-acme", "resourceVersion": "41",
                "labels": { "tiqzy.io/tenant": "acme", "app.kubernetes.io/managed-by": "tiqzy-operator" },
                "annotations": { CERTIFICATE_ANNOTATION: "acme-cert", VERSION_ANNOTATION: "v7",
                                 "kubectl.kubernetes.io/last-applied-configuration": "{}" },
                "ownerReferences": [{ "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
                                      "name": "acme", "uid": "u-1", "controller": true }],
            },
            "data": { "tls.crt": "Y2VydA==" },
        }))
        .expect("secret");
        let mut cached = secret.clone();
        cut_down(&mut cached);
        assert_eq!(cached.metadata.labels, None);
        assert_eq!(
            cached.annotations().keys().collect::<Vec<_>>(),
            [CERTIFICATE_ANNOTATION, VERSION_ANNOTATION]
        );
        assert_eq!(cached.data, secret.data, "the data is read");
        assert_eq!(cached.owner_references(), secret.owner_references());
        assert_eq!(
            Fingerprint::of_cached(&cached),
            Some(Fingerprint::of(&secret))
        );
        // Another resourceVersion with the same content: the same fingerprint.
        let mut touched = secret.clone();
        touched.metadata.resource_version = Some("42".to_owned());
        cut_down(&mut touched);
        assert_eq!(
            Fingerprint::of_cached(&touched),
            Fingerprint::of_cached(&cached)
        );
        // A change by someone else: another fingerprint.
        let mut edited = secret;
        edited.data = Some(BTreeMap::from([(
            "tls.crt".to_owned(),
            ByteString(b"x".to_vec()),
        )]));
        cut_down(&mut edited);
        assert_ne!(
            Fingerprint::of_cached(&edited),
            Fingerprint::of_cached(&cached)
        );

        let mut deployment: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "storefront", "namespace": "tiqzy-acme",
                          "labels": { "tiqzy.io/tenant": "acme" },
                          "annotations": { "deployment.kubernetes.io/revision": "3" } },
            "spec": { "selector": {}, "template": { "spec": { "containers": [
                { "name": "runtime", "image": "runtime@sha256:1", "args": ["serve"] }] } } },
        }))
        .expect("deployment");
        cut_down(&mut deployment);
        assert_eq!(deployment.metadata.labels, None);
        assert_eq!(deployment.metadata.annotations, None);
        let containers = deployment
            .spec
            .and_then(|s| s.template.spec)
            .map(|p| p.containers)
            .unwrap_or_default();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0].image.as_deref(), Some("runtime@sha256:1"));
        assert_eq!(
            containers[0].args, None,
            "the rest of the template is not read"
        );
    }
}
