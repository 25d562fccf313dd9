//! One row of conventions per supported locale, after CLDR's (modern) data, with one
//! storefront-wide choice: date and time are joined by ", " rather than "at"/"um"/"à".

/// How one locale writes amounts and dates.
#[derive(Debug)]
pub struct Rules {
    pub tag: &'static str,
    pub decimal: &'static str,
    pub group: &'static str,
    /// Digits the leading group needs before grouping starts: 2 writes 1234 but 12.345.
    pub min_grouping: usize,
    pub symbol_first: bool,
    /// Between symbol and number; empty means touching, unless the symbol ends in a letter.
    pub gap: &'static str,
    pub minus: &'static str,
    pub minus_at: MinusAt,
    /// `{wd}` weekday, `{d}` day, `{m}` month number, `{month}` month name, `{y}` year.
    pub date: &'static str,
    pub weekdays: [&'static str; 7],
    pub months: [&'static str; 12],
    pub joiner: &'static str,
    pub clock: Clock,
}

/// Where a minus sign goes when the symbol comes first (after it, it is always in front).
#[derive(Debug, Clone, Copy)]
pub enum MinusAt {
    /// `-€12.05`
    Start,
    /// `€ -12,05`
    Number,
    /// `CHF-12.05`: the minus takes the gap's place.
    Gap,
}

#[derive(Debug, Clone, Copy)]
pub enum Clock {
    H24 { separator: char, padded: bool },
    H12,
}

const NBSP: &str = "\u{a0}";
const NNBSP: &str = "\u{202f}";
const MINUS_SIGN: &str = "\u{2212}";

const EN_WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const EN_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DE_WEEKDAYS: [&str; 7] = ["Mo.", "Di.", "Mi.", "Do.", "Fr.", "Sa.", "So."];
const DE_MONTHS: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];
const AT_MONTHS: [&str; 12] = [
    "Jänner",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];
const FR_WEEKDAYS: [&str; 7] = ["lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim."];
const FR_MONTHS: [&str; 12] = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
];
const NL_WEEKDAYS: [&str; 7] = ["ma", "di", "wo", "do", "vr", "za", "zo"];
const NL_MONTHS: [&str; 12] = [
    "januari",
    "februari",
    "maart",
    "april",
    "mei",
    "juni",
    "juli",
    "augustus",
    "september",
    "oktober",
    "november",
    "december",
];

const EN_GB: Rules = Rules {
    tag: "en-GB",
    decimal: ".",
    group: ",",
    min_grouping: 1,
    symbol_first: true,
    gap: "",
    minus: "-",
    minus_at: MinusAt::Start,
    date: "{wd} {d} {month} {y}",
    weekdays: EN_WEEKDAYS,
    months: EN_MONTHS,
    joiner: ", ",
    clock: Clock::H24 {
        separator: ':',
        padded: true,
    },
};

const DE_DE: Rules = Rules {
    tag: "de-DE",
    decimal: ",",
    group: ".",
    min_grouping: 1,
    symbol_first: false,
    gap: NBSP,
    minus: "-",
    minus_at: MinusAt::Start,
    date: "{wd}, {d}. {month} {y}",
    weekdays: DE_WEEKDAYS,
    months: DE_MONTHS,
    joiner: ", ",
    clock: Clock::H24 {
        separator: ':',
        padded: true,
    },
};

const FR_FR: Rules = Rules {
    tag: "fr-FR",
    decimal: ",",
    group: NNBSP,
    min_grouping: 1,
    symbol_first: false,
    gap: NBSP,
    minus: "-",
    minus_at: MinusAt::Start,
    date: "{wd} {d} {month} {y}",
    weekdays: FR_WEEKDAYS,
    months: FR_MONTHS,
    joiner: ", ",
    clock: Clock::H24 {
        separator: ':',
        padded: true,
    },
};

const NL_NL: Rules = Rules {
    tag: "nl-NL",
    decimal: ",",
    group: ".",
    min_grouping: 1,
    symbol_first: true,
    gap: NBSP,
    minus: "-",
    minus_at: MinusAt::Number,
    date: "{wd} {d} {month} {y}",
    weekdays: NL_WEEKDAYS,
    months: NL_MONTHS,
    joiner: ", ",
    clock: Clock::H24 {
        separator: ':',
        padded: true,
    },
};

/// Searched in order: the first row of a language is what that language alone resolves
/// to, and en-GB (first of all) is the last resort.
pub static RULES: &[Rules] = &[
    EN_GB,
    Rules {
        tag: "en-US",
        date: "{wd}, {month} {d}, {y}",
        clock: Clock::H12,
        ..EN_GB
    },
    Rules {
        tag: "en-IE",
        ..EN_GB
    },
    DE_DE,
    Rules {
        tag: "de-AT",
        symbol_first: true,
        months: AT_MONTHS,
        ..DE_DE
    },
    Rules {
        tag: "de-CH",
        decimal: ".",
        group: "'",
        symbol_first: true,
        minus_at: MinusAt::Gap,
        ..DE_DE
    },
    FR_FR,
    Rules {
        tag: "fr-BE",
        ..FR_FR
    },
    NL_NL,
    Rules {
        tag: "nl-BE",
        ..NL_NL
    },
    Rules {
        tag: "es-ES",
        min_grouping: 2,
        date: "{wd}, {d} de {month} de {y}",
        weekdays: ["lun", "mar", "mié", "jue", "vie", "sáb", "dom"],
        months: [
            "enero",
            "febrero",
            "marzo",
            "abril",
            "mayo",
            "junio",
            "julio",
            "agosto",
            "septiembre",
            "octubre",
            "noviembre",
            "diciembre",
        ],
        clock: Clock::H24 {
            separator: ':',
            padded: false,
        },
        ..DE_DE
    },
    Rules {
        tag: "it-IT",
        min_grouping: 2,
        date: "{wd} {d} {month} {y}",
        weekdays: ["lun", "mar", "mer", "gio", "ven", "sab", "dom"],
        months: [
            "gennaio",
            "febbraio",
            "marzo",
            "aprile",
            "maggio",
            "giugno",
            "luglio",
            "agosto",
            "settembre",
            "ottobre",
            "novembre",
            "dicembre",
        ],
        ..DE_DE
    },
    Rules {
        tag: "pt-PT",
        group: NBSP,
        min_grouping: 2,
        date: "{wd}, {d} de {month} de {y}",
        weekdays: ["seg.", "ter.", "qua.", "qui.", "sex.", "sáb.", "dom."],
        months: [
            "janeiro",
            "fevereiro",
            "março",
            "abril",
            "maio",
            "junho",
            "julho",
            "agosto",
            "setembro",
            "outubro",
            "novembro",
            "dezembro",
        ],
        ..DE_DE
    },
    Rules {
        tag: "sv-SE",
        group: NBSP,
        minus: MINUS_SIGN,
        date: "{wd} {d} {month} {y}",
        weekdays: ["mån", "tis", "ons", "tors", "fre", "lör", "sön"],
        months: [
            "januari",
            "februari",
            "mars",
            "april",
            "maj",
            "juni",
            "juli",
            "augusti",
            "september",
            "oktober",
            "november",
            "december",
        ],
        ..DE_DE
    },
    Rules {
        tag: "da-DK",
        date: "{wd} {d}. {month} {y}",
        weekdays: ["man.", "tirs.", "ons.", "tors.", "fre.", "lør.", "søn."],
        months: [
            "januar",
            "februar",
            "marts",
            "april",
            "maj",
            "juni",
            "juli",
            "august",
            "september",
            "oktober",
            "november",
            "december",
        ],
        clock: Clock::H24 {
            separator: '.',
            padded: true,
        },
        ..DE_DE
    },
    Rules {
        tag: "nb-NO",
        group: NBSP,
        minus: MINUS_SIGN,
        date: "{wd} {d}. {month} {y}",
        weekdays: ["man.", "tir.", "ons.", "tor.", "fre.", "lør.", "søn."],
        months: [
            "januar",
            "februar",
            "mars",
            "april",
            "mai",
            "juni",
            "juli",
            "august",
            "september",
            "oktober",
            "november",
            "desember",
        ],
        ..DE_DE
    },
    Rules {
        tag: "fi-FI",
        group: NBSP,
        minus: MINUS_SIGN,
        date: "{wd} {d}. {month} {y}",
        weekdays: ["ma", "ti", "ke", "to", "pe", "la", "su"],
        // Dates take the partitive: "14. maaliskuuta".
        months: [
            "tammikuuta",
            "helmikuuta",
            "maaliskuuta",
            "huhtikuuta",
            "toukokuuta",
            "kesäkuuta",
            "heinäkuuta",
            "elokuuta",
            "syyskuuta",
            "lokakuuta",
            "marraskuuta",
            "joulukuuta",
        ],
        clock: Clock::H24 {
            separator: '.',
            padded: false,
        },
        ..DE_DE
    },
    Rules {
        tag: "pl-PL",
        group: NBSP,
        min_grouping: 2,
        date: "{wd}, {d} {month} {y}",
        weekdays: ["pon.", "wt.", "śr.", "czw.", "pt.", "sob.", "niedz."],
        // Dates take the genitive: "14 marca".
        months: [
            "stycznia",
            "lutego",
            "marca",
            "kwietnia",
            "maja",
            "czerwca",
            "lipca",
            "sierpnia",
            "września",
            "października",
            "listopada",
            "grudnia",
        ],
        ..DE_DE
    },
    Rules {
        tag: "ja-JP",
        date: "{y}年{m}月{d}日({wd})",
        weekdays: ["月", "火", "水", "木", "金", "土", "日"],
        joiner: " ",
        clock: Clock::H24 {
            separator: ':',
            padded: false,
        },
        ..EN_GB
    },
];

/// The row for `language[-region]`: exact, else the language's first row, else en-GB.
pub fn resolve(language: &str, region: Option<&str>) -> &'static Rules {
    // Norwegian without a written standard named is read as Bokmål.
    let language = if language == "no" { "nb" } else { language };
    let split = |rules: &Rules| rules.tag.split_once('-').unwrap_or((rules.tag, ""));
    region
        .and_then(|region| RULES.iter().find(|r| split(r) == (language, region)))
        .or_else(|| RULES.iter().find(|r| split(r).0 == language))
        .unwrap_or(&RULES[0])
}
