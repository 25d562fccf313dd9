//! The OAuth2 issuer the admin API is tested against: npm `oauth2-mock-server`, installed once
//! into the harness cache and started per test on a free port, issuing real RS256 tokens.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const AUDIENCE: &str = "tiqzy-acme";
const PACKAGE: &str = "oauth2-mock-server@8.2.3";
const SCRIPT: &str = include_str!("oauth2-issuer.mjs");

pub struct Issuer {
    pub url: String,
    http: reqwest::Client,
    _process: tokio::process::Child,
}

/// `npm install`s the issuer once per machine; a finished install is moved into place
/// atomically so concurrent test runs never see half of one.
fn install_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        tiqzy_e2e::npm_package_with_script(PACKAGE, "issuer.mjs", SCRIPT)
            .expect("the OAuth2 test issuer installs (npm, Node.js 20.19+)")
    })
}

impl Issuer {
    pub async fn start() -> Self {
        let dir = install_dir();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let process = tokio::process::Command::new("node")
            .arg(dir.join("issuer.mjs"))
            .arg(port.to_string())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the OAuth2 issuer");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..400 {
            let discovery = http
                .get(format!("{url}/.well-known/openid-configuration"))
                .send()
                .await;
            if discovery.is_ok_and(|r| r.status().is_success()) {
                return Self {
                    url,
                    http,
                    _process: process,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the OAuth2 issuer did not come up on port {port}");
    }

    async fn issue(&self, fields: &[(&str, String)]) -> String {
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        form.extend(fields.iter().cloned());
        let response: Value = self
            .http
            .post(format!("{}/token", self.url))
            .form(&form)
            .send()
            .await
            .expect("token request")
            .json()
            .await
            .expect("token response");
        response["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {response}"))
            .to_owned()
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
