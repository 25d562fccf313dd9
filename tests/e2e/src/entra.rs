//! A Microsoft Entra ID token endpoint for the operator's Key Vault sign-in: npm
//! `oauth2-mock-server` (the same package and cache as the runtime's admin-API tests) serving
//! `/<tenant>/oauth2/v2.0/token`, started on a free loopback port.

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

impl EntraIssuer {
    /// Starts the endpoint for directory `tenant_id`; it refuses `refused_client` with
    /// `401 invalid_client`.
    pub async fn start(tenant_id: &str, refused_client: &str) -> Result<Self> {
        let dir = tokio::task::spawn_blocking(|| {
            crate::npm_package_with_script(PACKAGE, "entra-issuer.mjs", SCRIPT)
        })
        .await??;
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
