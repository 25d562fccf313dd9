//! The HTTP surface: one router per feature, merged here.

pub mod checkout;
pub mod problem;

use axum::routing::get;

use crate::state::AppState;

pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .merge(crate::webhook::http::router())
        .merge(checkout::router())
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { problem::Problem::not_found("route") })
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
