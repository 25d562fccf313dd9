//! What the storefront needs to take payments through Stripe: the platform's keys, copied
//! into the tenant's namespace, and the tenant's connected account and fee, in its ConfigMap.

use std::collections::BTreeMap;

use tiqzy_crds::conditions::{Reason, types};
use tiqzy_crds::{PlatformSpec, TenantSpec};

use super::Observed;
use super::servers::secret_fields;
use crate::context::Context;

/// The storefront's Stripe Secret (when the Platform has Stripe keys) and `PaymentsReady`.
pub async fn payments(
    ctx: &Context,
    platform: &PlatformSpec,
    tenant: &TenantSpec,
) -> (Option<BTreeMap<String, String>>, Observed) {
    let Some(stripe) = &platform.stripe else {
        let observed = Observed::failed(
            types::PAYMENTS_READY,
            Reason::PlatformNotConfigured,
            "Platform.spec.stripe is not set: the storefront cannot take payments",
        );
        return (None, observed);
    };
    let keys = async {
        let [secret_key] = secret_fields(ctx, &stripe.secret_key_ref, ["secretKey"]).await?;
        let [webhook] = secret_fields(ctx, &stripe.webhook_secret_ref, ["webhookSecret"]).await?;
        Ok::<_, String>((secret_key, webhook))
    };
    let (secret_key, webhook) = match keys.await {
        Ok(keys) => keys,
        Err(cause) => {
            let observed = Observed::failed(
                types::PAYMENTS_READY,
                Reason::StripeSecretUnavailable,
                cause,
            );
            return (None, observed);
        }
    };
    let secret = BTreeMap::from([
        ("STRIPE_SECRET_KEY".to_owned(), secret_key),
        ("STRIPE_WEBHOOK_SECRETS".to_owned(), webhook),
    ]);
    let observed = match &tenant.payments {
        Some(_) => Observed::ok(
            types::PAYMENTS_READY,
            Reason::PaymentsConfigured,
            "primary sales and resales are paid through Stripe",
        ),
        None => Observed::failed(
            types::PAYMENTS_READY,
            Reason::ConnectedAccountMissing,
            "spec.payments.connectedAccountId is not set: resales work, primary sales are off",
        ),
    };
    (Some(secret), observed)
}
