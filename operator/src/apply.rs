//! The one writer: server-side apply with one field manager, owner reference and common
//! labels added here, writes skipped when the cached live object already says what we want,
//! and pruning of what is no longer desired. A converged tenant costs no request at all.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{ClusterResourceScope, NamespaceResourceScope};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::{TENANT_LABEL, labels};
use crate::cache::{Applied, Cached, Caches, Fingerprint};
use crate::error::Error;

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "tiqzy-operator";

/// Marks an object as the tenant's: owned by its Tenant (so it goes with it) and labelled.
pub fn decorate<K: Resource>(
    object: &mut K,
    owner: &OwnerReference,
    labels: &std::collections::BTreeMap<String, String>,
) {
    let meta = object.meta_mut();
    meta.owner_references = Some(vec![owner.clone()]);
    meta.labels
        .get_or_insert_with(Default::default)
        .extend(labels.clone());
}

/// Applies objects on behalf of one tenant.
#[derive(Clone)]
pub struct Applier {
    client: kube::Client,
    caches: Caches,
    owner: OwnerReference,
    /// Whose objects these are: the tenant's name, or the payments service's key; names the
    /// applier's records and, for a tenant, selects what is pruned.
    tenant: String,
    labels: std::collections::BTreeMap<String, String>,
    /// Writes performed, for the no-writes-when-converged guarantee and its metric.
    pub writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl Applier {
    pub fn new(client: kube::Client, caches: Caches, owner: OwnerReference, tenant: &str) -> Self {
        Self::with_labels(client, caches, owner, tenant, labels(tenant))
    }

    /// An applier for objects that belong to no tenant (the payments service, owned by the
    /// Platform), labelled with `labels`. `key` names its records and must not be a tenant's
    /// name.
    pub fn with_labels(
        client: kube::Client,
        caches: Caches,
        owner: OwnerReference,
        key: &str,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Self {
        Self {
            client,
            caches,
            owner,
            tenant: key.to_owned(),
            labels,
            writes: Default::default(),
        }
    }

    fn decorate<K: Resource>(&self, object: &mut K) {
        decorate(object, &self.owner, &self.labels);
    }

    /// Writes sent so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Applies a namespaced object unless the cached live one already matches.
    pub async fn apply<K>(&self, mut object: K) -> Result<K, Error>
    where
        K: Resource<Scope = NamespaceResourceScope> + Cached + Serialize,
    {
        self.decorate(&mut object);
        let namespace = object.namespace().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
        // Boxed: Kubernetes objects are large, and seven applies run side by side.
        Box::pin(self.apply_cached(api, Some(&namespace), object)).await
    }

    /// The API server's copy of a namespaced object the operator caches, or `None` once it
    /// is gone: for when the cached copy may be behind.
    pub async fn read<K>(&self, object: &K) -> Result<Option<K>, Error>
    where
        K: Resource<Scope = NamespaceResourceScope> + Cached,
    {
        let namespace = object.namespace().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
        Ok(api.get_opt(&object.name_any()).await?)
    }

    /// Applies a cluster-scoped object unless the cached live one already matches.
    pub async fn apply_cluster<K>(&self, mut object: K) -> Result<K, Error>
    where
        K: Resource<Scope = ClusterResourceScope> + Cached + Serialize,
    {
        self.decorate(&mut object);
        let api: Api<K> = Api::all(self.client.clone());
        Box::pin(self.apply_cached(api, None, object)).await
    }

    /// Nothing is sent while the applier's record of this object holds: the same desired
    /// state as last time, and the cached object's fingerprint unchanged since. An object not
    /// in the cache is applied, unless the record says it was applied as it is now. Otherwise
    /// the live object is read and compared, and applied when it differs. Returns the cached
    /// (cut-down) object when nothing was sent, else the live one.
    async fn apply_cached<K: Cached>(
        &self,
        api: Api<K>,
        namespace: Option<&str>,
        object: K,
    ) -> Result<K, Error> {
        let name = object.name_any();
        let key = format!("{}/{}/{name}", K::kind(&()), namespace.unwrap_or_default());
        let desired = Fingerprint::of(&object);
        let record = self.caches.applied.get(&self.tenant, &key);
        match K::cache(&self.caches).get_with_fingerprint(namespace, &name) {
            Some((cached, seen))
                if record.is_some_and(|r| r.desired == desired && r.fingerprint == seen) =>
            {
                return Ok(cached);
            }
            // Changed since, by someone else or by what is wanted: read and compare below.
            Some(_) => {}
            // Never applied as it is now: applying is idempotent whether it exists or not.
            None if record.is_none_or(|r| r.desired != desired) => {
                return self.send(api, &key, desired, object).await;
            }
            // Applied as it is now, but the watch has not shown it yet (a busy API server) or
            // someone deleted it: a read tells which, and costs the API server less than a
            // second write.
            None => {}
        }
        match api.get_opt(&name).await? {
            Some(live) if contains(&to_json(&live, &key)?, &to_json(&object, &key)?) => {
                let applied = Applied {
                    desired,
                    fingerprint: Fingerprint::of(&live),
                };
                self.caches.applied.set(&self.tenant, key, applied);
                Ok(live)
            }
            _ => self.send(api, &key, desired, object).await,
        }
    }

    async fn send<K: Cached>(
        &self,
        api: Api<K>,
        key: &str,
        desired: Fingerprint,
        object: K,
    ) -> Result<K, Error> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let live = api
            .patch(&object.name_any(), &params, &Patch::Apply(&object))
            .await
            .map_err(|e| Error::from_write(e, || describe(key)))?;
        let applied = Applied {
            desired,
            fingerprint: Fingerprint::of(&live),
        };
        self.caches
            .applied
            .set(&self.tenant, key.to_owned(), applied);
        Ok(live)
    }

    /// Applies a namespaced object of a kind the operator does not cache (the router's Role
    /// and RoleBinding on OpenShift), comparing with the live object read first.
    pub async fn apply_uncached<K>(&self, mut object: K) -> Result<K, Error>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        self.decorate(&mut object);
        let api: Api<K> =
            Api::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        let live = api.get_opt(&object.name_any()).await?;
        self.apply_with(api, object, live).await
    }

    /// Applies an object of a kind known only at run time (OpenShift Routes).
    pub async fn apply_dynamic(
        &self,
        mut object: kube::api::DynamicObject,
        resource: &kube::api::ApiResource,
    ) -> Result<kube::api::DynamicObject, Error> {
        self.decorate(&mut object);
        object.types = Some(kube::api::TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        });
        let api = Api::namespaced_with(
            self.client.clone(),
            &object.namespace().unwrap_or_default(),
            resource,
        );
        let live = api.get_opt(&object.name_any()).await?;
        self.apply_with(api, object, live).await
    }

    async fn apply_with<K>(&self, api: Api<K>, object: K, live: Option<K>) -> Result<K, Error>
    where
        K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    {
        let name = object.name_any();
        let desired = to_json(&object, &name)?;
        if let Some(live) = live
            && contains(&to_json(&live, &name)?, &desired)
        {
            return Ok(live);
        }
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(&object))
            .await
            .map_err(|e| {
                Error::from_write(e, || {
                    let kind = desired["kind"].as_str().unwrap_or("object");
                    match object.namespace() {
                        Some(ns) => format!("{kind} {ns}/{name}"),
                        None => format!("{kind} {name}"),
                    }
                })
            })
    }

    /// Deletes the tenant's cached objects of kind `K` in `namespace` whose names are not in
    /// `keep`.
    pub async fn prune<K>(&self, namespace: &str, keep: &[String]) -> Result<(), Error>
    where
        K: Resource<Scope = NamespaceResourceScope> + Cached,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let existing = K::names_of(&self.caches, Some(namespace), &self.owner);
        self.delete_unwanted(api, existing, keep).await
    }

    /// Deletes the tenant's objects of a kind known only at run time (OpenShift Routes)
    /// whose names are not in `keep`, listing them from the API server.
    pub async fn prune_dynamic(
        &self,
        namespace: &str,
        resource: &kube::api::ApiResource,
        keep: &[String],
    ) -> Result<(), Error> {
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, resource);
        self.prune_listed(api, keep).await
    }

    /// Deletes the tenant's objects of a kind the operator does not cache whose names are
    /// not in `keep`, listing them from the API server.
    pub async fn prune_listed<K>(&self, api: Api<K>, keep: &[String]) -> Result<(), Error>
    where
        K: Resource + Clone + Debug + DeserializeOwned,
    {
        let selector = format!("{TENANT_LABEL}={}", self.tenant);
        let existing = api
            .list_metadata(&ListParams::default().labels(&selector))
            .await?
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        self.delete_unwanted(api, existing, keep).await
    }

    async fn delete_unwanted<K>(
        &self,
        api: Api<K>,
        existing: Vec<String>,
        keep: &[String],
    ) -> Result<(), Error>
    where
        K: Resource + Clone + Debug + DeserializeOwned,
    {
        for name in existing {
            if !keep.contains(&name) {
                self.writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}

/// `Kind namespace/name` (or `Kind name`) from a record key `Kind/namespace/name`.
fn describe(key: &str) -> String {
    match key.split_once('/') {
        Some((kind, rest)) => format!("{kind} {}", rest.trim_start_matches('/')),
        None => key.to_owned(),
    }
}

fn to_json<K: Serialize>(object: &K, name: &str) -> Result<serde_json::Value, Error> {
    serde_json::to_value(object).map_err(|source| Error::Serialize {
        what: name.to_owned(),
        source,
    })
}

/// Whether `live` already holds every value of `desired` (fields the API server defaulted or
/// others own are ignored).
pub fn contains(live: &serde_json::Value, desired: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => {
            desired.iter().all(|(key, want)| match live.get(key) {
                Some(have) => contains(have, want),
                None => want.is_null(),
            })
        }
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len()
                && live
                    .iter()
                    .zip(desired)
                    .all(|(have, want)| contains(have, want))
        }
        (live, desired) => live == desired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_added_by_the_server_do_not_count_as_drift() {
        let live = json!({ "spec": { "replicas": 1, "template": { "x": 1, "dnsPolicy": "ClusterFirst" } } });
        assert!(contains(
            &live,
            &json!({ "spec": { "template": { "x": 1 } } })
        ));
    }

    #[test]
    fn a_changed_or_missing_value_is_drift() {
        let live = json!({ "data": { "a": "1" }, "list": [1, 2] });
        assert!(!contains(&live, &json!({ "data": { "a": "2" } })));
        assert!(!contains(&live, &json!({ "data": { "b": "1" } })));
        assert!(!contains(&live, &json!({ "list": [1] })));
    }
}
