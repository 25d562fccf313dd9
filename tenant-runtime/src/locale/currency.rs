//! Currency symbols. A dollar or a krone is written plainly at home and with its country
//! abroad (`$` in the US, `US$` elsewhere); a currency not listed is written as its ISO code.

use crate::domain::Currency;

/// (code, regions that call it home, symbol at home, symbol abroad)
const SYMBOLS: &[(&str, &[&str], &str, &str)] = &[
    ("EUR", &[], "€", "€"),
    ("GBP", &[], "£", "£"),
    ("USD", &["US"], "$", "US$"),
    ("CAD", &["CA"], "$", "CA$"),
    ("AUD", &["AU"], "$", "A$"),
    ("NZD", &["NZ"], "$", "NZ$"),
    ("MXN", &["MX"], "$", "MX$"),
    ("CLP", &["CL"], "$", "CLP"),
    ("BRL", &[], "R$", "R$"),
    ("JPY", &["JP"], "¥", "JP¥"),
    ("CNY", &["CN"], "¥", "CN¥"),
    ("KRW", &[], "₩", "₩"),
    ("INR", &[], "₹", "₹"),
    ("ILS", &[], "₪", "₪"),
    ("VND", &[], "₫", "₫"),
    ("SEK", &["SE"], "kr", "SEK"),
    ("NOK", &["NO"], "kr", "NOK"),
    ("DKK", &["DK"], "kr.", "DKK"),
    ("ISK", &["IS"], "kr", "ISK"),
    ("PLN", &["PL"], "zł", "PLN"),
    ("CZK", &["CZ"], "Kč", "CZK"),
    ("HUF", &["HU"], "Ft", "HUF"),
    ("TRY", &["TR"], "₺", "TRY"),
    ("XAF", &[], "FCFA", "FCFA"),
    ("XOF", &[], "F\u{a0}CFA", "F\u{a0}CFA"),
];

/// The symbol a reader in `region` expects for `currency`.
pub fn symbol<'a>(currency: &'a Currency, region: Option<&str>) -> &'a str {
    let code = currency.as_str();
    match SYMBOLS.iter().find(|(c, ..)| *c == code) {
        Some((_, homes, home, abroad)) => {
            if region.is_some_and(|r| homes.contains(&r)) {
                home
            } else {
                abroad
            }
        }
        None => code,
    }
}
