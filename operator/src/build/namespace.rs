//! The tenant's namespace, enforcing Pod Security "restricted".

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::tenant::ValidatedTenant;

pub fn namespace(tenant: &ValidatedTenant) -> Namespace {
    let labels = [
        ("pod-security.kubernetes.io/enforce", "restricted"),
        ("pod-security.kubernetes.io/enforce-version", "latest"),
        ("pod-security.kubernetes.io/audit", "restricted"),
        ("pod-security.kubernetes.io/warn", "restricted"),
    ];
    Namespace {
        metadata: ObjectMeta {
            name: Some(tenant.namespace.clone()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    #[test]
    fn the_namespace_enforces_restricted_pod_security() {
        let ns = namespace(&fixture::validated(&fixture::tenant("acme")));
        assert_eq!(ns.metadata.name.as_deref(), Some("tiqzy-acme"));
        let labels = ns.metadata.labels.expect("labels");
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    }
}
