//! Fee arithmetic on integer minor units, exact for every currency exponent.
//!
//! Rounding rule: a fee is `amount × bps / 10 000` rounded **down** to the smallest amount
//! Stripe accepts in that currency (one minor unit; ten for three-decimal currencies, whose
//! last digit Stripe requires to be 0). The payee gets the rest, so `fee + payee == amount`
//! always holds and rounding never takes more than the stated rate.

use super::{Currency, Money};

/// A share in hundredths of a percent: 250 = 2.5 %. At most 10 000 (everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasisPoints(u32);

impl BasisPoints {
    pub fn new(bps: u32) -> Option<Self> {
        (bps <= 10_000).then_some(Self(bps))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// An amount divided between the one who takes a fee and the one who is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub fee: Money,
    pub payee: Money,
}

/// The smallest step Stripe charges in for this currency, in minor units.
pub fn stripe_step(currency: Currency) -> i64 {
    if currency.exponent() == 3 { 10 } else { 1 }
}

impl Split {
    pub fn of(amount: Money, rate: BasisPoints) -> Self {
        let step = i128::from(stripe_step(amount.currency));
        let exact_times_10k = i128::from(amount.amount_minor) * i128::from(rate.0);
        // Floor to a whole step: amounts are non-negative, so integer division floors.
        let fee = exact_times_10k / (10_000 * step) * step;
        let fee = i64::try_from(fee).unwrap_or(amount.amount_minor);
        Self {
            fee: Money {
                amount_minor: fee,
                currency: amount.currency,
            },
            payee: Money {
                amount_minor: amount.amount_minor - fee,
                currency: amount.currency,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(minor: i64, code: &str) -> Money {
        Money::new(minor, Currency::parse(code).expect("code")).expect("amount")
    }

    fn split(minor: i64, code: &str, bps: u32) -> (i64, i64) {
        let s = Split::of(money(minor, code), BasisPoints::new(bps).expect("bps"));
        (s.fee.amount_minor, s.payee.amount_minor)
    }

    #[test]
    fn zero_decimal_currencies_round_down_to_whole_units() {
        // 2.5 % of 1,001 yen is 25.025 yen.
        assert_eq!(split(1_001, "JPY", 250), (25, 976));
        // 2.5 % of 1,040 yen is exactly 26 yen.
        assert_eq!(split(1_040, "JPY", 250), (26, 1_014));
        assert_eq!(split(1, "JPY", 9_999), (0, 1));
    }

    #[test]
    fn two_decimal_currencies_round_down_to_the_cent() {
        // 2.5 % of 29.99 EUR is 0.74975 EUR.
        assert_eq!(split(2_999, "EUR", 250), (74, 2_925));
        // 5 % of 50.00 EUR is exactly 2.50 EUR.
        assert_eq!(split(5_000, "EUR", 500), (250, 4_750));
        assert_eq!(split(1, "EUR", 5_000), (0, 1));
    }

    #[test]
    fn three_decimal_currencies_round_down_to_ten_fils() {
        // 2.5 % of 12.340 BHD is 0.3085 BHD: 0.300 after rounding down to 10 fils.
        assert_eq!(split(12_340, "BHD", 250), (300, 12_040));
        // 5 % of 20.000 KWD is exactly 1.000 KWD.
        assert_eq!(split(20_000, "KWD", 500), (1_000, 19_000));
        // Every fee is a multiple of 10 fils.
        for amount in (0..5_000).step_by(10) {
            assert_eq!(split(amount, "BHD", 333).0 % 10, 0, "{amount}");
        }
    }

    #[test]
    fn fee_and_payee_always_add_up_and_the_fee_never_exceeds_the_rate() {
        for code in ["JPY", "EUR", "BHD"] {
            for bps in [0, 1, 250, 333, 5_000, 9_999, 10_000] {
                for amount in [0, 1, 7, 99, 1_000, 123_457, 999_999_999_999] {
                    let (fee, payee) = split(amount, code, bps);
                    assert_eq!(fee + payee, amount, "{code} {bps} {amount}");
                    assert!(fee >= 0 && payee >= 0);
                    // fee <= exact share, computed without rounding in i128.
                    assert!(
                        i128::from(fee) * 10_000 <= i128::from(amount) * i128::from(bps),
                        "{code} {bps} {amount}"
                    );
                }
            }
        }
        assert_eq!(split(12_345, "EUR", 10_000), (12_345, 0));
        assert_eq!(split(12_345, "EUR", 0), (0, 12_345));
        assert!(BasisPoints::new(10_001).is_none());
    }
}
