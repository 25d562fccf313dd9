//! Every request runs in a span naming its route template and trace ids (so its log lines
//! carry them), inside the reporter's scope (so a panic in it is reported with them); a 500
//! is reported with its cause on the way out. Panics become the same 500 problem body.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tiqzy_telemetry::Where;
use tiqzy_telemetry::trace::TraceIds;
use tracing::Instrument;

use crate::error::{AppError, InternalFailure};
use crate::state::AppState;

pub async fn report(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let ids = TraceIds::for_request(
        request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = route.as_deref().unwrap_or("unmatched"),
        trace_id = %ids.trace_id,
        span_id = %ids.span_id,
    );
    let at = Where {
        tenant: Some(state.config.tenant.clone()),
        route,
        trace_id: Some(ids.trace_id),
        step: None,
    };
    let mut response = state
        .errors
        .within(at.clone(), next.run(request))
        .instrument(span)
        .await;
    if let Some(InternalFailure(cause)) = response.extensions_mut().remove::<InternalFailure>() {
        state.errors.error(cause.as_ref().as_ref(), &at);
    }
    response
}

/// The answer to a request whose handler panicked (the panic hook has reported it).
pub fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    AppError::Internal(anyhow::anyhow!("the handler panicked")).problem_response()
}
