//! NetworkPolicies: deny everything, then allow only what the storefront needs: traffic from
//! the cluster's router, scrapes of its metrics port from monitoring namespaces, DNS, the platform's PostgreSQL and Redis, and HTTPS out (Stripe,
//! the OAuth2 issuer's keys).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::payments_service::{PAYMENTS_PORT, service_selector};
use super::{HTTP_PORT, METRICS_PORT, meta, selector};
use crate::tenant::{RoutingKind, ValidatedTenant};

/// Namespaces labelled so may reach storefronts (an ingress controller's namespace, say).
pub const INGRESS_NAMESPACE_LABEL: &str = "tiqzy.io/storefront-ingress";
/// OpenShift labels its router namespace with this policy group.
pub const OPENSHIFT_INGRESS_LABEL: &str = "policy-group.network.openshift.io/ingress";
/// Namespaces labelled so may scrape storefronts' metrics (Prometheus's namespace, say).
pub const MONITORING_NAMESPACE_LABEL: &str = "tiqzy.io/storefront-monitoring";
/// OpenShift labels its monitoring namespaces (platform and user workload) with this.
const OPENSHIFT_POLICY_GROUP_LABEL: &str = "network.openshift.io/policy-group";

pub fn network_policies(tenant: &ValidatedTenant) -> Vec<NetworkPolicy> {
    let storefront = LabelSelector {
        match_labels: Some(selector(&tenant.name)),
        ..LabelSelector::default()
    };
    let deny_all = NetworkPolicy {
        metadata: meta(tenant, "default-deny"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ..NetworkPolicySpec::default()
        }),
    };
    let allow_ingress = NetworkPolicy {
        metadata: meta(tenant, "storefront-ingress"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(storefront.clone()),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![
                        namespaces_with(OPENSHIFT_INGRESS_LABEL),
                        namespaces_with(INGRESS_NAMESPACE_LABEL),
                    ]),
                    ports: Some(vec![tcp(HTTP_PORT)]),
                },
                NetworkPolicyIngressRule {
                    from: Some(monitoring()),
                    ports: Some(vec![tcp(METRICS_PORT)]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    };
    let mut egress = vec![dns(tenant.routing == RoutingKind::Route)];
    let mut outbound = vec![tcp(443)];
    outbound.extend(tenant.store_ports.iter().map(|p| tcp(*p)));
    egress.push(NetworkPolicyEgressRule {
        to: None,
        ports: Some(outbound),
    });
    // The payments service: the storefront's requests out, its event deliveries in.
    let mut allow_ingress = allow_ingress;
    if let Some(namespace) = &tenant.payments_namespace {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![payments_pods(namespace)]),
            ports: Some(vec![tcp(PAYMENTS_PORT)]),
        });
        if let Some(rules) = allow_ingress.spec.as_mut().and_then(|s| s.ingress.as_mut()) {
            rules.push(NetworkPolicyIngressRule {
                from: Some(vec![payments_pods(namespace)]),
                ports: Some(vec![tcp(HTTP_PORT)]),
            });
        }
    }
    let allow_egress = NetworkPolicy {
        metadata: meta(tenant, "storefront-egress"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(storefront),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(egress),
            ..NetworkPolicySpec::default()
        }),
    };
    vec![deny_all, allow_ingress, allow_egress]
}

/// OpenShift's DNS pods: the DNS operator's daemon set in `openshift-dns`, listening on 5353
/// (its Service maps 53 there).
const OPENSHIFT_DNS: (&str, &str, &str) = (
    "openshift-dns",
    "dns.operator.openshift.io/daemonset-dns",
    "default",
);

/// The cluster DNS, wherever it runs: pods labelled `k8s-app=kube-dns` (CoreDNS and kube-dns
/// everywhere else), and on OpenShift (`openshift`: the platform is served through Routes) the
/// DNS operator's pods in `openshift-dns`.
pub fn dns(openshift: bool) -> NetworkPolicyEgressRule {
    let pods = |labels: BTreeMap<String, String>| LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    };
    let mut to = vec![NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(pods(BTreeMap::from([(
            "k8s-app".to_owned(),
            "kube-dns".to_owned(),
        )]))),
        ..NetworkPolicyPeer::default()
    }];
    if openshift {
        let (namespace, label, value) = OPENSHIFT_DNS;
        to.push(NetworkPolicyPeer {
            namespace_selector: Some(pods(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                namespace.to_owned(),
            )]))),
            pod_selector: Some(pods(BTreeMap::from([(label.to_owned(), value.to_owned())]))),
            ..NetworkPolicyPeer::default()
        });
    }
    NetworkPolicyEgressRule {
        to: Some(to),
        ports: Some(vec![
            port(53, "UDP"),
            port(53, "TCP"),
            port(5353, "UDP"),
            port(5353, "TCP"),
        ]),
    }
}

/// The payments service's pods in the operator's namespace.
fn payments_pods(namespace: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                namespace.to_owned(),
            )])),
            ..LabelSelector::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(service_selector()),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

pub fn tcp(number: i32) -> NetworkPolicyPort {
    port(number, "TCP")
}

pub fn port(number: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.to_owned()),
        end_port: None,
    }
}

/// Every namespace that carries the label `key` (whatever its value).
/// Prometheus: OpenShift's monitoring namespaces (platform and user workload) and namespaces
/// labelled [`MONITORING_NAMESPACE_LABEL`].
pub(super) fn monitoring() -> Vec<NetworkPolicyPeer> {
    vec![
        NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    OPENSHIFT_POLICY_GROUP_LABEL.to_owned(),
                    "monitoring".to_owned(),
                )])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        },
        namespaces_with(MONITORING_NAMESPACE_LABEL),
    ]
}

pub(super) fn namespaces_with(key: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.to_owned(),
                operator: "Exists".to_owned(),
                values: None,
            }]),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    #[test]
    fn everything_is_denied_then_only_the_storefront_needs_are_allowed() {
        let mut tenant = fixture::validated(&fixture::tenant("acme"));
        tenant.store_ports = vec![5432, 6379];
        let policies = network_policies(&tenant);
        let deny = policies[0].spec.as_ref().expect("spec");
        assert_eq!(deny.pod_selector, Some(LabelSelector::default()));
        assert!(deny.ingress.is_none() && deny.egress.is_none());
        // The public port from routers, the metrics port only from monitoring.
        let ingress = policies[1]
            .spec
            .as_ref()
            .and_then(|s| s.ingress.clone())
            .expect("ingress");
        let ports: Vec<_> = ingress
            .iter()
            .map(|rule| rule.ports.clone().unwrap_or_default()[0].port.clone())
            .collect();
        assert_eq!(
            ports,
            vec![
                Some(IntOrString::Int(HTTP_PORT)),
                Some(IntOrString::Int(METRICS_PORT))
            ]
        );
        let monitoring = ingress[1].from.clone().unwrap_or_default();
        assert!(monitoring.iter().any(|peer| {
            peer.namespace_selector
                .as_ref()
                .and_then(|n| n.match_expressions.as_ref())
                .is_some_and(|e| e[0].key == MONITORING_NAMESPACE_LABEL)
        }));
        let egress = policies[2]
            .spec
            .as_ref()
            .and_then(|s| s.egress.clone())
            .expect("egress");
        let ports: Vec<_> = egress[1]
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.port.clone())
            .collect();
        assert_eq!(
            ports,
            vec![
                IntOrString::Int(443),
                IntOrString::Int(5432),
                IntOrString::Int(6379)
            ]
        );
        assert_eq!(egress.len(), 2, "no payments service known: no rule for it");
    }

    type Labels = BTreeMap<String, String>;

    /// The DNS peers of a storefront's egress, as (namespace selector, pod selector) labels.
    fn dns_peers(tenant: &ValidatedTenant) -> Vec<(Option<Labels>, Labels)> {
        let policies = network_policies(tenant);
        let egress = policies[2]
            .spec
            .as_ref()
            .and_then(|s| s.egress.clone())
            .expect("egress");
        let ports: Vec<_> = egress[0].ports.iter().flatten().cloned().collect();
        for (number, protocol) in [(53, "UDP"), (53, "TCP"), (5353, "UDP"), (5353, "TCP")] {
            assert!(
                ports.contains(&port(number, protocol)),
                "{number}/{protocol}"
            );
        }
        egress[0]
            .to
            .iter()
            .flatten()
            .map(|peer| {
                (
                    peer.namespace_selector.clone().and_then(|n| n.match_labels),
                    peer.pod_selector
                        .clone()
                        .and_then(|p| p.match_labels)
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn dns_is_reached_in_kube_system_and_on_openshift_in_openshift_dns() {
        let mut tenant = fixture::validated(&fixture::tenant("acme"));
        tenant.routing = RoutingKind::Ingress;
        let kube_dns = (
            None,
            BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())]),
        );
        assert_eq!(dns_peers(&tenant), vec![kube_dns.clone()]);
        tenant.routing = RoutingKind::Route;
        let openshift_dns = (
            Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                "openshift-dns".to_owned(),
            )])),
            BTreeMap::from([(
                "dns.operator.openshift.io/daemonset-dns".to_owned(),
                "default".to_owned(),
            )]),
        );
        assert_eq!(dns_peers(&tenant), vec![kube_dns, openshift_dns]);
    }

    #[test]
    fn the_storefront_calls_the_payments_service_and_takes_its_deliveries() {
        let mut tenant = fixture::validated(&fixture::tenant("acme"));
        tenant.payments_namespace = Some("tiqzy-system".to_owned());
        let policies = network_policies(&tenant);
        let spec = |i: usize| policies[i].spec.clone().expect("spec");
        let egress = spec(2).egress.expect("egress");
        let to_payments = &egress[2];
        assert_eq!(to_payments.ports, Some(vec![tcp(8080)]));
        let peer = &to_payments.to.as_ref().expect("to")[0];
        assert_eq!(
            peer.namespace_selector
                .as_ref()
                .and_then(|n| n.match_labels.clone()),
            Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                "tiqzy-system".to_owned()
            )]))
        );
        assert_eq!(
            peer.pod_selector
                .as_ref()
                .and_then(|p| p.match_labels.clone()),
            Some(service_selector())
        );
        let ingress = spec(1).ingress.expect("ingress");
        let from_payments = ingress.last().expect("a rule");
        assert_eq!(from_payments.from.as_ref().expect("from")[0], *peer);
        assert_eq!(from_payments.ports, Some(vec![tcp(HTTP_PORT)]));
    }
}
