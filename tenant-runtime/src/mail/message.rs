//! What the storefront mails, and how each message reads. A message holds only what it is
//! about (the recipient, the link it exists to deliver, an amount); it is rendered when sent,
//! as plain text and HTML in the tenant's branding and locale. Every value put into the HTML is
//! escaped.

use std::fmt::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Branding;
use crate::domain::Currency;
use crate::locale::Locale;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    /// A pending order's link: the buyer's only way back to it.
    OrderLink { to: String, order_url: String },
    /// The order is paid: one link per ticket.
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
    /// The seller's ticket is on the resale market.
    ResaleListed {
        to: String,
        ticket_url: String,
        price: Amount,
    },
    /// The seller's ticket was bought; their old code no longer admits anyone.
    ResaleSold { to: String, price: Amount },
    /// The seller's share was sent to their payout account.
    PaidOut { to: String, amount: Amount },
    /// Money goes back to the buyer.
    Refunded {
        to: String,
        order_url: String,
        amount: Amount,
    },
    /// The event was cancelled; the order's tickets no longer admit anyone.
    EventCancelled {
        to: String,
        event_title: String,
        order_url: String,
    },
}

/// An amount of money as it travels in a message (written in the tenant's locale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub minor: i64,
    pub currency: Currency,
}

impl Amount {
    pub fn of(money: crate::domain::Money) -> Self {
        Self {
            minor: money.amount_minor,
            currency: money.currency,
        }
    }
}

/// Who a message is from and how it looks.
#[derive(Debug, Clone, Copy)]
pub struct Letterhead<'a> {
    pub branding: &'a Branding,
    pub locale: &'a Locale,
}

/// A message ready to send: the subject and both parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Message {
    pub fn recipient(&self) -> &str {
        match self {
            Self::OrderLink { to, .. }
            | Self::Tickets { to, .. }
            | Self::SignInLink { to, .. }
            | Self::ResaleListed { to, .. }
            | Self::ResaleSold { to, .. }
            | Self::PaidOut { to, .. }
            | Self::Refunded { to, .. }
            | Self::EventCancelled { to, .. } => to,
        }
    }

    /// The kind's name, as stored and as the metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::OrderLink { .. } => "order_link",
            Self::Tickets { .. } => "tickets",
            Self::SignInLink { .. } => "sign_in_link",
            Self::ResaleListed { .. } => "resale_listed",
            Self::ResaleSold { .. } => "resale_sold",
            Self::PaidOut { .. } => "paid_out",
            Self::Refunded { .. } => "refunded",
            Self::EventCancelled { .. } => "event_cancelled",
        }
    }

    pub fn render(&self, look: &Letterhead<'_>) -> Rendered {
        let shop = &look.branding.display_name;
        let money = |a: &Amount| look.locale.amount(a.minor, a.currency);
        let (subject, lines, links): (String, Vec<String>, Vec<&str>) = match self {
            Self::OrderLink { order_url, .. } => (
                format!("Your order at {shop}"),
                vec!["Your order is waiting for payment. This link opens it:".into()],
                vec![order_url],
            ),
            Self::Tickets { ticket_urls, .. } => (
                format!("Your tickets from {shop}"),
                vec!["Your order is paid. Each link below opens one ticket:".into()],
                ticket_urls.iter().map(String::as_str).collect(),
            ),
            Self::SignInLink {
                link, expires_in, ..
            } => (
                format!("Sign in to {shop}"),
                vec![
                    format!(
                        "This link signs you in once, within {} minutes:",
                        expires_in.as_secs().div_ceil(60)
                    ),
                    "If you did not ask for it, ignore this mail.".into(),
                ],
                vec![link],
            ),
            Self::ResaleListed {
                ticket_url, price, ..
            } => (
                format!("Your ticket is for sale at {shop}"),
                vec![format!(
                    "Your ticket is on the resale market for {}. It stays yours until someone buys it:",
                    money(price)
                )],
                vec![ticket_url],
            ),
            Self::ResaleSold { price, .. } => (
                format!("Your ticket was sold at {shop}"),
                vec![
                    format!("Your ticket was sold for {}.", money(price)),
                    "Its old code no longer admits anyone; your payout follows.".into(),
                ],
                vec![],
            ),
            Self::PaidOut { amount, .. } => (
                format!("Your payout from {shop}"),
                vec![format!(
                    "{} is on its way to your payout account.",
                    money(amount)
                )],
                vec![],
            ),
            Self::Refunded {
                order_url, amount, ..
            } => (
                format!("Your refund from {shop}"),
                vec![format!(
                    "{} goes back to the card you paid with. Your order:",
                    money(amount)
                )],
                vec![order_url],
            ),
            Self::EventCancelled {
                event_title,
                order_url,
                ..
            } => (
                format!("{event_title} is cancelled"),
                vec![format!(
                    "{event_title} is cancelled and your tickets no longer admit anyone. Your order:"
                )],
                vec![order_url],
            ),
        };
        Rendered {
            text: text(look, &lines, &links),
            html: html(look, &subject, &lines, &links),
            subject,
        }
    }
}

fn text(look: &Letterhead<'_>, lines: &[String], links: &[&str]) -> String {
    let mut text = String::new();
    for line in lines {
        let _ = writeln!(text, "{line}");
    }
    for link in links {
        let _ = writeln!(text, "{link}");
    }
    let _ = write!(text, "\n{}\n", look.branding.display_name);
    if let Some(support) = &look.branding.support_email {
        let _ = writeln!(text, "Questions? {support}");
    }
    text
}

fn html(look: &Letterhead<'_>, subject: &str, lines: &[String], links: &[&str]) -> String {
    let b = look.branding;
    let mut html = format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body style=\"margin:0;font-family:sans-serif;color:#111827\">\
         <div style=\"background:{};color:#ffffff;padding:16px\">",
        escape(look.locale.tag()),
        escape(subject),
        escape(&b.primary_color),
    );
    match &b.logo_url {
        Some(logo) => {
            let _ = write!(
                html,
                "<img src=\"{}\" alt=\"{}\" height=\"32\">",
                escape(logo),
                escape(&b.display_name)
            );
        }
        None => {
            let _ = write!(html, "<strong>{}</strong>", escape(&b.display_name));
        }
    }
    html.push_str("</div><div style=\"padding:16px\">");
    for line in lines {
        let _ = write!(html, "<p>{}</p>", escape(line));
    }
    for link in links {
        let _ = write!(
            html,
            "<p><a href=\"{0}\" style=\"color:{1}\">{0}</a></p>",
            escape(link),
            escape(&b.accent_color)
        );
    }
    html.push_str("</div><div style=\"padding:16px;color:#6b7280;font-size:12px\">");
    html.push_str(&escape(&b.display_name));
    if let Some(support) = &b.support_email {
        let _ = write!(html, " · {}", escape(support));
    }
    html.push_str("</div></body></html>");
    html
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

#[cfg(test)]
mod tests {
    use super::*;

    fn branding(name: &str) -> Branding {
        Branding {
            display_name: name.to_owned(),
            primary_color: "#5b21b6".to_owned(),
            accent_color: "#f59e0b".to_owned(),
            logo_url: Some("https://cdn.acme.example/logo.svg".to_owned()),
            support_email: Some("help@acme.example".to_owned()),
        }
    }

    #[test]
    fn every_message_has_both_parts_in_the_tenants_look_and_its_link() {
        let branding = branding("ACME Live");
        let locale = Locale::parse("de-DE").expect("locale");
        let look = Letterhead {
            branding: &branding,
            locale: &locale,
        };
        let eur = |minor| Amount {
            minor,
            currency: Currency::parse("EUR").expect("EUR"),
        };
        let to = "fan@example.org".to_owned();
        let url = "https://acme.example/orders/tok123".to_owned();
        for message in [
            Message::OrderLink {
                to: to.clone(),
                order_url: url.clone(),
            },
            Message::Tickets {
                to: to.clone(),
                ticket_urls: vec![url.clone()],
            },
            Message::SignInLink {
                to: to.clone(),
                link: url.clone(),
                expires_in: Duration::from_secs(900),
            },
            Message::ResaleListed {
                to: to.clone(),
                ticket_url: url.clone(),
                price: eur(123_450),
            },
            Message::Refunded {
                to: to.clone(),
                order_url: url.clone(),
                amount: eur(123_450),
            },
            Message::EventCancelled {
                to: to.clone(),
                event_title: "Night Show".into(),
                order_url: url.clone(),
            },
        ] {
            let r = message.render(&look);
            assert_eq!(message.recipient(), "fan@example.org");
            assert!(r.text.contains(&url), "{message:?}: {}", r.text);
            assert!(r.html.contains(&format!("href=\"{url}\"")), "{}", r.html);
            assert!(r.html.contains("lang=\"de-DE\""));
            assert!(r.html.contains("background:#5b21b6"));
            assert!(r.html.contains("src=\"https://cdn.acme.example/logo.svg\""));
            assert!(r.text.contains("help@acme.example"));
        }
        let refund = Message::Refunded {
            to,
            order_url: url,
            amount: eur(123_450),
        }
        .render(&look);
        assert!(refund.text.contains("1.234,50"), "{}", refund.text);
    }

    #[test]
    fn what_the_tenant_or_a_buyer_typed_is_escaped_in_html() {
        let branding = branding("Rock & <Roll> \"Club\"");
        let locale = Locale::parse("en-GB").expect("locale");
        let look = Letterhead {
            branding: &branding,
            locale: &locale,
        };
        let r = Message::EventCancelled {
            to: "fan@example.org".into(),
            event_title: "<script>alert(1)</script>".into(),
            order_url: "https://acme.example/orders/a\"onmouseover=\"x".into(),
        }
        .render(&look);
        assert!(!r.html.contains("<script>"), "{}", r.html);
        assert!(r.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(r.html.contains("Rock &amp; &lt;Roll&gt; &quot;Club&quot;"));
        assert!(!r.html.contains("a\"onmouseover"));
        assert_eq!(r.subject, "<script>alert(1)</script> is cancelled");
    }

    #[test]
    fn a_stored_message_reads_back() {
        let message = Message::PaidOut {
            to: "seller@example.org".into(),
            amount: Amount {
                minor: 4_750,
                currency: Currency::parse("EUR").expect("EUR"),
            },
        };
        let stored = serde_json::to_string(&message).expect("json");
        assert!(stored.contains("\"kind\":\"paid_out\""), "{stored}");
        assert_eq!(
            serde_json::from_str::<Message>(&stored).expect("reads"),
            message
        );
    }
}
