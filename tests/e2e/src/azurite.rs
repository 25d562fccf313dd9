//! Azure Blob Storage for the backup tests: npm `azurite` (Microsoft's own emulator of the
//! Blob service), its blob server started on a free loopback port with its data in a run
//! directory. It serves the emulator's well-known account over plain HTTP, path-style:
//! `http://127.0.0.1:<port>/devstoreaccount1/<container>/<blob>`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::Service;

const PACKAGE: &str = "azurite@3.37.0";

/// The emulator's account: the same for every azurite, published with it.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// The account's shared key: public, the emulator's documented default.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running blob emulator. Stops when dropped; [`Azurite::stop`] and [`Azurite::resume`]
/// make an outage on the same port with the same data.
#[derive(Debug)]
pub struct Azurite {
    pub port: u16,
    dir: PathBuf,
    program: PathBuf,
    process: Option<Service>,
}

impl Azurite {
    /// The emulator shared by every test of this test binary, started on first use.
    pub fn shared() -> &'static Azurite {
        static SHARED: OnceLock<Result<Azurite, String>> = OnceLock::new();
        crate::once_per_binary(&SHARED, "starting azurite", || async {
            Azurite::start(&crate::new_run_dir()?).await
        })
    }

    /// Installs azurite if needed and starts its blob server on a free loopback port,
    /// keeping its blobs under `dir`.
    pub async fn start(dir: &Path) -> Result<Self> {
        let package = tokio::task::spawn_blocking(|| crate::npm::npm_package(PACKAGE))
            .await
            .context("installing azurite")??;
        let mut azurite = Self {
            port: crate::free_port()?,
            dir: dir.join("azurite"),
            program: package.join("node_modules/.bin/azurite-blob"),
            process: None,
        };
        std::fs::create_dir_all(&azurite.dir)?;
        azurite.resume().await?;
        Ok(azurite)
    }

    /// The account's blob endpoint, as a storage account URL is written.
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    /// Stops the server (its blobs stay on disk).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts the server again on the same port with the same blobs.
    pub async fn resume(&mut self) -> Result<()> {
        self.stop();
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let mut process = Service::spawn_long_lived(
            &format!("azurite-{}", self.port),
            &self.program,
            vec![
                "--blobHost".into(),
                "127.0.0.1".into(),
                "--blobPort".into(),
                self.port.to_string(),
                "--location".into(),
                self.dir.join("data").display().to_string(),
                // Newer SDKs send API versions this release does not know yet.
                "--skipApiVersionCheck".into(),
                "--disableTelemetry".into(),
                "--disableProductStyleUrl".into(),
            ],
            &logs,
        )?;
        let port = self.port;
        process
            .wait_ready(Duration::from_secs(30), || crate::ports::accepting(port))
            .await?;
        self.process = Some(process);
        Ok(())
    }
}
