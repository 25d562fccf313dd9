//! Condition types and reasons, as constants: the operator sets them, users read them in
//! `kubectl describe`, alerts match on them.

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
}

/// Reasons, CamelCase, each naming a cause a platform engineer can act on.
pub mod reasons {
    pub const RECONCILED: &str = "Reconciled";
    pub const PROGRESSING: &str = "Progressing";
    pub const SUSPENDED: &str = "Suspended";
    pub const AVAILABLE: &str = "Available";
    pub const ROLLOUT_IN_PROGRESS: &str = "RolloutInProgress";
    pub const ROLLOUT_QUEUED: &str = "RolloutQueued";
    pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
    pub const PLATFORM_NOT_FOUND: &str = "PlatformNotFound";
    pub const PLATFORM_NOT_CONFIGURED: &str = "PlatformNotConfigured";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const HOST_CONFLICT: &str = "HostConflict";
    pub const ADMITTED: &str = "Admitted";
    pub const INGRESS_CREATED: &str = "IngressCreated";
    pub const ROUTE_CREATED: &str = "RouteCreated";
    pub const DATABASE_PROVISIONED: &str = "DatabaseProvisioned";
    pub const DATABASE_UNREACHABLE: &str = "DatabaseUnreachable";
    pub const CACHE_PROVISIONED: &str = "CacheProvisioned";
    pub const CACHE_UNREACHABLE: &str = "CacheUnreachable";
    pub const CACHE_DISABLED: &str = "CacheDisabled";
    pub const ADMIN_AUTH_FAILED: &str = "AdminAuthFailed";
    pub const CLEANUP_BLOCKED: &str = "CleanupBlocked";
    pub const ROUTER_DEFAULT_CERTIFICATE: &str = "RouterDefaultCertificate";
    pub const SECRET_PROVIDED: &str = "SecretProvided";
    pub const CERTIFICATE_SERVED: &str = "CertificateServed";
    pub const CERTIFICATE_NOT_FOUND: &str = "CertificateNotFound";
    pub const KEY_VAULT_FORBIDDEN: &str = "KeyVaultForbidden";
    pub const KEY_VAULT_UNREACHABLE: &str = "KeyVaultUnreachable";
    pub const HOST_NOT_COVERED: &str = "HostNotCovered";
    pub const CERTIFICATE_EXPIRED: &str = "CertificateExpired";
    pub const INVALID_CERTIFICATE: &str = "InvalidCertificate";
    pub const PAYMENTS_CONFIGURED: &str = "PaymentsConfigured";
    pub const CONNECTED_ACCOUNT_MISSING: &str = "ConnectedAccountMissing";
    pub const STRIPE_SECRET_UNAVAILABLE: &str = "StripeSecretUnavailable";
    pub const DEPENDENCIES_NOT_READY: &str = "DependenciesNotReady";
}

/// Annotation an administrator sets to let a Tenant go without cleaning up its database
/// and cache user (for instance when the database server is gone for good).
pub const RELEASE_FINALIZER_ANNOTATION: &str = "tiqzy.io/release-finalizer";
/// The finalizer guarding state outside Kubernetes.
pub const FINALIZER: &str = "tiqzy.io/external-state";
