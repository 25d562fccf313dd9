//! `POST /webhooks/stripe`: the raw body is verified before anything is parsed or changed.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;

use crate::error::{AppError, AppResult};
use crate::payments::webhook::{self, Rejection};
use crate::state::AppState;

/// Stripe's events are larger than anything else we accept.
const MAX_EVENT_BYTES: usize = 512 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks/stripe", post(receive))
        .layer(DefaultBodyLimit::max(MAX_EVENT_BYTES))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Received {
    /// applied, duplicate or ignored.
    pub outcome: &'static str,
}

/// Receives one Stripe event.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "payments",
    request_body(content = String, content_type = "application/json"),
    responses((status = 200, body = Received), (status = 400, body = crate::error::Problem)))]
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> AppResult<Json<Received>> {
    // Stripe always sends UTF-8 JSON; anything else cannot carry a valid signature.
    let payload =
        std::str::from_utf8(&body).map_err(|_| refused(&state, Rejection::BadSignature))?;
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let event = webhook::verify(payload, signature, &state.config.payments.webhook_secrets)
        .map_err(|r| refused(&state, r))?;
    let outcome = webhook::handle(&state, event)
        .await
        .inspect_err(|_| state.metrics.webhook("failed"))?;
    state.metrics.webhook(outcome.as_str());
    Ok(Json(Received {
        outcome: outcome.as_str(),
    }))
}

fn refused(state: &AppState, rejection: Rejection) -> AppError {
    state.metrics.webhook(rejection.kind());
    let (status, title, detail) = match rejection {
        Rejection::MalformedSignature => (
            StatusCode::BAD_REQUEST,
            "Bad signature",
            "the Stripe-Signature header is missing or malformed",
        ),
        Rejection::BadSignature => (
            StatusCode::BAD_REQUEST,
            "Bad signature",
            "no v1 signature matches this payload under any configured webhook secret",
        ),
        Rejection::Stale => (
            StatusCode::BAD_REQUEST,
            "Stale signature",
            "the signature's timestamp is outside the tolerance; the delivery may be a replay",
        ),
        Rejection::Unreadable => (
            StatusCode::BAD_REQUEST,
            "Unreadable event",
            "the payload is correctly signed but is not a Stripe event this service can read",
        ),
        Rejection::NotConfigured => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Webhooks not configured",
            "this storefront has no webhook secret configured",
        ),
    };
    let kind = match rejection {
        Rejection::Stale => "stale-signature",
        Rejection::Unreadable => "unreadable-event",
        Rejection::NotConfigured => "webhooks-not-configured",
        _ => "bad-signature",
    };
    AppError::client(status, kind, title, detail)
}
