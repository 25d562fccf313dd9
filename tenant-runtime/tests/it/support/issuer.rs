//! The OAuth2 issuer the admin API is tested against: the harness's [`StaffIssuer`], started
//! per test, and the forged tokens an attacker would try.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tiqzy_e2e::StaffIssuer;

pub const AUDIENCE: &str = "tiqzy-acme";

pub struct Issuer {
    pub url: String,
    inner: StaffIssuer,
    http: reqwest::Client,
}

impl Issuer {
    pub async fn start() -> Self {
        let inner = StaffIssuer::start()
            .await
            .expect("the OAuth2 test issuer starts");
        Self {
            url: inner.url.clone(),
            inner,
            http: reqwest::Client::new(),
        }
    }

    async fn issue(&self, fields: &[(&str, String)]) -> String {
        self.inner.issue(fields).await.expect("a token")
    }

    /// A token from this issuer for `aud`, expiring in `expires_in` seconds (negative: expired).
    pub async fn token(&self, aud: &str, expires_in: i64) -> String {
        self.issue(&[
            ("aud", aud.to_owned()),
            ("expires_in", expires_in.to_string()),
        ])
        .await
    }

    /// A valid staff token whose `scope` (the issuer's own space-separated claim) is `scope`,
    /// with `claims` added to the payload (e.g. Entra ID's `scp`, `roles`); `None` leaves
    /// `scope` out.
    pub async fn token_with(&self, scope: Option<&str>, claims: Value) -> String {
        let mut fields = vec![
            ("aud", AUDIENCE.to_owned()),
            ("expires_in", "300".to_owned()),
            ("claims", claims.to_string()),
        ];
        if let Some(scope) = scope {
            fields.push(("scope", scope.to_owned()));
        }
        self.issue(&fields).await
    }

    /// Rotates the issuer's signing key (see `StaffIssuer::rotate_keys`): returns a valid
    /// admin token signed by the key just withdrawn.
    pub async fn rotate_keys(&self) -> String {
        self.inner
            .rotate_keys(AUDIENCE)
            .await
            .expect("the issuer rotates its key")
    }

    /// Signed by the issuer's key, but claiming to come from somewhere else.
    pub async fn token_from_other_issuer(&self) -> String {
        self.issue(&[
            ("aud", AUDIENCE.to_owned()),
            ("iss", "https://evil.example".to_owned()),
        ])
        .await
    }

    /// A real token whose claims were changed afterwards (another subject, longer life).
    pub async fn tampered_token(&self) -> String {
        let token = self.token(AUDIENCE, 300).await;
        let parts: Vec<&str> = token.split('.').collect();
        let now = chrono::Utc::now().timestamp();
        let claims = json!({ "iss": self.url, "aud": AUDIENCE, "sub": "owner", "iat": now, "exp": now + 86_400 });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{}.{payload}.{}", parts[0], parts[2])
    }

    /// The key-confusion attack: HS256 "signed" with the issuer's public key as the secret.
    pub async fn hmac_confused_token(&self) -> String {
        let jwks: Value = self
            .http
            .get(format!("{}/jwks", self.url))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("jwks json");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_owned);
        let secret = jwks["keys"][0]["n"].as_str().expect("modulus").to_owned();
        let now = chrono::Utc::now().timestamp();
        let claims = json!({ "iss": self.url, "aud": AUDIENCE, "sub": "staff-1", "iat": now, "exp": now + 300 });
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    }
}
