//! Reconcile the Platform's own workload, the payments service `tiqzy-payments` in the
//! operator's namespace: platform keys -> its Secret (delivery key and database password kept
//! across reconciles) -> its database -> build -> apply -> `PaymentsServiceReady`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tiqzy_crds::conditions::{Reason, Retry, types};
use tiqzy_crds::{Platform, PlatformSpec, RolloutStatus, TenantStatus};

use super::Reconciler;
use super::credentials::database_secret;
use super::servers::{secret_fields, servers};
use super::status::{Observed, next_status};
use super::validate::{api_port, payments_host};
use crate::apply::{Applier, FIELD_MANAGER};
use crate::build::payments_service::{
    DELIVERY_KEY, NETWORK_POLICIES, PAYMENTS_HOST_LABEL, PAYMENTS_SERVICE, PaymentsService,
    ServiceExposure, ServiceInput, payments_service, service_labels,
};
use crate::build::route_api_resource;
use crate::context::Context;
use crate::error::{Error, backoff};
use crate::external::postgres::ensure_database;
use crate::tenant::RoutingKind;

/// The applier's record key for the service's objects: no tenant can have it (not a DNS label).
const RECORD_KEY: &str = "@payments-service";
/// Sessions the service's database role may hold at once (two replicas and a rollout's third).
const CONNECTION_LIMIT: i32 = 30;

/// Entry point for the Platform controller.
pub async fn reconcile(platform: Arc<Platform>, r: Arc<Reconciler>) -> Result<Action, Error> {
    if platform.name_any() != "default" {
        return Ok(Action::await_change());
    }
    let ctx = &r.ctx;
    let observed = match converge(ctx, &platform).await {
        Ok(observed) => observed,
        Err(Error::Refused {
            object, message, ..
        }) => Observed::failed(
            types::PAYMENTS_SERVICE_READY,
            Reason::ObjectRefused,
            format!("the API server refused {object}: {message}"),
        ),
        Err(e) => return Err(e),
    };
    let retry = observed.reason.retry();
    let ok = observed.ok;
    write_status(ctx, &platform, observed).await?;
    Ok(match (ok, retry) {
        (false, Retry::Backoff) => Action::requeue(backoff(r.memory.failures.failed(RECORD_KEY))),
        _ => {
            r.memory.failures.succeeded(RECORD_KEY);
            Action::requeue(ctx.settings.resync)
        }
    })
}

/// Transient errors back off, 1 s doubling to 5 minutes while they last (counted like a
/// tenant's, under the service's record key).
pub fn error_policy(_platform: Arc<Platform>, error: &Error, r: Arc<Reconciler>) -> Action {
    r.ctx.metrics.error(error.label());
    tracing::warn!(reason = error.label(), error = %error, "payments service reconcile failed");
    Action::requeue(backoff(r.memory.failures.failed(RECORD_KEY)))
}

/// Everything up to the objects being applied, and what the Deployment shows.
async fn converge(ctx: &Context, platform: &Platform) -> Result<Observed, Error> {
    let failed = |reason, message: String| {
        Ok(Observed::failed(
            types::PAYMENTS_SERVICE_READY,
            reason,
            message,
        ))
    };
    let spec = &platform.spec;
    let Some(stripe) = &spec.stripe else {
        remove(ctx).await?;
        return failed(
            Reason::PlatformNotConfigured,
            "Platform.spec.stripe is not set: no payments service runs and no storefront can take payments".into(),
        );
    };
    let keys = async {
        let [key] = secret_fields(ctx, &stripe.secret_key_ref, ["secretKey"]).await?;
        let [webhook] = secret_fields(ctx, &stripe.webhook_secret_ref, ["webhookSecret"]).await?;
        Ok::<_, String>((key, webhook))
    };
    let (stripe_key, webhook_secrets) = match keys.await {
        Ok(keys) => keys,
        Err(cause) => return failed(Reason::StripeSecretUnavailable, cause),
    };
    let server = match servers(ctx, spec).await.postgres {
        Some(Ok(server)) => server,
        Some(Err(cause)) => return failed(Reason::AdminAuthFailed, cause),
        None => {
            return failed(
                Reason::PlatformNotConfigured,
                "Platform.spec.postgres is not set: the payments service needs its database".into(),
            );
        }
    };
    let namespace = ctx.settings.namespace.clone();
    let existing = existing_secret(ctx, &namespace).await?;
    let kept = existing.as_ref().map(kept_values);
    let (password, delivery_key) = kept.map_or((None, None), |k| (k.password, k.delivery_key));
    let pg = password.map(|p| BTreeMap::from([("PGPASSWORD".to_owned(), p)]));
    // `payments` names a database no tenant can have (validation refuses the name).
    let database = database_secret(&server, PAYMENTS_HOST_LABEL, pg.as_ref())
        .expect("`payments` names a database");
    let delivery_key = delivery_key.unwrap_or_else(new_delivery_key);
    let secret = BTreeMap::from([
        ("STRIPE_SECRET_KEY".to_owned(), stripe_key),
        ("STRIPE_WEBHOOK_SECRETS".to_owned(), webhook_secrets),
        ("DATABASE_URL".to_owned(), database["DATABASE_URL"].clone()),
        (DELIVERY_KEY.to_owned(), delivery_key),
    ]);
    let input = input(
        spec,
        service_image(platform),
        ctx.route_api,
        namespace,
        secret,
    );
    let owner = platform
        .controller_owner_ref(&())
        .ok_or(Error::MissingUid)?;
    let applier = Applier::with_labels(
        ctx.client.clone(),
        ctx.caches.clone(),
        owner,
        RECORD_KEY,
        service_labels(),
    );
    let PaymentsService {
        secret,
        service_account,
        deployment,
        pdb,
        service,
        network_policies,
        exposure,
    } = payments_service(&input);
    // The Secret first: the password and the delivery key are kept before anything uses them.
    applier.apply(secret).await?;
    if let Err(e) = ensure_database(
        &server,
        PAYMENTS_HOST_LABEL,
        &database["PGPASSWORD"],
        CONNECTION_LIMIT,
    )
    .await
    {
        return failed(e.reason(), format!("the payments service's database: {e}"));
    }
    applier.apply(service_account).await?;
    for policy in network_policies {
        applier.apply(policy).await?;
    }
    applier.apply(service).await?;
    applier.apply(pdb).await?;
    let deployment = applier.apply(deployment).await?;
    match exposure {
        ServiceExposure::Ingress(ingress) => drop(applier.apply(*ingress).await?),
        ServiceExposure::Route(route) => {
            drop(applier.apply_dynamic(*route, &route_api_resource()).await?);
        }
    }
    ctx.metrics.writes.inc_by(applier.writes());
    Ok(availability(&deployment))
}

/// Without `spec.stripe` nothing may keep holding the platform's Stripe key: the service's
/// workload and exposure are deleted, then its Secret loses the Stripe fields. Its database,
/// the database password and the delivery key stay, so payment records survive and turning
/// payments back on keeps every storefront's delivery secret. Costs nothing once done: it
/// acts only while the cached Secret still holds a Stripe key.
async fn remove(ctx: &Context) -> Result<(), Error> {
    let namespace = ctx.settings.namespace.as_str();
    let holds_key = ctx
        .caches
        .secret_data(namespace, PAYMENTS_SERVICE)
        .is_some_and(|data| data.contains_key("STRIPE_SECRET_KEY"));
    if !holds_key {
        return Ok(());
    }
    tracing::info!("Platform.spec.stripe was removed: removing the payments service");
    let client = &ctx.client;
    delete::<Deployment>(client, namespace, PAYMENTS_SERVICE).await?;
    delete::<Service>(client, namespace, PAYMENTS_SERVICE).await?;
    delete::<PodDisruptionBudget>(client, namespace, PAYMENTS_SERVICE).await?;
    delete::<Ingress>(client, namespace, PAYMENTS_SERVICE).await?;
    if ctx.route_api {
        let routes: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &route_api_resource());
        ignore_missing(
            routes
                .delete(PAYMENTS_SERVICE, &DeleteParams::background())
                .await,
        )?;
    }
    for policy in NETWORK_POLICIES {
        delete::<NetworkPolicy>(client, namespace, policy).await?;
    }
    delete::<ServiceAccount>(client, namespace, PAYMENTS_SERVICE).await?;
    let without_key = serde_json::json!({
        "data": { "STRIPE_SECRET_KEY": null, "STRIPE_WEBHOOK_SECRETS": null }
    });
    ignore_missing(
        Api::<Secret>::namespaced(client.clone(), namespace)
            .patch(
                PAYMENTS_SERVICE,
                &PatchParams::default(),
                &Patch::Merge(&without_key),
            )
            .await,
    )?;
    ctx.metrics.writes.inc_by(9);
    Ok(())
}

async fn delete<K>(client: &kube::Client, namespace: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    ignore_missing(api.delete(name, &DeleteParams::background()).await)
}

fn ignore_missing<T>(result: kube::Result<T>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The runtime image the service runs: the Platform's, unless the rollout of that image is
/// halted (it failed on the first tenants), then the last good one, like those tenants: one bad
/// image must not take checkout away from every tenant.
fn service_image(platform: &Platform) -> String {
    let spec = &platform.spec;
    let rollout = platform.status.as_ref().and_then(|s| s.rollout.as_ref());
    match rollout {
        Some(RolloutStatus {
            halted: Some(halted),
            last_good_image: Some(good),
        }) if halted.image == spec.runtime_image => good.clone(),
        _ => spec.runtime_image.clone(),
    }
}

/// The service's objects' input from the Platform.
fn input(
    spec: &PlatformSpec,
    image: String,
    route_api: bool,
    namespace: String,
    secret: BTreeMap<String, String>,
) -> ServiceInput {
    use tiqzy_crds::RoutingMode;
    let routing = match spec.routing.mode {
        RoutingMode::Route => RoutingKind::Route,
        RoutingMode::Ingress => RoutingKind::Ingress,
        RoutingMode::Auto if route_api => RoutingKind::Route,
        RoutingMode::Auto => RoutingKind::Ingress,
    };
    let api_base = spec.stripe.as_ref().and_then(|s| s.api_base.clone());
    let traces = spec.observability.as_ref().and_then(|o| o.traces.clone());
    let egress_ports = [
        spec.postgres.as_ref().map(|p| p.port),
        api_base.as_deref().and_then(api_port),
        traces.as_ref().and_then(|t| api_port(&t.endpoint)),
    ]
    .into_iter()
    .flatten()
    .collect();
    ServiceInput {
        namespace,
        image,
        host: payments_host(&spec.base_domain),
        routing,
        ingress_class: spec.routing.ingress_class_name.clone(),
        api_base,
        egress_ports,
        traces,
        secret,
    }
}

/// `PaymentsServiceReady` from the Deployment: one available replica serves (the PDB keeps
/// one).
fn availability(deployment: &Deployment) -> Observed {
    let status = deployment.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    if available >= 1 {
        Observed::ok(
            types::PAYMENTS_SERVICE_READY,
            Reason::PaymentsServiceAvailable,
            format!("{available} of {wanted} replicas of {PAYMENTS_SERVICE} are available"),
        )
    } else {
        Observed::failed(
            types::PAYMENTS_SERVICE_READY,
            Reason::PaymentsServiceProgressing,
            format!("no replica of {PAYMENTS_SERVICE} is available yet (0 of {wanted})"),
        )
    }
}

/// The service's Secret as the cache has it, confirmed with the API server on a miss: a key
/// that is only late in the cache must never be taken for missing and replaced.
async fn existing_secret(
    ctx: &Context,
    namespace: &str,
) -> Result<Option<BTreeMap<String, String>>, Error> {
    if let Some(data) = ctx.caches.secret_data(namespace, PAYMENTS_SERVICE) {
        return Ok(Some(data));
    }
    let live = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(PAYMENTS_SERVICE)
        .await?;
    Ok(live.as_ref().map(crate::cache::text_data))
}

/// What the service's Secret keeps across reconciles.
struct Kept {
    password: Option<String>,
    delivery_key: Option<String>,
}

fn kept_values(existing: &BTreeMap<String, String>) -> Kept {
    // The password is alphanumeric (the operator made it), so the URL carries it as is.
    let password = existing.get("DATABASE_URL").and_then(|url| {
        let (_, rest) = url.split_once("://")?;
        let (credentials, _) = rest.rsplit_once('@')?;
        let (_, password) = credentials.split_once(':')?;
        Some(password.to_owned()).filter(|p| !p.is_empty())
    });
    let delivery_key = existing
        .get(DELIVERY_KEY)
        .filter(|k| k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()))
        .cloned();
    Kept {
        password,
        delivery_key,
    }
}

/// 32 random bytes as 64 hex characters.
fn new_delivery_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `PaymentsServiceReady` when it changed (the Platform watch reconciles every
/// tenant on that change, which is how storefronts learn the service is there).
async fn write_status(ctx: &Context, platform: &Platform, observed: Observed) -> Result<(), Error> {
    let previous = platform.status.clone().unwrap_or_default();
    let as_tenant = TenantStatus {
        conditions: previous.conditions.clone(),
        ..TenantStatus::default()
    };
    let generation = platform.metadata.generation;
    let next = next_status(
        Some(&as_tenant),
        generation,
        vec![observed],
        TenantStatus::default(),
        Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let mut conditions: Vec<_> = previous
        .conditions
        .iter()
        .filter(|c| c.type_ != types::PAYMENTS_SERVICE_READY)
        .cloned()
        .collect();
    conditions.extend(next.conditions);
    let same = |a: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
                b: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                (
                    &x.type_,
                    &x.status,
                    &x.reason,
                    &x.message,
                    x.observed_generation,
                ) == (
                    &y.type_,
                    &y.status,
                    &y.reason,
                    &y.message,
                    y.observed_generation,
                )
            })
    };
    if same(&previous.conditions, &conditions) {
        return Ok(());
    }
    // Only what this writer owns: the rollout's record (`status.rollout`) is written by the
    // rollout's own writer, and a stale copy of it here must not undo a halt.
    let patch = serde_json::json!({
        "status": { "conditions": conditions, "observedGeneration": generation }
    });
    Api::<Platform>::all(ctx.client.clone())
        .patch_status(
            &platform.name_any(),
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(image: &str, rollout: serde_json::Value) -> Platform {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tiqzy.io/v1alpha1", "kind": "Platform",
            "metadata": { "name": "default" },
            "spec": { "baseDomain": "shops.example.com", "runtimeImage": image },
            "status": { "rollout": rollout },
        }))
        .expect("a Platform")
    }

    #[test]
    fn the_service_stays_on_the_last_good_image_while_the_new_one_is_halted() {
        let halted = serde_json::json!({
            "lastGoodImage": "runtime@sha256:good",
            "halted": { "image": "runtime@sha256:bad", "reason": "CrashLoopBackOff" },
        });
        assert_eq!(
            service_image(&platform("runtime@sha256:bad", halted.clone())),
            "runtime@sha256:good"
        );
        // A newer image clears the halt's hold on the service: it follows the spec again.
        assert_eq!(
            service_image(&platform("runtime@sha256:next", halted)),
            "runtime@sha256:next"
        );
        assert_eq!(
            service_image(&platform(
                "runtime@sha256:bad",
                serde_json::json!({ "lastGoodImage": "runtime@sha256:good" })
            )),
            "runtime@sha256:bad"
        );
    }
}
