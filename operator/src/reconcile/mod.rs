//! Reconcile one Tenant: dereference -> validate -> build -> apply -> status.

mod certificate;
mod hosts;
mod payments;
mod status;
pub(crate) mod stores;
mod validate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::{Resource, ResourceExt};
use tiqzy_crds::conditions::{FINALIZER, RELEASE_FINALIZER_ANNOTATION, reasons, types};
use tiqzy_crds::{DeletionPolicy, Platform, Tenant, TenantPhase, TenantStatus};

pub use status::Observed;
pub use validate::{
    PlatformView, RoutingKind, TenantSecrets, TlsSecret, ValidatedTenant, namespace_of, validate,
};

use crate::apply::{Applier, FIELD_MANAGER};
use crate::build::{self, Desired, Exposure, SIGNING_SECRET, STOREFRONT};
use crate::cache::Cached;
use crate::context::Context;
use crate::error::{Error, backoff};

/// A Tenant as the watch delivers it: one that does not deserialize (stored under an older
/// schema, say) arrives as an error instead of breaking the watch for every tenant.
pub type GuardedTenant = DeserializeGuard<Tenant>;

/// Entry point for the controller. A malformed Tenant is reported and left alone until it
/// changes; the others are reconciled as usual.
pub async fn reconcile(guarded: Arc<GuardedTenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    match &guarded.0 {
        Ok(tenant) => reconcile_tenant(Arc::new(tenant.clone()), ctx).await,
        Err(invalid) => {
            let name = invalid.metadata.name.clone().unwrap_or_default();
            tracing::warn!(tenant = %name, error = %invalid.error, "Tenant cannot be read; skipping it");
            ctx.metrics.error("MalformedTenant");
            let reference = ObjectReference {
                api_version: Some(format!("{}/{}", tiqzy_crds::GROUP, tiqzy_crds::VERSION)),
                kind: Some("Tenant".to_owned()),
                name: Some(name),
                uid: invalid.metadata.uid.clone(),
                ..ObjectReference::default()
            };
            let event = Event {
                type_: EventType::Warning,
                reason: "MalformedTenant".into(),
                note: Some(format!(
                    "the operator cannot read this Tenant: {}",
                    invalid.error
                )),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, "could not publish an Event");
            }
            Ok(Action::await_change())
        }
    }
}

/// Wraps the work in the finalizer that guards the tenant's database and cache user.
async fn reconcile_tenant(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    let name = tenant.name_any();
    let result = finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            Finalized::Apply(tenant) => apply(&tenant, &ctx).await,
            Finalized::Cleanup(tenant) => cleanup(&tenant, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    let outcome = match &result {
        Ok(_) => "success",
        Err(_) => "error",
    };
    ctx.metrics.reconciled(started.elapsed(), outcome);
    ctx.metrics.count_phases(&valid(&ctx.tenant_snapshot()));
    if result.is_ok() {
        ctx.succeeded(&name);
    }
    result
}

/// The Tenants of a snapshot that deserialize.
fn valid(snapshot: &[Arc<GuardedTenant>]) -> Vec<&Tenant> {
    snapshot.iter().filter_map(|g| g.0.as_ref().ok()).collect()
}

/// Invalid specs wait for a change; transient errors back off per tenant, exponentially.
pub fn error_policy(tenant: Arc<GuardedTenant>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = tenant.meta().name.clone().unwrap_or_default();
    ctx.metrics.error(error.label());
    tracing::warn!(tenant = %name, reason = error.label(), error = %error, "reconcile failed");
    if error.is_transient() {
        Action::requeue(backoff(ctx.failed(&name)))
    } else {
        Action::await_change()
    }
}

async fn apply(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let name = tenant.name_any();
    // Dereference.
    // Every cache holds its first list before anything is compared with it.
    ctx.caches.ready().await;
    let Some(platform) = ctx
        .caches
        .platforms
        .get(&kube::runtime::reflector::ObjectRef::new("default"))
    else {
        let observed = vec![Observed::failed(
            types::READY,
            reasons::PLATFORM_NOT_FOUND,
            Error::PlatformNotFound.to_string(),
        )];
        write_status(
            tenant,
            ctx,
            observed,
            TenantPhase::Pending,
            TenantStatus::default(),
        )
        .await?;
        return Ok(Action::await_change());
    };
    let view = PlatformView {
        spec: platform.spec.clone(),
        route_api: ctx.route_api,
    };
    // Validate.
    let validated = match validate(tenant, &view) {
        Ok(v) => v,
        Err(Error::InvalidSpec(message)) => {
            let observed = vec![Observed::failed(
                types::READY,
                reasons::INVALID_SPEC,
                message,
            )];
            write_status(
                tenant,
                ctx,
                observed,
                TenantPhase::Failed,
                TenantStatus::default(),
            )
            .await?;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };
    let conflict = hosts::conflict(
        tenant,
        &validated.hosts,
        &valid(&ctx.tenant_snapshot()),
        &view.spec.base_domain,
    );
    let servers = stores::servers(ctx, &view.spec).await;
    let (payments_secret, payments) = payments::payments(ctx, &view.spec, &validated.spec).await;
    let mut secrets = dereference_secrets(ctx, &validated, &servers).await?;
    secrets.payments = payments_secret;
    let mut validated = validated.with_secrets(secrets);
    let tls = certificate::certificate(ctx, &validated, &view.spec).await?;
    validated.serve_certificate(tls.serve.clone());
    let live = <Deployment as Cached>::cached(&ctx.caches, Some(&validated.namespace), STOREFRONT);
    let rollout_queued = gate_rollout(
        ctx,
        &mut validated,
        live.as_deref(),
        view.spec.rollout.max_concurrent_tenant_rollouts,
    );

    // Build and apply.
    let owner = tenant
        .controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidSpec("the Tenant has no uid".into()))?;
    let applier = Applier::new(ctx.client.clone(), ctx.caches.clone(), owner, &name);
    let desired = build::desired(&validated);
    let (deployment, store_conditions, routed) = apply_all(
        &applier,
        ctx,
        &validated,
        desired,
        conflict.as_deref(),
        &servers,
    )
    .await?;
    ctx.metrics
        .writes
        .inc_by(applier.writes.load(std::sync::atomic::Ordering::Relaxed));

    // Status.
    let mut observed = vec![status::storefront(
        Some(&deployment),
        validated.spec.storefront.suspended,
        rollout_queued,
    )];
    observed.extend(store_conditions.iter().cloned());
    let payments_broken = payments.reason == reasons::STRIPE_SECRET_UNAVAILABLE;
    observed.push(payments);
    observed.push(tls.observed.clone());
    observed.push(routed);
    let (ready, phase) = status::summarise(&observed, validated.spec.storefront.suspended);
    observed.insert(0, ready);
    let base = TenantStatus {
        url: Some(validated.url.clone()),
        namespace: Some(validated.namespace.clone()),
        hosts: if conflict.is_some() {
            Vec::new()
        } else {
            validated.hosts.clone()
        },
        runtime_image: Some(validated.runtime_image.clone()),
        certificate: tls.status.clone(),
        ..TenantStatus::default()
    };
    write_status(tenant, ctx, observed, phase, base).await?;
    publish(ctx, tenant, &tls.events).await;

    let transient = store_conditions
        .iter()
        .any(|c| !c.ok && c.reason != reasons::PLATFORM_NOT_CONFIGURED);
    if transient || payments_broken {
        return Ok(Action::requeue(backoff(ctx.failed(&name))));
    }
    // A queued tenant learns of a free slot only by asking again. A rolling one hears of its
    // Deployment's progress through the watch; the requeue is only a safety net, kept long so
    // that hundreds of tenants rolling at once do not crowd out new ones.
    if rollout_queued {
        return Ok(Action::requeue(Duration::from_secs(3)));
    }
    if status::rolling(&deployment) {
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let next = jittered(ctx.settings.resync);
    Ok(Action::requeue(tls.poll_in.map_or(next, |p| p.min(next))))
}

async fn publish(ctx: &Context, tenant: &Tenant, events: &[Event]) {
    for event in events {
        if let Err(e) = ctx.recorder.publish(event, &tenant.object_ref(&())).await {
            tracing::warn!(error = %e, "could not publish an Event");
        }
    }
}

/// `resync` plus up to a tenth more, so tenants that converged together do not all come back
/// in the same instant and crowd out new ones.
fn jittered(resync: Duration) -> Duration {
    use rand::Rng;
    let tenth = resync.as_millis() as u64 / 10;
    resync + Duration::from_millis(rand::rng().random_range(0..=tenth))
}

/// Secrets keep their values across reconciles; new ones are generated here, not in builders.
async fn dereference_secrets(
    ctx: &Context,
    v: &ValidatedTenant,
    servers: &stores::Servers,
) -> Result<TenantSecrets, Error> {
    let signing = stores::existing(ctx, &v.namespace, SIGNING_SECRET)
        .await?
        .filter(|s| s.contains_key(stores::SIGNING_KEY))
        .unwrap_or_else(stores::new_signing_secret);
    let database = match &servers.postgres {
        Some(Ok(server)) => {
            let existing = stores::existing(ctx, &v.namespace, build::DATABASE_SECRET).await?;
            stores::database_secret(server, &v.name, existing.as_ref())
        }
        _ => None,
    };
    let cache = match &servers.redis {
        Some(Ok(server)) if v.spec.cache.mode == tiqzy_crds::CacheMode::Shared => {
            let existing = stores::existing(ctx, &v.namespace, build::CACHE_SECRET).await?;
            stores::cache_secret(server, &v.name, existing.as_ref())
        }
        _ => None,
    };
    Ok(TenantSecrets {
        signing,
        database,
        cache,
        payments: None,
        tls: None,
    })
}

/// Holds a tenant on its current image while `limit` other tenants are rolling. Returns
/// whether the tenant waits for a slot.
fn gate_rollout(
    ctx: &Context,
    v: &mut ValidatedTenant,
    live: Option<&Deployment>,
    limit: i32,
) -> bool {
    let Some(live) = live else { return false };
    let live_image = live
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone());
    let Some(live_image) = live_image else {
        return false;
    };
    if live_image == v.runtime_image {
        if status::rolling(live) {
            ctx.rollout_observed(&v.name);
        } else {
            ctx.rollout_finished(&v.name);
        }
        return false;
    }
    if ctx.try_start_rollout(&v.name, usize::try_from(limit).unwrap_or(1)) {
        false
    } else {
        v.runtime_image = live_image;
        true
    }
}

/// Applies `desired` in dependency order and prunes what is no longer wanted.
async fn apply_all(
    applier: &Applier,
    ctx: &Context,
    v: &ValidatedTenant,
    desired: Desired,
    conflict: Option<&str>,
    servers: &stores::Servers,
) -> Result<(Deployment, Vec<Observed>, Observed), Error> {
    // No `..`: a new kind in `Desired` must be handled here.
    let Desired {
        namespace,
        secrets,
        service_account,
        config_map,
        deployment,
        service,
        hpa,
        pdb,
        network_policies,
        exposure,
    } = desired;
    let ns = &v.namespace;
    applier.apply_cluster::<Namespace>(namespace).await?;
    let secret_names: Vec<String> = secrets
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    for secret in secrets {
        applier.apply(secret).await?;
    }
    applier.prune::<Secret>(ns, &secret_names).await?;
    // Credentials are in Kubernetes now: the servers may use them.
    // The servers are checked again only when what they should hold changes, or once per
    // resync: watch events on a tenant's own objects do not reach the database.
    let inputs = stores::inputs_digest(servers, v);
    let store_conditions = match ctx.stores_converged(&v.name, &inputs) {
        Some(conditions) => conditions,
        None => {
            let conditions = vec![
                stores::ensure_database(servers, &v.name, &v.spec, v.secrets.database.as_ref())
                    .await,
                stores::ensure_cache(servers, &v.name, &v.spec, v.secrets.cache.as_ref()).await,
            ];
            if conditions.iter().all(|c| c.ok) {
                ctx.remember_stores(&v.name, inputs, conditions.clone());
            }
            conditions
        }
    };
    // The rest does not depend on each other: apply it concurrently.
    let policies = async {
        let names: Vec<String> = network_policies
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        futures::future::try_join_all(network_policies.into_iter().map(|p| applier.apply(p)))
            .await?;
        applier.prune::<NetworkPolicy>(ns, &names).await
    };
    let autoscaler = async {
        match hpa {
            Some(hpa) => applier.apply(hpa).await.map(drop),
            None => applier.prune::<HorizontalPodAutoscaler>(ns, &[]).await,
        }
    };
    let (_, _, (), deployment, _, _, ()) = tokio::try_join!(
        applier.apply(service_account),
        applier.apply(config_map),
        policies,
        applier.apply(deployment),
        applier.apply(service),
        applier.apply(pdb),
        autoscaler,
    )?;
    let routed = match (conflict, exposure) {
        (Some(other), _) => {
            remove_exposure(applier, ctx, ns).await?;
            Observed::failed(
                types::ROUTED,
                reasons::HOST_CONFLICT,
                format!("a host is already served by Tenant {other}; this tenant is not routed"),
            )
        }
        (None, Exposure::Ingress(ingress)) => {
            if ctx.route_api {
                certificate::router_access(applier, &ctx.client, ns, None).await?;
                applier
                    .prune_dynamic(ns, &build::route_api_resource(), &[])
                    .await?;
            }
            let ingress = applier.apply(*ingress).await?;
            routed_ingress(&ingress)
        }
        (None, Exposure::Route(routes, access)) => {
            certificate::router_access(applier, &ctx.client, ns, access.map(|a| *a)).await?;
            applier.prune::<Ingress>(ns, &[]).await?;
            let resource = build::route_api_resource();
            let names: Vec<String> = routes.iter().map(ResourceExt::name_any).collect();
            let mut applied = Vec::new();
            for route in routes {
                applied.push(applier.apply_dynamic(route, &resource).await?);
            }
            applier.prune_dynamic(ns, &resource, &names).await?;
            routed_routes(&applied)
        }
    };
    Ok((deployment, store_conditions, routed))
}

async fn remove_exposure(applier: &Applier, ctx: &Context, ns: &str) -> Result<(), Error> {
    applier.prune::<Ingress>(ns, &[]).await?;
    if ctx.route_api {
        certificate::router_access(applier, &ctx.client, ns, None).await?;
        applier
            .prune_dynamic(ns, &build::route_api_resource(), &[])
            .await?;
    }
    Ok(())
}

fn routed_ingress(ingress: &Ingress) -> Observed {
    let addresses = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(Vec::len)
        .unwrap_or(0);
    if addresses > 0 {
        Observed::ok(
            types::ROUTED,
            reasons::ADMITTED,
            "the ingress controller serves the storefront's hosts",
        )
    } else {
        Observed::ok(
            types::ROUTED,
            reasons::INGRESS_CREATED,
            "Ingress created; no ingress controller has reported an address yet",
        )
    }
}

fn routed_routes(routes: &[DynamicObject]) -> Observed {
    let admitted = |route: &DynamicObject| {
        route.data["status"]["ingress"]
            .as_array()
            .is_some_and(|ingresses| {
                ingresses.iter().any(|i| {
                    i["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Admitted" && c["status"] == "True")
                    })
                })
            })
    };
    let rejected = routes.iter().find(|r| {
        r.data["status"]["ingress"]
            .as_array()
            .is_some_and(|ingresses| {
                ingresses.iter().any(|i| {
                    i["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Admitted" && c["status"] == "False")
                    })
                })
            })
    });
    if let Some(route) = rejected {
        return Observed::failed(
            types::ROUTED,
            reasons::HOST_CONFLICT,
            format!("the router did not admit Route {}", route.name_any()),
        );
    }
    if routes.iter().all(admitted) {
        Observed::ok(
            types::ROUTED,
            reasons::ADMITTED,
            "the router admitted every Route",
        )
    } else {
        Observed::ok(
            types::ROUTED,
            reasons::ROUTE_CREATED,
            "Routes created; the router has not admitted them yet",
        )
    }
}

/// Writes the status when it differs from the stored one, and an Event per transition.
async fn write_status(
    tenant: &Tenant,
    ctx: &Context,
    observed: Vec<Observed>,
    phase: TenantPhase,
    mut base: TenantStatus,
) -> Result<(), Error> {
    base.phase = Some(phase);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let previous = tenant.status.as_ref();
    let next = status::next_status(previous, tenant.metadata.generation, observed, base, now);
    if previous == Some(&next) {
        return Ok(());
    }
    for condition in status::transitions(previous, &next) {
        let type_ = if condition.status == "True" {
            EventType::Normal
        } else {
            EventType::Warning
        };
        let event = Event {
            type_,
            reason: condition.reason.clone(),
            note: Some(format!(
                "{} is {}: {}",
                condition.type_, condition.status, condition.message
            )),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &tenant.object_ref(&())).await {
            tracing::warn!(error = %e, "could not publish an Event");
        }
    }
    let patch =
        serde_json::json!({ "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant", "status": next });
    Api::<Tenant>::all(ctx.client.clone())
        .patch_status(
            &tenant.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    ctx.metrics.writes.inc();
    Ok(())
}

/// Deletion: Kubernetes objects go with the namespace (owner references); the database and
/// cache user follow `spec.database.deletionPolicy`.
async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let name = tenant.name_any();
    ctx.forget(&name);
    let reference = tenant.object_ref(&());
    let publish = |type_, reason: &str, note: String| {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Delete".into(),
            secondary: None,
        };
        let reference = reference.clone();
        async move {
            if let Err(e) = ctx.recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, "could not publish an Event");
            }
        }
    };
    if tenant
        .annotations()
        .get(RELEASE_FINALIZER_ANNOTATION)
        .is_some_and(|v| v == "true")
    {
        publish(EventType::Warning, "FinalizerReleased", format!("{RELEASE_FINALIZER_ANNOTATION}=true: database and cache user of {name} left as they are")).await;
        return Ok(Action::await_change());
    }
    if tenant.spec.database.deletion_policy == DeletionPolicy::Retain {
        publish(
            EventType::Normal,
            "DatabaseRetained",
            format!(
                "deletionPolicy Retain: database tiqzy_{} and its role are kept",
                name.replace('-', "_")
            ),
        )
        .await;
    }
    let platform = Api::<Platform>::all(ctx.client.clone())
        .get_opt("default")
        .await?;
    let servers = match &platform {
        Some(p) => stores::servers(ctx, &p.spec).await,
        None => stores::Servers::default(),
    };
    let mut blocked = Vec::new();
    if tenant.spec.database.deletion_policy == DeletionPolicy::Delete {
        match &servers.postgres {
            Some(Ok(server)) => {
                if let Err(e) = crate::external::postgres::remove_database(server, &name).await {
                    blocked.push(e.to_string());
                }
            }
            Some(Err(e)) => blocked.push(e.clone()),
            None => {}
        }
    }
    match &servers.redis {
        Some(Ok(server)) => {
            if let Err(e) = crate::external::redis::remove_cache_user(server, &name).await {
                blocked.push(e.to_string());
            }
        }
        Some(Err(e)) => blocked.push(e.clone()),
        None => {}
    }
    if !blocked.is_empty() {
        let message = format!(
            "cleanup blocked: {}; retrying. To let the Tenant go without cleanup, annotate it {RELEASE_FINALIZER_ANNOTATION}=true",
            blocked.join("; ")
        );
        let observed = vec![Observed::failed(
            types::READY,
            reasons::CLEANUP_BLOCKED,
            message.clone(),
        )];
        write_status(
            tenant,
            ctx,
            observed,
            TenantPhase::Terminating,
            tenant.status.clone().unwrap_or_default(),
        )
        .await?;
        return Err(Error::Store(message));
    }
    Ok(Action::await_change())
}
