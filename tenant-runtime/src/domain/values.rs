//! Small values checked once at the boundary: quantities, slugs, e-mail addresses.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("a quantity must be between 1 and {}", Quantity::MAX)]
    Quantity,
    #[error(
        "a slug is 1 to 80 lower-case letters, digits and dashes, not starting or ending with a dash"
    )]
    Slug,
    #[error("`{0}` is not an e-mail address")]
    Email(String),
}

/// How many tickets one hold or order covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quantity(u32);

impl Quantity {
    /// Above any sensible per-order limit; a ticket type's own limit is usually lower.
    pub const MAX: u32 = 100;

    pub fn new(n: i64) -> Result<Self, ValueError> {
        match u32::try_from(n) {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(Self(n)),
            _ => Err(ValueError::Quantity),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// For SQL, whose integers are signed; always fits.
    pub fn as_i32(self) -> i32 {
        self.0 as i32
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accept any JSON integer so huge and negative numbers get our message, not serde's.
        let n = serde_json::Number::deserialize(d)?;
        n.as_i64()
            .ok_or(ValueError::Quantity)
            .and_then(Self::new)
            .map_err(serde::de::Error::custom)
    }
}

/// The URL name of an event: `summer-festival-2027`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Slug(String);

impl Slug {
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let valid = (1..=80).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValueError::Slug)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Slug {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Where a buyer's links are sent. Deliberately loose: the mail provider is the real judge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let s = s.trim();
        let valid = s.len() <= 254
            && !s.chars().any(char::is_whitespace)
            && matches!(s.split_once('@'), Some((local, domain))
                if !local.is_empty() && domain.contains('.') && !domain.contains('@'));
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValueError::Email(s.chars().take(64).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_between_one_and_the_maximum() {
        assert_eq!(Quantity::new(1).map(Quantity::get), Ok(1));
        assert_eq!(Quantity::new(100).map(Quantity::get), Ok(100));
        for bad in [0, -1, 101, i64::from(u32::MAX) + 1, i64::MIN, i64::MAX] {
            assert_eq!(Quantity::new(bad), Err(ValueError::Quantity), "{bad}");
        }
    }

    #[test]
    fn quantities_from_json_refuse_fractions_and_huge_numbers() {
        for bad in ["0", "-3", "2.5", "1e30", "18446744073709551616", "\"2\""] {
            assert!(serde_json::from_str::<Quantity>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::from_str::<Quantity>("4")
                .map(Quantity::get)
                .ok(),
            Some(4)
        );
    }

    #[test]
    fn slugs_are_url_safe() {
        assert!(Slug::parse("summer-fest-2027").is_ok());
        for bad in ["", "-a", "a-", "Summer", "a b", "a/b", "ä", &"a".repeat(81)] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_need_a_local_part_and_a_domain() {
        assert!(Email::parse("fan@example.org").is_ok());
        for bad in [
            "",
            "fan",
            "@example.org",
            "fan@localhost",
            "a b@example.org",
            "a@b@c.d",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }
}
