//! The runtime's configuration, read once from the environment the operator writes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use secrecy::{SecretSlice, SecretString};
use tiqzy_crds::payments::WEBHOOK_SECRETS_VAR;

pub use self::mail::{MailConfig, SecretSource, Smtp, SmtpCredentials, SmtpTls};
use crate::domain::{Currency, PriceCap};
use crate::locale::Locale;

/// Everything one tenant's runtime needs to know, validated. Secrets are kept in `secrecy`
/// wrappers, so printing a `Config` never prints them and using one is a visible
/// `expose_secret()`.
#[derive(Debug, Clone)]
pub struct Config {
    pub tenant: String,
    pub branding: Branding,
    pub currency: Currency,
    /// How prices and dates are written on pages; any well-formed tag is accepted.
    pub locale: Locale,
    pub resale: ResalePolicy,
    pub public_url: String,
    pub listen_addr: SocketAddr,
    /// Where `/metrics` is served: a port of its own, never reachable through the Route.
    pub metrics_addr: SocketAddr,
    /// Carries the tenant role's password.
    pub database_url: SecretString,
    /// Carries the tenant's Redis user's password.
    pub redis_url: Option<SecretString>,
    /// PEM of the private CA a `rediss://` server's certificate is checked against, besides
    /// the public roots.
    pub redis_ca_pem: Option<String>,
    pub cache_key_prefix: String,
    /// Staff sign-in for the admin API; without it the admin API is closed.
    pub oauth: Option<OAuth>,
    /// `TIQZY_TICKET_SIGNING_KEY`: one key, or several separated by commas, newest first (the
    /// first signs ticket codes, all verify them: prepend a key to rotate, drop one to retire it).
    pub ticket_signing_keys: Vec<SecretSlice<u8>>,
    /// Most connections this replica opens; the operator divides the tenant role's connection
    /// limit between the replicas the autoscaler and a rollout may run at once.
    pub db_max_connections: u32,
    /// How long a request waits for a free connection before it is answered 503.
    pub db_acquire_timeout: Duration,
    /// What one pod accepts from its clients (`TIQZY_HEADER_READ_TIMEOUT_MS`, default 30 s;
    /// `TIQZY_MAX_CONNECTIONS`, default 1024).
    pub limits: crate::server::Limits,
    pub hold_ttl: Duration,
    /// Holds one client may create per minute (`TIQZY_HOLD_RATE_LIMIT_PER_MINUTE`); the same
    /// number bounds the resale listings one client may reserve per minute.
    pub hold_rate_limit: u32,
    /// `TIQZY_MAX_TICKETS_PER_CLIENT_PER_EVENT`, default 10: tickets one client may hold at
    /// once in one event, over its live holds and its reserved resale listings (an unpaid
    /// order keeps its hold or reservation, so it counts until paid or lapsed).
    pub max_tickets_per_client: u32,
    /// `TIQZY_TRUSTED_PROXIES`, default 1 (the router): how many proxies in front of the
    /// storefront append to `X-Forwarded-For`. The client is the address the outermost of
    /// them saw; anything further left was written by the client and is ignored.
    pub trusted_proxies: usize,
    pub sign_in_limits: SignInLimits,
    pub payments: PaymentsConfig,
    pub mail: MailConfig,
}

/// The tenant's look on every storefront page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Branding {
    pub display_name: String,
    pub primary_color: String,
    pub accent_color: String,
    pub logo_url: Option<String>,
    /// Shown in every page's footer when set.
    pub support_email: Option<String>,
}

/// How many sign-in links may be mailed per hour, to one address and at one client's request.
#[derive(Debug, Clone, Copy)]
pub struct SignInLimits {
    /// `TIQZY_SIGN_IN_MAILS_PER_ADDRESS_PER_HOUR`, default 5.
    pub per_address: u32,
    /// `TIQZY_SIGN_IN_MAILS_PER_CLIENT_PER_HOUR`, default 20.
    pub per_client: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct ResalePolicy {
    pub enabled: bool,
    pub price_cap: PriceCap,
    pub seller_fee_bps: u32,
}

/// How this tenant takes money, through the platform's payments service (Stripe's key lives
/// there, never here). Without the service's address the storefront cannot take payments;
/// without a connected account it cannot sell its own tickets (resale may still work).
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    /// `TIQZY_PAYMENTS_URL`: where `tiqzy-payments` answers.
    pub service_url: Option<String>,
    /// `TIQZY_PAYMENTS_TOKEN_FILE`: the projected ServiceAccount token presented to it.
    pub token_file: PathBuf,
    /// Every secret a delivered event may be signed with: more than one while rotating.
    pub webhook_secrets: Vec<SecretString>,
    /// The tenant's connected account, which primary sales pay into.
    pub connected_account: Option<String>,
    /// The platform's share of a primary sale, in basis points.
    pub application_fee_bps: u32,
}

#[derive(Debug, Clone)]
pub struct OAuth {
    pub issuer: String,
    pub audience: String,
    /// Put before every permission name in the token (`TIQZY_OAUTH_PERMISSION_PREFIX`, default
    /// none): with `tiqzy.`, the role `tiqzy.sales:read` grants `sales:read` and a bare
    /// `sales:read` grants nothing.
    pub permission_prefix: String,
    /// Private certificate authorities trusted besides the public roots when fetching the
    /// issuer's keys (`TIQZY_TRUSTED_CA_PEM`, written by the operator from the Platform's
    /// `caSecretRef`): an issuer inside a company network.
    pub trusted_cas: Vec<reqwest::Certificate>,
    /// The claim every staff token must carry with this tenant's value
    /// (`TIQZY_STAFF_TENANT_CLAIM`, value `TIQZY_STAFF_TENANT_CLAIM_VALUE`, default the
    /// tenant's name), so tenants sharing an issuer and audience never accept each other's
    /// staff. `None`: no such claim is required.
    pub tenant_claim: Option<TenantClaim>,
    /// How often the issuer's keys are fetched again (`TIQZY_STAFF_KEYS_REFRESH_SECONDS`,
    /// default 300): a key the issuer removes stops working within this time.
    pub keys_refresh: Duration,
}

/// A claim name and the value it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantClaim {
    pub name: String,
    pub value: String,
}

/// A variable that is missing or does not hold what it must.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Parses the variables; pure, so every rule is unit-tested without touching the process.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Vars(vars);
        let tenant = env.required("TIQZY_TENANT")?;
        let branding = Branding {
            display_name: env.required("TIQZY_DISPLAY_NAME")?,
            primary_color: env.parse("TIQZY_BRAND_PRIMARY_COLOR", hex_color)?,
            accent_color: env.parse("TIQZY_BRAND_ACCENT_COLOR", hex_color)?,
            logo_url: env
                .optional("TIQZY_BRAND_LOGO_URL")
                .as_deref()
                .map(http_url)
                .transpose()
                .map_err(|problem| ConfigError {
                    name: "TIQZY_BRAND_LOGO_URL",
                    problem,
                })?,
            support_email: env.optional("TIQZY_SUPPORT_EMAIL"),
        };
        let public_url = env.parse("TIQZY_PUBLIC_URL", |v| {
            http_url(v).map(|u| u.trim_end_matches('/').to_owned())
        })?;
        let mail = MailConfig::from_vars(
            &env,
            &branding.display_name,
            branding.support_email.as_deref(),
            public_host(&public_url),
        )?;
        Ok(Self {
            branding,
            mail,
            currency: env.parse("TIQZY_CURRENCY", |v| {
                Currency::parse(v).map_err(|e| e.to_string())
            })?,
            locale: env.parse("TIQZY_LOCALE", Locale::parse)?,
            resale: ResalePolicy {
                enabled: env.parse("TIQZY_RESALE_ENABLED", boolean)?,
                price_cap: env.parse("TIQZY_RESALE_PRICE_CAP_PERCENT", |v| {
                    let percent = v
                        .parse::<u32>()
                        .map_err(|_| "not a whole number".to_owned())?;
                    PriceCap::new(percent).map_err(|e| e.to_string())
                })?,
                seller_fee_bps: env.parse("TIQZY_RESALE_SELLER_FEE_BPS", |v| match v.parse() {
                    Ok(bps) if bps <= 10_000 => Ok(bps),
                    _ => Err("must be basis points between 0 and 10000".to_owned()),
                })?,
            },
            public_url,
            listen_addr: match env.optional("TIQZY_LISTEN_ADDR") {
                None => SocketAddr::from(([0, 0, 0, 0], 8080)),
                Some(v) => v.parse().map_err(|_| ConfigError {
                    name: "TIQZY_LISTEN_ADDR",
                    problem: "not a socket address like 0.0.0.0:8080".to_owned(),
                })?,
            },
            metrics_addr: match env.optional("TIQZY_METRICS_ADDR") {
                None => SocketAddr::from(([0, 0, 0, 0], 9090)),
                Some(v) => v.parse().map_err(|_| ConfigError {
                    name: "TIQZY_METRICS_ADDR",
                    problem: "not a socket address like 0.0.0.0:9090".to_owned(),
                })?,
            },
            database_url: env.required("DATABASE_URL")?.into(),
            redis_url: env.optional("REDIS_URL").map(SecretString::from),
            redis_ca_pem: redis_ca_pem(&env)?,
            // Written by the operator with the Redis user; without Redis it names nothing.
            cache_key_prefix: env
                .optional("TIQZY_CACHE_KEY_PREFIX")
                .unwrap_or_else(|| format!("t:{tenant}:")),
            oauth: OAuth::from_vars(&env, &tenant)?,
            ticket_signing_keys: env.parse("TIQZY_TICKET_SIGNING_KEY", signing_keys)?,
            db_max_connections: env.whole_number_in("TIQZY_DB_MAX_CONNECTIONS", 10, 1..=500)?,
            limits: crate::server::Limits {
                header_read_timeout: Duration::from_millis(env.whole_number_in(
                    "TIQZY_HEADER_READ_TIMEOUT_MS",
                    30_000,
                    100..=120_000,
                )?),
                max_connections: env.whole_number_in("TIQZY_MAX_CONNECTIONS", 1024, 1..=100_000)?,
            },
            db_acquire_timeout: Duration::from_millis(env.whole_number_in(
                "TIQZY_DB_ACQUIRE_TIMEOUT_MS",
                5_000,
                10..=60_000,
            )?),
            // At most two hours: a hold is for checking out, and a Stripe Checkout session
            // (which lives until the hold ends plus half an hour) may last at most 24 hours.
            hold_ttl: Duration::from_secs(env.whole_number_in(
                "TIQZY_HOLD_TTL_SECONDS",
                600,
                1..=7_200,
            )?),
            // Zero would refuse every buyer; a limit is a number of holds, not a switch.
            hold_rate_limit: env.whole_number_in(
                "TIQZY_HOLD_RATE_LIMIT_PER_MINUTE",
                30,
                1..=1_000_000,
            )?,
            max_tickets_per_client: env.whole_number_in(
                "TIQZY_MAX_TICKETS_PER_CLIENT_PER_EVENT",
                10,
                1..=1_000_000,
            )?,
            // More hops than any real chain of proxies means a misconfiguration, not a setup.
            trusted_proxies: env.whole_number_in("TIQZY_TRUSTED_PROXIES", 1, 0..=8)?,
            sign_in_limits: SignInLimits {
                per_address: env.whole_number_in(
                    "TIQZY_SIGN_IN_MAILS_PER_ADDRESS_PER_HOUR",
                    5,
                    1..=10_000,
                )?,
                per_client: env.whole_number_in(
                    "TIQZY_SIGN_IN_MAILS_PER_CLIENT_PER_HOUR",
                    20,
                    1..=100_000,
                )?,
            },
            payments: PaymentsConfig::from_vars(&env)?,
            tenant,
        })
    }
}

impl PaymentsConfig {
    fn from_vars(env: &Vars<'_>) -> Result<Self, ConfigError> {
        let service_url = env
            .optional("TIQZY_PAYMENTS_URL")
            .map(|v| {
                http_url(&v)
                    .map(|u| u.trim_end_matches('/').to_owned())
                    .map_err(|problem| ConfigError {
                        name: "TIQZY_PAYMENTS_URL",
                        problem,
                    })
            })
            .transpose()?;
        let token_file = PathBuf::from(
            env.optional("TIQZY_PAYMENTS_TOKEN_FILE")
                .unwrap_or_else(|| tiqzy_crds::payments::TOKEN_PATH.to_owned()),
        );
        // The values are secrets: problems name the variable and the rule, never the value.
        let webhook_secrets = match env.optional(WEBHOOK_SECRETS_VAR) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    (s.starts_with("whsec_") && s.len() > 8)
                        .then(|| SecretString::from(s))
                        .ok_or(ConfigError {
                            name: WEBHOOK_SECRETS_VAR,
                            problem: "must be a comma-separated list of whsec_... secrets"
                                .to_owned(),
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let connected_account = env
            .optional("TIQZY_STRIPE_ACCOUNT")
            .map(|account| {
                let valid = account.starts_with("acct_")
                    && account.len() > 5
                    && account[5..].bytes().all(|b| b.is_ascii_alphanumeric());
                valid.then_some(account).ok_or(ConfigError {
                    name: "TIQZY_STRIPE_ACCOUNT",
                    problem: "must be a connected account id like acct_1A2b3C".to_owned(),
                })
            })
            .transpose()?;
        let application_fee_bps = match env.optional("TIQZY_APPLICATION_FEE_BPS") {
            None => 0,
            Some(v) => match v.parse() {
                Ok(bps) if bps <= 10_000 => bps,
                _ => {
                    return Err(ConfigError {
                        name: "TIQZY_APPLICATION_FEE_BPS",
                        problem: "must be basis points between 0 and 10000".to_owned(),
                    });
                }
            },
        };
        Ok(Self {
            service_url,
            token_file,
            webhook_secrets,
            connected_account,
            application_fee_bps,
        })
    }
}

impl OAuth {
    /// Staff sign-in: both the issuer and the audience, or neither (then the admin API answers
    /// 503 and says why); the permission prefix is optional either way.
    fn from_vars(env: &Vars<'_>, tenant: &str) -> Result<Option<Self>, ConfigError> {
        let (issuer, audience) = match (
            env.optional("TIQZY_OAUTH_ISSUER"),
            env.optional("TIQZY_OAUTH_AUDIENCE"),
        ) {
            (None, None) => return Ok(None),
            (Some(issuer), Some(audience)) => (issuer, audience),
            (None, Some(_)) => {
                return Err(ConfigError {
                    name: "TIQZY_OAUTH_ISSUER",
                    problem: "is not set, but TIQZY_OAUTH_AUDIENCE is".to_owned(),
                });
            }
            (Some(_), None) => {
                return Err(ConfigError {
                    name: "TIQZY_OAUTH_AUDIENCE",
                    problem: "is not set, but TIQZY_OAUTH_ISSUER is".to_owned(),
                });
            }
        };
        let issuer = secure_url(&issuer)
            .map(|u| u.trim_end_matches('/').to_owned())
            .map_err(|problem| ConfigError {
                name: "TIQZY_OAUTH_ISSUER",
                problem,
            })?;
        let claim_text = |name: &'static str, v: String| {
            if v.chars().count() <= 256 && !v.chars().any(char::is_control) {
                Ok(v)
            } else {
                Err(ConfigError {
                    name,
                    problem: "must be at most 256 characters without control characters".to_owned(),
                })
            }
        };
        let tenant_claim = match (
            env.optional("TIQZY_STAFF_TENANT_CLAIM"),
            env.optional("TIQZY_STAFF_TENANT_CLAIM_VALUE"),
        ) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError {
                    name: "TIQZY_STAFF_TENANT_CLAIM",
                    problem: "is not set, but TIQZY_STAFF_TENANT_CLAIM_VALUE is".to_owned(),
                });
            }
            (Some(name), value) => Some(TenantClaim {
                name: claim_text("TIQZY_STAFF_TENANT_CLAIM", name)?,
                value: claim_text(
                    "TIQZY_STAFF_TENANT_CLAIM_VALUE",
                    value.unwrap_or_else(|| tenant.to_owned()),
                )?,
            }),
        };
        let keys_refresh = Duration::from_secs(env.whole_number_in(
            "TIQZY_STAFF_KEYS_REFRESH_SECONDS",
            300,
            1..=86_400,
        )?);
        let trusted_cas = match env.optional("TIQZY_TRUSTED_CA_PEM") {
            None => Vec::new(),
            Some(pem) => match reqwest::Certificate::from_pem_bundle(pem.as_bytes()) {
                // The TLS stack reads each certificate only when a client is built with it.
                Ok(cas)
                    if !cas.is_empty()
                        && cas
                            .iter()
                            .cloned()
                            .fold(
                                reqwest::Client::builder(),
                                reqwest::ClientBuilder::add_root_certificate,
                            )
                            .build()
                            .is_ok() =>
                {
                    cas
                }
                _ => {
                    return Err(ConfigError {
                        name: "TIQZY_TRUSTED_CA_PEM",
                        problem: "must hold PEM certificates".to_owned(),
                    });
                }
            },
        };
        Ok(Some(Self {
            issuer,
            audience,
            trusted_cas,
            tenant_claim,
            keys_refresh,
            permission_prefix: match env.optional("TIQZY_OAUTH_PERMISSION_PREFIX") {
                None => String::new(),
                Some(v) if v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()) => v,
                Some(_) => {
                    return Err(ConfigError {
                        name: "TIQZY_OAUTH_PERMISSION_PREFIX",
                        problem: "must be at most 64 printable characters without spaces"
                            .to_owned(),
                    });
                }
            },
        }))
    }
}

/// `REDIS_CA_PEM`: only with a `rediss://` URL, and holding a certificate.
fn redis_ca_pem(env: &Vars<'_>) -> Result<Option<String>, ConfigError> {
    let Some(pem) = env.optional("REDIS_CA_PEM") else {
        return Ok(None);
    };
    let problem = |problem: &str| ConfigError {
        name: "REDIS_CA_PEM",
        problem: problem.to_owned(),
    };
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(problem("holds no PEM certificate"));
    }
    if !env
        .optional("REDIS_URL")
        .is_some_and(|url| url.starts_with("rediss://"))
    {
        return Err(problem("is set, but REDIS_URL is not a rediss:// URL"));
    }
    Ok(Some(pem))
}

struct Vars<'a>(&'a HashMap<String, String>);

impl Vars<'_> {
    fn optional(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError {
            name,
            problem: "is not set".to_owned(),
        })
    }

    /// An optional whole number within `range`, `default` when unset.
    fn whole_number_in<T>(
        &self,
        name: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
    {
        let Some(v) = self.optional(name) else {
            return Ok(default);
        };
        match v.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ConfigError {
                name,
                problem: format!(
                    "must be a whole number between {} and {}",
                    range.start(),
                    range.end()
                ),
            }),
        }
    }

    fn parse<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        parse(&self.required(name)?).map_err(|problem| ConfigError { name, problem })
    }
}

fn hex_color(v: &str) -> Result<String, String> {
    let valid = v.len() == 7 && v.starts_with('#') && v[1..].chars().all(|c| c.is_ascii_hexdigit());
    if valid {
        Ok(v.to_ascii_lowercase())
    } else {
        Err("must be a colour like #1a2b3c".to_owned())
    }
}

fn http_url(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.starts_with("https://") || v.starts_with("http://") {
        Ok(v.to_owned())
    } else {
        Err("must be an http(s) URL".to_owned())
    }
}

/// An https URL; plain http only to a loopback host (a test issuer on this machine), since
/// whoever can change what travels over plain http decides who is staff.
pub fn secure_url(v: &str) -> Result<String, String> {
    let v = v.trim();
    let refused = || "must be an https URL (http only for a loopback host)".to_owned();
    if v.starts_with("https://") && v.len() > "https://".len() {
        return Ok(v.to_owned());
    }
    let rest = v.strip_prefix("http://").ok_or_else(refused)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(refused());
    }
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(v.to_owned())
    } else {
        Err(refused())
    }
}

fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be true or false".to_owned()),
    }
}

/// Accepts hex or (standard or URL-safe) base64; the key is never echoed back in the error.
fn signing_keys(v: &str) -> Result<Vec<SecretSlice<u8>>, String> {
    v.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, key)| {
            signing_key(key)
                .map(SecretSlice::from)
                .map_err(|problem| format!("key {} of the list {problem}", i + 1))
        })
        .collect()
}

fn signing_key(v: &str) -> Result<Vec<u8>, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let key = hex::decode(v)
        .ok()
        .or_else(|| b64.decode(v).ok())
        .or_else(|| b64url.decode(v.trim_end_matches('=')).ok())
        .ok_or("is neither hex nor base64")?;
    if key.len() < 32 {
        return Err(format!("must hold at least 32 bytes, holds {}", key.len()));
    }
    Ok(key)
}

/// The host of an http(s) URL, without port or path.
fn public_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.split(':').next().unwrap_or(authority)
}

mod mail;
#[cfg(test)]
mod tests;
