//! A Microsoft Entra ID token endpoint for the operator's Key Vault sign-in: npm
//! `oauth2-mock-server` (the same package and cache as the runtime's admin-API tests) serving
//! `/<tenant>/oauth2/v2.0/token`, started on a free loopback port. Its keys are at
//! `<authority_host>/jwks`.

use std::time::Duration;

use anyhow::Result;

use crate::process::Service;

const PACKAGE: &str = "oauth2-mock-server@8.2.3";
const SCRIPT: &str = include_str!("entra-issuer.mjs");

/// A running token endpoint. Stops when dropped.
#[derive(Debug)]
pub struct EntraIssuer {
    /// What `Platform.spec.keyVault.authorityHost` is set to.
    pub authority_host: String,
    pub tenant_id: String,
    _process: Service,
}

impl EntraIssuer {
    /// Starts the endpoint for directory `tenant_id`; it refuses `refused_client` with
    /// `401 invalid_client`.
    pub async fn start(tenant_id: &str, refused_client: &str) -> Result<Self> {
        let script = script_name();
        let dir = {
            let script = script.clone();
            tokio::task::spawn_blocking(move || {
                crate::npm_package_with_script(PACKAGE, &script, SCRIPT)
            })
            .await??
        };
        let port = crate::free_port()?;
        // A process that dies with the test binary, also when a test keeps the issuer for
        // the binary's lifetime.
        // Named like the harness's runs, so a later run removes it.
        let logs = crate::target_dir().join(format!("e2e/run-{}-entra", std::process::id()));
        std::fs::create_dir_all(&logs)?;
        let mut process = Service::spawn_long_lived(
            &format!("entra-issuer-{port}"),
            std::path::Path::new("node"),
            vec![
                dir.join(&script).display().to_string(),
                port.to_string(),
                tenant_id.to_owned(),
                refused_client.to_owned(),
            ],
            &logs,
        )?;
        process
            .wait_ready(Duration::from_secs(10), || crate::ports::accepting(port))
            .await?;
        Ok(Self {
            authority_host: format!("http://127.0.0.1:{port}"),
            tenant_id: tenant_id.to_owned(),
            _process: process,
        })
    }
}

/// The script's file name carries a hash of its text, so checkouts with another version of
/// it never swap it under each other's running issuers.
fn script_name() -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    SCRIPT.hash(&mut hasher);
    format!("entra-issuer-{:016x}.mjs", hasher.finish())
}
