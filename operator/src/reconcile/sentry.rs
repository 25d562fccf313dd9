//! The storefront's `SENTRY_DSN`, read from the Secret `Platform.spec.observability.sentry`
//! names. A missing Secret never stops the storefront: it runs and reports nothing.

use std::collections::BTreeMap;

use tiqzy_crds::PlatformSpec;

use super::servers::secret_fields;
use crate::context::Context;

/// The runtime's variable holding the DSN; only ever in the `storefront-sentry` Secret.
pub const DSN_VAR: &str = "SENTRY_DSN";

/// `storefront-sentry` contents, when the Platform names a Sentry project and its Secret
/// can be read.
pub async fn sentry(ctx: &Context, platform: &PlatformSpec) -> Option<BTreeMap<String, String>> {
    let sentry = platform.observability.as_ref()?.sentry.as_ref()?;
    let dsn = secret_fields(ctx, &sentry.dsn_secret_ref, ["dsn"]).await;
    decide(dsn)
}

/// The decision, without I/O: `dsn` is what reading the named Secret gave.
pub fn decide(dsn: Result<[String; 1], String>) -> Option<BTreeMap<String, String>> {
    match dsn {
        Ok([dsn]) => Some(BTreeMap::from([(
            DSN_VAR.to_owned(),
            dsn.trim().to_owned(),
        )])),
        Err(why) => {
            // `why` names the Secret and key, never a value.
            tracing::warn!(error = %why, "storefronts report no errors until the Sentry DSN can be read");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    fn with_sentry() -> crate::tenant::PlatformView {
        let mut platform = fixture::platform();
        platform.spec.observability = serde_json::from_value(serde_json::json!({
            "sentry": {
                "dsnSecretRef": { "namespace": "tiqzy-system", "name": "sentry" },
                "environment": "staging", "sampleRatePercent": 25
            }
        }))
        .expect("observability");
        platform
    }

    #[test]
    fn the_dsn_reaches_the_storefront_through_its_own_secret_and_nowhere_else() {
        let platform = with_sentry();
        let dsn = "https://k3y@o1.ingest.sentry.example/42";
        let mut validated =
            crate::reconcile::validate(&fixture::tenant("acme"), &platform).expect("valid");
        let mut secrets = validated.secrets.clone();
        secrets.sentry = decide(Ok([dsn.to_owned()]));
        validated = validated.with_secrets(secrets);
        let desired = crate::build::desired(&validated);

        let secret = desired
            .credentials
            .secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(crate::build::SENTRY_SECRET))
            .expect("storefront-sentry");
        let data = secret.data.as_ref().expect("data");
        assert_eq!(data[DSN_VAR].0, dsn.as_bytes());

        let config = desired.workload.config_map.data.clone().unwrap_or_default();
        assert_eq!(config["SENTRY_ENVIRONMENT"], "staging");
        assert_eq!(config["SENTRY_SAMPLE_RATE"], "0.25");
        let elsewhere =
            serde_json::to_string(&(&desired.workload.config_map, &desired.workload.deployment))
                .expect("JSON");
        assert!(!elsewhere.contains("k3y"), "the DSN only in its Secret");
        assert!(
            elsewhere.contains(crate::build::SENTRY_SECRET),
            "the pods read the Secret"
        );
    }

    #[test]
    fn an_unreadable_secret_leaves_the_storefront_without_error_reports() {
        assert_eq!(
            decide(Err("Secret tiqzy-system/sentry has no key \"dsn\"".into())),
            None
        );
    }
}
