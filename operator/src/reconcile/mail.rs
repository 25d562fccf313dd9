//! The storefront's SMTP credentials, read from the Secret `Platform.spec.mail` names, and
//! `MailReady`. A missing Secret never stops the storefront: its mail waits in the outbox.

use std::collections::BTreeMap;

use tiqzy_crds::PlatformSpec;
use tiqzy_crds::conditions::{Reason, types};

use super::Observed;
use super::servers::secret_fields;
use crate::context::Context;

/// `storefront-mail` contents (the relay's credentials, when it takes any) and `MailReady`.
pub async fn mail(
    ctx: &Context,
    platform: &PlatformSpec,
) -> (Option<BTreeMap<String, String>>, Observed) {
    let credentials = match platform
        .mail
        .as_ref()
        .and_then(|m| m.credentials_secret_ref.as_ref())
    {
        Some(r) => Some(secret_fields(ctx, r, ["username", "password"]).await),
        None => None,
    };
    decide(platform, credentials)
}

/// The decision, without I/O: `credentials` is what reading the named Secret gave.
pub fn decide(
    platform: &PlatformSpec,
    credentials: Option<Result<[String; 2], String>>,
) -> (Option<BTreeMap<String, String>>, Observed) {
    let Some(mail) = &platform.mail else {
        return (
            None,
            Observed::failed(
                types::MAIL_READY,
                Reason::MailNotConfigured,
                "the Platform names no SMTP relay (spec.mail): mail is queued and logged, not sent",
            ),
        );
    };
    let relay = format!(
        "{}:{}",
        mail.host,
        mail.port.unwrap_or(mail.tls.default_port())
    );
    match credentials {
        None => (
            None,
            Observed::ok(
                types::MAIL_READY,
                Reason::MailConfigured,
                format!("mail leaves through {relay} without credentials"),
            ),
        ),
        Some(Ok([username, password])) => (
            Some(BTreeMap::from([
                ("TIQZY_SMTP_USERNAME".to_owned(), username),
                ("TIQZY_SMTP_PASSWORD".to_owned(), password),
            ])),
            Observed::ok(
                types::MAIL_READY,
                Reason::MailConfigured,
                format!("mail leaves through {relay}"),
            ),
        ),
        Some(Err(why)) => (
            None,
            Observed::failed(
                types::MAIL_READY,
                Reason::MailSecretUnavailable,
                format!("{why}: mail waits in the storefront's outbox until it can be sent"),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    fn with_mail(credentials: bool) -> PlatformSpec {
        let mut platform = fixture::platform().spec;
        platform.mail = Some(
            serde_json::from_value(serde_json::json!({
                "host": "smtp.mail.example", "from": "tickets@platform.example",
            }))
            .expect("mail"),
        );
        if credentials {
            platform.mail.as_mut().expect("mail").credentials_secret_ref = Some(
                serde_json::from_value(
                    serde_json::json!({ "namespace": "tiqzy-system", "name": "smtp" }),
                )
                .expect("ref"),
            );
        }
        platform
    }

    #[test]
    fn without_a_relay_mail_is_not_ready_but_nothing_is_written() {
        let (secret, observed) = decide(&fixture::platform().spec, None);
        assert!(secret.is_none());
        assert!(!observed.ok);
        assert_eq!(observed.reason, Reason::MailNotConfigured);
    }

    #[test]
    fn credentials_reach_the_storefront_secret_and_never_the_message() {
        let (secret, observed) = decide(
            &with_mail(true),
            Some(Ok(["acme".to_owned(), "smtp-pass-9a8b".to_owned()])),
        );
        let secret = secret.expect("a secret");
        assert_eq!(secret["TIQZY_SMTP_USERNAME"], "acme");
        assert_eq!(secret["TIQZY_SMTP_PASSWORD"], "smtp-pass-9a8b");
        assert!(observed.ok);
        assert_eq!(
            observed.message,
            "mail leaves through smtp.mail.example:587"
        );
        assert!(!observed.message.contains("smtp-pass"));
    }

    #[test]
    fn a_missing_secret_is_named_and_the_mail_waits() {
        let why = "Secret tiqzy-system/smtp has no key \"password\"".to_owned();
        let (secret, observed) = decide(&with_mail(true), Some(Err(why)));
        assert!(secret.is_none());
        assert!(!observed.ok);
        assert_eq!(observed.reason, Reason::MailSecretUnavailable);
        assert!(
            observed.message.contains("tiqzy-system/smtp"),
            "{}",
            observed.message
        );
        let (secret, observed) = decide(&with_mail(false), None);
        assert!(secret.is_none() && observed.ok);
    }
}
