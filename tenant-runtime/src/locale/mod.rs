//! How the tenant's locale writes prices and dates on storefront pages: a small table of
//! conventions per locale, integer arithmetic only. The JSON API keeps minor units.

mod currency;
mod table;

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::domain::{Currency, Money};
use table::{Clock, MinusAt, Rules};

const NBSP: &str = "\u{a0}";

/// A configured locale tag (kept for `<html lang>`) and the conventions it resolves to:
/// the exact locale when it is in the table, else the first one of its language, else en-GB.
#[derive(Clone)]
pub struct Locale {
    tag: String,
    region: Option<String>,
    rules: &'static Rules,
}

impl std::fmt::Debug for Locale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (formats as {})", self.tag, self.rules.tag)
    }
}

impl Locale {
    /// Reads a BCP 47 tag such as `de-DE`, `de_de` or `pt-BR`. Any well-formed tag is
    /// accepted; one this table does not know formats like its nearest relative.
    pub fn parse(tag: &str) -> Result<Self, String> {
        const PROBLEM: &str = "must be a language tag like en-GB or de-DE";
        let mut parts = tag.trim().split(['-', '_']);
        let language = parts
            .next()
            .filter(|l| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic()))
            .ok_or(PROBLEM)?
            .to_ascii_lowercase();
        let mut normalized = language.clone();
        let mut region = None;
        for part in parts {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(PROBLEM.to_owned());
            }
            let part = match part.len() {
                2 if part.bytes().all(|b| b.is_ascii_alphabetic()) => part.to_ascii_uppercase(),
                4 if part.bytes().all(|b| b.is_ascii_alphabetic()) => {
                    let (first, rest) = part.split_at(1);
                    first.to_ascii_uppercase() + &rest.to_ascii_lowercase()
                }
                _ => part.to_ascii_lowercase(),
            };
            let is_region = match part.len() {
                2 => part.bytes().all(|b| b.is_ascii_uppercase()),
                3 => part.bytes().all(|b| b.is_ascii_digit()),
                _ => false,
            };
            if region.is_none() && is_region {
                region = Some(part.clone());
            }
            normalized = format!("{normalized}-{part}");
        }
        Ok(Self {
            rules: table::resolve(&language, region.as_deref()),
            tag: normalized,
            region,
        })
    }

    /// The tag as configured, normalized (`de_de` -> `de-DE`): what `<html lang>` says.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The table entry whose conventions this locale uses, e.g. `pt-PT` for `pt-BR`.
    pub fn formats_as(&self) -> &'static str {
        self.rules.tag
    }

    pub fn money(&self, money: Money) -> String {
        self.amount(money.amount_minor, money.currency)
    }

    /// `€12.05`, `1.234,50 €`, `¥1,500`: the currency's exponent decides the decimals.
    pub fn amount(&self, amount_minor: i64, currency: Currency) -> String {
        let rules = self.rules;
        let exponent = currency.exponent();
        let magnitude = amount_minor.unsigned_abs();
        let unit = 10_u64.pow(exponent);
        let mut number = group(magnitude / unit, rules.group, rules.min_grouping);
        if exponent > 0 {
            let fraction = magnitude % unit;
            let _ = write!(
                number,
                "{}{fraction:0width$}",
                rules.decimal,
                width = exponent as usize
            );
        }
        let symbol = currency::symbol(&currency, self.region.as_deref());
        // A symbol that ends in a letter (CHF, SEK) never touches the digits.
        let gap = if rules.gap.is_empty() && symbol.ends_with(|c: char| c.is_alphabetic()) {
            NBSP
        } else {
            rules.gap
        };
        let minus = if amount_minor < 0 { rules.minus } else { "" };
        match (rules.symbol_first, rules.minus_at) {
            (false, _) => format!("{minus}{number}{gap}{symbol}"),
            (true, MinusAt::Start) => format!("{minus}{symbol}{gap}{number}"),
            (true, MinusAt::Number) => format!("{symbol}{gap}{minus}{number}"),
            (true, MinusAt::Gap) if amount_minor < 0 => format!("{symbol}{minus}{number}"),
            (true, MinusAt::Gap) => format!("{symbol}{gap}{number}"),
        }
    }

    /// `Sat 14 March 2026, 20:00 UTC`. The tenant has no time zone setting yet, so times are
    /// shown in UTC and say so.
    pub fn datetime(&self, at: DateTime<Utc>) -> String {
        let rules = self.rules;
        let mut out = String::new();
        let mut pattern = rules.date;
        while let Some(open) = pattern.find('{') {
            out.push_str(&pattern[..open]);
            let rest = &pattern[open + 1..];
            let close = rest.find('}').unwrap_or(rest.len());
            match &rest[..close] {
                "wd" => out.push_str(rules.weekdays[at.weekday().num_days_from_monday() as usize]),
                "d" => out.push_str(&at.day().to_string()),
                "m" => out.push_str(&at.month().to_string()),
                "month" => out.push_str(rules.months[at.month0() as usize]),
                "y" => out.push_str(&at.year().to_string()),
                other => out.push_str(other),
            }
            pattern = rest.get(close + 1..).unwrap_or("");
        }
        out.push_str(pattern);
        out.push_str(rules.joiner);
        let (hour, minute) = (at.hour(), at.minute());
        let _ = match rules.clock {
            Clock::H24 {
                separator,
                padded: true,
            } => write!(out, "{hour:02}{separator}{minute:02}"),
            Clock::H24 {
                separator,
                padded: false,
            } => write!(out, "{hour}{separator}{minute:02}"),
            Clock::H12 => {
                let half = if hour < 12 { "AM" } else { "PM" };
                let hour = (hour + 11) % 12 + 1;
                write!(out, "{hour}:{minute:02}{NBSP}{half}")
            }
        };
        out.push_str(" UTC");
        out
    }
}

/// `1234567` -> `1.234.567`; grouping starts once the integer part has
/// `3 + min_grouping` digits (es-ES writes 1234 but 12.345).
fn group(whole: u64, separator: &str, min_grouping: usize) -> String {
    let digits = whole.to_string();
    if digits.len() < 3 + min_grouping {
        return digits;
    }
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * separator.len());
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push_str(separator);
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests;
