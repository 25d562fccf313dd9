//! Leader election through a `coordination.k8s.io` Lease: one replica reconciles, the others
//! wait; a leader that cannot renew in time exits so it never acts on a stale claim.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

/// Waits until this process holds the lease, then keeps renewing it in the background.
/// Returns once leadership is acquired; the renew task exits the process if it is lost.
pub async fn acquire(client: kube::Client, settings: LeaseSettings) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let retry = settings.duration / 3;
    loop {
        match try_claim(&api, &settings).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
        }
        tokio::time::sleep(retry).await;
    }
    tracing::info!(identity = %settings.identity, lease = %settings.name, "became leader");
    tokio::spawn(async move {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(retry).await;
            match try_claim(&api, &settings).await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("leadership lost to another replica; exiting");
                    std::process::exit(1);
                }
                Err(e) => tracing::warn!(error = %e, "renewing the lease failed"),
            }
            if last_renewed.elapsed() > settings.duration {
                tracing::error!("could not renew the lease in time; exiting");
                std::process::exit(1);
            }
        }
    });
    Ok(())
}

/// Claims or renews the lease; `Ok(false)` when another holder's claim is still valid.
async fn try_claim(api: &Api<Lease>, s: &LeaseSettings) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let seconds = i32::try_from(s.duration.as_secs()).unwrap_or(15);
    match api.get_opt(&s.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(s.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            let mine = spec.holder_identity.as_deref() == Some(s.identity.as_str());
            let expired = spec.renew_time.as_ref().is_none_or(|t| {
                let valid = i64::from(spec.lease_duration_seconds.unwrap_or(seconds));
                t.0.as_second() + valid < now.0.as_second()
            });
            if !mine && !expired {
                return Ok(false);
            }
            if !mine {
                spec.acquire_time = Some(now.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.holder_identity = Some(s.identity.clone());
            spec.lease_duration_seconds = Some(seconds);
            spec.renew_time = Some(now);
            // The resourceVersion makes this a compare-and-swap: two claimants cannot both win.
            match api.replace(&s.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}
