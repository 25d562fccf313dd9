//! The payments service `tiqzy-payments` in the operator's namespace: the one holder of the
//! platform's Stripe key and the one receiver of Stripe's webhooks (docs/payments-protocol.md).
//! Pure builders from a [`ServiceInput`]; the Platform reconcile applies what they return.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, HTTPGetAction, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, Secret, SecretEnvSource, Service, ServiceAccount,
    ServicePort, ServiceSpec,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, NetworkPolicy, NetworkPolicyEgressRule,
    NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;

use super::deployment::{restricted, runtime_default};
use super::network_policy::{
    INGRESS_NAMESPACE_LABEL, OPENSHIFT_INGRESS_LABEL, dns, monitoring, namespaces_with, port, tcp,
};
use super::{HTTP_PORT, TENANT_LABEL, route_api_resource};
use crate::tenant::RoutingKind;

/// Name of the service's Secret, ServiceAccount, Deployment, PDB, Service and Ingress/Route.
pub const PAYMENTS_SERVICE: &str = "tiqzy-payments";
/// `app.kubernetes.io/name` of the service's pods.
pub const PAYMENTS_APP: &str = "tiqzy-payments";
/// Stripe calls the service on `<PAYMENTS_HOST_LABEL>.<baseDomain>`; no tenant may take it.
pub const PAYMENTS_HOST_LABEL: &str = "payments";
/// The one path exposed outside the cluster.
pub const WEBHOOK_PATH: &str = "/webhooks/stripe";
/// The port the service listens on, and its Service's port.
pub const PAYMENTS_PORT: i32 = 8080;
/// The service's NetworkPolicies.
pub const NETWORK_POLICIES: [&str; 2] = ["tiqzy-payments-ingress", "tiqzy-payments-egress"];
/// The platform delivery key, in the service's Secret (64 hex characters).
pub const DELIVERY_KEY: &str = "TIQZY_PAYMENTS_DELIVERY_KEY";
/// Where the service delivers a tenant's events; `{tenant}` is replaced.
pub const DELIVERY_URL: &str = "http://storefront.tiqzy-{tenant}.svc/webhooks/stripe";
/// Replicas of the service: one may be disrupted while the other serves.
const REPLICAS: i32 = 2;

/// What the service's objects are built from: resolved by the Platform reconcile.
#[derive(Clone, PartialEq)]
pub struct ServiceInput {
    /// The operator's namespace.
    pub namespace: String,
    /// The runtime image, which carries the `tiqzy-payments` binary too.
    pub image: String,
    /// `payments.<baseDomain>`.
    pub host: String,
    pub routing: RoutingKind,
    pub ingress_class: Option<String>,
    /// `Platform.spec.stripe.apiBase`.
    pub api_base: Option<String>,
    /// Ports the service calls besides 443 and the API server's 6443: PostgreSQL, a Stripe
    /// API base on another port, the trace collector.
    pub egress_ports: Vec<i32>,
    /// `Platform.spec.observability.traces`: where the service sends its traces.
    pub traces: Option<tiqzy_crds::Traces>,
    /// STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRETS, DATABASE_URL, TIQZY_PAYMENTS_DELIVERY_KEY.
    pub secret: BTreeMap<String, String>,
}

impl std::fmt::Debug for ServiceInput {
    // Secret values never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceInput")
            .field("namespace", &self.namespace)
            .field("image", &self.image)
            .field("host", &self.host)
            .field("routing", &self.routing)
            .finish_non_exhaustive()
    }
}

/// How Stripe reaches the webhook path.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceExposure {
    Route(Box<DynamicObject>),
    Ingress(Box<Ingress>),
}

/// Every object of the payments service. Destructured without `..` where it is applied.
#[derive(Debug, Clone)]
pub struct PaymentsService {
    pub secret: Secret,
    pub service_account: ServiceAccount,
    pub deployment: Deployment,
    pub pdb: PodDisruptionBudget,
    pub service: Service,
    pub network_policies: Vec<NetworkPolicy>,
    pub exposure: ServiceExposure,
}

/// Labels on every object of the service (owner reference added by the applier).
pub fn service_labels() -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", PAYMENTS_APP),
        ("app.kubernetes.io/component", "payments"),
        ("app.kubernetes.io/managed-by", "tiqzy-operator"),
        ("app.kubernetes.io/part-of", "tiqzy"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The selector of the service's pods.
pub fn service_selector() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_owned(), PAYMENTS_APP.to_owned())])
}

/// The address storefronts call: `http://tiqzy-payments.<namespace>.svc:8080`.
pub fn service_url(namespace: &str) -> String {
    format!("http://{PAYMENTS_SERVICE}.{namespace}.svc:{PAYMENTS_PORT}")
}

/// Builds the service's objects.
pub fn payments_service(input: &ServiceInput) -> PaymentsService {
    PaymentsService {
        secret: Secret {
            metadata: meta(input, PAYMENTS_SERVICE),
            data: Some(
                input
                    .secret
                    .iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            type_: Some("Opaque".to_owned()),
            ..Secret::default()
        },
        service_account: ServiceAccount {
            metadata: meta(input, PAYMENTS_SERVICE),
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        deployment: deployment(input),
        pdb: PodDisruptionBudget {
            metadata: meta(input, PAYMENTS_SERVICE),
            spec: Some(PodDisruptionBudgetSpec {
                min_available: Some(IntOrString::Int(1)),
                selector: Some(selector()),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        },
        service: Service {
            metadata: meta(input, PAYMENTS_SERVICE),
            spec: Some(ServiceSpec {
                selector: Some(service_selector()),
                ports: Some(vec![ServicePort {
                    name: Some("http".to_owned()),
                    port: PAYMENTS_PORT,
                    target_port: Some(IntOrString::String("http".to_owned())),
                    protocol: Some("TCP".to_owned()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        },
        network_policies: network_policies(input),
        exposure: match input.routing {
            RoutingKind::Route => ServiceExposure::Route(Box::new(route(input))),
            RoutingKind::Ingress => ServiceExposure::Ingress(Box::new(ingress(input))),
        },
    }
}

fn meta(input: &ServiceInput, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(input.namespace.clone()),
        ..ObjectMeta::default()
    }
}

fn selector() -> LabelSelector {
    LabelSelector {
        match_labels: Some(service_selector()),
        ..LabelSelector::default()
    }
}

/// Digest of what the pods read from the Secret, so a new Stripe key rolls them.
fn secret_digest(input: &ServiceInput) -> String {
    crate::names::digest(
        input
            .secret
            .iter()
            .flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()]),
    )
}

fn deployment(input: &ServiceInput) -> Deployment {
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    let mut env = vec![
        EnvVar {
            name: "TIQZY_PAYMENTS_LISTEN_ADDR".to_owned(),
            value: Some(format!("0.0.0.0:{PAYMENTS_PORT}")),
            ..EnvVar::default()
        },
        EnvVar {
            name: "TIQZY_PAYMENTS_DELIVERY_URL".to_owned(),
            value: Some(DELIVERY_URL.to_owned()),
            ..EnvVar::default()
        },
    ];
    if let Some(base) = &input.api_base {
        env.push(EnvVar {
            name: "STRIPE_API_BASE".to_owned(),
            value: Some(base.clone()),
            ..EnvVar::default()
        });
    }
    if let Some(traces) = &input.traces {
        env.extend(
            crate::build::config_map::trace_settings(traces).map(|(name, value)| EnvVar {
                name: name.to_owned(),
                value: Some(value),
                ..EnvVar::default()
            }),
        );
    }
    let quantity = |q: &str| Quantity(q.to_owned());
    let container = Container {
        name: "payments".to_owned(),
        image: Some(input.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(vec![PAYMENTS_SERVICE.to_owned()]),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: PAYMENTS_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: Some(env),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: PAYMENTS_SERVICE.to_owned(),
                optional: None,
            }),
            ..EnvFromSource::default()
        }]),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), quantity("100m")),
                ("memory".to_owned(), quantity("64Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".to_owned(), quantity("256Mi"))])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(restricted()),
        ..Container::default()
    };
    let mut pod_labels = service_labels();
    pod_labels.extend(service_selector());
    Deployment {
        metadata: meta(input, PAYMENTS_SERVICE),
        spec: Some(DeploymentSpec {
            replicas: Some(REPLICAS),
            revision_history_limit: Some(3),
            selector: selector(),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        super::deployment::CONFIG_DIGEST_ANNOTATION.to_owned(),
                        secret_digest(input),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    service_account_name: Some(PAYMENTS_SERVICE.to_owned()),
                    // The service reviews tokens and reads Tenants with its own token.
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(runtime_default()),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Storefront pods in any tenant namespace.
fn storefronts() -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: TENANT_LABEL.to_owned(),
                operator: "Exists".to_owned(),
                values: None,
            }]),
            ..LabelSelector::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "tiqzy-storefront".to_owned(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// In: storefronts (their requests), the router (Stripe's webhooks; the Ingress or Route
/// exposes only the webhook path) and Prometheus (`/metrics`). Out: DNS, the API server (TokenReview, Tenants), PostgreSQL,
/// Stripe, and the storefronts (deliveries). The operator's own pods are not selected.
fn network_policies(input: &ServiceInput) -> Vec<NetworkPolicy> {
    let ingress = NetworkPolicy {
        metadata: meta(input, NETWORK_POLICIES[0]),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector()),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(
                    [
                        storefronts(),
                        namespaces_with(OPENSHIFT_INGRESS_LABEL),
                        namespaces_with(INGRESS_NAMESPACE_LABEL),
                    ]
                    .into_iter()
                    .chain(monitoring())
                    .collect(),
                ),
                ports: Some(vec![tcp(PAYMENTS_PORT)]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    };
    let mut outbound = vec![tcp(443), tcp(6443)];
    outbound.extend(input.egress_ports.iter().map(|p| tcp(*p)));
    outbound.dedup();
    let egress = NetworkPolicy {
        metadata: meta(input, NETWORK_POLICIES[1]),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector()),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(vec![
                dns(input.routing == RoutingKind::Route),
                NetworkPolicyEgressRule {
                    to: None,
                    ports: Some(outbound),
                },
                NetworkPolicyEgressRule {
                    to: Some(vec![storefronts()]),
                    ports: Some(vec![port(HTTP_PORT, "TCP")]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    };
    vec![ingress, egress]
}

fn ingress(input: &ServiceInput) -> Ingress {
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: PAYMENTS_SERVICE.to_owned(),
            port: Some(ServiceBackendPort {
                name: Some("http".to_owned()),
                number: None,
            }),
        }),
        resource: None,
    };
    let mut metadata = meta(input, PAYMENTS_SERVICE);
    metadata.annotations = Some(BTreeMap::from([(
        "nginx.ingress.kubernetes.io/force-ssl-redirect".to_owned(),
        "true".to_owned(),
    )]));
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: input.ingress_class.clone(),
            rules: Some(vec![IngressRule {
                host: Some(input.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(WEBHOOK_PATH.to_owned()),
                        path_type: "Exact".to_owned(),
                        backend,
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}

/// A Route serves a path and everything below it; the service answers 404 below the webhook
/// path, so only `/webhooks/stripe` reaches a handler.
fn route(input: &ServiceInput) -> DynamicObject {
    let mut route =
        DynamicObject::new(PAYMENTS_SERVICE, &route_api_resource()).within(&input.namespace);
    route.data = serde_json::json!({
        "spec": {
            "host": input.host,
            "path": WEBHOOK_PATH,
            "to": { "kind": "Service", "name": PAYMENTS_SERVICE, "weight": 100 },
            "port": { "targetPort": "http" },
            "tls": { "termination": "edge", "insecureEdgeTerminationPolicy": "Redirect" },
            "wildcardPolicy": "None",
        }
    });
    route
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn input() -> ServiceInput {
        ServiceInput {
            namespace: "tiqzy-system".to_owned(),
            image: format!("quay.io/tiqzy/runtime@sha256:{}", "a".repeat(64)),
            host: "payments.apps.example.com".to_owned(),
            routing: RoutingKind::Ingress,
            ingress_class: Some("nginx".to_owned()),
            api_base: None,
            egress_ports: vec![5432],
            traces: None,
            secret: BTreeMap::from([
                ("STRIPE_SECRET_KEY".to_owned(), "sk_test_x".to_owned()),
                (DELIVERY_KEY.to_owned(), "ab".repeat(32)),
            ]),
        }
    }

    #[test]
    fn the_shipped_role_of_the_service_is_the_one_it_is_tested_with() {
        let read = |text: &str| -> serde_json::Value {
            serde_saphyr::from_str(text).expect("a ClusterRole")
        };
        let shipped = read(include_str!("../../../config/rbac/payments_role.yaml"));
        let tested = read(include_str!("../../../payments/deploy/cluster-role.yaml"));
        assert_eq!(shipped, tested);
        let binding = read(include_str!(
            "../../../config/rbac/payments_role_binding.yaml"
        ));
        assert_eq!(binding["roleRef"]["name"], shipped["metadata"]["name"]);
        assert_eq!(binding["subjects"][0]["name"], PAYMENTS_SERVICE);
    }

    #[test]
    fn the_service_runs_the_payments_binary_of_the_runtime_image_twice() {
        let built = payments_service(&input());
        let spec = built.deployment.spec.expect("spec");
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        assert_eq!(c.image, Some(input().image));
        assert_eq!(
            c.command.as_deref(),
            Some(&["tiqzy-payments".to_owned()][..])
        );
        assert_eq!(pod.service_account_name.as_deref(), Some("tiqzy-payments"));
        let path = |p: &Option<Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.clone())
                .and_then(|g| g.path)
        };
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
        assert_eq!(
            built.pdb.spec.expect("pdb").min_available,
            Some(IntOrString::Int(1))
        );
        let ports = built.service.spec.expect("svc").ports.expect("ports");
        assert_eq!(ports[0].port, 8080);
    }

    #[test]
    fn the_pod_passes_restricted_pod_security() {
        let pod = payments_service(&input())
            .deployment
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod");
        let sc = pod.containers[0].security_context.clone().expect("sc");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.expect("caps").drop,
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(sc.seccomp_profile.expect("seccomp").type_, "RuntimeDefault");
    }

    #[test]
    fn the_api_base_reaches_the_service_only_when_set() {
        let env = |input: &ServiceInput| {
            payments_service(input)
                .deployment
                .spec
                .expect("spec")
                .template
                .spec
                .expect("pod")
                .containers[0]
                .env
                .clone()
                .expect("env")
        };
        let has_base = |env: &[EnvVar]| env.iter().any(|e| e.name == "STRIPE_API_BASE");
        assert!(!has_base(&env(&input())));
        let mut staging = input();
        staging.api_base = Some("http://stripe-mock.staging:12111".to_owned());
        let env = env(&staging);
        assert!(has_base(&env));
        let delivery = env.iter().find(|e| e.name == "TIQZY_PAYMENTS_DELIVERY_URL");
        assert_eq!(
            delivery.and_then(|e| e.value.as_deref()),
            Some("http://storefront.tiqzy-{tenant}.svc/webhooks/stripe")
        );
    }

    #[test]
    fn a_new_stripe_key_rolls_the_pods() {
        let annotations = |input: &ServiceInput| {
            payments_service(input)
                .deployment
                .spec
                .expect("spec")
                .template
                .metadata
                .expect("meta")
                .annotations
                .expect("annotations")
        };
        let mut rotated = input();
        rotated
            .secret
            .insert("STRIPE_SECRET_KEY".to_owned(), "sk_test_y".to_owned());
        assert_ne!(annotations(&input()), annotations(&rotated));
    }

    #[test]
    fn only_the_webhook_path_is_exposed_on_the_payments_host() {
        let ServiceExposure::Ingress(ingress) = payments_service(&input()).exposure else {
            panic!("an Ingress expected")
        };
        let rules = ingress.spec.expect("spec").rules.expect("rules");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].host.as_deref(), Some("payments.apps.example.com"));
        let paths = &rules[0].http.as_ref().expect("http").paths;
        assert_eq!(paths.len(), 1);
        assert_eq!(
            (paths[0].path.as_deref(), paths[0].path_type.as_str()),
            (Some("/webhooks/stripe"), "Exact")
        );
        let mut openshift = input();
        openshift.routing = RoutingKind::Route;
        let ServiceExposure::Route(route) = payments_service(&openshift).exposure else {
            panic!("a Route expected")
        };
        assert_eq!(route.data["spec"]["path"], "/webhooks/stripe");
        assert_eq!(route.data["spec"]["host"], "payments.apps.example.com");
    }

    #[test]
    fn only_storefronts_the_router_and_prometheus_get_in_and_only_what_it_calls_gets_out() {
        let policies = payments_service(&input()).network_policies;
        let ingress = policies[0]
            .spec
            .clone()
            .expect("spec")
            .ingress
            .expect("rules");
        assert_eq!(ingress.len(), 1);
        let from = ingress[0].from.clone().expect("from");
        assert_eq!(from[0], storefronts());
        // Prometheus scrapes /metrics on the same port (config/prometheus/payments_monitor.yaml).
        for peer in monitoring() {
            assert!(from.contains(&peer), "{peer:?}");
        }
        assert_eq!(ingress[0].ports, Some(vec![tcp(8080)]));
        let egress = policies[1]
            .spec
            .clone()
            .expect("spec")
            .egress
            .expect("rules");
        let open: Vec<i32> = egress[1]
            .ports
            .iter()
            .flatten()
            .filter_map(|p| match p.port {
                Some(IntOrString::Int(n)) => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(open, vec![443, 6443, 5432]);
        assert_eq!(egress[2].to, Some(vec![storefronts()]));
        assert_eq!(egress[0], dns(false));
        // On OpenShift its DNS pods in openshift-dns are reachable too.
        let mut openshift = input();
        openshift.routing = RoutingKind::Route;
        let policies = payments_service(&openshift).network_policies;
        let egress = policies[1]
            .spec
            .clone()
            .expect("spec")
            .egress
            .expect("rules");
        let peers = egress[0].to.clone().unwrap_or_default();
        assert_eq!(peers.len(), 2);
        assert!(peers[1].pod_selector.as_ref().is_some_and(|p| {
            p.match_labels.as_ref().is_some_and(|l| {
                l.get("dns.operator.openshift.io/daemonset-dns") == Some(&"default".to_owned())
            })
        }));
    }
}
