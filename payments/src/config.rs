//! The environment the service runs with. The Stripe key is a `SecretString`: it never
//! appears in `Debug` output, logs or errors; a bad value names only the variable.

use std::net::SocketAddr;

use secrecy::SecretString;

#[derive(Debug, Clone)]
pub struct Config {
    /// Stripe's webhook secrets and the outbox's delivery settings.
    pub webhooks: crate::webhook::config::WebhookConfig,
    /// `TIQZY_PAYMENTS_LISTEN_ADDR`, default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// `DATABASE_URL`: the service's own database.
    pub database_url: SecretString,
    /// `STRIPE_SECRET_KEY`: the platform's key (`sk_...`/`rk_...`).
    pub stripe_secret_key: SecretString,
    /// `STRIPE_API_BASE`, default `https://api.stripe.com`.
    pub stripe_api_base: String,
    /// Each tenant's share of the Stripe rate limit.
    pub budget: crate::budget::BudgetConfig,
    /// `TIQZY_PAYMENTS_TOKEN_CACHE_SECONDS`, default 60: how long the API server's acceptance
    /// of a storefront token is reused (0: every request is reviewed).
    pub token_cache: std::time::Duration,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let webhooks = crate::webhook::config::WebhookConfig::from_vars(&var)?;
        let listen = var("TIQZY_PAYMENTS_LISTEN_ADDR")
            .unwrap_or_else(|| "0.0.0.0:8080".to_owned())
            .parse()
            .map_err(|_| anyhow::anyhow!("TIQZY_PAYMENTS_LISTEN_ADDR must be host:port"))?;
        let database_url = var("DATABASE_URL")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| anyhow::anyhow!("DATABASE_URL is required"))?;
        let key = var("STRIPE_SECRET_KEY")
            .filter(|k| k.starts_with("sk_") || k.starts_with("rk_"))
            .ok_or_else(|| {
                anyhow::anyhow!("STRIPE_SECRET_KEY is required and must start with sk_ or rk_")
            })?;
        let stripe_api_base =
            var("STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com".to_owned());
        let budget = crate::budget::BudgetConfig::from_vars(&var)?;
        let token_cache = match var("TIQZY_PAYMENTS_TOKEN_CACHE_SECONDS") {
            None => crate::caller::ACCEPTED_FOR,
            Some(v) => v.parse().map(std::time::Duration::from_secs).map_err(|_| {
                anyhow::anyhow!("TIQZY_PAYMENTS_TOKEN_CACHE_SECONDS must be a whole number")
            })?,
        };
        Ok(Self {
            webhooks,
            listen,
            database_url: database_url.into(),
            stripe_secret_key: key.into(),
            stripe_api_base,
            budget,
            token_cache,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_key_is_named_but_never_shown() {
        let vars = |name: &str| match name {
            "DATABASE_URL" => Some("postgres://x".to_owned()),
            "STRIPE_SECRET_KEY" => Some("pk_live_secretvalue".to_owned()),
            _ => None,
        };
        let error = Config::from_vars(vars).expect_err("refused").to_string();
        assert!(error.contains("STRIPE_SECRET_KEY"), "{error}");
        assert!(!error.contains("secretvalue"), "{error}");
    }

    #[test]
    fn debug_output_hides_the_key() {
        let vars = |name: &str| match name {
            "DATABASE_URL" => Some("postgres://u:dbpass@h/d".to_owned()),
            "STRIPE_SECRET_KEY" => Some("sk_test_secretvalue".to_owned()),
            _ => None,
        };
        let shown = format!("{:?}", Config::from_vars(vars).expect("valid"));
        assert!(
            !shown.contains("secretvalue") && !shown.contains("dbpass"),
            "{shown}"
        );
    }
}
