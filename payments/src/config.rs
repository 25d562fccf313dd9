//! The environment the service runs with. The Stripe key is a `SecretString`: it never
//! appears in `Debug` output, logs or errors; a bad value names only the variable.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;

#[derive(Debug, Clone)]
pub struct Config {
    /// `TIQZY_PAYMENTS_LISTEN_ADDR`, default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// `DATABASE_URL`: the service's own database.
    pub database_url: SecretString,
    /// `STRIPE_SECRET_KEY`: the platform's key (`sk_...`/`rk_...`).
    pub stripe_secret_key: SecretString,
    /// `STRIPE_API_BASE`, default `https://api.stripe.com`.
    pub stripe_api_base: String,
    /// `STRIPE_WEBHOOK_SECRETS`: Stripe's signing secrets, comma-separated (several during a
    /// rotation). Empty: the webhook endpoint answers 503.
    pub stripe_webhook_secrets: Vec<SecretString>,
    /// `TIQZY_PAYMENTS_DELIVERY_KEY`: the platform delivery key tenant secrets derive from.
    pub delivery_key: Option<SecretString>,
    /// `TIQZY_PAYMENTS_DELIVERY_URL`: where a tenant's events go, `{tenant}` replaced.
    pub delivery_url: String,
    /// `TIQZY_PAYMENTS_RETRY_BASE_MS`, default 1000: the first wait after a failed delivery.
    pub retry_base: Duration,
    /// `TIQZY_PAYMENTS_POLL_MS`, default 1000: how often the outbox looks for due deliveries.
    pub poll: Duration,
}

/// Where deliveries go unless `TIQZY_PAYMENTS_DELIVERY_URL` says otherwise.
pub const DEFAULT_DELIVERY_URL: &str = "http://storefront.tiqzy-{tenant}.svc/webhooks/stripe";

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
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
        let stripe_webhook_secrets = var("STRIPE_WEBHOOK_SECRETS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()))
            .collect();
        let delivery_key = var("TIQZY_PAYMENTS_DELIVERY_KEY")
            .filter(|k| !k.is_empty())
            .map(SecretString::from);
        let delivery_url =
            var("TIQZY_PAYMENTS_DELIVERY_URL").unwrap_or_else(|| DEFAULT_DELIVERY_URL.to_owned());
        if !delivery_url.contains("{tenant}") {
            anyhow::bail!("TIQZY_PAYMENTS_DELIVERY_URL must contain `{{tenant}}`");
        }
        Ok(Self {
            listen,
            database_url: database_url.into(),
            stripe_secret_key: key.into(),
            stripe_api_base,
            stripe_webhook_secrets,
            delivery_key,
            delivery_url,
            retry_base: millis(&var, "TIQZY_PAYMENTS_RETRY_BASE_MS", 1000)?,
            poll: millis(&var, "TIQZY_PAYMENTS_POLL_MS", 1000)?,
        })
    }
}

fn millis(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
) -> anyhow::Result<Duration> {
    match var(name) {
        None => Ok(Duration::from_millis(default)),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| anyhow::anyhow!("{name} must be a positive number of milliseconds")),
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
            "STRIPE_WEBHOOK_SECRETS" => Some("whsec_hooksecret,whsec_oldsecret".to_owned()),
            "TIQZY_PAYMENTS_DELIVERY_KEY" => Some("deliverysecret".to_owned()),
            _ => None,
        };
        let config = Config::from_vars(vars).expect("valid");
        assert_eq!(config.stripe_webhook_secrets.len(), 2);
        let shown = format!("{config:?}");
        assert!(
            [
                "secretvalue",
                "dbpass",
                "hooksecret",
                "oldsecret",
                "deliverysecret"
            ]
            .iter()
            .all(|secret| !shown.contains(secret)),
            "{shown}"
        );
    }
}
