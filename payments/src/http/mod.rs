//! The HTTP surface: one router per feature, merged here.

pub mod checkout;
pub mod ops;
pub mod problem;
pub mod refunds;
pub mod sellers;
pub mod transfers;

use crate::state::AppState;

pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .merge(crate::webhook::http::router())
        .merge(checkout::router())
        .merge(sellers::router())
        .merge(transfers::router())
        .merge(refunds::router())
        .merge(ops::router())
        .fallback(|| async { problem::Problem::not_found("route") })
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
