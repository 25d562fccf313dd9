//! Paying: open Stripe Checkout for an order, and set up payouts before selling.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};

use crate::error::{AppResult, Problem};
use crate::http::session::SignedIn;
use crate::payments::{self, Checkout, Onboarding};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/orders/{token}/checkout", post(start_checkout))
        .route("/api/tickets/{token}/payouts", post(start_onboarding))
}

/// Opens Stripe Checkout for a pending order. The order becomes paid only when Stripe
/// confirms the payment (webhook or read-back), never because the buyer came back.
#[utoipa::path(post, path = "/api/orders/{token}/checkout", tag = "checkout",
    params(("token" = String, Path)),
    responses((status = 200, body = Checkout), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 502, body = Problem),
              (status = 503, body = Problem)))]
pub async fn start_checkout(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> AppResult<Json<Checkout>> {
    Ok(Json(payments::start_checkout(&state, &token).await?))
}

/// Creates the Stripe account of the ticket's holder (once) and returns a fresh onboarding
/// link. Needs a session verified for the holder's address (sign in by e-mail link); listing
/// a ticket needs finished onboarding.
#[utoipa::path(post, path = "/api/tickets/{token}/payouts", tag = "resale",
    params(("token" = String, Path)),
    responses((status = 200, body = Onboarding),
              (status = 401, body = Problem, description = "Not signed in"),
              (status = 403, body = Problem, description = "Signed in, not as the holder"),
              (status = 404, body = Problem), (status = 503, body = Problem)))]
pub async fn start_onboarding(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(token): Path<String>,
) -> AppResult<Json<Onboarding>> {
    Ok(Json(
        payments::start_onboarding(&state, signed_in.session(), &token).await?,
    ))
}
