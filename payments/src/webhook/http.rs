//! `POST /webhooks/stripe`: Stripe's only way in. No ServiceAccount token here; the signature
//! is the authentication. Bad signatures are `400` and change nothing; events that cannot be
//! placed are kept and answered `200`, so Stripe does not retry them for days.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use super::metrics::Received;
use super::recorder::Outcome;
use super::route::Envelope;
use super::signature;
use super::store::Recorded;
use crate::http::problem::Problem;
use crate::state::AppState;

pub fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/webhooks/stripe", post(receive))
}

async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    let webhooks = &state.webhooks;
    let (Some(endpoint), Some(recorder)) = (&webhooks.endpoint, &webhooks.recorder) else {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks-not-configured",
            "the payments service has no Stripe webhook secrets or delivery key configured",
        ));
    };
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    if let Err(bad) = signature::verify(header, &body, &endpoint.secrets, signature::now()) {
        webhooks.metrics.event("unverified", Received::BadSignature);
        tracing::info!(reason = %bad, "Stripe webhook refused");
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-signature",
            bad.to_string(),
        ));
    }
    let event: Envelope = serde_json::from_slice(&body).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "not a Stripe event",
        )
    })?;
    let (id, kind) = (event.id.clone(), event.kind.clone());
    // Answered once the event's batch committed; a batch that failed wrote nothing and each
    // of its events is answered 500, so Stripe sends it again (the cause is logged once).
    let Outcome { recorded, placed } = recorder.record(event, body).await.map_err(|_| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the payments service failed; try again",
        )
    })?;
    match recorded {
        Recorded::Duplicate => {
            webhooks.metrics.event(&kind, Received::Duplicate);
            tracing::debug!(event = %id, "Stripe event seen before");
        }
        Recorded::New => match &placed {
            Ok(tenant) => {
                webhooks.metrics.event(&kind, Received::Verified);
                webhooks.written.wake(tenant);
                tracing::debug!(event = %id, r#type = %kind, %tenant, "Stripe event queued");
            }
            Err(reason) => {
                webhooks.metrics.event(&kind, Received::Unroutable);
                tracing::warn!(event = %id, r#type = %kind, %reason, "Stripe event unroutable");
            }
        },
    }
    Ok(StatusCode::OK)
}
