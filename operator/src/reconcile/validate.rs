//! Validation: from a Tenant and the Platform it runs on to a `ValidatedTenant`, the only
//! input the builders take. Pure.

use tiqzy_crds::{PlatformSpec, RoutingMode, Tenant, TenantSpec};

use crate::build::payments_service::PAYMENTS_HOST_LABEL;
use crate::error::Error;
use crate::names;
use crate::tenant::{PlatformView, RoutingKind, TenantSecrets, ValidatedTenant};

/// Checks `tenant` against the platform. The API server already enforced the schema; this
/// resolves defaults that depend on the platform.
pub fn validate(tenant: &Tenant, platform: &PlatformView) -> Result<ValidatedTenant, Error> {
    let name = tenant
        .metadata
        .name
        .clone()
        .ok_or_else(|| Error::InvalidSpec("the Tenant has no name".into()))?;
    let hosts = names::hosts(&name, &tenant.spec.hosts, &platform.spec.base_domain);
    let reserved = payments_host(&platform.spec.base_domain);
    if name == PAYMENTS_HOST_LABEL || hosts.contains(&reserved) {
        return Err(Error::InvalidSpec(format!(
            "the name {PAYMENTS_HOST_LABEL:?} and the host {reserved} are the payments service's: choose another name or host"
        )));
    }
    let routing = match platform.spec.routing.mode {
        RoutingMode::Route => RoutingKind::Route,
        RoutingMode::Ingress => RoutingKind::Ingress,
        RoutingMode::Auto if platform.route_api => RoutingKind::Route,
        RoutingMode::Auto => RoutingKind::Ingress,
    };
    if routing == RoutingKind::Route && !platform.route_api {
        return Err(Error::InvalidSpec(
            "Platform.spec.routing.mode is Route but the API server does not serve route.openshift.io/v1".into(),
        ));
    }
    let tls_secret = tenant.spec.tls.as_ref().map(|tls| {
        tls.secret_name
            .clone()
            .unwrap_or_else(|| crate::build::TLS_SECRET.to_owned())
    });
    // A Redis URL that does not read is reported by CacheReady; no egress is opened for it.
    let redis_port = |url: &str| names::redis_address(url).ok().map(|(_, p)| i32::from(p));
    let observability = platform.spec.observability.as_ref();
    let store_ports = [
        platform.spec.postgres.as_ref().map(|p| p.port),
        platform
            .spec
            .redis
            .as_ref()
            .and_then(|r| redis_port(&r.url)),
        platform
            .spec
            .mail
            .as_ref()
            .map(|m| m.port.unwrap_or(m.tls.default_port())),
        observability
            .and_then(|o| o.traces.as_ref())
            .and_then(|t| api_port(&t.endpoint)),
    ]
    .into_iter()
    .flatten()
    .collect();
    Ok(ValidatedTenant {
        namespace: names::namespace(&name),
        url: format!("https://{}", hosts[0]),
        name,
        spec: tenant.spec.clone(),
        hosts,
        runtime_image: platform.spec.runtime_image.clone(),
        progress_deadline_seconds: platform.spec.rollout.progress_deadline_seconds,
        routing,
        ingress_class: platform.spec.routing.ingress_class_name.clone(),
        tls_secret,
        secrets: TenantSecrets::default(),
        store_ports,
        application_fee_bps: application_fee_bps(&platform.spec, &tenant.spec),
        payments_namespace: None,
        trusted_cas: None,
        mail: platform.spec.mail.clone(),
        sentry: observability.and_then(|o| o.sentry.clone()),
        traces: observability.and_then(|o| o.traces.clone()),
        config_digest: String::new(),
    })
}

/// The port of an `http(s)://host[:port]` API base when it is not 443 (which every
/// storefront may call anyway).
pub fn api_port(base: &str) -> Option<i32> {
    let (scheme, rest) = base.split_once("://")?;
    let authority = rest.trim_end_matches('/');
    let port = match authority.rsplit_once(':') {
        Some((_, port)) if !port.ends_with(']') => port.parse().ok()?,
        _ if scheme == "http" => 80,
        _ => 443,
    };
    (port != 443).then_some(port)
}

/// The host Stripe calls the payments service on: `payments.<baseDomain>`.
pub fn payments_host(base_domain: &str) -> String {
    format!("{PAYMENTS_HOST_LABEL}.{base_domain}")
}

/// The application fee on primary sales: the tenant's own, else the Platform's default.
pub fn application_fee_bps(platform: &PlatformSpec, tenant: &TenantSpec) -> i32 {
    tenant
        .payments
        .as_ref()
        .and_then(|p| p.application_fee_bps)
        .or_else(|| {
            platform
                .stripe
                .as_ref()
                .map(|s| s.default_application_fee_bps)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    #[test]
    fn hosts_default_to_the_base_domain() {
        let v = validate(&fixture::tenant("acme"), &fixture::platform()).expect("valid");
        assert_eq!(v.hosts, vec!["acme.apps.example.com"]);
        assert_eq!(v.namespace, "tiqzy-acme");
        assert_eq!(v.routing, RoutingKind::Ingress);
    }

    #[test]
    fn routes_are_used_when_the_cluster_serves_them() {
        let mut platform = fixture::platform();
        platform.route_api = true;
        let v = validate(&fixture::tenant("acme"), &platform).expect("valid");
        assert_eq!(v.routing, RoutingKind::Route);
    }

    #[test]
    fn the_payments_host_is_no_tenant_s() {
        let refused = validate(&fixture::tenant("payments"), &fixture::platform());
        let Err(Error::InvalidSpec(message)) = refused else {
            panic!("refused expected, got {refused:?}")
        };
        assert!(message.contains("payments.apps.example.com"), "{message}");
        let mut squatter = fixture::tenant("acme");
        squatter.spec.hosts = vec!["payments.apps.example.com".to_owned()];
        assert!(matches!(
            validate(&squatter, &fixture::platform()),
            Err(Error::InvalidSpec(_))
        ));
        assert!(validate(&fixture::tenant("payments2"), &fixture::platform()).is_ok());
    }

    #[test]
    fn forcing_routes_without_the_route_api_is_an_error() {
        let mut platform = fixture::platform();
        platform.spec.routing.mode = RoutingMode::Route;
        assert!(matches!(
            validate(&fixture::tenant("acme"), &platform),
            Err(Error::InvalidSpec(_))
        ));
    }

    #[test]
    fn the_config_digest_follows_the_secrets() {
        let v = validate(&fixture::tenant("acme"), &fixture::platform()).expect("valid");
        let a = v.clone().with_secrets(TenantSecrets::default());
        let mut secrets = TenantSecrets::default();
        secrets
            .signing
            .insert("TIQZY_TICKET_SIGNING_KEY".into(), "k".into());
        let b = v.with_secrets(secrets);
        assert_ne!(a.config_digest, b.config_digest);
        assert!(
            !format!("{:?}", b.secrets).contains("\"k\""),
            "secret values stay out of Debug"
        );
    }

    #[test]
    fn egress_opens_the_store_ports_the_platform_names() {
        let mut platform = fixture::platform();
        platform.spec.redis = Some(
            serde_json::from_value(serde_json::json!({
                "url": "redis://cache.example:6380",
                "adminSecretRef": { "namespace": "tiqzy-system", "name": "redis-admin" },
            }))
            .expect("redis spec"),
        );
        let v = validate(&fixture::tenant("acme"), &platform).expect("valid");
        assert_eq!(v.store_ports, vec![6380]);
        platform.spec.observability = Some(
            serde_json::from_value(serde_json::json!({
                "traces": { "endpoint": "http://collector.observability:4318" },
            }))
            .expect("observability spec"),
        );
        let v = validate(&fixture::tenant("acme"), &platform).expect("valid");
        assert_eq!(v.store_ports, vec![6380, 4318], "the collector's port too");
        platform.spec.observability = None;
        platform.spec.redis.as_mut().expect("redis").url = "redis://cache.example:x".into();
        let v = validate(&fixture::tenant("acme"), &platform).expect("valid");
        assert!(
            v.store_ports.is_empty(),
            "a port that does not read opens nothing"
        );
    }

    #[test]
    fn a_stripe_api_base_is_the_payments_service_s_not_the_storefront_s() {
        let mut platform = fixture::platform();
        platform.spec.stripe = Some(
            serde_json::from_value(serde_json::json!({
                "secretKeyRef": { "namespace": "tiqzy-system", "name": "stripe" },
                "webhookSecretRef": { "namespace": "tiqzy-system", "name": "stripe" },
                "apiBase": "http://stripe-mock.staging:12111",
            }))
            .expect("stripe"),
        );
        let v = validate(&fixture::tenant("acme"), &platform).expect("valid");
        assert!(
            v.store_ports.is_empty(),
            "the storefront never calls Stripe"
        );
        for (base, port) in [
            ("https://stripe.example", None),
            ("https://stripe.example:443/", None),
            ("http://stripe.example", Some(80)),
            ("https://[::1]:8443", Some(8443)),
            ("https://[::1]", None),
        ] {
            assert_eq!(api_port(base), port, "{base}");
        }
    }
}
