//! Currencies a storefront can sell in: ISO 4217 codes that Stripe settles, each with its
//! minor-unit exponent (0 for JPY, 2 for EUR, 3 for KWD), so money stays integer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! currencies {
    ($($code:ident = $exp:literal),* $(,)?) => {
        /// ISO 4217 code of the tenant's currency. Prices are integer minor units of it.
        #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
        #[allow(clippy::upper_case_acronyms)]
        pub enum Currency { $($code),* }

        impl Currency {
            /// Digits after the decimal point (the minor unit's exponent).
            pub fn exponent(self) -> u32 {
                match self { $(Currency::$code => $exp),* }
            }
            /// The ISO code.
            pub fn code(self) -> &'static str {
                match self { $(Currency::$code => stringify!($code)),* }
            }
        }
    };
}

currencies! {
    AED = 2, AUD = 2, BGN = 2, BHD = 3, BRL = 2, CAD = 2, CHF = 2, CLP = 0, CZK = 2, DKK = 2,
    EUR = 2, GBP = 2, HKD = 2, HUF = 2, ILS = 2, INR = 2, ISK = 0, JOD = 3, JPY = 0, KRW = 0,
    KWD = 3, MXN = 2, NOK = 2, NZD = 2, OMR = 3, PLN = 2, RON = 2, SEK = 2, SGD = 2, THB = 2,
    TND = 3, TRY = 2, USD = 2, VND = 0, ZAR = 2,
}
