//! Resale sellers' connected accounts, one per (tenant, seller): the only accounts a tenant
//! may pay out to besides its own.

use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

use crate::http::problem::Problem;

/// `POST /v1/seller-accounts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSellerAccount {
    /// The storefront's own name for the seller; one account per key.
    pub seller_key: String,
    pub email: String,
}

/// `POST /v1/seller-accounts/{account}/onboarding-links`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOnboardingLink {
    /// Counts the seller's links (part of the storefront's idempotency key).
    pub link_number: i32,
    pub refresh_url: String,
    pub return_url: String,
}

pub fn check_account(request: &NewSellerAccount) -> Result<(), Problem> {
    let key = &request.seller_key;
    if key.is_empty() || key.len() > 200 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Problem::invalid(
            "seller_key must hold 1 to 200 printable ASCII characters",
        ));
    }
    let email = &request.email;
    if email.len() > 254
        || email
            .split_once('@')
            .is_none_or(|(l, d)| l.is_empty() || d.is_empty())
    {
        return Err(Problem::invalid("email must be an e-mail address"));
    }
    Ok(())
}

pub fn check_link(request: &NewOnboardingLink) -> Result<(), Problem> {
    let web = |url: &str| url.starts_with("https://") || url.starts_with("http://");
    if request.link_number < 0 || !web(&request.refresh_url) || !web(&request.return_url) {
        return Err(Problem::invalid(
            "link_number must be 0 or more, refresh_url and return_url web addresses",
        ));
    }
    Ok(())
}

/// The account recorded for the tenant's seller.
pub async fn of_seller(
    db: impl PgExecutor<'_>,
    tenant: &str,
    seller_key: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT account FROM seller_accounts WHERE tenant = $1 AND seller_key = $2",
        tenant,
        seller_key,
    )
    .fetch_optional(db)
    .await
}

/// Records a new seller account; answers the account recorded for the seller, which is an
/// earlier one when two requests for the same seller raced.
pub async fn record(
    db: &sqlx::PgPool,
    account: &str,
    tenant: &str,
    seller_key: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query!(
        "INSERT INTO seller_accounts (account, tenant, seller_key) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        account,
        tenant,
        seller_key,
    )
    .execute(db)
    .await?;
    of_seller(db, tenant, seller_key).await
}

/// The tenant whose seller `account` is, if any.
pub async fn owner(db: impl PgExecutor<'_>, account: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT tenant FROM seller_accounts WHERE account = $1",
        account
    )
    .fetch_optional(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seller_needs_a_key_and_an_address() {
        let ok = NewSellerAccount {
            seller_key: "seller-0f3c".into(),
            email: "fan@example.com".into(),
        };
        assert!(check_account(&ok).is_ok());
        for (key, email) in [
            ("", "fan@example.com"),
            ("a b", "fan@example.com"),
            ("s", "fan"),
            ("s", "@example.com"),
        ] {
            let bad = NewSellerAccount {
                seller_key: key.into(),
                email: email.into(),
            };
            assert!(check_account(&bad).is_err(), "{key:?} {email:?}");
        }
    }
}
