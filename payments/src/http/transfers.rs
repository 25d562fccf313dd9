//! `POST /v1/transfers` and `POST /v1/transfers/{id}/reversals`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

use crate::http::problem::Problem;
use crate::idempotency::KeyedCaller;
use crate::sessions::{self, Observed};
use crate::state::AppState;
use crate::transfers::{self, NewReversal, NewTransfer, Reserved};
use crate::{sellers, stripe};

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/transfers", post(create))
        .route("/v1/transfers/{id}/reversals", post(reverse))
}

async fn create(
    State(state): State<AppState>,
    KeyedCaller { caller, key }: KeyedCaller,
    body: Result<Json<NewTransfer>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let Json(request) = body.map_err(|e| Problem::invalid(e.body_text()))?;
    let transfer = transfers::check(request)?;
    let tenant = caller.tenant.as_str();
    // Another tenant's seller and an account nobody recorded are refused alike.
    if sellers::owner(&state.db, &transfer.destination)
        .await?
        .as_deref()
        != Some(tenant)
    {
        return Err(Problem::forbidden(
            "account-not-yours",
            "destination is not a seller account of this tenant",
        ));
    }
    let paid = paid_into(&state, tenant, &transfer.transfer_group, &transfer.currency).await?;
    let reserved = transfers::reserve(&state.db, tenant, key.as_str(), &transfer, paid).await?;
    let id = match reserved {
        Reserved::Made(id) => id,
        Reserved::Ask => match state.stripe.create_transfer(tenant, &transfer, &key).await {
            Ok(id) => {
                transfers::made(&state.db, key.as_str(), &id).await?;
                id
            }
            Err(problem) => {
                if stripe::refused(&problem) {
                    transfers::release(&state.db, key.as_str()).await?;
                }
                return Err(problem);
            }
        },
    };
    tracing::info!(%tenant, transfer = %id, amount = transfer.amount, "transfer made");
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

/// What the tenant's resale sessions in `group` took in, in `currency`. Sessions not yet
/// known to be paid are read back from Stripe (and remembered once paid).
async fn paid_into(
    state: &AppState,
    tenant: &str,
    group: &str,
    currency: &str,
) -> Result<i64, Problem> {
    let sessions = sessions::in_group(&state.db, tenant, group).await?;
    if sessions.is_empty() {
        return Err(Problem::not_found("transfer group"));
    }
    let mut paid = 0i64;
    for mut session in sessions {
        if !session.paid {
            let status = state.stripe.session_status(&session.id).await?;
            sessions::observe(
                &state.db,
                &Observed {
                    id: &session.id,
                    paid: status.paid,
                    amount_total: status.amount_total,
                    currency: status.currency.as_deref(),
                    payment_intent: status.payment_intent.as_deref(),
                },
            )
            .await?;
            session.paid = status.paid;
            session.amount_paid = status.amount_total;
            session.currency = status.currency;
        }
        if !session.paid {
            continue;
        }
        if session.currency.as_deref() != Some(currency) {
            return Err(Problem::invalid(format!(
                "currency must be the transfer group's currency {}",
                session.currency.as_deref().unwrap_or("(unknown)")
            )));
        }
        paid = paid.saturating_add(session.amount_paid.unwrap_or(0));
    }
    if paid == 0 {
        return Err(Problem::conflict(
            "transfer-group-not-paid",
            "no checkout in this transfer group is paid yet",
        ));
    }
    Ok(paid)
}

async fn reverse(
    State(state): State<AppState>,
    KeyedCaller { caller, key }: KeyedCaller,
    Path(id): Path<String>,
    body: Result<Json<NewReversal>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let tenant = caller.tenant.as_str();
    let transfer = transfers::of_tenant(&state.db, tenant, &id)
        .await?
        .ok_or_else(|| Problem::not_found("transfer"))?;
    let Json(request) = body.map_err(|e| Problem::invalid(e.body_text()))?;
    transfers::check_reversal(&request)?;
    let reserved =
        transfers::reserve_reversal(&state.db, tenant, key.as_str(), &transfer, &request).await?;
    let reversal = match reserved {
        Reserved::Made(reversal) => reversal,
        Reserved::Ask => {
            let answer = state
                .stripe
                .reverse_transfer(tenant, &id, request.amount, &request.ledger_id, &key)
                .await;
            match answer {
                Ok(reversal) => {
                    transfers::reversal_made(&state.db, key.as_str(), &reversal).await?;
                    reversal
                }
                Err(problem) => {
                    if stripe::refused(&problem) {
                        transfers::release_reversal(&state.db, key.as_str()).await?;
                    }
                    return Err(problem);
                }
            }
        }
    };
    tracing::info!(%tenant, transfer = %id, %reversal, "transfer reversed");
    Ok((StatusCode::CREATED, Json(json!({ "id": reversal }))))
}
