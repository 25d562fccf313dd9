//! axum's own extractor rejections (a path that does not parse, a form field missing, a bad
//! query) answer in plain text. Here they become what the rest of the service answers: a
//! problem body on the JSON API and the webhook, the tenant's branded error page on the
//! storefront.

use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;
use crate::state::AppState;

/// The most of a rejection's text kept as the problem's detail.
const MOST_DETAIL_BYTES: usize = 1024;

pub async fn as_problems(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let api = path.starts_with("/api/") || path.starts_with("/webhooks/");
    let response = next.run(request).await;
    let plain_text = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let status = response.status();
    if !status.is_client_error() || !plain_text {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), MOST_DETAIL_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let title = status.canonical_reason().unwrap_or("Bad request");
    let error = AppError::client(status, "bad-request", title, text);
    if api {
        error.into_response()
    } else {
        super::storefront::error_page(&state, error)
    }
}
