//! `tiqzy-payments`: parse config, start logging, build the service, serve.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = tiqzy_payments::Config::from_env()?;
    let kube = kube::Client::try_default().await?;
    let app = tiqzy_payments::Application::build(&config, kube).await?;
    tracing::info!(port = app.port(), "tiqzy-payments serving");
    app.serve().await?;
    Ok(())
}
