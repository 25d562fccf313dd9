//! The OpenAPI document of the JSON and admin APIs, served at `/api/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http::{admin, api};
use crate::state::AppState;

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Tiqzy storefront API", description = "Events, holds, orders, tickets, resale, and the staff admin API."),
    paths(
        api::catalog::list_events, api::catalog::get_event,
        api::checkout::create_hold, api::checkout::release_hold, api::checkout::create_order,
        api::checkout::get_order, api::checkout::get_ticket,
        api::resale::create_listing, api::resale::withdraw_listing, api::resale::list_listings,
        api::resale::purchase_listing,
        admin::create_event, admin::update_event, admin::cancel_event,
        admin::create_ticket_type, admin::update_ticket_type,
        admin::sales_summary, admin::sales_csv, admin::check_in,
        admin::refund_order, admin::order_ledger, admin::listing_ledger,
        api::payments::start_checkout, api::payments::start_onboarding,
        crate::http::webhooks::receive,
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async { Json(ApiDoc::openapi()) }),
    )
}
