//! The server-rendered, white-labelled storefront: browse, hold, check out, see tickets,
//! resell. Forms post and redirect, so every page works without JavaScript.

mod pages;
mod render;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

pub use render::environment as pages;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::events))
        .route("/events/{slug}", get(pages::event))
        .route("/events/{slug}/holds", post(pages::hold))
        .route(
            "/checkout/{hold_id}",
            get(pages::checkout).post(pages::order),
        )
        .route("/orders/{token}", get(pages::order_page))
        .route("/orders/{token}/pay", post(pages::pay))
        .route("/tickets/{token}/payouts", post(pages::payouts))
        .route("/tickets/{token}", get(pages::ticket))
        .route("/tickets/{token}/sell", post(pages::sell))
        .route("/tickets/{token}/withdraw", post(pages::withdraw))
        .route("/resale", get(pages::market))
        .route("/resale/{listing_id}", post(pages::buy_listing))
}
