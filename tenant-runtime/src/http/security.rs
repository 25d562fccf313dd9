//! What every response tells the browser to protect buyers: a Content-Security-Policy with no
//! inline script and no framing, no MIME sniffing, no Referer (links carry capability tokens),
//! HTTPS only; and `Cache-Control: no-store` on the pages and API answers reached by a secret
//! link (orders, tickets, checkouts), so no shared cache or back button keeps them.
//!
//! Also serves the storefront's few static files, compiled into the binary.

use axum::Router;
use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

/// Scripts and styles from the storefront only (styles may be inline: the tenant's colours are
/// written into the page); images also from HTTPS hosts (a tenant's logo); forms post to the
/// storefront and redirect to Stripe's hosted pages; never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' https: data:; connect-src 'self'; \
     form-action 'self' https://checkout.stripe.com https://connect.stripe.com; \
     frame-ancestors 'none'; base-uri 'none'";

/// Paths whose address is a secret (an order, ticket, checkout or sign-in link), or that show
/// a signed-in buyer's orders.
const SECRET_LINKS: [&str; 9] = [
    "/orders/",
    "/tickets/",
    "/checkout/",
    "/api/orders/",
    "/api/tickets/",
    "/sign-in",
    "/my-tickets",
    "/api/me",
    "/api/session",
];

pub async fn headers(request: Request, next: Next) -> Response {
    let secret_link = SECRET_LINKS
        .iter()
        .any(|prefix| request.uri().path().starts_with(prefix));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if secret_link {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// `/static/*`: the checkout countdown.
pub fn static_files() -> Router<AppState> {
    Router::new().route("/static/countdown.js", get(countdown))
}

async fn countdown() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/countdown.js"),
    )
}
