//! Staff authentication: OAuth2 bearer JWTs checked against the issuer's published keys
//! (JWKS via OpenID discovery, refreshed on a schedule), the expected audience, expiry and
//! `nbf`, and, where the tenant asks for it, a claim naming the tenant; what the token
//! permits is in [`permission`].

mod permission;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

pub use self::permission::{
    CheckIn, ClaimValues, EventsWrite, Grants, Permission, Refunds, Required, SalesRead, Staff,
};
use crate::config::{OAuth, TenantClaim};
use crate::error::AppError;

/// An issuer rotating keys is picked up on the first unknown `kid`, but an attacker sending
/// made-up `kid`s cannot make us fetch more often than this.
const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// Keys not confirmed by the issuer for this many refresh intervals (it is unreachable) are no
/// longer trusted: the admin API answers 503 until the issuer answers again.
const STALE_AFTER_REFRESHES: u32 = 3;

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

/// Checks staff tokens. Every request reads the issuer's keys from a snapshot behind a lock
/// held only to clone an `Arc`; keys are fetched outside any lock requests wait on, then
/// swapped in whole, so a key the issuer removed is gone with the next fetch.
#[derive(Debug)]
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    permission_prefix: String,
    tenant_claim: Option<TenantClaim>,
    refresh: Duration,
    http: reqwest::Client,
    keys: std::sync::RwLock<Arc<Keys>>,
    /// Held while fetching, so one fetch runs at a time; only requests that need keys the
    /// snapshot lacks ever wait for it.
    fetching: Mutex<Fetching>,
}

#[derive(Debug, Default)]
struct Keys {
    set: Option<JwkSet>,
    fetched_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Fetching {
    /// The last fetch a request asked for (an unknown `kid`, or no usable keys).
    on_demand_at: Option<Instant>,
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
    /// Every other claim, for the tenant claim.
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// The member of the tenant's staff a request was made by, and what their token permits.
#[derive(Debug, Clone)]
pub struct StaffMember {
    pub subject: String,
    pub grants: Grants,
}

impl TokenVerifier {
    /// The verifier, and its scheduled refresh of the issuer's keys, which ends when the
    /// verifier is dropped.
    pub fn start(oauth: &OAuth) -> anyhow::Result<Arc<Self>> {
        let verifier = Arc::new(Self::new(oauth)?);
        let weak = Arc::downgrade(&verifier);
        let refresh = oauth.keys_refresh;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(refresh).await;
                let Some(verifier) = weak.upgrade() else {
                    return;
                };
                let fetching = verifier.fetching.lock().await;
                verifier.refetch().await;
                drop(fetching);
            }
        });
        Ok(verifier)
    }

    fn new(oauth: &OAuth) -> anyhow::Result<Self> {
        Ok(Self {
            issuer: oauth.issuer.clone(),
            audience: oauth.audience.clone(),
            permission_prefix: oauth.permission_prefix.clone(),
            tenant_claim: oauth.tenant_claim.clone(),
            refresh: oauth.keys_refresh,
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
            keys: std::sync::RwLock::new(Arc::default()),
            fetching: Mutex::new(Fetching::default()),
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
                K::ImmatureSignature => refused("is not valid yet (nbf)"),
                K::InvalidAudience => refused("is for another audience"),
                K::InvalidIssuer => refused("is from another issuer"),
                K::InvalidSignature => refused("has an invalid signature"),
                _ => refused("is not valid"),
            }
        })?;
        let claims = claims.claims;
        if let Some(required) = &self.tenant_claim
            && !claim_names(claims.other.get(&required.name), &required.value)
        {
            return Err(refused(&format!(
                "is not for this tenant (its {} claim does not name it)",
                required.name
            )));
        }
        Ok(StaffMember {
            grants: Grants::from_claims(
                [&claims.scope, &claims.scp, &claims.roles],
                &self.permission_prefix,
            ),
            subject: claims.sub,
        })
    }

    /// The key `kid` names, from the snapshot while it is fresh; otherwise after one fetch,
    /// at most every [`REFETCH_AFTER`] for requests (the scheduled refresh aside).
    async fn key(&self, kid: &str) -> Result<Option<DecodingKey>, AppError> {
        let seen = self.snapshot();
        if self.usable(&seen)
            && let Some(key) = find(&seen, kid)
        {
            return Ok(Some(key));
        }
        let mut fetching = self.fetching.lock().await;
        let mut keys = self.snapshot();
        // Another request (or the schedule) may have fetched while this one waited.
        let fetched_meanwhile = keys.fetched_at != seen.fetched_at;
        let may_fetch = fetching
            .on_demand_at
            .is_none_or(|at| at.elapsed() >= REFETCH_AFTER);
        if !(fetched_meanwhile && self.usable(&keys) && find(&keys, kid).is_some()) && may_fetch {
            let first = keys.fetched_at.is_none();
            let fetched = self.refetch().await;
            // The first successful fetch is free; every other one spends the budget, so
            // made-up `kid`s (or an unreachable issuer) cost one fetch per interval.
            if !(first && fetched) {
                fetching.on_demand_at = Some(Instant::now());
            }
            keys = self.snapshot();
        }
        drop(fetching);
        if !self.usable(&keys) {
            return Err(AppError::client(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "issuer-unavailable",
                "Service unavailable",
                "the token issuer's keys cannot be fetched right now",
            ));
        }
        Ok(find(&keys, kid))
    }

    fn snapshot(&self) -> Arc<Keys> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Keys confirmed by the issuer recently enough to trust.
    fn usable(&self, keys: &Keys) -> bool {
        keys.set.is_some()
            && keys
                .fetched_at
                .is_some_and(|at| at.elapsed() < self.refresh * STALE_AFTER_REFRESHES)
    }

    /// Fetches the keys (the caller holds `fetching`) and swaps them in; on failure the keys
    /// in use stay until they go stale. Whether the fetch worked.
    async fn refetch(&self) -> bool {
        match self.fetch().await {
            Ok(set) => {
                let fresh = Arc::new(Keys {
                    set: Some(set),
                    fetched_at: Some(Instant::now()),
                });
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                true
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "fetching the issuer's keys failed"
                );
                false
            }
        }
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
        // The keys decide who is staff: never over plain http (but to a loopback test issuer).
        let jwks_uri = crate::config::secure_url(&discovery.jwks_uri)
            .map_err(|problem| anyhow::anyhow!("the discovery document's jwks_uri {problem}"))?;
        Ok(self
            .http
            .get(jwks_uri)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

fn find(keys: &Keys, kid: &str) -> Option<DecodingKey> {
    let jwk = keys.set.as_ref()?.find(kid)?;
    DecodingKey::from_jwk(jwk).ok()
}

/// Whether a claim names `value`: equal to it, or a list holding it.
fn claim_names(claim: Option<&serde_json::Value>, value: &str) -> bool {
    match claim {
        Some(serde_json::Value::String(s)) => s == value,
        Some(serde_json::Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(value)),
        _ => false,
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
