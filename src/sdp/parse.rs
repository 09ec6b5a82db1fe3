//! Text ↔ model: the SDP parser ([`parse`]) and the canonical printer (`Display` for
//! [`SessionDescription`]).
//!
//! The parser is lenient where real stacks are sloppy (LF or CRLF, trailing whitespace, blank
//! lines, unknown line types and attributes) and strict where a wrong guess would break media
//! (numbers, addresses, payload types). Unknown lines are kept; the printer writes them back at
//! their RFC 8866 position, so `parse(print(x)) == x`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::model::{
    is_rtp_proto, Attribute, Attributes, Bandwidth, Connection, ExtraLine, MediaDescription,
    MediaKind, Origin, PayloadType, RtpMap, RtpMapError, SessionDescription, Timing,
};

/// A description that could not be parsed, with the 1-based line where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SDP line {line}: {kind}")]
pub struct SdpError {
    /// 1-based line number (for a missing line: where it was expected).
    pub line: usize,
    /// What was wrong.
    pub kind: SdpErrorKind,
}

/// What was wrong with a description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpErrorKind {
    /// The line is not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// The line is not `<letter>=<value>`.
    #[error("expected <type>=<value>")]
    NotATypeValueLine,
    /// The first line is not `v=`.
    #[error("the description must start with v=0")]
    MissingVersion,
    /// `v=` is not 0.
    #[error("unsupported SDP version {0:?}")]
    UnsupportedVersion(String),
    /// No `o=` line.
    #[error("missing o= line")]
    MissingOrigin,
    /// No `s=` line.
    #[error("missing s= line")]
    MissingSessionName,
    /// A line that may appear once appeared again.
    #[error("more than one {0}= line")]
    Duplicate(char),
    /// A session-only line inside an `m=` section.
    #[error("{0}= line inside a media section")]
    NotInMedia(char),
    /// A bad `o=` line.
    #[error("malformed o= line: {0}")]
    MalformedOrigin(&'static str),
    /// A bad `c=` line.
    #[error("malformed c= line: {0}")]
    MalformedConnection(String),
    /// A bad `m=` line.
    #[error("malformed m= line: {0}")]
    MalformedMedia(&'static str),
    /// A bad `b=` line.
    #[error("malformed b= line: expected <type>:<number>")]
    MalformedBandwidth,
    /// A bad `t=` line.
    #[error("malformed t= line: expected <start> <stop>")]
    MalformedTiming,
    /// An `r=` line with no `t=` before it.
    #[error("r= line before any t= line")]
    RepeatWithoutTiming,
    /// A port that is not a number in 0..=65535.
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    /// A payload type that is not a number in 0..=127.
    #[error("invalid payload type {0:?}")]
    InvalidPayloadType(String),
    /// A bad `a=` line.
    #[error("malformed a= line: {0}")]
    MalformedAttribute(&'static str),
}

// Error messages quote input; keep a hostile line from producing a huge message.
fn snippet(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses an SDP body. Accepts CRLF or LF line endings, trailing whitespace and blank lines;
/// never panics.
pub fn parse(text: &[u8]) -> Result<SessionDescription, SdpError> {
    let mut p = Parser::default();
    let mut line_no = 0;
    for raw in text.split(|&b| b == b'\n') {
        line_no += 1;
        let line = std::str::from_utf8(raw).map_err(|_| SdpError {
            line: line_no,
            kind: SdpErrorKind::NotUtf8,
        })?;
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        p.line(line, line_no).map_err(|kind| SdpError {
            line: line_no,
            kind,
        })?;
    }
    p.finish(line_no.max(1))
}

#[derive(Default)]
struct Parser {
    seen_version: bool,
    origin: Option<Origin>,
    session_name: Option<String>,
    connection: Option<Connection>,
    bandwidths: Vec<Bandwidth>,
    timing: Vec<Timing>,
    attributes: Attributes,
    extra_lines: Vec<ExtraLine>,
    media: Vec<MediaDescription>,
    /// Line of the first `m=`, where a missing `o=`/`s=` is reported.
    first_media_line: Option<usize>,
}

impl Parser {
    fn line(&mut self, line: &str, line_no: usize) -> Result<(), SdpErrorKind> {
        let bytes = line.as_bytes();
        if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_alphabetic() {
            if !self.seen_version {
                return Err(SdpErrorKind::MissingVersion);
            }
            return Err(SdpErrorKind::NotATypeValueLine);
        }
        let kind = char::from(bytes[0]);
        // Both leading bytes are ASCII, so index 2 is a char boundary.
        let value = &line[2..];

        if !self.seen_version {
            if kind != 'v' {
                return Err(SdpErrorKind::MissingVersion);
            }
            if value.trim() != "0" {
                return Err(SdpErrorKind::UnsupportedVersion(snippet(value)));
            }
            self.seen_version = true;
            return Ok(());
        }

        let in_media = !self.media.is_empty();
        match kind {
            'v' => Err(SdpErrorKind::Duplicate('v')),
            'o' | 's' if in_media => Err(SdpErrorKind::NotInMedia(kind)),
            'o' => {
                if self.origin.is_some() {
                    return Err(SdpErrorKind::Duplicate('o'));
                }
                self.origin = Some(parse_origin(value)?);
                Ok(())
            }
            's' => {
                if self.session_name.is_some() {
                    return Err(SdpErrorKind::Duplicate('s'));
                }
                self.session_name = Some(value.to_owned());
                Ok(())
            }
            'c' => {
                let conn = parse_connection(value)?;
                let slot = match self.media.last_mut() {
                    Some(m) => &mut m.connection,
                    None => &mut self.connection,
                };
                if slot.is_some() {
                    return Err(SdpErrorKind::Duplicate('c'));
                }
                *slot = Some(conn);
                Ok(())
            }
            'b' => {
                let bw = parse_bandwidth(value)?;
                match self.media.last_mut() {
                    Some(m) => m.bandwidths.push(bw),
                    None => self.bandwidths.push(bw),
                }
                Ok(())
            }
            't' if !in_media => {
                self.timing.push(parse_timing(value)?);
                Ok(())
            }
            'r' if !in_media => {
                let t = self
                    .timing
                    .last_mut()
                    .ok_or(SdpErrorKind::RepeatWithoutTiming)?;
                t.repeats.push(value.to_owned());
                Ok(())
            }
            'a' => {
                let attr = parse_attribute(value)?;
                match self.media.last_mut() {
                    Some(m) => m.attributes.push(attr),
                    None => self.attributes.push(attr),
                }
                Ok(())
            }
            'm' => {
                self.first_media_line.get_or_insert(line_no);
                self.media.push(parse_media(value)?);
                Ok(())
            }
            _ => {
                let extra = ExtraLine {
                    kind,
                    value: value.to_owned(),
                };
                match self.media.last_mut() {
                    Some(m) => m.extra_lines.push(extra),
                    None => self.extra_lines.push(extra),
                }
                Ok(())
            }
        }
    }

    fn finish(mut self, last_line: usize) -> Result<SessionDescription, SdpError> {
        let missing = |kind| SdpError {
            line: self.first_media_line.unwrap_or(last_line),
            kind,
        };
        if !self.seen_version {
            return Err(SdpError {
                line: 1,
                kind: SdpErrorKind::MissingVersion,
            });
        }
        let origin = self
            .origin
            .ok_or_else(|| missing(SdpErrorKind::MissingOrigin))?;
        let session_name = self
            .session_name
            .ok_or_else(|| missing(SdpErrorKind::MissingSessionName))?;
        // The printer groups unknown lines by position; sorting here (stably) makes the
        // parsed form already canonical, so a round trip is exact.
        self.extra_lines.sort_by_key(ExtraLine::rank);
        for m in &mut self.media {
            m.extra_lines.sort_by_key(ExtraLine::rank);
        }
        Ok(SessionDescription {
            origin,
            session_name,
            connection: self.connection,
            bandwidths: self.bandwidths,
            timing: self.timing,
            attributes: self.attributes,
            extra_lines: self.extra_lines,
            media: self.media,
        })
    }
}

fn parse_origin(value: &str) -> Result<Origin, SdpErrorKind> {
    let f: Vec<&str> = value.split_whitespace().collect();
    let [username, id, version, nettype, addrtype, address] = f[..] else {
        return Err(SdpErrorKind::MalformedOrigin(
            "expected <username> <sess-id> <sess-version> <nettype> <addrtype> <address>",
        ));
    };
    Ok(Origin {
        username: username.to_owned(),
        session_id: digits(id)
            .ok_or(SdpErrorKind::MalformedOrigin("session id is not a number"))?,
        session_version: digits(version).ok_or(SdpErrorKind::MalformedOrigin(
            "session version is not a number",
        ))?,
        nettype: nettype.to_owned(),
        addrtype: addrtype.to_owned(),
        address: address.to_owned(),
    })
}

/// Parses the value of a `c=` line. For `IN IP4` / `IN IP6` the address must be an IP literal
/// of that family: host names are legal SDP, but a media server cannot resolve them in the
/// middle of offer/answer, and accepting one would only fail later and less clearly.
pub(crate) fn parse_connection(value: &str) -> Result<Connection, SdpErrorKind> {
    let f: Vec<&str> = value.split_whitespace().collect();
    let [nettype, addrtype, address] = f[..] else {
        return Err(SdpErrorKind::MalformedConnection(
            "expected <nettype> <addrtype> <address>".to_owned(),
        ));
    };
    if nettype.eq_ignore_ascii_case("IN") {
        let mut parts = address.split('/');
        let host = parts.next().unwrap_or_default();
        let ok = if addrtype.eq_ignore_ascii_case("IP4") {
            host.parse::<Ipv4Addr>().is_ok()
        } else if addrtype.eq_ignore_ascii_case("IP6") {
            host.parse::<Ipv6Addr>().is_ok()
        } else {
            true
        };
        if !ok {
            return Err(SdpErrorKind::MalformedConnection(format!(
                "{:?} is not an {} address",
                snippet(host),
                snippet(addrtype)
            )));
        }
        if parts.any(|p| digits::<u32>(p).is_none()) {
            return Err(SdpErrorKind::MalformedConnection(format!(
                "bad multicast suffix in {:?}",
                snippet(address)
            )));
        }
    }
    Ok(Connection {
        nettype: nettype.to_owned(),
        addrtype: addrtype.to_owned(),
        address: address.to_owned(),
    })
}

fn parse_bandwidth(value: &str) -> Result<Bandwidth, SdpErrorKind> {
    let (bwtype, bw) = value
        .split_once(':')
        .ok_or(SdpErrorKind::MalformedBandwidth)?;
    if bwtype.is_empty() || bwtype.contains(char::is_whitespace) {
        return Err(SdpErrorKind::MalformedBandwidth);
    }
    Ok(Bandwidth {
        bwtype: bwtype.to_owned(),
        bandwidth: digits(bw.trim()).ok_or(SdpErrorKind::MalformedBandwidth)?,
    })
}

fn parse_timing(value: &str) -> Result<Timing, SdpErrorKind> {
    let f: Vec<&str> = value.split_whitespace().collect();
    let [start, stop] = f[..] else {
        return Err(SdpErrorKind::MalformedTiming);
    };
    Ok(Timing {
        start: digits(start).ok_or(SdpErrorKind::MalformedTiming)?,
        stop: digits(stop).ok_or(SdpErrorKind::MalformedTiming)?,
        repeats: Vec::new(),
    })
}

fn parse_attribute(value: &str) -> Result<Attribute, SdpErrorKind> {
    let (name, val) = match value.split_once(':') {
        Some((n, v)) => (n, Some(v)),
        None => (value, None),
    };
    if name.is_empty() {
        return Err(SdpErrorKind::MalformedAttribute("empty attribute name"));
    }
    // rtpmap and fmtp are checked here so that the negotiator can trust them.
    match (name, val) {
        ("rtpmap", v) => match v.unwrap_or_default().parse::<RtpMap>() {
            Ok(_) => {}
            Err(RtpMapError::PayloadType) => {
                let pt = v.unwrap_or_default().split(' ').next().unwrap_or_default();
                return Err(SdpErrorKind::InvalidPayloadType(snippet(pt)));
            }
            Err(RtpMapError::Encoding) => {
                return Err(SdpErrorKind::MalformedAttribute(
                    "rtpmap: expected <pt> <encoding>/<clock rate>[/<channels>]",
                ));
            }
        },
        ("fmtp", v) => {
            let pt = v.unwrap_or_default().split(' ').next().unwrap_or_default();
            if pt.parse::<PayloadType>().is_err() {
                return Err(SdpErrorKind::InvalidPayloadType(snippet(pt)));
            }
        }
        _ => {}
    }
    Ok(Attribute {
        name: name.to_owned(),
        value: val.map(str::to_owned),
    })
}

fn parse_media(value: &str) -> Result<MediaDescription, SdpErrorKind> {
    let mut f = value.split_whitespace();
    let (Some(kind), Some(port), Some(proto)) = (f.next(), f.next(), f.next()) else {
        return Err(SdpErrorKind::MalformedMedia(
            "expected <media> <port> <proto> <fmt> ...",
        ));
    };
    let (port, port_count) = match port.split_once('/') {
        Some((p, n)) => (p, Some(n)),
        None => (port, None),
    };
    let port = digits(port).ok_or_else(|| SdpErrorKind::InvalidPort(snippet(port)))?;
    let port_count = match port_count {
        Some(n) => Some(digits(n).ok_or_else(|| SdpErrorKind::InvalidPort(snippet(n)))?),
        None => None,
    };
    let formats: Vec<String> = f.map(str::to_owned).collect();
    if is_rtp_proto(proto) {
        if let Some(bad) = formats.iter().find(|f| f.parse::<PayloadType>().is_err()) {
            return Err(SdpErrorKind::InvalidPayloadType(snippet(bad)));
        }
    }
    Ok(MediaDescription {
        kind: MediaKind::from(kind),
        port,
        port_count,
        proto: proto.to_owned(),
        formats,
        connection: None,
        bandwidths: Vec::new(),
        attributes: Attributes::default(),
        extra_lines: Vec::new(),
    })
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.nettype, self.addrtype, self.address)
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}:{}", self.name, v),
            None => f.write_str(&self.name),
        }
    }
}

fn write_extras(f: &mut fmt::Formatter<'_>, extras: &[ExtraLine], rank: u8) -> fmt::Result {
    for e in extras.iter().filter(|e| e.rank() == rank) {
        write!(f, "{}={}\r\n", e.kind, e.value)?;
    }
    Ok(())
}

fn write_common(
    f: &mut fmt::Formatter<'_>,
    connection: Option<&Connection>,
    bandwidths: &[Bandwidth],
) -> fmt::Result {
    if let Some(c) = connection {
        write!(f, "c={c}\r\n")?;
    }
    for b in bandwidths {
        write!(f, "b={}:{}\r\n", b.bwtype, b.bandwidth)?;
    }
    Ok(())
}

fn write_attributes(f: &mut fmt::Formatter<'_>, attributes: &Attributes) -> fmt::Result {
    for a in attributes {
        write!(f, "a={a}\r\n")?;
    }
    Ok(())
}

impl fmt::Display for MediaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.kind, self.port)?;
        if let Some(n) = self.port_count {
            write!(f, "/{n}")?;
        }
        write!(f, " {}", self.proto)?;
        for fmt in &self.formats {
            write!(f, " {fmt}")?;
        }
        f.write_str("\r\n")?;
        write_extras(f, &self.extra_lines, 0)?;
        write_common(f, self.connection.as_ref(), &self.bandwidths)?;
        write_extras(f, &self.extra_lines, 1)?;
        write_attributes(f, &self.attributes)
    }
}

/// Prints canonical SDP: RFC 8866 line order, CRLF line endings.
impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        f.write_str("v=0\r\n")?;
        write!(
            f,
            "o={} {} {} {} {} {}\r\n",
            o.username, o.session_id, o.session_version, o.nettype, o.addrtype, o.address
        )?;
        write!(f, "s={}\r\n", self.session_name)?;
        write_extras(f, &self.extra_lines, 0)?;
        write_common(f, self.connection.as_ref(), &self.bandwidths)?;
        for t in &self.timing {
            write!(f, "t={} {}\r\n", t.start, t.stop)?;
            for r in &t.repeats {
                write!(f, "r={r}\r\n")?;
            }
        }
        write_extras(f, &self.extra_lines, 1)?;
        write_attributes(f, &self.attributes)?;
        for m in &self.media {
            write!(f, "{m}")?;
        }
        Ok(())
    }
}
