//! The rollout gate: an operator upgrade or image change rolls tenants a few at a time. A
//! tenant whose Deployment runs another image waits on that image until a slot is free.

use std::collections::BTreeSet;
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::Deployment;

use super::status;
use crate::tenant::ValidatedTenant;

/// The tenants rolling to a new image now.
#[derive(Debug, Default)]
pub struct Slots {
    rolling: Mutex<BTreeSet<String>>,
}

impl Slots {
    /// Holds `v` on its live image while `limit` other tenants are rolling. Returns whether
    /// the tenant waits for a slot.
    pub fn gate(&self, v: &mut ValidatedTenant, live: Option<&Deployment>, limit: i32) -> bool {
        let Some(live) = live else { return false };
        let Some(live_image) = image(live) else {
            return false;
        };
        if live_image == v.runtime_image {
            if status::rolling(live) {
                self.observed(&v.name);
            } else {
                self.finished(&v.name);
            }
            return false;
        }
        if self.try_start(&v.name, usize::try_from(limit).unwrap_or(1)) {
            false
        } else {
            v.runtime_image = live_image;
            true
        }
    }

    /// Admits `tenant` to roll when fewer than `limit` tenants are rolling.
    fn try_start(&self, tenant: &str, limit: usize) -> bool {
        let mut rolling = self.rolling.lock().expect("rollout lock");
        if rolling.contains(tenant) {
            return true;
        }
        if rolling.len() < limit {
            rolling.insert(tenant.to_owned());
            return true;
        }
        false
    }

    /// Records that `tenant` is mid-rollout (seen after a restart, say).
    fn observed(&self, tenant: &str) {
        self.rolling
            .lock()
            .expect("rollout lock")
            .insert(tenant.to_owned());
    }

    /// Frees `tenant`'s slot (its rollout ended, or it was deleted).
    pub fn finished(&self, tenant: &str) {
        self.rolling.lock().expect("rollout lock").remove(tenant);
    }
}

fn image(deployment: &Deployment) -> Option<String> {
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

    #[test]
    fn tenants_roll_a_few_at_a_time_and_queued_ones_keep_their_image() {
        let slots = Slots::default();
        let mut a = fixture::validated(&fixture::tenant("a"));
        let mut b = fixture::validated(&fixture::tenant("b"));
        let new_image = a.runtime_image.clone();
        let old = live("runtime@sha256:old", false);
        assert!(!slots.gate(&mut a, Some(&old), 1), "a takes the one slot");
        assert_eq!(a.runtime_image, new_image);
        assert!(slots.gate(&mut b, Some(&old), 1), "b waits");
        assert_eq!(b.runtime_image, "runtime@sha256:old", "and keeps its image");
        // a's Deployment finished rolling to the new image: its slot frees.
        let done = live(&new_image, false);
        assert!(!slots.gate(&mut a, Some(&done), 1));
        let mut b = fixture::validated(&fixture::tenant("b"));
        assert!(!slots.gate(&mut b, Some(&old), 1), "b's turn");
    }

    #[test]
    fn a_new_tenant_or_one_mid_rollout_after_a_restart_is_counted() {
        let slots = Slots::default();
        let mut a = fixture::validated(&fixture::tenant("a"));
        assert!(!slots.gate(&mut a, None, 1), "nothing live: no gate");
        let image = a.runtime_image.clone();
        assert!(!slots.gate(&mut a, Some(&live(&image, true)), 1));
        let mut b = fixture::validated(&fixture::tenant("b"));
        assert!(
            slots.gate(&mut b, Some(&live("runtime@sha256:old", false)), 1),
            "a's rollout, seen mid-way, holds the slot"
        );
    }
}
