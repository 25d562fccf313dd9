//! What the storefront needs to take payments: never the platform's Stripe key (only the
//! payments service holds it), but the secret the service signs the tenant's events with,
//! derived from the service's delivery key, and where the service is.

use std::collections::BTreeMap;

use tiqzy_crds::conditions::{Reason, types};
use tiqzy_crds::payments::{WEBHOOK_SECRETS_VAR, delivery_secret};
use tiqzy_crds::{PlatformSpec, TenantSpec};

use super::Observed;
use crate::build::payments_service::{DELIVERY_KEY, PAYMENTS_SERVICE};
use crate::context::Context;
use crate::tenant::PlatformView;

/// What the storefront gets of the payments service.
#[derive(Default)]
pub struct PaymentsAccess {
    /// `storefront-payments` contents.
    pub secret: Option<BTreeMap<String, String>>,
    /// The operator's namespace, where the service runs.
    pub namespace: Option<String>,
}

/// The storefront's payments Secret and `PaymentsReady`, from the Platform and the delivery
/// key in the service's Secret (as the watch cache holds it).
pub fn payments(
    ctx: &Context,
    platform: &PlatformView,
    tenant: &str,
    spec: &TenantSpec,
) -> (PaymentsAccess, Observed) {
    let namespace = &ctx.settings.namespace;
    let key = ctx
        .caches
        .secret_data(namespace, PAYMENTS_SERVICE)
        .and_then(|data| data.get(DELIVERY_KEY).cloned());
    access(
        &platform.spec,
        platform.payments_service_ready,
        namespace,
        key.as_deref(),
        tenant,
        spec,
    )
}

/// The decision, without I/O.
pub fn access(
    platform: &PlatformSpec,
    service_ready: bool,
    namespace: &str,
    delivery_key: Option<&str>,
    tenant: &str,
    spec: &TenantSpec,
) -> (PaymentsAccess, Observed) {
    if platform.stripe.is_none() {
        let observed = Observed::failed(
            types::PAYMENTS_READY,
            Reason::PlatformNotConfigured,
            "Platform.spec.stripe is not set: the storefront cannot take payments",
        );
        return (PaymentsAccess::default(), observed);
    }
    // Once the key exists the storefront is configured, so it works the moment the service
    // does; until the service is available the condition says so.
    let access = match delivery_key {
        Some(key) => PaymentsAccess {
            secret: Some(BTreeMap::from([(
                WEBHOOK_SECRETS_VAR.to_owned(),
                delivery_secret(key.as_bytes(), tenant),
            )])),
            namespace: Some(namespace.to_owned()),
        },
        None => PaymentsAccess::default(),
    };
    if access.secret.is_none() || !service_ready {
        let observed = Observed::failed(
            types::PAYMENTS_READY,
            Reason::PaymentsServiceNotReady,
            format!(
                "the payments service {PAYMENTS_SERVICE} in {namespace} is not available yet (see the Platform's PaymentsServiceReady condition): checkout waits for it"
            ),
        );
        return (access, observed);
    }
    let observed = match &spec.payments {
        Some(_) => Observed::ok(
            types::PAYMENTS_READY,
            Reason::PaymentsConfigured,
            "primary sales and resales are paid through the payments service",
        ),
        None => Observed::failed(
            types::PAYMENTS_READY,
            Reason::ConnectedAccountMissing,
            "spec.payments.connectedAccountId is not set: resales work, primary sales are off",
        ),
    };
    (access, observed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    fn with_stripe() -> PlatformSpec {
        let mut platform = fixture::platform().spec;
        platform.stripe = Some(
            serde_json::from_value(serde_json::json!({
                "secretKeyRef": { "namespace": "tiqzy-system", "name": "stripe" },
                "webhookSecretRef": { "namespace": "tiqzy-system", "name": "stripe" },
            }))
            .expect("stripe"),
        );
        platform
    }

    #[test]
    fn the_storefront_gets_its_delivery_secret_and_never_a_stripe_key() {
        let key = "ab".repeat(32);
        let spec = fixture::tenant("acme").spec;
        let (access, observed) = access(
            &with_stripe(),
            true,
            "tiqzy-system",
            Some(&key),
            "acme",
            &spec,
        );
        let secret = access.secret.expect("secret");
        assert_eq!(
            secret,
            BTreeMap::from([(
                "TIQZY_PAYMENTS_WEBHOOK_SECRETS".to_owned(),
                delivery_secret(key.as_bytes(), "acme")
            )])
        );
        assert_eq!(access.namespace.as_deref(), Some("tiqzy-system"));
        assert_eq!(observed.reason, Reason::ConnectedAccountMissing);
    }

    #[test]
    fn a_service_not_ready_is_said_but_the_storefront_is_configured_once_the_key_exists() {
        let spec = fixture::tenant("acme").spec;
        let (none, observed) = access(&with_stripe(), false, "tiqzy-system", None, "acme", &spec);
        assert!(none.secret.is_none() && none.namespace.is_none());
        assert_eq!(observed.reason, Reason::PaymentsServiceNotReady);
        let key = "cd".repeat(32);
        let (some, observed) = access(
            &with_stripe(),
            false,
            "tiqzy-system",
            Some(&key),
            "acme",
            &spec,
        );
        assert!(some.secret.is_some());
        assert_eq!(observed.reason, Reason::PaymentsServiceNotReady);
        let (_, observed) = access(
            &fixture::platform().spec,
            true,
            "tiqzy-system",
            Some(&key),
            "acme",
            &spec,
        );
        assert_eq!(observed.reason, Reason::PlatformNotConfigured);
    }
}
