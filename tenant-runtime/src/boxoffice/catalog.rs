//! Browsing: upcoming events, and one event with its ticket types' current availability.

use serde::Serialize;

use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::store::catalog::{self, Event, TicketType};
use crate::store::holds;

/// An event as a buyer chooses tickets for it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = EventPage)]
pub struct EventView {
    pub event: Event,
    pub ticket_types: Vec<TicketType>,
}

/// Upcoming events, soonest first.
pub async fn upcoming_events(state: &AppState) -> AppResult<Vec<Event>> {
    catalog::upcoming_events(&state.db).await
}

/// An event with its ticket types; lapsed holds are returned first so availability is current.
pub async fn event_view(state: &AppState, slug: &str) -> AppResult<EventView> {
    let event = catalog::find_event(&state.db, slug)
        .await?
        .ok_or(AppError::not_found("event"))?;
    holds::release_expired_for_event(&state.db, event.id).await?;
    let ticket_types = catalog::ticket_types(&state.db, event.id).await?;
    Ok(EventView {
        event,
        ticket_types,
    })
}
