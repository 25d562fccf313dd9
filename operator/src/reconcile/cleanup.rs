//! Deletion: Kubernetes objects go with the namespace (owner references); the database and
//! cache user follow `spec.database.deletionPolicy`.

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tiqzy_crds::conditions::{RELEASE_FINALIZER_ANNOTATION, Reason};
use tiqzy_crds::{DeletionPolicy, Platform, Tenant, TenantPhase};

use super::servers::{self, Servers};
use super::{Reconciler, report};
use crate::build::payments_service::PAYMENTS_HOST_LABEL;
use crate::error::Error;
use crate::external::{StoreError, postgres, redis};
use crate::names;

pub async fn cleanup(tenant: &Tenant, r: &Reconciler) -> Result<Action, Error> {
    let ctx = &r.ctx;
    let name = tenant.name_any();
    r.forget(&name);
    let reference = tenant.object_ref(&());
    let note = |type_, reason: &str, note: String| report::event(type_, reason, note, "Delete");
    if tenant
        .annotations()
        .get(RELEASE_FINALIZER_ANNOTATION)
        .is_some_and(|v| v == "true")
    {
        let text = format!(
            "{RELEASE_FINALIZER_ANNOTATION}=true: database and cache user of {name} left as they are"
        );
        let event = note(EventType::Warning, "FinalizerReleased", text);
        report::publish(ctx, &reference, event).await;
        return Ok(Action::await_change());
    }
    if name == PAYMENTS_HOST_LABEL {
        // Refused before anything was provisioned, and `tiqzy_payments` is the payments
        // service's database: whatever the policy says, it is not this tenant's to drop.
        return Ok(Action::await_change());
    }
    let policy = tenant.spec.database.deletion_policy;
    if policy == DeletionPolicy::Retain {
        let text = format!(
            "deletionPolicy Retain: database {} and its role are kept",
            names::database(&name).unwrap_or_default()
        );
        let event = note(EventType::Normal, "DatabaseRetained", text);
        report::publish(ctx, &reference, event).await;
    }
    let platform = Api::<Platform>::all(ctx.client.clone())
        .get_opt("default")
        .await?;
    let servers = match &platform {
        Some(p) => servers::servers(ctx, &p.spec).await,
        None => Servers::default(),
    };
    let mut blocked = remove_stores(&servers, &name, policy).await.into_iter();
    let Some(first) = blocked.next() else {
        return Ok(Action::await_change());
    };
    let causes: Vec<String> = std::iter::once(first.to_string())
        .chain(blocked.map(|e| e.to_string()))
        .collect();
    let message = format!(
        "cleanup blocked: {}; retrying. To let the Tenant go without cleanup, annotate it {RELEASE_FINALIZER_ANNOTATION}=true",
        causes.join("; ")
    );
    let base = tenant.status.clone().unwrap_or_default();
    report::stopped(
        tenant,
        r,
        Reason::CleanupBlocked,
        message.clone(),
        TenantPhase::Terminating,
        base,
    )
    .await?;
    Err(Error::CleanupBlocked {
        message,
        source: first,
    })
}

/// Removes the database (under `Delete`) and the cache user; returns what stood in the way.
async fn remove_stores(servers: &Servers, name: &str, policy: DeletionPolicy) -> Vec<StoreError> {
    let mut blocked = Vec::new();
    if policy == DeletionPolicy::Delete {
        match servers.postgres() {
            Some(Ok(server)) => {
                if let Err(e) = postgres::remove_database(server, name).await {
                    blocked.push(e.into());
                }
            }
            Some(Err(e)) => blocked.push(e),
            None => {}
        }
    }
    match servers.redis() {
        Some(Ok(server)) => {
            if let Err(e) = redis::remove_cache_user(server, name).await {
                blocked.push(e.into());
            }
        }
        Some(Err(e)) => blocked.push(e),
        None => {}
    }
    blocked
}
