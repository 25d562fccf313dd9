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
use tiqzy_telemetry::{Reporter, Where};
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
/// `traceparent`, so a storefront's trace continues here (docs/logs-and-errors.md); with a
/// [`Reporter`] (`crate::Application::reporting_to`), a panic in it or a 500 is reported to
/// Sentry with the route template and trace id.
async fn traced(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let errors = request.extensions().get::<Reporter>().cloned();
    let (span, ids) =
        tiqzy_telemetry::otel::server_span(request.method(), route.as_deref(), request.headers());
    let at = Where {
        route,
        trace_id: Some(ids.trace_id),
        ..Where::default()
    };
    let mut response = match &errors {
        Some(errors) => {
            errors
                .within(at.clone(), next.run(request))
                .instrument(span.clone())
                .await
        }
        None => next.run(request).instrument(span.clone()).await,
    };
    tiqzy_telemetry::otel::record_response(&span, response.status());
    if let (Some(errors), Some(failure)) = (
        errors,
        response
            .extensions_mut()
            .remove::<problem::InternalFailure>(),
    ) {
        errors.error(&failure, &at);
    }
    response
}
