//! Serving certificates as Key Vault hands them out (PKCS#12 or PEM), and the checks before
//! one is served: the key belongs to the certificate, every host is covered, it is in its
//! validity. Pure.

use std::fmt;

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Content type of a PKCS#12 certificate secret in Key Vault.
pub const PKCS12: &str = "application/x-pkcs12";
/// Content type of a PEM certificate secret in Key Vault.
pub const PEM: &str = "application/x-pem-file";

/// Warn this long before a certificate expires.
pub const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);

/// A certificate with its private key, ready for a `kubernetes.io/tls` Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ServingCertificate {
    /// PEM: the leaf first, then the rest of the chain.
    pub chain_pem: String,
    /// PEM, PKCS#8 (or the form it came in, for PEM input).
    pub key_pem: String,
    /// Validity, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// DNS names of the leaf's subjectAltName.
    pub dns_names: Vec<String>,
}

impl fmt::Debug for ServingCertificate {
    // The key never reaches logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCertificate")
            .field("dns_names", &self.dns_names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Why a certificate cannot be served. Messages name the problem, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("{0}")]
    Invalid(String),
    #[error("the certificate does not cover {0} (it names {1})")]
    HostNotCovered(String, String),
    #[error("the certificate expired at {0}")]
    Expired(String),
}

impl ServingCertificate {
    /// Reads a Key Vault certificate secret: base64 PKCS#12 (empty password, as Key Vault
    /// exports it) or PEM with the key and the chain.
    pub fn from_key_vault(content_type: &str, value: &str) -> Result<Self, Unusable> {
        if content_type.eq_ignore_ascii_case(PKCS12) {
            let der = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .map_err(|_| invalid("the PKCS#12 secret is not base64"))?;
            Self::from_pkcs12(&der)
        } else {
            Self::from_pem(value.as_bytes(), value.as_bytes())
        }
    }

    /// A PKCS#12 archive protected with the empty password.
    pub fn from_pkcs12(der: &[u8]) -> Result<Self, Unusable> {
        let store =
            p12_keystore::KeyStore::from_pkcs12(der, "", p12_keystore::Pkcs12ImportPolicy::Relaxed)
                .map_err(|e| invalid(&format!("the PKCS#12 archive cannot be read: {e}")))?;
        let (_, chain) = store
            .private_key_chain()
            .ok_or_else(|| invalid("the PKCS#12 archive holds no private key"))?;
        let certs: Vec<CertificateDer<'static>> = chain
            .certs()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec()));
        let key_pem = pem("PRIVATE KEY", chain.key().as_der());
        assemble(certs, &key, key_pem)
    }

    /// PEM certificates from `certs` and a PEM private key from `key` (one file may hold both,
    /// as Key Vault's PEM secrets and `kubernetes.io/tls` Secrets' halves do).
    pub fn from_pem(certs: &[u8], key: &[u8]) -> Result<Self, Unusable> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(certs)
            .collect::<Result<_, _>>()
            .map_err(|_| invalid("the PEM certificates cannot be read"))?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|_| invalid("the PEM holds no readable private key"))?;
        let key_pem = pem(
            match &key {
                PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
                PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
                _ => "PRIVATE KEY",
            },
            key.secret_der(),
        );
        assemble(chain, &key, key_pem)
    }

    /// Whether it can be served for `hosts` at `now` (Unix seconds).
    pub fn check(&self, hosts: &[String], now: i64) -> Result<(), Unusable> {
        if now >= self.not_after {
            return Err(Unusable::Expired(rfc3339(self.not_after)));
        }
        if now < self.not_before {
            return Err(invalid(&format!(
                "the certificate is not valid before {}",
                rfc3339(self.not_before)
            )));
        }
        if let Some(host) = hosts.iter().find(|h| !covers(&self.dns_names, h)) {
            return Err(Unusable::HostNotCovered(
                host.clone(),
                if self.dns_names.is_empty() {
                    "no DNS names".to_owned()
                } else {
                    self.dns_names.join(", ")
                },
            ));
        }
        Ok(())
    }

    /// Whether it expires within [`EXPIRY_WARNING`] of `now`.
    pub fn expires_soon(&self, now: i64) -> bool {
        self.not_after - now < EXPIRY_WARNING.as_secs() as i64
    }
}

fn invalid(message: &str) -> Unusable {
    Unusable::Invalid(message.to_owned())
}

/// Orders the chain leaf first (the certificate whose public key is the key's) and reads it.
fn assemble(
    mut chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
    key_pem: String,
) -> Result<ServingCertificate, Unusable> {
    if chain.is_empty() {
        return Err(invalid("no certificate found next to the private key"));
    }
    let signing = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|_| invalid("the private key is of an unsupported type or damaged"))?;
    let public = signing
        .public_key()
        .ok_or_else(|| invalid("the private key's public half cannot be derived"))?;
    let mut leaf = None;
    for (i, der) in chain.iter().enumerate() {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|_| invalid("a certificate in the chain cannot be parsed"))?;
        if cert.tbs_certificate.subject_pki.raw == public.as_ref() {
            leaf = Some(i);
            break;
        }
    }
    let leaf = leaf.ok_or_else(|| invalid("the private key does not match the certificate"))?;
    let first = chain.remove(leaf);
    chain.insert(0, first);
    let (_, cert) = X509Certificate::from_der(&chain[0])
        .map_err(|_| invalid("the certificate cannot be parsed"))?;
    let dns_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let validity = cert.validity();
    Ok(ServingCertificate {
        chain_pem: chain.iter().map(|c| pem("CERTIFICATE", c)).collect(),
        key_pem,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        dns_names,
    })
}

/// Whether one of `names` covers `host`: exactly, or by a wildcard for one leftmost label.
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    names.iter().any(|name| match name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => *name == host,
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// RFC 3339 (UTC) of Unix seconds.
pub fn rfc3339(unix: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, CertifiedIssuer, DnType, KeyPair};

    const DAY: i64 = 24 * 3600;

    struct Issued {
        cert_pem: String,
        key_pem: String,
        key_der: Vec<u8>,
        cert_der: Vec<u8>,
        ca_pem: String,
        ca_der: Vec<u8>,
    }

    /// A CA-signed certificate for `names`, valid from `from` to `until` (Unix seconds).
    fn issued(names: &[&str], from: i64, until: i64) -> Issued {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Test CA");
        let ca =
            CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("ca key")).expect("ca");
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).expect("from");
        params.not_after = time::OffsetDateTime::from_unix_timestamp(until).expect("until");
        let cert = params.signed_by(&key, &ca).expect("leaf");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            cert_der: cert.der().to_vec(),
            ca_pem: ca.pem(),
            ca_der: ca.der().to_vec(),
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
    }

    fn pkcs12(issued: &Issued, leaf_der: &[u8]) -> Vec<u8> {
        let chain = p12_keystore::PrivateKeyChain::new(
            b"1".to_vec(),
            p12_keystore::PrivateKey::from_der(&issued.key_der).expect("pkcs8"),
            [
                p12_keystore::Certificate::from_der(leaf_der).expect("leaf"),
                p12_keystore::Certificate::from_der(&issued.ca_der).expect("ca"),
            ],
        );
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("tls", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        store.writer("").write().expect("pkcs12")
    }

    #[test]
    fn a_pem_secret_gives_the_leaf_first_and_the_key() {
        let now = now();
        let c = issued(&["shop.example"], now - DAY, now + 90 * DAY);
        // Key Vault's PEM secrets hold the key and the chain in one value, in any order.
        let value = format!("{}{}{}", c.key_pem, c.ca_pem, c.cert_pem);
        let served = ServingCertificate::from_key_vault(PEM, &value).expect("usable");
        assert!(served.chain_pem.starts_with(&c.cert_pem));
        assert!(served.chain_pem.ends_with(&c.ca_pem));
        assert!(served.key_pem.contains("BEGIN PRIVATE KEY"));
        assert_eq!(served.dns_names, vec!["shop.example"]);
        assert_eq!(served.not_after, now + 90 * DAY);
        assert_eq!(served.check(&["shop.example".to_owned()], now), Ok(()));
        assert!(
            !format!("{served:?}").contains("PRIVATE"),
            "no key in Debug"
        );
    }

    #[test]
    fn a_pkcs12_secret_with_the_empty_password_is_read() {
        let now = now();
        let c = issued(&["*.shop.example"], now - DAY, now + 90 * DAY);
        let value = base64::engine::general_purpose::STANDARD.encode(pkcs12(&c, &c.cert_der));
        let served = ServingCertificate::from_key_vault(PKCS12, &value).expect("usable");
        assert!(served.chain_pem.starts_with(&c.cert_pem));
        assert!(served.chain_pem.contains(&c.ca_pem));
        let key = PrivateKeyDer::from_pem_slice(served.key_pem.as_bytes()).expect("key pem");
        assert_eq!(key.secret_der(), c.key_der.as_slice());
        assert_eq!(
            served.check(&["tickets.shop.example".to_owned()], now),
            Ok(())
        );
    }

    #[test]
    fn garbage_and_foreign_keys_are_invalid() {
        let now = now();
        let c = issued(&["shop.example"], now - DAY, now + DAY);
        let other = issued(&["shop.example"], now - DAY, now + DAY);
        for (content_type, value) in [
            (PEM, "not a certificate".to_owned()),
            (PKCS12, "bm90IGEgcGtjczEy".to_owned()),
            (PKCS12, "%%%".to_owned()),
            (PEM, c.cert_pem.clone()),
            (PEM, format!("{}{}", other.key_pem, c.cert_pem)),
        ] {
            let result = ServingCertificate::from_key_vault(content_type, &value);
            assert!(
                matches!(result, Err(Unusable::Invalid(_))),
                "{content_type} {value:.20}: {result:?}"
            );
        }
        let mismatched =
            base64::engine::general_purpose::STANDARD.encode(pkcs12(&other, &c.cert_der));
        assert_eq!(
            ServingCertificate::from_key_vault(PKCS12, &mismatched),
            Err(Unusable::Invalid(
                "the private key does not match the certificate".into()
            ))
        );
    }

    #[test]
    fn every_host_must_be_covered() {
        let now = now();
        let c = issued(&["shop.example"], now - DAY, now + DAY);
        let served = ServingCertificate::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes())
            .expect("usable");
        let result = served.check(
            &["shop.example".to_owned(), "www.shop.example".to_owned()],
            now,
        );
        assert_eq!(
            result,
            Err(Unusable::HostNotCovered(
                "www.shop.example".into(),
                "shop.example".into()
            ))
        );
    }

    #[test]
    fn validity_is_checked_and_expiry_is_announced() {
        let now = now();
        let expired = issued(&["shop.example"], now - 10 * DAY, now - DAY);
        let served =
            ServingCertificate::from_pem(expired.cert_pem.as_bytes(), expired.key_pem.as_bytes())
                .expect("parsed");
        assert!(matches!(
            served.check(&["shop.example".to_owned()], now),
            Err(Unusable::Expired(_))
        ));
        let future = issued(&["shop.example"], now + DAY, now + 10 * DAY);
        let served =
            ServingCertificate::from_pem(future.cert_pem.as_bytes(), future.key_pem.as_bytes())
                .expect("parsed");
        assert!(matches!(
            served.check(&["shop.example".to_owned()], now),
            Err(Unusable::Invalid(_))
        ));
        assert!(served.expires_soon(now));
        let later = issued(&["shop.example"], now - DAY, now + 30 * DAY);
        let served =
            ServingCertificate::from_pem(later.cert_pem.as_bytes(), later.key_pem.as_bytes())
                .expect("parsed");
        assert!(!served.expires_soon(now));
        assert!(served.expires_soon(now + 17 * DAY));
    }

    #[test]
    fn wildcards_cover_one_label_only() {
        let names = vec!["*.acme.example".to_owned(), "acme.example".to_owned()];
        assert!(covers(&names, "tickets.acme.example"));
        assert!(covers(&names, "ACME.example"));
        assert!(!covers(&names, "a.b.acme.example"));
        assert!(!covers(&names, "acme.example.org"));
        assert!(!covers(&["*.acme.example".to_owned()], "acme.example"));
    }
}
