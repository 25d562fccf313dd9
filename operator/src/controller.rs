//! Wiring: watches on Tenants, the Platform and every kind the operator owns, feeding the
//! reconcile.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::runtime::{Predicate, predicates};
use kube::{Resource, ResourceExt};
use tiqzy_crds::Platform;

use crate::build::TENANT_LABEL;
use crate::cache::{Caches, GuardedTenant, MANAGED_SELECTOR, reflected};
use crate::context::{Context, Settings};
use crate::metrics::Metrics;
use crate::reconcile::{Reconciler, error_policy, failure, halt, payments_service, reconcile};

/// Whether the API server serves OpenShift Routes.
pub async fn route_api_served(client: &kube::Client) -> bool {
    client
        .list_api_group_resources("route.openshift.io/v1")
        .await
        .is_ok_and(|list| list.resources.iter().any(|r| r.name == "routes"))
}

/// Runs the Tenant controller until the process is asked to stop.
pub async fn run(client: kube::Client, metrics: Metrics, settings: Settings) {
    // Only the Lease holder (or the one replica, without leader election) gets here.
    metrics.leading();
    let route_api = route_api_served(&client).await;
    tracing::info!(route_api, "starting the Tenant controller");
    // Status writes change a Tenant's resourceVersion but nothing the reconcile reads from
    // it: react only to spec (generation), annotations, finalizers and deletion.
    let (reader, writer) = reflector::store();
    let relevant = predicates::generation
        .combine(predicates::annotations)
        .combine(predicates::finalizers);
    let tenants = watcher(
        Api::<GuardedTenant>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    // Who last wrote which field is never read here, and is a few KiB per Tenant; so is the
    // copy of the spec that `kubectl apply` keeps in an annotation.
    .modify(|tenant: &mut GuardedTenant| {
        if let Ok(tenant) = tenant.0.as_mut() {
            tenant.metadata.managed_fields = None;
            if let Some(annotations) = tenant.metadata.annotations.as_mut() {
                annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
        }
    })
    .reflect(writer)
    .applied_objects()
    .predicate_filter(relevant, PredicateConfig::default());
    let controller = Controller::for_stream(tenants, reader).with_config(
        kube::runtime::controller::Config::default()
            .concurrency(settings.concurrency)
            // A new tenant's objects produce a burst of watch events: reconcile once for it.
            .debounce(Duration::from_millis(200)),
    );
    let store = controller.store();
    let (caches, w) = Caches::new();
    let namespace = settings.namespace.clone();
    let ctx = Arc::new(Reconciler::new(Context::new(
        client.clone(),
        store.clone(),
        caches,
        metrics,
        settings,
        route_api,
    )));
    let owned = || watcher::Config::default().labels(MANAGED_SELECTOR);
    // Every owned kind maps to its Tenant with `owner_key`, never kube's `owns`: see there.
    let controller = controller
        .watches_stream(
            reflected::<Namespace>(&client, owned(), w.namespaces),
            owner_key,
        )
        .watches_stream(
            reflected::<Deployment>(&client, owned(), w.deployments),
            owner_key,
        )
        .watches_stream(
            reflected::<Service>(&client, owned(), w.services),
            owner_key,
        )
        .watches_stream(
            reflected::<ConfigMap>(&client, owned(), w.config_maps),
            owner_key,
        )
        .watches_stream(reflected::<Secret>(&client, owned(), w.secrets), owner_key)
        .watches_stream(
            reflected::<ServiceAccount>(&client, owned(), w.service_accounts),
            owner_key,
        )
        // The disruption controller rewrites PDB status whenever a pod changes: spec only.
        .watches_stream(
            reflected::<PodDisruptionBudget>(&client, owned(), w.disruption_budgets)
                .predicate_filter(predicates::generation, PredicateConfig::default()),
            owner_key,
        )
        // The autoscaler controller rewrites HPA status every sync: only spec changes matter.
        .watches_stream(
            reflected::<HorizontalPodAutoscaler>(&client, owned(), w.autoscalers)
                .predicate_filter(predicates::generation, PredicateConfig::default()),
            owner_key,
        )
        .watches_stream(
            reflected::<NetworkPolicy>(&client, owned(), w.network_policies),
            owner_key,
        )
        .watches_stream(
            reflected::<Ingress>(&client, owned(), w.ingresses),
            owner_key,
        );
    // On OpenShift the router reports admission in a Route's status: that change, like an
    // Ingress getting its address, reconciles the tenant at once instead of at resync.
    let controller = if route_api {
        let resource = crate::build::route_api_resource();
        let routes = watcher(
            Api::<DynamicObject>::all_with(client.clone(), &resource),
            owned(),
        )
        .default_backoff()
        .touched_objects();
        controller.watches_stream_with(routes, owner_key, resource)
    } else {
        controller
    };
    // A storefront pod that cannot pull its image or keeps crashing changes nothing the
    // Deployment reports: its waiting reason, watched here, brings the news.
    let pods = watcher(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().labels(&failure::storefront_selector()),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(failure::pod_state, PredicateConfig::default());
    let controller = controller.watches_stream(pods, |pod: Pod| {
        pod.labels()
            .get(TENANT_LABEL)
            .map(|tenant| ObjectRef::<GuardedTenant>::new(tenant))
    });
    let tenants = controller
        .watches_stream(
            watcher(
                Api::<Platform>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .reflect(w.platforms)
            .touched_objects()
            .predicate_filter(halt::platform_state, PredicateConfig::default()),
            move |_platform| {
                store
                    .state()
                    .iter()
                    .map(|t| ObjectRef::from_obj(t.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                // A watch that fails (a permission missing from the ClusterRole, say) stalls
                // every tenant: say so loudly. It is retried with backoff.
                Err(kube::runtime::controller::Error::QueueError(e)) => {
                    tracing::warn!(error = %e, "a watch failed; retrying");
                }
                Err(e) => tracing::debug!(error = %e, "controller event"),
                Ok(_) => {}
            }
        });
    tokio::join!(tenants, run_payments_service(client, &namespace, ctx));
}

/// The cluster-scoped owner of `object` (a Tenant, the Platform), keyed as the owner's own
/// watch keys it: without a namespace. Tenants and the Platform are cluster-scoped, their
/// objects mostly namespaced; kube's `owns` keeps the object's namespace in the key, so a
/// trigger from a tenant's Deployment and one from the Tenant itself were two queue entries and
/// the same tenant could be reconciled twice at once (two `Reconciled` Events for one Ready,
/// or an older pass writing its status after a newer one).
fn owner_key<O, K>(object: K) -> Option<ObjectRef<O>>
where
    O: Resource<DynamicType = ()>,
    K: Resource,
{
    object
        .meta()
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find_map(|owner| ObjectRef::from_owner_ref(None, owner, ()))
}

/// Runs the payments service's controller: the Platform and the service's Deployment (its
/// availability is the Platform's `PaymentsServiceReady`) and Secret (the delivery key).
async fn run_payments_service(client: kube::Client, namespace: &str, ctx: Arc<Reconciler>) {
    let service = || watcher::Config::default().labels(PAYMENTS_SELECTOR);
    Controller::new(
        Api::<Platform>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<Deployment>::namespaced(client.clone(), namespace),
        service(),
        owner_key,
    )
    .watches(
        Api::<Secret>::namespaced(client.clone(), namespace),
        service(),
        owner_key,
    )
    .shutdown_on_signal()
    .run(
        payments_service::reconcile,
        payments_service::error_policy,
        ctx,
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "payments service controller event");
        }
    })
    .await;
}

/// Label selecting the payments service's objects.
const PAYMENTS_SELECTOR: &str = "app.kubernetes.io/name=tiqzy-payments";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_in_a_tenant_namespace_triggers_the_tenant_itself() {
        let tenant: tiqzy_crds::Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
            "metadata": { "name": "shop", "uid": "1f0c" },
            "spec": { "displayName": "Shop", "currency": "EUR" }
        }))
        .expect("tenant");
        let mut deployment = Deployment::default();
        deployment.metadata.name = Some("storefront".into());
        deployment.metadata.namespace = Some("tiqzy-shop".into());
        deployment.metadata.owner_references =
            Some(vec![tenant.controller_owner_ref(&()).expect("owner")]);
        // The key the Tenant watch queues the tenant under: no namespace.
        let key = ObjectRef::<GuardedTenant>::new("shop");
        assert_eq!(owner_key(deployment.clone()), Some(key));

        deployment.metadata.owner_references = None;
        assert_eq!(owner_key::<GuardedTenant, _>(deployment), None);
    }
}
