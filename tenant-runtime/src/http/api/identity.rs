//! "Find my tickets" in the JSON API: ask for a sign-in link, follow it (which sets the
//! session cookie), see every order of the verified address, sign out.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::boxoffice::order::OrderView;
use crate::domain::Email;
use crate::error::{AppResult, Problem};
use crate::http::session::{SignedIn, cookie_token, end_cookie, start_cookie};
use crate::http::{ApiJson, ClientId};
use crate::identity::{self, Session};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/sign-in", post(ask_for_link))
        .route("/api/sessions", post(follow_link))
        .route("/api/session", axum::routing::delete(sign_out))
        .route("/api/me", get(my_orders))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    #[schema(value_type = String, format = "email")]
    pub email: Email,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignInSent {
    pub detail: String,
}

/// What every accepted request for a link is told, whether or not the address ordered here.
pub const LINK_SENT: &str = "if this address can receive mail, a sign-in link is on its way; \
     it works once, within 15 minutes";

/// Mails a single-use sign-in link to the address. The answer is the same for every address;
/// too many links to one address or from one client in an hour is a 429 that sends nothing.
#[utoipa::path(post, path = "/api/sign-in", tag = "identity", request_body = SignInRequest,
    responses((status = 202, body = SignInSent), (status = 422, body = Problem),
              (status = 429, body = Problem, description = "Mail limit reached; see Retry-After")))]
pub async fn ask_for_link(
    State(state): State<AppState>,
    client: ClientId,
    ApiJson(req): ApiJson<SignInRequest>,
) -> AppResult<(StatusCode, Json<SignInSent>)> {
    identity::request_sign_in(&state, &req.email, &client.0).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SignInSent {
            detail: LINK_SENT.to_owned(),
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowLink {
    /// The secret at the end of the mailed link (`/sign-in/{token}`).
    pub token: String,
}

/// Uses up a sign-in link and starts a session for its address (the `tiqzy_session` cookie).
#[utoipa::path(post, path = "/api/sessions", tag = "identity", request_body = FollowLink,
    responses((status = 201, body = Session),
              (status = 401, body = Problem, description = "Link used, expired or unknown")))]
pub async fn follow_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<FollowLink>,
) -> AppResult<Response> {
    let started = identity::sign_in(&state, &req.token).await?;
    Ok((
        StatusCode::CREATED,
        [start_cookie(&headers, &started.cookie_token)],
        Json(started.session),
    )
        .into_response())
}

/// Ends the session.
#[utoipa::path(delete, path = "/api/session", tag = "identity", responses((status = 204)))]
pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> AppResult<Response> {
    if let Some(token) = cookie_token(&headers) {
        identity::sign_out(&state, &token).await?;
    }
    Ok((StatusCode::NO_CONTENT, [end_cookie()]).into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MyOrders {
    #[schema(value_type = String, format = "email")]
    pub email: identity::Address,
    pub session_expires_at: DateTime<Utc>,
    /// Newest first, each with the tickets it holds now.
    pub orders: Vec<OrderView>,
}

/// Every order and ticket of the signed-in address at this storefront.
#[utoipa::path(get, path = "/api/me", tag = "identity",
    responses((status = 200, body = MyOrders),
              (status = 401, body = Problem, description = "Not signed in")))]
pub async fn my_orders(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> AppResult<Json<MyOrders>> {
    let session = signed_in.0.ok_or_else(identity::sign_in_required)?;
    let orders = identity::orders_of(&state, &session).await?;
    Ok(Json(MyOrders {
        email: session.email,
        session_expires_at: session.expires_at,
        orders,
    }))
}
