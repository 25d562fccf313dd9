//! The server-rendered, white-labelled storefront: browse, hold, check out, see tickets,
//! resell. Forms post and redirect, so every page works without JavaScript.

mod browse;
mod checkout;
mod identity;
mod render;
mod resale;

use axum::Router;
use axum::routing::{get, post};
use serde::Deserialize;

use crate::state::AppState;

pub use render::environment as pages;

/// The tenant's error page for `error`.
pub fn error_page(state: &AppState, error: crate::error::AppError) -> axum::response::Response {
    render::page(state, Err(error))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(browse::events))
        .route("/events/{slug}", get(browse::event))
        .route("/events/{slug}/holds", post(checkout::hold))
        .route(
            "/checkout/{hold_id}",
            get(checkout::checkout).post(checkout::order),
        )
        .route("/orders/{token}", get(checkout::order_page))
        .route("/orders/{token}/pay", post(checkout::pay))
        .route("/tickets/{token}/payouts", post(resale::payouts))
        .route("/tickets/{token}", get(resale::ticket))
        .route("/tickets/{token}/sell", post(resale::sell))
        .route("/tickets/{token}/withdraw", post(resale::withdraw))
        .route("/resale", get(resale::market))
        .route("/resale/{listing_id}", post(resale::buy_listing))
        .route("/my-tickets", get(identity::my_tickets))
        .route("/sign-in", post(identity::ask_for_link))
        .route(
            "/sign-in/{token}",
            get(identity::link).post(identity::follow_link),
        )
        .route("/sign-out", post(identity::sign_out))
}

/// The buyer's address, from the checkout and the resale market's purchase forms.
#[derive(Debug, Deserialize)]
pub struct EmailForm {
    email: String,
}
