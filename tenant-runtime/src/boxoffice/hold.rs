//! Holding tickets while a buyer checks out, and the basket the checkout shows.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::catalog::{EventView, event_view};
use crate::cache::Limit;
use crate::domain::Money;
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::store::catalog::{self, Event};
use crate::store::client_caps::ClientCap;
use crate::store::holds::{self, Hold, HoldLine};

/// Holds tickets of one or more types for `client` (who is asking, as limits count it): the
/// rate limit first, then the client's cap in the event and the stock. One ticket type (what
/// an on-sale rush asks for) is granted in its type's next batch; a basket of several types
/// takes its counter rows in one transaction of its own.
pub async fn hold_tickets(state: &AppState, client: &str, lines: &[HoldLine]) -> AppResult<Hold> {
    if !rate_limit(state, Limit::Holds, client).await {
        state.metrics.hold("rate_limited");
        return Err(AppError::client(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            "too many holds from this client; please wait a minute",
        ));
    }
    let cap = ClientCap::new(client, state.config.max_tickets_per_client);
    let placed = match lines {
        [line] => state.allocator.hold(*line, cap).await,
        _ => holds::place_hold(&state.db, lines, state.config.hold_ttl, Some(&cap)).await,
    };
    state.metrics.hold(match &placed {
        Ok(_) => "held",
        Err(AppError::Client {
            kind: "ticket-cap", ..
        }) => "capped",
        Err(AppError::Client {
            kind: "sold-out", ..
        }) => "sold_out",
        Err(_) => "refused",
    });
    placed
}

/// Counts one more `limit` event for `client`: whether it is allowed. Counted in Redis, or in
/// this process while Redis is away; the metric says which.
pub async fn rate_limit(state: &AppState, limit: Limit, client: &str) -> bool {
    let (allowed, counted_in) = state
        .cache
        .allow(limit, client, state.config.hold_rate_limit)
        .await;
    let name = match limit {
        Limit::Holds => "holds",
        Limit::Reservations => "reservations",
    };
    state.metrics.rate_limit(name, counted_in.name(), allowed);
    allowed
}

/// Gives held tickets back before the hold would expire.
pub async fn release_hold(state: &AppState, id: Uuid) -> AppResult<()> {
    if holds::release_hold(&state.db, id).await? {
        Ok(())
    } else {
        Err(AppError::not_found("active hold"))
    }
}

/// A live hold as the buyer checks it out: what they hold, at today's prices.
#[derive(Debug, Clone)]
pub struct Basket {
    pub event: Event,
    pub hold_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub lines: Vec<BasketLine>,
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasketLine {
    pub quantity: u32,
    pub ticket_type: String,
    pub amount: Money,
}

/// The basket of a live hold; a hold that lapsed or was used is a conflict the buyer can act
/// on (start again).
pub async fn basket(state: &AppState, hold_id: Uuid) -> AppResult<Basket> {
    let hold = holds::find_hold(&state.db, hold_id).await?.ok_or_else(|| {
        AppError::conflict(
            "hold-expired",
            "your reservation has expired; please start again",
        )
    })?;
    let first = hold
        .items
        .first()
        .ok_or(AppError::not_found("ticket type"))?;
    let slug = catalog::event_slug_of(&state.db, first.ticket_type_id)
        .await?
        .ok_or(AppError::not_found("ticket type"))?;
    basket_of(hold, event_view(state, &slug).await?)
}

/// Prices each held ticket type from the event's current ticket types.
fn basket_of(hold: Hold, view: EventView) -> AppResult<Basket> {
    let mut lines = Vec::with_capacity(hold.items.len());
    let mut total: Option<Money> = None;
    for item in &hold.items {
        let tt = view
            .ticket_types
            .iter()
            .find(|tt| tt.id == item.ticket_type_id)
            .ok_or(AppError::not_found("ticket type"))?;
        let quantity = u32::try_from(item.quantity).map_err(anyhow::Error::from)?;
        let amount = tt.price.times(quantity)?;
        Money::accumulate(&mut total, amount)?;
        lines.push(BasketLine {
            quantity,
            ticket_type: tt.name.clone(),
            amount,
        });
    }
    Ok(Basket {
        event: view.event,
        hold_id: hold.id,
        expires_at: hold.expires_at,
        lines,
        total: total.ok_or(AppError::not_found("ticket type"))?,
    })
}

#[cfg(test)]
mod tests;
