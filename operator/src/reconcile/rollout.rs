//! The rollout gate: an operator upgrade or image change rolls tenants a few at a time. A
//! tenant whose Deployment runs another image waits on that image until a slot is free. A
//! tenant whose rollout failed frees its slot; while the Platform's rollout is halted on a
//! failed image, no tenant moves to it and those that run it go back to the last good image.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::Deployment;
use tiqzy_crds::RolloutStatus;

use super::status;
use crate::tenant::ValidatedTenant;

/// The tenants rolling to a new image now, and what their rollouts did.
#[derive(Debug, Default)]
pub struct Slots {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Tenants holding a slot.
    rolling: BTreeSet<String>,
    /// Tenants that moved from another image to this one in a rollout (not new tenants): a
    /// failure of theirs halts the rollout.
    moved: BTreeMap<String, String>,
    /// Tenants whose rollout to this image failed: they hold no slot.
    failed: BTreeMap<String, String>,
}

/// What the gate decided for one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    /// Waits on its live image for a rollout slot.
    pub queued: bool,
    /// Held off the Platform's image because its rollout is halted on it: the failed image.
    pub halted: Option<String>,
    /// Sent back from the halted image to the last good one.
    pub rolled_back: bool,
}

impl Slots {
    /// Chooses the image `v` runs: the Platform's, unless `limit` other tenants are rolling
    /// (it keeps its live image) or the rollout is halted on that image (it keeps its live
    /// image, or goes back to the last good one when it runs the failed image).
    pub fn gate(
        &self,
        v: &mut ValidatedTenant,
        live: Option<&Deployment>,
        limit: i32,
        rollout: &RolloutStatus,
    ) -> Gate {
        let live_image = live.and_then(image);
        if let Some(halted) = rollout
            .halted
            .as_ref()
            .filter(|h| h.image == v.runtime_image)
        {
            let back = rollout.last_good_image.clone();
            let target = match (live_image, back) {
                (Some(live), _) if live != halted.image => live,
                (_, Some(good)) => good,
                (Some(live), None) => live,
                (None, None) => v.runtime_image.clone(),
            };
            let rolled_back = live.and_then(image).as_deref() == Some(halted.image.as_str())
                && target != halted.image;
            v.runtime_image = target;
            self.finished(&v.name);
            return Gate {
                queued: false,
                halted: Some(halted.image.clone()),
                rolled_back,
            };
        }
        let (Some(live), Some(live_image)) = (live, live_image) else {
            return Gate::default();
        };
        if live_image == v.runtime_image {
            let failed = self.lock().failed.get(&v.name) == Some(&live_image);
            if !status::rolling(live) {
                self.finished(&v.name);
            } else if !failed {
                self.observed(&v.name);
            }
            return Gate::default();
        }
        let known_good = rollout.last_good_image.as_deref() == Some(v.runtime_image.as_str());
        if self.try_start(
            &v.name,
            &v.runtime_image,
            usize::try_from(limit).unwrap_or(1),
            known_good,
        ) {
            Gate::default()
        } else {
            v.runtime_image = live_image;
            Gate {
                queued: true,
                ..Gate::default()
            }
        }
    }

    /// Whether `tenant` moved to `image` from another one in a rollout.
    pub fn moved_to(&self, tenant: &str, image: &str) -> bool {
        self.lock().moved.get(tenant).is_some_and(|i| i == image)
    }

    /// Records that `tenant`'s rollout to `image` failed, freeing its slot.
    pub fn failed(&self, tenant: &str, image: &str) {
        let mut state = self.lock();
        state.rolling.remove(tenant);
        state.failed.insert(tenant.to_owned(), image.to_owned());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("rollout lock")
    }

    /// Admits `tenant` to roll to `image` when fewer than `limit` tenants are rolling. A
    /// tenant that moved to an image not `known_good` and failed on it halts the rollout: the
    /// slot its failure freed goes to nobody, so no tenant is admitted between the failure
    /// and the halt (they are decided on different threads).
    fn try_start(&self, tenant: &str, image: &str, limit: usize, known_good: bool) -> bool {
        let mut state = self.lock();
        if state.rolling.contains(tenant) {
            state.moved.insert(tenant.to_owned(), image.to_owned());
            return true;
        }
        let halting = !known_good
            && state
                .failed
                .iter()
                .any(|(t, failed_on)| failed_on == image && state.moved.get(t) == Some(failed_on));
        if !halting && state.rolling.len() < limit {
            tracing::debug!(tenant, image, rolling = ?state.rolling, "rollout slot taken");
            state.rolling.insert(tenant.to_owned());
            state.moved.insert(tenant.to_owned(), image.to_owned());
            state.failed.remove(tenant);
            return true;
        }
        false
    }

    /// Records that `tenant` is mid-rollout (seen after a restart, say).
    fn observed(&self, tenant: &str) {
        let mut state = self.lock();
        if state.rolling.insert(tenant.to_owned()) {
            tracing::debug!(tenant, rolling = ?state.rolling, "seen mid-rollout");
        }
    }

    /// Frees `tenant`'s slot and forgets its rollout (it ended, or the tenant was deleted).
    pub fn finished(&self, tenant: &str) {
        let mut state = self.lock();
        if state.rolling.remove(tenant) {
            tracing::debug!(tenant, "rollout slot freed");
        }
        state.moved.remove(tenant);
        state.failed.remove(tenant);
    }
}

/// The runtime image of a storefront Deployment.
pub fn image(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    fn live(image: &str, rolling: bool) -> Deployment {
        let ready = if rolling { 0 } else { 1 };
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "storefront", "generation": 1 },
            "spec": {
                "replicas": 1,
                "selector": {},
                "template": { "spec": { "containers": [{ "name": "runtime", "image": image }] } },
            },
            "status": {
                "observedGeneration": 1, "replicas": 1,
                "updatedReplicas": ready, "availableReplicas": ready,
            },
        }))
        .expect("deployment")
    }

    fn none() -> RolloutStatus {
        RolloutStatus::default()
    }

    fn queued(g: Gate) -> bool {
        g.queued
    }

    #[test]
    fn tenants_roll_a_few_at_a_time_and_queued_ones_keep_their_image() {
        let slots = Slots::default();
        let mut a = fixture::validated(&fixture::tenant("a"));
        let mut b = fixture::validated(&fixture::tenant("b"));
        let new_image = a.runtime_image.clone();
        let old = live("runtime@sha256:old", false);
        assert!(
            !queued(slots.gate(&mut a, Some(&old), 1, &none())),
            "a takes the one slot"
        );
        assert_eq!(a.runtime_image, new_image);
        assert!(
            queued(slots.gate(&mut b, Some(&old), 1, &none())),
            "b waits"
        );
        assert_eq!(b.runtime_image, "runtime@sha256:old", "and keeps its image");
        // a's Deployment finished rolling to the new image: its slot frees.
        let done = live(&new_image, false);
        assert!(!queued(slots.gate(&mut a, Some(&done), 1, &none())));
        let mut b = fixture::validated(&fixture::tenant("b"));
        assert!(
            !queued(slots.gate(&mut b, Some(&old), 1, &none())),
            "b's turn"
        );
    }

    #[test]
    fn a_new_tenant_or_one_mid_rollout_after_a_restart_is_counted() {
        let slots = Slots::default();
        let mut a = fixture::validated(&fixture::tenant("a"));
        assert!(
            !queued(slots.gate(&mut a, None, 1, &none())),
            "nothing live: no gate"
        );
        let image = a.runtime_image.clone();
        assert!(!queued(slots.gate(
            &mut a,
            Some(&live(&image, true)),
            1,
            &none()
        )));
        let mut b = fixture::validated(&fixture::tenant("b"));
        assert!(
            queued(slots.gate(&mut b, Some(&live("runtime@sha256:old", false)), 1, &none())),
            "a's rollout, seen mid-way, holds the slot"
        );
        assert!(
            !slots.moved_to("a", &image),
            "a is new, it moved from nothing"
        );
    }

    #[test]
    fn a_failed_rollout_to_a_good_image_frees_its_slot_for_the_next_tenant() {
        let slots = Slots::default();
        let mut a = fixture::validated(&fixture::tenant("a"));
        let image = a.runtime_image.clone();
        // Every tenant ran this image before: a failure on it does not halt the rollout.
        let good = RolloutStatus {
            last_good_image: Some(image.clone()),
            halted: None,
        };
        let old = live("runtime@sha256:old", false);
        assert!(!queued(slots.gate(&mut a, Some(&old), 1, &good)));
        assert!(slots.moved_to("a", &image));
        slots.failed("a", &image);
        // a's Deployment still rolls (its pods fail): it does not take the slot again.
        let mut a = fixture::validated(&fixture::tenant("a"));
        assert!(!queued(slots.gate(
            &mut a,
            Some(&live(&image, true)),
            1,
            &good
        )));
        let mut b = fixture::validated(&fixture::tenant("b"));
        assert!(!queued(slots.gate(&mut b, Some(&old), 1, &good)), "b rolls");
        assert!(slots.moved_to("a", &image), "a's failure is still known");
    }

    #[test]
    fn a_failure_on_a_new_image_gives_its_slot_to_nobody_before_the_halt_is_recorded() {
        let slots = Slots::default();
        let mut a = fixture::validated(&fixture::tenant("a"));
        let image = a.runtime_image.clone();
        let old = live("runtime@sha256:old", false);
        assert!(!queued(slots.gate(&mut a, Some(&old), 2, &none())));
        slots.failed("a", &image);
        // The halt is not in the rollout status yet (another thread is writing it).
        let mut b = fixture::validated(&fixture::tenant("b"));
        assert!(
            queued(slots.gate(&mut b, Some(&old), 2, &none())),
            "b keeps its image"
        );
        assert_eq!(b.runtime_image, "runtime@sha256:old");
        // A new tenant's failure halts nothing, and so holds back nobody.
        let slots = Slots::default();
        let mut n = fixture::validated(&fixture::tenant("n"));
        slots.gate(&mut n, Some(&live(&image, true)), 2, &none());
        slots.failed("n", &image);
        let mut b = fixture::validated(&fixture::tenant("b"));
        assert!(!queued(slots.gate(&mut b, Some(&old), 2, &none())));
    }

    #[test]
    fn a_halted_rollout_sends_its_tenants_back_and_moves_no_other() {
        let slots = Slots::default();
        let bad = fixture::validated(&fixture::tenant("a")).runtime_image;
        let halted = RolloutStatus {
            last_good_image: Some("runtime@sha256:good".to_owned()),
            halted: Some(tiqzy_crds::HaltedRollout {
                image: bad.clone(),
                reason: "ImagePullBackOff".to_owned(),
                ..Default::default()
            }),
        };
        let mut a = fixture::validated(&fixture::tenant("a"));
        let gate = slots.gate(&mut a, Some(&live(&bad, true)), 1, &halted);
        assert!(gate.rolled_back);
        assert_eq!(gate.halted.as_deref(), Some(bad.as_str()));
        assert_eq!(a.runtime_image, "runtime@sha256:good");
        let mut b = fixture::validated(&fixture::tenant("b"));
        let gate = slots.gate(
            &mut b,
            Some(&live("runtime@sha256:older", false)),
            1,
            &halted,
        );
        assert!(!gate.rolled_back);
        assert_eq!(
            b.runtime_image, "runtime@sha256:older",
            "b keeps what it runs"
        );
        let mut c = fixture::validated(&fixture::tenant("c"));
        slots.gate(&mut c, None, 1, &halted);
        assert_eq!(
            c.runtime_image, "runtime@sha256:good",
            "a new tenant gets the good image"
        );
    }
}
