//! Mailpit: a real SMTP server that keeps every message it accepts and shows them through a
//! REST API (and a web UI), so tests read the mail a buyer would get and follow its links.
//!
//! One Mailpit serves every test of a binary ([`Mailpit::shared`]); a test that stops the
//! server to play an outage starts its own ([`Mailpit::start`]).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::ports::{accepting, accepting_on, free_port};
use crate::process::Service;

/// A running Mailpit on loopback. Dropping it stops the server.
#[derive(Debug)]
pub struct Mailpit {
    /// The address SMTP listens on: loopback, or the pod bridge's gateway so pods send to it.
    pub smtp_host: String,
    /// The SMTP port (plain SMTP; any or no credentials are accepted).
    pub smtp_port: u16,
    /// The web UI and REST API: `http://127.0.0.1:<port>`.
    pub url: String,
    http_port: u16,
    program: PathBuf,
    database: PathBuf,
    log_dir: PathBuf,
    service: Mutex<Option<Service>>,
    http: reqwest::Client,
}

/// A message as Mailpit lists it.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Mailpit's own id, for [`Mailpit::message`].
    pub id: String,
    /// The `Message-ID` header, without angle brackets.
    pub message_id: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
}

/// A whole message: headers that matter and both bodies.
#[derive(Debug, Clone)]
pub struct Message {
    pub message_id: String,
    pub from: String,
    pub from_name: String,
    pub to: Vec<String>,
    pub reply_to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Message {
    /// Every `http(s)://` link in the plain-text part, in order.
    pub fn links(&self) -> Vec<String> {
        links(&self.text)
    }
}

/// Every `http://` or `https://` link in `text`, in order.
pub fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = [rest.find("http://"), rest.find("https://")]
        .into_iter()
        .flatten()
        .min()
    {
        let link: String = rest[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '<' | '>' | '\''))
            .collect();
        rest = &rest[start + link.len()..];
        found.push(link.trim_end_matches(['.', ',', ')', ';']).to_owned());
    }
    found
}

impl Mailpit {
    /// The Mailpit shared by every test of this test binary, started on first use.
    pub fn shared() -> &'static Mailpit {
        static SHARED: OnceLock<Result<Mailpit, String>> = OnceLock::new();
        crate::once_per_binary(&SHARED, "starting Mailpit", || async {
            Mailpit::start(&crate::new_run_dir()?).await
        })
    }

    /// Builds Mailpit if needed and starts it on free loopback ports, keeping its mail in
    /// `dir` (so a restart keeps what had arrived).
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::start_on(dir, "127.0.0.1").await
    }

    /// The same, with SMTP on `smtp_host` (the web UI and API stay on loopback).
    pub async fn start_on(dir: &Path, smtp_host: &str) -> Result<Self> {
        let program = tokio::task::spawn_blocking(crate::ensure_mailpit)
            .await
            .context("building Mailpit")??;
        let log_dir = dir.join("logs");
        std::fs::create_dir_all(&log_dir)?;
        let http_port = free_port()?;
        let mailpit = Self {
            smtp_host: smtp_host.to_owned(),
            smtp_port: free_port()?,
            url: format!("http://127.0.0.1:{http_port}"),
            http_port,
            program,
            database: dir.join("mailpit.db"),
            log_dir,
            service: Mutex::new(None),
            http: reqwest::Client::new(),
        };
        mailpit.resume().await?;
        Ok(mailpit)
    }

    /// Stops the server, as an SMTP outage: connections are refused until [`Mailpit::resume`].
    pub fn stop(&self) {
        if let Some(mut service) = self.service.lock().expect("mailpit lock").take() {
            service.stop();
        }
    }

    /// Starts the server (again) on the same ports and database.
    pub async fn resume(&self) -> Result<()> {
        let args = vec![
            format!("--smtp={}:{}", self.smtp_host, self.smtp_port),
            format!("--listen=127.0.0.1:{}", self.http_port),
            format!("--database={}", self.database.display()),
            // Keep every message: the default prunes beyond 500.
            "--max=0".to_owned(),
            "--smtp-auth-accept-any".to_owned(),
            "--smtp-auth-allow-insecure".to_owned(),
            "--disable-version-check".to_owned(),
            "--smtp-disable-rdns".to_owned(),
        ];
        // From a thread that outlives the test, so the server dies with the binary only.
        let mut service = Service::spawn_long_lived("mailpit", &self.program, args, &self.log_dir)?;
        let (smtp_host, smtp, http) = (self.smtp_host.clone(), self.smtp_port, self.http_port);
        service
            .wait_ready(Duration::from_secs(30), || {
                let smtp_host = smtp_host.clone();
                async move {
                    accepting_on(&smtp_host, smtp).await?;
                    accepting(http).await
                }
            })
            .await?;
        *self.service.lock().expect("mailpit lock") = Some(service);
        Ok(())
    }

    /// Messages matching a Mailpit search (`to:fan@example.org from:shop@acme.example`),
    /// newest first.
    pub async fn search(&self, query: &str) -> Result<Vec<Summary>> {
        let mut found = Vec::new();
        loop {
            let page: Value = self
                .http
                .get(format!("{}/api/v1/search", self.url))
                .query(&[
                    ("query", query),
                    ("start", &found.len().to_string()),
                    ("limit", "500"),
                ])
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let messages = page["messages"].as_array().cloned().unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            found.extend(messages.iter().map(summary));
            if found.len() as u64 >= page["messages_count"].as_u64().unwrap_or(0) {
                break;
            }
        }
        Ok(found)
    }

    /// Every message Mailpit holds, newest first.
    pub async fn all(&self) -> Result<Vec<Summary>> {
        let mut found = Vec::new();
        loop {
            let page: Value = self
                .http
                .get(format!("{}/api/v1/messages", self.url))
                .query(&[("start", found.len().to_string()), ("limit", "500".into())])
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let messages = page["messages"].as_array().cloned().unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            found.extend(messages.iter().map(summary));
        }
        Ok(found)
    }

    /// One message with both bodies.
    pub async fn message(&self, id: &str) -> Result<Message> {
        let m: Value = self
            .http
            .get(format!("{}/api/v1/message/{id}", self.url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(Message {
            message_id: text(&m["MessageID"]),
            from: text(&m["From"]["Address"]),
            from_name: text(&m["From"]["Name"]),
            to: addresses(&m["To"]),
            reply_to: addresses(&m["ReplyTo"]),
            subject: text(&m["Subject"]),
            text: text(&m["Text"]),
            html: text(&m["HTML"]),
        })
    }

    /// Waits until at least `count` messages match `query`, and returns them newest first.
    /// Fails after `timeout` with what did arrive.
    pub async fn wait_for(
        &self,
        query: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Summary>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self.search(query).await?;
            if found.len() >= count {
                return Ok(found);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} of {count} messages matching `{query}` arrived within {timeout:?}: {:?}",
                    found.len(),
                    found.iter().map(|m| &m.subject).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Mailpit {
    fn drop(&mut self) {
        self.stop();
    }
}

fn summary(m: &Value) -> Summary {
    Summary {
        id: text(&m["ID"]),
        message_id: text(&m["MessageID"]),
        from: text(&m["From"]["Address"]),
        to: addresses(&m["To"]),
        subject: text(&m["Subject"]),
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn addresses(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|list| list.iter().map(|a| text(&a["Address"])).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::links;

    #[test]
    fn links_are_found_in_order_without_trailing_punctuation() {
        let text = "Your order: https://acme.example/orders/abc.\nAlso (http://x.test/t/1), \
                    and <https://y.test/q?a=1&b=2>";
        assert_eq!(
            links(text),
            [
                "https://acme.example/orders/abc",
                "http://x.test/t/1",
                "https://y.test/q?a=1&b=2"
            ]
        );
    }
}
