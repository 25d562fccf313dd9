//! Storefront pages and their form posts.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;
use uuid::Uuid;

use super::render::{html, page, render, see_other};
use crate::cache::PAGE_TTL_SECS;
use crate::domain::{Email, Money, Quantity};
use crate::error::{AppError, AppResult};
use crate::http::ClientId;
use crate::http::api::catalog::event_page;
use crate::http::api::checkout::{CreateHold, HoldItemRequest, hold_tickets, ticket_page};
use crate::state::AppState;
use crate::store::{catalog, holds, listings, orders, tickets};

/// Serves a page from the cache, or renders and caches it.
async fn cached(
    state: &AppState,
    key: &str,
    build: impl Future<Output = AppResult<String>>,
) -> AppResult<Response> {
    if let Some(body) = state.cache.get(key).await {
        return Ok(html(body));
    }
    let body = build.await?;
    state.cache.put(key, &body, PAGE_TTL_SECS).await;
    Ok(html(body))
}

pub async fn events(State(state): State<AppState>) -> Response {
    let outcome = cached(&state, "page:events", async {
        let events = catalog::upcoming_events(&state.db).await?;
        render(&state, "events.html", context! { events })
    })
    .await;
    page(&state, outcome)
}

pub async fn event(State(state): State<AppState>, Path(slug): Path<String>) -> Response {
    let outcome = cached(&state, &format!("page:event:{slug}"), async {
        let page = event_page(&state, &slug).await?;
        let ticket_types: Vec<_> = page
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
        let on_sale = page
            .ticket_types
            .iter()
            .filter(|tt| tt.available > 0)
            .count();
        render(
            &state,
            "event.html",
            context! { event => page.event, ticket_types, on_sale },
        )
    })
    .await;
    page(&state, outcome)
}

/// The event page's one form: a `q-<ticket type id>` field per ticket type, holding how many
/// of that type; types left at 0 are not held.
pub async fn hold(
    State(state): State<AppState>,
    client: ClientId,
    Path(_slug): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let outcome = async {
        let mut items = Vec::new();
        for (name, value) in &fields {
            let Some(id) = name.strip_prefix("q-") else {
                continue;
            };
            let ticket_type_id = id
                .parse::<Uuid>()
                .map_err(|_| AppError::invalid("the form names an unknown ticket type"))?;
            let quantity = value
                .trim()
                .parse::<i64>()
                .map_err(|_| AppError::invalid("choose how many tickets"))?;
            if quantity != 0 {
                items.push(HoldItemRequest {
                    ticket_type_id,
                    quantity: Quantity::new(quantity)?,
                });
            }
        }
        if items.is_empty() {
            return Err(AppError::invalid(
                "choose how many tickets of at least one type",
            ));
        }
        let request = CreateHold {
            items: Some(items),
            ..CreateHold::default()
        };
        let hold = hold_tickets(&state, &client, request).await?;
        Ok(see_other(&format!("/checkout/{}", hold.id)))
    }
    .await;
    page(&state, outcome)
}

pub async fn checkout(State(state): State<AppState>, Path(hold_id): Path<Uuid>) -> Response {
    let outcome = async {
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
        let event = event_page(&state, &slug).await?;
        let locale = &state.config.locale;
        let mut lines = Vec::with_capacity(hold.items.len());
        let mut total: Option<Money> = None;
        for item in &hold.items {
            let tt = event
                .ticket_types
                .iter()
                .find(|tt| tt.id == item.ticket_type_id)
                .ok_or(AppError::not_found("ticket type"))?;
            let quantity = u32::try_from(item.quantity).map_err(anyhow::Error::from)?;
            let amount = tt.price.times(quantity)?;
            Money::accumulate(&mut total, amount)?;
            lines.push(context! {
                quantity, ticket_type => tt.name, amount => locale.money(amount),
            });
        }
        let total = total.ok_or(AppError::not_found("ticket type"))?;
        let seconds_left = (hold.expires_at - chrono::Utc::now()).num_seconds().max(0);
        render(
            &state,
            "checkout.html",
            context! {
                event => event.event, hold_id => hold.id, lines, total => locale.money(total),
                expires_at => hold.expires_at, seconds_left,
            },
        )
        .map(html)
    }
    .await;
    page(&state, outcome)
}

#[derive(Debug, Deserialize)]
pub struct EmailForm {
    email: String,
}

pub async fn order(
    State(state): State<AppState>,
    Path(hold_id): Path<Uuid>,
    Form(form): Form<EmailForm>,
) -> Response {
    let outcome = async {
        let email = Email::parse(&form.email)?;
        let order = crate::payments::open_order(&state, hold_id, &email).await?;
        Ok(see_other(&format!("/orders/{}", order.access_token)))
    }
    .await;
    page(&state, outcome)
}

#[derive(Debug, Deserialize)]
pub struct BackFromCheckout {
    checkout: Option<String>,
}

pub async fn order_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(back): Query<BackFromCheckout>,
) -> Response {
    let outcome = async {
        if back.checkout.as_deref() == Some("done") {
            // Ask Stripe; the redirect alone proves nothing.
            crate::payments::confirm_from_stripe(&state, &token).await?;
        }
        let order = orders::find_order_by_token(&state.db, &token)
            .await?
            .ok_or(AppError::not_found("order"))?;
        let tickets: Vec<_> = tickets::tickets_of_order(&state.db, order.id)
            .await?
            .into_iter()
            .map(|t| ticket_page(&state, t))
            .collect();
        let locale = &state.config.locale;
        let total = locale.money(order.total);
        let refunded = (order.refunded_minor > 0)
            .then(|| locale.amount(order.refunded_minor, order.total.currency));
        render(
            &state,
            "order.html",
            context! { order, tickets, total, refunded, token },
        )
        .map(html)
    }
    .await;
    page(&state, outcome)
}

pub async fn ticket(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let outcome = async {
        let ticket = tickets::find_ticket_by_token(&state.db, &token)
            .await?
            .ok_or(AppError::not_found("ticket"))?;
        let resale = state.config.resale;
        let can_sell = resale.enabled
            && ticket.valid
            && !ticket.listed
            && ticket.checked_in_at.is_none()
            && ticket.starts_at > chrono::Utc::now();
        let ceiling = state.config.locale.money(resale.price_cap.ceiling(ticket.face_value));
        let currency = ticket.face_value.currency.to_string();
        let view = ticket_page(&state, ticket);
        let qr = match &view.code {
            Some(code) => Some(
                qrcode::QrCode::new(code.as_bytes())
                    .map_err(|e| anyhow::anyhow!("QR code: {e}"))?
                    .render::<qrcode::render::svg::Color>()
                    .min_dimensions(240, 240)
                    .build(),
            ),
            None => None,
        };
        let fee_percent = format!("{}.{:02}%", resale.seller_fee_bps / 100, resale.seller_fee_bps % 100);
        render(&state, "ticket.html", context! {
            ticket => view.ticket, code => view.code, qr, token, can_sell, ceiling, currency, fee_percent,
        })
        .map(html)
    }
    .await;
    page(&state, outcome)
}

#[derive(Debug, Deserialize)]
pub struct SellForm {
    price: String,
}

pub async fn sell(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Form(form): Form<SellForm>,
) -> Response {
    let outcome = async {
        let price = Money::parse_major(&form.price, state.config.currency)
            .map_err(|_| AppError::invalid("enter a price like 25.00"))?;
        listings::create_listing(&state.db, &token, price, &state.config.resale).await?;
        Ok(see_other(&format!("/tickets/{token}")))
    }
    .await;
    page(&state, outcome)
}

pub async fn withdraw(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let outcome = async {
        listings::withdraw_listing(&state.db, &token).await?;
        Ok(see_other(&format!("/tickets/{token}")))
    }
    .await;
    page(&state, outcome)
}

#[derive(Debug, Deserialize)]
pub struct MarketFilter {
    event: Option<String>,
}

pub async fn market(State(state): State<AppState>, Query(filter): Query<MarketFilter>) -> Response {
    let outcome = async {
        let listings: Vec<_> = listings::open_listings(&state.db, filter.event.as_deref())
            .await?
            .into_iter()
            .map(|l| {
                context! {
                    id => l.id, event_title => l.event_title, ticket_type => l.ticket_type,
                    price_display => state.config.locale.money(l.price),
                    face_display => state.config.locale.money(l.face_value),
                }
            })
            .collect();
        let cap_percent = state.config.resale.price_cap.percent();
        render(&state, "market.html", context! { listings, cap_percent }).map(html)
    }
    .await;
    page(&state, outcome)
}

pub async fn buy_listing(
    State(state): State<AppState>,
    Path(listing_id): Path<Uuid>,
    Form(form): Form<EmailForm>,
) -> Response {
    let outcome = async {
        let email = Email::parse(&form.email)?;
        let order = crate::payments::open_resale_order(&state, listing_id, &email).await?;
        Ok(see_other(&format!("/orders/{}", order.access_token)))
    }
    .await;
    page(&state, outcome)
}

pub async fn pay(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let outcome = async {
        let checkout = crate::payments::start_checkout(&state, &token).await?;
        Ok(see_other(&checkout.checkout_url))
    }
    .await;
    page(&state, outcome)
}

pub async fn payouts(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let outcome = async {
        let onboarding = crate::payments::start_onboarding(&state, &token).await?;
        Ok(see_other(&onboarding.onboarding_url))
    }
    .await;
    page(&state, outcome)
}
