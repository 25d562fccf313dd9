//! The OAuth2/OIDC issuer of staff tokens for the storefront's admin API: npm
//! `oauth2-mock-server` (installed once into the harness cache), issuing real RS256 tokens with
//! the claims a test asks for. On loopback for tests that run the runtime on the host, on a real
//! node's bridge gateway when pods must fetch its keys.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::process::Service;

const PACKAGE: &str = "oauth2-mock-server@8.2.3";
const SCRIPT: &str = include_str!("staff-issuer.mjs");

/// A running issuer. Stops when dropped.
#[derive(Debug)]
pub struct StaffIssuer {
    /// The issuer URL (`iss`), what a Tenant's `spec.staffAuth.issuer` names.
    pub url: String,
    /// With HTTPS: the PEM of the CA that signed its certificate, for the Platform's
    /// `caSecretRef`.
    pub ca_pem: Option<String>,
    http: reqwest::Client,
    _process: Service,
}

/// The script's name carries a hash of its text, so test runs of other checkouts with another
/// version of it never swap it.
fn script() -> Result<PathBuf> {
    let mut hasher = std::hash::DefaultHasher::new();
    SCRIPT.hash(&mut hasher);
    let name = format!("issuer-{:016x}.mjs", hasher.finish());
    Ok(crate::npm_package_with_script(PACKAGE, &name, SCRIPT)
        .context("installing the OAuth2 test issuer (npm, Node.js 20.19+)")?
        .join(name))
}

impl StaffIssuer {
    /// An issuer on 127.0.0.1, over plain HTTP.
    pub async fn start() -> Result<Self> {
        Self::spawn("127.0.0.1", None).await
    }

    /// An issuer serving HTTPS on `address`, port 443 (the one storefronts' egress policy
    /// opens), with a certificate from a CA made for it (files in `dir`), as a Tenant's
    /// `staffAuth.issuer` must be.
    pub async fn start_tls(address: &str, dir: &std::path::Path) -> Result<Self> {
        let ca = crate::pki::TestCa::new("Tiqzy staff issuer test CA")?;
        let (cert, key) = ca.issue(&[address])?;
        std::fs::create_dir_all(dir)?;
        let (cert_file, key_file) = (dir.join("issuer.crt"), dir.join("issuer.key"));
        std::fs::write(&cert_file, cert)?;
        std::fs::write(&key_file, key)?;
        Self::spawn(address, Some((key_file, cert_file, ca.pem))).await
    }

    async fn spawn(address: &str, tls: Option<(PathBuf, PathBuf, String)>) -> Result<Self> {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let script = tokio::task::spawn_blocking(script).await??;
        let mut args = vec![script.display().to_string(), address.to_owned()];
        let mut http = reqwest::Client::builder();
        let ca_pem = match tls {
            None => None,
            Some((key_file, cert_file, ca_pem)) => {
                args.extend([
                    key_file.display().to_string(),
                    cert_file.display().to_string(),
                    "443".to_owned(),
                ]);
                http =
                    http.add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?);
                Some(ca_pem)
            }
        };
        // Dies with the test binary (or `cargo xtask up`), also when started by a test whose
        // runtime ends first; named like the harness's runs, so a later run removes its logs.
        let logs = crate::target_dir().join(format!("e2e/run-{}-issuers", std::process::id()));
        std::fs::create_dir_all(&logs)?;
        let name = format!("staff-issuer-{}", STARTED.fetch_add(1, Ordering::Relaxed));
        let process = Service::spawn_long_lived(&name, Path::new("node"), args, &logs)?;
        let log = process.log_path().to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let url = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(url) = text
                .lines()
                .find_map(|line| line.strip_prefix("issuer ready at "))
            {
                break url.to_owned();
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "the OAuth2 issuer did not start within 30 s: {}",
                    process.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Self {
            url,
            ca_pem,
            http: http.build()?,
            _process: process,
        })
    }

    /// A client-credentials token with `fields` as the script reads them (`aud`, `scope`,
    /// `expires_in`, `sub`, `iss`, `claims` as JSON).
    pub async fn issue(&self, fields: &[(&str, String)]) -> Result<String> {
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        form.extend(fields.iter().cloned());
        let response: serde_json::Value = self
            .http
            .post(format!("{}/token", self.url))
            .form(&form)
            .send()
            .await?
            .json()
            .await?;
        response["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no token: {response}"))
    }

    /// Rotates the signing key once: a second key is published and signs from now on, and
    /// the first is withdrawn from the JWKS. Returns a token the withdrawn key signed.
    pub async fn rotate_keys(&self, audience: &str) -> Result<String> {
        self.issue(&[
            ("aud", audience.to_owned()),
            ("scope", "admin".to_owned()),
            ("rotate_keys", "true".to_owned()),
        ])
        .await
    }

    /// A token for a staff member allowed everything (`scope=admin`) in the admin API of the
    /// tenant whose `spec.staffAuth.audience` is `audience`, valid for `hours`.
    pub async fn admin_token(&self, audience: &str, hours: i64) -> Result<String> {
        self.issue(&[
            ("aud", audience.to_owned()),
            ("scope", "admin".to_owned()),
            ("expires_in", (hours * 3600).to_string()),
        ])
        .await
    }
}
