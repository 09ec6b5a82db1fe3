//! The SDP data model: a session description, its media descriptions and typed views of the
//! attributes the negotiator needs. Unknown lines and attributes are kept verbatim so that a
//! description survives a parse/print round trip.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

pub use crate::rtp::types::PayloadType;

/// A complete session description (RFC 8866 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `o=`: who created the description and its version.
    pub origin: Origin,
    /// `s=`: the session name (often `-`).
    pub session_name: String,
    /// Session-level `c=`, the default for media without their own.
    pub connection: Option<Connection>,
    /// Session-level `b=` lines.
    pub bandwidths: Vec<Bandwidth>,
    /// `t=` lines, each with its `r=` repeats.
    pub timing: Vec<Timing>,
    /// Session-level attributes in order.
    pub attributes: Attributes,
    /// Other session-level lines (`i=`, `u=`, `e=`, `p=`, `z=`, `k=`, unknown types).
    pub extra_lines: Vec<ExtraLine>,
    /// The `m=` sections in order.
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// A minimal description with `t=0 0` and no media.
    pub fn new(origin: Origin, session_name: impl Into<String>) -> Self {
        SessionDescription {
            origin,
            session_name: session_name.into(),
            connection: None,
            bandwidths: Vec::new(),
            timing: vec![Timing::default()],
            attributes: Attributes::default(),
            extra_lines: Vec::new(),
            media: Vec::new(),
        }
    }

    /// The connection that applies to `media`: its own `c=`, else the session's.
    pub fn connection_for<'a>(&'a self, media: &'a MediaDescription) -> Option<&'a Connection> {
        media.connection.as_ref().or(self.connection.as_ref())
    }

    /// The direction that applies to `media`: its own attribute, else the session's, else
    /// `sendrecv` (RFC 8866 §6.7).
    pub fn direction_for(&self, media: &MediaDescription) -> Direction {
        media
            .attributes
            .direction()
            .or_else(|| self.attributes.direction())
            .unwrap_or(Direction::SendRecv)
    }
}

/// The `o=` line (RFC 8866 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The user's login, or `-`.
    pub username: String,
    /// Numeric session id, unique per creator.
    pub session_id: u64,
    /// Incremented each time the description changes (RFC 3264 §8).
    pub session_version: u64,
    /// Network type, `IN` in practice.
    pub nettype: String,
    /// Address type, `IP4` or `IP6` in practice.
    pub addrtype: String,
    /// The creator's address or host name (not validated: host names are common here).
    pub address: String,
}

impl Origin {
    /// An `IN IP4`/`IN IP6` origin for `address`.
    pub fn new(
        username: impl Into<String>,
        session_id: u64,
        session_version: u64,
        address: IpAddr,
    ) -> Self {
        Origin {
            username: username.into(),
            session_id,
            session_version,
            nettype: "IN".to_owned(),
            addrtype: addrtype_of(address).to_owned(),
            address: address.to_string(),
        }
    }
}

fn addrtype_of(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

/// A `c=` line (RFC 8866 §5.7). For `IN IP4`/`IN IP6` the parser has checked that the address
/// is an IP literal of that family, optionally followed by multicast `/ttl` or `/count` suffixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Network type, `IN` in practice.
    pub nettype: String,
    /// Address type, `IP4` or `IP6` in practice.
    pub addrtype: String,
    /// The address as written, including any `/ttl/count` suffix.
    pub address: String,
}

impl Connection {
    /// An `IN IP4`/`IN IP6` connection for a unicast address.
    pub fn new(address: IpAddr) -> Self {
        Connection {
            nettype: "IN".to_owned(),
            addrtype: addrtype_of(address).to_owned(),
            address: address.to_string(),
        }
    }

    /// The IP address, if this is an `IN` connection with an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        if !self.nettype.eq_ignore_ascii_case("IN") {
            return None;
        }
        let host = self.address.split('/').next().unwrap_or_default();
        if self.addrtype.eq_ignore_ascii_case("IP4") {
            host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
        } else if self.addrtype.eq_ignore_ascii_case("IP6") {
            host.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
        } else {
            None
        }
    }

    /// Whether the address is `0.0.0.0` (or `::`), the RFC 2543 way of putting a call on hold.
    pub fn is_unspecified(&self) -> bool {
        self.ip().is_some_and(|ip| ip.is_unspecified())
    }
}

/// A `b=` line (RFC 8866 §5.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    /// `CT`, `AS`, `TIAS`, …
    pub bwtype: String,
    /// The value, in the unit the type defines (kbit/s for `AS` and `CT`).
    pub bandwidth: u64,
}

/// A `t=` line with its `r=` repeat lines (RFC 8866 §5.9, §5.10).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Timing {
    /// Start time (NTP seconds), 0 for unbounded.
    pub start: u64,
    /// Stop time (NTP seconds), 0 for unbounded.
    pub stop: u64,
    /// The values of the `r=` lines that follow, verbatim.
    pub repeats: Vec<String>,
}

/// A line the model has no field for, kept so it can be printed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraLine {
    /// The line's type letter.
    pub kind: char,
    /// Everything after `=`.
    pub value: String,
}

impl ExtraLine {
    /// Where the printer places this line: 0 = right after `s=` / `m=` (`i=`, `u=`, `e=`,
    /// `p=`), 1 = just before the attributes (`z=`, `k=` and unknown types).
    pub(crate) fn rank(&self) -> u8 {
        match self.kind {
            'i' | 'u' | 'e' | 'p' => 0,
            _ => 1,
        }
    }
}

/// The media type of an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// `audio`
    Audio,
    /// `video`
    Video,
    /// `text`
    Text,
    /// `application`
    Application,
    /// `message`
    Message,
    /// Any other token; never one of the names above (use [`MediaKind::from`]).
    Other(String),
}

impl MediaKind {
    /// The token as written in `m=`.
    pub fn as_str(&self) -> &str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Text => "text",
            MediaKind::Application => "application",
            MediaKind::Message => "message",
            MediaKind::Other(s) => s,
        }
    }
}

impl From<&str> for MediaKind {
    fn from(s: &str) -> Self {
        match s {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            "text" => MediaKind::Text,
            "application" => MediaKind::Application,
            "message" => MediaKind::Message,
            other => MediaKind::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `m=` section (RFC 8866 §5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, …
    pub kind: MediaKind,
    /// Transport port; 0 means the stream is rejected or disabled.
    pub port: u16,
    /// The `/<number of ports>` suffix, if present.
    pub port_count: Option<u16>,
    /// Transport protocol, e.g. `RTP/AVP`.
    pub proto: String,
    /// Media formats; for RTP protocols, payload types already checked to be 0..=127.
    pub formats: Vec<String>,
    /// Media-level `c=`, overriding the session's.
    pub connection: Option<Connection>,
    /// Media-level `b=` lines.
    pub bandwidths: Vec<Bandwidth>,
    /// Media-level attributes in order.
    pub attributes: Attributes,
    /// Other media-level lines (`i=`, `k=`, unknown types).
    pub extra_lines: Vec<ExtraLine>,
}

impl MediaDescription {
    /// An `m=` section with no connection, bandwidths or attributes.
    pub fn new(kind: MediaKind, port: u16, proto: impl Into<String>, formats: Vec<String>) -> Self {
        MediaDescription {
            kind,
            port,
            port_count: None,
            proto: proto.into(),
            formats,
            connection: None,
            bandwidths: Vec::new(),
            attributes: Attributes::default(),
            extra_lines: Vec::new(),
        }
    }

    /// Whether the formats are RTP payload types (the proto names an RTP profile).
    pub fn is_rtp(&self) -> bool {
        is_rtp_proto(&self.proto)
    }

    /// The formats that parse as payload types, in order.
    pub fn payload_types(&self) -> impl Iterator<Item = PayloadType> + '_ {
        self.formats.iter().filter_map(|f| f.parse().ok())
    }
}

pub(crate) fn is_rtp_proto(proto: &str) -> bool {
    proto
        .split('/')
        .any(|part| part.eq_ignore_ascii_case("RTP"))
}

/// One `a=` line: `a=name` (a flag) or `a=name:value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute name (never contains `:`).
    pub name: String,
    /// The value after the first `:`, if any.
    pub value: Option<String>,
}

impl Attribute {
    /// A flag attribute such as `a=rtcp-mux`.
    pub fn flag(name: impl Into<String>) -> Self {
        Attribute {
            name: name.into(),
            value: None,
        }
    }

    /// A valued attribute such as `a=ptime:20`.
    pub fn with_value(name: impl Into<String>, value: impl Into<String>) -> Self {
        Attribute {
            name: name.into(),
            value: Some(value.into()),
        }
    }
}

impl From<Direction> for Attribute {
    fn from(d: Direction) -> Self {
        Attribute::flag(d.as_str())
    }
}

impl From<&RtpMap> for Attribute {
    fn from(m: &RtpMap) -> Self {
        Attribute::with_value("rtpmap", m.to_string())
    }
}

/// An ordered list of attributes with typed accessors.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes(pub Vec<Attribute>);

impl Attributes {
    /// All attributes in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Attribute> {
        self.0.iter()
    }

    /// Appends an attribute.
    pub fn push(&mut self, attribute: Attribute) {
        self.0.push(attribute);
    }

    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of the first attribute called `name` (`Some(None)` for a flag).
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_deref())
    }

    /// The values of every attribute called `name` that has one.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |a| a.name == name)
            .filter_map(|a| a.value.as_deref())
    }

    /// Whether an attribute called `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|a| a.name == name)
    }

    /// Every well-formed `a=rtpmap`, in order.
    pub fn rtpmaps(&self) -> impl Iterator<Item = RtpMap> + '_ {
        self.values("rtpmap").filter_map(|v| v.parse().ok())
    }

    /// The `a=rtpmap` for `pt`, if any.
    pub fn rtpmap(&self, pt: PayloadType) -> Option<RtpMap> {
        self.rtpmaps().find(|m| m.payload_type == pt)
    }

    /// The parameters of the `a=fmtp` for `pt`, if any.
    pub fn fmtp(&self, pt: PayloadType) -> Option<&str> {
        self.values("fmtp").find_map(|v| {
            let (head, params) = v.split_once(' ').unwrap_or((v, ""));
            (head.parse::<PayloadType>() == Ok(pt)).then_some(params.trim_start())
        })
    }

    /// `a=ptime` in milliseconds, if present and numeric.
    pub fn ptime(&self) -> Option<u32> {
        self.get("ptime").flatten().and_then(parse_ms)
    }

    /// `a=maxptime` in milliseconds, if present and numeric.
    pub fn maxptime(&self) -> Option<u32> {
        self.get("maxptime").flatten().and_then(parse_ms)
    }

    /// The last direction attribute, if any (RFC 8866 §6.7).
    pub fn direction(&self) -> Option<Direction> {
        self.0
            .iter()
            .rev()
            .filter(|a| a.value.is_none())
            .find_map(|a| a.name.parse().ok())
    }

    /// Whether `a=rtcp-mux` is present (RFC 5761).
    pub fn rtcp_mux(&self) -> bool {
        self.has("rtcp-mux")
    }

    /// `a=rtcp` (RFC 3605), if present and well formed.
    pub fn rtcp(&self) -> Option<Rtcp> {
        self.get("rtcp").flatten().and_then(|v| v.parse().ok())
    }

    /// Every well-formed `a=extmap` (RFC 8285), in order.
    pub fn extmaps(&self) -> impl Iterator<Item = ExtMap> + '_ {
        self.values("extmap").filter_map(|v| v.parse().ok())
    }
}

// Some stacks write fractional ptimes ("20.0"); the integer part is what matters.
fn parse_ms(v: &str) -> Option<u32> {
    let v = v.trim();
    let int = v.split_once('.').map_or(v, |(i, _)| i);
    int.parse().ok()
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = &'a Attribute;
    type IntoIter = std::slice::Iter<'a, Attribute>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A stream direction (RFC 8866 §6.7, RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Send and receive.
    SendRecv,
    /// Send only.
    SendOnly,
    /// Receive only.
    RecvOnly,
    /// Neither send nor receive.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The same stream seen from the other end: sendonly ↔ recvonly.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// Whether media flows from the side holding this direction.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether media flows to the side holding this direction.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction with the given send and receive capabilities.
    pub fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sendrecv" => Ok(Direction::SendRecv),
            "sendonly" => Ok(Direction::SendOnly),
            "recvonly" => Ok(Direction::RecvOnly),
            "inactive" => Ok(Direction::Inactive),
            _ => Err(()),
        }
    }
}

/// `a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]` (RFC 8866 §6.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type being mapped.
    pub payload_type: PayloadType,
    /// Encoding name as written (compare case-insensitively).
    pub encoding: String,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Channel count for audio, if written.
    pub channels: Option<u16>,
}

impl fmt::Display for RtpMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.payload_type, self.encoding, self.clock_rate
        )?;
        if let Some(ch) = self.channels {
            write!(f, "/{ch}")?;
        }
        Ok(())
    }
}

/// Why an `a=rtpmap` value did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpMapError {
    /// The payload type is not a number in 0..=127.
    #[error("invalid payload type")]
    PayloadType,
    /// The rest is not `<encoding>/<clock rate>[/<channels>]`.
    #[error("expected <encoding>/<clock rate>[/<channels>]")]
    Encoding,
}

impl FromStr for RtpMap {
    type Err = RtpMapError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (pt, rest) = s.split_once(' ').ok_or(RtpMapError::Encoding)?;
        let payload_type = pt.parse().map_err(|_| RtpMapError::PayloadType)?;
        let mut parts = rest.trim().split('/');
        let encoding = parts.next().unwrap_or_default();
        if encoding.is_empty() || encoding.contains(char::is_whitespace) {
            return Err(RtpMapError::Encoding);
        }
        let clock_rate = parts
            .next()
            .and_then(|r| r.parse().ok())
            .ok_or(RtpMapError::Encoding)?;
        let channels = match parts.next() {
            Some(c) => Some(c.parse().map_err(|_| RtpMapError::Encoding)?),
            None => None,
        };
        if parts.next().is_some() {
            return Err(RtpMapError::Encoding);
        }
        Ok(RtpMap {
            payload_type,
            encoding: encoding.to_owned(),
            clock_rate,
            channels,
        })
    }
}

/// The URI of the RFC 6464 client-to-mixer audio level header extension.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// `a=extmap:<id>[/<direction>] <uri> [<attributes>]` (RFC 8285 §5): which header extension
/// element id stands for which extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtMap {
    /// The element id: 1..=14 fit the one-byte form, up to 255 the two-byte form; 4096..=4351
    /// may only be offered, for the answerer to pick one (RFC 8285 §6).
    pub id: u16,
    /// Which way the extension flows, from the side writing the attribute (absent: both).
    pub direction: Option<Direction>,
    /// The extension's URI.
    pub uri: String,
    /// Extension attributes after the URI (RFC 6464: `vad=on` or `vad=off`).
    pub attributes: Option<String>,
}

impl ExtMap {
    /// Whether the id can be written in the one-byte form, the one every sender supports.
    pub fn is_one_byte(&self) -> bool {
        (1..=14).contains(&self.id)
    }

    /// Whether this maps the RFC 6464 audio level extension.
    pub fn is_audio_level(&self) -> bool {
        self.uri.eq_ignore_ascii_case(AUDIO_LEVEL_URI)
    }

    /// The direction that applies: sendrecv when none is written.
    pub fn flow(&self) -> Direction {
        self.direction.unwrap_or(Direction::SendRecv)
    }
}

/// Why an `a=extmap` value did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtMapError {
    /// The id is not a number in 1..=255 or 4096..=4351.
    #[error("invalid extmap id")]
    Id,
    /// The direction after `/` is not one of the four.
    #[error("invalid extmap direction")]
    Direction,
    /// No URI follows the id.
    #[error("extmap without a URI")]
    Uri,
}

impl FromStr for ExtMap {
    type Err = ExtMapError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ' ');
        let head = parts.next().unwrap_or_default();
        let (id, direction) = match head.split_once('/') {
            Some((id, d)) => (id, Some(d.parse().map_err(|_| ExtMapError::Direction)?)),
            None => (head, None),
        };
        let id: u16 = id.parse().map_err(|_| ExtMapError::Id)?;
        if !(1..=255).contains(&id) && !(4096..=4351).contains(&id) {
            return Err(ExtMapError::Id);
        }
        let uri = parts
            .next()
            .filter(|u| !u.is_empty())
            .ok_or(ExtMapError::Uri)?;
        let attributes = parts
            .next()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned);
        Ok(ExtMap {
            id,
            direction,
            uri: uri.to_owned(),
            attributes,
        })
    }
}

impl fmt::Display for ExtMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id)?;
        if let Some(d) = self.direction {
            write!(f, "/{d}")?;
        }
        write!(f, " {}", self.uri)?;
        if let Some(a) = &self.attributes {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

impl From<&ExtMap> for Attribute {
    fn from(m: &ExtMap) -> Self {
        Attribute::with_value("extmap", m.to_string())
    }
}

/// `a=rtcp:<port> [<nettype> <addrtype> <address>]` (RFC 3605).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtcp {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address, when it differs from the media's `c=`.
    pub connection: Option<Connection>,
}

impl FromStr for Rtcp {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut it = s.split_whitespace();
        let port = it.next().ok_or(())?.parse().map_err(|_| ())?;
        let connection = match (it.next(), it.next(), it.next()) {
            (None, _, _) => None,
            (Some(n), Some(a), Some(addr)) => Some(Connection {
                nettype: n.to_owned(),
                addrtype: a.to_owned(),
                address: addr.to_owned(),
            }),
            _ => return Err(()),
        };
        if it.next().is_some() {
            return Err(());
        }
        Ok(Rtcp { port, connection })
    }
}

impl fmt::Display for Rtcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.port)?;
        if let Some(c) = &self.connection {
            write!(f, " {} {} {}", c.nettype, c.addrtype, c.address)?;
        }
        Ok(())
    }
}
