//! Telling users what happened: the Tenant's status (written only when it changes) and
//! Kubernetes Events, all published through [`publish`].

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use tiqzy_crds::conditions::{Reason, types};
use tiqzy_crds::{Tenant, TenantPhase, TenantStatus};

use super::Reconciler;
use super::status::{self, Observed};
use crate::apply::FIELD_MANAGER;
use crate::context::Context;
use crate::error::Error;

/// The last status written per tenant, for as long as the operator runs. A reconcile can run
/// on a cached Tenant from before that write: a trigger queued behind the write is taken before
/// the watch has delivered the write's own version. Comparing with what was written, it
/// neither writes the same status again with fresh transition times nor repeats its Events (a
/// second `Reconciled` for one Ready).
///
/// The operator is the only writer of a Tenant's status, so the status it wrote last is the
/// Tenant's status. A written status is kept (about 1.5 KiB) only until the cache shows the
/// Tenant's version that the write made; from then on the cache's status is the written one.
#[derive(Debug, Default)]
pub struct Written {
    /// Per tenant: the resourceVersion the write made, and the status written.
    by_tenant: Mutex<HashMap<String, (String, TenantStatus)>>,
}

impl Written {
    /// The status to compare with: the one written last, else the Tenant's own.
    fn previous(&self, tenant: &Tenant) -> Option<TenantStatus> {
        let mut written = self.by_tenant.lock().expect("written lock");
        let name = tenant.name_any();
        match written.get(&name) {
            Some((version, _)) if tenant.metadata.resource_version.as_ref() == Some(version) => {
                written.remove(&name);
                tenant.status.clone()
            }
            Some((_, status)) => Some(status.clone()),
            None => tenant.status.clone(),
        }
    }

    fn wrote(&self, tenant: String, version: Option<String>, status: TenantStatus) {
        let mut written = self.by_tenant.lock().expect("written lock");
        match version {
            Some(version) => written.insert(tenant, (version, status)),
            None => written.remove(&tenant),
        };
    }

    pub fn forget(&self, tenant: &str) {
        self.by_tenant.lock().expect("written lock").remove(tenant);
    }
}

/// Publishes `event` on `reference`. An Event that cannot be written is logged, never fatal.
pub async fn publish(ctx: &Context, reference: &ObjectReference, event: Event) {
    if let Err(e) = ctx.recorder.publish(&event, reference).await {
        tracing::warn!(error = %e, reason = %event.reason, "could not publish an Event");
    }
}

/// An Event for `action` with `reason` and `note`.
pub fn event(type_: EventType, reason: &str, note: String, action: &str) -> Event {
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    }
}

/// Writes the status when it differs from the stored one, and an Event per newsworthy change
/// ([`status::newsworthy`]).
pub async fn write_status(
    tenant: &Tenant,
    r: &Reconciler,
    observed: Vec<Observed>,
    phase: TenantPhase,
    mut base: TenantStatus,
) -> Result<(), Error> {
    let (ctx, written) = (&r.ctx, &r.memory.written);
    base.phase = Some(phase);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let remembered = written.previous(tenant);
    let previous = remembered.as_ref();
    let next = status::next_status(previous, tenant.metadata.generation, observed, base, now);
    if previous == Some(&next) {
        return Ok(());
    }
    let reference = tenant.object_ref(&());
    for news in status::newsworthy(previous, &next) {
        let condition = news.condition;
        let type_ = if news.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let note = format!(
            "{} is {}: {}",
            condition.type_, condition.status, condition.message
        );
        publish(
            ctx,
            &reference,
            event(type_, &condition.reason, note, "Reconcile"),
        )
        .await;
    }
    let patch =
        serde_json::json!({ "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant", "status": next });
    let name = tenant.name_any();
    let updated = Api::<Tenant>::all(ctx.client.clone())
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    written.wrote(name, updated.metadata.resource_version, next);
    ctx.metrics.writes.inc();
    Ok(())
}

/// The status of a tenant stopped before anything was applied: `Ready=False` with `reason`.
pub async fn stopped(
    tenant: &Tenant,
    r: &Reconciler,
    reason: Reason,
    message: String,
    phase: TenantPhase,
    base: TenantStatus,
) -> Result<(), Error> {
    let observed = vec![Observed::failed(types::READY, reason, message)];
    write_status(tenant, r, observed, phase, base).await
}

/// A Tenant that does not deserialize: a Warning Event on it, nothing else.
pub async fn malformed(ctx: &Context, invalid: &DeserializeGuard<Tenant>) {
    let Err(invalid) = &invalid.0 else { return };
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
    let note = format!("the operator cannot read this Tenant: {}", invalid.error);
    publish(
        ctx,
        &reference,
        event(EventType::Warning, "MalformedTenant", note, "Reconcile"),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(version: &str, phase: Option<TenantPhase>) -> Tenant {
        let mut t: Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "tiqzy.io/v1alpha1", "kind": "Tenant",
            "metadata": { "name": "shop", "resourceVersion": version },
            "spec": { "displayName": "Shop", "currency": "EUR" }
        }))
        .expect("tenant");
        t.status = phase.map(|p| TenantStatus {
            phase: Some(p),
            ..TenantStatus::default()
        });
        t
    }

    #[test]
    fn a_copy_from_before_the_last_write_compares_with_what_was_written_until_the_cache_catches_up()
    {
        let written = Written::default();
        let status = |phase| TenantStatus {
            phase: Some(phase),
            ..TenantStatus::default()
        };
        let fresh = tenant("12", Some(TenantPhase::Pending));
        assert_eq!(written.previous(&fresh), Some(status(TenantPhase::Pending)));
        written.wrote("shop".into(), Some("13".into()), status(TenantPhase::Ready));
        // The version the write was computed from, an older one the cache hands back
        // afterwards, a copy without status: each compares with what was written last.
        for copy in [
            tenant("12", Some(TenantPhase::Pending)),
            tenant("9", Some(TenantPhase::Ready)),
            tenant("7", None),
        ] {
            assert_eq!(written.previous(&copy), Some(status(TenantPhase::Ready)));
        }
        // Once the cache shows the version the write made, its status is the written one and
        // the copy kept is dropped.
        let caught_up = tenant("13", Some(TenantPhase::Ready));
        assert_eq!(
            written.previous(&caught_up),
            Some(status(TenantPhase::Ready))
        );
        assert!(written.by_tenant.lock().expect("written lock").is_empty());
        written.wrote(
            "shop".into(),
            Some("14".into()),
            status(TenantPhase::Degraded),
        );
        written.forget("shop");
        assert_eq!(written.previous(&tenant("7", None)), None);
    }
}
