//! The stateless parts of blind transfer (RFC 3515): which targets a REFER of ours may carry,
//! and what the NOTIFYs of the implicit `refer` subscription say (Event, Subscription-State and
//! the `message/sipfrag` status line).

/// Why a transfer target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not a `sip:`, `sips:` or `tel:` URI.
    #[error("not a sip:, sips: or tel: URI")]
    Scheme,
    /// Whitespace, controls, quotes or angle brackets would break the Refer-To header.
    #[error("contains characters a Refer-To header cannot carry")]
    Characters,
    /// The scheme is right but there is no host (sip/sips) or number (tel).
    #[error("has no host or number")]
    Empty,
}

/// Checks a transfer target and returns it without surrounding blanks or angle brackets,
/// ready to be written as `Refer-To: <target>`.
pub fn validate_target(target: &str) -> Result<&str, TargetError> {
    let mut t = target.trim();
    if let Some(inner) = t.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
        t = inner;
    }
    if t.chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
    {
        return Err(TargetError::Characters);
    }
    let (scheme, rest) = t.split_once(':').ok_or(TargetError::Scheme)?;
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "sip" | "sips" => {
            let before_params = rest.split([';', '?']).next().unwrap_or("");
            let hostport = before_params.rsplit('@').next().unwrap_or("");
            let host = hostport.split(':').next().unwrap_or("");
            // An IPv6 reference keeps its colons inside brackets.
            let host = if hostport.starts_with('[') {
                hostport
            } else {
                host
            };
            if host.is_empty() {
                return Err(TargetError::Empty);
            }
        }
        "tel" => {
            let number = rest.split(';').next().unwrap_or("");
            let phone_char = |c: char| c.is_ascii_hexdigit() || "+-.()*#".contains(c);
            if number.is_empty() || !number.chars().all(phone_char) {
                return Err(TargetError::Empty);
            }
        }
        _ => return Err(TargetError::Scheme),
    }
    Ok(t)
}

/// Reads an Event header value: `None` when it is not the `refer` package, otherwise the
/// subscription's `id` parameter (the REFER's CSeq number, RFC 3515 §2.4.6), if given.
/// An `id` that is not a number is kept as `Some(Some(u32::MAX))` so it matches nothing.
pub fn refer_event_id(value: &str) -> Option<Option<u32>> {
    let mut parts = value.split(';');
    let package = parts.next().unwrap_or("").trim();
    if !package.eq_ignore_ascii_case("refer") {
        return None;
    }
    let id = parts.find_map(|p| {
        let (name, v) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("id")
            .then(|| v.trim().parse::<u32>().unwrap_or(u32::MAX))
    });
    Some(id)
}

/// True when a Subscription-State header value says `terminated` (RFC 6665 §8.2.3).
pub fn subscription_terminated(value: &str) -> bool {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("terminated")
}

/// The status code of a `message/sipfrag` body's status line (`SIP/2.0 200 OK`), or `None`
/// when the fragment does not start with a status line (RFC 3420 lets it start with headers).
pub fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let end = body
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(body.len());
    let line = std::str::from_utf8(&body[..end]).ok()?;
    let line = line.trim_start();
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = code.parse().ok()?;
    (100..=699).contains(&code).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn targets_of_the_three_schemes_are_accepted_and_unwrapped() {
        for (given, kept) in [
            ("sip:bob@example.com", "sip:bob@example.com"),
            (
                " <sips:bob@example.com:5061;transport=tls> ",
                "sips:bob@example.com:5061;transport=tls",
            ),
            ("SIP:example.com", "SIP:example.com"),
            ("sip:[2001:db8::1]:5060", "sip:[2001:db8::1]:5060"),
            ("tel:+1-201-555-0123", "tel:+1-201-555-0123"),
            (
                "tel:7042;phone-context=example.com",
                "tel:7042;phone-context=example.com",
            ),
        ] {
            assert_eq!(validate_target(given), Ok(kept), "{given}");
        }
    }

    #[test]
    fn bad_targets_are_refused_with_the_reason() {
        assert_eq!(validate_target("bob"), Err(TargetError::Scheme));
        assert_eq!(validate_target("http://x"), Err(TargetError::Scheme));
        assert_eq!(validate_target("mailto:bob@x"), Err(TargetError::Scheme));
        assert_eq!(validate_target("sip:"), Err(TargetError::Empty));
        assert_eq!(validate_target("sip:bob@"), Err(TargetError::Empty));
        assert_eq!(validate_target("tel:"), Err(TargetError::Empty));
        assert_eq!(validate_target("tel:12x4"), Err(TargetError::Empty));
        assert_eq!(
            validate_target("sip:bob@x\r\nVia: evil"),
            Err(TargetError::Characters)
        );
        assert_eq!(
            validate_target("sip:bob@x>;x=<y"),
            Err(TargetError::Characters)
        );
        assert_eq!(validate_target(""), Err(TargetError::Scheme));
    }

    #[test]
    fn event_header_yields_the_refer_subscription_id() {
        assert_eq!(refer_event_id("refer"), Some(None));
        assert_eq!(refer_event_id(" Refer ;id=93809824"), Some(Some(93809824)));
        assert_eq!(refer_event_id("refer;id=abc"), Some(Some(u32::MAX)));
        assert_eq!(refer_event_id("dialog"), None);
        assert_eq!(refer_event_id("presence;id=1"), None);
    }

    #[test]
    fn subscription_state_terminated_is_recognised() {
        assert!(subscription_terminated("terminated;reason=noresource"));
        assert!(subscription_terminated(" Terminated"));
        assert!(!subscription_terminated("active;expires=60"));
        assert!(!subscription_terminated("pending"));
        assert!(!subscription_terminated(""));
    }

    #[test]
    fn sipfrag_status_lines() {
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK"), Some(200));
        assert_eq!(sipfrag_status(b"SIP/2.0 100 Trying\r\n"), Some(100));
        assert_eq!(
            sipfrag_status(b"SIP/2.0 603 Declined\r\nWarning: 399 x \"no\"\r\n"),
            Some(603)
        );
        assert_eq!(sipfrag_status(b"SIP/2.0 180"), Some(180));
        assert_eq!(sipfrag_status(b""), None);
        assert_eq!(sipfrag_status(b"Via: SIP/2.0/UDP x\r\n"), None);
        assert_eq!(sipfrag_status(b"INVITE sip:bob@x SIP/2.0\r\n"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 2000 OK"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 099 Low"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 +20 OK"), None);
        assert_eq!(sipfrag_status(b"\xff\xfe"), None);
    }

    proptest! {
        #[test]
        fn any_status_line_round_trips(code in 100u16..700, reason in "[ -~]{0,40}", tail in "[ -~\r\n]{0,80}") {
            let body = format!("SIP/2.0 {code} {reason}\r\n{tail}");
            prop_assert_eq!(sipfrag_status(body.as_bytes()), Some(code));
        }

        #[test]
        fn sipfrag_never_panics_and_only_yields_final_or_provisional_codes(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(code) = sipfrag_status(&body) {
                prop_assert!((100..=699).contains(&code));
            }
        }

        #[test]
        fn accepted_targets_carry_no_header_breaking_characters(target in "\\PC{0,40}") {
            if let Ok(t) = validate_target(&target) {
                prop_assert!(!t.contains(['\r', '\n', '<', '>', '"', ' ']));
                let lower = t.to_ascii_lowercase();
                prop_assert!(lower.starts_with("sip:") || lower.starts_with("sips:") || lower.starts_with("tel:"));
            }
        }
    }
}
