//! Host ownership between tenants: the first Tenant to claim a host keeps it.

use kube::ResourceExt;
use tiqzy_crds::Tenant;

use crate::names;

/// The name of an older Tenant already claiming one of `hosts`, if any.
pub fn conflict(
    tenant: &Tenant,
    hosts: &[String],
    others: &[&Tenant],
    base_domain: &str,
) -> Option<String> {
    let mine = (tenant.creation_timestamp(), tenant.name_any());
    others
        .iter()
        .filter(|other| other.name_any() != mine.1 && other.metadata.deletion_timestamp.is_none())
        .filter(|other| (other.creation_timestamp(), other.name_any()) < mine)
        .find(|other| {
            let claimed = names::hosts(&other.name_any(), &other.spec.hosts, base_domain);
            claimed.iter().any(|h| hosts.contains(h))
        })
        .map(|other| other.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(mut t: Tenant, second: i64, hosts: &[&str]) -> Tenant {
        t.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(second).expect("time"),
        ));
        t.spec.hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
        t
    }

    #[test]
    fn the_older_tenant_keeps_its_host() {
        let first = at(fixture::tenant("first"), 10, &["shared.example.com"]);
        let second = at(
            fixture::tenant("second"),
            20,
            &["shared.example.com", "b.example.com"],
        );
        let hosts = second.spec.hosts.clone();
        let all = vec![&first, &second];
        assert_eq!(
            conflict(&second, &hosts, &all, "apps.example.com"),
            Some("first".to_owned())
        );
        assert_eq!(
            conflict(&first, &first.spec.hosts, &all, "apps.example.com"),
            None
        );
    }
}
