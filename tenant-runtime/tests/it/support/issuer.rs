//! The OAuth2 issuer the admin API is tested against: npm `oauth2-mock-server`, installed once
//! into the harness cache and started per test on a free port, issuing real RS256 tokens.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

pub const AUDIENCE: &str = "tiqzy-acme";
const PACKAGE: &str = "oauth2-mock-server@8.2.3";
const SCRIPT: &str = include_str!("oauth2-issuer.mjs");

pub struct Issuer {
    pub url: String,
    http: reqwest::Client,
    _process: tokio::process::Child,
}

/// `npm install`s the issuer once per machine; a finished install is moved into place
/// atomically so concurrent test runs never see half of one. The script's name carries a hash
/// of its text, so test runs of other checkouts with another version of it never swap it.
fn script() -> &'static PathBuf {
    static SCRIPT_PATH: OnceLock<PathBuf> = OnceLock::new();
    SCRIPT_PATH.get_or_init(|| {
        let mut hasher = std::hash::DefaultHasher::new();
        SCRIPT.hash(&mut hasher);
        let name = format!("issuer-{:016x}.mjs", hasher.finish());
        tiqzy_e2e::npm_package_with_script(PACKAGE, &name, SCRIPT)
            .expect("the OAuth2 test issuer installs (npm, Node.js 20.19+)")
            .join(name)
    })
}

impl Issuer {
    pub async fn start() -> Self {
        let script = script();
        let mut process = tokio::process::Command::new("node")
            .arg(script)
            .current_dir(script.parent().expect("the install directory"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the OAuth2 issuer");
        let stdout = process.stdout.take().expect("issuer stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the OAuth2 issuer comes up within 30 s")
            .expect("read the issuer's output");
        let url = ready
            .as_deref()
            .and_then(|line| line.strip_prefix("issuer ready at "))
            .unwrap_or_else(|| panic!("the OAuth2 issuer did not start: {ready:?}"))
            .to_owned();
        Self {
            url,
            http: reqwest::Client::new(),
            _process: process,
        }
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
