//! Secrets the operator writes into the tenant's namespace: the ticket signing key, the
//! database and cache credentials, the platform's Stripe keys. Their values come from the dereference step (existing
//! values are kept, new ones generated there), so building stays pure.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::{CACHE_SECRET, DATABASE_SECRET, PAYMENTS_SECRET, SIGNING_SECRET, meta};
use crate::reconcile::ValidatedTenant;

pub fn secrets(tenant: &ValidatedTenant) -> Vec<Secret> {
    let mut secrets = vec![secret(tenant, SIGNING_SECRET, &tenant.secrets.signing)];
    if let Some(database) = &tenant.secrets.database {
        secrets.push(secret(tenant, DATABASE_SECRET, database));
    }
    if let Some(cache) = &tenant.secrets.cache {
        secrets.push(secret(tenant, CACHE_SECRET, cache));
    }
    if let Some(payments) = &tenant.secrets.payments {
        secrets.push(secret(tenant, PAYMENTS_SECRET, payments));
    }
    secrets
}

fn secret(tenant: &ValidatedTenant, name: &str, data: &BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: meta(tenant, name),
        type_: Some("Opaque".to_owned()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    #[test]
    fn the_signing_key_is_always_there_and_stores_only_when_provisioned() {
        let tenant = fixture::validated(&fixture::tenant("acme"));
        let names: Vec<_> = secrets(&tenant)
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        assert_eq!(names, vec![SIGNING_SECRET]);
    }
}
