//! `POST /v1/checkout-sessions`, `GET /v1/checkout-sessions/{id}` and
//! `POST /v1/checkout-sessions/{id}/expire`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::caller::Caller;
use crate::checkout::{self, CreatedSession, NewCheckoutSession, SessionStatus};
use crate::http::problem::Problem;
use crate::idempotency::KeyedCaller;
use crate::sessions::{self, NewSession, Observed};
use crate::state::AppState;

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/checkout-sessions", post(create))
        .route("/v1/checkout-sessions/{id}", get(read))
        .route("/v1/checkout-sessions/{id}/expire", post(expire))
}

/// Stripe first, then the record: if recording fails, the storefront retries with the same
/// key, Stripe answers with the same session, and the record is written then. A resale's
/// transfer group is claimed for the tenant first: another tenant's group is refused.
async fn create(
    State(state): State<AppState>,
    KeyedCaller { caller, key }: KeyedCaller,
    body: Result<Json<NewCheckoutSession>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedSession>), Problem> {
    // Who may pay at all comes before what the request says.
    let tenant = state
        .registry
        .payments_of(&caller.tenant)
        .map_err(|e| e.problem())?;
    let Json(request) = body.map_err(|e| Problem::invalid(e.body_text()))?;
    let checked = checkout::check(&caller, &tenant, request, key.to_string())?;
    if let Some(group) = checked.split.transfer_group() {
        let holder = sessions::claim_transfer_group(&state.db, &caller.tenant, group).await?;
        if holder != caller.tenant {
            return Err(Problem::conflict(
                "transfer-group-taken",
                "this transfer_group belongs to another tenant; choose another",
            ));
        }
    }
    let created = state.stripe.create_session(&checked).await?;
    sessions::record(
        &state.db,
        &NewSession {
            id: &created.id,
            tenant: &checked.tenant,
            connected_account: &checked.connected_account,
            client_reference_id: &checked.client_reference_id,
            idempotency_key: &checked.idempotency_key,
            destination_charge: checked.split.is_destination_charge(),
            transfer_group: checked.split.transfer_group(),
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
    let status = state.stripe.session_status(&id).await?;
    sessions::observe(
        &state.db,
        &Observed {
            id: &id,
            paid: status.paid,
            amount_total: status.amount_total,
            currency: status.currency.as_deref(),
            payment_intent: status.payment_intent.as_deref(),
        },
    )
    .await?;
    Ok(Json(status))
}

async fn expire(
    State(state): State<AppState>,
    KeyedCaller { caller, key }: KeyedCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    own_session(&state, &caller, &id).await?;
    state.stripe.expire_session(&id, key.as_str()).await?;
    tracing::info!(tenant = %caller.tenant, session = %id, "checkout session expired");
    Ok(StatusCode::NO_CONTENT)
}
