//! Buying through the storefront's forms: hold from the event page, check out, follow the
//! order link, pay.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use minijinja::context;
use uuid::Uuid;

use super::EmailForm;
use super::render::{html, page, render, see_other};
use crate::boxoffice;
use crate::domain::{Email, Quantity};
use crate::error::{AppError, AppResult};
use crate::http::{ClientId, ReturnFromCheckout};
use crate::state::AppState;
use crate::store::holds::HoldLine;

/// The event page's one form: a `q-<ticket type id>` field per ticket type, holding how many
/// of that type; types left at 0 are not held.
fn hold_lines(fields: &[(String, String)]) -> AppResult<Vec<HoldLine>> {
    let mut lines = Vec::new();
    for (name, value) in fields {
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
            lines.push(HoldLine {
                ticket_type_id,
                quantity: Quantity::new(quantity)?,
            });
        }
    }
    if lines.is_empty() {
        return Err(AppError::invalid(
            "choose how many tickets of at least one type",
        ));
    }
    Ok(lines)
}

pub async fn hold(
    State(state): State<AppState>,
    client: ClientId,
    Path(_slug): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let outcome = async {
        let held = boxoffice::hold::hold_tickets(&state, &client.0, &hold_lines(&fields)?).await?;
        Ok(see_other(&format!("/checkout/{}", held.id)))
    }
    .await;
    page(&state, outcome)
}

pub async fn checkout(State(state): State<AppState>, Path(hold_id): Path<Uuid>) -> Response {
    let outcome = async {
        let basket = boxoffice::hold::basket(&state, hold_id).await?;
        let locale = &state.config.locale;
        let lines: Vec<_> = basket
            .lines
            .iter()
            .map(|line| {
                context! {
                    quantity => line.quantity, ticket_type => line.ticket_type,
                    amount => locale.money(line.amount),
                }
            })
            .collect();
        let seconds_left = (basket.expires_at - chrono::Utc::now())
            .num_seconds()
            .max(0);
        render(
            &state,
            "checkout.html",
            context! {
                event => basket.event, hold_id => basket.hold_id, lines,
                total => locale.money(basket.total), expires_at => basket.expires_at, seconds_left,
            },
        )
        .map(html)
    }
    .await;
    page(&state, outcome)
}

pub async fn order(
    State(state): State<AppState>,
    Path(hold_id): Path<Uuid>,
    Form(form): Form<EmailForm>,
) -> Response {
    let outcome = async {
        let email = Email::parse(&form.email)?;
        let order = boxoffice::order::open_order(&state, hold_id, &email).await?;
        Ok(see_other(&format!("/orders/{}", order.access_token)))
    }
    .await;
    page(&state, outcome)
}

pub async fn order_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(back): Query<ReturnFromCheckout>,
) -> Response {
    let outcome = async {
        let view = boxoffice::order::order_view(&state, &token, back.from_checkout()).await?;
        let (order, tickets) = (view.order, view.tickets);
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

pub async fn pay(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let outcome = async {
        let checkout = crate::payments::start_checkout(&state, &token).await?;
        Ok(see_other(&checkout.checkout_url))
    }
    .await;
    page(&state, outcome)
}
