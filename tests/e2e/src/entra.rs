//! A Microsoft Entra ID token endpoint for the operator's Key Vault sign-in: npm
//! `oauth2-mock-server` (the same package and cache as the runtime's admin-API tests) serving
//! `/<tenant>/oauth2/v2.0/token`, started on a free loopback port.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};

const PACKAGE: &str = "oauth2-mock-server@8.2.3";
const SCRIPT: &str = include_str!("entra-issuer.mjs");

/// A running token endpoint. Stops when dropped.
#[derive(Debug)]
pub struct EntraIssuer {
    /// What `Platform.spec.keyVault.authorityHost` is set to.
    pub authority_host: String,
    pub tenant_id: String,
    _process: tokio::process::Child,
}

/// `npm install`s the package once per machine into the cache; a finished install is moved
/// into place atomically, so concurrent runs never see half of one.
fn install_dir() -> Result<PathBuf> {
    let dir = crate::cache_dir()
        .join("npm")
        .join(PACKAGE.replace('@', "-"));
    if !dir
        .join("node_modules/oauth2-mock-server/package.json")
        .exists()
    {
        let staging = dir.with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        let status = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&staging)
            .arg(PACKAGE)
            .status()
            .context("running npm (Node.js 20.19+ is needed for the Entra ID test issuer)")?;
        if !status.success() {
            bail!("npm install {PACKAGE} failed");
        }
        if std::fs::rename(&staging, &dir).is_err() {
            // Another run finished first; use theirs.
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    let staging = dir.join(format!("entra-issuer.mjs.{}", std::process::id()));
    std::fs::write(&staging, SCRIPT)?;
    std::fs::rename(&staging, dir.join("entra-issuer.mjs"))?;
    Ok(dir)
}

impl EntraIssuer {
    /// Starts the endpoint for directory `tenant_id`; it refuses `refused_client` with
    /// `401 invalid_client`.
    pub async fn start(tenant_id: &str, refused_client: &str) -> Result<Self> {
        let dir = tokio::task::spawn_blocking(install_dir).await??;
        let port = crate::free_port()?;
        let process = tokio::process::Command::new("node")
            .arg(dir.join("entra-issuer.mjs"))
            .args([&port.to_string(), tenant_id, refused_client])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the Entra ID test issuer")?;
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Self {
                    authority_host: format!("http://127.0.0.1:{port}"),
                    tenant_id: tenant_id.to_owned(),
                    _process: process,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("the Entra ID test issuer did not listen on port {port} within 10 s")
    }
}
