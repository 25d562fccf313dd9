//! The admin API for the tenant's staff, behind OAuth2 bearer tokens: events, ticket types,
//! sales, the CSV report, cancellation, and check-in at the door. Each handler names the
//! permission it needs as `Staff<P>` (`events:write`, `sales:read`, `checkin`, `refunds`;
//! `admin` grants all) and its OpenAPI operation lists the same name.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::{self, Staff};
use crate::boxoffice;
use crate::cache::event_keys;
use crate::domain::{Money, Slug};
use crate::error::{AppError, AppResult, Problem};
use crate::http::ApiJson;
use crate::state::AppState;
use crate::store::catalog::{self, Event, EventDetails, TicketType, TicketTypeDetails};
use crate::store::ledger::{self, LedgerEntry, LedgerOf};
use crate::store::sales::{self, SalesLine};
use crate::store::tickets::CheckIn;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/events", post(create_event))
        .route("/api/admin/events/{slug}", put(update_event))
        .route("/api/admin/events/{slug}/cancel", post(cancel_event))
        .route(
            "/api/admin/events/{slug}/ticket-types",
            post(create_ticket_type),
        )
        .route(
            "/api/admin/events/{slug}/ticket-types/{id}",
            put(update_ticket_type),
        )
        .route("/api/admin/events/{slug}/sales", get(sales_summary))
        .route("/api/admin/events/{slug}/sales.csv", get(sales_csv))
        .route("/api/admin/check-ins", post(check_in))
        .route("/api/admin/orders/{id}/refunds", post(refund_order))
        .route("/api/admin/orders/{id}/ledger", get(order_ledger))
        .route("/api/admin/listings/{id}/ledger", get(listing_ledger))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    /// Only read on create; an event's slug never changes.
    #[schema(value_type = Option<String>)]
    pub slug: Option<Slug>,
    pub title: String,
    pub venue: String,
    #[serde(default)]
    pub description: String,
    pub image_url: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

impl EventInput {
    fn details(self) -> AppResult<EventDetails> {
        if self.title.trim().is_empty() || self.title.len() > 200 {
            return Err(AppError::invalid("a title is 1 to 200 characters"));
        }
        if self.ends_at <= self.starts_at {
            return Err(AppError::invalid("an event must end after it starts"));
        }
        if let Some(url) = &self.image_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(AppError::invalid("image_url must be an http(s) URL"));
        }
        Ok(EventDetails {
            title: self.title.trim().to_owned(),
            venue: self.venue,
            description: self.description,
            image_url: self.image_url,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
        })
    }
}

async fn event_for(state: &AppState, slug: &str) -> AppResult<Event> {
    catalog::find_event(&state.db, slug)
        .await?
        .ok_or(AppError::not_found("event"))
}

/// Creates an event.
#[utoipa::path(post, path = "/api/admin/events", tag = "admin", request_body = EventInput,
    security(("bearer" = ["events:write"])),
    responses((status = 201, body = Event),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_event(
    _staff: Staff<auth::EventsWrite>,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<EventInput>,
) -> AppResult<(StatusCode, Json<Event>)> {
    let slug = input
        .slug
        .clone()
        .ok_or_else(|| AppError::invalid("slug is required"))?;
    let event = catalog::create_event(&state.db, &slug, &input.details()?).await?;
    state.cache.invalidate(&event_keys(slug.as_str())).await;
    Ok((StatusCode::CREATED, Json(event)))
}

/// Replaces an event's details.
#[utoipa::path(put, path = "/api/admin/events/{slug}", tag = "admin",
    params(("slug" = String, Path)), request_body = EventInput, security(("bearer" = ["events:write"])),
    responses((status = 200, body = Event),
              (status = 404, body = Problem)))]
pub async fn update_event(
    _staff: Staff<auth::EventsWrite>,
    State(state): State<AppState>,
    Path(slug): Path<String>,
    ApiJson(input): ApiJson<EventInput>,
) -> AppResult<Json<Event>> {
    let slug = Slug::parse(&slug).map_err(|_| AppError::not_found("event"))?;
    let event = catalog::update_event(&state.db, &slug, &input.details()?).await?;
    state.cache.invalidate(&event_keys(slug.as_str())).await;
    Ok(Json(event))
}

/// Cancels an event: sales stop, holds and unpaid orders end, tickets stop admitting, every
/// buyer is refunded and resale payouts are cancelled or reversed.
#[utoipa::path(post, path = "/api/admin/events/{slug}/cancel", tag = "admin",
    params(("slug" = String, Path)), security(("bearer" = ["events:write"])),
    responses((status = 200, body = Event), (status = 404, body = Problem)))]
pub async fn cancel_event(
    _staff: Staff<auth::EventsWrite>,
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> AppResult<Json<Event>> {
    let event = event_for(&state, &slug).await?;
    sales::cancel_event(&state.db, event.id, &state.config.public_url).await?;
    state.cache.invalidate(&event_keys(&slug)).await;
    crate::payments::settle_requested(&state).await;
    Ok(Json(event_for(&state, &slug).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketTypeInput {
    pub name: String,
    pub price_minor: i64,
    /// Must be the storefront's currency.
    #[schema(value_type = String, example = "EUR")]
    pub currency: crate::domain::Currency,
    pub capacity: i32,
    pub per_order_limit: i32,
    pub sales_start: DateTime<Utc>,
    pub sales_end: DateTime<Utc>,
}

impl TicketTypeInput {
    fn details(self, state: &AppState) -> AppResult<TicketTypeDetails> {
        let price = Money::new(self.price_minor, self.currency)?
            .in_currency(state.config.currency)?
            .chargeable()?;
        if self.name.trim().is_empty() || self.name.len() > 100 {
            return Err(AppError::invalid("a name is 1 to 100 characters"));
        }
        if !(0..=1_000_000).contains(&self.capacity) {
            return Err(AppError::invalid("capacity must be between 0 and 1000000"));
        }
        if !(1..=100).contains(&self.per_order_limit) {
            return Err(AppError::invalid(
                "per_order_limit must be between 1 and 100",
            ));
        }
        if self.sales_end <= self.sales_start {
            return Err(AppError::invalid("sales must end after they start"));
        }
        Ok(TicketTypeDetails {
            name: self.name.trim().to_owned(),
            price,
            capacity: self.capacity,
            per_order_limit: self.per_order_limit,
            sales_start: self.sales_start,
            sales_end: self.sales_end,
        })
    }
}

/// Adds a ticket type to an event.
#[utoipa::path(post, path = "/api/admin/events/{slug}/ticket-types", tag = "admin",
    params(("slug" = String, Path)), request_body = TicketTypeInput, security(("bearer" = ["events:write"])),
    responses((status = 201, body = TicketType), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
pub async fn create_ticket_type(
    _staff: Staff<auth::EventsWrite>,
    State(state): State<AppState>,
    Path(slug): Path<String>,
    ApiJson(input): ApiJson<TicketTypeInput>,
) -> AppResult<(StatusCode, Json<TicketType>)> {
    let event = event_for(&state, &slug).await?;
    let details = input.details(&state)?;
    let created = catalog::create_ticket_type(&state.db, event.id, &details).await?;
    state.cache.invalidate(&event_keys(&slug)).await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Changes a ticket type; capacity cannot drop below what is sold and held.
#[utoipa::path(put, path = "/api/admin/events/{slug}/ticket-types/{id}", tag = "admin",
    params(("slug" = String, Path), ("id" = Uuid, Path)), request_body = TicketTypeInput,
    security(("bearer" = ["events:write"])),
    responses((status = 200, body = TicketType), (status = 409, body = Problem)))]
pub async fn update_ticket_type(
    _staff: Staff<auth::EventsWrite>,
    State(state): State<AppState>,
    Path((slug, id)): Path<(String, Uuid)>,
    ApiJson(input): ApiJson<TicketTypeInput>,
) -> AppResult<Json<TicketType>> {
    let event = event_for(&state, &slug).await?;
    let details = input.details(&state)?;
    let updated = catalog::update_ticket_type(&state.db, event.id, id, &details).await?;
    state.cache.invalidate(&event_keys(&slug)).await;
    Ok(Json(updated))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SalesSummary {
    pub event: Event,
    pub ticket_types: Vec<TicketType>,
    pub orders: Vec<SalesLine>,
}

/// Stock per ticket type and every paid order.
#[utoipa::path(get, path = "/api/admin/events/{slug}/sales", tag = "admin",
    params(("slug" = String, Path)), security(("bearer" = ["sales:read"])),
    responses((status = 200, body = SalesSummary), (status = 404, body = Problem)))]
pub async fn sales_summary(
    _staff: Staff<auth::SalesRead>,
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> AppResult<Json<SalesSummary>> {
    let view = boxoffice::catalog::event_view(&state, &slug).await?;
    let orders = sales::sales_lines(&state.db, view.event.id).await?;
    Ok(Json(SalesSummary {
        event: view.event,
        ticket_types: view.ticket_types,
        orders,
    }))
}

/// The paid orders as CSV, for spreadsheets and accounting.
#[utoipa::path(get, path = "/api/admin/events/{slug}/sales.csv", tag = "admin",
    params(("slug" = String, Path)), security(("bearer" = ["sales:read"])),
    responses((status = 200, content_type = "text/csv", body = String),
              (status = 404, body = Problem)))]
pub async fn sales_csv(
    _staff: Staff<auth::SalesRead>,
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> AppResult<impl IntoResponse> {
    let event = event_for(&state, &slug).await?;
    let lines = sales::sales_lines(&state.db, event.id).await?;
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record([
        "order_id",
        "kind",
        "paid_at",
        "ticket_type",
        "quantity",
        "total_minor",
        "currency",
        "buyer_email",
    ])
    .map_err(anyhow::Error::from)?;
    for line in &lines {
        csv.write_record([
            line.order_id.to_string(),
            neutralised(&line.kind),
            line.paid_at
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            neutralised(&line.ticket_type),
            line.quantity.to_string(),
            line.total_minor.to_string(),
            neutralised(&line.currency),
            neutralised(&line.buyer_email),
        ])
        .map_err(anyhow::Error::from)?;
    }
    let body = csv.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    let disposition = format!("attachment; filename=\"sales-{}.csv\"", event.slug);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    ))
}

/// A text cell a spreadsheet shows as text: one starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return (which spreadsheets read as a formula) gets a leading `'`.
fn neutralised(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInRequest {
    /// The scanned ticket code.
    pub code: String,
    /// The slug of the event being admitted: a code for another event is refused.
    pub event: String,
    /// Where the scan happens (at most 40 characters), told to whoever scans the code again.
    pub gate: Option<String>,
}

/// Admits a ticket at the door, once: a second scan is `409 already-admitted` saying when and
/// through which gate it got in; another event's code is `409 wrong-event` saying what it is
/// for.
#[utoipa::path(post, path = "/api/admin/check-ins", tag = "admin", request_body = CheckInRequest,
    security(("bearer" = ["checkin"])),
    responses((status = 200, body = CheckIn), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
pub async fn check_in(
    _staff: Staff<auth::CheckIn>,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CheckInRequest>,
) -> AppResult<Json<CheckIn>> {
    Ok(Json(
        boxoffice::door::check_in(&state, &req.code, &req.event, req.gate.as_deref()).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// Minor units to give back; the whole remaining amount when omitted.
    pub amount_minor: Option<i64>,
    /// Kept in the ledger.
    #[serde(default)]
    pub reason: String,
}

/// Refunds a paid order, partly or fully. A full refund voids its tickets; for a resale the
/// seller's payout is cancelled, or reversed when it was already sent.
#[utoipa::path(post, path = "/api/admin/orders/{id}/refunds", tag = "admin",
    params(("id" = Uuid, Path)), request_body = RefundRequest, security(("bearer" = ["refunds"])),
    responses((status = 201, body = LedgerEntry), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn refund_order(
    staff: Staff<auth::Refunds>,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    ApiJson(req): ApiJson<RefundRequest>,
) -> AppResult<(StatusCode, Json<LedgerEntry>)> {
    if req.reason.len() > 500 {
        return Err(AppError::invalid("a reason is at most 500 characters"));
    }
    let reason = format!("refund by {}: {}", staff.subject, req.reason.trim());
    let entry = crate::payments::refund_order(&state, id, req.amount_minor, &reason).await?;
    Ok((StatusCode::CREATED, Json(entry)))
}

/// Where the money of one order went: charge, fees, shares, payouts, refunds, disputes.
#[utoipa::path(get, path = "/api/admin/orders/{id}/ledger", tag = "admin",
    params(("id" = Uuid, Path)), security(("bearer" = ["sales:read"])),
    responses((status = 200, body = [LedgerEntry])))]
pub async fn order_ledger(
    _staff: Staff<auth::SalesRead>,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> AppResult<Json<Vec<LedgerEntry>>> {
    Ok(Json(ledger::ledger(&state.db, LedgerOf::Order(id)).await?))
}

/// Where the money of every order of one resale listing went.
#[utoipa::path(get, path = "/api/admin/listings/{id}/ledger", tag = "admin",
    params(("id" = Uuid, Path)), security(("bearer" = ["sales:read"])),
    responses((status = 200, body = [LedgerEntry])))]
pub async fn listing_ledger(
    _staff: Staff<auth::SalesRead>,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> AppResult<Json<Vec<LedgerEntry>>> {
    Ok(Json(
        ledger::ledger(&state.db, LedgerOf::Listing(id)).await?,
    ))
}
