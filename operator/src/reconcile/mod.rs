//! Reconcile one Tenant, step by step:
//! platform -> validate -> dereference -> rollout gate -> build -> apply -> converge stores ->
//! expose -> rollout report (a failed storefront rollout, the Platform's halt) -> status. Each
//! step is a module with a narrow input and output; what a step remembers between reconciles
//! lives in [`Memory`], next to the step that uses it.

pub mod backups;
mod certificate;
mod cleanup;
pub mod credentials;
mod dereference;
pub mod failure;
pub mod halt;
mod hosts;
pub(crate) mod mail;
mod objects;
mod payments;
pub mod payments_service;
mod report;
mod retry;
mod rollout;
mod routing;
pub(crate) mod sentry;
mod servers;
mod status;
mod stores;
mod trust;
mod validate;

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::{Resource, ResourceExt};
use tiqzy_crds::conditions::{FINALIZER, Reason};
use tiqzy_crds::{Tenant, TenantPhase, TenantStatus};
use tiqzy_telemetry::{Reporter, Where};
use tracing::Instrument;

pub use status::Observed;
pub use validate::validate;

use crate::apply::Applier;
use crate::build::{self, Desired};
use crate::cache::GuardedTenant;
use crate::context::Context;
use crate::error::{Error, backoff};
use crate::external::StoreError;

/// What the controller hands every reconcile: what the steps share, and what they remember.
#[derive(Debug)]
pub struct Reconciler {
    pub ctx: Context,
    pub memory: Memory,
}

/// Each step's memory between reconciles, in memory only: a restart starts afresh.
#[derive(Debug, Default)]
pub struct Memory {
    pub failures: retry::Failures,
    pub rollouts: rollout::Slots,
    pub halt: halt::Rollouts,
    pub stores: stores::Checks,
    pub certificates: certificate::Polls,
    pub written: report::Written,
    pub backups: backups::Backups,
}

impl Reconciler {
    pub fn new(ctx: Context) -> Self {
        Self {
            ctx,
            memory: Memory::default(),
        }
    }

    /// Forgets a deleted tenant.
    fn forget(&self, tenant: &str) {
        self.ctx.caches.applied.forget(tenant);
        self.ctx.metrics.forget_certificate(tenant);
        self.memory.stores.forget(tenant);
        self.memory.certificates.forget(tenant);
        self.memory.rollouts.finished(tenant);
        self.memory.failures.succeeded(tenant);
        self.memory.written.forget(tenant);
        self.memory.backups.forget(tenant);
        self.ctx.metrics.forget_backup(tenant);
    }
}

/// Entry point for the controller. A malformed Tenant is reported and left alone until it
/// changes; the others are reconciled as usual.
pub async fn reconcile(guarded: Arc<GuardedTenant>, r: Arc<Reconciler>) -> Result<Action, Error> {
    let Ok(tenant) = &guarded.0 else {
        report::malformed(&r.ctx, &guarded).await;
        return Ok(Action::await_change());
    };
    let started = Instant::now();
    let name = tenant.name_any();
    let api: Api<Tenant> = Api::all(r.ctx.client.clone());
    // Boxed: the wrappers below would otherwise carry the whole reconcile's state on the
    // worker's stack as they are built (a stack overflow in debug builds).
    let work = Box::pin(finalizer(
        &api,
        FINALIZER,
        Arc::new(tenant.clone()),
        |event| async {
            match event {
                Finalized::Apply(tenant) => apply(&tenant, &r).await,
                Finalized::Cleanup(tenant) => {
                    step("cleanup");
                    cleanup::cleanup(&tenant, &r).await
                }
            }
        },
    ));
    let errors = &r.ctx.settings.errors;
    let span = tracing::info_span!(
        "reconcile",
        tenant = %name,
        step = tracing::field::Empty,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let (result, last_step) = errors
        .within(Where::tenant(&name), tracking_steps(work))
        .instrument(span.clone())
        .await;
    let result = result.map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    });
    if let Err(e) = &result {
        report_failure(errors, &name, last_step, e);
    }
    let outcome = if result.is_ok() { "success" } else { "error" };
    span.record("step", last_step);
    span.record("outcome", outcome);
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    r.ctx.metrics.reconciled(started.elapsed(), outcome);
    let snapshot = r.ctx.tenant_snapshot();
    let tenants: Vec<&Tenant> = snapshot.iter().filter_map(|g| g.0.as_ref().ok()).collect();
    r.ctx.metrics.count_phases(&tenants);
    if result.is_ok() {
        r.memory.failures.succeeded(&name);
    }
    result
}

tokio::task_local! {
    /// The step of the reconcile under way, for its error report.
    static STEP: Cell<&'static str>;
}

/// Marks the step a reconcile has reached.
fn step(name: &'static str) {
    let _ = STEP.try_with(|s| s.set(name));
}

/// Runs `work` and says which step it reached (`finalizer` before the first).
async fn tracking_steps<F: Future>(work: F) -> (F::Output, &'static str) {
    STEP.scope(Cell::new("finalizer"), async {
        let output = work.await;
        (output, STEP.with(Cell::get))
    })
    .await
}

/// Reports a failed reconcile with its tenant and step, unless someone must fix a spec.
fn report_failure(errors: &Reporter, tenant: &str, step: &'static str, error: &Error) {
    if error.is_reported() {
        let at = Where {
            step: Some(step.to_owned()),
            ..Where::tenant(tenant)
        };
        errors.error(error, &at);
    }
}

/// Invalid specs wait for a change; transient errors back off per tenant, exponentially.
pub fn error_policy(tenant: Arc<GuardedTenant>, error: &Error, r: Arc<Reconciler>) -> Action {
    let name = tenant.meta().name.clone().unwrap_or_default();
    r.ctx.metrics.error(error.label());
    tracing::warn!(tenant = %name, reason = error.label(), error = %error, "reconcile failed");
    if error.is_transient() {
        Action::requeue(backoff(r.memory.failures.failed(&name)))
    } else {
        Action::await_change()
    }
}

/// The steps, in order.
async fn apply(tenant: &Tenant, r: &Reconciler) -> Result<Action, Error> {
    let (ctx, memory) = (&r.ctx, &r.memory);
    step("platform");
    let Some(platform) = dereference::platform(ctx).await else {
        let message = Error::PlatformNotFound.to_string();
        let (reason, phase) = (Reason::PlatformNotFound, TenantPhase::Pending);
        report::stopped(tenant, r, reason, message, phase, TenantStatus::default()).await?;
        return Ok(Action::await_change());
    };
    step("validate");
    let mut validated = match validate(tenant, &platform) {
        Err(Error::InvalidSpec(message)) => {
            let (reason, phase) = (Reason::InvalidSpec, TenantPhase::Failed);
            report::stopped(tenant, r, reason, message, phase, TenantStatus::default()).await?;
            return Ok(Action::await_change());
        }
        other => other?,
    };
    validated.trusted_cas = match trust::trusted_cas(ctx, &platform.spec).await {
        Ok(cas) => cas,
        Err(message) => {
            let (reason, phase) = (Reason::TrustedCaUnavailable, TenantPhase::Pending);
            report::stopped(tenant, r, reason, message, phase, TenantStatus::default()).await?;
            let failures = memory.failures.failed(&tenant.name_any());
            return Ok(Action::requeue(backoff(failures)));
        }
    };
    step("dereference");
    let found = dereference::dereference(ctx, &memory.certificates, tenant, validated, &platform);
    let mut found = match found.await {
        Err(Error::SigningKeys(e)) => {
            // No new keys while the saved ones cannot be read: the tenant waits, Ready=False.
            let reason = match &e {
                StoreError::Database(e) => e.reason(),
                _ => Reason::AdminAuthFailed,
            };
            let (message, phase) = (Error::SigningKeys(e).to_string(), TenantPhase::Pending);
            report::stopped(tenant, r, reason, message, phase, TenantStatus::default()).await?;
            let failures = memory.failures.failed(&tenant.name_any());
            return Ok(Action::requeue(backoff(failures)));
        }
        other => other?,
    };
    step("build");
    let limit = platform.spec.rollout.max_concurrent_tenant_rollouts;
    let rollout = memory.halt.current(ctx);
    let gate = memory
        .rollouts
        .gate(&mut found.tenant, found.live.as_ref(), limit, &rollout);
    let owner = tenant.controller_owner_ref(&()).ok_or(Error::MissingUid)?;
    let applier = Applier::new(
        ctx.client.clone(),
        ctx.caches.clone(),
        owner,
        &found.tenant.name,
    );
    let desired = build::desired(&found.tenant);
    step("apply");
    let applied = match converge(&applier, r, tenant, &platform.spec, &found, desired).await {
        Err(Error::Refused {
            object, message, ..
        }) => return refused(tenant, r, &found, object, message).await,
        Err(Error::RestoreBlocked { reason, message }) => {
            return restore_blocked(tenant, r, &found, reason, message).await;
        }
        other => other?,
    };
    ctx.metrics.writes.inc_by(applier.writes());
    step("rollout");
    let failure = report_rollout(r, &found.tenant, &applied.deployment, &gate).await?;
    let (mut observed, phase) = status::observe(&found, &applied, &gate, failure.as_ref());
    // After Ready is summarised: a failed backup never keeps the storefront from Ready.
    let database_ready = applied
        .stores
        .iter()
        .any(|s| s.type_ == tiqzy_crds::conditions::types::DATABASE_READY && s.ok);
    step("backup");
    let backup = memory
        .backups
        .step(ctx, tenant, &platform.spec, &found.servers, database_ready)
        .await;
    observed.extend(backup.observed);
    let mut base = status::base(&found);
    base.backup = backup.status;
    base.restored_from = applied.restored_from.clone();
    step("status");
    report::write_status(tenant, r, observed, phase, base).await?;
    let reference = tenant.object_ref(&());
    for event in std::mem::take(&mut found.certificate.events) {
        report::publish(ctx, &reference, event).await;
    }
    let outcome = retry::Outcome {
        transient: retry::Outcome::transient(
            &applied
                .stores
                .iter()
                .chain([&found.payments, &found.mail])
                .collect::<Vec<_>>(),
        ),
        rollout_queued: gate.queued,
        // A failed rollout waits for a change (its pods' state, the Platform's image).
        rolling: status::rolling(&applied.deployment) && failure.is_none(),
        certificate_poll: found.certificate.poll_in,
        backup_in: backup.requeue_in,
    };
    let name = &found.tenant.name;
    Ok(retry::requeue(
        outcome,
        ctx.settings.resync,
        &memory.failures,
        name,
    ))
}

/// Looks for a failed storefront rollout; a failed one frees its slot. Reports the tenant's
/// rollout to the Platform's, which halts when the image failed on a tenant that moved to it.
async fn report_rollout(
    r: &Reconciler,
    v: &crate::tenant::ValidatedTenant,
    deployment: &k8s_openapi::api::apps::v1::Deployment,
    gate: &rollout::Gate,
) -> Result<Option<failure::Failure>, Error> {
    let (ctx, memory) = (&r.ctx, &r.memory);
    let failure = failure::diagnose(ctx, &v.namespace, deployment).await;
    let moved = match &failure {
        Some(f) => {
            memory.rollouts.failed(&v.name, &f.image);
            memory.rollouts.moved_to(&v.name, &f.image)
        }
        None => false,
    };
    let settled_on = (!status::rolling(deployment))
        .then(|| rollout::image(deployment))
        .flatten();
    let report = halt::Report {
        tenant: &v.name,
        failure: failure.as_ref(),
        moved,
        gate,
        settled_on: settled_on.as_deref(),
    };
    halt::report(ctx, &memory.halt, report).await?;
    Ok(failure)
}

/// What applying and converging produced, for the status.
#[derive(Debug)]
pub struct Applied {
    pub deployment: k8s_openapi::api::apps::v1::Deployment,
    /// `DatabaseReady` and `CacheReady`.
    pub stores: Vec<Observed>,
    pub routed: Observed,
    /// The backup the database was created from (`spec.restoreFrom`).
    pub restored_from: Option<tiqzy_crds::RestoredFrom>,
}

/// Applies the desired objects and converges the external stores between the credentials
/// and the workload.
async fn converge(
    applier: &Applier,
    r: &Reconciler,
    tenant: &Tenant,
    platform: &tiqzy_crds::PlatformSpec,
    found: &dereference::Found,
    desired: Desired,
) -> Result<Applied, Error> {
    let Desired {
        credentials,
        workload,
        exposure,
    } = desired;
    let v = &found.tenant;
    step("credentials");
    objects::apply_credentials(applier, credentials).await?;
    step("stores");
    let interval = r.ctx.settings.store_check;
    let stores = r.memory.stores.converge(&found.servers, v, interval).await;
    // A database restored from a backup is complete before the storefront first starts.
    let database = stores
        .iter()
        .find(|s| s.type_ == tiqzy_crds::conditions::types::DATABASE_READY)
        .cloned()
        .unwrap_or_else(|| Observed::failed("DatabaseReady", Reason::Progressing, ""));
    let restored_from = r
        .memory
        .backups
        .restore(&r.ctx, tenant, platform, &found.servers, &database)
        .await
        .map_err(|(reason, message)| Error::RestoreBlocked { reason, message })?;
    step("workload");
    let deployment = objects::apply_workload(applier, &v.namespace, workload).await?;
    let conflict = found.conflict.as_deref();
    step("routing");
    let routed = routing::expose(applier, &r.ctx, &v.namespace, exposure, conflict).await?;
    Ok(Applied {
        deployment,
        stores,
        routed,
        restored_from,
    })
}

/// The API server refused an object built from the spec: `Ready=False` with its message
/// (which names the field), an Event, and a wait for a change instead of a hot loop.
async fn refused(
    tenant: &Tenant,
    r: &Reconciler,
    found: &dereference::Found,
    object: String,
    message: String,
) -> Result<Action, Error> {
    let text = format!("the API server refused {object}: {message}");
    tracing::warn!(tenant = %found.tenant.name, error = %text, "an object was refused");
    r.ctx.metrics.error("ObjectRefused");
    let (reason, phase) = (Reason::ObjectRefused, TenantPhase::Failed);
    report::stopped(tenant, r, reason, text, phase, status::base(found)).await?;
    Ok(Action::await_change())
}

/// `spec.restoreFrom` has not been restored: `Ready=False` with the reason (and an Event), the
/// storefront not started, and a retry with backoff or a wait for a change, as the reason says.
async fn restore_blocked(
    tenant: &Tenant,
    r: &Reconciler,
    found: &dereference::Found,
    reason: Reason,
    message: String,
) -> Result<Action, Error> {
    use tiqzy_crds::conditions::Retry;
    let phase = if reason.retry() == Retry::OnChange {
        TenantPhase::Failed
    } else {
        TenantPhase::Provisioning
    };
    let mut base = status::base(found);
    base.backup = tenant.status.as_ref().and_then(|s| s.backup.clone());
    report::stopped(tenant, r, reason, message, phase, base).await?;
    if reason.retry() == Retry::OnChange {
        Ok(Action::await_change())
    } else {
        let failures = r.memory.failures.failed(&found.tenant.name);
        Ok(Action::requeue(backoff(failures)))
    }
}

#[cfg(test)]
mod reporting {
    use super::*;
    use ::sentry::test::TestTransport;

    #[tokio::test]
    async fn a_failed_reconcile_is_reported_with_its_tenant_and_the_step_it_reached() {
        let transport = TestTransport::new();
        let errors = Reporter::with_transport("tiqzy-operator", transport.clone());
        let (result, reached) = tracking_steps(async {
            step("validate");
            step("stores");
            Err::<(), _>(Error::Serialize {
                what: "the database of ann@mail.example".to_owned(),
                source: serde_json::from_str::<u8>("x").expect_err("not JSON"),
            })
        })
        .await;
        let error = result.expect_err("failed");
        report_failure(&errors, "acme", reached, &error);
        let events = transport.fetch_and_clear_events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].tags["tenant"], "acme");
        assert_eq!(events[0].tags["step"], "stores");
        let text = serde_json::to_string(&events[0]).expect("event as JSON");
        assert!(
            text.contains("serialising the database of [email]"),
            "{text}"
        );
        assert!(!text.contains("mail.example"), "{text}");
    }

    #[tokio::test]
    async fn a_spec_someone_must_fix_is_not_reported() {
        let transport = TestTransport::new();
        let errors = Reporter::with_transport("tiqzy-operator", transport.clone());
        report_failure(
            &errors,
            "acme",
            "validate",
            &Error::InvalidSpec("bad".into()),
        );
        assert!(transport.fetch_and_clear_events().is_empty());
    }
}
