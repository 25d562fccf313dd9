//! HTTP surfaces, one router per feature, merged here with the layers every request passes.

pub mod admin;
pub mod api;
mod client;
pub mod health;
pub mod openapi;
mod rejection;
mod reporting;
pub mod schema;
pub mod security;
pub mod session;
pub mod storefront;
pub mod webhooks;

use std::time::Duration;

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::{Router, middleware};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::AppError;
use crate::state::AppState;

/// Every request body we accept is small; bigger ones are refused before being read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub use client::{ClientId, client_address, client_key};
pub use health::metrics_router;

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(health::router())
        .merge(api::router())
        .merge(admin::router())
        .merge(openapi::router())
        .merge(storefront::router())
        .merge(webhooks::router())
        .merge(security::static_files());
    with_layers(routes, state)
}

/// `routes` behind the layers every request passes (tests put routes of their own behind
/// them to see what a handler that panics gets).
pub fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(no_route)
        .layer(CatchPanicLayer::custom(reporting::panicked))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        // Enforced by the extractors, whose rejection becomes a problem body (413).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            rejection::as_problems,
        ))
        .layer(middleware::from_fn(security::headers))
        // Its events happen in the request span below; a span of its own would log the URI,
        // whose path and query may carry a capability token.
        .layer(TraceLayer::new_for_http().make_span_with(|_: &Request| tracing::Span::none()))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            reporting::report,
        ))
        .with_state(state)
}

async fn no_route() -> AppError {
    AppError::client(
        StatusCode::NOT_FOUND,
        "no-route",
        "Not found",
        "there is nothing at this address",
    )
}

/// `axum::Json`, but every rejection (malformed, wrong type, too large) is a problem body.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// The query of an order link the buyer follows back from Stripe Checkout.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
pub struct ReturnFromCheckout {
    /// `done` when the buyer comes back from Stripe Checkout: the payment is then read back
    /// from Stripe (the redirect itself proves nothing).
    pub checkout: Option<String>,
}

impl ReturnFromCheckout {
    pub fn from_checkout(&self) -> bool {
        self.checkout.as_deref() == Some("done")
    }
}
