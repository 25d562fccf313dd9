//! Logs in the format every Tiqzy binary shares (`tiqzy_telemetry::logs`, fields in
//! docs/logs-and-errors.md), each line naming this runtime's tenant; traces to the platform's
//! collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; error reports to Sentry when
//! `SENTRY_DSN` is set.

use tiqzy_telemetry::errors::Settings;
use tiqzy_telemetry::logs::{self, Format};
use tiqzy_telemetry::otel::Tracing;
use tiqzy_telemetry::{Reporter, Where};

/// Starts logging, and tracing when the OpenTelemetry variables ask for it (the returned
/// exporter is shut down on exit so the last spans leave); `TIQZY_LOG_FORMAT` is `json`,
/// `text`, or unset (JSON unless stderr is a terminal).
pub fn init(tenant: &str, format: Option<&str>) -> Result<Option<Tracing>, String> {
    let traces = Tracing::from_env(
        crate::startup::SERVICE,
        &[("tiqzy.tenant", tenant.to_owned())],
    )?;
    logs::init(logs::Settings {
        format: Format::choose(format)?,
        default_filter: "info,sqlx=warn,tower_http=info",
        tenant: Some(tenant.to_owned()),
        traces: traces.clone(),
    });
    Ok(traces)
}

/// The reporter `SENTRY_DSN` asks for (off without it). Panics outside a request are
/// reported through it too, and every panic is logged as a JSON line.
pub fn reporter(tenant: &str) -> Result<Reporter, String> {
    let reporter = Reporter::from_settings(crate::startup::SERVICE, &Settings::from_env())?;
    reporter.report_panics_of_process(Where::tenant(tenant));
    Ok(reporter)
}
