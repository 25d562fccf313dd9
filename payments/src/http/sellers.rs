//! `POST /v1/seller-accounts` and `POST /v1/seller-accounts/{account}/onboarding-links`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

use crate::http::problem::Problem;
use crate::idempotency::KeyedCaller;
use crate::sellers::{self, NewOnboardingLink, NewSellerAccount};
use crate::state::AppState;

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/seller-accounts", post(create))
        .route(
            "/v1/seller-accounts/{account}/onboarding-links",
            post(onboarding_link),
        )
}

/// One account per seller: a seller already recorded gets its account back without asking
/// Stripe; otherwise Stripe first, then the record (a retry with the same key gets the same
/// account from Stripe and records it then).
async fn create(
    State(state): State<AppState>,
    KeyedCaller { caller, key }: KeyedCaller,
    body: Result<Json<NewSellerAccount>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let Json(request) = body.map_err(|e| Problem::invalid(e.body_text()))?;
    sellers::check_account(&request)?;
    let tenant = &caller.tenant;
    if let Some(account) = sellers::of_seller(&state.db, tenant, &request.seller_key).await? {
        return Ok((StatusCode::CREATED, Json(json!({ "account": account }))));
    }
    let created = state
        .stripe
        .create_seller_account(tenant, &request.seller_key, &request.email, &key)
        .await?;
    let account = sellers::record(&state.db, &created, tenant, &request.seller_key)
        .await?
        .ok_or_else(|| Problem::internal(&"the seller account was not recorded"))?;
    if account != created {
        tracing::warn!(%tenant, unused = %created, "a second account was created for a seller; the first is kept");
    }
    tracing::info!(%tenant, %account, "seller account created");
    Ok((StatusCode::CREATED, Json(json!({ "account": account }))))
}

/// Another tenant's seller and an unknown account look the same: 404.
async fn onboarding_link(
    State(state): State<AppState>,
    KeyedCaller { caller, key }: KeyedCaller,
    Path(account): Path<String>,
    body: Result<Json<NewOnboardingLink>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    if sellers::owner(&state.db, &account).await?.as_deref() != Some(caller.tenant.as_str()) {
        return Err(Problem::not_found("seller account"));
    }
    let Json(request) = body.map_err(|e| Problem::invalid(e.body_text()))?;
    sellers::check_link(&request)?;
    let url = state
        .stripe
        .create_onboarding_link(&account, &request.refresh_url, &request.return_url, &key)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "url": url }))))
}
