//! `tiqzy-runtime`: serves one tenant's storefront.

use std::process::ExitCode;
use std::time::Duration;

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
    let format = std::env::var("TIQZY_LOG_FORMAT").ok();
    let (traces, reporter) = match telemetry::init(&config.tenant, format.as_deref())
        .and_then(|traces| Ok((traces, telemetry::reporter(&config.tenant)?)))
    {
        Ok(started) => started,
        Err(e) => {
            eprintln!("tiqzy-runtime: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match Application::build(config).await {
        Ok(app) => match app
            .reporting_to(reporter.clone())
            .serve_until_shutdown()
            .await
        {
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
    };
    reporter.flush(Duration::from_secs(2));
    if let Some(traces) = traces {
        traces.shutdown();
    }
    outcome
}
