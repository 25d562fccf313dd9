//! Signing in by e-mail link the way a buyer does: ask for a link, read it in the mail that
//! arrived, follow it, and carry the session cookie it set.

use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

use super::TestApp;

/// What a sign-in mail's subject starts with.
const SUBJECT: &str = "Sign in to";

/// The session cookie a followed sign-in link set, ready for a `Cookie` header.
#[derive(Debug, Clone)]
pub struct Session(pub String);

impl TestApp {
    /// The token of the newest sign-in link this storefront mailed to `email`, as it arrived
    /// in Mailpit: the one place the tests read sign-in mail.
    pub async fn sign_in_link(&self, email: &str) -> Option<String> {
        self.mails_to(email, SUBJECT)
            .await
            .iter()
            .find_map(|m| m.links().iter().find_map(|link| sign_in_token(link)))
    }

    /// How many sign-in links this storefront mailed to `email`.
    pub async fn sign_in_mails(&self, email: &str) -> usize {
        self.mails_to(email, SUBJECT)
            .await
            .iter()
            .filter(|m| m.links().iter().any(|link| sign_in_token(link).is_some()))
            .count()
    }

    /// Asks for a sign-in link for `email` through the API.
    pub async fn ask_sign_in(&self, email: &str) -> reqwest::Response {
        self.post("/api/sign-in", &json!({ "email": email })).await
    }

    /// Follows a sign-in link's token through the API.
    pub async fn follow_sign_in(&self, token: &str) -> reqwest::Response {
        self.post("/api/sessions", &json!({ "token": token })).await
    }

    /// Proves `email` the way its owner would: a link is mailed, the link is followed.
    pub async fn sign_in(&self, email: &str) -> Session {
        let asked = self.ask_sign_in(email).await;
        assert_eq!(
            asked.status(),
            202,
            "{}",
            asked.text().await.unwrap_or_default()
        );
        let token = self.sign_in_link(email).await.expect("a sign-in link");
        let followed = self.follow_sign_in(&token).await;
        assert_eq!(
            followed.status(),
            201,
            "{}",
            followed.text().await.unwrap_or_default()
        );
        session_of(&followed).expect("a session cookie")
    }

    pub async fn get_as(&self, session: &Session, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .header(COOKIE, &session.0)
            .send()
            .await
            .expect("GET")
    }

    pub async fn post_as(&self, session: &Session, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header(COOKIE, &session.0)
            .json(body)
            .send()
            .await
            .expect("POST")
    }
}

/// The token in a mail's sign-in link (`.../sign-in/<token>`).
pub fn sign_in_token(body: &str) -> Option<String> {
    let (_, rest) = body.split_once("/sign-in/")?;
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!token.is_empty()).then_some(token)
}

/// The session cookie a response set, as `name=value`.
pub fn session_of(response: &reqwest::Response) -> Option<Session> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tiqzy_session=") && !v.starts_with("tiqzy_session=;"))
        .and_then(|v| v.split(';').next())
        .map(|v| Session(v.to_owned()))
}
