//! HTTP conditional and range request rules for serving audio files (RFC 9110 §13–14).
//!
//! Only single byte ranges are served. A request for several ranges gets the first
//! satisfiable one as an ordinary `206` with one `Content-Range`, which clients must
//! already handle because a server may coalesce ranges; no `multipart/byteranges`.

use std::time::{SystemTime, UNIX_EPOCH};

/// What to send in answer to a `Range` header for a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable `Range`: send everything with 200.
    Full,
    /// Send bytes `start..=end` with 206.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// No requested range overlaps the file: 416 with `Content-Range: bytes */LEN`.
    Unsatisfiable,
}

/// Interprets a `Range` header value for a file of `len` bytes.
///
/// Headers that are not valid `bytes=` ranges are ignored (a full 200), as RFC 9110
/// §14.2 allows; valid ranges that all lie past the end are unsatisfiable.
pub fn parse_range(header: &str, len: u64) -> RangeAnswer {
    let header = header.trim();
    // Range units are case-insensitive.
    let Some(specs) = header
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .and_then(|_| header.get(6..))
    else {
        return RangeAnswer::Full;
    };
    let mut first_satisfiable = None;
    for spec in specs.split(',').map(str::trim) {
        if spec.is_empty() {
            continue;
        }
        let Some((a, b)) = spec.split_once('-') else {
            return RangeAnswer::Full;
        };
        let (a, b) = (a.trim(), b.trim());
        let range = if a.is_empty() {
            // Suffix range: the last `n` bytes.
            let Some(n) = parse_u64(b) else {
                return RangeAnswer::Full;
            };
            (n > 0 && len > 0).then(|| (len.saturating_sub(n), len - 1))
        } else {
            let Some(start) = parse_u64(a) else {
                return RangeAnswer::Full;
            };
            let end = if b.is_empty() {
                None
            } else {
                match parse_u64(b) {
                    Some(end) if end >= start => Some(end),
                    _ => return RangeAnswer::Full,
                }
            };
            (start < len).then(|| (start, end.map_or(len - 1, |e| e.min(len - 1))))
        };
        if first_satisfiable.is_none() {
            first_satisfiable = range;
        }
    }
    match first_satisfiable {
        Some((start, end)) => RangeAnswer::Partial { start, end },
        None if specs.split(',').any(|s| !s.trim().is_empty()) => RangeAnswer::Unsatisfiable,
        None => RangeAnswer::Full,
    }
}

/// Digits only: `+5` or `0x10` are not byte positions.
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A strong entity tag from the file's identity (inode), size and modification time; a
/// finished recording is never rewritten in place, so the three identify its bytes. The
/// inode matters because file systems with coarse timestamps give two recordings written
/// in the same instant the same time, and equal-length recordings are common.
pub fn etag(file_id: u64, len: u64, modified: Option<SystemTime>) -> String {
    let nanos = modified
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{file_id:x}-{len:x}-{nanos:x}\"")
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, as §13.1.2 requires).
pub fn if_none_match(header: &str, etag: &str) -> bool {
    let header = header.trim();
    if header == "*" {
        return true;
    }
    let ours = etag.trim_start_matches("W/");
    header
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == ours)
}

/// Whether an `If-Range` value lets the `Range` apply: only an identical strong tag does.
pub fn if_range_allows(header: &str, etag: &str) -> bool {
    let header = header.trim();
    !header.starts_with("W/") && header == etag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges() {
        use RangeAnswer::*;
        assert_eq!(
            parse_range("bytes=0-99", 1000),
            Partial { start: 0, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=100-", 1000),
            Partial {
                start: 100,
                end: 999
            }
        );
        assert_eq!(
            parse_range("bytes=-500", 1000),
            Partial {
                start: 500,
                end: 999
            }
        );
        assert_eq!(
            parse_range("bytes=-5000", 1000),
            Partial { start: 0, end: 999 }
        );
        assert_eq!(
            parse_range("bytes=900-5000", 1000),
            Partial {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            parse_range("bytes=999-999", 1000),
            Partial {
                start: 999,
                end: 999
            }
        );
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-10", 0), Unsatisfiable);
    }

    #[test]
    fn invalid_headers_are_ignored() {
        for h in [
            "",
            "bytes=",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=0x1-2",
            "bytes=1",
            "bytes=--1",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(parse_range(h, 1000), RangeAnswer::Full, "{h:?}");
        }
    }

    #[test]
    fn several_ranges_serve_the_first_satisfiable() {
        assert_eq!(
            parse_range("bytes=0-9, 20-29", 100),
            RangeAnswer::Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range("bytes=500-600, 20-29", 100),
            RangeAnswer::Partial { start: 20, end: 29 }
        );
        assert_eq!(
            parse_range("bytes=500-600, 700-", 100),
            RangeAnswer::Unsatisfiable
        );
    }

    #[test]
    fn entity_tags() {
        let t = etag(
            7,
            10,
            Some(UNIX_EPOCH + std::time::Duration::from_nanos(255)),
        );
        assert_eq!(t, "\"7-a-ff\"");
        assert_ne!(
            t,
            etag(
                8,
                10,
                Some(UNIX_EPOCH + std::time::Duration::from_nanos(255))
            )
        );
        assert!(if_none_match(&t, &t));
        assert!(if_none_match("*", &t));
        assert!(if_none_match(&format!("\"x\", W/{t}"), &t));
        assert!(!if_none_match("\"7-a-fe\"", &t));
        assert!(if_range_allows(&t, &t));
        assert!(!if_range_allows(&format!("W/{t}"), &t));
        assert!(!if_range_allows("\"other\"", &t));
    }
}
