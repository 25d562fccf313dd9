//! Buying: hold tickets, order them, and follow the order and ticket links.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Email, Quantity};
use crate::error::{AppError, AppResult, Problem};
use crate::http::{ApiJson, ClientId};
use crate::state::AppState;
use crate::store::holds::{self, Hold};
use crate::store::orders::{self, Order};
use crate::store::tickets::{self, Ticket};

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
    pub fn items(&self) -> AppResult<Vec<(Uuid, Quantity)>> {
        match (&self.items, self.ticket_type_id, self.quantity) {
            (Some(items), None, None) => Ok(items
                .iter()
                .map(|i| (i.ticket_type_id, i.quantity))
                .collect()),
            (None, Some(ticket_type_id), Some(quantity)) => Ok(vec![(ticket_type_id, quantity)]),
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
    let hold = hold_tickets(&state, &client, req).await?;
    Ok((StatusCode::CREATED, Json(hold)))
}

/// Shared with the storefront's form: rate limit, then the one conditional UPDATE.
pub(crate) async fn hold_tickets(
    state: &AppState,
    client: &ClientId,
    req: CreateHold,
) -> AppResult<Hold> {
    let items = req.items()?;
    if !state
        .cache
        .allow_hold(&client.0, state.config.hold_rate_limit)
        .await
    {
        state.metrics.hold("rate_limited");
        return Err(AppError::client(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            "too many holds from this client; please wait a minute",
        ));
    }
    let placed = holds::place_hold(&state.db, &items, state.config.hold_ttl).await;
    state
        .metrics
        .hold(if placed.is_ok() { "held" } else { "refused" });
    placed
}

/// Gives held tickets back before the hold would expire.
#[utoipa::path(delete, path = "/api/holds/{id}", tag = "checkout",
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn release_hold(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> AppResult<StatusCode> {
    if holds::release_hold(&state.db, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::not_found("active hold"))
    }
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
    let order = crate::payments::open_order(&state, req.hold_id, &req.email).await?;
    Ok((StatusCode::CREATED, Json(order)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    pub order: Order,
    pub tickets: Vec<TicketPage>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TicketPage {
    pub ticket: Ticket,
    /// The secret in this ticket's link.
    pub access_token: String,
    /// What the QR code encodes; present while the ticket is valid.
    pub code: Option<String>,
}

pub(crate) fn ticket_page(state: &AppState, ticket: Ticket) -> TicketPage {
    let code = ticket
        .valid
        .then(|| state.signer.sign(ticket.id, ticket.epoch));
    TicketPage {
        access_token: ticket.access_token.clone(),
        ticket,
        code,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ReturnFromCheckout {
    /// `done` when the buyer comes back from Stripe Checkout: the payment is then read back
    /// from Stripe (the redirect itself proves nothing).
    pub checkout: Option<String>,
}

/// An order and the tickets it holds, by the secret link the buyer received.
#[utoipa::path(get, path = "/api/orders/{token}", tag = "checkout",
    params(("token" = String, Path), ReturnFromCheckout),
    responses((status = 200, body = OrderPage), (status = 404, body = Problem)))]
pub async fn get_order(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(back): Query<ReturnFromCheckout>,
) -> AppResult<Json<OrderPage>> {
    if back.checkout.as_deref() == Some("done") {
        crate::payments::confirm_from_stripe(&state, &token).await?;
    }
    let order = orders::find_order_by_token(&state.db, &token)
        .await?
        .ok_or(AppError::not_found("order"))?;
    let tickets = tickets::tickets_of_order(&state.db, order.id)
        .await?
        .into_iter()
        .map(|t| ticket_page(&state, t))
        .collect();
    Ok(Json(OrderPage { order, tickets }))
}

/// One ticket with its signed code, by the secret link its holder received.
#[utoipa::path(get, path = "/api/tickets/{token}", tag = "checkout",
    params(("token" = String, Path)),
    responses((status = 200, body = TicketPage), (status = 404, body = Problem)))]
pub async fn get_ticket(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> AppResult<Json<TicketPage>> {
    let ticket = tickets::find_ticket_by_token(&state.db, &token)
        .await?
        .ok_or(AppError::not_found("ticket"))?;
    Ok(Json(ticket_page(&state, ticket)))
}
