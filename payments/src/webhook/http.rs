//! `POST /webhooks/stripe`: Stripe's only way in. No ServiceAccount token here; the signature
//! is the authentication. Bad signatures are `400` and change nothing; events that cannot be
//! placed are kept and answered `200`, so Stripe does not retry them for days.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use super::clues;
use super::metrics::Received;
use super::route::{self, Envelope};
use super::signature;
use super::store::{self, Recorded};
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
    let Some(endpoint) = &webhooks.endpoint else {
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
    let clues = clues::gather(
        &state.db,
        &state.registry,
        &webhooks.owners,
        &event,
        endpoint.livemode,
    )
    .await?;
    let placed = route::place(&clues, |tenant| state.registry.exists(tenant));
    match store::record(&state.db, &event, &body, &placed).await? {
        Recorded::Duplicate => {
            webhooks.metrics.event(&event.kind, Received::Duplicate);
            tracing::debug!(event = %event.id, "Stripe event seen before");
        }
        Recorded::New => match &placed {
            Ok(tenant) => {
                webhooks.metrics.event(&event.kind, Received::Verified);
                webhooks.written.wake(tenant);
                tracing::debug!(event = %event.id, r#type = %event.kind, %tenant, "Stripe event queued");
            }
            Err(reason) => {
                webhooks.metrics.event(&event.kind, Received::Unroutable);
                tracing::warn!(event = %event.id, r#type = %event.kind, %reason, "Stripe event unroutable");
            }
        },
    }
    Ok(StatusCode::OK)
}
