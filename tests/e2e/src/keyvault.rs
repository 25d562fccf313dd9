//! Azure Key Vault for the tests: `tests/e2e/go/keyvault`, the Azure SDK for Go's Key Vault
//! server fakes behind HTTPS (no emulator can be installed here). It challenges like the
//! service, accepts tokens of an [`EntraIssuer`], and serves certificates from files that
//! [`VaultCertificates`] writes.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::entra::EntraIssuer;
use crate::ports::{accepting, free_port};
use crate::process::Service;

/// The vault's name: a Key Vault host, so the operator's check that a vault asks for tokens
/// of its own service holds unchanged. It resolves to [`KeyVaultServer::address`].
pub const VAULT_HOST: &str = "tiqzy-test.vault.azure.net";

/// A running vault. Stops when dropped (and with the test binary).
#[derive(Debug)]
pub struct KeyVaultServer {
    /// `https://tiqzy-test.vault.azure.net:<port>`: `Platform.spec.keyVault.vaultUrl`.
    pub url: String,
    /// What [`VAULT_HOST`] must resolve to (the operator's `--key-vault-resolve`).
    pub address: IpAddr,
    /// PEM of the CA that signed the server's certificate (the operator's `--extra-ca-file`).
    pub ca_path: PathBuf,
    pub certificates: VaultCertificates,
    service: Service,
}

impl KeyVaultServer {
    /// Builds the server if needed (cached like the other Go components) and starts it in
    /// `run`, trusting tokens of `issuer`.
    pub async fn start(run: &Path, issuer: &EntraIssuer) -> Result<Self> {
        let binary = tokio::task::spawn_blocking(crate::components::ensure_keyvault)
            .await
            .context("building the Key Vault test server")??;
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let dir = run.join(format!(
            "keyvault-{}",
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let store = dir.join("certificates");
        std::fs::create_dir_all(&store)?;
        let ca_path = dir.join("ca.pem");
        let port = free_port()?;
        let mut service = Service::spawn_long_lived(
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("keyvault"),
            &binary,
            vec![
                format!("-addr=127.0.0.1:{port}"),
                format!("-dir={}", store.display()),
                format!("-ca-out={}", ca_path.display()),
                format!("-san={VAULT_HOST}"),
                format!("-jwks={}/jwks", issuer.authority_host),
                format!("-authority={}/{}", issuer.authority_host, issuer.tenant_id),
            ],
            &run.join("logs"),
        )?;
        service
            .wait_ready(Duration::from_secs(20), || async {
                accepting(port).await?;
                anyhow::ensure!(ca_path.exists(), "{} not written yet", ca_path.display());
                Ok(())
            })
            .await?;
        Ok(Self {
            url: format!("https://{VAULT_HOST}:{port}"),
            address: IpAddr::from([127, 0, 0, 1]),
            ca_path,
            certificates: VaultCertificates { dir: store },
            service,
        })
    }

    /// The operator flags that make it reach and trust this vault.
    pub fn operator_args(&self) -> Vec<String> {
        vec![
            format!("--extra-ca-file={}", self.ca_path.display()),
            format!("--key-vault-resolve={VAULT_HOST}={}", self.address),
        ]
    }

    pub fn log_path(&self) -> &Path {
        self.service.log_path()
    }
}

/// The vault's certificates: each a file the server reads on every request, replaced
/// atomically, so a put is a rotation to a new version.
#[derive(Debug, Clone)]
pub struct VaultCertificates {
    dir: PathBuf,
}

impl VaultCertificates {
    /// Makes `pem` (certificates, leaf first, and the private key) the current version of
    /// `name`, as Key Vault serves `application/x-pem-file` certificates.
    pub fn put_pem(&self, name: &str, pem: &str) -> Result<()> {
        self.replace(name, "pem", pem.as_bytes())
    }

    /// Makes `pfx` (PKCS#12 with an empty password) the current version of `name`, as Key
    /// Vault serves `application/x-pkcs12` certificates.
    pub fn put_pkcs12(&self, name: &str, pfx: &[u8]) -> Result<()> {
        self.replace(name, "pfx", pfx)
    }

    /// Deletes `name` (its earlier versions stay readable by version).
    pub fn remove(&self, name: &str) -> Result<()> {
        for ext in ["pem", "pfx"] {
            match std::fs::remove_file(self.dir.join(format!("{name}.{ext}"))) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether reading `name` answers 403 Forbidden, as without an access policy or role.
    pub fn deny(&self, name: &str, denied: bool) -> Result<()> {
        let path = self.dir.join(".deny");
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        let mut names: Vec<&str> = current.lines().filter(|n| *n != name).collect();
        if denied {
            names.push(name);
        }
        write_atomically(&path, names.join("\n").as_bytes())
    }

    fn replace(&self, name: &str, ext: &str, content: &[u8]) -> Result<()> {
        write_atomically(&self.dir.join(format!("{name}.{ext}")), content)?;
        let other = if ext == "pem" { "pfx" } else { "pem" };
        match std::fs::remove_file(self.dir.join(format!("{name}.{other}"))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Writes a sibling file and renames it over `path`: readers see the old or the new content.
fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))
}
