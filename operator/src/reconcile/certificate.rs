//! `CertificateReady` and the certificate to serve. A Key Vault certificate is fetched when
//! the Tenant (or the vault settings) changed or the poll interval passed; a certificate that
//! cannot be served leaves the last good one in place, so the storefront keeps its TLS.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::{Event, EventType};
use tiqzy_crds::conditions::{Reason, types};
use tiqzy_crds::{CertificateStatus, KeyVaultAuthMethod, PlatformSpec};

use super::report::event;
use super::status::Observed;
use crate::build::{CERTIFICATE_ANNOTATION, TLS_SECRET, VERSION_ANNOTATION};
use crate::certificate::{ServingCertificate, Unusable, rfc3339};
use crate::context::Context;
use crate::error::{Error, backoff};
use crate::external::keyvault::{Credential, KeyVault, Transport, VaultConfig, VaultError};
use crate::tenant::{TlsSecret, ValidatedTenant};

/// What this step remembers between reconciles: the vault client (for its token) and the
/// last look at each tenant's certificate.
#[derive(Default)]
pub struct Polls {
    /// One Platform, one vault: the client is reused while its settings stay the same.
    vault: Mutex<Option<Arc<KeyVault>>>,
    by_tenant: Mutex<HashMap<String, PolledCertificate>>,
}

/// When a tenant's Key Vault certificate was last looked at, and what was found.
#[derive(Debug, Clone)]
pub struct PolledCertificate {
    /// What the look depended on (certificate name, hosts, vault settings).
    pub inputs: String,
    pub checked: Instant,
    /// Failed looks in a row (0 after a success).
    pub failures: u32,
    pub observed: Observed,
    /// The version found, when it could be served.
    pub version: Option<String>,
    /// Versions whose near expiry was announced.
    pub warned: BTreeSet<String>,
}

impl std::fmt::Debug for Polls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Polls").finish_non_exhaustive()
    }
}

impl Polls {
    /// The Key Vault client for `config`, reused while the config stays the same.
    fn key_vault(
        &self,
        config: VaultConfig,
        transport: &Transport,
    ) -> Result<Arc<KeyVault>, String> {
        let mut vault = self.vault.lock().expect("vault lock");
        if let Some(existing) = vault.as_ref().filter(|v| *v.config() == config) {
            return Ok(existing.clone());
        }
        let client = Arc::new(KeyVault::with_transport(config, transport)?);
        *vault = Some(client.clone());
        Ok(client)
    }

    fn last(&self, tenant: &str) -> Option<PolledCertificate> {
        self.by_tenant
            .lock()
            .expect("certificates lock")
            .get(tenant)
            .cloned()
    }

    fn remember(&self, tenant: &str, polled: PolledCertificate) {
        self.by_tenant
            .lock()
            .expect("certificates lock")
            .insert(tenant.to_owned(), polled);
    }

    /// Forgets a deleted tenant.
    pub fn forget(&self, tenant: &str) {
        self.by_tenant
            .lock()
            .expect("certificates lock")
            .remove(tenant);
    }
}

/// What the reconcile serves and reports for the tenant's TLS.
pub struct Certificate {
    pub observed: Observed,
    /// The Key Vault certificate to keep in `storefront-tls` (new, or the last good one).
    pub serve: Option<TlsSecret>,
    pub status: Option<CertificateStatus>,
    /// Events beyond condition transitions: rotations, near expiry.
    pub events: Vec<Event>,
    /// When Key Vault should be asked again.
    pub poll_in: Option<Duration>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("observed", &self.observed)
            .field("serve", &self.serve)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    fn without_key_vault(observed: Observed) -> Self {
        Self {
            observed,
            serve: None,
            status: None,
            events: Vec::new(),
            poll_in: None,
        }
    }
}

/// The certificate of `v`, as its `spec.tls` says.
pub async fn certificate(
    ctx: &Context,
    polls: &Polls,
    v: &ValidatedTenant,
    platform: &PlatformSpec,
) -> Result<Certificate, Error> {
    let Some(tls) = &v.spec.tls else {
        ctx.metrics.forget_certificate(&v.name);
        return Ok(Certificate::without_key_vault(Observed::ok(
            types::CERTIFICATE_READY,
            Reason::RouterDefaultCertificate,
            "served with the router's default certificate",
        )));
    };
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &v.namespace);
    if let Some(name) = &tls.secret_name {
        let observed = match secrets.get_opt(name).await? {
            Some(secret) => {
                match served(&secret) {
                    Some(cert) => ctx.metrics.certificate_expires(&v.name, cert.not_after),
                    None => ctx.metrics.forget_certificate(&v.name),
                }
                Observed::ok(
                    types::CERTIFICATE_READY,
                    Reason::SecretProvided,
                    format!("served from Secret {name}"),
                )
            }
            None => Observed::failed(
                types::CERTIFICATE_READY,
                Reason::CertificateNotFound,
                format!("Secret {name} does not exist in {}", v.namespace),
            ),
        };
        return Ok(Certificate::without_key_vault(observed));
    }
    let name = tls.key_vault_certificate.clone().unwrap_or_default();
    // The operator wrote it: the cache has it.
    let cached =
        <Secret as crate::cache::Cached>::cached(&ctx.caches, Some(&v.namespace), TLS_SECRET);
    let last_good = cached.and_then(|s| {
        let annotations = s.metadata.annotations.clone().unwrap_or_default();
        Some(TlsSecret {
            certificate: served(&s)?,
            source: annotations.get(CERTIFICATE_ANNOTATION)?.clone(),
            version: annotations.get(VERSION_ANNOTATION)?.clone(),
        })
    });
    let inputs = serde_json::json!([name, v.hosts, platform.key_vault]).to_string();
    let now = unix_now();
    let previous = polls.last(&v.name);
    let due = previous.as_ref().is_none_or(|p| {
        due(
            p,
            &inputs,
            ctx.settings.key_vault_poll,
            last_good.as_ref().map(|l| l.version.as_str()),
        )
    });
    let polled = match (due, previous) {
        (false, Some(previous)) => previous,
        (_, previous) => {
            let fetched = fetch(ctx, polls, platform, &name, &v.hosts, now).await;
            let failures = match (&fetched, &previous) {
                (Ok(_), _) => 0,
                (Err(_), Some(p)) if p.inputs == inputs => p.failures + 1,
                (Err(_), _) => 1,
            };
            let warned = previous.map(|p| p.warned).unwrap_or_default();
            let (observed, version, serve) = match fetched {
                Ok(fresh) => (
                    Observed::ok(
                        types::CERTIFICATE_READY,
                        Reason::CertificateServed,
                        format!(
                            "serving Key Vault certificate {name} version {}, valid until {}",
                            fresh.version,
                            rfc3339(fresh.certificate.not_after)
                        ),
                    ),
                    Some(fresh.version.clone()),
                    Some(fresh),
                ),
                Err((reason, message)) => {
                    let kept = match &last_good {
                        Some(l) => format!(
                            "; still serving version {} until it expires at {}",
                            l.version,
                            rfc3339(l.certificate.not_after)
                        ),
                        None => "; the router's default certificate is served meanwhile".into(),
                    };
                    (
                        Observed::failed(
                            types::CERTIFICATE_READY,
                            reason,
                            format!("{message}{kept}"),
                        ),
                        None,
                        None,
                    )
                }
            };
            let polled = PolledCertificate {
                inputs,
                checked: Instant::now(),
                failures,
                observed,
                version,
                warned,
            };
            return Ok(finish(ctx, polls, v, &name, polled, serve, last_good, now));
        }
    };
    // Not due: keep serving what is in the Secret.
    Ok(finish(ctx, polls, v, &name, polled, None, last_good, now))
}

/// Chooses what to serve, the status and Events, and remembers the look.
#[allow(clippy::too_many_arguments)]
fn finish(
    ctx: &Context,
    polls: &Polls,
    v: &ValidatedTenant,
    name: &str,
    mut polled: PolledCertificate,
    fresh: Option<TlsSecret>,
    last_good: Option<TlsSecret>,
    now: i64,
) -> Certificate {
    let mut events = Vec::new();
    if let (Some(fresh), Some(old)) = (&fresh, &last_good)
        && fresh.version != old.version
    {
        let note = format!(
            "Key Vault certificate {name}: version {} replaces {} in Secret {TLS_SECRET} (valid until {})",
            fresh.version,
            old.version,
            rfc3339(fresh.certificate.not_after)
        );
        events.push(event(
            EventType::Normal,
            "CertificateRotated",
            note,
            "Rotate",
        ));
    }
    let serve = fresh.or(last_good);
    match &serve {
        Some(s) => {
            ctx.metrics
                .certificate_expires(&v.name, s.certificate.not_after);
            // The newest version is the one served (or Key Vault could not be asked): warn
            // once per version.
            if s.certificate.expires_soon(now) && polled.warned.insert(s.version.clone()) {
                let note = format!(
                    "Key Vault certificate {name} version {} expires at {} and Key Vault has no newer version: renew it",
                    s.version,
                    rfc3339(s.certificate.not_after)
                );
                let reason = "CertificateExpiringSoon";
                events.push(event(EventType::Warning, reason, note, "Check"));
            }
        }
        None => ctx.metrics.forget_certificate(&v.name),
    }
    let poll_in = ttl(ctx, polled.failures).saturating_sub(polled.checked.elapsed());
    let observed = polled.observed.clone();
    polls.remember(&v.name, polled);
    Certificate {
        observed,
        status: serve.as_ref().map(|s| CertificateStatus {
            version: s.version.clone(),
            not_after: rfc3339(s.certificate.not_after),
        }),
        serve,
        events,
        poll_in: Some(poll_in.max(Duration::from_secs(1))),
    }
}

/// Whether Key Vault must be asked again after `previous`: the inputs changed, the look
/// expired, or the Secret no longer holds the version found (someone removed or replaced it).
fn due(
    previous: &PolledCertificate,
    inputs: &str,
    poll: Duration,
    in_secret: Option<&str>,
) -> bool {
    previous.inputs != inputs
        || previous.checked.elapsed() >= hold(poll, previous.failures)
        || (previous.version.is_some() && previous.version.as_deref() != in_secret)
}

/// How long a look holds: the poll interval, or a backoff while looks fail.
fn hold(poll: Duration, failures: u32) -> Duration {
    if failures == 0 {
        poll
    } else {
        backoff(failures - 1).min(poll)
    }
}

fn ttl(ctx: &Context, failures: u32) -> Duration {
    hold(ctx.settings.key_vault_poll, failures)
}

/// Reads the current version of `name` and checks it can be served for `hosts`.
async fn fetch(
    ctx: &Context,
    polls: &Polls,
    platform: &PlatformSpec,
    name: &str,
    hosts: &[String],
    now: i64,
) -> Result<TlsSecret, (Reason, String)> {
    let Some(kv) = &platform.key_vault else {
        return Err((
            Reason::PlatformNotConfigured,
            "Platform.spec.keyVault is not set, so Key Vault certificates cannot be read".into(),
        ));
    };
    let credential = match kv.auth.method {
        KeyVaultAuthMethod::WorkloadIdentity => Credential::WorkloadIdentity {
            token_file: kv
                .auth
                .federated_token_file
                .clone()
                .or_else(|| std::env::var("AZURE_FEDERATED_TOKEN_FILE").ok())
                .unwrap_or_else(|| "/var/run/secrets/azure/tokens/azure-identity-token".into())
                .into(),
        },
        KeyVaultAuthMethod::ClientSecret => {
            let Some(reference) = &kv.auth.client_secret_ref else {
                return Err((
                    Reason::KeyVaultForbidden,
                    "auth.clientSecretRef is not set".into(),
                ));
            };
            let secret = Api::<Secret>::namespaced(ctx.client.clone(), &reference.namespace)
                .get_opt(&reference.name)
                .await
                .map_err(|e| {
                    (
                        Reason::KeyVaultForbidden,
                        format!(
                            "reading Secret {}/{}: {e}",
                            reference.namespace, reference.name
                        ),
                    )
                })?
                .and_then(|s| {
                    s.data?
                        .get("clientSecret")
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                })
                .ok_or_else(|| {
                    (
                        Reason::KeyVaultForbidden,
                        format!(
                            "Secret {}/{} with key clientSecret does not exist",
                            reference.namespace, reference.name
                        ),
                    )
                })?;
            Credential::ClientSecret { secret }
        }
    };
    let config = VaultConfig {
        vault_url: kv.vault_url.trim_end_matches('/').to_owned(),
        authority_host: kv.authority_host.trim_end_matches('/').to_owned(),
        tenant_id: kv.auth.tenant_id.clone(),
        client_id: kv.auth.client_id.clone(),
        credential,
    };
    let vault = polls
        .key_vault(config, &ctx.settings.key_vault_transport)
        .map_err(|e| (Reason::KeyVaultUnreachable, e))?;
    let secret = vault.certificate(name).await.map_err(|e| match e {
        VaultError::NotFound(m) => (Reason::CertificateNotFound, m),
        VaultError::Forbidden(m) => (Reason::KeyVaultForbidden, m),
        VaultError::Unreachable(m) => (Reason::KeyVaultUnreachable, m),
    })?;
    let certificate = ServingCertificate::from_key_vault(&secret.content_type, &secret.value)
        .and_then(|c| c.check(hosts, now).map(|()| c))
        .map_err(|e| {
            let reason = match e {
                Unusable::Invalid(_) => Reason::InvalidCertificate,
                Unusable::HostNotCovered(..) => Reason::HostNotCovered,
                Unusable::Expired(_) => Reason::CertificateExpired,
            };
            (
                reason,
                format!(
                    "Key Vault certificate {name} version {}: {e}",
                    secret.version
                ),
            )
        })?;
    Ok(TlsSecret {
        certificate,
        source: name.to_owned(),
        version: secret.version,
    })
}

/// The certificate in a `kubernetes.io/tls` Secret, if it reads.
fn served(secret: &Secret) -> Option<ServingCertificate> {
    let data = secret.data.as_ref()?;
    ServingCertificate::from_pem(&data.get("tls.crt")?.0, &data.get("tls.key")?.0).ok()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polled(failures: u32, version: Option<&str>, age: Duration) -> PolledCertificate {
        PolledCertificate {
            inputs: "shop-cert".to_owned(),
            checked: Instant::now() - age,
            failures,
            observed: Observed::ok(types::CERTIFICATE_READY, Reason::CertificateServed, ""),
            version: version.map(str::to_owned),
            warned: Default::default(),
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_served_version_is_asked_again_after_the_poll_interval_or_a_change() {
        let fresh = polled(0, Some("v1"), Duration::from_secs(60));
        assert!(!due(&fresh, "shop-cert", HOUR, Some("v1")));
        assert!(
            due(&fresh, "other-cert", HOUR, Some("v1")),
            "Tenant changed"
        );
        assert!(due(&fresh, "shop-cert", HOUR, None), "Secret removed");
        assert!(
            due(&fresh, "shop-cert", HOUR, Some("v0")),
            "Secret replaced"
        );
        let old = polled(0, Some("v1"), HOUR + Duration::from_secs(1));
        assert!(due(&old, "shop-cert", HOUR, Some("v1")));
    }

    #[test]
    fn failures_are_retried_with_backoff_capped_by_the_poll_interval() {
        assert_eq!(hold(HOUR, 1), Duration::from_secs(1));
        assert_eq!(hold(HOUR, 4), Duration::from_secs(8));
        assert_eq!(hold(Duration::from_secs(5), 10), Duration::from_secs(5));
        let failing = polled(3, None, Duration::from_secs(5));
        assert!(
            due(&failing, "shop-cert", HOUR, Some("v1")),
            "4 s backoff passed"
        );
        let failing = polled(3, None, Duration::from_secs(1));
        assert!(!due(&failing, "shop-cert", HOUR, Some("v1")));
    }
}
