//! Rewrites the few kinds of text the embedded engine does not read as a person would,
//! before it sees them; and spots markup, which `say()` refuses.
//!
//! flite-rs already reads cardinals ("1,234"), ordinals ("2nd"), negatives, decimals,
//! dollar amounts, percentages, years, phone numbers (digit by digit) and times with
//! minutes ("3:30 pm", "10:05") as a person does; the tests pin that. What it misses:
//! - a time on the hour: "7:00" is read "seven" → "7 o'clock" ("7:00 pm" stays "seven p m");
//! - euro and pound amounts: the symbol is silent → "5 euros", "3 pounds 20 pence";
//! - amounts under one dollar: "$0.99" is "zero dollars ninety nine cents" → "99 cents";
//! - "#3" is "hash three" → "number 3".

use std::sync::LazyLock;

use regex::{Captures, Regex};

#[allow(clippy::expect_used)] // constant patterns, checked by the tests
fn pattern(re: &str) -> Regex {
    Regex::new(re).expect("a valid pattern")
}

/// A time on the hour with no am/pm after it.
static ON_THE_HOUR: LazyLock<Regex> = LazyLock::new(|| {
    pattern(r"(?i)\b([01]?\d|2[0-3]):00\b(\s*(?:[ap]\.?\s?m\b\.?|o'?clock\b|hours?\b))?")
});

/// A euro or pound amount: symbol before or after, optional two-digit fraction.
static MONEY: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"([€£])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{2}))?\b|\b(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{2}))?\s?([€£])",
    )
});

/// A dollar amount under one.
static CENTS: LazyLock<Regex> = LazyLock::new(|| pattern(r"\$0?\.(\d{2})\b"));

/// `#` before a number.
static NUMBER_SIGN: LazyLock<Regex> = LazyLock::new(|| pattern(r"#\s?(\d)"));

/// An XML or SSML tag.
static TAG: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"<\s*/?\s*[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?\s*>"));

/// The first markup tag in `text`, if any.
pub fn markup(text: &str) -> Option<String> {
    TAG.find(text)
        .map(|m| m.as_str().chars().take(40).collect())
}

fn unit<'a>(n: &str, one: &'a str, many: &'a str) -> &'a str {
    if n.trim_start_matches('0') == "1" {
        one
    } else {
        many
    }
}

/// `text` with the forms flite-rs misreads rewritten in words it reads right.
pub fn normalize(text: &str) -> String {
    let text = ON_THE_HOUR.replace_all(text, |c: &Captures| match c.get(2) {
        Some(after) => format!("{}{}", &c[1], after.as_str()),
        None => format!("{} o'clock", c[1].trim_start_matches('0').max("0")),
    });
    let text = MONEY.replace_all(&text, |c: &Captures| {
        let (symbol, whole, fraction) = match c.get(1) {
            Some(s) => (s.as_str(), &c[2], c.get(3)),
            None => (&c[6], &c[4], c.get(5)),
        };
        let (one, many, sub_one, sub_many) = if symbol == "€" {
            ("euro", "euros", "cent", "cents")
        } else {
            ("pound", "pounds", "penny", "pence")
        };
        let fraction = fraction.map(|f| f.as_str()).filter(|f| *f != "00");
        let main = format!("{whole} {}", unit(whole, one, many));
        match fraction {
            None => main,
            Some(f) => {
                let f = f.trim_start_matches('0');
                let sub = format!("{f} {}", unit(f, sub_one, sub_many));
                if whole.trim_start_matches('0').is_empty() {
                    sub
                } else {
                    format!("{main} {sub}")
                }
            }
        }
    });
    let text = CENTS.replace_all(&text, |c: &Captures| {
        let n = c[1].trim_start_matches('0').max("0");
        format!("{n} {}", unit(n, "cent", "cents"))
    });
    NUMBER_SIGN
        .replace_all(&text, |c: &Captures| format!("number {}", &c[1]))
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_what_flite_misreads() {
        for (text, want) in [
            ("7:00", "7 o'clock"),
            ("Open at 9:00.", "Open at 9 o'clock."),
            ("12:00", "12 o'clock"),
            ("07:00", "7 o'clock"),
            ("17:00", "17 o'clock"),
            ("7:00 pm", "7 pm"),
            ("7:00 p.m.", "7 p.m."),
            ("€5", "5 euros"),
            ("€1", "1 euro"),
            ("5€", "5 euros"),
            ("€1,250.50", "1,250 euros 50 cents"),
            ("£3.20", "3 pounds 20 pence"),
            ("£1.01", "1 pound 1 penny"),
            ("£0.50", "50 pence"),
            ("€2.00", "2 euros"),
            ("$0.99", "99 cents"),
            ("$.05", "5 cents"),
            ("$0.01", "1 cent"),
            ("press #3", "press number 3"),
        ] {
            assert_eq!(normalize(text), want, "{text:?}");
        }
    }

    #[test]
    fn leaves_what_flite_reads_right() {
        for text in [
            "3:30 pm", "10:05", "$12.50", "$1", "24:00", "7:001", "1:5", "a # b",
        ] {
            assert_eq!(normalize(text), text);
        }
    }

    #[test]
    fn finds_markup_but_not_comparisons() {
        assert_eq!(markup("<speak>hi</speak>").as_deref(), Some("<speak>"));
        assert_eq!(
            markup("a <break time=\"1s\"/> b").as_deref(),
            Some("<break time=\"1s\"/>")
        );
        assert_eq!(markup("hi</speak>").as_deref(), Some("</speak>"));
        assert_eq!(markup("if 3 < 5 and 7 > 2"), None);
        assert_eq!(markup("a<5 or b>3"), None);
    }
}
