//! Idempotency keys: `tiqzy:<tenant>:<purpose>:<our id>`. Stripe keeps keys per platform
//! account, so a key naming another tenant would replay that tenant's answer; such a key is
//! refused before Stripe is asked.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::caller::Caller;
use crate::http::problem::Problem;

/// Stripe's limit on idempotency keys.
pub const MAX_LEN: usize = 255;

/// A key that names the calling tenant, passed to Stripe unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadKey {
    #[error("an Idempotency-Key header is required on every POST")]
    Missing,
    #[error(
        "the Idempotency-Key must read `tiqzy:<tenant>:<purpose>:<id>`, at most {MAX_LEN} characters"
    )]
    Malformed,
    #[error("the Idempotency-Key names tenant `{0}`, not yours")]
    NotYours(String),
}

impl BadKey {
    pub fn problem(&self) -> Problem {
        match self {
            Self::Missing | Self::Malformed => Problem::invalid(self.to_string()),
            Self::NotYours(_) => Problem::forbidden("idempotency-key-not-yours", self.to_string()),
        }
    }
}

/// Checks that `key` is well formed and names `tenant`. Pure.
pub fn parse(tenant: &str, key: Option<&str>) -> Result<IdempotencyKey, BadKey> {
    let key = key.ok_or(BadKey::Missing)?;
    if key.len() > MAX_LEN || !key.is_ascii() || key.chars().any(|c| c.is_ascii_control()) {
        return Err(BadKey::Malformed);
    }
    let (named, purpose, id) = key
        .strip_prefix("tiqzy:")
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(named, rest)| rest.split_once(':').map(|(p, id)| (named, p, id)))
        .ok_or(BadKey::Malformed)?;
    if named.is_empty() || purpose.is_empty() || id.is_empty() {
        return Err(BadKey::Malformed);
    }
    if named != tenant {
        return Err(BadKey::NotYours(named.to_owned()));
    }
    Ok(IdempotencyKey(key.to_owned()))
}

/// The `Idempotency-Key` header of an authenticated request, checked against its tenant.
pub fn from_headers(
    caller: &Caller,
    headers: &axum::http::HeaderMap,
) -> Result<IdempotencyKey, Problem> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| BadKey::Malformed.problem())?),
    };
    parse(&caller.tenant, key).map_err(|bad| bad.problem())
}

/// Extracts the caller (authenticating it) and its key in one go, for handlers that POST.
#[derive(Debug, Clone)]
pub struct KeyedCaller {
    pub caller: Caller,
    pub key: IdempotencyKey,
}

impl FromRequestParts<crate::state::AppState> for KeyedCaller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, Problem> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let key = from_headers(&caller, &parts.headers)?;
        Ok(Self { caller, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_naming_the_tenant_passes_unchanged() {
        let key = parse("acme", Some("tiqzy:acme:transfer:0f3c")).expect("accepted");
        assert_eq!(key.as_str(), "tiqzy:acme:transfer:0f3c");
        // The id may itself hold colons (the runtime's account links do).
        assert!(parse("acme", Some("tiqzy:acme:account-link:acct_1:2")).is_ok());
    }

    #[test]
    fn a_key_naming_another_tenant_is_not_yours() {
        assert_eq!(
            parse("acme", Some("tiqzy:rival:refund:1")),
            Err(BadKey::NotYours("rival".into()))
        );
        // A prefix of the tenant's name is another tenant, not a match.
        assert_eq!(
            parse("acme", Some("tiqzy:acme-2:refund:1")),
            Err(BadKey::NotYours("acme-2".into()))
        );
        assert_eq!(
            parse("acme", Some("tiqzy:acm:refund:1")),
            Err(BadKey::NotYours("acm".into()))
        );
        assert_eq!(
            parse("acme", Some("tiqzy:rival:refund:1"))
                .expect_err("refused")
                .problem()
                .status,
            403
        );
    }

    #[test]
    fn missing_or_malformed_keys_are_invalid_requests() {
        assert_eq!(parse("acme", None), Err(BadKey::Missing));
        for bad in [
            "",
            "acme:refund:1",
            "tiqzy:acme",
            "tiqzy:acme:",
            "tiqzy:acme:refund",
            "tiqzy:acme:refund:",
            "tiqzy:acme::1",
            "tiqzy::refund:1",
            "tiqzy:acme:refund:1\n",
        ] {
            assert_eq!(parse("acme", Some(bad)), Err(BadKey::Malformed), "{bad:?}");
        }
        let long = format!("tiqzy:acme:refund:{}", "x".repeat(240));
        assert_eq!(parse("acme", Some(&long)), Err(BadKey::Malformed));
        assert_eq!(BadKey::Malformed.problem().status, 422);
    }
}
