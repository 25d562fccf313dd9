//! Outgoing mail to buyers, behind one small interface. Until a provider is chosen, mail is
//! logged (recipient and subject only: the body holds secret links).

use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

pub trait Mailer: Send + Sync + std::fmt::Debug {
    fn send(&self, mail: Mail);
}

#[derive(Debug, Default)]
pub struct LogMailer;

impl Mailer for LogMailer {
    fn send(&self, mail: Mail) {
        tracing::info!(to = mail.to, subject = mail.subject, "mail sent");
    }
}

/// Keeps what was sent, so tests can follow the links a buyer would get.
#[derive(Debug, Default)]
pub struct MemoryMailer {
    pub sent: Mutex<Vec<Mail>>,
}

impl Mailer for MemoryMailer {
    fn send(&self, mail: Mail) {
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(mail);
        }
    }
}
