//! The pages a buyer browses: upcoming events, and one event with a form for its tickets.

use axum::extract::{Path, State};
use axum::response::Response;
use minijinja::context;

use super::render::{cached, page, render};
use crate::boxoffice::catalog;
use crate::state::AppState;

pub async fn events(State(state): State<AppState>) -> Response {
    let outcome = cached(&state, "page:events", async {
        let events = catalog::upcoming_events(&state).await?;
        render(&state, "events.html", context! { events })
    })
    .await;
    page(&state, outcome)
}

pub async fn event(State(state): State<AppState>, Path(slug): Path<String>) -> Response {
    let outcome = cached(&state, &format!("page:event:{slug}"), async {
        let view = catalog::event_view(&state, &slug).await?;
        let ticket_types: Vec<_> = view
            .ticket_types
            .iter()
            .map(|tt| {
                context! {
                    id => tt.id, name => tt.name, available => tt.available,
                    price_display => state.config.locale.money(tt.price),
                    max_quantity => tt.available.min(tt.per_order_limit).max(0),
                }
            })
            .collect();
        // With one ticket type to choose from, one ticket is preselected.
        let on_sale = view
            .ticket_types
            .iter()
            .filter(|tt| tt.available > 0)
            .count();
        render(
            &state,
            "event.html",
            context! { event => view.event, ticket_types, on_sale },
        )
    })
    .await;
    page(&state, outcome)
}
