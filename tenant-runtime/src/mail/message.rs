//! What the storefront mails, and how each message reads. A message holds only what it is
//! about (the recipient and the link it exists to deliver); it is rendered when sent, in the
//! tenant's branding and locale.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Branding;
use crate::locale::Locale;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    /// A pending order's link: the buyer's only way back to it.
    OrderLink { to: String, order_url: String },
    /// The tickets of an order that is paid now.
    Tickets {
        to: String,
        ticket_urls: Vec<String>,
    },
    /// A single-use sign-in link that proves the address (e-mail identity).
    SignInLink {
        to: String,
        link: String,
        expires_in: Duration,
    },
}

/// Who a message is from and how it looks.
#[derive(Debug, Clone, Copy)]
pub struct Letterhead<'a> {
    pub branding: &'a Branding,
    pub locale: &'a Locale,
}

/// A message ready to send: both parts, and the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Message {
    pub fn recipient(&self) -> &str {
        match self {
            Self::OrderLink { to, .. } | Self::Tickets { to, .. } | Self::SignInLink { to, .. } => {
                to
            }
        }
    }

    pub fn render(&self, look: &Letterhead<'_>) -> Rendered {
        let shop = &look.branding.display_name;
        match self {
            Self::OrderLink { order_url, .. } => Rendered::new(
                look,
                format!("Your order at {shop}"),
                &["Your order is waiting for payment. This link opens it:"],
                &[order_url],
            ),
            Self::Tickets { ticket_urls, .. } => Rendered::new(
                look,
                format!("Your tickets from {shop}"),
                &["Your order is paid. Each link below opens one ticket:"],
                &ticket_urls.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
            Self::SignInLink {
                link, expires_in, ..
            } => Rendered::new(
                look,
                format!("Sign in to {shop}"),
                &[&format!(
                    "This link signs you in once, within {} minutes:",
                    expires_in.as_secs().div_ceil(60)
                )],
                &[link],
            ),
        }
    }
}

impl Rendered {
    fn new(look: &Letterhead<'_>, subject: String, lines: &[&str], links: &[&str]) -> Self {
        let mut text = String::new();
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        for link in links {
            text.push_str(link);
            text.push('\n');
        }
        text.push_str(&format!("\n{}\n", look.branding.display_name));
        let mut html = String::from("<!doctype html><html><body>");
        for line in lines {
            html.push_str(&format!("<p>{}</p>", escape(line)));
        }
        for link in links {
            let link = escape(link);
            html.push_str(&format!("<p><a href=\"{link}\">{link}</a></p>"));
        }
        html.push_str(&format!(
            "<p>{}</p></body></html>",
            escape(&look.branding.display_name)
        ));
        Self {
            subject,
            text,
            html,
        }
    }
}

/// Text made safe for HTML content and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
