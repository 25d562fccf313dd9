//! The storefront's Service and ServiceAccount.

use k8s_openapi::api::core::v1::{Service, ServiceAccount, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{STOREFRONT, meta, selector};
use crate::tenant::ValidatedTenant;

pub fn service(tenant: &ValidatedTenant) -> Service {
    Service {
        metadata: meta(tenant, STOREFRONT),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector(&tenant.name)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: 80,
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub fn service_account(tenant: &ValidatedTenant) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(tenant, STOREFRONT),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    #[test]
    fn the_service_selects_the_storefront_pods() {
        let svc = service(&fixture::validated(&fixture::tenant("acme")));
        let selector = svc.spec.expect("spec").selector.expect("selector");
        assert_eq!(selector["app.kubernetes.io/instance"], "acme");
    }
}
