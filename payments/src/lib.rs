//! `tiqzy-payments`: the platform's only Stripe client. Storefronts call it with their pod's
//! ServiceAccount token; it acts for a tenant only on that tenant's own connected account
//! and sessions.

pub mod backoff;
pub mod budget;
pub mod caller;
pub mod checkout;
pub mod config;
pub mod http;
pub mod idempotency;
pub mod metrics;
pub mod outbox;
pub mod refunds;
pub mod registry;
pub mod replay;
pub mod sellers;
pub mod sessions;
pub mod state;
pub mod stripe;
pub mod tools;
pub mod transfers;
pub mod webhook;

use secrecy::ExposeSecret;

pub use config::Config;
pub use state::AppState;

/// The migrations, run at start (sqlx takes an advisory lock, so replicas start together).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The service, bound and ready to serve. Tests start it on port 0.
#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    router: axum::Router,
}

impl Application {
    /// Connects to the database (and migrates it), starts the Tenant watch, binds the port.
    pub async fn build(config: &Config, kube: kube::Client) -> anyhow::Result<Self> {
        let db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .connect(config.database_url.expose_secret())
            .await
            .map_err(|e| anyhow::anyhow!("connecting to DATABASE_URL: {e}"))?;
        MIGRATOR.run(&db).await?;
        let mut webhooks = webhook::Webhooks::new(config);
        if let Some(outbox) = outbox::Outbox::new(&db, &config.webhooks, &webhooks) {
            outbox.start()?;
        }
        let registry = registry::Registry::start(kube.clone()).await?;
        webhooks.start_recording(&db, &registry);
        let metrics = std::sync::Arc::new(metrics::Metrics::with(|registry| {
            webhooks.metrics.register(registry);
        }));
        let stripe = stripe::Stripe::new(
            &config.stripe_secret_key,
            &config.stripe_api_base,
            metrics.clone(),
        )?;
        let state = AppState {
            webhooks,
            db,
            kube,
            verdicts: std::sync::Arc::new(caller::Verdicts::new(config.token_cache)),
            registry,
            stripe,
            budget: std::sync::Arc::new(budget::Budget::new(config.budget)),
            metrics,
        };
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        Ok(Self {
            listener,
            router: http::router(state),
        })
    }

    /// Reports panics and 500s to `reporter` (Sentry, see docs/logs-and-errors.md).
    pub fn reporting_to(mut self, reporter: tiqzy_telemetry::Reporter) -> Self {
        if reporter.enabled() {
            tiqzy_telemetry::errors::catch_panics();
        }
        self.router = self.router.layer(axum::Extension(reporter));
        self
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub async fn serve(self) -> std::io::Result<()> {
        axum::serve(self.listener, self.router).await
    }
}
