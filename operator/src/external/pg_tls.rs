//! TLS for the operator's own admin sessions, with libpq's `sslmode` meanings: `disable` sends
//! in the clear; `prefer` and `require` encrypt without checking who answers (as libpq does
//! without a root certificate); `verify-full` checks the chain against the public roots and the
//! host name, as managed servers (Azure Database for PostgreSQL, say) allow.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a session to a server with this `sslmode` is made; `None` for `disable`.
pub fn connector(ssl_mode: &str) -> Result<(SslMode, Option<MakeRustlsConnect>), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = || {
        ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()
    };
    Ok(match ssl_mode {
        "disable" => (SslMode::Disable, None),
        "verify-full" => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let config = builder()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            (SslMode::Require, Some(MakeRustlsConnect::new(config)))
        }
        mode => {
            let config = builder()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider.clone())))
                .with_no_client_auth();
            let mode = if mode == "prefer" {
                SslMode::Prefer
            } else {
                SslMode::Require
            };
            (mode, Some(MakeRustlsConnect::new(config)))
        }
    })
}

/// Accepts any certificate but still checks the handshake is signed by its key: encryption
/// against eavesdroppers, without an identity check (libpq's `require`).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
