//! The Platform's runtime image rollout as a whole: the last image every tenant ran, and a
//! halt when a new image fails on the first tenants of its rollout. Tenants report what
//! their own rollout did; the decision is a plain function of those reports, and the result
//! is written to the Platform's `status.rollout` and `RolloutHalted` condition, with an Event
//! on the Platform for every change.

use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tiqzy_crds::conditions::{Reason, types};
use tiqzy_crds::{HaltedRollout, Platform, RolloutStatus};

use super::failure::Failure;
use super::report;
use super::rollout::Gate;
use super::status;
use crate::apply::FIELD_MANAGER;
use crate::build::STOREFRONT;
use crate::context::Context;
use crate::error::Error;

/// The rollout status as this process knows it, seeded from the Platform's.
#[derive(Debug, Default)]
pub struct Rollouts {
    known: Mutex<Option<RolloutStatus>>,
    /// One status write at a time, each with the newest knowledge.
    writing: tokio::sync::Mutex<()>,
}

/// What one tenant's reconcile saw of its own rollout.
#[derive(Debug)]
pub struct Report<'a> {
    pub tenant: &'a str,
    /// Its rollout failed.
    pub failure: Option<&'a Failure>,
    /// It moved to the failed image from another one (it is not a new tenant).
    pub moved: bool,
    pub gate: &'a Gate,
    /// The image its Deployment runs, settled (every pod updated and available).
    pub settled_on: Option<&'a str>,
}

impl Rollouts {
    /// The rollout status for a Platform that asks for `image`.
    pub fn view(&self, platform: &Platform) -> RolloutStatus {
        let mut known = self.known.lock().expect("rollouts lock");
        let status = known.get_or_insert_with(|| {
            platform
                .status
                .as_ref()
                .and_then(|s| s.rollout.clone())
                .unwrap_or_default()
        });
        cleared(status.clone(), &platform.spec.runtime_image)
    }

    /// The rollout status of the cached Platform, if there is one.
    pub fn current(&self, ctx: &Context) -> RolloutStatus {
        ctx.caches
            .platforms
            .get(&ObjectRef::new("default"))
            .map(|p| self.view(&p))
            .unwrap_or_default()
    }

    /// Takes in one tenant's report; returns the Events the change calls for.
    fn take(
        &self,
        image: &str,
        report: &Report<'_>,
        all_settled: bool,
    ) -> Vec<(EventType, &'static str, String)> {
        let mut known = self.known.lock().expect("rollouts lock");
        let before = known.clone().unwrap_or_default();
        let after = next(&before, image, report, all_settled);
        let events = changes(&before, &after, image);
        *known = Some(after);
        events
    }
}

/// What of the Platform a tenant's reconcile reads: its spec, whether the payments service is
/// ready, and a halted rollout. Feeds the watch predicate, so that the operator's own writes
/// of `status.rollout.lastGoodImage` do not reconcile every tenant.
pub fn platform_state(platform: &Platform) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    platform.metadata.generation.hash(&mut hasher);
    let status = platform.status.as_ref();
    let payments_ready = status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == types::PAYMENTS_SERVICE_READY && c.status == "True")
    });
    payments_ready.hash(&mut hasher);
    let halted = status
        .and_then(|s| s.rollout.as_ref())
        .and_then(|r| r.halted.as_ref());
    halted.map(|h| &h.image).hash(&mut hasher);
    Some(hasher.finish())
}

/// A halt on an image the Platform no longer asks for is over.
fn cleared(mut status: RolloutStatus, image: &str) -> RolloutStatus {
    if status.halted.as_ref().is_some_and(|h| h.image != image) {
        status.halted = None;
    }
    status
}

/// The rollout status after `report`, for a Platform asking for `image`. `all_settled` says
/// whether every tenant's storefront runs `image`, settled.
pub fn next(
    current: &RolloutStatus,
    image: &str,
    report: &Report<'_>,
    all_settled: bool,
) -> RolloutStatus {
    let mut status = cleared(current.clone(), image);
    let failed_here = report.failure.filter(|f| f.image == image);
    if let Some(failure) = failed_here
        && report.moved
        && status.last_good_image.as_deref() != Some(image)
    {
        let halted = status.halted.get_or_insert_with(|| HaltedRollout {
            image: image.to_owned(),
            reason: failure.reason.as_str().to_owned(),
            message: failure.message.clone(),
            ..HaltedRollout::default()
        });
        if !halted.failed_tenants.iter().any(|t| t == report.tenant) {
            halted.failed_tenants.push(report.tenant.to_owned());
        }
    }
    if let Some(halted) = status.halted.as_mut()
        && report.gate.rolled_back
        && !halted
            .rolled_back_tenants
            .iter()
            .any(|t| t == report.tenant)
    {
        halted.rolled_back_tenants.push(report.tenant.to_owned());
    }
    if status.halted.is_none()
        && report.failure.is_none()
        && report.settled_on == Some(image)
        && all_settled
    {
        status.last_good_image = Some(image.to_owned());
    }
    status
}

/// Events for the change from `before` to `after`.
fn changes(
    before: &RolloutStatus,
    after: &RolloutStatus,
    image: &str,
) -> Vec<(EventType, &'static str, String)> {
    let mut events = Vec::new();
    match (&before.halted, &after.halted) {
        (None, Some(h)) => events.push((
            EventType::Warning,
            "RolloutHalted",
            halted_message(h, after),
        )),
        (Some(old), None) => events.push((
            EventType::Normal,
            "RolloutResumed",
            format!(
                "the halt on runtime image {} is cleared: tenants roll to {image}",
                old.image
            ),
        )),
        (Some(old), Some(new)) if old.image == new.image => {
            for tenant in new
                .failed_tenants
                .iter()
                .filter(|t| !old.failed_tenants.contains(t))
            {
                events.push((
                    EventType::Warning,
                    "RolloutFailed",
                    format!(
                        "runtime image {} failed on tenant {tenant} as well",
                        new.image
                    ),
                ));
            }
            for tenant in new
                .rolled_back_tenants
                .iter()
                .filter(|t| !old.rolled_back_tenants.contains(t))
            {
                events.push((
                    EventType::Normal,
                    "RolledBack",
                    format!(
                        "tenant {tenant} rolled back from {} to {}",
                        new.image,
                        after
                            .last_good_image
                            .as_deref()
                            .unwrap_or("its running image")
                    ),
                ));
            }
        }
        _ => {}
    }
    if after.last_good_image != before.last_good_image
        && let Some(good) = &after.last_good_image
    {
        events.push((
            EventType::Normal,
            "RolloutCompleted",
            format!("every tenant runs runtime image {good}"),
        ));
    }
    events
}

fn halted_message(h: &HaltedRollout, status: &RolloutStatus) -> String {
    let back = match &status.last_good_image {
        Some(good) => format!("tenants that got it go back to {good}"),
        None => "no last good image is known, so tenants that got it keep it".to_owned(),
    };
    let mut tenants = h.failed_tenants.join(", ");
    if !h.rolled_back_tenants.is_empty() {
        tenants = format!(
            "{tenants}; rolled back: {}",
            h.rolled_back_tenants.join(", ")
        );
    }
    format!(
        "runtime image {} failed on tenant(s) {tenants}: {}: {}. The rollout is halted: \
         no other tenant gets it, {back}. Set a new spec.runtimeImage to resume",
        h.image, h.reason, h.message
    )
}

/// The `RolloutHalted` condition for `status`, keeping the transition time of `previous`.
fn condition(
    status: &RolloutStatus,
    image: &str,
    generation: Option<i64>,
    previous: Option<&Condition>,
) -> Condition {
    let (state, reason, message) = match &status.halted {
        Some(h) => ("True", h.reason.clone(), halted_message(h, status)),
        None => (
            "False",
            Reason::RolloutHealthy.as_str().to_owned(),
            format!("no tenant failed on runtime image {image}"),
        ),
    };
    let since = previous
        .filter(|c| c.status == state)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: types::ROLLOUT_HALTED.to_owned(),
        status: state.to_owned(),
        reason,
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Takes in the tenant's report, publishes the Events it calls for, and writes the Platform's
/// status when it differs from what the cache shows.
pub async fn report(ctx: &Context, rollouts: &Rollouts, seen: Report<'_>) -> Result<(), Error> {
    let Some(platform) = ctx.caches.platforms.get(&ObjectRef::new("default")) else {
        return Ok(());
    };
    let image = platform.spec.runtime_image.clone();
    let current = rollouts.view(&platform);
    // Whether every storefront runs the image is asked only when it could matter.
    let all_settled = current.halted.is_none()
        && seen.settled_on == Some(image.as_str())
        && current.last_good_image.as_deref() != Some(image.as_str())
        && every_storefront_settled_on(ctx, &image);
    let events = rollouts.take(&image, &seen, all_settled);
    let reference = platform.object_ref(&());
    for (type_, reason, note) in events {
        tracing::info!(reason, note = %note, "rollout");
        report::publish(
            ctx,
            &reference,
            report::event(type_, reason, note, "Rollout"),
        )
        .await;
    }
    write(ctx, rollouts, &platform).await
}

/// Whether every storefront Deployment in the cache runs `image` and has settled.
fn every_storefront_settled_on(ctx: &Context, image: &str) -> bool {
    ctx.caches.deployments.every_named(STOREFRONT, |d| {
        super::rollout::image(d).as_deref() == Some(image) && !status::rolling(d)
    })
}

/// Writes `status.rollout` and `RolloutHalted` when the cached Platform shows otherwise. A
/// merge patch, like the payments service's: `null` removes a halt that is over.
async fn write(ctx: &Context, rollouts: &Rollouts, cached: &Platform) -> Result<(), Error> {
    let _one = rollouts.writing.lock().await;
    let platform = ctx
        .caches
        .platforms
        .get(&ObjectRef::new("default"))
        .unwrap_or_else(|| std::sync::Arc::new(cached.clone()));
    let known = rollouts.view(&platform);
    let status = platform.status.clone().unwrap_or_default();
    let previous = status
        .conditions
        .iter()
        .find(|c| c.type_ == types::ROLLOUT_HALTED);
    let image = &platform.spec.runtime_image;
    let wanted = condition(&known, image, platform.metadata.generation, previous);
    // The condition appears with the first halt or the first good image, not before.
    let same_condition = match previous {
        Some(c) => {
            (&c.status, &c.reason, &c.message) == (&wanted.status, &wanted.reason, &wanted.message)
        }
        None => known.halted.is_none(),
    };
    if status.rollout.clone().unwrap_or_default() == known && same_condition {
        return Ok(());
    }
    let mut conditions: Vec<Condition> = status
        .conditions
        .iter()
        .filter(|c| c.type_ != types::ROLLOUT_HALTED)
        .cloned()
        .collect();
    conditions.push(wanted);
    let patch = serde_json::json!({
        "status": {
            "rollout": {
                "lastGoodImage": known.last_good_image,
                "halted": known.halted,
            },
            "conditions": conditions,
        }
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
    ctx.metrics.writes.inc();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "quay.io/tiqzy/runtime@sha256:good";
    const BAD: &str = "quay.io/tiqzy/runtime@sha256:bad";

    fn failure() -> Failure {
        Failure {
            reason: Reason::ImagePullBackOff,
            message: "pod p: container runtime cannot pull image".to_owned(),
            image: BAD.to_owned(),
        }
    }

    fn good() -> RolloutStatus {
        RolloutStatus {
            last_good_image: Some(GOOD.to_owned()),
            halted: None,
        }
    }

    #[test]
    fn a_tenant_that_moved_and_failed_halts_the_rollout_and_a_new_one_does_not() {
        let gate = Gate::default();
        let f = failure();
        let new_tenant = Report {
            tenant: "n",
            failure: Some(&f),
            moved: false,
            gate: &gate,
            settled_on: None,
        };
        assert_eq!(
            next(&good(), BAD, &new_tenant, false),
            good(),
            "a new tenant only reports"
        );
        let moved = Report {
            tenant: "a",
            failure: Some(&f),
            moved: true,
            gate: &gate,
            settled_on: None,
        };
        let halted = next(&good(), BAD, &moved, false);
        let h = halted.halted.as_ref().expect("halted");
        assert_eq!(
            (h.image.as_str(), h.reason.as_str()),
            (BAD, "ImagePullBackOff")
        );
        assert_eq!(h.failed_tenants, ["a"]);
        assert_eq!(halted.last_good_image.as_deref(), Some(GOOD));
        let events = changes(&good(), &halted, BAD);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].1, "RolloutHalted");
        assert!(
            events[0]
                .2
                .contains("go back to quay.io/tiqzy/runtime@sha256:good"),
            "{}",
            events[0].2
        );
        // b failed too and was sent back: both are on record, once.
        let back = Gate {
            rolled_back: true,
            ..Gate::default()
        };
        let b = Report {
            tenant: "b",
            failure: Some(&f),
            moved: true,
            gate: &back,
            settled_on: None,
        };
        let both = next(&next(&halted, BAD, &b, false), BAD, &b, false);
        let h = both.halted.as_ref().expect("halted");
        assert_eq!(h.failed_tenants, ["a", "b"]);
        assert_eq!(h.rolled_back_tenants, ["b"]);
    }

    #[test]
    fn a_new_image_clears_the_halt_and_becomes_good_once_every_tenant_runs_it() {
        let gate = Gate::default();
        let f = failure();
        let moved = Report {
            tenant: "a",
            failure: Some(&f),
            moved: true,
            gate: &gate,
            settled_on: None,
        };
        let halted = next(&good(), BAD, &moved, false);
        const FIXED: &str = "quay.io/tiqzy/runtime@sha256:fixed";
        let settled = Report {
            tenant: "a",
            failure: None,
            moved: true,
            gate: &gate,
            settled_on: Some(FIXED),
        };
        let resumed = next(&halted, FIXED, &settled, false);
        assert_eq!(
            resumed,
            good(),
            "the halt is over, the good image stays until all run the new one"
        );
        assert_eq!(changes(&halted, &resumed, FIXED)[0].1, "RolloutResumed");
        let done = next(&resumed, FIXED, &settled, true);
        assert_eq!(done.last_good_image.as_deref(), Some(FIXED));
        assert_eq!(changes(&resumed, &done, FIXED)[0].1, "RolloutCompleted");
    }

    #[test]
    fn the_condition_names_the_image_the_tenants_and_how_to_resume() {
        let gate = Gate::default();
        let f = failure();
        let moved = Report {
            tenant: "a",
            failure: Some(&f),
            moved: true,
            gate: &gate,
            settled_on: None,
        };
        let halted = next(&good(), BAD, &moved, false);
        let c = condition(&halted, BAD, Some(3), None);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "ImagePullBackOff")
        );
        assert!(c.message.contains(BAD) && c.message.contains("tenant(s) a"));
        assert!(c.message.contains("Set a new spec.runtimeImage to resume"));
        let healthy = condition(&good(), GOOD, Some(3), Some(&c));
        assert_eq!(
            (healthy.status.as_str(), healthy.reason.as_str()),
            ("False", "RolloutHealthy")
        );
    }
}
