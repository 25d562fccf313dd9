//! Every request runs in a span naming its route template and trace ids (so its log lines
//! carry them, and with tracing on it is the request's OpenTelemetry span, a child of the
//! caller's `traceparent`), inside the reporter's scope (so a panic in it is reported with them); a 500
//! is reported with its cause on the way out. Panics become the same 500 problem body.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tiqzy_telemetry::Where;
use tracing::Instrument;

use crate::error::{AppError, InternalFailure};
use crate::state::AppState;

pub async fn report(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let (span, ids) =
        tiqzy_telemetry::otel::server_span(request.method(), route.as_deref(), request.headers());
    let at = Where {
        tenant: Some(state.config.tenant.clone()),
        route,
        trace_id: Some(ids.trace_id),
        step: None,
    };
    let mut response = state
        .errors
        .within(at.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    tiqzy_telemetry::otel::record_response(&span, response.status());
    if let Some(InternalFailure(cause)) = response.extensions_mut().remove::<InternalFailure>() {
        state.errors.error(cause.as_ref().as_ref(), &at);
    }
    response
}

/// The answer to a request whose handler panicked (the panic hook has reported it).
pub fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    AppError::Internal(anyhow::anyhow!("the handler panicked")).problem_response()
}
