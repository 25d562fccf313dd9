//! Condition types and reasons: the operator sets them, users read them in `kubectl describe`,
//! alerts match on them. A reason is a typed value here and its CamelCase name on the wire.

use std::fmt;

/// Condition types on a Tenant.
pub mod types {
    /// Everything the tenant needs is in place and serving.
    pub const READY: &str = "Ready";
    pub const DATABASE_READY: &str = "DatabaseReady";
    pub const CACHE_READY: &str = "CacheReady";
    pub const CERTIFICATE_READY: &str = "CertificateReady";
    pub const STOREFRONT_AVAILABLE: &str = "StorefrontAvailable";
    pub const ROUTED: &str = "Routed";
    /// The storefront has what it needs to take payments. Only a broken Stripe Secret makes
    /// the tenant not Ready: a storefront without payments still shows its events.
    pub const PAYMENTS_READY: &str = "PaymentsReady";
    /// The storefront's mail leaves through the Platform's SMTP relay. Never keeps a tenant
    /// from Ready: without a relay, mail waits in the storefront's outbox.
    pub const MAIL_READY: &str = "MailReady";
    /// On the Platform: the payments service `tiqzy-payments` is available.
    pub const PAYMENTS_SERVICE_READY: &str = "PaymentsServiceReady";
    /// On the Platform: a `runtimeImage` rollout stopped because the image failed on the
    /// first tenants, which run `status.rollout.lastGoodImage` again.
    pub const ROLLOUT_HALTED: &str = "RolloutHalted";
    /// The tenant's last scheduled or requested backup reached Blob storage whole. Never
    /// keeps a tenant from Ready: the storefront serves either way.
    pub const BACKUP_READY: &str = "BackupReady";
}

/// What a reason asks of the operator when its condition is False.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing is wrong, or progress is reported by a watch: look again at the usual time.
    Settled,
    /// The cause may pass on its own (a server down, a Secret not written yet): retry with
    /// per-tenant exponential backoff.
    Backoff,
    /// Retrying as things are cannot help: wait for a change to the Tenant, the Platform or
    /// a Secret.
    OnChange,
}

macro_rules! reasons {
    ($( $(#[$doc:meta])* $name:ident => $retry:ident, )*) => {
        /// Why a condition is what it is; written to the API as its CamelCase name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $( $(#[$doc])* $name, )*
        }

        impl Reason {
            /// Every reason the operator can set, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name),*];

            /// The name written to a condition's `reason`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }

            /// What a False condition with this reason asks of the operator.
            pub const fn retry(self) -> Retry {
                match self {
                    $(Reason::$name => Retry::$retry,)*
                }
            }
        }
    };
}

reasons! {
    /// Ready: every part is in place and the storefront serves.
    Reconciled => Settled,
    /// A part is being created or is waiting for another part (a pod, a Secret).
    Progressing => Backoff,
    /// A storefront pod cannot pull its image (`ErrImagePull`, `ImagePullBackOff`). The
    /// tenant frees its rollout slot; a new runtime image halts its rollout.
    ImagePullBackOff => OnChange,
    /// A storefront container keeps exiting (`CrashLoopBackOff`). The tenant frees its
    /// rollout slot; a new runtime image halts its rollout.
    CrashLoopBackOff => OnChange,
    /// The storefront Deployment made no progress within the Platform's
    /// `rollout.progressDeadlineSeconds` (pods that never become ready, say). The tenant frees
    /// its rollout slot; a new runtime image halts its rollout.
    ProgressDeadlineExceeded => OnChange,
    /// `storefront.suspended` is true: scaled to zero, data kept.
    Suspended => Settled,
    /// At least one storefront pod is available on the current template.
    Available => Settled,
    /// Serving while pods roll to a new template.
    RolloutInProgress => Settled,
    /// Serving on the old image while other tenants use the rollout slots.
    RolloutQueued => Settled,
    /// Tenant: serving the Platform's last good runtime image because the rollout of the new
    /// one halted. Platform (`RolloutHalted=True`): the new image failed on the first tenants.
    RolloutHalted => Settled,
    /// Platform (`RolloutHalted=False`): no tenant failed on the current runtime image.
    RolloutHealthy => Settled,
    /// No Platform named `default` exists.
    PlatformNotFound => OnChange,
    /// The Platform lacks the section this part needs.
    PlatformNotConfigured => OnChange,
    /// The spec cannot work on this cluster.
    InvalidSpec => OnChange,
    /// The API server refused an object built from the spec (a value its validation rejects).
    ObjectRefused => OnChange,
    /// An older Tenant already claims one of the hosts.
    HostConflict => OnChange,
    /// The router or ingress controller serves the tenant's hosts.
    Admitted => Settled,
    /// The Ingress exists; waiting for an ingress controller to report an address (the
    /// watch on the Ingress brings that news). The tenant stays Ready meanwhile.
    IngressCreated => Settled,
    /// The Routes exist; waiting for the router to admit them (the watch on the Routes
    /// brings that news). The tenant stays Ready meanwhile.
    RouteCreated => Settled,
    /// The tenant's database and role exist as specified.
    DatabaseProvisioned => Settled,
    /// The PostgreSQL server cannot be reached.
    DatabaseUnreachable => Backoff,
    /// The PostgreSQL server answered with an error the operator did not expect.
    DatabaseFailed => Backoff,
    /// The tenant's Redis ACL user exists as specified.
    CacheProvisioned => Settled,
    /// The Redis server cannot be reached.
    CacheUnreachable => Backoff,
    /// The Redis server answered with an error the operator did not expect.
    CacheFailed => Backoff,
    /// The Redis server's TLS certificate is not trusted for the platform's `rediss://` host
    /// (signed by a CA neither public nor in `caSecretRef`, issued for another host, expired).
    /// The operator never falls back to plain text.
    CacheCertificateUntrusted => Backoff,
    /// `cache.mode` is `Disabled`: no cache user.
    CacheDisabled => Settled,
    /// A server refuses the admin credentials, or they cannot be read, or the server's
    /// address cannot be used, or the CA the Platform names for Redis cannot be read.
    AdminAuthFailed => Backoff,
    /// The tenant's name cannot name a database, role or cache user.
    InvalidTenantName => OnChange,
    /// Deleting the tenant could not remove its database or cache user.
    CleanupBlocked => Backoff,
    /// No `spec.tls`: the router's default certificate is served.
    RouterDefaultCertificate => Settled,
    /// `tls.secretName` names an existing Secret, which is served.
    SecretProvided => Settled,
    /// The Key Vault certificate is served.
    CertificateServed => Settled,
    /// The certificate (Secret or Key Vault) does not exist. Certificate failures are looked
    /// at again with the certificate's own backoff, capped at the Key Vault poll interval.
    CertificateNotFound => Backoff,
    /// Key Vault or Entra ID refused the operator.
    KeyVaultForbidden => Backoff,
    /// Key Vault or the authority cannot be reached.
    KeyVaultUnreachable => Backoff,
    /// A tenant host is not among the certificate's DNS names.
    HostNotCovered => Backoff,
    /// The certificate's current version is past `notAfter`.
    CertificateExpired => Backoff,
    /// The certificate cannot be read, its key does not match, or it is not valid yet.
    InvalidCertificate => Backoff,
    /// Stripe keys and the connected account are in place.
    PaymentsConfigured => Settled,
    /// No connected account: resales work, primary sales are off.
    ConnectedAccountMissing => Settled,
    /// A Stripe Secret the Platform refers to, or one of its keys, is missing.
    StripeSecretUnavailable => Backoff,
    /// The Secret `Platform.spec.caSecretRef` names, or its key `ca.crt`, is missing or holds
    /// no PEM certificate.
    TrustedCaUnavailable => Backoff,
    /// Mail leaves through the Platform's SMTP relay.
    MailConfigured => Settled,
    /// The Platform names no SMTP relay: storefronts queue mail and log it, unsent.
    MailNotConfigured => Settled,
    /// The relay's credentials Secret, or its key `username` or `password`, is missing:
    /// mail waits in the outbox until it is there.
    MailSecretUnavailable => Backoff,
    /// Tenant: the payments service is not available (yet), so checkout waits for it.
    PaymentsServiceNotReady => OnChange,
    /// Platform: the payments service has its minimum of available replicas.
    PaymentsServiceAvailable => Settled,
    /// Platform: the payments service's pods are starting or rolling.
    PaymentsServiceProgressing => Backoff,
    /// The last backup was written whole (its blob committed with its checksum).
    BackupSucceeded => Settled,
    /// A backup could not be read from the database or written to Blob storage; retried with
    /// backoff. Nothing partial becomes visible as a backup.
    BackupFailed => Backoff,
    /// Blob storage cannot be reached or refused the operator's credentials; retried with
    /// backoff.
    BackupStorageUnreachable => Backoff,
    /// `spec.backup` or `spec.restoreFrom` is set but the Platform has no `spec.backup`, or its
    /// credentials Secret cannot be read.
    BackupNotConfigured => OnChange,
    /// `spec.backup.schedule` is not a cron schedule the operator understands.
    InvalidBackupSchedule => OnChange,
    /// `spec.restoreFrom` is set but the tenant's database already holds tables: nothing is
    /// restored and the storefront is not started until the field is removed.
    RestoreRefused => OnChange,
    /// The backup `spec.restoreFrom` names does not exist (or has no checksum, so it is not a
    /// complete backup).
    BackupNotFound => Backoff,
    /// The backup's content does not match its checksum, or it is cut short: nothing is
    /// restored.
    BackupCorrupt => OnChange,
    /// Restoring failed for a cause that may pass (storage or database unreachable); nothing
    /// is restored, retried with backoff.
    RestoreFailed => Backoff,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Reason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("no reason named {s:?}"))
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Annotation an administrator sets to let a Tenant go without cleaning up its database
/// and cache user (for instance when the database server is gone for good).
pub const RELEASE_FINALIZER_ANNOTATION: &str = "tiqzy.io/release-finalizer";
/// Annotation asking for a backup of the tenant now: each new value starts one.
pub const BACKUP_NOW_ANNOTATION: &str = "tiqzy.io/backup-now";
/// The finalizer guarding state outside Kubernetes.
pub const FINALIZER: &str = "tiqzy.io/external-state";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_camel_case_and_read_back() {
        for reason in Reason::ALL {
            let name = reason.as_str();
            assert!(name.starts_with(|c: char| c.is_ascii_uppercase()), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
            assert_eq!(name.parse::<Reason>(), Ok(*reason));
        }
        assert!("Nonsense".parse::<Reason>().is_err());
    }

    /// The README's conditions table is the user's reference: it lists every reason the
    /// operator can set, and nothing else.
    #[test]
    fn the_readme_conditions_table_lists_every_reason() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("### Conditions and what to do")
            .nth(1)
            .expect("README has a conditions section");
        let table: Vec<&str> = section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .collect();
        let mut listed = std::collections::BTreeSet::new();
        for row in &table {
            let reason_cell = row.split('|').nth(2).expect("a reason column");
            for name in reason_cell.split('`').skip(1).step_by(2) {
                let reason = name
                    .parse::<Reason>()
                    .unwrap_or_else(|e| panic!("README row {row:?}: {e}"));
                listed.insert(reason);
            }
        }
        let missing: Vec<&str> = Reason::ALL
            .iter()
            .filter(|r| !listed.contains(r))
            .map(|r| r.as_str())
            .collect();
        assert!(
            missing.is_empty(),
            "reasons missing from the README's table: {missing:?}"
        );
    }
}
