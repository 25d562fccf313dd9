//! Who is calling: a storefront proves itself with its pod's projected ServiceAccount token
//! (audience `tiqzy-payments`), which the API server checks (TokenReview). The token's
//! namespace `tiqzy-<tenant>` names the tenant; only the storefront's own ServiceAccount is
//! accepted, so another workload placed in a tenant namespace cannot act for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use crate::http::problem::Problem;
use crate::state::AppState;

/// The audience storefront tokens must be minted for.
pub const AUDIENCE: &str = "tiqzy-payments";
/// The ServiceAccount the operator runs storefront pods as.
pub const STOREFRONT_SERVICE_ACCOUNT: &str = "storefront";
/// Tenant namespaces are `tiqzy-<tenant>`.
const NAMESPACE_PREFIX: &str = "tiqzy-";

/// An authenticated storefront.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant's name (the cluster-scoped `Tenant`).
    pub tenant: String,
}

/// Why a request is not let in. Each is a problem the caller sees; none echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("an `Authorization: Bearer <ServiceAccount token>` header is required")]
    MissingToken,
    #[error("the token is not valid (expired, revoked, or its ServiceAccount is gone)")]
    NotAuthenticated,
    #[error("the token was not issued for the audience `{AUDIENCE}`")]
    WrongAudience,
    #[error("only ServiceAccount tokens are accepted")]
    NotAServiceAccount,
    #[error("the ServiceAccount's namespace `{0}` is not a tenant namespace")]
    NotATenantNamespace(String),
    #[error("only the storefront's ServiceAccount may call the payments service, not `{0}`")]
    NotTheStorefront(String),
}

impl Refusal {
    pub fn problem(&self) -> Problem {
        match self {
            Self::MissingToken | Self::NotAuthenticated | Self::WrongAudience => {
                Problem::unauthorized(self.to_string())
            }
            Self::NotAServiceAccount | Self::NotATenantNamespace(_) | Self::NotTheStorefront(_) => {
                Problem::forbidden("not-a-storefront", self.to_string())
            }
        }
    }
}

/// Decides from the API server's verdict on a token who the caller is. Pure, so every way of
/// being refused is unit-tested.
pub fn identify(status: &TokenReviewStatus) -> Result<Caller, Refusal> {
    if status.authenticated != Some(true) {
        return Err(Refusal::NotAuthenticated);
    }
    // The API server returns the requested audiences the token is valid for; an empty list
    // would mean the token is good only for the API server itself.
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|a| a == AUDIENCE))
    {
        return Err(Refusal::WrongAudience);
    }
    let username = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or_default();
    let Some((namespace, account)) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    else {
        return Err(Refusal::NotAServiceAccount);
    };
    let tenant = namespace
        .strip_prefix(NAMESPACE_PREFIX)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Refusal::NotATenantNamespace(namespace.to_owned()))?;
    if account != STOREFRONT_SERVICE_ACCOUNT {
        return Err(Refusal::NotTheStorefront(format!("{namespace}/{account}")));
    }
    Ok(Caller {
        tenant: tenant.to_owned(),
    })
}

/// How long the API server's acceptance of a token is reused by default (never past the
/// token's own expiry): a deleted ServiceAccount's token keeps working at most this long.
pub const ACCEPTED_FOR: Duration = Duration::from_secs(60);
/// How long a refusal is reused (at most as long as an acceptance), so a flood of bad tokens
/// does not become a flood of TokenReviews.
pub const REFUSED_FOR: Duration = Duration::from_secs(10);
/// Verdicts kept at most; past it, expired ones are dropped first, then all.
const MAX_VERDICTS: usize = 10_000;

/// What the API server said about a token, and until when that is reused.
type Kept = (Result<Caller, Refusal>, Instant);

/// Recent TokenReview verdicts, keyed by the token's SHA-256 (the token itself is not kept),
/// so a storefront's requests cost the API server one review a minute, not one each.
#[derive(Debug)]
pub struct Verdicts {
    accepted_for: Duration,
    entries: Mutex<HashMap<[u8; 32], Kept>>,
}

impl Verdicts {
    /// Verdicts whose acceptances are reused for `accepted_for` (zero: nothing is kept).
    pub fn new(accepted_for: Duration) -> Self {
        Self {
            accepted_for,
            entries: Mutex::default(),
        }
    }

    fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The verdict on `token` still in force at `now`, if any.
    pub fn get(&self, token: &str, now: Instant) -> Option<Result<Caller, Refusal>> {
        let entries = self.entries.lock().expect("verdicts");
        entries
            .get(&Self::key(token))
            .filter(|(_, until)| now < *until)
            .map(|(verdict, _)| verdict.clone())
    }

    /// Keeps `verdict` on `token` from `now`: an acceptance for the configured time or until
    /// the token expires, whichever is first; a refusal for [`REFUSED_FOR`] at most.
    pub fn put(&self, token: &str, verdict: Result<Caller, Refusal>, now: Instant) {
        let keep = match &verdict {
            Ok(_) => {
                expires_in(token).map_or(self.accepted_for, |left| left.min(self.accepted_for))
            }
            Err(_) => REFUSED_FOR.min(self.accepted_for),
        };
        if keep.is_zero() {
            return;
        }
        let until = now + keep;
        let mut entries = self.entries.lock().expect("verdicts");
        if entries.len() >= MAX_VERDICTS {
            entries.retain(|_, (_, until)| now < *until);
            if entries.len() >= MAX_VERDICTS {
                entries.clear();
            }
        }
        entries.insert(Self::key(token), (verdict, until));
    }
}

/// Time left before the JWT's `exp`, read without checking the signature: only to cut short
/// how long the API server's acceptance is reused, never to accept anything.
fn expires_in(token: &str) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(exp.saturating_sub(now)))
}

/// Asks the API server about `token` (TokenReview, audience [`AUDIENCE`]).
pub async fn review(client: &kube::Client, token: &str) -> kube::Result<Result<Caller, Refusal>> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(vec![AUDIENCE.to_owned()]),
        },
        ..TokenReview::default()
    };
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(identify(&reviewed.status.unwrap_or_default()))
}

/// The verdict on `token`: a recent one, else the API server's (kept for next time).
async fn verdict(state: &AppState, token: &str) -> Result<Caller, Problem> {
    let verdict = match state.verdicts.get(token, Instant::now()) {
        Some(verdict) => verdict,
        None => {
            let verdict = review(&state.kube, token).await.map_err(|e| {
                // The error names the request, never the token.
                tracing::warn!(error = %e, "TokenReview failed");
                state.metrics.token_review("failed");
                Problem::unavailable("the API server could not check the token")
            })?;
            state.metrics.token_review(if verdict.is_ok() {
                "accepted"
            } else {
                "refused"
            });
            state.verdicts.put(token, verdict.clone(), Instant::now());
            verdict
        }
    };
    verdict.map_err(|refusal| {
        tracing::info!(%refusal, "caller refused");
        refusal.problem()
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Refusal::MissingToken.problem())?;
        let caller = verdict(state, token).await?;
        if !state.registry.knows(&caller.tenant) {
            return Err(Problem::forbidden(
                "unknown-tenant",
                format!("tenant `{}` does not exist", caller.tenant),
            ));
        }
        // After authentication: only a tenant's own requests spend its budget.
        state.budget.spend(&caller.tenant).map_err(|wait| {
            tracing::info!(tenant = %caller.tenant, "request budget exhausted");
            Problem::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "budget-exhausted",
                "this storefront's share of the payments rate limit is used up; retry later",
            )
            .retry_after(wait)
        })?;
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn status(authenticated: bool, audiences: &[&str], username: &str) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
            user: Some(UserInfo {
                username: Some(username.to_owned()),
                ..UserInfo::default()
            }),
            ..TokenReviewStatus::default()
        }
    }

    #[test]
    fn the_storefront_of_a_tenant_namespace_is_that_tenant() {
        let caller = identify(&status(
            true,
            &[AUDIENCE],
            "system:serviceaccount:tiqzy-acme-arena:storefront",
        ));
        assert_eq!(
            caller,
            Ok(Caller {
                tenant: "acme-arena".into()
            })
        );
    }

    #[test]
    fn everything_else_is_refused() {
        let sa = "system:serviceaccount:tiqzy-acme:storefront";
        assert_eq!(
            identify(&status(false, &[AUDIENCE], sa)),
            Err(Refusal::NotAuthenticated)
        );
        assert_eq!(
            identify(&status(true, &[], sa)),
            Err(Refusal::WrongAudience)
        );
        assert_eq!(
            identify(&status(true, &[AUDIENCE], "admin")),
            Err(Refusal::NotAServiceAccount)
        );
        assert_eq!(
            identify(&status(
                true,
                &[AUDIENCE],
                "system:serviceaccount:kube-system:storefront"
            )),
            Err(Refusal::NotATenantNamespace("kube-system".into()))
        );
        assert_eq!(
            identify(&status(
                true,
                &[AUDIENCE],
                "system:serviceaccount:tiqzy-:storefront"
            )),
            Err(Refusal::NotATenantNamespace("tiqzy-".into()))
        );
        assert_eq!(
            identify(&status(
                true,
                &[AUDIENCE],
                "system:serviceaccount:tiqzy-acme:default"
            )),
            Err(Refusal::NotTheStorefront("tiqzy-acme/default".into()))
        );
    }

    #[test]
    fn refusals_are_401_or_403() {
        assert_eq!(Refusal::MissingToken.problem().status, 401);
        assert_eq!(Refusal::WrongAudience.problem().status, 401);
        assert_eq!(Refusal::NotAServiceAccount.problem().status, 403);
    }

    fn jwt_expiring_in(seconds: u64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let claims = URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{}}}", now + seconds));
        format!("eyJhbGciOiJSUzI1NiJ9.{claims}.c2lnbmF0dXJl")
    }

    #[test]
    fn an_acceptance_is_reused_for_a_minute_and_never_past_the_token_s_expiry() {
        let verdicts = Verdicts::new(ACCEPTED_FOR);
        let now = Instant::now();
        let acme = Ok(Caller {
            tenant: "acme".into(),
        });
        let long_lived = jwt_expiring_in(3600);
        verdicts.put(&long_lived, acme.clone(), now);
        assert_eq!(
            verdicts.get(&long_lived, now + Duration::from_secs(59)),
            Some(acme.clone())
        );
        assert_eq!(verdicts.get(&long_lived, now + ACCEPTED_FOR), None);

        let expiring = jwt_expiring_in(5);
        verdicts.put(&expiring, acme.clone(), now);
        assert_eq!(
            verdicts.get(&expiring, now + Duration::from_secs(3)),
            Some(acme)
        );
        assert_eq!(verdicts.get(&expiring, now + Duration::from_secs(6)), None);
        assert_eq!(verdicts.get("another-token", now), None);
    }

    #[test]
    fn a_refusal_is_reused_briefly() {
        let verdicts = Verdicts::new(ACCEPTED_FOR);
        let now = Instant::now();
        verdicts.put("garbage", Err(Refusal::NotAuthenticated), now);
        assert_eq!(
            verdicts.get("garbage", now + Duration::from_secs(9)),
            Some(Err(Refusal::NotAuthenticated))
        );
        assert_eq!(verdicts.get("garbage", now + REFUSED_FOR), None);
    }

    #[test]
    fn a_zero_cache_keeps_nothing() {
        let verdicts = Verdicts::new(Duration::ZERO);
        let now = Instant::now();
        verdicts.put(
            "token",
            Ok(Caller {
                tenant: "acme".into(),
            }),
            now,
        );
        assert_eq!(verdicts.get("token", now), None);
    }
}
