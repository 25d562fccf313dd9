//! `tiqzy-runtime`: serves one tenant's storefront.

use std::process::ExitCode;

use tiqzy_runtime::{Application, config::Config, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tiqzy-runtime: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init();
    match Application::build(config).await {
        Ok(app) => match app.serve_until_shutdown().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "server failed");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "startup failed");
            ExitCode::FAILURE
        }
    }
}
