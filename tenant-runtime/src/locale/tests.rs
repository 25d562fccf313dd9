//! How each locale writes amounts and dates, at the edges too.

use chrono::TimeZone;

use super::*;

/// `~` stands for a no-break space, `^` for a narrow no-break space.
fn spaced(s: &str) -> String {
    s.replace('~', "\u{a0}").replace('^', "\u{202f}")
}

fn locale(tag: &str) -> Locale {
    Locale::parse(tag).expect(tag)
}

fn code(c: &str) -> Currency {
    Currency::parse(c).expect(c)
}

#[test]
fn each_locale_writes_euros_its_own_way() {
    // 1,234.50 / zero / minus 12.05 / 1,234,567.89
    let cases = [
        ("en-GB", ["€1,234.50", "€0.00", "-€12.05", "€1,234,567.89"]),
        ("en-US", ["€1,234.50", "€0.00", "-€12.05", "€1,234,567.89"]),
        ("en-IE", ["€1,234.50", "€0.00", "-€12.05", "€1,234,567.89"]),
        (
            "de-DE",
            ["1.234,50~€", "0,00~€", "-12,05~€", "1.234.567,89~€"],
        ),
        (
            "de-AT",
            ["€~1.234,50", "€~0,00", "-€~12,05", "€~1.234.567,89"],
        ),
        (
            "de-CH",
            ["€~1'234.50", "€~0.00", "€-12.05", "€~1'234'567.89"],
        ),
        (
            "fr-FR",
            ["1^234,50~€", "0,00~€", "-12,05~€", "1^234^567,89~€"],
        ),
        (
            "fr-BE",
            ["1^234,50~€", "0,00~€", "-12,05~€", "1^234^567,89~€"],
        ),
        (
            "nl-NL",
            ["€~1.234,50", "€~0,00", "€~-12,05", "€~1.234.567,89"],
        ),
        (
            "nl-BE",
            ["€~1.234,50", "€~0,00", "€~-12,05", "€~1.234.567,89"],
        ),
        (
            "es-ES",
            ["1234,50~€", "0,00~€", "-12,05~€", "1.234.567,89~€"],
        ),
        (
            "it-IT",
            ["1234,50~€", "0,00~€", "-12,05~€", "1.234.567,89~€"],
        ),
        (
            "pt-PT",
            ["1234,50~€", "0,00~€", "-12,05~€", "1~234~567,89~€"],
        ),
        (
            "sv-SE",
            ["1~234,50~€", "0,00~€", "−12,05~€", "1~234~567,89~€"],
        ),
        (
            "da-DK",
            ["1.234,50~€", "0,00~€", "-12,05~€", "1.234.567,89~€"],
        ),
        (
            "nb-NO",
            ["1~234,50~€", "0,00~€", "−12,05~€", "1~234~567,89~€"],
        ),
        (
            "fi-FI",
            ["1~234,50~€", "0,00~€", "−12,05~€", "1~234~567,89~€"],
        ),
        (
            "pl-PL",
            ["1234,50~€", "0,00~€", "-12,05~€", "1~234~567,89~€"],
        ),
        ("ja-JP", ["€1,234.50", "€0.00", "-€12.05", "€1,234,567.89"]),
    ];
    let eur = code("EUR");
    for (tag, expected) in cases {
        let l = locale(tag);
        assert_eq!(l.formats_as(), tag, "{tag} is in the table");
        let got = [123_450, 0, -1_205, 123_456_789].map(|minor| l.amount(minor, eur));
        assert_eq!(got, expected.map(spaced), "{tag}");
    }
}

#[test]
fn grouping_waits_for_two_leading_digits_where_the_locale_says_so() {
    let eur = code("EUR");
    assert_eq!(locale("es-ES").amount(999_999, eur), spaced("9999,99~€"));
    assert_eq!(
        locale("es-ES").amount(1_234_550, eur),
        spaced("12.345,50~€")
    );
    assert_eq!(
        locale("pl-PL").amount(1_234_500, code("PLN")),
        spaced("12~345,00~zł")
    );
    assert_eq!(locale("de-DE").amount(123_400, eur), spaced("1.234,00~€"));
    assert_eq!(locale("en-GB").amount(99_999, eur), "€999.99");
}

#[test]
fn the_currency_exponent_decides_the_decimals() {
    let (jpy, kwd, bhd) = (code("JPY"), code("KWD"), code("BHD"));
    assert_eq!(locale("ja-JP").amount(1_500, jpy), "¥1,500");
    assert_eq!(locale("ja-JP").amount(0, jpy), "¥0");
    assert_eq!(locale("ja-JP").amount(-1_234_567, jpy), "-¥1,234,567");
    assert_eq!(locale("en-GB").amount(1_500, jpy), "JP¥1,500");
    assert_eq!(locale("de-DE").amount(1_500, jpy), spaced("1.500~JP¥"));
    assert_eq!(
        locale("en-GB").amount(1_234_500, kwd),
        spaced("KWD~1,234.500")
    );
    assert_eq!(locale("en-GB").amount(5, kwd), spaced("KWD~0.005"));
    assert_eq!(
        locale("de-DE").amount(-1_234_567, bhd),
        spaced("-1.234,567~BHD")
    );
    assert_eq!(locale("fr-FR").amount(100, bhd), spaced("0,100~BHD"));
}

#[test]
fn symbols_follow_the_readers_country() {
    let l = |tag: &str, minor: i64, c: &str| locale(tag).amount(minor, code(c));
    assert_eq!(l("en-GB", 1_205, "GBP"), "£12.05");
    assert_eq!(l("en-GB", 1_205, "EUR"), "€12.05");
    assert_eq!(l("en-US", 123_450, "USD"), "$1,234.50");
    assert_eq!(l("en-GB", 123_450, "USD"), "US$1,234.50");
    assert_eq!(l("de-DE", 123_450, "USD"), spaced("1.234,50~US$"));
    // An English locale the table lacks still gets its own dollar.
    assert_eq!(l("en-CA", 1_205, "CAD"), "$12.05");
    assert_eq!(l("de-CH", 123_450, "CHF"), spaced("CHF~1'234.50"));
    assert_eq!(l("de-CH", -1_205, "CHF"), "CHF-12.05");
    assert_eq!(l("en-US", 1_205, "CHF"), spaced("CHF~12.05"));
    assert_eq!(l("sv-SE", 123_450, "SEK"), spaced("1~234,50~kr"));
    assert_eq!(l("en-GB", 123_450, "SEK"), spaced("SEK~1,234.50"));
    assert_eq!(l("da-DK", 123_450, "DKK"), spaced("1.234,50~kr."));
    assert_eq!(l("nb-NO", -123_450, "NOK"), spaced("−1~234,50~kr"));
    assert_eq!(l("pl-PL", 1_205, "PLN"), spaced("12,05~zł"));
    assert_eq!(
        l("nl-NL", 1_205, "ZAR"),
        spaced("ZAR~12,05"),
        "no symbol known"
    );
}

#[test]
fn the_largest_and_smallest_amounts_format_exactly() {
    let eur = code("EUR");
    assert_eq!(
        locale("en-GB").amount(1_000_000_000_000, eur),
        "€10,000,000,000.00"
    );
    assert_eq!(
        locale("en-GB").amount(i64::MAX, eur),
        "€92,233,720,368,547,758.07"
    );
    assert_eq!(
        locale("en-GB").amount(i64::MIN, eur),
        "-€92,233,720,368,547,758.08"
    );
    assert_eq!(locale("en-GB").amount(1, eur), "€0.01");
    assert_eq!(locale("en-GB").amount(-1, eur), "-€0.01");
}

#[test]
fn money_values_format_like_their_amounts() {
    let money = Money::new(2_500, code("EUR")).expect("money");
    assert_eq!(locale("de-DE").money(money), spaced("25,00~€"));
}

#[test]
fn unknown_locales_fall_back_to_their_language_then_english() {
    for (tag, normalized, formats_as) in [
        ("de_de", "de-DE", "de-DE"),
        ("DE-de", "de-DE", "de-DE"),
        ("de-LU", "de-LU", "de-DE"),
        ("de", "de", "de-DE"),
        ("fr-CA", "fr-CA", "fr-FR"),
        ("pt-BR", "pt-BR", "pt-PT"),
        ("no", "no", "nb-NO"),
        ("nb", "nb", "nb-NO"),
        ("en", "en", "en-GB"),
        ("en-AU", "en-AU", "en-GB"),
        ("sw-KE", "sw-KE", "en-GB"),
        ("zh-hant-tw", "zh-Hant-TW", "en-GB"),
        ("es-419", "es-419", "es-ES"),
        ("de-1996-CH", "de-1996-CH", "de-CH"),
    ] {
        let l = locale(tag);
        assert_eq!((l.tag(), l.formats_as()), (normalized, formats_as), "{tag}");
    }
}

#[test]
fn a_malformed_locale_is_refused() {
    for bad in [
        "",
        "d",
        "deutsch",
        "de DE",
        "de--DE",
        "de-",
        "de-D€",
        "1e-DE",
        "de-abcdefghi",
    ] {
        assert!(Locale::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn each_locale_writes_dates_its_own_way() {
    let saturday_evening = Utc.with_ymd_and_hms(2026, 3, 14, 20, 0, 0).unwrap();
    let tuesday_morning = Utc.with_ymd_and_hms(2026, 9, 1, 9, 5, 0).unwrap();
    let cases = [
        (
            "en-GB",
            "Sat 14 March 2026, 20:00",
            "Tue 1 September 2026, 09:05",
        ),
        (
            "en-US",
            "Sat, March 14, 2026, 8:00~PM",
            "Tue, September 1, 2026, 9:05~AM",
        ),
        (
            "en-IE",
            "Sat 14 March 2026, 20:00",
            "Tue 1 September 2026, 09:05",
        ),
        (
            "de-DE",
            "Sa., 14. März 2026, 20:00",
            "Di., 1. September 2026, 09:05",
        ),
        (
            "de-AT",
            "Sa., 14. März 2026, 20:00",
            "Di., 1. September 2026, 09:05",
        ),
        (
            "de-CH",
            "Sa., 14. März 2026, 20:00",
            "Di., 1. September 2026, 09:05",
        ),
        (
            "fr-FR",
            "sam. 14 mars 2026, 20:00",
            "mar. 1 septembre 2026, 09:05",
        ),
        (
            "fr-BE",
            "sam. 14 mars 2026, 20:00",
            "mar. 1 septembre 2026, 09:05",
        ),
        (
            "nl-NL",
            "za 14 maart 2026, 20:00",
            "di 1 september 2026, 09:05",
        ),
        (
            "nl-BE",
            "za 14 maart 2026, 20:00",
            "di 1 september 2026, 09:05",
        ),
        (
            "es-ES",
            "sáb, 14 de marzo de 2026, 20:00",
            "mar, 1 de septiembre de 2026, 9:05",
        ),
        (
            "it-IT",
            "sab 14 marzo 2026, 20:00",
            "mar 1 settembre 2026, 09:05",
        ),
        (
            "pt-PT",
            "sáb., 14 de março de 2026, 20:00",
            "ter., 1 de setembro de 2026, 09:05",
        ),
        (
            "sv-SE",
            "lör 14 mars 2026, 20:00",
            "tis 1 september 2026, 09:05",
        ),
        (
            "da-DK",
            "lør. 14. marts 2026, 20.00",
            "tirs. 1. september 2026, 09.05",
        ),
        (
            "nb-NO",
            "lør. 14. mars 2026, 20:00",
            "tir. 1. september 2026, 09:05",
        ),
        (
            "fi-FI",
            "la 14. maaliskuuta 2026, 20.00",
            "ti 1. syyskuuta 2026, 9.05",
        ),
        (
            "pl-PL",
            "sob., 14 marca 2026, 20:00",
            "wt., 1 września 2026, 09:05",
        ),
        ("ja-JP", "2026年3月14日(土) 20:00", "2026年9月1日(火) 9:05"),
    ];
    for (tag, evening, morning) in cases {
        let l = locale(tag);
        assert_eq!(
            l.datetime(saturday_evening),
            spaced(&format!("{evening} UTC")),
            "{tag}"
        );
        assert_eq!(
            l.datetime(tuesday_morning),
            spaced(&format!("{morning} UTC")),
            "{tag}"
        );
    }
}

#[test]
fn month_names_and_the_twelve_hour_clock_hold_at_the_edges() {
    let new_year = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
    let noon = Utc.with_ymd_and_hms(2026, 12, 31, 12, 30, 0).unwrap();
    assert_eq!(
        locale("de-AT").datetime(new_year),
        "Fr., 1. Jänner 2027, 00:00 UTC"
    );
    assert_eq!(
        locale("de-DE").datetime(new_year),
        "Fr., 1. Januar 2027, 00:00 UTC"
    );
    assert_eq!(
        locale("en-US").datetime(new_year),
        spaced("Fri, January 1, 2027, 12:00~AM UTC")
    );
    assert_eq!(
        locale("en-US").datetime(noon),
        spaced("Thu, December 31, 2026, 12:30~PM UTC")
    );
    assert_eq!(
        locale("pl-PL").datetime(noon),
        "czw., 31 grudnia 2026, 12:30 UTC"
    );
}
