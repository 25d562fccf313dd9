//! Browsing: events and their ticket types with live availability, cached briefly in Redis.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::boxoffice::catalog::{self, EventView};
use crate::cache::PAGE_TTL_SECS;
use crate::error::{AppResult, Problem};
use crate::state::AppState;
use crate::store::catalog::Event;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/events", get(list_events))
        .route("/api/events/{slug}", get(get_event))
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
    let events = catalog::upcoming_events(&state).await?;
    let body = serde_json::to_string(&events).map_err(anyhow::Error::from)?;
    state.cache.put("api:events", &body, PAGE_TTL_SECS).await;
    Ok(json_body(body))
}

/// One event and its ticket types with availability.
#[utoipa::path(get, path = "/api/events/{slug}", tag = "catalog",
    params(("slug" = String, Path, description = "the event's slug")),
    responses((status = 200, body = EventView), (status = 404, body = Problem)))]
pub async fn get_event(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> AppResult<impl IntoResponse> {
    let key = format!("api:event:{slug}");
    if let Some(body) = state.cache.get(&key).await {
        return Ok(json_body(body));
    }
    let view = catalog::event_view(&state, &slug).await?;
    let body = serde_json::to_string(&view).map_err(anyhow::Error::from)?;
    state.cache.put(&key, &body, PAGE_TTL_SECS).await;
    Ok(json_body(body))
}
