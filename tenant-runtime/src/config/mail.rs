//! How the storefront's mail leaves: the SMTP relay the operator names (from the Platform's
//! `spec.mail`) and who the mail is from (the Tenant's branding). Without a relay, mail still
//! goes through the outbox and is logged with its recipient and subject only.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use secrecy::SecretString;

use super::{ConfigError, Vars};

#[derive(Debug, Clone)]
pub struct MailConfig {
    /// `TIQZY_SMTP_HOST` and friends; `None` logs mail instead of sending it.
    pub smtp: Option<Smtp>,
    /// `TIQZY_MAIL_FROM` with `TIQZY_MAIL_FROM_NAME` (default: the tenant's display name).
    pub from: Mailbox,
    /// `TIQZY_MAIL_REPLY_TO`, else the tenant's support address, else none.
    pub reply_to: Option<Mailbox>,
    /// `TIQZY_MAIL_RETRY_MAX_SECONDS`: the longest wait between two attempts at one message.
    pub retry_max: Duration,
    /// `TIQZY_MAIL_RETENTION_DAYS`: how long a sent mail's row is kept (default 30 days).
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub credentials: Option<SmtpCredentials>,
}

/// `TIQZY_SMTP_TLS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP (a relay on the same network, or Mailpit in the tests).
    None,
    /// Plain connection upgraded by STARTTLS, which is required (port 587).
    StartTls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
}

impl SmtpTls {
    fn parse(v: &str) -> Result<Self, String> {
        match v.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "starttls" => Ok(Self::StartTls),
            "tls" => Ok(Self::Tls),
            _ => Err("must be none, starttls or tls".to_owned()),
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Self::None => 25,
            Self::StartTls => 587,
            Self::Tls => 465,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SmtpCredentials {
    pub username: SecretSource,
    pub password: SecretSource,
}

/// A secret given in a variable, or in a file (a mounted Secret, read when the connection
/// is built, so a rotated file is picked up).
#[derive(Debug, Clone)]
pub enum SecretSource {
    Value(SecretString),
    File(PathBuf),
}

impl MailConfig {
    /// `display_name`, `support_email` and `public_host` are the tenant's, already parsed.
    pub(super) fn from_vars(
        env: &Vars<'_>,
        display_name: &str,
        support_email: Option<&str>,
        public_host: &str,
    ) -> Result<Self, ConfigError> {
        let name = env
            .optional("TIQZY_MAIL_FROM_NAME")
            .unwrap_or_else(|| display_name.to_owned());
        let address = env
            .optional("TIQZY_MAIL_FROM")
            .unwrap_or_else(|| format!("noreply@{public_host}"));
        let from = mailbox(Some(name), &address).map_err(|problem| ConfigError {
            name: "TIQZY_MAIL_FROM",
            problem,
        })?;
        let reply_to = match env.optional("TIQZY_MAIL_REPLY_TO") {
            Some(address) => Some(mailbox(None, &address).map_err(|problem| ConfigError {
                name: "TIQZY_MAIL_REPLY_TO",
                problem,
            })?),
            // A support address that is not a valid mailbox only loses its use as Reply-To.
            None => support_email.and_then(|a| mailbox(None, a).ok()),
        };
        Ok(Self {
            smtp: Smtp::from_vars(env)?,
            from,
            reply_to,
            retry_max: Duration::from_secs(env.whole_number_in(
                "TIQZY_MAIL_RETRY_MAX_SECONDS",
                300,
                1..=86_400,
            )?),
            retention: Duration::from_secs(
                86_400 * env.whole_number_in("TIQZY_MAIL_RETENTION_DAYS", 30, 1..=3_650)?,
            ),
        })
    }
}

impl Smtp {
    fn from_vars(env: &Vars<'_>) -> Result<Option<Self>, ConfigError> {
        let Some(host) = env.optional("TIQZY_SMTP_HOST") else {
            for name in [
                "TIQZY_SMTP_PORT",
                "TIQZY_SMTP_USERNAME",
                "TIQZY_SMTP_USERNAME_FILE",
            ] {
                if env.optional(name).is_some() {
                    return Err(ConfigError {
                        name: "TIQZY_SMTP_HOST",
                        problem: format!("is not set, but {name} is"),
                    });
                }
            }
            return Ok(None);
        };
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        {
            return Err(ConfigError {
                name: "TIQZY_SMTP_HOST",
                problem: "must be a host name or IP address".to_owned(),
            });
        }
        let tls = match env.optional("TIQZY_SMTP_TLS") {
            None => SmtpTls::StartTls,
            Some(v) => SmtpTls::parse(&v).map_err(|problem| ConfigError {
                name: "TIQZY_SMTP_TLS",
                problem,
            })?,
        };
        let port = env.whole_number_in("TIQZY_SMTP_PORT", tls.default_port(), 1..=65_535)?;
        let username = secret_source(env, "TIQZY_SMTP_USERNAME", "TIQZY_SMTP_USERNAME_FILE")?;
        let password = secret_source(env, "TIQZY_SMTP_PASSWORD", "TIQZY_SMTP_PASSWORD_FILE")?;
        let credentials = match (username, password) {
            (None, None) => None,
            (Some(username), Some(password)) => Some(SmtpCredentials { username, password }),
            (Some(_), None) => {
                return Err(ConfigError {
                    name: "TIQZY_SMTP_PASSWORD",
                    problem: "is not set, but a username is".to_owned(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError {
                    name: "TIQZY_SMTP_USERNAME",
                    problem: "is not set, but a password is".to_owned(),
                });
            }
        };
        Ok(Some(Self {
            host,
            port,
            tls,
            credentials,
        }))
    }
}

fn secret_source(
    env: &Vars<'_>,
    value: &'static str,
    file: &'static str,
) -> Result<Option<SecretSource>, ConfigError> {
    match (env.optional(value), env.optional(file)) {
        (None, None) => Ok(None),
        (Some(v), None) => Ok(Some(SecretSource::Value(v.into()))),
        (None, Some(path)) => Ok(Some(SecretSource::File(path.into()))),
        (Some(_), Some(_)) => Err(ConfigError {
            name: value,
            problem: format!("is set, and so is {file}: give one of them"),
        }),
    }
}

fn mailbox(name: Option<String>, address: &str) -> Result<Mailbox, String> {
    let address = address
        .parse()
        .map_err(|_| "must be an e-mail address like shop@example.com".to_owned())?;
    Ok(Mailbox::new(name, address))
}
