//! The HTTP surface: one router per feature, merged here.

pub mod checkout;
pub mod ops;
pub mod problem;
pub mod refunds;
pub mod sellers;
pub mod transfers;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::state::AppState;

pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .merge(crate::webhook::http::router())
        .merge(checkout::router())
        .merge(sellers::router())
        .merge(transfers::router())
        .merge(refunds::router())
        .merge(ops::router())
        .route_layer(axum::middleware::from_fn(traced))
        .fallback(|| async { problem::Problem::not_found("route") })
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
}

/// Runs a request in its span: named for its route template, the child of the storefront's
/// `traceparent`, so a storefront's trace continues here (docs/logs-and-errors.md).
async fn traced(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let (span, _) =
        tiqzy_telemetry::otel::server_span(request.method(), route.as_deref(), request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    tiqzy_telemetry::otel::record_response(&span, response.status());
    response
}
