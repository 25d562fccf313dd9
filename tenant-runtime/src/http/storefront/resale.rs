//! A ticket's page, where its holder can resell it, and the resale market where others buy.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;
use uuid::Uuid;

use super::EmailForm;
use super::render::{html, page, render, see_other};
use crate::boxoffice;
use crate::domain::{Email, Money};
use crate::error::{AppError, AppResult};
use crate::http::ClientId;
use crate::http::session::SignedIn;
use crate::state::AppState;

/// The ticket with its QR code; its verified holder also gets the forms to resell it.
pub async fn ticket(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(token): Path<String>,
) -> Response {
    let outcome = async {
        let view = boxoffice::order::ticket_view(&state, &token).await?;
        let holder = crate::store::payments::holder_of_ticket(&state.db, &token).await?;
        let session = signed_in.session();
        let is_holder = holder
            .as_deref()
            .is_some_and(|h| session.is_some_and(|s| s.email.is(h)));
        let signed_in_as = session.map(|s| s.email.as_str().to_owned());
        let terms =
            boxoffice::resale::terms(&view.ticket, &state.config.resale, chrono::Utc::now());
        let ceiling = state.config.locale.money(terms.ceiling);
        let currency = view.ticket.face_value.currency.to_string();
        let qr = view.code.as_deref().map(qr_svg).transpose()?;
        let bps = terms.seller_fee_bps;
        let fee_percent = format!("{}.{:02}%", bps / 100, bps % 100);
        render(&state, "ticket.html", context! {
            ticket => view.ticket, code => view.code, qr, token, can_sell => terms.open, ceiling,
            currency, fee_percent, is_holder, signed_in_as,
        })
        .map(html)
    }
    .await;
    page(&state, outcome)
}

fn qr_svg(code: &str) -> AppResult<String> {
    Ok(qrcode::QrCode::new(code.as_bytes())
        .map_err(|e| anyhow::anyhow!("QR code: {e}"))?
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(240, 240)
        .build())
}

#[derive(Debug, Deserialize)]
pub struct SellForm {
    price: String,
}

pub async fn sell(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(token): Path<String>,
    Form(form): Form<SellForm>,
) -> Response {
    let outcome = async {
        let price = Money::parse_major(&form.price, state.config.currency)
            .map_err(|_| AppError::invalid("enter a price like 25.00"))?;
        boxoffice::resale::list_ticket(&state, signed_in.session(), &token, price).await?;
        Ok(see_other(&format!("/tickets/{token}")))
    }
    .await;
    page(&state, outcome)
}

pub async fn withdraw(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(token): Path<String>,
) -> Response {
    let outcome = async {
        boxoffice::resale::withdraw_listing(&state, signed_in.session(), &token).await?;
        Ok(see_other(&format!("/tickets/{token}")))
    }
    .await;
    page(&state, outcome)
}

pub async fn payouts(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(token): Path<String>,
) -> Response {
    let outcome = async {
        let onboarding =
            crate::payments::start_onboarding(&state, signed_in.session(), &token).await?;
        Ok(see_other(&onboarding.onboarding_url))
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
        let locale = &state.config.locale;
        let listings: Vec<_> = boxoffice::resale::market(&state, filter.event.as_deref())
            .await?
            .into_iter()
            .map(|l| {
                context! {
                    id => l.id, event_title => l.event_title, ticket_type => l.ticket_type,
                    price_display => locale.money(l.price),
                    face_display => locale.money(l.face_value),
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
    client: ClientId,
    Path(listing_id): Path<Uuid>,
    Form(form): Form<EmailForm>,
) -> Response {
    let outcome = async {
        let email = Email::parse(&form.email)?;
        let order = boxoffice::resale::buy_listing(&state, &client.0, listing_id, &email).await?;
        Ok(see_other(&format!("/orders/{}", order.access_token)))
    }
    .await;
    page(&state, outcome)
}
