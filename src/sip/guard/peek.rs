//! A quick look at a raw SIP message: what the guard needs (request or response, method,
//! User-Agent, whether To carries a tag) read straight from the bytes, without the full
//! parser and without allocating, so a flood is judged before it costs a parse.
//!
//! Anything this scanner cannot read is an out-of-dialog request of an unknown method: it
//! is charged like one, and the endpoint's parser gives it the answer it deserves.

/// The methods the guard tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// INVITE.
    Invite,
    /// REGISTER.
    Register,
    /// OPTIONS.
    Options,
    /// ACK: belongs to an INVITE transaction, never limited.
    Ack,
    /// CANCEL: belongs to an INVITE transaction, never limited.
    Cancel,
    /// Any other request (BYE, INFO, MESSAGE, garbage...).
    Other,
}

/// What [`peek`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek<'a> {
    /// Nothing but whitespace: a keep-alive.
    KeepAlive,
    /// A response.
    Response,
    /// A request.
    Request {
        /// Its method.
        kind: Kind,
        /// The User-Agent value, trimmed.
        user_agent: Option<&'a [u8]>,
        /// To has a tag: the request belongs to a dialog.
        in_dialog: bool,
    },
}

/// Reads the start line and the headers (up to the blank line) of `bytes`.
pub fn peek(bytes: &[u8]) -> Peek<'_> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Peek::KeepAlive;
    }
    if bytes.starts_with(b"SIP/2.0 ") {
        return Peek::Response;
    }
    let mut rest = bytes;
    let first = next_line(&mut rest);
    let method = first.split(|b| *b == b' ').next().unwrap_or_default();
    let kind = match method {
        b"INVITE" => Kind::Invite,
        b"REGISTER" => Kind::Register,
        b"OPTIONS" => Kind::Options,
        b"ACK" => Kind::Ack,
        b"CANCEL" => Kind::Cancel,
        _ => Kind::Other,
    };
    let mut user_agent = None;
    let mut in_dialog = false;
    while !rest.is_empty() {
        let line = next_line(&mut rest);
        if line.is_empty() {
            break;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = trim(&line[..colon]);
        // Only the two headers the guard reads; the length test skips the rest cheaply.
        match name.len() {
            10 if name.eq_ignore_ascii_case(b"user-agent") => {
                user_agent = Some(trim(&line[colon + 1..]));
            }
            1 | 2 if name.eq_ignore_ascii_case(b"to") || name.eq_ignore_ascii_case(b"t") => {
                in_dialog = has_tag(trim(&line[colon + 1..]));
            }
            _ => {}
        }
    }
    Peek::Request {
        kind,
        user_agent,
        in_dialog,
    }
}

/// The value (trimmed) of the last header named `name` (any ASCII case) in the headers of
/// `bytes`; the last, because a proxy appends its own after whatever a caller sent.
pub fn last_header<'a>(bytes: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut rest = bytes;
    let mut found = None;
    next_line(&mut rest);
    while !rest.is_empty() {
        let line = next_line(&mut rest);
        if line.is_empty() {
            break;
        }
        if let Some(colon) = memchr::memchr(b':', line) {
            if trim(&line[..colon]).eq_ignore_ascii_case(name) {
                found = Some(trim(&line[colon + 1..]));
            }
        }
    }
    found
}

/// The next line of `rest` without its line ending; `rest` moves past it.
fn next_line<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let (line, tail) = match memchr::memchr(b'\n', rest) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (*rest, &rest[rest.len()..]),
    };
    *rest = tail;
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A `;tag=` header parameter, outside the `<...>` of a name-addr (a URI parameter of that
/// name does not count).
fn has_tag(value: &[u8]) -> bool {
    let params = match value.iter().rposition(|b| *b == b'>') {
        Some(end) => &value[end..],
        None => value,
    };
    params.split(|b| *b == b';').skip(1).any(|p| {
        let p = trim(p);
        p.len() > 4 && p[..4].eq_ignore_ascii_case(b"tag=")
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !first.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !last.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    s
}

/// Whether `needle` (lowercase ASCII) occurs in `hay`, ignoring ASCII case.
pub fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Substrings searched for in a header value ignoring ASCII case: the value is lowercased
/// into a buffer on the stack and searched with a precompiled finder per pattern.
#[derive(Debug, Clone)]
pub struct Patterns {
    finders: Vec<memchr::memmem::Finder<'static>>,
}

/// Values longer than this are searched the slow way (nothing legitimate is this long).
const LOWERED_MAX: usize = 512;

impl Patterns {
    /// The non-empty `patterns`, matched ignoring ASCII case.
    pub fn new(patterns: &[String]) -> Patterns {
        Patterns {
            finders: patterns
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| memchr::memmem::Finder::new(&p.to_ascii_lowercase()).into_owned())
                .collect(),
        }
    }

    /// Whether any pattern occurs in `value`.
    pub fn any_in(&self, value: &[u8]) -> bool {
        if self.finders.is_empty() {
            return false;
        }
        if value.len() > LOWERED_MAX {
            return self
                .finders
                .iter()
                .any(|f| contains_ignore_case(value, f.needle()));
        }
        let mut buf = [0u8; LOWERED_MAX];
        let lowered = &mut buf[..value.len()];
        lowered.copy_from_slice(value);
        lowered.make_ascii_lowercase();
        self.finders.iter().any(|f| f.find(lowered).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:echo@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
        From: <sip:a@127.0.0.1>;tag=1\r\n\
        To: <sip:echo@127.0.0.1;tag=uri-param>\r\n\
        User-Agent:  friendly-scanner \r\n\
        Call-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn reads_method_agent_and_dialog() {
        assert_eq!(
            peek(INVITE),
            Peek::Request {
                kind: Kind::Invite,
                user_agent: Some(&b"friendly-scanner"[..]),
                in_dialog: false,
            }
        );
        let bye = b"BYE sip:x SIP/2.0\r\nt: <sip:x>;tag=abc\r\n\r\nUser-Agent: body\r\n";
        assert_eq!(
            peek(bye),
            Peek::Request {
                kind: Kind::Other,
                user_agent: None,
                in_dialog: true,
            }
        );
        let bare = b"OPTIONS sip:x SIP/2.0\nTO: sip:x;TAG=9\n\n";
        assert!(matches!(
            peek(bare),
            Peek::Request {
                kind: Kind::Options,
                in_dialog: true,
                ..
            }
        ));
        let empty_tag = b"OPTIONS sip:x SIP/2.0\r\nTo: <sip:x>;tag=\r\n\r\n";
        assert!(matches!(
            peek(empty_tag),
            Peek::Request {
                in_dialog: false,
                ..
            }
        ));
    }

    #[test]
    fn responses_keepalives_and_garbage() {
        assert_eq!(peek(b"SIP/2.0 200 OK\r\n\r\n"), Peek::Response);
        assert_eq!(peek(b"\r\n\r\n"), Peek::KeepAlive);
        assert!(matches!(
            peek(b"\x00\xff garbage"),
            Peek::Request {
                kind: Kind::Other,
                user_agent: None,
                in_dialog: false
            }
        ));
        assert!(matches!(
            peek(b"invite sip:x SIP/2.0\r\n\r\n"),
            Peek::Request {
                kind: Kind::Other,
                ..
            }
        ));
    }

    #[test]
    fn last_header_of_a_name_in_the_headers_only() {
        let m = b"INVITE sip:x SIP/2.0\r\nx-switchboard-source: 192.0.2.1:5060\r\n\
            Via: a\r\nX-Switchboard-Source :  127.0.0.1:7 \r\n\r\nX-Switchboard-Source: body";
        assert_eq!(
            last_header(m, b"X-Switchboard-Source"),
            Some(&b"127.0.0.1:7"[..])
        );
        assert_eq!(last_header(m, b"X-Other"), None);
        assert_eq!(
            last_header(
                b"X-Switchboard-Source: 1.2.3.4 SIP/2.0\r\n\r\n",
                b"X-Switchboard-Source"
            ),
            None,
            "the start line is no header"
        );
    }

    #[test]
    fn substring_ignoring_case() {
        assert!(contains_ignore_case(
            b"Friendly-Scanner 1.0",
            b"friendly-scanner"
        ));
        assert!(contains_ignore_case(b"x", b""));
        assert!(!contains_ignore_case(b"sipvicio", b"sipvicious"));
    }
}
