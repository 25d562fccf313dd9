//! How buyers reach the storefront: OpenShift Routes (one per host, edge TLS) or one Ingress.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use super::{Exposure, STOREFRONT, meta};
use crate::tenant::{RoutingKind, ValidatedTenant};

/// An OpenShift Route (route.openshift.io/v1), which k8s-openapi does not model.
pub type Route = Vec<DynamicObject>;

pub fn route_api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("route.openshift.io", "v1", "Route"),
        "routes",
    )
}

/// Annotation naming the TLS Secret served (or the router's default): a changed source changes
/// the object, so the applier rewrites it and a field no longer wanted goes with it.
pub const TLS_SOURCE_ANNOTATION: &str = "tiqzy.io/tls-source";

/// HAProxy router setting: `replace` makes the router drop the client's `X-Forwarded-For`
/// (and `Forwarded`) and write its own, so the storefront's trusted hop is the router's.
pub const FORWARDED_HEADERS_ANNOTATION: &str = "haproxy.router.openshift.io/set-forwarded-headers";

fn tls_source(tenant: &ValidatedTenant) -> String {
    tenant
        .tls_secret
        .clone()
        .unwrap_or_else(|| "router-default".to_owned())
}

/// Name of the Role and RoleBinding letting the OpenShift router read the TLS Secret.
pub const ROUTER_ACCESS: &str = "storefront-tls-router";
/// The OpenShift router's ServiceAccount (namespace, name).
const ROUTER: (&str, &str) = ("openshift-ingress", "router");

/// A Route's `externalCertificate` is read by the router itself, which OpenShift allows only
/// with a grant to read that one Secret.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterAccess {
    pub role: Role,
    pub binding: RoleBinding,
}

pub fn exposure(tenant: &ValidatedTenant) -> Exposure {
    match tenant.routing {
        RoutingKind::Route => Exposure::Route(routes(tenant), router_access(tenant).map(Box::new)),
        RoutingKind::Ingress => Exposure::Ingress(Box::new(ingress(tenant))),
    }
}

fn routes(tenant: &ValidatedTenant) -> Route {
    let resource = route_api_resource();
    tenant
        .hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let mut tls = serde_json::json!({
                "termination": "edge",
                "insecureEdgeTerminationPolicy": "Redirect",
            });
            if let Some(secret) = &tenant.tls_secret {
                tls["externalCertificate"] = serde_json::json!({ "name": secret });
            }
            let mut route = DynamicObject::new(&format!("{STOREFRONT}-{i}"), &resource)
                .within(&tenant.namespace);
            route.metadata.annotations = Some(BTreeMap::from([
                (TLS_SOURCE_ANNOTATION.to_owned(), tls_source(tenant)),
                // The router writes X-Forwarded-For itself, dropping what the client sent:
                // the storefront's rate limits and ticket caps count the address it writes.
                (
                    FORWARDED_HEADERS_ANNOTATION.to_owned(),
                    "replace".to_owned(),
                ),
            ]));
            route.data = serde_json::json!({
                "spec": {
                    "host": host,
                    "to": { "kind": "Service", "name": STOREFRONT, "weight": 100 },
                    "port": { "targetPort": "http" },
                    "tls": tls,
                    "wildcardPolicy": "None",
                }
            });
            route
        })
        .collect()
}

fn router_access(tenant: &ValidatedTenant) -> Option<RouterAccess> {
    let secret = tenant.tls_secret.as_ref()?;
    let role = Role {
        metadata: meta(tenant, ROUTER_ACCESS),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".to_owned()]),
            resource_names: Some(vec![secret.clone()]),
            verbs: ["get", "list", "watch"].map(str::to_owned).to_vec(),
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: meta(tenant, ROUTER_ACCESS),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: ROUTER_ACCESS.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            namespace: Some(ROUTER.0.to_owned()),
            name: ROUTER.1.to_owned(),
            ..Subject::default()
        }]),
    };
    Some(RouterAccess { role, binding })
}

fn ingress(tenant: &ValidatedTenant) -> Ingress {
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: STOREFRONT.to_owned(),
            port: Some(ServiceBackendPort {
                name: Some("http".to_owned()),
                number: None,
            }),
        }),
        resource: None,
    };
    let rules = tenant
        .hosts
        .iter()
        .map(|host| IngressRule {
            host: Some(host.clone()),
            http: Some(HTTPIngressRuleValue {
                paths: vec![HTTPIngressPath {
                    path: Some("/".to_owned()),
                    path_type: "Prefix".to_owned(),
                    backend: backend.clone(),
                }],
            }),
        })
        .collect();
    let mut metadata = meta(tenant, STOREFRONT);
    metadata.annotations = Some(BTreeMap::from([
        (
            "nginx.ingress.kubernetes.io/force-ssl-redirect".to_owned(),
            "true".to_owned(),
        ),
        (TLS_SOURCE_ANNOTATION.to_owned(), tls_source(tenant)),
    ]));
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: tenant.ingress_class.clone(),
            rules: Some(rules),
            tls: tenant.tls_secret.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(tenant.hosts.clone()),
                    secret_name: Some(secret.clone()),
                }]
            }),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    #[test]
    fn one_route_per_host_with_edge_tls() {
        let mut tenant = fixture::tenant("acme");
        tenant.spec.hosts = vec!["tickets.acme.example".to_owned(), "acme.example".to_owned()];
        let mut validated = fixture::validated(&tenant);
        validated.routing = RoutingKind::Route;
        let Exposure::Route(routes, access) = exposure(&validated) else {
            panic!("routes expected")
        };
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1].data["spec"]["host"], "acme.example");
        assert_eq!(routes[0].data["spec"]["tls"]["termination"], "edge");
        for route in &routes {
            let annotations = route.metadata.annotations.as_ref().expect("annotations");
            assert_eq!(
                annotations[FORWARDED_HEADERS_ANNOTATION], "replace",
                "a client's own X-Forwarded-For must not reach the storefront"
            );
        }
        assert!(
            routes[0].data["spec"]["tls"]
                .get("externalCertificate")
                .is_none()
        );
        assert_eq!(
            access, None,
            "the router's default certificate needs no grant"
        );
    }

    #[test]
    fn the_router_may_read_exactly_the_tls_secret_a_route_names() {
        let mut validated = fixture::validated(&fixture::tenant("acme"));
        validated.routing = RoutingKind::Route;
        validated.tls_secret = Some("storefront-tls".to_owned());
        let Exposure::Route(routes, Some(access)) = exposure(&validated) else {
            panic!("routes with router access expected")
        };
        assert_eq!(
            routes[0].data["spec"]["tls"]["externalCertificate"]["name"],
            "storefront-tls"
        );
        let rule = &access.role.rules.expect("rules")[0];
        assert_eq!(
            rule.resource_names.as_deref(),
            Some(&["storefront-tls".to_owned()][..])
        );
        assert_eq!(rule.verbs, vec!["get", "list", "watch"]);
        let subject = &access.binding.subjects.expect("subjects")[0];
        assert_eq!(
            (subject.namespace.as_deref(), subject.name.as_str()),
            (Some("openshift-ingress"), "router")
        );
    }

    #[test]
    fn an_ingress_names_every_host_and_the_tls_secret() {
        let mut validated = fixture::validated(&fixture::tenant("acme"));
        validated.tls_secret = Some("storefront-tls".to_owned());
        let Exposure::Ingress(ingress) = exposure(&validated) else {
            panic!("ingress expected")
        };
        let spec = ingress.spec.expect("spec");
        assert_eq!(
            spec.rules.expect("rules")[0].host.as_deref(),
            Some("acme.apps.example.com")
        );
        assert_eq!(
            spec.tls.expect("tls")[0].secret_name.as_deref(),
            Some("storefront-tls")
        );
    }
}
