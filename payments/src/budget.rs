//! Each tenant's share of the platform's Stripe rate limit: a token bucket per tenant, so one
//! busy (or misbehaving) storefront cannot use up the limit every other tenant shares.
//! Checked after authentication, so an unauthenticated flood costs no tenant its budget.
//!
//! Written here rather than taken from `governor`: the service needs the wait until the next
//! token for `Retry-After` and per-tenant buckets that are dropped when idle; that is a few
//! lines of arithmetic over `Instant`, unit-tested below with explicit times.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default sustained requests per second per tenant.
pub const DEFAULT_RATE: f64 = 10.0;
/// Default burst per tenant.
pub const DEFAULT_BURST: u32 = 40;
/// Buckets untouched this long are full again and are forgotten.
const IDLE: Duration = Duration::from_secs(600);

/// `TIQZY_PAYMENTS_TENANT_REQUESTS_PER_SECOND` and `TIQZY_PAYMENTS_TENANT_BURST`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            per_second: DEFAULT_RATE,
            burst: DEFAULT_BURST,
        }
    }
}

impl BudgetConfig {
    pub fn from_vars(var: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let per_second = match var("TIQZY_PAYMENTS_TENANT_REQUESTS_PER_SECOND") {
            None => DEFAULT_RATE,
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "TIQZY_PAYMENTS_TENANT_REQUESTS_PER_SECOND must be a positive number"
                    )
                })?,
        };
        let burst = match var("TIQZY_PAYMENTS_TENANT_BURST") {
            None => DEFAULT_BURST,
            Some(v) => v.parse::<u32>().ok().filter(|b| *b >= 1).ok_or_else(|| {
                anyhow::anyhow!("TIQZY_PAYMENTS_TENANT_BURST must be a whole number from 1")
            })?,
        };
        Ok(Self { per_second, burst })
    }
}

/// One tenant's bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token at `now`, or says how long until one is there.
    fn take(&mut self, config: BudgetConfig, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * config.per_second).min(f64::from(config.burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / config.per_second,
            ))
        }
    }
}

/// The buckets of all tenants.
#[derive(Debug)]
pub struct Budget {
    config: BudgetConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Budget {
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            buckets: Mutex::default(),
        }
    }

    /// Spends one request of `tenant`'s budget, or answers how long to wait (whole seconds,
    /// rounded up, for `Retry-After`).
    pub fn spend(&self, tenant: &str) -> Result<(), u64> {
        self.spend_at(tenant, Instant::now())
    }

    fn spend_at(&self, tenant: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 1024 {
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < IDLE);
        }
        let full = f64::from(self.config.burst);
        let bucket = buckets.entry(tenant.to_owned()).or_insert(Bucket {
            tokens: full,
            at: now,
        });
        bucket
            .take(self.config, now)
            .map_err(|wait| wait.as_secs_f64().ceil().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_second: f64, burst: u32) -> Budget {
        Budget::new(BudgetConfig { per_second, burst })
    }

    #[test]
    fn a_burst_passes_then_the_tenant_waits_for_the_next_token() {
        let b = budget(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.spend_at("acme", t0), Ok(()));
        }
        assert_eq!(b.spend_at("acme", t0), Err(1), "half a second, said as 1 s");
        assert_eq!(b.spend_at("acme", t0 + Duration::from_millis(499)), Err(1));
        assert_eq!(b.spend_at("acme", t0 + Duration::from_millis(500)), Ok(()));
        assert!(b.spend_at("acme", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn tenants_do_not_share_a_bucket() {
        let b = budget(1.0, 1);
        let t0 = Instant::now();
        assert_eq!(b.spend_at("acme", t0), Ok(()));
        assert!(b.spend_at("acme", t0).is_err());
        assert_eq!(b.spend_at("rival", t0), Ok(()));
    }

    #[test]
    fn an_idle_bucket_refills_only_to_the_burst() {
        let b = budget(10.0, 2);
        let t0 = Instant::now();
        assert_eq!(b.spend_at("acme", t0), Ok(()));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.spend_at("acme", later), Ok(()));
        assert_eq!(b.spend_at("acme", later), Ok(()));
        assert!(b.spend_at("acme", later).is_err());
    }

    #[test]
    fn a_slow_rate_asks_for_a_long_wait() {
        let b = budget(0.1, 1);
        let t0 = Instant::now();
        assert_eq!(b.spend_at("acme", t0), Ok(()));
        assert_eq!(b.spend_at("acme", t0), Err(10));
    }

    #[test]
    fn settings_come_from_the_environment_with_defaults() {
        let none = |_: &str| None;
        assert_eq!(
            BudgetConfig::from_vars(&none).expect("defaults"),
            BudgetConfig::default()
        );
        let set = |name: &str| match name {
            "TIQZY_PAYMENTS_TENANT_REQUESTS_PER_SECOND" => Some("2.5".to_owned()),
            "TIQZY_PAYMENTS_TENANT_BURST" => Some("5".to_owned()),
            _ => None,
        };
        assert_eq!(
            BudgetConfig::from_vars(&set).expect("set"),
            BudgetConfig {
                per_second: 2.5,
                burst: 5
            }
        );
        let zero = |name: &str| (name == "TIQZY_PAYMENTS_TENANT_BURST").then(|| "0".to_owned());
        assert!(BudgetConfig::from_vars(&zero).is_err());
        let negative = |name: &str| {
            (name == "TIQZY_PAYMENTS_TENANT_REQUESTS_PER_SECOND").then(|| "-1".to_owned())
        };
        assert!(BudgetConfig::from_vars(&negative).is_err());
    }
}
