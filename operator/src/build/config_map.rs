//! The storefront's non-secret settings: branding and runtime configuration, read by the
//! runtime as environment variables.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{HTTP_PORT, METRICS_PORT, STOREFRONT, meta};
use crate::reconcile::ValidatedTenant;

/// Each pod's share of the tenant role's connection limit, so the most pods that can run at
/// once (autoscaler maximum plus a rollout's surge) never open more than PostgreSQL allows.
fn pool_per_pod(tenant: &ValidatedTenant) -> i32 {
    (tenant.spec.database.connection_limit / super::deployment::most_pods(tenant)).max(1)
}

pub fn config_map(tenant: &ValidatedTenant) -> ConfigMap {
    let spec = &tenant.spec;
    let mut data = BTreeMap::from([
        ("TIQZY_TENANT", tenant.name.clone()),
        ("TIQZY_DISPLAY_NAME", spec.display_name.clone()),
        ("TIQZY_CURRENCY", spec.currency.code().to_owned()),
        ("TIQZY_LOCALE", spec.locale.clone()),
        (
            "TIQZY_BRAND_PRIMARY_COLOR",
            spec.branding.primary_color.clone(),
        ),
        (
            "TIQZY_BRAND_ACCENT_COLOR",
            spec.branding.accent_color.clone(),
        ),
        ("TIQZY_RESALE_ENABLED", spec.resale.enabled.to_string()),
        (
            "TIQZY_RESALE_PRICE_CAP_PERCENT",
            spec.resale.price_cap_percent.to_string(),
        ),
        (
            "TIQZY_RESALE_SELLER_FEE_BPS",
            spec.resale.seller_fee_bps.to_string(),
        ),
        (
            "TIQZY_APPLICATION_FEE_BPS",
            tenant.application_fee_bps.to_string(),
        ),
        ("TIQZY_PUBLIC_URL", tenant.url.clone()),
        ("TIQZY_DB_MAX_CONNECTIONS", pool_per_pod(tenant).to_string()),
        ("TIQZY_LISTEN_ADDR", format!("0.0.0.0:{HTTP_PORT}")),
        ("TIQZY_METRICS_ADDR", format!("0.0.0.0:{METRICS_PORT}")),
    ]);
    if let Some(logo) = &spec.branding.logo_url {
        data.insert("TIQZY_BRAND_LOGO_URL", logo.clone());
    }
    if let Some(payments) = &spec.payments {
        data.insert(
            "TIQZY_STRIPE_ACCOUNT",
            payments.connected_account_id.clone(),
        );
    }
    if let Some(email) = &spec.branding.support_email {
        data.insert("TIQZY_SUPPORT_EMAIL", email.clone());
    }
    ConfigMap {
        metadata: meta(tenant, STOREFRONT),
        data: Some(data.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    #[test]
    fn branding_and_currency_reach_the_runtime() {
        let cm = config_map(&fixture::validated(&fixture::tenant("acme")));
        let data = cm.data.expect("data");
        assert_eq!(data["TIQZY_TENANT"], "acme");
        assert_eq!(data["TIQZY_CURRENCY"], "EUR");
        assert_eq!(data["TIQZY_BRAND_PRIMARY_COLOR"], "#112233");
        assert_eq!(data["TIQZY_SUPPORT_EMAIL"], "help@acme.example");
        assert_eq!(data["TIQZY_PUBLIC_URL"], "https://acme.apps.example.com");
        assert!(!data.contains_key("TIQZY_BRAND_LOGO_URL"));
        assert!(!data.contains_key("TIQZY_STRIPE_ACCOUNT"));
        assert_eq!(data["TIQZY_APPLICATION_FEE_BPS"], "0");
    }

    #[test]
    fn the_role_connection_limit_is_shared_by_every_pod_that_can_run_at_once() {
        for (limit, max_replicas, per_pod) in [
            (20, 3, 5),   // 3 pods + 1 surging in a rollout
            (20, 1, 10),  // 1 + 1
            (100, 8, 10), // 8 + 2
            (500, 50, 7), // 50 + 13
            (5, 10, 1),   // never below one: the limit is then the tenant's to raise
        ] {
            let mut tenant = fixture::tenant("acme");
            tenant.spec.database.connection_limit = limit;
            tenant.spec.storefront.replicas.max = max_replicas;
            tenant.spec.storefront.replicas.min = 1;
            let data = config_map(&fixture::validated(&tenant)).data.expect("data");
            assert_eq!(
                data["TIQZY_DB_MAX_CONNECTIONS"],
                per_pod.to_string(),
                "limit {limit}, max replicas {max_replicas}"
            );
        }
    }

    #[test]
    fn the_connected_account_and_fee_reach_the_runtime() {
        let mut tenant = fixture::tenant("acme");
        tenant.spec.payments = Some(tiqzy_crds::Payments {
            connected_account_id: "acct_1Acme".to_owned(),
            application_fee_bps: None,
        });
        let mut platform = fixture::platform();
        platform.spec.stripe = Some(
            serde_json::from_value(serde_json::json!({
                "secretKeyRef": { "namespace": "tiqzy-system", "name": "stripe" },
                "webhookSecretRef": { "namespace": "tiqzy-system", "name": "stripe" },
                "defaultApplicationFeeBps": 250,
            }))
            .expect("stripe"),
        );
        let data = config_map(&crate::reconcile::validate(&tenant, &platform).expect("valid"))
            .data
            .expect("data");
        assert_eq!(data["TIQZY_STRIPE_ACCOUNT"], "acct_1Acme");
        assert_eq!(
            data["TIQZY_APPLICATION_FEE_BPS"], "250",
            "the Platform's default"
        );
        tenant
            .spec
            .payments
            .as_mut()
            .expect("payments")
            .application_fee_bps = Some(90);
        let data = config_map(&crate::reconcile::validate(&tenant, &platform).expect("valid"))
            .data
            .expect("data");
        assert_eq!(
            data["TIQZY_APPLICATION_FEE_BPS"], "90",
            "the tenant's own fee"
        );
    }
}
