//! Buying: hold tickets, order them, and follow the order and ticket links.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use uuid::Uuid;

use crate::boxoffice::hold;
use crate::boxoffice::order::{self, OrderView, TicketView};
use crate::domain::{Email, Quantity};
use crate::error::{AppError, AppResult, Problem};
use crate::http::{ApiJson, ClientId, ReturnFromCheckout};
use crate::state::AppState;
use crate::store::holds::{Hold, HoldLine};
use crate::store::orders::Order;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/holds", post(create_hold))
        .route("/api/holds/{id}", delete(release_hold))
        .route("/api/orders", post(create_order))
        .route("/api/orders/{token}", get(get_order))
        .route("/api/tickets/{token}", get(get_ticket))
}

/// Either `items` (one or more ticket types of one event) or, for a single ticket type,
/// `ticket_type_id` and `quantity`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHold {
    pub ticket_type_id: Option<Uuid>,
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub quantity: Option<Quantity>,
    #[schema(max_items = 20)]
    pub items: Option<Vec<HoldItemRequest>>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldItemRequest {
    pub ticket_type_id: Uuid,
    #[schema(value_type = u32, minimum = 1, maximum = 100)]
    pub quantity: Quantity,
}

impl CreateHold {
    /// The ticket types and quantities asked for, whichever form the request took.
    pub fn lines(&self) -> AppResult<Vec<HoldLine>> {
        match (&self.items, self.ticket_type_id, self.quantity) {
            (Some(items), None, None) => Ok(items
                .iter()
                .map(|i| HoldLine {
                    ticket_type_id: i.ticket_type_id,
                    quantity: i.quantity,
                })
                .collect()),
            (None, Some(ticket_type_id), Some(quantity)) => Ok(vec![HoldLine {
                ticket_type_id,
                quantity,
            }]),
            _ => Err(AppError::invalid(
                "send either `items` or `ticket_type_id` with `quantity`",
            )),
        }
    }
}

/// Holds tickets for a few minutes while the buyer checks out.
#[utoipa::path(post, path = "/api/holds", tag = "checkout", request_body = CreateHold,
    responses((status = 201, body = Hold), (status = 409, body = Problem),
              (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn create_hold(
    State(state): State<AppState>,
    client: ClientId,
    ApiJson(req): ApiJson<CreateHold>,
) -> AppResult<(StatusCode, Json<Hold>)> {
    let hold = hold::hold_tickets(&state, &client.0, &req.lines()?).await?;
    Ok((StatusCode::CREATED, Json(hold)))
}

/// Gives held tickets back before the hold would expire.
#[utoipa::path(delete, path = "/api/holds/{id}", tag = "checkout",
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn release_hold(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> AppResult<StatusCode> {
    hold::release_hold(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    pub hold_id: Uuid,
    #[schema(value_type = String, format = "email")]
    pub email: Email,
}

/// Orders the held tickets; the order waits for payment and is reachable by its link.
#[utoipa::path(post, path = "/api/orders", tag = "checkout", request_body = CreateOrder,
    responses((status = 201, body = Order), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
pub async fn create_order(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateOrder>,
) -> AppResult<(StatusCode, Json<Order>)> {
    let order = order::open_order(&state, req.hold_id, &req.email).await?;
    Ok((StatusCode::CREATED, Json(order)))
}

/// An order and the tickets it holds, by the secret link the buyer received.
#[utoipa::path(get, path = "/api/orders/{token}", tag = "checkout",
    params(("token" = String, Path), ReturnFromCheckout),
    responses((status = 200, body = OrderView), (status = 404, body = Problem)))]
pub async fn get_order(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(back): Query<ReturnFromCheckout>,
) -> AppResult<Json<OrderView>> {
    let view = order::order_view(&state, &token, back.from_checkout()).await?;
    Ok(Json(view))
}

/// One ticket with its signed code, by the secret link its holder received.
#[utoipa::path(get, path = "/api/tickets/{token}", tag = "checkout",
    params(("token" = String, Path)),
    responses((status = 200, body = TicketView), (status = 404, body = Problem)))]
pub async fn get_ticket(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> AppResult<Json<TicketView>> {
    Ok(Json(order::ticket_view(&state, &token).await?))
}
