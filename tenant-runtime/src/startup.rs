//! Builds the application from its configuration: pool, migrations, caches, routes. The
//! listener is bound here and its port exposed, so tests start the real app on port 0.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::TokenVerifier;
use crate::cache::Cache;
use crate::config::Config;
use crate::domain::TicketSigner;
use crate::metrics::Metrics;
use crate::payments::gateway::Gateway;
use crate::state::AppState;
use crate::store::allocator::{self, Allocator};
use crate::{db, http, mail, sweeper};

/// The service name on error reports.
pub const SERVICE: &str = "tiqzy-runtime";

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    port: u16,
    metrics_listener: TcpListener,
    metrics_port: u16,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // The hold batches take one or two of the pod's connections, on a thread of their own.
        let (request_connections, batch_connections) =
            allocator::split_connections(config.db_max_connections);
        let db = db::connect(
            config.database_url.expose_secret(),
            request_connections,
            config.db_acquire_timeout,
        )
        .await?;
        db::migrate(&db).await?;
        let metrics = Arc::new(Metrics::new());
        let stripe = Arc::new(Gateway::new(
            &config.payments,
            &config.tenant,
            metrics.clone(),
        )?);
        let allocator = Arc::new(
            Allocator::new(
                config.hold_ttl,
                metrics.hold_batches.clone(),
                &db,
                batch_connections,
                config.db_acquire_timeout,
            )
            .context("starting the hold batch thread")?,
        );
        let state = AppState {
            cache: Arc::new(Cache::new(
                config.redis_url.as_ref().map(ExposeSecret::expose_secret),
                config.redis_ca_pem.as_deref(),
                &config.cache_key_prefix,
            )?),
            auth: match &config.oauth {
                Some(oauth) => Some(TokenVerifier::start(oauth)?),
                None => {
                    tracing::warn!("TIQZY_OAUTH_ISSUER is not set: the admin API is closed");
                    None
                }
            },
            signer: TicketSigner::new(config.ticket_signing_keys.clone()),
            metrics,
            stripe,
            pages: Arc::new(http::storefront::pages(config.locale.clone())?),
            allocator,
            db,
            config: Arc::new(config),
            read_backs: Arc::default(),
            errors: tiqzy_telemetry::Reporter::off(SERVICE),
        };
        let listener = TcpListener::bind(state.config.listen_addr)
            .await
            .with_context(|| format!("binding {}", state.config.listen_addr))?;
        let port = listener.local_addr()?.port();
        let metrics_listener = TcpListener::bind(state.config.metrics_addr)
            .await
            .with_context(|| format!("binding {}", state.config.metrics_addr))?;
        let metrics_port = metrics_listener.local_addr()?.port();
        Ok(Self {
            listener,
            port,
            metrics_listener,
            metrics_port,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of `/metrics`.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Reports panics and 500s through `reporter` (off until this is called).
    #[must_use]
    pub fn reporting_to(mut self, reporter: tiqzy_telemetry::Reporter) -> Self {
        if reporter.enabled() {
            tiqzy_telemetry::errors::catch_panics();
        }
        self.state.errors = reporter;
        self
    }

    /// Serves until SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
    pub async fn serve_until_shutdown(self) -> anyhow::Result<()> {
        self.serve(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests and stops the
    /// sweeper and the mail worker (after the mail it is sending) before returning.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_sweeper, stopped) = watch::channel(false);
        let sweeper = tokio::spawn(sweeper::run(self.state.clone(), stopped.clone()));
        let mail = tokio::spawn(mail::worker::run(
            self.state.db.clone(),
            self.state.config.clone(),
            stopped,
        ));
        tracing::info!(
            tenant = self.state.config.tenant,
            port = self.port,
            cache = self.state.cache.enabled(),
            "serving"
        );
        let db = self.state.db.clone();
        let metrics = tokio::spawn(
            axum::serve(
                self.metrics_listener,
                http::metrics_router(self.state.clone()),
            )
            .into_future(),
        );
        let limits = self.state.config.limits;
        crate::server::serve(self.listener, http::router(self.state), limits, shutdown).await;
        metrics.abort();
        let _ = stop_sweeper.send(true);
        let _ = sweeper.await;
        let _ = mail.await;
        db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
