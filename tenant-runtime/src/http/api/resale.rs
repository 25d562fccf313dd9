//! The resale market: list a ticket, withdraw it, browse, buy.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use uuid::Uuid;

use crate::boxoffice::resale;
use crate::domain::{Currency, Email, Money};
use crate::error::{AppResult, Problem};
use crate::http::session::SignedIn;
use crate::http::{ApiJson, ClientId};
use crate::state::AppState;
use crate::store::listings::Listing;
use crate::store::orders::Order;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/tickets/{token}/listing",
            post(create_listing).delete(withdraw_listing),
        )
        .route("/api/listings", get(list_listings))
        .route("/api/listings/{id}/purchase", post(purchase_listing))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateListing {
    pub amount_minor: i64,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
}

/// Lists the ticket for resale at no more than the storefront's cap over face value. Needs a
/// session verified for the holder's address, whose payouts are set up.
#[utoipa::path(post, path = "/api/tickets/{token}/listing", tag = "resale",
    params(("token" = String, Path)), request_body = CreateListing,
    responses((status = 201, body = Listing),
              (status = 401, body = Problem, description = "Not signed in"),
              (status = 403, body = Problem, description = "Signed in, not as the holder"),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_listing(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(token): Path<String>,
    ApiJson(req): ApiJson<CreateListing>,
) -> AppResult<(StatusCode, Json<Listing>)> {
    let price = Money::new(req.amount_minor, req.currency)?;
    let listing = resale::list_ticket(&state, signed_in.session(), &token, price).await?;
    Ok((StatusCode::CREATED, Json(listing)))
}

/// Takes the ticket off the market. Needs a session verified for the holder's address; a
/// listing a buyer is paying for cannot be withdrawn (409).
#[utoipa::path(delete, path = "/api/tickets/{token}/listing", tag = "resale",
    params(("token" = String, Path)),
    responses((status = 204),
              (status = 401, body = Problem, description = "Not signed in"),
              (status = 403, body = Problem, description = "Signed in, not as the holder"),
              (status = 409, body = Problem)))]
pub async fn withdraw_listing(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(token): Path<String>,
) -> AppResult<StatusCode> {
    resale::withdraw_listing(&state, signed_in.session(), &token).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListingFilter {
    /// Only this event's listings.
    pub event: Option<String>,
}

/// Tickets on the resale market.
#[utoipa::path(get, path = "/api/listings", tag = "resale", params(ListingFilter),
    responses((status = 200, body = [Listing])))]
pub async fn list_listings(
    State(state): State<AppState>,
    Query(filter): Query<ListingFilter>,
) -> AppResult<Json<Vec<Listing>>> {
    Ok(Json(resale::market(&state, filter.event.as_deref()).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseListing {
    #[schema(value_type = String, format = "email")]
    pub email: Email,
}

/// Reserves the listing for this buyer and opens their resale order.
#[utoipa::path(post, path = "/api/listings/{id}/purchase", tag = "resale",
    params(("id" = Uuid, Path)), request_body = PurchaseListing,
    responses((status = 201, body = Order), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "Listing taken, or the client's ticket cap in the event reached"),
              (status = 429, body = Problem)))]
pub async fn purchase_listing(
    State(state): State<AppState>,
    client: ClientId,
    Path(id): Path<Uuid>,
    ApiJson(req): ApiJson<PurchaseListing>,
) -> AppResult<(StatusCode, Json<Order>)> {
    let order = resale::buy_listing(&state, &client.0, id, &req.email).await?;
    Ok((StatusCode::CREATED, Json(order)))
}
