//! Wiring: watches on Tenants, the Platform and every kind the operator owns, feeding the
//! reconcile.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::runtime::{Predicate, predicates};
use tiqzy_crds::Platform;

use crate::context::{Context, Settings};
use crate::metrics::Metrics;
use crate::reconcile::{GuardedTenant, error_policy, reconcile};

/// Whether the API server serves OpenShift Routes.
pub async fn route_api_served(client: &kube::Client) -> bool {
    client
        .list_api_group_resources("route.openshift.io/v1")
        .await
        .is_ok_and(|list| list.resources.iter().any(|r| r.name == "routes"))
}

/// Runs the Tenant controller until the process is asked to stop.
pub async fn run(client: kube::Client, metrics: Metrics, settings: Settings) {
    let route_api = route_api_served(&client).await;
    tracing::info!(route_api, "starting the Tenant controller");
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=tiqzy-operator");
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
    let ctx = Arc::new(Context::new(
        client.clone(),
        store.clone(),
        metrics,
        settings,
        route_api,
    ));
    controller
        .owns(Api::<Namespace>::all(client.clone()), owned.clone())
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), owned.clone())
        .owns(Api::<Secret>::all(client.clone()), owned.clone())
        // The autoscaler controller rewrites HPA status every sync: only spec changes matter.
        .owns_stream(
            watcher(
                Api::<HorizontalPodAutoscaler>::all(client.clone()),
                owned.clone(),
            )
            .default_backoff()
            .touched_objects()
            .predicate_filter(predicates::generation, PredicateConfig::default()),
        )
        .owns(Api::<NetworkPolicy>::all(client.clone()), owned.clone())
        .owns(Api::<Ingress>::all(client.clone()), owned)
        .watches(
            Api::<Platform>::all(client.clone()),
            watcher::Config::default(),
            move |_platform| {
                store
                    .state()
                    .iter()
                    .map(|t| ObjectRef::from_obj(t.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}
