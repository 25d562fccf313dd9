//! What an error report may carry out of the process: the `before_send` of every Sentry
//! client. Request bodies, cookies, headers, query strings and the user are dropped whole;
//! free text (messages, exception values, breadcrumbs, extra data, tags other than ours) has
//! e-mail addresses, bearer tokens, JWTs, API keys and long opaque strings (capability
//! tokens in order and ticket links) replaced by a placeholder.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use sentry::protocol::{Event, Value};

/// Tags this crate sets itself from known, non-secret values; left as they are.
pub const OWN_TAGS: [&str; 5] = ["service", "tenant", "route", "trace_id", "step"];

/// Headers worth keeping on a report; every other one is dropped.
const KEPT_HEADERS: [&str; 3] = ["content-type", "accept", "user-agent"];

pub const EMAIL: &str = "[email]";
pub const TOKEN: &str = "[token]";
pub const QUERY: &str = "?[query]";

struct Patterns {
    email: Regex,
    bearer: Regex,
    jwt: Regex,
    api_key: Regex,
    query: Regex,
    opaque: Regex,
}

static PATTERNS: LazyLock<Patterns> = LazyLock::new(|| Patterns {
    email: Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)+").expect("email"),
    bearer: Regex::new(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]+").expect("bearer"),
    jwt: Regex::new(r"\beyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*").expect("jwt"),
    api_key: Regex::new(r"\b(sk|rk|pk|whsec|acct)_[A-Za-z0-9_]+").expect("api key"),
    // A query string, from its `?` up to the next space or quote.
    query: Regex::new(r#"\?[^\s"'<>]*=[^\s"'<>]*"#).expect("query"),
    // 24 or more characters of base64url or hex without a break: a token, if it has digits.
    opaque: Regex::new(r"[A-Za-z0-9_\-+]{24,}={0,2}").expect("opaque"),
});

/// Free text with anything that may identify a person or grant access replaced.
pub fn redact(text: &str) -> Cow<'_, str> {
    let p = &*PATTERNS;
    let mut out = Cow::Borrowed(text);
    for (pattern, placeholder) in [
        (&p.bearer, TOKEN),
        (&p.jwt, TOKEN),
        (&p.email, EMAIL),
        (&p.api_key, TOKEN),
        (&p.query, QUERY),
    ] {
        if pattern.is_match(&out) {
            out = Cow::Owned(pattern.replace_all(&out, placeholder).into_owned());
        }
    }
    if p.opaque.is_match(&out) {
        out = Cow::Owned(
            p.opaque
                .replace_all(&out, |c: &regex::Captures<'_>| {
                    let m = &c[0];
                    if looks_random(m) {
                        TOKEN.to_owned()
                    } else {
                        m.to_owned()
                    }
                })
                .into_owned(),
        );
    }
    out
}

/// Tokens mix digits and letters; identifiers such as a constraint name have no digits.
fn looks_random(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit()) && s.bytes().any(|b| b.is_ascii_alphabetic())
}

fn redact_value(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(clean) = redact(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        Value::Object(map) => map.values_mut().for_each(redact_value),
        _ => {}
    }
}

fn redact_in_place(text: &mut String) {
    if let Cow::Owned(clean) = redact(text) {
        *text = clean;
    }
}

/// The `before_send` of every client: `event` as it may leave the process.
pub fn scrub(mut event: Event<'static>) -> Event<'static> {
    if let Some(request) = &mut event.request {
        request.data = None;
        request.cookies = None;
        request.query_string = None;
        request.env.clear();
        request
            .headers
            .retain(|name, _| KEPT_HEADERS.contains(&name.to_ascii_lowercase().as_str()));
        if let Some(url) = &mut request.url {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_password(None);
            let _ = url.set_username("");
        }
    }
    event.user = None;
    for text in [
        &mut event.message,
        &mut event.culprit,
        &mut event.transaction,
    ]
    .into_iter()
    .flatten()
    {
        redact_in_place(text);
    }
    if let Some(entry) = &mut event.logentry {
        redact_in_place(&mut entry.message);
        entry.params.iter_mut().for_each(redact_value);
    }
    for exception in &mut event.exception.values {
        if let Some(value) = &mut exception.value {
            redact_in_place(value);
        }
    }
    for crumb in &mut event.breadcrumbs.values {
        if let Some(message) = &mut crumb.message {
            redact_in_place(message);
        }
        crumb.data.values_mut().for_each(redact_value);
    }
    event.extra.values_mut().for_each(redact_value);
    for (name, value) in &mut event.tags {
        if !OWN_TAGS.contains(&name.as_str()) {
            redact_in_place(value);
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentry::protocol::{Breadcrumb, Exception, Request};

    #[test]
    fn e_mail_addresses_tokens_and_keys_are_replaced_and_plain_words_kept() {
        let text = redact(
            "order for ann.buyer+x@mail.example failed: Authorization: Bearer abc.def-123 \
             key sk_test_51Habc whsec_9f8e jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln \
             link /orders/Q2hlY2tvdXQtdG9rZW4tNzQ5MjE4Mzc0/pay?code=ab12&token=zz in \
             tenant_runtime::http::api after 3 attempts",
        );
        for secret in [
            "ann.buyer",
            "mail.example",
            "abc.def-123",
            "sk_test",
            "whsec_",
            "eyJ",
            "Q2hlY2tvdXQ",
            "code=ab12",
            "token=zz",
        ] {
            assert!(!text.contains(secret), "{secret} left in: {text}");
        }
        for kept in [
            "order for",
            "failed",
            "tenant_runtime::http::api",
            "after 3 attempts",
            EMAIL,
            TOKEN,
            QUERY,
        ] {
            assert!(text.contains(kept), "{kept} lost from: {text}");
        }
    }

    #[test]
    fn a_source_path_and_a_short_id_are_not_tokens() {
        let text = "at tenant-runtime/src/http/storefront/pages.rs line 41, hold 7f3a, \
                    constraint ticket_types_never_oversold";
        assert_eq!(redact(text), text);
    }

    #[test]
    fn the_request_keeps_its_route_and_loses_body_cookies_credentials_and_query() {
        let mut event = Event {
            request: Some(Request {
                url: "https://user:pw@acme.example/orders/tok123?code=secret"
                    .parse()
                    .ok(),
                method: Some("POST".into()),
                data: Some(r#"{"email":"ann@mail.example"}"#.into()),
                query_string: Some("code=secret".into()),
                cookies: Some("session=abc".into()),
                headers: [
                    ("Authorization", "Bearer abc"),
                    ("Cookie", "session=abc"),
                    ("Content-Type", "application/json"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
                ..Request::default()
            }),
            user: Some(sentry::User {
                email: Some("ann@mail.example".into()),
                ..sentry::User::default()
            }),
            ..Event::default()
        };
        event.tags.insert("route".into(), "/orders/{token}".into());
        event
            .tags
            .insert("note".into(), "from ann@mail.example".into());
        let event = scrub(event);
        let request = event.request.as_ref().expect("request");
        assert!(request.data.is_none() && request.cookies.is_none());
        assert!(request.query_string.is_none());
        assert_eq!(
            request.headers.keys().collect::<Vec<_>>(),
            vec!["Content-Type"]
        );
        assert_eq!(
            request.url.as_ref().map(ToString::to_string).as_deref(),
            Some("https://acme.example/orders/tok123")
        );
        assert!(event.user.is_none());
        assert_eq!(event.tags["route"], "/orders/{token}");
        assert_eq!(event.tags["note"], "from [email]");
    }

    #[test]
    fn messages_exceptions_breadcrumbs_and_extra_data_are_redacted() {
        let mut event = Event {
            message: Some("mail to ann@mail.example bounced".into()),
            ..Event::default()
        };
        event.exception.values.push(Exception {
            ty: "Error".into(),
            value: Some("token eyJhbGciOi.eyJzdWIi.c2ln rejected".into()),
            ..Exception::default()
        });
        event.breadcrumbs.values.push(Breadcrumb {
            message: Some("GET /pay?session=cs_test_a1b2c3".into()),
            ..Breadcrumb::default()
        });
        event.extra.insert(
            "buyer".into(),
            serde_json::json!({ "emails": ["bob@mail.example"], "count": 2 }),
        );
        let event = scrub(event);
        let text = serde_json::to_string(&event).expect("event as JSON");
        for secret in ["mail.example", "eyJ", "cs_test"] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert_eq!(event.extra["buyer"]["count"], 2);
        assert_eq!(event.message.as_deref(), Some("mail to [email] bounced"));
    }
}
