//! The session cookie a followed sign-in link sets, and the extractor that reads it back.
//!
//! The cookie holds only a random secret (its hash names the session row): `HttpOnly`, so no
//! script reads it; `SameSite=Lax`, so another site's form cannot act with it; `Secure` when
//! the request reached the router over TLS; and it ends with the session.

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};

use crate::error::AppError;
use crate::identity::{self, SESSION_TTL, Session};
use crate::state::AppState;

pub const COOKIE_NAME: &str = "tiqzy_session";

/// Who is signed in on this request, if anyone.
#[derive(Debug, Clone)]
pub struct SignedIn(pub Option<Session>);

impl SignedIn {
    pub fn session(&self) -> Option<&Session> {
        self.0.as_ref()
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        match cookie_token(&parts.headers) {
            None => Ok(Self(None)),
            Some(token) => Ok(Self(identity::session(state, &token).await?)),
        }
    }
}

/// The session secret in the request's cookies.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
        .find(|v| !v.is_empty() && v.len() <= 64)
        .map(str::to_owned)
}

/// Whether the client reached the router in front of us over TLS.
fn behind_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// `Set-Cookie` starting a session.
pub fn start_cookie(request: &HeaderMap, token: &str) -> (axum::http::HeaderName, HeaderValue) {
    let secure = if behind_tls(request) { "; Secure" } else { "" };
    let value = format!(
        "{COOKIE_NAME}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        SESSION_TTL.as_secs()
    );
    (
        SET_COOKIE,
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("")),
    )
}

/// `Set-Cookie` ending the session in the browser.
pub fn end_cookie() -> (axum::http::HeaderName, HeaderValue) {
    (
        SET_COOKIE,
        HeaderValue::from_static("tiqzy_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_secret_is_read_from_among_other_cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("theme=dark; tiqzy_session=abc_DEF-1; tiqzy_sessionx=no"),
        );
        assert_eq!(cookie_token(&headers).as_deref(), Some("abc_DEF-1"));
        let mut empty = HeaderMap::new();
        empty.insert(COOKIE, HeaderValue::from_static("tiqzy_session="));
        assert_eq!(cookie_token(&empty), None);
    }

    #[test]
    fn the_cookie_is_http_only_lax_and_secure_behind_tls() {
        let mut tls = HeaderMap::new();
        tls.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let (_, value) = start_cookie(&tls, "t0k");
        let value = value.to_str().expect("ascii");
        assert!(value.starts_with("tiqzy_session=t0k; Path=/; Max-Age="));
        for attribute in ["HttpOnly", "SameSite=Lax", "Secure"] {
            assert!(value.contains(attribute), "{value}");
        }
        let (_, plain) = start_cookie(&HeaderMap::new(), "t0k");
        assert!(!plain.to_str().expect("ascii").contains("Secure"));
    }
}
