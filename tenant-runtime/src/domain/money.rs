//! Money as integer minor units in one ISO 4217 currency, and the resale price cap.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ISO 4217 code: three upper-case ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        match code.as_bytes() {
            &[a, b, c] if code.bytes().all(|b| b.is_ascii_uppercase()) => Ok(Self([a, b, c])),
            _ => Err(MoneyError::Currency(code.chars().take(8).collect())),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Decimal places of the currency: 0 (JPY), 2 (EUR) or 3 (BHD).
    pub fn exponent(&self) -> u32 {
        match self.as_str() {
            "JPY" | "KRW" | "ISK" | "CLP" | "VND" | "XAF" | "XOF" => 0,
            "BHD" | "KWD" | "OMR" | "JOD" | "TND" => 3,
            _ => 2,
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Self::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// Largest amount we accept anywhere: ten billion major units keeps every sum far from
/// `i64::MAX` while no real ticket comes close.
const MAX_MINOR: i64 = 1_000_000_000_000;

/// A non-negative amount in minor units (cents) of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not an ISO 4217 currency code like EUR")]
    Currency(String),
    #[error("an amount must be between 0 and {MAX_MINOR} minor units")]
    OutOfRange,
    #[error("the amount is in {got}, this storefront sells in {want}")]
    WrongCurrency { got: Currency, want: Currency },
    #[error("a resale price cap must be between 50 and 1000 percent of face value")]
    Cap,
    #[error(
        "amounts in {currency} are charged in steps of {step} minor units (the last digit must be 0)"
    )]
    NotChargeable { currency: Currency, step: i64 },
}

impl Money {
    pub fn new(amount_minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if (0..=MAX_MINOR).contains(&amount_minor) {
            Ok(Self {
                amount_minor,
                currency,
            })
        } else {
            Err(MoneyError::OutOfRange)
        }
    }

    /// Checks the amount is in the currency the storefront sells in.
    pub fn in_currency(self, want: Currency) -> Result<Self, MoneyError> {
        if self.currency == want {
            Ok(self)
        } else {
            Err(MoneyError::WrongCurrency {
                got: self.currency,
                want,
            })
        }
    }

    pub fn times(self, quantity: u32) -> Result<Self, MoneyError> {
        let total = self
            .amount_minor
            .checked_mul(i64::from(quantity))
            .ok_or(MoneyError::OutOfRange)?;
        Self::new(total, self.currency)
    }

    /// Checks Stripe can charge exactly this amount: three-decimal currencies only in steps of
    /// ten minor units.
    pub fn chargeable(self) -> Result<Self, MoneyError> {
        let step = super::fees::stripe_step(self.currency);
        if self.amount_minor % step == 0 {
            Ok(self)
        } else {
            Err(MoneyError::NotChargeable {
                currency: self.currency,
                step,
            })
        }
    }

    /// The sum of two amounts in the same currency.
    pub fn plus(self, other: Self) -> Result<Self, MoneyError> {
        let other = other.in_currency(self.currency)?;
        let total = self
            .amount_minor
            .checked_add(other.amount_minor)
            .ok_or(MoneyError::OutOfRange)?;
        Self::new(total, self.currency)
    }

    /// Adds `amount` to a running total that starts empty.
    pub fn accumulate(total: &mut Option<Self>, amount: Self) -> Result<(), MoneyError> {
        *total = Some(match *total {
            Some(sum) => sum.plus(amount)?,
            None => amount,
        });
        Ok(())
    }

    /// Reads what a person types in a form, `12.5` or `12,50`, exactly: digits only, no
    /// floating point, at most as many decimals as the currency has.
    pub fn parse_major(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let exponent = currency.exponent() as usize;
        let text = text.trim().replace(',', ".");
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit());
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) if digits(fraction) => (whole, fraction),
            Some(_) => return Err(MoneyError::OutOfRange),
            None => (text.as_str(), ""),
        };
        if !digits(whole) || fraction.len() > exponent {
            return Err(MoneyError::OutOfRange);
        }
        let padded = format!("{whole}{fraction:0<exponent$}");
        let minor = padded.parse::<i64>().map_err(|_| MoneyError::OutOfRange)?;
        Self::new(minor, currency)
    }

    /// `12.50 EUR`, the same in every locale: for messages the JSON API returns too. Pages
    /// write amounts the tenant's way (`crate::locale`). Never parsed back.
    pub fn display(&self) -> String {
        let exponent = self.currency.exponent();
        if exponent == 0 {
            return format!("{} {}", self.amount_minor, self.currency);
        }
        let unit = 10_i64.pow(exponent);
        format!(
            "{}.{:0width$} {}",
            self.amount_minor / unit,
            self.amount_minor % unit,
            self.currency,
            width = exponent as usize
        )
    }
}

/// The most a resale listing may ask, in percent of face value (100 = face value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceCap(u32);

impl PriceCap {
    pub fn new(percent: u32) -> Result<Self, MoneyError> {
        if (50..=1000).contains(&percent) {
            Ok(Self(percent))
        } else {
            Err(MoneyError::Cap)
        }
    }

    pub fn percent(&self) -> u32 {
        self.0
    }

    /// The highest listing price for a ticket of this face value, rounded down to a minor
    /// unit so the cap is never exceeded.
    pub fn ceiling(&self, face_value: Money) -> Money {
        let ceiling = i128::from(face_value.amount_minor) * i128::from(self.0) / 100;
        Money {
            amount_minor: i64::try_from(ceiling).unwrap_or(i64::MAX),
            currency: face_value.currency,
        }
    }

    pub fn allows(&self, face_value: Money, asking: Money) -> bool {
        asking.currency == face_value.currency
            && asking.amount_minor <= self.ceiling(face_value).amount_minor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").expect("EUR")).expect("amount")
    }

    #[test]
    fn currency_codes_are_three_upper_case_letters() {
        assert!(Currency::parse("EUR").is_ok());
        for bad in ["eur", "EU", "EURO", "€UR", "", "E1R"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts_are_never_negative_or_absurd() {
        let eur = Currency::parse("EUR").expect("EUR");
        assert!(Money::new(-1, eur).is_err());
        assert!(Money::new(MAX_MINOR + 1, eur).is_err());
        assert_eq!(eur_total(2_500, 4), Ok(10_000));
        assert_eq!(eur_total(MAX_MINOR, 2), Err(MoneyError::OutOfRange));
    }

    fn eur_total(minor: i64, quantity: u32) -> Result<i64, MoneyError> {
        eur(minor).times(quantity).map(|m| m.amount_minor)
    }

    #[test]
    fn a_foreign_currency_is_refused() {
        let usd = Money::new(100, Currency::parse("USD").expect("USD")).expect("amount");
        let eur_code = Currency::parse("EUR").expect("EUR");
        assert!(matches!(
            usd.in_currency(eur_code),
            Err(MoneyError::WrongCurrency { .. })
        ));
    }

    #[test]
    fn the_cap_rounds_down_and_refuses_one_cent_more() {
        let cap = PriceCap::new(120).expect("cap");
        assert_eq!(cap.ceiling(eur(2_999)).amount_minor, 3_598);
        assert!(cap.allows(eur(2_999), eur(3_598)));
        assert!(!cap.allows(eur(2_999), eur(3_599)));
        assert!(PriceCap::new(49).is_err());
        assert!(PriceCap::new(1001).is_err());
    }

    #[test]
    fn typed_prices_are_read_exactly() {
        let eur_code = Currency::parse("EUR").expect("EUR");
        let parse = |s: &str| Money::parse_major(s, eur_code).map(|m| m.amount_minor);
        assert_eq!(parse("12.5"), Ok(1_250));
        assert_eq!(parse("12,05"), Ok(1_205));
        assert_eq!(parse(" 7 "), Ok(700));
        for bad in [
            "",
            "-1",
            "1.234",
            "1e3",
            "12.",
            ".5",
            "abc",
            "9999999999999",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn three_decimal_amounts_are_charged_in_steps_of_ten() {
        let kwd = Currency::parse("KWD").expect("KWD");
        assert!(
            Money::new(12_340, kwd)
                .expect("amount")
                .chargeable()
                .is_ok()
        );
        let odd = Money::new(12_345, kwd).expect("amount").chargeable();
        assert_eq!(
            odd.map_err(|e| e.to_string()),
            Err(
                "amounts in KWD are charged in steps of 10 minor units (the last digit must be 0)"
                    .to_owned()
            )
        );
        assert!(eur(1_205).chargeable().is_ok());
    }

    #[test]
    fn display_uses_the_currency_exponent() {
        assert_eq!(eur(1_205).display(), "12.05 EUR");
        let yen = Money::new(1_500, Currency::parse("JPY").expect("JPY")).expect("amount");
        assert_eq!(yen.display(), "1500 JPY");
    }
}
