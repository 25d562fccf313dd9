//! What the cluster asks the service: `/healthz` (the process answers), `/readyz` (it can
//! reach its database; Stripe is deliberately not checked, so a Stripe outage does not take
//! every replica out of the Service) and `/metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::http::problem::Problem;
use crate::state::AppState;

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
}

async fn ready(State(state): State<AppState>) -> Result<&'static str, Problem> {
    match sqlx::query("SELECT 1").execute(&state.db).await {
        Ok(_) => Ok("ready"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the database does not answer");
            Err(Problem::unavailable("the database does not answer"))
        }
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
