//! The storefront's non-secret settings: branding and runtime configuration, read by the
//! runtime as environment variables.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use tiqzy_crds::payments::TOKEN_PATH;

use super::payments_service::service_url;
use super::{HTTP_PORT, METRICS_PORT, STOREFRONT, meta};
use crate::tenant::ValidatedTenant;

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
    if let Some(cas) = &tenant.trusted_cas {
        data.insert("TIQZY_TRUSTED_CA_PEM", cas.clone());
    }
    if let Some(namespace) = &tenant.payments_namespace {
        data.insert("TIQZY_PAYMENTS_URL", service_url(namespace));
        data.insert("TIQZY_PAYMENTS_TOKEN_FILE", TOKEN_PATH.to_owned());
    }
    if let Some(staff) = &spec.staff_auth {
        data.insert("TIQZY_OAUTH_ISSUER", staff.issuer.clone());
        data.insert("TIQZY_OAUTH_AUDIENCE", staff.audience.clone());
        if let Some(prefix) = &staff.permission_prefix {
            data.insert("TIQZY_OAUTH_PERMISSION_PREFIX", prefix.clone());
        }
        if let Some(claim) = &staff.tenant_claim {
            data.insert("TIQZY_STAFF_TENANT_CLAIM", claim.name.clone());
            data.insert(
                "TIQZY_STAFF_TENANT_CLAIM_VALUE",
                claim.value.clone().unwrap_or_else(|| tenant.name.clone()),
            );
        }
    }
    if let Some(cap) = spec.storefront.max_tickets_per_buyer_per_event {
        data.insert("TIQZY_MAX_TICKETS_PER_CLIENT_PER_EVENT", cap.to_string());
    }
    if let Some(email) = &spec.branding.support_email {
        data.insert("TIQZY_SUPPORT_EMAIL", email.clone());
    }
    if let Some(mail) = &tenant.mail {
        data.insert("TIQZY_SMTP_HOST", mail.host.clone());
        let port = mail.port.unwrap_or(mail.tls.default_port());
        data.insert("TIQZY_SMTP_PORT", port.to_string());
        data.insert("TIQZY_SMTP_TLS", mail.tls.as_env().to_owned());
        data.insert("TIQZY_MAIL_FROM", mail.from.clone());
    }
    if let Some(sentry) = &tenant.sentry {
        if let Some(environment) = &sentry.environment {
            data.insert("SENTRY_ENVIRONMENT", environment.clone());
        }
        if let Some(percent) = sentry.sample_rate_percent {
            data.insert(
                "SENTRY_SAMPLE_RATE",
                format!("{:.2}", f64::from(percent) / 100.0),
            );
        }
    }
    if let Some(traces) = &tenant.traces {
        data.extend(trace_settings(traces));
    }
    if let Some(name) = &spec.branding.sender_name {
        data.insert("TIQZY_MAIL_FROM_NAME", name.clone());
    }
    if let Some(reply_to) = &spec.branding.reply_to {
        data.insert("TIQZY_MAIL_REPLY_TO", reply_to.clone());
    }
    ConfigMap {
        metadata: meta(tenant, STOREFRONT),
        data: Some(data.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
        ..ConfigMap::default()
    }
}

/// The OpenTelemetry variables for `Platform.spec.observability.traces`: the collector, and
/// the share of traces kept (a caller's sampled trace is always followed).
pub fn trace_settings(traces: &tiqzy_crds::Traces) -> [(&'static str, String); 3] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", traces.endpoint.clone()),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
        (
            "OTEL_TRACES_SAMPLER_ARG",
            format!(
                "{:.2}",
                f64::from(traces.sample_percent.unwrap_or(100)) / 100.0
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;
    use tiqzy_crds::Tenant;

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
    fn the_platform_collector_and_sampling_reach_the_runtime_only_when_set() {
        let mut tenant = fixture::validated(&fixture::tenant("acme"));
        let data = config_map(&tenant).data.expect("data");
        assert!(!data.keys().any(|k| k.starts_with("OTEL_")), "{data:?}");
        tenant.traces = Some(tiqzy_crds::Traces {
            endpoint: "http://collector.observability:4318".into(),
            sample_percent: Some(25),
        });
        let data = config_map(&tenant).data.expect("data");
        assert_eq!(
            data["OTEL_EXPORTER_OTLP_ENDPOINT"],
            "http://collector.observability:4318"
        );
        assert_eq!(data["OTEL_TRACES_SAMPLER"], "parentbased_traceidratio");
        assert_eq!(data["OTEL_TRACES_SAMPLER_ARG"], "0.25");
    }

    #[test]
    fn the_storefront_finds_the_payments_service_and_its_token() {
        let mut tenant = fixture::validated(&fixture::tenant("acme"));
        let data = config_map(&tenant).data.expect("data");
        assert!(!data.contains_key("TIQZY_PAYMENTS_URL"), "no service yet");
        tenant.payments_namespace = Some("tiqzy-system".to_owned());
        let data = config_map(&tenant).data.expect("data");
        assert_eq!(
            data["TIQZY_PAYMENTS_URL"],
            "http://tiqzy-payments.tiqzy-system.svc:8080"
        );
        assert_eq!(
            data["TIQZY_PAYMENTS_TOKEN_FILE"],
            "/var/run/secrets/tiqzy-payments/token"
        );
        assert!(!data.keys().any(|k| k.starts_with("STRIPE_")));
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
        assert!(!data.contains_key("STRIPE_API_BASE"), "Stripe itself");
        platform.spec.stripe.as_mut().expect("stripe").api_base =
            Some("http://stripe-mock.staging:12111".to_owned());
        let data = config_map(&crate::reconcile::validate(&tenant, &platform).expect("valid"))
            .data
            .expect("data");
        assert!(
            !data.contains_key("STRIPE_API_BASE"),
            "the payments service calls Stripe, not the storefront"
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

    /// The storefront pod's environment as `envFrom` assembles it: this ConfigMap and the
    /// Secrets the operator writes. The runtime must start on it, with staff sign-in or
    /// without, with Redis or without; a variable the runtime needs and the operator never
    /// writes fails here rather than in a crash-looping pod.
    #[test]
    fn the_runtime_starts_on_what_the_operator_writes() {
        use std::collections::HashMap;

        use crate::external::postgres::PostgresServer;
        use crate::external::redis::RedisServer;
        use crate::reconcile::credentials;

        let postgres = PostgresServer {
            host: "db.example".to_owned(),
            port: 5432,
            admin_user: "tiqzy".to_owned(),
            admin_password: "admin-secret".to_owned(),
            admin_database: "postgres".to_owned(),
            ssl_mode: "require".to_owned(),
        };
        // Over TLS with a private CA, the fuller of the two ways the operator writes.
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .and_then(|p| p.self_signed(&rcgen::KeyPair::generate()?))
            .expect("a CA")
            .pem();
        let redis = RedisServer {
            host: "cache.example".to_owned(),
            port: 6380,
            admin_user: "default".to_owned(),
            admin_password: "admin-secret".to_owned(),
            tls: true,
            ca_pem: Some(ca.clone()),
        };
        let bare = Tenant::new(
            "bare",
            serde_json::from_value(serde_json::json!({
                "displayName": "Bare Hall", "currency": "JPY",
            }))
            .expect("spec"),
        );
        let mut full = fixture::tenant("acme");
        full.spec.staff_auth = Some(tiqzy_crds::StaffAuth {
            issuer: "https://login.example/acme/v2.0".to_owned(),
            audience: "api://tiqzy-acme".to_owned(),
            permission_prefix: Some("tiqzy.".to_owned()),
            tenant_claim: Some(tiqzy_crds::TenantClaim {
                name: "tiqzy_tenant".to_owned(),
                value: None,
            }),
        });
        full.spec.storefront.max_tickets_per_buyer_per_event = Some(6);
        full.spec.payments = Some(tiqzy_crds::Payments {
            connected_account_id: "acct_1Acme".to_owned(),
            application_fee_bps: Some(90),
        });
        full.spec.branding.sender_name = Some("ACME Box Office".to_owned());
        full.spec.branding.reply_to = Some("crew@acme.example".to_owned());
        let mut with_mail = fixture::platform().spec;
        with_mail.mail = Some(
            serde_json::from_value(serde_json::json!({
                "host": "smtp.mail.example", "tls": "Tls", "from": "tickets@platform.example",
                "credentialsSecretRef": { "namespace": "tiqzy-system", "name": "smtp" },
            }))
            .expect("mail"),
        );
        let (mail_secret, _) = crate::reconcile::mail::decide(
            &with_mail,
            Some(Ok(["acme".to_owned(), "smtp-pass-9a8b".to_owned()])),
        );
        let issuer_ca = rcgen::generate_simple_self_signed(vec!["ca.example".to_owned()])
            .expect("certificate")
            .cert
            .pem();
        for (tenant, with_redis) in [(&bare, false), (&full, true)] {
            let mut v = fixture::validated(tenant);
            // A private CA for the staff issuer reaches the runtime's sign-in.
            v.trusted_cas = with_redis.then(|| issuer_ca.clone());
            // The full tenant sends mail through an authenticating relay.
            if with_redis {
                v.mail.clone_from(&with_mail.mail);
                v.secrets.mail.clone_from(&mail_secret);
            }
            let mut env: HashMap<String, String> =
                config_map(&v).data.expect("data").into_iter().collect();
            env.extend(credentials::database_secret(&postgres, &v.name, None).expect("database"));
            env.extend(credentials::new_signing_secret());
            if with_redis {
                env.extend(credentials::cache_secret(&redis, &v.name, None).expect("cache"));
            }
            env.extend(v.secrets.mail.clone().unwrap_or_default());
            let config = tiqzy_runtime::config::Config::from_vars(&env)
                .unwrap_or_else(|e| panic!("{}: the runtime refuses its environment: {e}", v.name));
            assert_eq!(config.tenant, v.name);
            assert_eq!(config.redis_url.is_some(), with_redis);
            assert_eq!(
                config.oauth.as_ref().map_or(0, |o| o.trusted_cas.len()),
                usize::from(with_redis)
            );
            assert_eq!(config.redis_ca_pem.is_some(), with_redis);
            if with_redis {
                assert_eq!(config.redis_ca_pem.as_deref(), Some(ca.trim()));
            }
            assert_eq!(config.oauth.is_some(), tenant.spec.staff_auth.is_some());
            if with_redis {
                // The tenant claim names the tenant unless the spec says otherwise.
                let claim = config.oauth.as_ref().and_then(|o| o.tenant_claim.clone());
                assert_eq!(
                    claim.map(|c| (c.name, c.value)),
                    Some(("tiqzy_tenant".to_owned(), "acme".to_owned()))
                );
                assert_eq!(config.max_tickets_per_client, 6);
            } else {
                assert_eq!(config.max_tickets_per_client, 10);
            }
            let mail = &config.mail;
            if with_redis {
                let smtp = mail.smtp.as_ref().expect("the relay reaches the runtime");
                assert_eq!((smtp.host.as_str(), smtp.port), ("smtp.mail.example", 465));
                assert_eq!(smtp.tls, tiqzy_runtime::config::SmtpTls::Tls);
                assert!(smtp.credentials.is_some());
                assert_eq!(
                    mail.from.to_string(),
                    "ACME Box Office <tickets@platform.example>"
                );
                assert_eq!(
                    mail.reply_to.as_ref().map(ToString::to_string).as_deref(),
                    Some("crew@acme.example")
                );
            } else {
                assert!(mail.smtp.is_none(), "no relay: mail is logged");
                assert_eq!(mail.from.name.as_deref(), Some("Bare Hall"));
            }
            assert_eq!(
                u32::try_from(pool_per_pod(&v)).ok(),
                Some(config.db_max_connections)
            );
        }
    }
}
