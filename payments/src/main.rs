//! `tiqzy-payments`: parse config, start logging, build the service, serve. The operator's
//! tools on the outbox are subcommands of the same binary, so they run in a replica's
//! container with its database and its ServiceAccount.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "tiqzy-payments", about = "The Tiqzy payments service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Send events again: a delivery a storefront rejected (422), or an event that had no
    /// tenant (placed as the endpoint would place it now). Idempotent; prints what it did.
    Replay {
        /// One event, whatever became of it.
        #[arg(long, conflicts_with_all = ["rejected", "unroutable"], required_unless_present_any = ["rejected", "unroutable"])]
        event: Option<String>,
        /// The deliveries storefronts rejected.
        #[arg(long, conflicts_with = "unroutable")]
        rejected: bool,
        /// The events that had no tenant.
        #[arg(long)]
        unroutable: bool,
        /// Only this tenant's (its name, or its namespace `tiqzy-<name>`).
        #[arg(long, conflicts_with = "event")]
        tenant: Option<String>,
    },
    /// What waits in the outbox: pending, set-aside and rejected deliveries by tenant, and
    /// unroutable events by reason.
    Outbox,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The log format every Tiqzy binary shares (docs/logs-and-errors.md), on stderr: the
    // tools' reports are stdout.
    let format = std::env::var("TIQZY_LOG_FORMAT").ok();
    // Traces go to the collector OTEL_EXPORTER_OTLP_ENDPOINT names, when it is set.
    let traces = tiqzy_telemetry::otel::Tracing::from_env("tiqzy-payments", &[])
        .map_err(anyhow::Error::msg)?;
    tiqzy_telemetry::logs::init(tiqzy_telemetry::logs::Settings {
        format: tiqzy_telemetry::logs::Format::choose(format.as_deref())
            .map_err(anyhow::Error::msg)?,
        default_filter: "info",
        tenant: None,
        traces: traces.clone(),
    });
    let config = tiqzy_payments::Config::from_env()?;
    // Panics and 500s go to Sentry when SENTRY_DSN is set.
    let errors = tiqzy_telemetry::Reporter::from_settings(
        "tiqzy-payments",
        &tiqzy_telemetry::errors::Settings::from_env(),
    )
    .map_err(anyhow::Error::msg)?;
    errors.report_panics_of_process(tiqzy_telemetry::Where::default());
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let kube = kube::Client::try_default().await?;
            let app = tiqzy_payments::Application::build(&config, kube)
                .await?
                .reporting_to(errors.clone());
            tracing::info!(port = app.port(), "tiqzy-payments serving");
            app.serve().await?;
        }
        Command::Replay {
            event,
            rejected,
            unroutable,
            tenant,
        } => {
            let kube = kube::Client::try_default().await?;
            let tools = tiqzy_payments::tools::Tools::connect(&config, kube).await?;
            let selection = tools.selection(event, rejected, unroutable, tenant.as_deref());
            let replayed = tools.replay(&selection).await?;
            print!("{}", replayed.report);
            if !replayed.found {
                std::process::exit(1);
            }
        }
        Command::Outbox => {
            let db = tiqzy_payments::tools::connect(&config).await?;
            print!("{}", tiqzy_payments::replay::summary(&db).await?);
        }
    }
    errors.flush(std::time::Duration::from_secs(2));
    if let Some(traces) = traces {
        traces.shutdown();
    }
    Ok(())
}
