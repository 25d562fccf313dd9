//! Sends what the outbox holds. Any number of replicas may run it: each claims a batch of due
//! rows under a lease, sends them, and marks each sent right after the relay accepted it.
//!
//! A message is sent twice only if the process dies after the relay accepted it and before
//! the row is marked sent (one UPDATE); the resend carries the same `Message-ID`, which mail
//! clients use to fold duplicates.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::outbox::{self, Claimed, QUEUED};
use super::{Letterhead, Rendered};
use crate::config::{Config, MailConfig, SecretSource, SmtpTls};
use crate::metrics::MAIL;

/// Rows one worker sends at once.
const BATCH: i64 = 32;
/// How long a claimed row stays with its worker: longer than a send may take.
const LEASE: Duration = Duration::from_secs(60);
/// The longest one send may take before it counts as failed (and is retried).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle worker looks for rows other replicas queued or retries that fell due.
const IDLE: Duration = Duration::from_secs(2);
/// A refusal the relay calls permanent is believed after this many attempts: the first
/// may be a misconfigured relay rather than a bad address.
const PERMANENT_AFTER: i32 = 3;

/// Where mail goes: an SMTP relay, or the log when none is configured.
#[derive(Clone)]
enum Relay {
    Log,
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

impl Relay {
    fn new(config: &MailConfig) -> anyhow::Result<Self> {
        let Some(smtp) = &config.smtp else {
            return Ok(Self::Log);
        };
        type Transport = AsyncSmtpTransport<Tokio1Executor>;
        let mut builder = match smtp.tls {
            SmtpTls::None => Transport::builder_dangerous(&smtp.host),
            SmtpTls::StartTls => Transport::starttls_relay(&smtp.host)?,
            SmtpTls::Tls => Transport::relay(&smtp.host)?,
        }
        .port(smtp.port)
        .timeout(Some(SEND_TIMEOUT));
        if let Some(credentials) = &smtp.credentials {
            builder = builder.credentials(Credentials::new(
                read(&credentials.username)?,
                read(&credentials.password)?,
            ));
        }
        Ok(Self::Smtp(builder.build()))
    }
}

/// Reads a secret now: a mounted file is read again on every reconnect, so rotation works.
fn read(source: &SecretSource) -> anyhow::Result<String> {
    Ok(match source {
        SecretSource::Value(v) => v.expose_secret().to_owned(),
        SecretSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
            .trim()
            .to_owned(),
    })
}

/// Runs until `shutdown` changes; a batch in flight is finished first.
pub async fn run(db: PgPool, config: Arc<Config>, mut shutdown: watch::Receiver<bool>) {
    if config.mail.smtp.is_none() {
        tracing::warn!(
            "TIQZY_SMTP_HOST is not set: mail is queued and logged (recipient and subject), not sent"
        );
    }
    let mut relay: Option<Relay> = None;
    // After a wake-up the queuing transaction may not have committed yet: look again soon.
    let mut soon = 0usize;
    let mut housekeeping = Housekeeping::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        housekeeping.run(&db, &config.mail).await;
        let queued = QUEUED.notified();
        tokio::pin!(queued);
        queued.as_mut().enable();
        let claimed = match outbox::claim(&db, BATCH, LEASE).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "claiming mail failed");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            let wait = match soon {
                0 => IDLE,
                n => [
                    Duration::from_secs(1),
                    Duration::from_millis(200),
                    Duration::from_millis(20),
                ][n.min(3) - 1],
            };
            soon = soon.saturating_sub(1);
            tokio::select! {
                () = &mut queued => {
                    soon = 3;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        }
        let current = match relay.take().map_or_else(|| Relay::new(&config.mail), Ok) {
            Ok(relay) => relay,
            Err(e) => {
                tracing::warn!(error = %e, "the SMTP relay cannot be set up; retrying");
                for row in claimed {
                    let _ = outbox::retry_later(
                        &db,
                        row.id,
                        backoff(row.attempts, &config.mail),
                        &e.to_string(),
                    )
                    .await;
                }
                tokio::time::sleep(IDLE).await;
                continue;
            }
        };
        let mut sends = JoinSet::new();
        for row in claimed {
            sends.spawn(deliver(db.clone(), config.clone(), current.clone(), row));
        }
        let mut healthy = true;
        while let Some(sent) = sends.join_next().await {
            healthy &= sent.unwrap_or(false);
        }
        // A relay that failed is built afresh: new connections, credentials read again.
        if healthy {
            relay = Some(current);
        }
    }
}

/// How often the outbox gauges are refreshed.
const MEASURE_EVERY: Duration = Duration::from_secs(5);
/// How often sent rows past their retention are deleted (and once at start).
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

/// The worker's chores besides sending: gauges and pruning, each on its own schedule.
#[derive(Default)]
struct Housekeeping {
    measured: Option<tokio::time::Instant>,
    pruned: Option<tokio::time::Instant>,
}

impl Housekeeping {
    async fn run(&mut self, db: &PgPool, config: &MailConfig) {
        let due =
            |last: Option<tokio::time::Instant>, every| last.is_none_or(|t| t.elapsed() >= every);
        if due(self.measured, MEASURE_EVERY) {
            self.measured = Some(tokio::time::Instant::now());
            if let Err(e) = outbox::measure(db).await {
                tracing::warn!(error = %e, "measuring the mail outbox failed");
            }
        }
        if due(self.pruned, PRUNE_EVERY) {
            self.pruned = Some(tokio::time::Instant::now());
            match outbox::prune(db, config.retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "sent mail past its retention deleted"),
                Err(e) => tracing::warn!(error = %e, "pruning sent mail failed"),
            }
        }
    }
}

/// Sends one claimed row and records the outcome; `false` when the relay failed.
async fn deliver(db: PgPool, config: Arc<Config>, relay: Relay, row: Claimed) -> bool {
    let Claimed {
        id,
        message,
        attempts,
    } = row;
    let Some(message) = message else {
        let _ = outbox::retry_later(
            &db,
            id,
            backoff(attempts, &config.mail),
            "unknown message kind",
        )
        .await;
        return true;
    };
    let look = Letterhead {
        branding: &config.branding,
        locale: &config.locale,
    };
    let rendered = message.render(&look);
    let kind = message.kind();
    let transport = match relay {
        Relay::Log => {
            tracing::info!(
                to = message.recipient(),
                subject = rendered.subject,
                "mail logged, not sent"
            );
            mark_sent(&db, id).await;
            MAIL.sent(kind);
            return true;
        }
        Relay::Smtp(transport) => transport,
    };
    let email = match email(&config.mail, id, message.recipient(), rendered) {
        Ok(email) => email,
        Err(e) => {
            tracing::warn!(mail = %id, error = %e, "mail cannot be addressed; dropped");
            let _ = outbox::mark_failed(&db, id, &e).await;
            MAIL.failed(kind);
            return true;
        }
    };
    let outcome = tokio::time::timeout(SEND_TIMEOUT, transport.send(email)).await;
    match outcome {
        Ok(Ok(_)) => {
            mark_sent(&db, id).await;
            MAIL.sent(kind);
            true
        }
        Ok(Err(e)) if e.is_permanent() && attempts >= PERMANENT_AFTER => {
            tracing::warn!(mail = %id, error = %e, "the relay refused the mail for good");
            let _ = outbox::mark_failed(&db, id, &e.to_string()).await;
            MAIL.failed(kind);
            true
        }
        Ok(Err(e)) => {
            MAIL.retried(kind);
            tracing::info!(mail = %id, attempts, error = %e, "sending mail failed; will retry");
            let _ =
                outbox::retry_later(&db, id, backoff(attempts, &config.mail), &e.to_string()).await;
            false
        }
        Err(_) => {
            MAIL.retried(kind);
            tracing::info!(mail = %id, attempts, "sending mail timed out; will retry");
            let _ =
                outbox::retry_later(&db, id, backoff(attempts, &config.mail), "timed out").await;
            false
        }
    }
}

/// The relay has the message: mark it at once, and keep trying for a while if the database
/// hiccups, since a row left unmarked is sent again when its lease ends.
async fn mark_sent(db: &PgPool, id: uuid::Uuid) {
    let mut wait = Duration::from_millis(50);
    for _ in 0..8 {
        match outbox::mark_sent(db, id).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(mail = %id, error = %e, "marking mail sent failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
}

fn email(
    config: &MailConfig,
    id: uuid::Uuid,
    to: &str,
    rendered: Rendered,
) -> Result<lettre::Message, String> {
    let to: Mailbox = to.parse().map_err(|_| "not a valid address".to_owned())?;
    let mut builder = lettre::Message::builder()
        .message_id(Some(outbox::message_id(id, config.from.email.domain())))
        .from(config.from.clone())
        .to(to)
        .subject(rendered.subject);
    if let Some(reply_to) = &config.reply_to {
        builder = builder.reply_to(reply_to.clone());
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            rendered.text,
            rendered.html,
        ))
        .map_err(|e| e.to_string())
}

/// 1 s, 2 s, 4 s, ... up to the configured longest wait.
fn backoff(attempts: i32, config: &MailConfig) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    Duration::from_secs(1u64 << exponent).min(config.retry_max)
}
