//! Certificates and keys for one run: a CA, the API server's serving certificate, the
//! service-account signing key, and random tokens.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// Files written under `<run>/pki`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_pem: String,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
}

impl Pki {
    /// A fresh CA and a serving certificate for the API server's loopback names, and for
    /// `address` when given (where a real node's pods reach the API server).
    pub fn create(dir: &Path, address: Option<&str>) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tiqzy-e2e-ca");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate()?;
        let mut names = vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
            "10.96.0.1".to_owned(),
        ];
        names.extend(address.map(str::to_owned));
        let mut server = CertificateParams::new(names)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let server_pem = server.signed_by(&server_key, &issuer)?.pem();

        let sa_key = KeyPair::generate()?;

        let pki = Self {
            ca_cert: dir.join("ca.crt"),
            ca_pem,
            server_cert: dir.join("apiserver.crt"),
            server_key: dir.join("apiserver.key"),
            service_account_key: dir.join("sa.key"),
            service_account_pub: dir.join("sa.pub"),
        };
        std::fs::write(&pki.ca_cert, &pki.ca_pem)?;
        std::fs::write(&pki.server_cert, server_pem)?;
        std::fs::write(&pki.server_key, server_key.serialize_pem())?;
        std::fs::write(&pki.service_account_key, sa_key.serialize_pem())?;
        std::fs::write(&pki.service_account_pub, sa_key.public_key_pem())?;
        Ok(pki)
    }
}

/// A throwaway CA of its own for a server the tests reach over TLS (Redis), so that another
/// run CA (the API server's) is a real CA that did not sign it.
pub struct TestCa {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").field("pem", &self.pem).finish()
    }
}

impl TestCa {
    pub fn new(name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = ca.self_signed(&key)?.pem();
        Ok(Self {
            pem,
            issuer: Issuer::new(ca, key),
        })
    }

    /// A serving certificate and its key (both PEM) for `names`, DNS names or IP addresses.
    pub fn issue(&self, names: &[&str]) -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A random token or password of `len` alphanumeric characters.
pub fn random_secret(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    getrandom(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("reading /dev/urandom");
}
