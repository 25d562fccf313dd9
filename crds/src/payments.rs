//! What the payments service, the storefronts and the operator agree on (see
//! `docs/payments-protocol.md`): the token audience, the storefront's ServiceAccount, and the
//! per-tenant secret that signs the events the service delivers to a storefront.

use hmac::{KeyInit, Mac};

/// Audience of the projected ServiceAccount token a storefront presents to the service.
pub const AUDIENCE: &str = "tiqzy-payments";
/// The ServiceAccount storefront pods run as, in namespace `tiqzy-<tenant>`.
pub const STOREFRONT_SERVICE_ACCOUNT: &str = "storefront";
/// Where the operator mounts that token in storefront pods.
pub const TOKEN_PATH: &str = "/var/run/secrets/tiqzy-payments/token";
/// The storefront's variable holding the secrets deliveries are signed with, newest first.
pub const WEBHOOK_SECRETS_VAR: &str = "TIQZY_PAYMENTS_WEBHOOK_SECRETS";

/// The secret the service signs a tenant's deliveries with, derived from the platform's
/// delivery key so neither side stores one per tenant: `whsec_` and the hex of
/// HMAC-SHA256(key, "tiqzy-payments-delivery:" + tenant). Knowing one tenant's secret tells
/// nothing about another's.
pub fn delivery_secret(key: &[u8], tenant: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(b"tiqzy-payments-delivery:");
    mac.update(tenant.as_bytes());
    format!("whsec_{}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_gets_its_own_stable_secret() {
        let key = b"platform delivery key";
        let acme = delivery_secret(key, "acme");
        assert_eq!(acme, delivery_secret(key, "acme"), "stable");
        assert_ne!(acme, delivery_secret(key, "acme2"));
        assert_ne!(acme, delivery_secret(b"another key", "acme"));
        assert!(acme.starts_with("whsec_") && acme.len() == 6 + 64, "{acme}");
    }
}
