//! The webhook endpoint's and the outbox's environment. Secrets are `SecretString`s: never in
//! `Debug` output, logs or errors.

use std::time::Duration;

use secrecy::SecretString;

/// Where deliveries go unless `TIQZY_PAYMENTS_DELIVERY_URL` says otherwise.
pub const DEFAULT_DELIVERY_URL: &str = "http://storefront.tiqzy-{tenant}.svc/webhooks/stripe";

/// Tenants one replica delivers to at once unless `TIQZY_PAYMENTS_DELIVERY_CONCURRENCY` says.
pub const DEFAULT_CONCURRENCY: usize = 64;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `STRIPE_WEBHOOK_SECRETS`: Stripe's signing secrets, comma-separated (several during a
    /// rotation). Empty: the webhook endpoint answers 503.
    pub stripe_secrets: Vec<SecretString>,
    /// `TIQZY_PAYMENTS_DELIVERY_KEY`: the platform delivery key tenant secrets derive from.
    pub delivery_key: Option<SecretString>,
    /// `TIQZY_PAYMENTS_DELIVERY_URL`: where a tenant's events go, `{tenant}` replaced.
    pub delivery_url: String,
    /// `TIQZY_PAYMENTS_RETRY_BASE_MS`, default 1000: the first wait after a failed delivery.
    pub retry_base: Duration,
    /// `TIQZY_PAYMENTS_POLL_MS`, default 1000: how often the outbox looks for deliveries that
    /// came due (retries; new ones are delivered at once).
    pub poll: Duration,
    /// `TIQZY_PAYMENTS_DELIVERY_CONCURRENCY`, default 64: tenants delivered to at the same time
    /// by one replica (each tenant's events still one at a time, in order).
    pub concurrency: usize,
    /// `TIQZY_PAYMENTS_RETENTION_DAYS`, default 30, at least 3: how long finished deliveries
    /// and event ids are kept.
    pub retention: Duration,
}

impl WebhookConfig {
    pub fn from_vars(var: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let stripe_secrets = var("STRIPE_WEBHOOK_SECRETS")
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
            stripe_secrets,
            delivery_key,
            delivery_url,
            retry_base: millis(var, "TIQZY_PAYMENTS_RETRY_BASE_MS", 1000)?,
            poll: millis(var, "TIQZY_PAYMENTS_POLL_MS", 1000)?,
            concurrency: match var("TIQZY_PAYMENTS_DELIVERY_CONCURRENCY") {
                None => DEFAULT_CONCURRENCY,
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| (1..=4096).contains(n))
                    .ok_or_else(|| {
                        anyhow::anyhow!("TIQZY_PAYMENTS_DELIVERY_CONCURRENCY must be 1 to 4096")
                    })?,
            },
            retention: crate::outbox::retention::retention_from(var(
                "TIQZY_PAYMENTS_RETENTION_DAYS",
            ))?,
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
    use crate::Config;

    fn vars(name: &str) -> Option<String> {
        match name {
            "DATABASE_URL" => Some("postgres://x".to_owned()),
            "STRIPE_SECRET_KEY" => Some("sk_test_k".to_owned()),
            "STRIPE_WEBHOOK_SECRETS" => Some("whsec_hooksecret, whsec_oldsecret".to_owned()),
            "TIQZY_PAYMENTS_DELIVERY_KEY" => Some("deliverysecret".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn secrets_are_read_but_never_shown() {
        let config = Config::from_vars(vars).expect("valid");
        assert_eq!(config.webhooks.stripe_secrets.len(), 2);
        assert!(config.webhooks.delivery_key.is_some());
        assert_eq!(config.webhooks.delivery_url, DEFAULT_DELIVERY_URL);
        let shown = format!("{config:?}");
        for secret in ["hooksecret", "oldsecret", "deliverysecret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn unusable_settings_are_named() {
        let bad_url = |name: &str| match name {
            "TIQZY_PAYMENTS_DELIVERY_URL" => Some("http://storefront/webhooks".to_owned()),
            _ => vars(name),
        };
        let error = Config::from_vars(bad_url).expect_err("refused").to_string();
        assert!(error.contains("TIQZY_PAYMENTS_DELIVERY_URL"), "{error}");
        let bad_poll = |name: &str| match name {
            "TIQZY_PAYMENTS_POLL_MS" => Some("0".to_owned()),
            _ => vars(name),
        };
        let error = Config::from_vars(bad_poll)
            .expect_err("refused")
            .to_string();
        assert!(error.contains("TIQZY_PAYMENTS_POLL_MS"), "{error}");
        let short_memory = |name: &str| match name {
            "TIQZY_PAYMENTS_RETENTION_DAYS" => Some("1".to_owned()),
            _ => vars(name),
        };
        let error = Config::from_vars(short_memory)
            .expect_err("refused")
            .to_string();
        assert!(error.contains("TIQZY_PAYMENTS_RETENTION_DAYS"), "{error}");
        let no_workers = |name: &str| match name {
            "TIQZY_PAYMENTS_DELIVERY_CONCURRENCY" => Some("0".to_owned()),
            _ => vars(name),
        };
        let error = Config::from_vars(no_workers)
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("TIQZY_PAYMENTS_DELIVERY_CONCURRENCY"),
            "{error}"
        );
    }
}
