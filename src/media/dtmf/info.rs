//! DTMF in SIP INFO bodies: parsing what phones send and formatting what we send.
//!
//! Two bodies are in use, neither standardised beyond vendor documents:
//!
//! - `application/dtmf-relay`: `key=value` lines, e.g. `Signal=5\r\nDuration=160\r\n`.
//!   Keys are matched without regard to case, spaces around keys and values are ignored,
//!   lines may end in LF or CRLF, unknown keys are skipped. `Signal` is a keypad character
//!   or an event number (`10` = `*`, `11` = `#`, `12`–`15` = `A`–`D`, as some phones
//!   send); `Duration` is in milliseconds.
//! - `application/dtmf`: the body is the keypad character or the event number.
//!
//! A missing, zero or unreadable duration becomes [`DEFAULT_DURATION`]; durations are capped
//! at [`MAX_DURATION`]. Content-type parameters (`; charset=…`) are ignored.

use std::time::{Duration, Instant};

use super::merge::{DtmfEvent, DtmfMethod};
use super::Digit;

/// Content type of the `Signal=`/`Duration=` body.
pub const CONTENT_TYPE_DTMF_RELAY: &str = "application/dtmf-relay";
/// Content type of the bare-digit body.
pub const CONTENT_TYPE_DTMF: &str = "application/dtmf";
/// Duration assumed when the body gives none.
pub const DEFAULT_DURATION: Duration = Duration::from_millis(250);
/// Longest duration accepted; longer values are capped.
pub const MAX_DURATION: Duration = Duration::from_secs(10);

/// A digit taken from an INFO body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InfoDigit {
    /// The key.
    pub digit: Digit,
    /// How long the key was (or is to be) pressed.
    pub duration: Duration,
}

impl InfoDigit {
    /// The press as a merger event, taking `now` (the INFO's arrival) as its start.
    pub fn to_event(&self, now: Instant) -> DtmfEvent {
        DtmfEvent {
            duration: Some(self.duration),
            ..DtmfEvent::began(self.digit, DtmfMethod::Info, now)
        }
    }
}

/// Why an INFO body carries no digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    /// The content type is neither DTMF type.
    #[error("content type is not application/dtmf-relay or application/dtmf")]
    UnsupportedContentType,
    /// The body is not UTF-8 text.
    #[error("DTMF INFO body is not text")]
    NotText,
    /// A dtmf-relay body without a `Signal` line.
    #[error("dtmf-relay body has no Signal")]
    MissingSignal,
    /// The signal is not a DTMF digit.
    #[error("DTMF INFO signal is not a digit")]
    InvalidSignal,
}

/// Reads the digit from an INFO request's body, given its `Content-Type` value.
pub fn parse_info(content_type: &str, body: &[u8]) -> Result<InfoDigit, InfoError> {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    let text = std::str::from_utf8(body).map_err(|_| InfoError::NotText)?;
    if media_type.eq_ignore_ascii_case(CONTENT_TYPE_DTMF_RELAY) {
        parse_relay(text)
    } else if media_type.eq_ignore_ascii_case(CONTENT_TYPE_DTMF) {
        Ok(InfoDigit {
            digit: parse_signal(text)?,
            duration: DEFAULT_DURATION,
        })
    } else {
        Err(InfoError::UnsupportedContentType)
    }
}

fn parse_relay(text: &str) -> Result<InfoDigit, InfoError> {
    let mut digit = None;
    let mut duration = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.eq_ignore_ascii_case("signal") {
            digit = Some(parse_signal(value)?);
        } else if key.eq_ignore_ascii_case("duration") {
            duration = value.trim().parse::<u64>().ok().filter(|&ms| ms > 0);
        }
    }
    Ok(InfoDigit {
        digit: digit.ok_or(InfoError::MissingSignal)?,
        duration: duration
            .map(Duration::from_millis)
            .map_or(DEFAULT_DURATION, |d| d.min(MAX_DURATION)),
    })
}

fn parse_signal(value: &str) -> Result<Digit, InfoError> {
    let v = value.trim();
    let mut chars = v.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return Digit::from_char(c).ok_or(InfoError::InvalidSignal);
    }
    // At most two digits, so that "0010" or "1e1" are refused rather than guessed at.
    if v.len() == 2 && v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse::<u8>()
            .ok()
            .and_then(Digit::from_event_code)
            .ok_or(InfoError::InvalidSignal);
    }
    Err(InfoError::InvalidSignal)
}

/// The `application/dtmf-relay` body for sending `digit` for `duration` (whole ms).
pub fn format_dtmf_relay(digit: Digit, duration: Duration) -> String {
    format!(
        "Signal={}\r\nDuration={}\r\n",
        digit.as_char(),
        duration.as_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digit {
        Digit::from_char(c).unwrap()
    }

    fn relay(body: &str) -> Result<InfoDigit, InfoError> {
        parse_info("application/dtmf-relay", body.as_bytes())
    }

    #[test]
    fn dtmf_relay_all_digits() {
        for digit in Digit::ALL {
            let body = format!("Signal={}\r\nDuration=160\r\n", digit.as_char());
            assert_eq!(
                relay(&body),
                Ok(InfoDigit {
                    digit,
                    duration: Duration::from_millis(160)
                })
            );
            // And the numeric form.
            let body = format!("Signal={:02}\r\n", digit.event_code());
            assert_eq!(relay(&body).map(|i| i.digit), Ok(digit), "{body}");
        }
        assert_eq!(relay("Signal=10\r\n").map(|i| i.digit), Ok(d('*')));
        assert_eq!(relay("Signal=11\r\n").map(|i| i.digit), Ok(d('#')));
        assert_eq!(relay("Signal=15\r\n").map(|i| i.digit), Ok(d('D')));
    }

    #[test]
    fn dtmf_relay_odd_formatting() {
        let cases = [
            ("signal = *\nduration = 100\n", '*', 100),
            ("SIGNAL=#", '#', 250),
            ("Signal= a\r\nDuration= 80", 'A', 80),
            ("  Signal=5  \r\n\r\nVolume=10\r\nDuration=0\r\n", '5', 250),
            ("Duration=400\nSignal=d\n", 'D', 400),
            ("Signal=1\nDuration=abc\n", '1', 250),
            ("Signal=2\nDuration=999999\n", '2', 10_000),
        ];
        for (body, c, ms) in cases {
            assert_eq!(
                relay(body),
                Ok(InfoDigit {
                    digit: d(c),
                    duration: Duration::from_millis(ms)
                }),
                "{body:?}"
            );
        }
        let ct = "Application/DTMF-Relay ; charset=utf-8";
        assert_eq!(parse_info(ct, b"Signal=9").map(|i| i.digit), Ok(d('9')));
    }

    #[test]
    fn application_dtmf_bodies() {
        for digit in Digit::ALL {
            let body = digit.as_char().to_string();
            assert_eq!(
                parse_info("application/dtmf", body.as_bytes()),
                Ok(InfoDigit {
                    digit,
                    duration: DEFAULT_DURATION
                })
            );
        }
        assert_eq!(
            parse_info("application/dtmf", b" 11\r\n").map(|i| i.digit),
            Ok(d('#'))
        );
        assert_eq!(
            parse_info("APPLICATION/DTMF", b"*").map(|i| i.digit),
            Ok(d('*'))
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(relay(""), Err(InfoError::MissingSignal));
        assert_eq!(relay("Duration=100"), Err(InfoError::MissingSignal));
        assert_eq!(relay("Signal=\r\n"), Err(InfoError::InvalidSignal));
        assert_eq!(relay("Signal=16"), Err(InfoError::InvalidSignal));
        assert_eq!(relay("Signal=x"), Err(InfoError::InvalidSignal));
        assert_eq!(relay("Signal=12345"), Err(InfoError::InvalidSignal));
        assert_eq!(relay("Signal=**"), Err(InfoError::InvalidSignal));
        assert_eq!(
            parse_info("application/dtmf-relay", &[0xff, 0xfe]),
            Err(InfoError::NotText)
        );
        assert_eq!(
            parse_info("application/dtmf", b"hello"),
            Err(InfoError::InvalidSignal)
        );
        assert_eq!(
            parse_info("application/sdp", b"Signal=1"),
            Err(InfoError::UnsupportedContentType)
        );
        assert_eq!(parse_info("", b"1"), Err(InfoError::UnsupportedContentType));
    }

    #[test]
    fn format_round_trips() {
        let body = format_dtmf_relay(d('#'), Duration::from_millis(160));
        assert_eq!(body, "Signal=#\r\nDuration=160\r\n");
        for digit in Digit::ALL {
            let body = format_dtmf_relay(digit, Duration::from_millis(120));
            assert_eq!(
                relay(&body),
                Ok(InfoDigit {
                    digit,
                    duration: Duration::from_millis(120)
                })
            );
        }
    }

    #[test]
    fn to_event_carries_the_duration() {
        let now = Instant::now();
        let e = InfoDigit {
            digit: d('4'),
            duration: Duration::from_millis(90),
        }
        .to_event(now);
        assert_eq!(e.method, DtmfMethod::Info);
        assert_eq!(e.at, now);
        assert_eq!(e.duration, Some(Duration::from_millis(90)));
    }
}
