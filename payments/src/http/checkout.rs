//! `POST /v1/checkout-sessions`, `GET /v1/checkout-sessions/{id}` and
//! `POST /v1/checkout-sessions/{id}/expire`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

use crate::caller::Caller;
use crate::checkout::{self, CreatedSession, NewCheckoutSession, SessionStatus};
use crate::http::problem::Problem;
use crate::sessions::{self, NewSession};
use crate::state::AppState;

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/checkout-sessions", post(create))
        .route("/v1/checkout-sessions/{id}", get(read))
        .route("/v1/checkout-sessions/{id}/expire", post(expire))
}

/// Stripe first, then the record: if recording fails, the storefront retries with the same
/// key, Stripe answers with the same session, and the record is written then.
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<NewCheckoutSession>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedSession>), Problem> {
    // Who may pay at all comes before what the request says.
    let tenant = state
        .registry
        .payments_of(&caller.tenant)
        .map_err(|e| e.problem())?;
    let Json(request) = body.map_err(|e| Problem::invalid(e.body_text()))?;
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    let key = checkout::idempotency_key(&caller, key)?;
    let checked = checkout::check(&caller, &tenant, request, key)?;
    let created = state.stripe.create_session(&checked).await?;
    sessions::record(
        &state.db,
        &NewSession {
            id: &created.id,
            tenant: &checked.tenant,
            connected_account: &checked.connected_account,
            client_reference_id: &checked.client_reference_id,
            idempotency_key: &checked.idempotency_key,
        },
    )
    .await?;
    tracing::info!(tenant = %caller.tenant, session = %created.id, "checkout session created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedSession {
            id: created.id,
            url: created.url,
        }),
    ))
}

/// Another tenant's session and an unknown one look the same: 404.
async fn own_session(state: &AppState, caller: &Caller, id: &str) -> Result<(), Problem> {
    match sessions::owner(&state.db, id).await? {
        Some(owner) if owner == caller.tenant => Ok(()),
        _ => Err(Problem::not_found("checkout session")),
    }
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionStatus>, Problem> {
    own_session(&state, &caller, &id).await?;
    Ok(Json(state.stripe.session_status(&id).await?))
}

async fn expire(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    own_session(&state, &caller, &id).await?;
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    let key = checkout::idempotency_key(&caller, key)?;
    state.stripe.expire_session(&id, &key).await?;
    tracing::info!(tenant = %caller.tenant, session = %id, "checkout session expired");
    Ok(StatusCode::NO_CONTENT)
}
