//! Secrets the operator writes into the tenant's namespace: the ticket signing key, the
//! database and cache credentials, the secret the payments service signs its deliveries with. Their values come from the dereference step (existing
//! values are kept, new ones generated there), so building stays pure.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::{
    CACHE_SECRET, DATABASE_SECRET, MAIL_SECRET, PAYMENTS_SECRET, SENTRY_SECRET, SIGNING_SECRET,
    TLS_SECRET, meta,
};
use crate::tenant::{TlsSecret, ValidatedTenant};

/// Annotations on `storefront-tls` naming the Key Vault certificate and version it holds.
pub const CERTIFICATE_ANNOTATION: &str = "tiqzy.io/key-vault-certificate";
pub const VERSION_ANNOTATION: &str = "tiqzy.io/key-vault-version";

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
    if let Some(mail) = &tenant.secrets.mail {
        secrets.push(secret(tenant, MAIL_SECRET, mail));
    }
    if let Some(sentry) = &tenant.secrets.sentry {
        secrets.push(secret(tenant, SENTRY_SECRET, sentry));
    }
    if let Some(tls) = &tenant.secrets.tls {
        secrets.push(tls_secret(tenant, tls));
    }
    secrets
}

/// The `kubernetes.io/tls` Secret the Route or Ingress serves: the full chain and the key.
fn tls_secret(tenant: &ValidatedTenant, tls: &TlsSecret) -> Secret {
    let mut metadata = meta(tenant, TLS_SECRET);
    metadata.annotations = Some(BTreeMap::from([
        (CERTIFICATE_ANNOTATION.to_owned(), tls.source.clone()),
        (VERSION_ANNOTATION.to_owned(), tls.version.clone()),
    ]));
    Secret {
        metadata,
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_owned(),
                ByteString(tls.certificate.chain_pem.as_bytes().to_vec()),
            ),
            (
                "tls.key".to_owned(),
                ByteString(tls.certificate.key_pem.as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    }
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

    #[test]
    fn a_key_vault_certificate_becomes_a_tls_secret_naming_its_version() {
        let mut tenant = fixture::validated(&fixture::tenant("acme"));
        tenant.secrets.tls = Some(TlsSecret {
            certificate: crate::certificate::ServingCertificate {
                chain_pem: "LEAF\nCA\n".to_owned(),
                key_pem: "KEY\n".to_owned(),
                not_before: 0,
                not_after: 1,
                dns_names: vec![],
            },
            source: "acme-cert".to_owned(),
            version: "v2".to_owned(),
        });
        let tls = secrets(&tenant)
            .into_iter()
            .find(|s| s.metadata.name.as_deref() == Some(TLS_SECRET))
            .expect("tls secret");
        assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
        let data = tls.data.expect("data");
        assert_eq!(data["tls.crt"].0, b"LEAF\nCA\n");
        assert_eq!(data["tls.key"].0, b"KEY\n");
        let annotations = tls.metadata.annotations.expect("annotations");
        assert_eq!(annotations[VERSION_ANNOTATION], "v2");
        assert_eq!(annotations[CERTIFICATE_ANNOTATION], "acme-cert");
    }
}
