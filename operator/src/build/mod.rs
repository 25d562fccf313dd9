//! Pure builders: from a validated tenant to the full set of objects it should have. No
//! client, no async; each child object has its own module and unit tests.

mod config_map;
mod deployment;
mod hpa;
mod namespace;
mod network_policy;
pub mod payments_service;
mod pdb;
mod routing;
mod secrets;
mod service;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::tenant::ValidatedTenant;
pub use routing::{ROUTER_ACCESS, Route, RouterAccess, route_api_resource};
pub use secrets::{CERTIFICATE_ANNOTATION, VERSION_ANNOTATION};

/// Name shared by the storefront's Deployment, Service, HPA, PDB, ServiceAccount, ConfigMap.
pub const STOREFRONT: &str = "storefront";
/// Port the runtime listens on inside the pod.
pub const HTTP_PORT: i32 = 8080;
/// The storefront's `/metrics` port: never behind the Route or Ingress.
pub const METRICS_PORT: i32 = 9090;
pub const SIGNING_SECRET: &str = "storefront-signing";
pub const DATABASE_SECRET: &str = "storefront-database";
pub const CACHE_SECRET: &str = "storefront-cache";
/// The storefront's secret for the payments service: only the per-tenant delivery secret.
pub const PAYMENTS_SECRET: &str = "storefront-payments";
pub const TLS_SECRET: &str = "storefront-tls";
/// The SMTP relay's credentials, copied from the Platform's Secret.
pub const MAIL_SECRET: &str = "storefront-mail";
/// The Sentry DSN (`SENTRY_DSN`), copied from the Platform's Secret.
pub const SENTRY_SECRET: &str = "storefront-sentry";

/// How the storefront is exposed.
#[derive(Debug, Clone, PartialEq)]
pub enum Exposure {
    /// The Routes, and the router's grant to read their TLS Secret (when they name one).
    Route(Route, Option<Box<RouterAccess>>),
    Ingress(Box<Ingress>),
}

/// Every object a tenant should have, in three groups applied in this order: the namespace
/// and credentials (the external stores are converged once these exist), the workload, and
/// the exposure. Adding a kind means adding a field to a group, and the apply step's
/// destructuring then refuses to compile until it is applied and pruned.
#[derive(Debug, Clone)]
pub struct Desired {
    pub credentials: Credentials,
    pub workload: Workload,
    pub exposure: Exposure,
}

/// The namespace and the Secrets in it.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub namespace: Namespace,
    pub secrets: Vec<Secret>,
}

/// What runs the storefront and guards it.
#[derive(Debug, Clone)]
pub struct Workload {
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub hpa: Option<HorizontalPodAutoscaler>,
    pub pdb: PodDisruptionBudget,
    pub network_policies: Vec<NetworkPolicy>,
}

/// Builds the desired objects of `tenant`.
pub fn desired(tenant: &ValidatedTenant) -> Desired {
    Desired {
        credentials: Credentials {
            namespace: namespace::namespace(tenant),
            secrets: secrets::secrets(tenant),
        },
        workload: Workload {
            service_account: service::service_account(tenant),
            config_map: config_map::config_map(tenant),
            deployment: deployment::deployment(tenant),
            service: service::service(tenant),
            hpa: hpa::hpa(tenant),
            pdb: pdb::pdb(tenant),
            network_policies: network_policy::network_policies(tenant),
        },
        exposure: routing::exposure(tenant),
    }
}

/// Labels on every object of a tenant.
pub fn labels(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "tiqzy-storefront".to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), tenant.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "tiqzy-operator".to_owned(),
        ),
        ("app.kubernetes.io/part-of".to_owned(), "tiqzy".to_owned()),
        (TENANT_LABEL.to_owned(), tenant.to_owned()),
    ])
}

/// Label naming the owning tenant; the operator finds a tenant's objects by it.
pub const TENANT_LABEL: &str = "tiqzy.io/tenant";

/// The label selector of the storefront's pods.
pub fn selector(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "tiqzy-storefront".to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), tenant.to_owned()),
    ])
}

/// Metadata of an object in the tenant's namespace (owner reference and labels are added by
/// the applier).
fn meta(tenant: &ValidatedTenant, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(tenant.namespace.clone()),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    use tiqzy_crds::{Currency, Tenant, TenantSpec};

    use crate::reconcile::validate;
    use crate::tenant::{PlatformView, ValidatedTenant};

    pub fn tenant(name: &str) -> Tenant {
        let spec: TenantSpec = serde_json::from_value(serde_json::json!({
            "displayName": "Acme Arena",
            "currency": Currency::EUR,
            "branding": { "primaryColor": "#112233", "supportEmail": "help@acme.example" },
        }))
        .expect("spec");
        let mut tenant = Tenant::new(name, spec);
        tenant.metadata.uid = Some("uid-1".to_owned());
        tenant.metadata.generation = Some(1);
        tenant
    }

    pub fn platform() -> PlatformView {
        PlatformView::for_tests()
    }

    pub fn validated(tenant: &Tenant) -> ValidatedTenant {
        validate(tenant, &platform()).expect("valid")
    }
}
