//! When a tenant is looked at again: failures in a row per tenant (for backoff), and the
//! requeue after a reconcile that went through. Decided from plain data.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::runtime::controller::Action;
use tiqzy_crds::conditions::Retry;

use super::status::Observed;
use crate::error::backoff;

/// Failed reconciles in a row, per tenant.
#[derive(Debug, Default)]
pub struct Failures {
    by_tenant: Mutex<HashMap<String, u32>>,
}

impl Failures {
    /// Counts a failure of `tenant` and returns how many came before it.
    pub fn failed(&self, tenant: &str) -> u32 {
        let mut failures = self.by_tenant.lock().expect("failures lock");
        let count = failures.entry(tenant.to_owned()).or_default();
        *count += 1;
        *count - 1
    }

    pub fn succeeded(&self, tenant: &str) {
        self.by_tenant.lock().expect("failures lock").remove(tenant);
    }
}

/// What a reconcile that went through found, as far as the next look depends on it.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// A part failed for a cause that may pass (a server down, a Secret missing).
    pub transient: bool,
    /// The tenant waits for a rollout slot.
    pub rollout_queued: bool,
    /// The storefront Deployment is rolling its pods.
    pub rolling: bool,
    /// When Key Vault should be asked again, if it is used.
    pub certificate_poll: Option<Duration>,
    /// When the tenant's next backup is due, or its running backup should be looked at.
    pub backup_in: Option<Duration>,
}

impl Outcome {
    /// Whether any of `parts` failed for a cause that backs off.
    pub fn transient(parts: &[&Observed]) -> bool {
        parts
            .iter()
            .any(|p| !p.ok && p.reason.retry() == Retry::Backoff)
    }
}

/// The next look at `tenant` after `outcome`.
pub fn requeue(outcome: Outcome, resync: Duration, failures: &Failures, tenant: &str) -> Action {
    let after = after(outcome, resync, failures, tenant);
    Action::requeue(outcome.backup_in.map_or(after, |b| b.min(after)))
}

fn after(outcome: Outcome, resync: Duration, failures: &Failures, tenant: &str) -> Duration {
    if outcome.transient {
        return backoff(failures.failed(tenant));
    }
    // A queued tenant learns of a free slot only by asking again. A rolling one hears of its
    // Deployment's progress through the watch; the requeue is only a safety net, kept long so
    // that hundreds of tenants rolling at once do not crowd out new ones.
    if outcome.rollout_queued {
        return Duration::from_secs(3);
    }
    if outcome.rolling {
        return Duration::from_secs(30);
    }
    let next = jittered(resync);
    outcome.certificate_poll.map_or(next, |p| p.min(next))
}

/// `resync` plus up to a tenth more, so tenants that converged together do not all come back
/// in the same instant and crowd out new ones.
fn jittered(resync: Duration) -> Duration {
    use rand::Rng;
    let tenth = resync.as_millis() as u64 / 10;
    resync + Duration::from_millis(rand::rng().random_range(0..=tenth))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiqzy_crds::conditions::{Reason, types};

    const RESYNC: Duration = Duration::from_secs(300);

    fn settled() -> Outcome {
        Outcome {
            transient: false,
            rollout_queued: false,
            rolling: false,
            certificate_poll: None,
            backup_in: None,
        }
    }

    #[test]
    fn transient_failures_back_off_exponentially_per_tenant() {
        let failures = Failures::default();
        let transient = Outcome {
            transient: true,
            ..settled()
        };
        assert_eq!(
            requeue(transient, RESYNC, &failures, "a"),
            Action::requeue(Duration::from_secs(1))
        );
        assert_eq!(
            requeue(transient, RESYNC, &failures, "a"),
            Action::requeue(Duration::from_secs(2))
        );
        assert_eq!(
            requeue(transient, RESYNC, &failures, "b"),
            Action::requeue(Duration::from_secs(1)),
            "another tenant has its own count"
        );
        failures.succeeded("a");
        assert_eq!(failures.failed("a"), 0);
    }

    #[test]
    fn a_settled_tenant_comes_back_at_resync_or_when_its_certificate_is_due() {
        let failures = Failures::default();
        let resync = requeue(settled(), RESYNC, &failures, "a");
        let jittered =
            (0..=30_000).any(|ms| resync == Action::requeue(RESYNC + Duration::from_millis(ms)));
        assert!(jittered, "{resync:?}: the resync plus at most a tenth");
        let poll = Outcome {
            certificate_poll: Some(Duration::from_secs(5)),
            ..settled()
        };
        assert_eq!(
            requeue(poll, RESYNC, &failures, "a"),
            Action::requeue(Duration::from_secs(5))
        );
        let queued = Outcome {
            rollout_queued: true,
            ..settled()
        };
        assert_eq!(
            requeue(queued, RESYNC, &failures, "a"),
            Action::requeue(Duration::from_secs(3))
        );
    }

    #[test]
    fn only_causes_that_may_pass_are_transient() {
        let down = Observed::failed(types::DATABASE_READY, Reason::DatabaseUnreachable, "");
        let unset = Observed::failed(types::DATABASE_READY, Reason::PlatformNotConfigured, "");
        let no_account =
            Observed::failed(types::PAYMENTS_READY, Reason::ConnectedAccountMissing, "");
        let broken_keys =
            Observed::failed(types::PAYMENTS_READY, Reason::StripeSecretUnavailable, "");
        assert!(Outcome::transient(&[&unset, &down]));
        assert!(!Outcome::transient(&[&unset, &no_account]));
        assert!(Outcome::transient(&[&broken_keys]));
    }
}
