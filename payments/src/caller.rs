//! Who is calling: a storefront proves itself with its pod's projected ServiceAccount token
//! (audience `tiqzy-payments`), which the API server checks (TokenReview). The token's
//! namespace `tiqzy-<tenant>` names the tenant; only the storefront's own ServiceAccount is
//! accepted, so another workload placed in a tenant namespace cannot act for it.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};

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

/// Asks the API server about `token` (TokenReview, audience [`AUDIENCE`]).
pub async fn review(client: &kube::Client, token: &str) -> Result<Caller, Problem> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(vec![AUDIENCE.to_owned()]),
        },
        ..TokenReview::default()
    };
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| {
            // The error names the request, never the token.
            tracing::warn!(error = %e, "TokenReview failed");
            Problem::unavailable("the API server could not check the token")
        })?;
    let status = reviewed.status.unwrap_or_default();
    identify(&status).map_err(|refusal| {
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
        let caller = review(&state.kube, token).await?;
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
}
