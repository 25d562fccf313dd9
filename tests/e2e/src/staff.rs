//! The OAuth2/OIDC issuer of staff tokens for the storefront's admin API: npm
//! `oauth2-mock-server` (installed once into the harness cache), issuing real RS256 tokens with
//! the claims a test asks for. On loopback for tests that run the runtime on the host, on a real
//! node's bridge gateway when pods must fetch its keys.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::io::{AsyncBufReadExt, BufReader};

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
    _process: tokio::process::Child,
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
        let script = tokio::task::spawn_blocking(script).await??;
        let mut command = tokio::process::Command::new("node");
        command.arg(&script).arg(address);
        let mut http = reqwest::Client::builder();
        let ca_pem = match tls {
            None => None,
            Some((key_file, cert_file, ca_pem)) => {
                command.arg(key_file).arg(cert_file).arg("443");
                http =
                    http.add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?);
                Some(ca_pem)
            }
        };
        let mut process = command
            .current_dir(script.parent().context("the install directory")?)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the OAuth2 issuer")?;
        let stdout = process.stdout.take().context("issuer stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the OAuth2 issuer did not come up within 30 s")??;
        let url = ready
            .as_deref()
            .and_then(|line| line.strip_prefix("issuer ready at "))
            .ok_or_else(|| anyhow!("the OAuth2 issuer did not start: {ready:?}"))?
            .to_owned();
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
