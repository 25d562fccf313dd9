//! Browsing: events and their ticket types with live availability, cached briefly in Redis.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;

use crate::cache::PAGE_TTL_SECS;
use crate::error::{AppError, AppResult, Problem};
use crate::state::AppState;
use crate::store::catalog::{self, Event, TicketType};
use crate::store::holds;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/events", get(list_events))
        .route("/api/events/{slug}", get(get_event))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub event: Event,
    pub ticket_types: Vec<TicketType>,
}

/// An event with its ticket types, lapsed holds returned first so availability is current.
pub async fn event_page(state: &AppState, slug: &str) -> AppResult<EventPage> {
    let event = catalog::find_event(&state.db, slug)
        .await?
        .ok_or(AppError::not_found("event"))?;
    holds::release_expired_for_event(&state.db, event.id).await?;
    let ticket_types = catalog::ticket_types(&state.db, event.id).await?;
    Ok(EventPage {
        event,
        ticket_types,
    })
}

fn json_body(body: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// Upcoming events, soonest first.
#[utoipa::path(get, path = "/api/events", tag = "catalog",
    responses((status = 200, body = [Event])))]
pub async fn list_events(State(state): State<AppState>) -> AppResult<impl IntoResponse> {
    if let Some(body) = state.cache.get("api:events").await {
        return Ok(json_body(body));
    }
    let events = catalog::upcoming_events(&state.db).await?;
    let body = serde_json::to_string(&events).map_err(anyhow::Error::from)?;
    state.cache.put("api:events", &body, PAGE_TTL_SECS).await;
    Ok(json_body(body))
}

/// One event and its ticket types with availability.
#[utoipa::path(get, path = "/api/events/{slug}", tag = "catalog",
    params(("slug" = String, Path, description = "the event's slug")),
    responses((status = 200, body = EventPage), (status = 404, body = Problem)))]
pub async fn get_event(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> AppResult<impl IntoResponse> {
    let key = format!("api:event:{slug}");
    if let Some(body) = state.cache.get(&key).await {
        return Ok(json_body(body));
    }
    let page = event_page(&state, &slug).await?;
    let body = serde_json::to_string(&page).map_err(anyhow::Error::from)?;
    state.cache.put(&key, &body, PAGE_TTL_SECS).await;
    Ok(json_body(body))
}
