//! Templates, the branding every page carries, the page cache, and error pages.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::{Environment, Value, context};

use crate::cache::PAGE_TTL_SECS;
use crate::error::{AppError, AppResult};
use crate::locale::Locale;
use crate::state::AppState;

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../templates/", $name)))),*]
    };
}

/// Compiled into the binary: the image needs no template files and a read-only root fs is fine.
const TEMPLATES: &[(&str, &str)] = templates!(
    "layout.html",
    "events.html",
    "event.html",
    "checkout.html",
    "order.html",
    "ticket.html",
    "market.html",
    "error.html",
    "sign_in.html",
    "sign_in_link.html",
    "my_tickets.html",
);

/// The templates, with a `datetime` filter that writes timestamps the tenant's way.
pub fn environment(locale: Locale) -> anyhow::Result<Environment<'static>> {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    env.add_filter("datetime", move |value: String| {
        chrono::DateTime::parse_from_rfc3339(&value)
            .map(|t| locale.datetime(t.to_utc()))
            .unwrap_or(value)
    });
    Ok(env)
}

/// Black or white, whichever reads better on the tenant's primary colour (WCAG-style
/// luminance threshold, integer arithmetic).
pub fn text_on(hex: &str) -> &'static str {
    let channel =
        |i: usize| u32::from_str_radix(hex.get(i..i + 2).unwrap_or("00"), 16).unwrap_or(0);
    let luminance = 299 * channel(1) + 587 * channel(3) + 114 * channel(5);
    if luminance >= 150_000 {
        "#000000"
    } else {
        "#ffffff"
    }
}

pub fn render(state: &AppState, name: &str, page: Value) -> Result<String, AppError> {
    let config = &state.config;
    let base = context! {
        brand => &config.branding,
        on_primary => text_on(&config.branding.primary_color),
        lang => config.locale.tag(),
        resale_enabled => config.resale.enabled,
    };
    let template = state
        .pages
        .get_template(name)
        .map_err(|e| anyhow::anyhow!("template {name}: {e}"))?;
    template
        .render(context! { ..page, ..base })
        .map_err(|e| anyhow::anyhow!("rendering {name}: {e:#}").into())
}

/// Serves a page from the cache, or renders and caches it.
pub async fn cached(
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

/// Turns a handler's outcome into a page: errors become a branded error page.
pub fn page(state: &AppState, outcome: Result<Response, AppError>) -> Response {
    match outcome {
        Ok(response) => response,
        Err(error) => {
            let problem = error.problem();
            let status =
                StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = render(
                state,
                "error.html",
                context! { title => problem.title, detail => problem.detail },
            )
            .unwrap_or_else(|_| "Something went wrong.".to_owned());
            let mut response = (status, Html(body)).into_response();
            if let Some(secs) = error.retry_after() {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, secs.into());
            }
            if let AppError::Internal(e) = error {
                crate::error::InternalFailure::attach(e, &mut response);
            }
            response
        }
    }
}

pub fn html(body: String) -> Response {
    Html(body).into_response()
}

pub fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

#[cfg(test)]
mod tests {
    use super::text_on;

    #[test]
    fn text_contrasts_with_the_brand_colour() {
        assert_eq!(text_on("#5b21b6"), "#ffffff");
        assert_eq!(text_on("#f59e0b"), "#000000");
        assert_eq!(text_on("#ffffff"), "#000000");
        assert_eq!(text_on("#000000"), "#ffffff");
    }
}
