//! Conditions and phase, computed from what was applied and observed. Pure.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use tiqzy_crds::conditions::{Reason, Retry, types};
use tiqzy_crds::{TenantPhase, TenantStatus};

use super::Applied;
use super::dereference::Found;
use super::failure::Failure;
use super::rollout::{Gate, image as runtime_image};

/// One condition as the reconcile sees it, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: Reason,
    pub message: String,
}

impl Observed {
    pub fn ok(type_: &'static str, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            type_,
            ok: true,
            reason,
            message: message.into(),
        }
    }
    pub fn failed(type_: &'static str, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            type_,
            ok: false,
            reason,
            message: message.into(),
        }
    }
}

/// Every condition of a reconcile that went through, `Ready` first, and the phase.
pub fn observe(
    found: &Found,
    applied: &Applied,
    gate: &Gate,
    failure: Option<&Failure>,
) -> (Vec<Observed>, TenantPhase) {
    let suspended = found.tenant.spec.storefront.suspended;
    let mut observed = vec![match failure {
        Some(failure) if !suspended => failed_rollout(&applied.deployment, failure),
        _ => storefront(Some(&applied.deployment), suspended, gate),
    }];
    observed.extend(applied.stores.iter().cloned());
    observed.push(found.payments.clone());
    observed.push(found.mail.clone());
    observed.push(found.certificate.observed.clone());
    observed.push(applied.routed.clone());
    let (ready, phase) = summarise(&observed, suspended);
    observed.insert(0, ready);
    (observed, phase)
}

/// The status fields besides the conditions and the phase.
pub fn base(found: &Found) -> TenantStatus {
    let v = &found.tenant;
    TenantStatus {
        url: Some(v.url.clone()),
        namespace: Some(v.namespace.clone()),
        // A tenant that lost a host conflict serves no host.
        hosts: if found.conflict.is_some() {
            Vec::new()
        } else {
            v.hosts.clone()
        },
        runtime_image: Some(v.runtime_image.clone()),
        certificate: found.certificate.status.clone(),
        ..TenantStatus::default()
    }
}

/// `StorefrontAvailable=False` for a failed rollout, with the pod's or the Deployment's
/// words, even while pods of the previous template still serve: the rollout needs a person.
pub fn failed_rollout(deployment: &Deployment, failure: &Failure) -> Observed {
    let available = deployment
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    let serving = if available >= 1 {
        format!("{available} pod(s) of the previous template still serve; ")
    } else {
        String::new()
    };
    Observed::failed(
        types::STOREFRONT_AVAILABLE,
        failure.reason,
        format!("{serving}{}", failure.message),
    )
}

/// `StorefrontAvailable` from the Deployment's status.
pub fn storefront(deployment: Option<&Deployment>, suspended: bool, gate: &Gate) -> Observed {
    let rollout_queued = gate.queued;
    if suspended {
        return Observed::failed(
            types::STOREFRONT_AVAILABLE,
            Reason::Suspended,
            "the storefront is suspended (scaled to zero)",
        );
    }
    let Some(d) = deployment else {
        return Observed::failed(
            types::STOREFRONT_AVAILABLE,
            Reason::Progressing,
            "the storefront Deployment is being created",
        );
    };
    let status = d.status.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let current = status.observed_generation.unwrap_or(0) >= generation && updated >= replicas;
    if let Some(halted) = gate.halted.as_ref().filter(|_| available >= 1) {
        Observed::ok(
            types::STOREFRONT_AVAILABLE,
            Reason::RolloutHalted,
            format!(
                "serving runtime image {}: the Platform's rollout of {halted} is halted (see \
                 its RolloutHalted condition)",
                runtime_image(d).unwrap_or_default()
            ),
        )
    } else if available >= 1 && current && !rollout_queued {
        Observed::ok(
            types::STOREFRONT_AVAILABLE,
            Reason::Available,
            format!("{available} of {replicas} storefront pods available"),
        )
    } else if available >= 1 && rollout_queued {
        Observed::ok(
            types::STOREFRONT_AVAILABLE,
            Reason::RolloutQueued,
            "serving; waiting for a rollout slot for the new runtime image",
        )
    } else if available >= 1 {
        Observed::ok(
            types::STOREFRONT_AVAILABLE,
            Reason::RolloutInProgress,
            format!("serving while rolling out: {updated} of {replicas} pods updated"),
        )
    } else {
        Observed::failed(
            types::STOREFRONT_AVAILABLE,
            Reason::Progressing,
            "waiting for a storefront pod to become ready",
        )
    }
}

/// Whether the Deployment is still rolling its pods to the current template.
pub fn rolling(deployment: &Deployment) -> bool {
    let status = deployment.status.clone().unwrap_or_default();
    let want = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    status.observed_generation.unwrap_or(0) < deployment.metadata.generation.unwrap_or(0)
        || status.updated_replicas.unwrap_or(0) < want
        || status.available_replicas.unwrap_or(0) < want
        || status.replicas.unwrap_or(0) > status.updated_replicas.unwrap_or(0)
}

/// `Ready` summarises the others; phase follows.
pub fn summarise(parts: &[Observed], suspended: bool) -> (Observed, TenantPhase) {
    if suspended {
        let ready = Observed::failed(
            types::READY,
            Reason::Suspended,
            "the storefront is suspended; data and configuration are kept",
        );
        return (ready, TenantPhase::Suspended);
    }
    let failing: Vec<&Observed> = parts.iter().filter(|p| !p.ok && blocks_ready(p)).collect();
    match failing.first() {
        None => (
            Observed::ok(
                types::READY,
                Reason::Reconciled,
                "the storefront is serving",
            ),
            TenantPhase::Ready,
        ),
        Some(first) => {
            let message = failing
                .iter()
                .map(|p| format!("{}: {}", p.type_, p.message))
                .collect::<Vec<_>>()
                .join("; ");
            let phase = if first.reason == Reason::Progressing {
                TenantPhase::Provisioning
            } else {
                TenantPhase::Degraded
            };
            let phase = if failing.iter().any(|p| p.reason == Reason::HostConflict) {
                TenantPhase::Failed
            } else {
                phase
            };
            (Observed::failed(types::READY, first.reason, message), phase)
        }
    }
}

/// Whether a False part makes the tenant not Ready. Payments that are merely not set up leave
/// the storefront serving; broken keys do not. A router that has not admitted the hosts yet
/// leaves everything the operator controls in place: `Routed` says so on its own, and a
/// cluster whose controller never writes Ingress status would otherwise keep every tenant
/// from Ready.
fn blocks_ready(part: &Observed) -> bool {
    match part.type_ {
        types::PAYMENTS_READY => part.reason == Reason::StripeSecretUnavailable,
        // Mail that cannot leave waits in the outbox; the storefront keeps selling.
        types::MAIL_READY => false,
        types::ROUTED => !matches!(part.reason, Reason::IngressCreated | Reason::RouteCreated),
        _ => true,
    }
}

/// The new status: conditions keep their transition time when their status did not change.
pub fn next_status(
    previous: Option<&TenantStatus>,
    generation: Option<i64>,
    observed: Vec<Observed>,
    mut base: TenantStatus,
    now: Time,
) -> TenantStatus {
    let old = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    base.observed_generation = generation;
    base.conditions = observed
        .into_iter()
        .map(|o| {
            let status = if o.ok { "True" } else { "False" }.to_owned();
            let since = old
                .iter()
                .find(|c| c.type_ == o.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: o.type_.to_owned(),
                status,
                reason: o.reason.as_str().to_owned(),
                message: o.message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect();
    base
}

/// A condition change worth an Event.
#[derive(Debug, PartialEq)]
pub struct News<'a> {
    pub condition: &'a Condition,
    pub warning: bool,
}

/// The condition changes a user is told of in Events: a part falling into a fault (Warning),
/// a part recovering from one, and `Ready` becoming True or leaving True. A part that is
/// merely created (absent, progressing, then True) or moves between good reasons shows only
/// in the status, so a new tenant costs one Event, not one per condition.
pub fn newsworthy<'a>(previous: Option<&TenantStatus>, next: &'a TenantStatus) -> Vec<News<'a>> {
    let old = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    next.conditions
        .iter()
        .filter_map(|c| {
            let before = old.iter().find(|o| o.type_ == c.type_);
            if before.is_some_and(|o| o.status == c.status && o.reason == c.reason) {
                return None;
            }
            let warning = is_fault(c);
            let recovered = before.is_some_and(is_fault);
            let ready_moved = c.type_ == types::READY
                && (c.status == "True" || before.is_some_and(|o| o.status == "True"));
            (warning || recovered || ready_moved).then_some(News {
                condition: c,
                warning,
            })
        })
        .collect()
}

/// A condition that is not True for a reason that needs someone's attention or a retry, not
/// for a part still being created.
fn is_fault(c: &Condition) -> bool {
    c.status != "True"
        && c.reason
            .parse::<Reason>()
            .is_ok_and(|reason| reason != Reason::Progressing && reason.retry() != Retry::Settled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn ready_only_when_every_part_is() {
        let parts = vec![
            Observed::ok(types::STOREFRONT_AVAILABLE, Reason::Available, "ok"),
            Observed::failed(
                types::DATABASE_READY,
                Reason::DatabaseUnreachable,
                "connection refused",
            ),
        ];
        let (ready, phase) = summarise(&parts, false);
        assert!(!ready.ok);
        assert_eq!(ready.reason, Reason::DatabaseUnreachable);
        assert!(ready.message.contains("DatabaseReady: connection refused"));
        assert_eq!(phase, TenantPhase::Degraded);
        let (ready, phase) = summarise(&parts[..1], false);
        assert!(ready.ok);
        assert_eq!(phase, TenantPhase::Ready);
    }

    #[test]
    fn payments_not_set_up_leave_the_tenant_ready_but_broken_keys_do_not() {
        let available = Observed::ok(types::STOREFRONT_AVAILABLE, Reason::Available, "ok");
        let off = Observed::failed(
            types::PAYMENTS_READY,
            Reason::ConnectedAccountMissing,
            "no account",
        );
        let (ready, phase) = summarise(&[available.clone(), off], false);
        assert!(ready.ok);
        assert_eq!(phase, TenantPhase::Ready);
        let broken = Observed::failed(
            types::PAYMENTS_READY,
            Reason::StripeSecretUnavailable,
            "Secret tiqzy-system/stripe does not exist",
        );
        let (ready, phase) = summarise(&[available, broken], false);
        assert!(!ready.ok);
        assert_eq!(ready.reason, Reason::StripeSecretUnavailable);
        assert_eq!(phase, TenantPhase::Degraded);
    }

    #[test]
    fn mail_that_cannot_leave_never_stops_the_storefront_from_selling() {
        let available = Observed::ok(types::STOREFRONT_AVAILABLE, Reason::Available, "ok");
        for reason in [Reason::MailNotConfigured, Reason::MailSecretUnavailable] {
            let mail = Observed::failed(types::MAIL_READY, reason, "no relay credentials");
            let (ready, phase) = summarise(&[available.clone(), mail], false);
            assert!(ready.ok, "{reason}");
            assert_eq!(phase, TenantPhase::Ready);
        }
    }

    #[test]
    fn waiting_for_the_router_leaves_the_tenant_ready_but_a_host_conflict_does_not() {
        let available = Observed::ok(types::STOREFRONT_AVAILABLE, Reason::Available, "ok");
        let waiting = Observed::failed(types::ROUTED, Reason::IngressCreated, "no address yet");
        let (ready, phase) = summarise(&[available.clone(), waiting], false);
        assert!(ready.ok);
        assert_eq!(phase, TenantPhase::Ready);
        let conflict = Observed::failed(types::ROUTED, Reason::HostConflict, "taken");
        let (ready, phase) = summarise(&[available, conflict], false);
        assert!(!ready.ok);
        assert_eq!(phase, TenantPhase::Failed);
    }

    fn deployment(image: &str, available: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "storefront", "generation": 2 },
            "spec": {
                "selector": {},
                "template": { "spec": { "containers": [{ "name": "runtime", "image": image }] } },
            },
            "status": { "observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
                        "availableReplicas": available },
        }))
        .expect("deployment")
    }

    #[test]
    fn a_failed_rollout_is_not_available_even_while_old_pods_serve() {
        let failure = Failure {
            reason: Reason::CrashLoopBackOff,
            message: "pod p: container runtime restarted 3 times".to_owned(),
            image: "bad".to_owned(),
        };
        let serving = failed_rollout(&deployment("bad", 1), &failure);
        assert!(!serving.ok);
        assert_eq!(serving.reason, Reason::CrashLoopBackOff);
        assert_eq!(
            serving.message,
            "1 pod(s) of the previous template still serve; pod p: container runtime restarted 3 times"
        );
        let (ready, phase) = summarise(&[serving], false);
        assert_eq!(
            (ready.ok, ready.reason, phase),
            (false, Reason::CrashLoopBackOff, TenantPhase::Degraded)
        );
    }

    #[test]
    fn a_tenant_held_by_a_halted_rollout_serves_and_says_so() {
        let gate = Gate {
            halted: Some("bad".to_owned()),
            ..Gate::default()
        };
        let held = storefront(Some(&deployment("good", 1)), false, &gate);
        assert!(held.ok);
        assert_eq!(held.reason, Reason::RolloutHalted);
        assert!(
            held.message.contains("serving runtime image good"),
            "{}",
            held.message
        );
        assert!(
            held.message.contains("rollout of bad is halted"),
            "{}",
            held.message
        );
        let back = storefront(Some(&deployment("good", 0)), false, &gate);
        assert_eq!(
            (back.ok, back.reason),
            (false, Reason::Progressing),
            "still rolling back"
        );
    }

    #[test]
    fn transition_time_is_kept_while_the_status_holds() {
        let first = next_status(
            None,
            Some(1),
            vec![Observed::ok(types::READY, Reason::Reconciled, "a")],
            TenantStatus::default(),
            now(),
        );
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).expect("time"));
        let second = next_status(
            Some(&first),
            Some(2),
            vec![Observed::ok(types::READY, Reason::Reconciled, "b")],
            TenantStatus::default(),
            later.clone(),
        );
        assert_eq!(second.conditions[0].last_transition_time, now());
        assert!(newsworthy(Some(&first), &second).is_empty());
        let third = next_status(
            Some(&second),
            Some(2),
            vec![Observed::failed(types::READY, Reason::Progressing, "c")],
            TenantStatus::default(),
            later.clone(),
        );
        assert_eq!(third.conditions[0].last_transition_time, later);
        assert_eq!(
            newsworthy(Some(&second), &third),
            vec![News {
                condition: &third.conditions[0],
                warning: false
            }],
            "Ready left True"
        );
    }

    #[test]
    fn a_new_tenant_is_one_event_and_faults_and_recoveries_are_told() {
        let status = |previous: Option<&TenantStatus>, database: Observed, ready: Observed| {
            next_status(
                previous,
                Some(1),
                vec![database, ready],
                TenantStatus::default(),
                now(),
            )
        };
        let told = |previous: &TenantStatus, next: &TenantStatus| {
            let mut news: Vec<_> = newsworthy(Some(previous), next)
                .into_iter()
                .map(|n| (n.condition.type_.clone(), n.warning))
                .collect();
            news.sort();
            news
        };
        let healthy = || {
            (
                Observed::ok(types::DATABASE_READY, Reason::DatabaseProvisioned, "db"),
                Observed::ok(types::READY, Reason::Reconciled, "ok"),
            )
        };
        let creating = status(
            None,
            Observed::failed(types::DATABASE_READY, Reason::Progressing, "creating"),
            Observed::failed(types::READY, Reason::Progressing, "waiting"),
        );
        assert!(
            newsworthy(None, &creating).is_empty(),
            "creating is no news"
        );
        let (db, ready) = healthy();
        let serving = status(Some(&creating), db, ready);
        assert_eq!(
            told(&creating, &serving),
            [(types::READY.to_owned(), false)]
        );
        let down = status(
            Some(&serving),
            Observed::failed(types::DATABASE_READY, Reason::DatabaseUnreachable, "down"),
            Observed::failed(types::READY, Reason::DatabaseUnreachable, "down"),
        );
        assert_eq!(
            told(&serving, &down),
            [
                (types::DATABASE_READY.to_owned(), true),
                (types::READY.to_owned(), true)
            ]
        );
        let (db, ready) = healthy();
        let back = status(Some(&down), db, ready);
        assert_eq!(
            told(&down, &back),
            [
                (types::DATABASE_READY.to_owned(), false),
                (types::READY.to_owned(), false)
            ],
            "a recovery is told"
        );
    }
}
