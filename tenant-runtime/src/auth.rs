//! Staff authentication: OAuth2 bearer JWTs checked against the issuer's published keys
//! (JWKS via OpenID discovery), the expected audience, and expiry; what the token permits is
//! in [`permission`].

mod permission;

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;

pub use self::permission::{
    CheckIn, ClaimValues, EventsWrite, Grants, Permission, Refunds, Required, SalesRead, Staff,
};
use crate::config::OAuth;
use crate::error::AppError;

/// An issuer rotating keys is picked up on the first unknown `kid`, but an attacker sending
/// made-up `kid`s cannot make us fetch more often than this.
const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// Asymmetric algorithms only: `none` and shared-secret HMAC are never accepted.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(Debug)]
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    permission_prefix: String,
    http: reqwest::Client,
    keys: RwLock<Keys>,
}

#[derive(Debug, Default)]
struct Keys {
    set: Option<JwkSet>,
    fetched_at: Option<Instant>,
}

#[derive(Debug, Deserialize)]
struct Discovery {
    jwks_uri: String,
}

/// Where common issuers put what a token permits: OAuth2 `scope`, Entra ID `scp` (delegated
/// scopes) and `roles` (app roles). All three count.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: ClaimValues,
    #[serde(default)]
    scp: ClaimValues,
    #[serde(default)]
    roles: ClaimValues,
}

/// The member of the tenant's staff a request was made by, and what their token permits.
#[derive(Debug, Clone)]
pub struct StaffMember {
    pub subject: String,
    pub grants: Grants,
}

impl TokenVerifier {
    pub fn new(oauth: &OAuth) -> anyhow::Result<Self> {
        Ok(Self {
            issuer: oauth.issuer.clone(),
            audience: oauth.audience.clone(),
            permission_prefix: oauth.permission_prefix.clone(),
            http: oauth
                .trusted_cas
                .iter()
                .cloned()
                .fold(
                    reqwest::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .redirect(same_origin_redirects()),
                    reqwest::ClientBuilder::add_root_certificate,
                )
                .build()?,
            keys: RwLock::new(Keys::default()),
        })
    }

    pub async fn verify(&self, token: &str) -> Result<StaffMember, AppError> {
        let refused = |why: &str| AppError::unauthorized(format!("the bearer token {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| refused("is not a JWT"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(refused("uses an algorithm this service does not accept"));
        }
        let kid = header
            .kid
            .ok_or_else(|| refused("names no signing key (kid)"))?;
        let key = self
            .key(&kid)
            .await?
            .ok_or_else(|| refused("was signed by a key the issuer does not publish"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer, &format!("{}/", self.issuer)]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        // A token is not valid before its `nbf` either (the library skips it by default).
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => refused("has expired"),
                K::InvalidAudience => refused("is for another audience"),
                K::InvalidIssuer => refused("is from another issuer"),
                K::InvalidSignature => refused("has an invalid signature"),
                _ => refused("is not valid"),
            }
        })?;
        let claims = claims.claims;
        Ok(StaffMember {
            grants: Grants::from_claims(
                [&claims.scope, &claims.scp, &claims.roles],
                &self.permission_prefix,
            ),
            subject: claims.sub,
        })
    }

    async fn key(&self, kid: &str) -> Result<Option<DecodingKey>, AppError> {
        if let Some(key) = self.cached(kid).await {
            return Ok(Some(key));
        }
        let mut keys = self.keys.write().await;
        if keys
            .fetched_at
            .is_none_or(|at| at.elapsed() >= REFETCH_AFTER)
        {
            keys.fetched_at = Some(Instant::now());
            match self.fetch().await {
                Ok(set) => keys.set = Some(set),
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "fetching the issuer's keys failed"
                    );
                    if keys.set.is_none() {
                        return Err(AppError::client(
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "issuer-unavailable",
                            "Service unavailable",
                            "the token issuer's keys cannot be fetched right now",
                        ));
                    }
                }
            }
        }
        Ok(keys
            .set
            .as_ref()
            .and_then(|set| set.find(kid))
            .and_then(|jwk| DecodingKey::from_jwk(jwk).ok()))
    }

    async fn cached(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self.keys.read().await;
        let jwk = keys.set.as_ref()?.find(kid)?;
        DecodingKey::from_jwk(jwk).ok()
    }

    async fn fetch(&self) -> anyhow::Result<JwkSet> {
        let discovery: Discovery = self
            .http
            .get(format!("{}/.well-known/openid-configuration", self.issuer))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(self
            .http
            .get(discovery.jwks_uri)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

/// Redirects of the issuer's discovery and keys are followed only within the issuer's own
/// origin (scheme, host and port), a few at most: keys that decide who is staff never come
/// from a host the tenant did not name.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if same_origin && attempt.previous().len() <= 3 {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}
