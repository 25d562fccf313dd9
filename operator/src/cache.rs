//! What the operator knows of the cluster without asking: one watch-fed cache per kind it
//! writes, plus a short-lived cache of the Platform's own Secrets.
//!
//! A converged tenant's reconcile compares what it wants with these caches and makes no
//! request at all, so resyncing a thousand tenants costs the API server nothing.
//!
//! To keep a thousand tenants in a few tens of MiB, a cache does not keep objects (see
//! [`Compact`]): per object it keeps its owner's uid, a fingerprint of everything but its
//! status and resourceVersion, and what the reconcile reads of it (Secret data, the
//! storefront's image and rollout status, the Ingress's load balancer). A tenant's objects
//! are found by their owner's uid. The applier remembers, per object, what it last applied and
//! the fingerprint the object had then; while both still hold, the object is as wanted and
//! nothing is sent.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, PodTemplateSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, IngressStatus, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::Api;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tiqzy_crds::{Platform, SecretRef};
use tokio::sync::watch;

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
    pub namespaces: Compact<Namespace>,
    pub secrets: Compact<Secret>,
    pub config_maps: Compact<ConfigMap>,
    pub service_accounts: Compact<ServiceAccount>,
    pub deployments: Compact<Deployment>,
    pub services: Compact<Service>,
    pub autoscalers: Compact<HorizontalPodAutoscaler>,
    pub disruption_budgets: Compact<PodDisruptionBudget>,
    pub network_policies: Compact<NetworkPolicy>,
    pub ingresses: Compact<Ingress>,
    pub platforms: Store<Platform>,
    /// What the applier last sent, per object.
    pub applied: std::sync::Arc<AppliedRecords>,
}

/// The writing halves of [`Caches`], consumed by the watches in the controller.
pub struct CacheWriters {
    pub namespaces: CompactWriter<Namespace>,
    pub secrets: CompactWriter<Secret>,
    pub config_maps: CompactWriter<ConfigMap>,
    pub service_accounts: CompactWriter<ServiceAccount>,
    pub deployments: CompactWriter<Deployment>,
    pub services: CompactWriter<Service>,
    pub autoscalers: CompactWriter<HorizontalPodAutoscaler>,
    pub disruption_budgets: CompactWriter<PodDisruptionBudget>,
    pub network_policies: CompactWriter<NetworkPolicy>,
    pub ingresses: CompactWriter<Ingress>,
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
        let (namespaces, namespaces_w) = compact();
        let (secrets, secrets_w) = compact();
        let (config_maps, config_maps_w) = compact();
        let (service_accounts, service_accounts_w) = compact();
        let (deployments, deployments_w) = compact();
        let (services, services_w) = compact();
        let (autoscalers, autoscalers_w) = compact();
        let (disruption_budgets, disruption_budgets_w) = compact();
        let (network_policies, network_policies_w) = compact();
        let (ingresses, ingresses_w) = compact();
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

    /// Waits until every cache has been filled by its first list (or the controller is
    /// shutting down).
    pub async fn ready(&self) {
        self.namespaces.ready().await;
        self.secrets.ready().await;
        self.config_maps.ready().await;
        self.service_accounts.ready().await;
        self.deployments.ready().await;
        self.services.ready().await;
        self.autoscalers.ready().await;
        self.disruption_budgets.ready().await;
        self.network_policies.ready().await;
        self.ingresses.ready().await;
        let _ = self.platforms.wait_until_ready().await;
    }

    /// The data of a Secret the operator wrote, as text.
    pub fn secret_data(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let secret = self.secrets.get(Some(namespace), name)?;
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
}

/// A kind the operator applies, with the cache that holds it.
pub trait Cached:
    Resource<DynamicType = ()>
    + Clone
    + Debug
    + DeserializeOwned
    + serde::Serialize
    + Default
    + Send
    + Sync
    + 'static
{
    /// What the reconcile reads of an object of this kind, besides its name.
    type Kept: Send + Sync + 'static;

    fn cache(caches: &Caches) -> &Compact<Self>;

    /// Takes what is kept of a watched object.
    fn keep(&self) -> Self::Kept;

    /// Puts what was kept back into an (otherwise empty) object.
    fn restore(&mut self, kept: &Self::Kept);

    /// The cached object of this kind: its name, namespace and what [`Cached::keep`] kept,
    /// nothing else.
    fn cached(caches: &Caches, namespace: Option<&str>, name: &str) -> Option<Self> {
        Self::cache(caches).get(namespace, name)
    }

    /// Names of the cached objects in `namespace` that `owner` owns.
    fn names_of(caches: &Caches, namespace: Option<&str>, owner: &OwnerReference) -> Vec<String> {
        Self::cache(caches).names_owned_by(namespace, &owner.uid)
    }
}

/// One cached object, without its name.
struct Entry<D> {
    /// The uid of its first owner (the operator's objects have one, their Tenant or the
    /// Platform).
    owner: Option<Box<str>>,
    fingerprint: Fingerprint,
    kept: D,
}

/// Objects by (namespace, name); a cluster-scoped object's namespace is empty.
type Entries<D> = BTreeMap<(Box<str>, Box<str>), Entry<D>>;

/// A watch-fed cache of one kind. It keeps, per object, its owner's uid, its fingerprint and
/// what the reconcile reads of it, never the object: a k8s-openapi object takes hundreds of
/// bytes to a few KiB even with every field empty (a Deployment carries a whole pod spec), so
/// a thousand tenants' objects were most of the operator's memory. A read builds a small
/// object back from what was kept.
pub struct Compact<K: Cached> {
    entries: std::sync::Arc<RwLock<Entries<K::Kept>>>,
    ready: watch::Receiver<bool>,
}

impl<K: Cached> Debug for Compact<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compact")
            .field("kind", &K::kind(&()))
            .field("objects", &self.len())
            .finish()
    }
}

impl<K: Cached> Debug for CompactWriter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactWriter")
            .field("kind", &K::kind(&()))
            .finish_non_exhaustive()
    }
}

impl<K: Cached> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            ready: self.ready.clone(),
        }
    }
}

/// The writing half of a [`Compact`] cache, fed by its watch.
pub struct CompactWriter<K: Cached> {
    entries: std::sync::Arc<RwLock<Entries<K::Kept>>>,
    ready: watch::Sender<bool>,
    /// The objects of a list in progress: they replace the cache when it is complete, so an
    /// object deleted while the watch was down goes away.
    listing: Option<Entries<K::Kept>>,
}

/// A new cache of kind `K` and its writer.
pub fn compact<K: Cached>() -> (Compact<K>, CompactWriter<K>) {
    let entries = std::sync::Arc::new(RwLock::new(BTreeMap::new()));
    let (sender, ready) = watch::channel(false);
    let reader = Compact {
        entries: entries.clone(),
        ready,
    };
    let writer = CompactWriter {
        entries,
        ready: sender,
        listing: None,
    };
    (reader, writer)
}

fn key_of<K: Resource>(object: &K) -> (Box<str>, Box<str>) {
    let meta = object.meta();
    (
        meta.namespace.as_deref().unwrap_or_default().into(),
        meta.name.as_deref().unwrap_or_default().into(),
    )
}

impl<K: Cached> Compact<K> {
    /// Waits until the cache has been filled by its first list, or its watch has stopped
    /// before that (the operator is shutting down).
    pub async fn ready(&self) {
        let _ = self.ready.clone().wait_for(|ready| *ready).await;
    }

    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<K> {
        self.get_with_fingerprint(namespace, name)
            .map(|(object, _)| object)
    }

    /// The cached object and the fingerprint the watch last showed for it.
    pub fn get_with_fingerprint(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<(K, Fingerprint)> {
        let entries = self.entries.read().expect("cache lock");
        let key: (Box<str>, Box<str>) = (namespace.unwrap_or_default().into(), name.into());
        let entry = entries.get(&key)?;
        Some((restored(namespace, name, entry), entry.fingerprint))
    }

    /// Whether every cached object called `name`, in whichever namespace, passes `check`.
    pub fn every_named(&self, name: &str, check: impl Fn(&K) -> bool) -> bool {
        let entries = self.entries.read().expect("cache lock");
        entries
            .iter()
            .filter(|((_, n), _)| &**n == name)
            .all(|((ns, _), entry)| check(&restored(Some(ns), name, entry)))
    }

    fn names_owned_by(&self, namespace: Option<&str>, uid: &str) -> Vec<String> {
        let namespace: Box<str> = namespace.unwrap_or_default().into();
        let entries = self.entries.read().expect("cache lock");
        entries
            .range((namespace.clone(), Box::<str>::default())..)
            .take_while(|((ns, _), _)| *ns == namespace)
            .filter(|(_, entry)| entry.owner.as_deref() == Some(uid))
            .map(|((_, name), _)| name.to_string())
            .collect()
    }

    /// How many objects the cache holds.
    pub fn len(&self) -> usize {
        self.entries.read().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An object built back from what its cache kept.
fn restored<K: Cached>(namespace: Option<&str>, name: &str, entry: &Entry<K::Kept>) -> K {
    let mut object = K::default();
    let meta = object.meta_mut();
    meta.name = Some(name.to_owned());
    meta.namespace = namespace.filter(|ns| !ns.is_empty()).map(str::to_owned);
    object.restore(&entry.kept);
    object
}

impl<K: Cached> CompactWriter<K> {
    /// Applies one event of the kind's watch.
    pub fn apply(&mut self, event: &watcher::Event<K>) {
        let entry = |object: &K| Entry {
            owner: object
                .owner_references()
                .first()
                .map(|owner| owner.uid.as_str().into()),
            fingerprint: Fingerprint::of(object),
            kept: object.keep(),
        };
        match event {
            watcher::Event::Init => self.listing = Some(BTreeMap::new()),
            watcher::Event::InitApply(object) => {
                let listing = self.listing.get_or_insert_with(BTreeMap::new);
                listing.insert(key_of(object), entry(object));
            }
            watcher::Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                *self.entries.write().expect("cache lock") = listed;
                self.ready.send_replace(true);
            }
            watcher::Event::Apply(object) => {
                let entry = entry(object);
                self.entries
                    .write()
                    .expect("cache lock")
                    .insert(key_of(object), entry);
            }
            watcher::Event::Delete(object) => {
                self.entries
                    .write()
                    .expect("cache lock")
                    .remove(&key_of(object));
            }
        }
    }
}

/// Kinds of which nothing but the name, owner and fingerprint is read.
macro_rules! nothing_kept {
    ($($kind:ty => $field:ident),* $(,)?) => {
        $(impl Cached for $kind {
            type Kept = ();
            fn cache(caches: &Caches) -> &Compact<Self> {
                &caches.$field
            }
            fn keep(&self) {}
            fn restore(&mut self, (): &()) {}
        })*
    };
}

nothing_kept! {
    Namespace => namespaces,
    ConfigMap => config_maps,
    ServiceAccount => service_accounts,
    Service => services,
    HorizontalPodAutoscaler => autoscalers,
    PodDisruptionBudget => disruption_budgets,
    NetworkPolicy => network_policies,
}

/// What is read of a Secret: its data (the credentials kept across reconciles, the
/// certificate served) and the Key Vault certificate's name and version.
pub struct KeptSecret {
    data: Option<BTreeMap<String, ByteString>>,
    annotations: Option<BTreeMap<String, String>>,
}

impl Debug for KeptSecret {
    // Values never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptSecret").finish_non_exhaustive()
    }
}

impl Cached for Secret {
    type Kept = KeptSecret;

    fn cache(caches: &Caches) -> &Compact<Self> {
        &caches.secrets
    }

    fn keep(&self) -> KeptSecret {
        let annotations: BTreeMap<String, String> = self
            .annotations()
            .iter()
            .filter(|(k, _)| *k == CERTIFICATE_ANNOTATION || *k == VERSION_ANNOTATION)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        KeptSecret {
            data: self.data.clone(),
            annotations: (!annotations.is_empty()).then_some(annotations),
        }
    }

    fn restore(&mut self, kept: &KeptSecret) {
        self.data.clone_from(&kept.data);
        self.metadata.annotations.clone_from(&kept.annotations);
    }
}

/// What the rollout gate and the status read of the storefront's Deployment: its image, the
/// replicas wanted, and the rollout's progress.
#[derive(Debug)]
pub struct KeptDeployment {
    generation: Option<i64>,
    replicas: Option<i32>,
    image: Option<String>,
    status: Option<DeploymentStatus>,
}

impl Cached for Deployment {
    type Kept = KeptDeployment;

    fn cache(caches: &Caches) -> &Compact<Self> {
        &caches.deployments
    }

    fn keep(&self) -> KeptDeployment {
        let spec = self.spec.as_ref();
        let image = spec
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone());
        // Of the conditions only a stuck rollout's is read: the operator reports and halts it.
        let status = self.status.clone().map(|mut status| {
            status.conditions = status.conditions.take().and_then(|c| {
                let stuck: Vec<_> = c
                    .into_iter()
                    .filter(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
                    .collect();
                (!stuck.is_empty()).then_some(stuck)
            });
            status
        });
        KeptDeployment {
            generation: self.metadata.generation,
            replicas: spec.and_then(|s| s.replicas),
            image,
            status,
        }
    }

    fn restore(&mut self, kept: &KeptDeployment) {
        self.metadata.generation = kept.generation;
        self.spec = Some(DeploymentSpec {
            replicas: kept.replicas,
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    containers: vec![Container {
                        image: kept.image.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        });
        self.status.clone_from(&kept.status);
    }
}

/// `Routed` reads the load balancer's status.
impl Cached for Ingress {
    type Kept = Option<IngressStatus>;

    fn cache(caches: &Caches) -> &Compact<Self> {
        &caches.ingresses
    }

    fn keep(&self) -> Option<IngressStatus> {
        self.status.clone()
    }

    fn restore(&mut self, kept: &Option<IngressStatus>) {
        self.status.clone_from(kept);
    }
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

/// A cluster-wide watch of `K` (selected by `config`) feeding the cache `writer`. Yields every
/// object that changed, whole.
pub fn reflected<K>(
    client: &kube::Client,
    config: watcher::Config,
    mut writer: CompactWriter<K>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Cached,
{
    watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .map_ok(move |event| {
            writer.apply(&event);
            event
        })
        .touched_objects()
        .boxed()
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

    fn owner(uid: &str) -> serde_json::Value {
        json!([{ "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant", "name": "acme",
                 "uid": uid, "controller": true }])
    }

    #[test]
    fn a_cached_object_keeps_what_the_reconcile_reads_and_its_fingerprint() {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {
                "name": "storefront-tls", "namespace": "tiqzy-acme", "resourceVersion": "41",
                "labels": { "tiqzy.io/tenant": "acme", "app.kubernetes.io/managed-by": "tiqzy-operator" },
                "annotations": { CERTIFICATE_ANNOTATION: "acme-cert", VERSION_ANNOTATION: "v7",
                                 "kubectl.kubernetes.io/last-applied-configuration": "{}" },
                "ownerReferences": owner("u-1"),
            },
            "data": { "tls.crt": "Y2VydA==" },
        }))
        .expect("secret");
        let (cache, mut writer) = compact::<Secret>();
        writer.apply(&watcher::Event::Apply(secret.clone()));
        let (cached, fingerprint) = cache
            .get_with_fingerprint(Some("tiqzy-acme"), "storefront-tls")
            .expect("cached");
        assert_eq!(cached.metadata.labels, None);
        assert_eq!(
            cached.annotations().keys().collect::<Vec<_>>(),
            [CERTIFICATE_ANNOTATION, VERSION_ANNOTATION]
        );
        assert_eq!(cached.data, secret.data, "the data is read");
        assert_eq!(cached.namespace().as_deref(), Some("tiqzy-acme"));
        assert_eq!(fingerprint, Fingerprint::of(&secret));
        assert_eq!(cache.get(Some("tiqzy-other"), "storefront-tls"), None);

        // Another resourceVersion with the same content: the same fingerprint.
        let mut touched = secret.clone();
        touched.metadata.resource_version = Some("42".to_owned());
        writer.apply(&watcher::Event::Apply(touched));
        let (_, again) = cache
            .get_with_fingerprint(Some("tiqzy-acme"), "storefront-tls")
            .expect("cached");
        assert_eq!(again, fingerprint);
        // A change by someone else: another fingerprint.
        let mut edited = secret.clone();
        edited.data = Some(BTreeMap::from([(
            "tls.crt".to_owned(),
            ByteString(b"x".to_vec()),
        )]));
        writer.apply(&watcher::Event::Apply(edited));
        let (_, changed) = cache
            .get_with_fingerprint(Some("tiqzy-acme"), "storefront-tls")
            .expect("cached");
        assert_ne!(changed, fingerprint);
        writer.apply(&watcher::Event::Delete(secret));
        assert!(cache.is_empty(), "a deleted object leaves the cache");

        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "storefront", "namespace": "tiqzy-acme", "generation": 3,
                          "labels": { "tiqzy.io/tenant": "acme" },
                          "annotations": { "deployment.kubernetes.io/revision": "3" } },
            "spec": { "replicas": 2, "selector": {}, "template": { "spec": { "containers": [
                { "name": "runtime", "image": "runtime@sha256:1", "args": ["serve"] }] } } },
            "status": { "observedGeneration": 3, "availableReplicas": 1, "conditions": [
                { "type": "Available", "status": "True" },
                { "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded" }] },
        }))
        .expect("deployment");
        let (cache, mut writer) = compact::<Deployment>();
        writer.apply(&watcher::Event::Apply(deployment));
        let cached = cache.get(Some("tiqzy-acme"), "storefront").expect("cached");
        assert_eq!(cached.metadata.labels, None);
        assert_eq!(cached.metadata.annotations, None);
        assert_eq!(cached.metadata.generation, Some(3));
        let spec = cached.spec.clone().expect("spec");
        assert_eq!(spec.replicas, Some(2));
        let containers = spec.template.spec.map(|p| p.containers).unwrap_or_default();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0].image.as_deref(), Some("runtime@sha256:1"));
        assert_eq!(
            containers[0].args, None,
            "the rest of the template is not read"
        );
        let status = cached.status.expect("status");
        assert_eq!(status.available_replicas, Some(1));
        let reasons: Vec<_> = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.reason)
            .collect();
        assert_eq!(reasons, [Some("ProgressDeadlineExceeded".to_owned())]);
    }

    #[test]
    fn a_tenants_objects_are_found_by_owner_and_a_relist_replaces_the_cache() {
        let map = |namespace: &str, name: &str, uid: &str| -> ConfigMap {
            serde_json::from_value(json!({
                "metadata": { "name": name, "namespace": namespace, "ownerReferences": owner(uid) },
            }))
            .expect("config map")
        };
        let (cache, mut writer) = compact::<ConfigMap>();
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(map("tiqzy-acme", "site", "u-1")),
            watcher::Event::InitApply(map("tiqzy-acme", "old", "u-1")),
            watcher::Event::InitApply(map("tiqzy-acme", "theirs", "u-2")),
            watcher::Event::InitApply(map("tiqzy-acme-2", "site", "u-1")),
            watcher::Event::InitApply(map("tiqzy-acm", "site", "u-1")),
        ] {
            writer.apply(&event);
        }
        assert!(cache.is_empty(), "a list in progress is not shown");
        writer.apply(&watcher::Event::InitDone);
        let owner = OwnerReference {
            uid: "u-1".into(),
            ..Default::default()
        };
        let mut names = cache.names_owned_by(Some("tiqzy-acme"), &owner.uid);
        names.sort();
        assert_eq!(names, ["old", "site"]);
        assert_eq!(cache.len(), 5);

        // The watch restarts; "old" was deleted meanwhile.
        writer.apply(&watcher::Event::Init);
        writer.apply(&watcher::Event::InitApply(map("tiqzy-acme", "site", "u-1")));
        assert_eq!(
            cache.len(),
            5,
            "the old contents stay until the list is complete"
        );
        writer.apply(&watcher::Event::InitDone);
        assert_eq!(
            cache.names_owned_by(Some("tiqzy-acme"), &owner.uid),
            ["site"]
        );
        assert_eq!(cache.len(), 1);
    }
}
