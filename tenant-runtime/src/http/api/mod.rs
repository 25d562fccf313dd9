//! The public JSON API under `/api`: what the storefront's buyers and resellers can do.

pub mod catalog;
pub mod checkout;
pub mod identity;
pub mod payments;
pub mod resale;
pub mod ticket_keys;

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(catalog::router())
        .merge(checkout::router())
        .merge(identity::router())
        .merge(payments::router())
        .merge(resale::router())
        .merge(ticket_keys::router())
}
