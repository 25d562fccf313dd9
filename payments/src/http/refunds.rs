//! `POST /v1/refunds`.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

use crate::http::problem::Problem;
use crate::idempotency::KeyedCaller;
use crate::refunds::{self, NewRefund};
use crate::sessions::{self, Observed, Recorded};
use crate::state::AppState;

pub fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/v1/refunds", post(create))
}

async fn create(
    State(state): State<AppState>,
    KeyedCaller { caller, key }: KeyedCaller,
    body: Result<Json<NewRefund>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let Json(request) = body.map_err(|e| Problem::invalid(e.body_text()))?;
    refunds::check_shape(&request)?;
    let tenant = caller.tenant.as_str();
    let session = session_of(&state, tenant, &request.payment_intent)
        .await?
        .ok_or_else(|| Problem::not_found("payment intent"))?;
    let refund = refunds::check(request, &session)?;
    if let Some(id) = refunds::made(&state.db, key.as_str()).await? {
        return Ok((StatusCode::CREATED, Json(json!({ "id": id }))));
    }
    let id = state.stripe.refund(tenant, &refund, &key).await?;
    refunds::record(&state.db, tenant, key.as_str(), &refund, &id).await?;
    tracing::info!(%tenant, refund = %id, amount = refund.amount, "refund made");
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

/// The tenant's session that took `payment_intent`: from the records, else from Stripe's
/// list of the sessions of that payment intent (then remembered).
async fn session_of(
    state: &AppState,
    tenant: &str,
    payment_intent: &str,
) -> Result<Option<Recorded>, Problem> {
    if let Some(session) = sessions::of_payment_intent(&state.db, tenant, payment_intent).await? {
        return Ok(Some(session));
    }
    for id in state
        .stripe
        .sessions_of_payment_intent(payment_intent)
        .await?
    {
        if sessions::of_tenant(&state.db, tenant, &id).await?.is_some() {
            let status = state.stripe.session_status(&id).await?;
            if status.payment_intent.as_deref() != Some(payment_intent) {
                continue;
            }
            sessions::observe(
                &state.db,
                &Observed {
                    id: &id,
                    paid: status.paid,
                    amount_total: status.amount_total,
                    currency: status.currency.as_deref(),
                    payment_intent: Some(payment_intent),
                },
            )
            .await?;
            return Ok(sessions::of_tenant(&state.db, tenant, &id).await?);
        }
    }
    Ok(None)
}
