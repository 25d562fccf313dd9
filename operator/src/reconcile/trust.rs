//! The private certificate authorities storefronts trust (`Platform.spec.caSecretRef`), read
//! from the platform's Secret and handed to the pods in their ConfigMap.

use rustls_pki_types::pem::PemObject;
use tiqzy_crds::PlatformSpec;

use super::servers::secret_fields;
use crate::context::Context;

/// The PEM bundle the Platform names, `None` without one; the error names the Secret and the
/// key, never the content.
pub async fn trusted_cas(ctx: &Context, platform: &PlatformSpec) -> Result<Option<String>, String> {
    let Some(r) = &platform.ca_secret_ref else {
        return Ok(None);
    };
    let [pem] = secret_fields(ctx, r, ["ca.crt"]).await?;
    check(&pem).map_err(|why| format!("Secret {}/{} key \"ca.crt\" {why}", r.namespace, r.name))?;
    Ok(Some(pem))
}

/// A bundle holds at least one certificate and every certificate in it reads.
fn check(pem: &str) -> Result<(), &'static str> {
    let mut found = 0;
    for block in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let der = block.map_err(|_| "is not PEM")?;
        x509_parser::parse_x509_certificate(&der)
            .map_err(|_| "holds a certificate that does not read")?;
        found += 1;
    }
    if found == 0 {
        return Err("holds no PEM certificate");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_must_hold_readable_certificates() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".to_owned()])
            .expect("certificate")
            .cert
            .pem();
        assert_eq!(check(&ca), Ok(()));
        assert_eq!(check(&format!("{ca}{ca}")), Ok(()));
        assert_eq!(check(""), Err("holds no PEM certificate"));
        assert_eq!(check("ca.crt"), Err("holds no PEM certificate"));
        assert_eq!(
            check("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err("holds a certificate that does not read")
        );
    }
}
