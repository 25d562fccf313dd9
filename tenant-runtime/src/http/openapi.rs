//! The OpenAPI document of the JSON and admin APIs, served at `/api/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref};
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
        api::identity::ask_for_link, api::identity::follow_link, api::identity::sign_out,
        api::identity::my_orders,
        api::ticket_keys::ticket_keys,
        crate::http::webhooks::receive,
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// The bearer scheme, with the permissions it carries, and on every admin operation the
/// 401 and 403 answers its `Staff<P>` extractor gives.
struct BearerAuth;

const BEARER: &str = "OAuth2 access token (JWT) from the tenant's issuer, for its audience. \
The operation's listed permission must be granted by the token's `scope` claim (space-separated), \
`scp` (string or array) or `roles` (array): `events:write`, `sales:read`, `checkin`, `refunds`, \
or `admin` for all. Without a valid token: 401; without the permission: 403.";

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(BEARER))
                    .build(),
            ),
        );
        let refusals = [
            ("401", "No valid staff bearer token"),
            ("403", "The token lacks the operation's permission"),
        ];
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/admin/") {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, description) in refusals {
                    let problem = ResponseBuilder::new().description(description).content(
                        "application/problem+json",
                        Content::new(Some(Ref::from_schema_name("Problem"))),
                    );
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| problem.into());
                }
            }
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async { Json(ApiDoc::openapi()) }),
    )
}
