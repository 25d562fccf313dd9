//! What a staff member may do on the admin API: permissions granted by the token's `scope`,
//! `scp` and `roles` claims, and the `Staff<P>` extractor through which every admin handler
//! names the one it needs, so no handler can be reached on authentication alone.

use std::collections::BTreeSet;
use std::marker::PhantomData;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::StaffMember;
use crate::error::AppError;
use crate::state::AppState;

/// One staff duty. The names are what an issuer puts in a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// Every other permission, including ones added later.
    Admin,
    /// Create and edit events and ticket types; cancel an event (which refunds its buyers).
    EventsWrite,
    /// Read the sales summary, the CSV export and the money ledgers.
    SalesRead,
    /// Admit tickets at the door.
    CheckIn,
    /// Refund orders.
    Refunds,
}

impl Permission {
    pub const ALL: [Self; 5] = [
        Self::Admin,
        Self::EventsWrite,
        Self::SalesRead,
        Self::CheckIn,
        Self::Refunds,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::EventsWrite => "events:write",
            Self::SalesRead => "sales:read",
            Self::CheckIn => "checkin",
            Self::Refunds => "refunds",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// A claim as issuers write it: a space-separated string (OAuth2 `scope`, Entra `scp`) or an
/// array of strings (Entra `roles`, Okta `scp`). Any other shape grants nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum ClaimValues {
    Text(String),
    List(Vec<String>),
    #[default]
    #[serde(skip)]
    Absent,
    Other(IgnoredAny),
}

impl ClaimValues {
    fn values(&self) -> impl Iterator<Item = &str> {
        let items: &[String] = match self {
            Self::Text(text) => std::slice::from_ref(text),
            Self::List(list) => list,
            Self::Absent | Self::Other(_) => &[],
        };
        items.iter().flat_map(|item| item.split_whitespace())
    }
}

/// The permissions a token grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(BTreeSet<Permission>);

impl Grants {
    /// Values without `prefix`, and names this service does not know, grant nothing.
    /// Names are case-sensitive, as OAuth2 scopes are.
    pub fn from_claims<'a>(
        claims: impl IntoIterator<Item = &'a ClaimValues>,
        prefix: &str,
    ) -> Self {
        Self(
            claims
                .into_iter()
                .flat_map(ClaimValues::values)
                .filter_map(|value| value.strip_prefix(prefix))
                .filter_map(Permission::from_name)
                .collect(),
        )
    }

    pub fn allow(&self, permission: Permission) -> bool {
        self.0.contains(&Permission::Admin) || self.0.contains(&permission)
    }
}

/// A permission an admin handler requires, named in its signature as `Staff<P>`.
pub trait Required {
    const PERMISSION: Permission;
}

macro_rules! required {
    ($($(#[$doc:meta])* $marker:ident => $permission:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $marker;

        impl Required for $marker {
            const PERMISSION: Permission = Permission::$permission;
        }
    )*};
}

required! {
    /// `events:write`
    EventsWrite => EventsWrite;
    /// `sales:read`
    SalesRead => SalesRead;
    /// `checkin`
    CheckIn => CheckIn;
    /// `refunds`
    Refunds => Refunds;
}

/// A staff member holding permission `P`: a request without a valid token is refused with 401,
/// a valid token without `P` (or `admin`) with 403.
#[derive(Debug, Clone)]
pub struct Staff<P> {
    pub subject: String,
    permission: PhantomData<P>,
}

impl<P: Required + Send> FromRequestParts<AppState> for Staff<P> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let Some(verifier) = &state.auth else {
            return Err(AppError::client(
                StatusCode::SERVICE_UNAVAILABLE,
                "staff-sign-in-not-configured",
                "Staff sign-in not configured",
                "this storefront has no staff sign-in configured (the Tenant's spec.staffAuth); \
                 the admin API is closed",
            ));
        };
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| AppError::unauthorized("a staff bearer token is required"))?;
        let StaffMember { subject, grants } = verifier.verify(token.trim()).await?;
        let permission = P::PERMISSION.name();
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map_or("", MatchedPath::as_str);
        if !grants.allow(P::PERMISSION) {
            tracing::info!(%subject, permission, method = %parts.method, route, "staff request refused");
            return Err(AppError::forbidden(permission));
        }
        if parts.method != Method::GET {
            tracing::info!(%subject, permission, method = %parts.method, route, "staff change");
        }
        Ok(Self {
            subject,
            permission: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Claims {
        #[serde(default)]
        scope: ClaimValues,
        #[serde(default)]
        scp: ClaimValues,
        #[serde(default)]
        roles: ClaimValues,
    }

    fn grants(claims: serde_json::Value, prefix: &str) -> Grants {
        let c: Claims = serde_json::from_value(claims).expect("claims");
        Grants::from_claims([&c.scope, &c.scp, &c.roles], prefix)
    }

    fn allowed(g: &Grants) -> Vec<&'static str> {
        Permission::ALL
            .into_iter()
            .filter(|&p| p != Permission::Admin && g.allow(p))
            .map(Permission::name)
            .collect()
    }

    #[test]
    fn every_claim_shape_grants() {
        let g = grants(
            serde_json::json!({ "scope": "openid sales:read  checkin" }),
            "",
        );
        assert_eq!(allowed(&g), ["sales:read", "checkin"]);
        let g = grants(
            serde_json::json!({ "scp": ["refunds"], "roles": ["events:write"] }),
            "",
        );
        assert_eq!(allowed(&g), ["events:write", "refunds"]);
        let g = grants(serde_json::json!({ "scp": "sales:read refunds" }), "");
        assert_eq!(allowed(&g), ["sales:read", "refunds"]);
    }

    #[test]
    fn admin_grants_everything() {
        let g = grants(serde_json::json!({ "roles": ["admin"] }), "");
        assert_eq!(
            allowed(&g),
            ["events:write", "sales:read", "checkin", "refunds"]
        );
    }

    #[test]
    fn nothing_unknown_or_malformed_grants_anything() {
        for claims in [
            serde_json::json!({}),
            serde_json::json!({ "scope": "" }),
            serde_json::json!({ "scope": null }),
            serde_json::json!({ "scope": "Admin SALES:READ sales:read:extra sales" }),
            serde_json::json!({ "scp": 7, "roles": { "admin": true } }),
            serde_json::json!({ "roles": ["checkin", 7] }),
        ] {
            let g = grants(claims.clone(), "");
            assert_eq!(g, Grants::default(), "{claims}");
        }
    }

    #[test]
    fn a_prefix_must_be_present_and_is_stripped() {
        let g = grants(
            serde_json::json!({ "roles": ["tiqzy.checkin", "refunds", "other.admin"] }),
            "tiqzy.",
        );
        assert_eq!(allowed(&g), ["checkin"]);
    }
}
