//! stripe-mock: Stripe's own API simulator, validating requests against Stripe's OpenAPI
//! description and answering with fixtures.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::components::Binaries;
use crate::ports::{accepting_on, free_port};
use crate::process::Service;

#[derive(Debug)]
pub struct StripeMock {
    /// `http://<address>:<port>`: give it to async-stripe's `ClientBuilder::url`.
    pub url: String,
    service: Service,
}

impl StripeMock {
    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        self.service.log_path()
    }

    /// Starts stripe-mock on `address` (loopback, or a real node's bridge gateway so its
    /// pods reach it too).
    pub async fn start(bins: &Binaries, run: &Path, address: &str) -> Result<Self> {
        let port = free_port()?;
        let mut service = Service::spawn(
            "stripe-mock",
            &bins.stripe_mock,
            // Both listeners on free ports: left alone, HTTPS takes the fixed 12112 and two
            // platforms on one machine collide.
            [
                format!("-http-addr={address}:{port}"),
                format!("-https-addr={address}:{}", free_port()?),
            ],
            &run.join("logs"),
            None,
        )?;
        service
            .wait_ready(Duration::from_secs(30), || accepting_on(address, port))
            .await?;
        Ok(Self {
            url: format!("http://{address}:{port}"),
            service,
        })
    }
}
