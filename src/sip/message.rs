//! The SIP message model: rsipstack's parser behind one entry point ([`classify`]) that turns
//! bytes into a checked request or response, a ready-made error answer, or a reason to drop.
//! Also builds responses. Nothing else in the crate names the parser crate directly.

use std::fmt::Write as _;

pub use rsipstack::sip::{Header, Headers, Method, Request, Response, SipMessage, Uri};

use rsipstack::sip::prelude::*;

use super::ids::Ids;
use crate::error::{Refusal, SipStatus};

/// The fields every request and response must carry, read and checked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Essentials {
    /// Call-ID value.
    pub call_id: String,
    /// CSeq sequence number.
    pub cseq: u32,
    /// CSeq method.
    pub cseq_method: Method,
    /// From tag (the remote tag for requests we receive).
    pub from_tag: Option<String>,
    /// To tag (absent on a dialog-creating request).
    pub to_tag: Option<String>,
    /// Top Via branch parameter.
    pub branch: Option<String>,
    /// Top Via sent-by, lowercased `host[:port]`.
    pub sent_by: String,
}

impl Essentials {
    /// True when the top Via branch carries the RFC 3261 magic cookie.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch
            .as_deref()
            .is_some_and(|b| b.starts_with("z9hG4bK"))
    }
}

/// A request that parsed and whose mandatory headers are sound.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    /// The message as parsed.
    pub req: Request,
    /// Its checked mandatory fields.
    pub ess: Essentials,
}

/// A response that parsed and whose mandatory headers are sound.
#[derive(Debug, Clone)]
pub struct ParsedResponse {
    /// The message as parsed.
    pub resp: Response,
    /// Status code.
    pub code: u16,
    /// Its checked mandatory fields.
    pub ess: Essentials,
}

/// What to do with bytes that arrived from the network.
#[derive(Debug)]
pub enum Inbound {
    /// A well-formed request.
    Request(Box<ParsedRequest>),
    /// A well-formed response.
    Response(Box<ParsedResponse>),
    /// A request we must refuse; `response` is the complete answer to send back.
    Reject {
        /// Serialized response.
        response: Vec<u8>,
        /// Its status code.
        code: u16,
        /// Why, for logs.
        reason: String,
    },
    /// Nothing to answer (unparseable, a response we cannot match, a keep-alive).
    Drop {
        /// Why, for logs.
        reason: String,
    },
}

/// Parses and checks one message. `stream` is true for messages framed off a TCP stream,
/// where the framer already cut the body to Content-Length. The To tag of a refusal comes
/// from entropy; [`classify_with`] takes it from a given source.
pub fn classify(bytes: &[u8], stream: bool) -> Inbound {
    classify_with(bytes, stream, &mut Ids::from_entropy())
}

/// [`classify`], with the To tag of a refusal drawn from `ids`.
pub fn classify_with(bytes: &[u8], stream: bool, ids: &mut Ids) -> Inbound {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Inbound::Drop {
            reason: "keep-alive".into(),
        };
    }
    match rsipstack::sip::SipMessage::try_from(bytes) {
        Ok(SipMessage::Request(req)) => check_request(req, bytes, stream, ids),
        Ok(SipMessage::Response(resp)) => match check_response(resp, bytes, stream) {
            Ok(r) => Inbound::Response(Box::new(r)),
            Err(reason) => Inbound::Drop { reason },
        },
        Err(e) => refuse_unparsed(bytes, &e.to_string(), ids),
    }
}

fn check_request(mut req: Request, raw: &[u8], stream: bool, ids: &mut Ids) -> Inbound {
    let mut refuse = |req: &Request, why: Refusal| {
        let mut resp = refusal_to(req, &why, Some(&ids.token()));
        if matches!(why, Refusal::MethodNotAllowed | Refusal::NotImplemented) {
            push_header(&mut resp, "Allow", ALLOW);
        }
        Inbound::Reject {
            response: encode_response(&resp),
            code: why.code(),
            reason: why.phrase().into_owned(),
        }
    };
    if req.version != rsipstack::sip::Version::V2 {
        return match essentials(&req) {
            Ok(_) => refuse(&req, Refusal::VersionNotSupported),
            Err(reason) => Inbound::Drop { reason },
        };
    }
    let ess = match essentials(&req) {
        Ok(e) => e,
        Err(reason) => {
            // Without Via, From, To, Call-ID and CSeq no answer can be routed or matched.
            return if salvageable(&req) && req.method != Method::Ack {
                refuse(&req, Refusal::Malformed(reason))
            } else {
                Inbound::Drop { reason }
            };
        }
    };
    let head = unfolded_head(raw);
    if let Err(reason) = strict_syntax(&head) {
        return reply_or_drop(&req, || refuse(&req, Refusal::Malformed(reason)));
    }
    if ess.cseq_method != req.method {
        return reply_or_drop(&req, || {
            refuse(
                &req,
                Refusal::Malformed("CSeq method does not match the request".into()),
            )
        });
    }
    if let Err(reason) = fit_body(&mut req.headers, &mut req.body, raw, stream) {
        return reply_or_drop(&req, || refuse(&req, Refusal::Malformed(reason)));
    }
    if let Some(dup) = duplicated_single_header(&req.headers) {
        return reply_or_drop(&req, || {
            refuse(&req, Refusal::Malformed(format!("Multiple {dup} headers")))
        });
    }
    if let Some(mf) = header_value(&req.headers, "Max-Forwards") {
        if mf.trim().parse::<u32>().is_err() {
            return reply_or_drop(&req, || {
                refuse(&req, Refusal::Malformed("Bad Max-Forwards header".into()))
            });
        }
    }
    // rsipstack reads an unknown scheme such as `soap.beep://host` as a host name, so the
    // scheme is taken from the Request-Line itself.
    let scheme = head
        .first()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|uri| uri.split_once(':'))
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sip") | Some("sips") | Some("tel") => {}
        _ => return reply_or_drop(&req, || refuse(&req, Refusal::UnsupportedUriScheme)),
    }
    Inbound::Request(Box::new(ParsedRequest { req, ess }))
}

/// ACKs are never answered (RFC 3261 §17.2.1); everything else gets its error response.
fn reply_or_drop(req: &Request, reply: impl FnOnce() -> Inbound) -> Inbound {
    if req.method == Method::Ack {
        Inbound::Drop {
            reason: "malformed ACK".into(),
        }
    } else {
        reply()
    }
}

fn check_response(mut resp: Response, raw: &[u8], stream: bool) -> Result<ParsedResponse, String> {
    let ess = essentials(&resp)?;
    fit_body(&mut resp.headers, &mut resp.body, raw, stream)?;
    let code = u16::from(resp.status_code.clone());
    Ok(ParsedResponse { resp, code, ess })
}

/// Reads the mandatory headers; the error names the first header that is missing or broken.
pub fn essentials(msg: &impl HeadersExt) -> Result<Essentials, String> {
    let via = msg
        .via_header()
        .map_err(|_| "Missing Via header".to_string())?
        .typed()
        .map_err(|_| "Bad Via header".to_string())?;
    let from = msg
        .from_header()
        .map_err(|_| "Missing From header".to_string())?;
    from.uri().map_err(|_| "Bad From header".to_string())?;
    let from_tag = tag_param(from.value());
    let to = msg
        .to_header()
        .map_err(|_| "Missing To header".to_string())?;
    to.uri().map_err(|_| "Bad To header".to_string())?;
    let to_tag = tag_param(to.value());
    let call_id = msg
        .call_id_header()
        .map_err(|_| "Missing Call-ID header".to_string())?
        .value()
        .trim()
        .to_string();
    if call_id.is_empty() || call_id.contains(char::is_whitespace) {
        return Err("Bad Call-ID header".into());
    }
    let cseq = msg
        .cseq_header()
        .map_err(|_| "Missing CSeq header".to_string())?;
    let seq = cseq.seq().map_err(|_| "Bad CSeq header".to_string())?;
    if seq > 0x7fff_ffff {
        return Err("Bad CSeq header".into());
    }
    let cseq_method = cseq.method().map_err(|_| "Bad CSeq header".to_string())?;
    Ok(Essentials {
        call_id,
        cseq: seq,
        cseq_method,
        from_tag,
        to_tag,
        branch: via.branch().map(|b| b.to_string()),
        sent_by: via.sent_by().to_string().to_ascii_lowercase(),
    })
}

/// The `tag` header parameter of a From/To value. Read here rather than through rsipstack,
/// which loses it when LWS surrounds the `=` (RFC 4475 §3.1.1.1).
fn tag_param(value: &str) -> Option<String> {
    let params = header_params(value)?;
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let v = v.trim();
        (k.trim().eq_ignore_ascii_case("tag") && !v.is_empty()).then(|| v.to_string())
    })
}

/// The header-parameter part of a name-addr or addr-spec value: what follows `>` (or, without
/// angle brackets, the first `;`), after that `;`.
fn header_params(value: &str) -> Option<&str> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        if in_quotes {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '<' => {
                let close = i + value[i..].find('>')?;
                let rest = &value[close + 1..];
                return rest.find(';').map(|j| &rest[j + 1..]);
            }
            ';' => return Some(&value[i + 1..]),
            _ => {}
        }
    }
    None
}

fn salvageable(req: &Request) -> bool {
    req.via_header().is_ok()
        && req.call_id_header().is_ok()
        && req.cseq_header().is_ok()
        && req.from_header().is_ok()
        && req.to_header().is_ok()
}

/// Applies Content-Length: a datagram body is cut to it (RFC 3261 §18.3), a shorter one is an error.
/// A datagram without Content-Length carries its body to the end (RFC 4475 §3.4.1); rsipstack
/// would leave it empty.
fn fit_body(
    headers: &mut Headers,
    body: &mut Vec<u8>,
    raw: &[u8],
    stream: bool,
) -> Result<(), String> {
    let Some(cl) = header_value(headers, "Content-Length") else {
        if !stream && body.is_empty() {
            if let Some(i) = find_subslice(raw, b"\r\n\r\n") {
                body.extend_from_slice(&raw[i + 4..]);
            }
        }
        return Ok(());
    };
    let len: usize = cl
        .trim()
        .parse()
        .map_err(|_| "Bad Content-Length header".to_string())?;
    if len > body.len() {
        return Err("Content-Length larger than the body".into());
    }
    if len < body.len() && !stream {
        body.truncate(len);
    }
    Ok(())
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Syntax that rsipstack lets through but RFC 3261 forbids, each a 400 in RFC 4475 §3.1.2.
fn strict_syntax(head: &[String]) -> Result<(), String> {
    let Some(start) = head.first() else {
        return Err("Empty message".into());
    };
    let parts: Vec<&str> = start.split(' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty() || p.contains('\t')) {
        return Err("Malformed Request-Line".into());
    }
    let uri = parts[1];
    if uri.contains(['<', '>']) {
        return Err("Malformed Request-URI".into());
    }
    let sip_uri = uri.to_ascii_lowercase();
    if (sip_uri.starts_with("sip:") || sip_uri.starts_with("sips:")) && uri.contains('?') {
        return Err("Headers in the Request-URI".into());
    }
    for line in &head[1..] {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = canonical_name(name.trim()).to_ascii_lowercase();
        let value = value.trim();
        let checked = match name.as_str() {
            "via" => address_list_ok(value, false, true),
            "from" | "to" => address_list_ok(value, true, false),
            "contact" | "route" | "record-route" => address_list_ok(value, false, false),
            "date" => value.ends_with(" GMT"),
            _ => true,
        };
        if !checked {
            return Err(format!("Bad {} header", canonical_display(&name)));
        }
    }
    Ok(())
}

fn canonical_display(lower: &str) -> &str {
    match lower {
        "via" => "Via",
        "from" => "From",
        "to" => "To",
        "contact" => "Contact",
        "route" => "Route",
        "record-route" => "Record-Route",
        "date" => "Date",
        _ => "header",
    }
}

/// Checks a Via or name-addr/addr-spec header value: quotes and angle brackets balanced, no LWS
/// inside `<>`, no empty parameter or list element, no `?` in a URI without `<>` (RFC 3261
/// §20), and for From/To (`single`) no second value.
fn address_list_ok(value: &str, single: bool, via: bool) -> bool {
    if value == "*" {
        return true;
    }
    let mut in_quotes = false;
    let mut escaped = false;
    let mut in_angle = false;
    let mut bracketed = false;
    // What the last separator outside quotes and brackets was, until a non-LWS char follows it.
    let mut pending: Option<char> = Some(',');
    for c in value.chars() {
        if in_quotes {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quotes = false,
                _ => {}
            }
            continue;
        }
        if in_angle {
            match c {
                '>' => in_angle = false,
                '<' => return false,
                _ if c.is_whitespace() => return false,
                _ => {}
            }
            continue;
        }
        match c {
            _ if c.is_whitespace() => continue,
            ';' | ',' => {
                if pending.is_some() {
                    return false;
                }
                if c == ',' {
                    if single {
                        return false;
                    }
                    bracketed = false;
                }
                pending = Some(c);
                continue;
            }
            '"' => in_quotes = true,
            '<' if !via => {
                in_angle = true;
                bracketed = true;
            }
            '>' => return false,
            '?' if !via && !bracketed => return false,
            _ => {}
        }
        pending = None;
    }
    !in_quotes && !in_angle && pending.is_none()
}

const SINGLE_VALUED: [&str; 5] = ["call-id", "cseq", "from", "to", "content-length"];

fn duplicated_single_header(headers: &Headers) -> Option<&'static str> {
    let mut seen = [0u8; SINGLE_VALUED.len()];
    for h in headers.iter() {
        let name = canonical_name(h.name());
        if let Some(i) = SINGLE_VALUED
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
        {
            seen[i] += 1;
            if seen[i] > 1 {
                return Some(["Call-ID", "CSeq", "From", "To", "Content-Length"][i]);
            }
        }
    }
    None
}

/// Maps RFC 3261 §7.3.3 compact forms to full names (`f` → `From`).
pub fn canonical_name(name: &str) -> &str {
    match name {
        "i" | "I" => "Call-ID",
        "f" | "F" => "From",
        "t" | "T" => "To",
        "l" | "L" => "Content-Length",
        "v" | "V" => "Via",
        "m" | "M" => "Contact",
        "c" | "C" => "Content-Type",
        "s" | "S" => "Subject",
        "k" | "K" => "Supported",
        "e" | "E" => "Content-Encoding",
        "r" | "R" => "Refer-To",
        "o" | "O" => "Event",
        "u" | "U" => "Allow-Events",
        "x" | "X" => "Session-Expires",
        _ => name,
    }
}

/// The value of the first header called `name` (compact forms match their full names).
pub fn header_value<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| canonical_name(h.name()).eq_ignore_ascii_case(name))
        .map(|h| h.value())
}

/// Methods this server implements, as advertised in Allow.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY";

/// The answer to `req` that `why` calls for (see [`Refusal`]), built like [`response_to`].
pub fn refusal_to(req: &Request, why: &Refusal, to_tag: Option<&str>) -> Response {
    response_to(req, why.code(), &why.phrase(), to_tag)
}

/// Builds a response to `req`: Via, From, To, Call-ID and CSeq copied (RFC 3261 §8.2.6.2),
/// `to_tag` added to To when it has none and the response is not 100.
pub fn response_to(req: &Request, code: u16, reason: &str, to_tag: Option<&str>) -> Response {
    let mut headers = Headers::default();
    for h in req.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(to) => {
                let has_tag = matches!(to.tag(), Ok(Some(_)));
                match to_tag {
                    Some(tag) if !has_tag && code > 100 => headers.push(Header::To(
                        rsipstack::sip::headers::To::new(format!("{};tag={tag}", to.value())),
                    )),
                    _ => headers.push(h.clone()),
                }
            }
            _ => {}
        }
    }
    headers.push(Header::ContentLength(0.into()));
    Response {
        status_code: code.into(),
        wire_reason: Some(reason.to_string()),
        version: rsipstack::sip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// Serializes a response with its own reason phrase (rsipstack would print the standard one).
pub fn encode_response(resp: &Response) -> Vec<u8> {
    let code = resp.status_code.code();
    let text = resp.status_code.text();
    let phrase = resp.wire_reason.as_deref().unwrap_or(text);
    let mut out = format!(
        "SIP/2.0 {code} {}\r\n{}\r\n",
        sanitize_phrase(phrase),
        resp.headers
    )
    .into_bytes();
    out.extend_from_slice(&resp.body);
    out
}

/// Appends a header by name.
pub fn push_header(msg: &mut impl HasHeaders, name: &str, value: &str) {
    msg.headers_mut()
        .push(Header::Other(name.to_string(), value.to_string()));
}

/// Headers from (name, value) pairs, for tests.
#[cfg(test)]
pub(crate) fn headers_of(lines: &[(&str, &str)]) -> Headers {
    let mut h = Headers::default();
    for (n, v) in lines {
        h.push(Header::Other(n.to_string(), v.to_string()));
    }
    h
}

/// Sets the body with its Content-Type, keeping Content-Length right.
pub fn set_body(msg: &mut impl HasBody, content_type: &str, body: Vec<u8>) {
    let headers = msg.headers_mut();
    headers.retain(|h| !matches!(h, Header::ContentLength(_) | Header::ContentType(_)));
    if !body.is_empty() {
        headers.push(Header::ContentType(content_type.into()));
    }
    headers.push(Header::ContentLength((body.len() as u32).into()));
    *msg.body_vec() = body;
}

/// Messages with a body.
pub trait HasBody: HasHeaders {
    /// The body buffer.
    fn body_vec(&mut self) -> &mut Vec<u8>;
}
impl HasBody for Request {
    fn body_vec(&mut self) -> &mut Vec<u8> {
        &mut self.body
    }
}
impl HasBody for Response {
    fn body_vec(&mut self) -> &mut Vec<u8> {
        &mut self.body
    }
}

/// What a request the parser refused still tells us: enough to answer it.
#[derive(Debug, Default)]
struct Salvaged {
    method: String,
    vias: Vec<String>,
    from: Option<String>,
    to: Option<String>,
    call_id: Option<String>,
    cseq: Option<String>,
}

/// Answers a request the parser refused, when its Via, From, To, Call-ID and CSeq can be read:
/// 501 for a method we do not know, 400 otherwise. Anything else is dropped.
fn refuse_unparsed(bytes: &[u8], why: &str, ids: &mut Ids) -> Inbound {
    let Some(s) = salvage(bytes) else {
        return Inbound::Drop {
            reason: format!("unparseable: {}", first_line(why)),
        };
    };
    if s.method.eq_ignore_ascii_case("ACK") {
        return Inbound::Drop {
            reason: "malformed ACK".into(),
        };
    }
    let known = s.method.parse::<Method>().is_ok();
    let refusal = if known || !is_token(&s.method) {
        Refusal::Malformed(format!("Bad Request ({})", first_line(why)))
    } else {
        Refusal::NotImplemented
    };
    let (code, reason) = (refusal.code(), refusal.phrase().into_owned());
    let (Some(from), Some(to), Some(call_id), Some(cseq)) = (&s.from, &s.to, &s.call_id, &s.cseq)
    else {
        return Inbound::Drop {
            reason: "unparseable".into(),
        };
    };
    let mut out = String::with_capacity(512);
    let phrase = sanitize_phrase(&reason);
    let _ = write!(out, "SIP/2.0 {code} {phrase}\r\n");
    for v in &s.vias {
        let _ = write!(out, "Via: {v}\r\n");
    }
    let _ = write!(out, "From: {from}\r\n");
    if to.to_ascii_lowercase().contains(";tag=") {
        let _ = write!(out, "To: {to}\r\n");
    } else {
        let _ = write!(out, "To: {to};tag={}\r\n", ids.token());
    }
    let _ = write!(out, "Call-ID: {call_id}\r\nCSeq: {cseq}\r\n");
    if refusal == Refusal::NotImplemented {
        let _ = write!(out, "Allow: {ALLOW}\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Inbound::Reject {
        response: out.into_bytes(),
        code,
        reason,
    }
}

fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    match line.char_indices().nth(80) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// A reason phrase may not carry CR/LF or control characters.
fn sanitize_phrase(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// An RFC 3261 token (a method or header name).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// The start line and header lines of a message, continuation lines joined with one space.
fn unfolded_head(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let head = match text.find("\r\n\r\n").or_else(|| text.find("\n\n")) {
        Some(i) => &text[..i],
        None => &text[..],
    };
    let mut lines: Vec<String> = Vec::new();
    for raw in head.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.starts_with([' ', '\t']) {
            if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(raw.trim());
                continue;
            }
        }
        lines.push(raw.to_string());
    }
    lines
}

/// A tolerant scan of the start line and headers, unfolding continuation lines.
fn salvage(bytes: &[u8]) -> Option<Salvaged> {
    let mut it = unfolded_head(bytes).into_iter();
    let start = it.next()?;
    // The method is the first word and the version the last, whatever LWS sits in the URI.
    let parts: Vec<&str> = start.split_whitespace().collect();
    if parts.len() < 3 {
        return None;
    }
    let method = parts[0].to_string();
    if !parts[parts.len() - 1]
        .to_ascii_uppercase()
        .starts_with("SIP/")
    {
        return None;
    }
    let mut s = Salvaged {
        method,
        ..Salvaged::default()
    };
    for line in it {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_string();
        match canonical_name(name.trim()).to_ascii_lowercase().as_str() {
            "via" => s.vias.push(value),
            "from" => s.from = Some(value),
            "to" => s.to = Some(value),
            "call-id" => s.call_id = Some(value),
            "cseq" => s.cseq = Some(value),
            _ => {}
        }
    }
    if s.vias.is_empty() {
        return None;
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:echo@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: <sip:echo@127.0.0.1>\r\n\
From: \"Alice\" <sip:alice@127.0.0.1>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@127.0.0.1:5070>\r\n\
Content-Length: 0\r\n\r\n";

    fn reject_code(i: &Inbound) -> Option<u16> {
        match i {
            Inbound::Reject { code, .. } => Some(*code),
            _ => None,
        }
    }

    #[test]
    fn a_plain_invite_yields_its_essentials() {
        let Inbound::Request(r) = classify(INVITE.as_bytes(), false) else {
            panic!("not accepted")
        };
        assert_eq!(r.ess.call_id, "a84b4c76e66710@pc33");
        assert_eq!(r.ess.cseq, 314159);
        assert_eq!(r.ess.cseq_method, Method::Invite);
        assert_eq!(r.ess.from_tag.as_deref(), Some("1928301774"));
        assert_eq!(r.ess.to_tag, None);
        assert_eq!(r.ess.branch.as_deref(), Some("z9hG4bK776asdhds"));
        assert_eq!(r.ess.sent_by, "127.0.0.1:5070");
    }

    #[test]
    fn compact_headers_are_understood() {
        let m =
            "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
f: <sip:a@b>;tag=9\r\nt: <sip:x@127.0.0.1>\r\ni: cid1\r\nCSeq: 2 OPTIONS\r\nl: 0\r\n\r\n";
        let Inbound::Request(r) = classify(m.as_bytes(), false) else {
            panic!("not accepted")
        };
        assert_eq!(r.ess.call_id, "cid1");
    }

    #[test]
    fn unknown_method_gets_501_with_allow() {
        let m = INVITE
            .replace("INVITE sip", "FROBNICATE sip")
            .replace("314159 INVITE", "314159 FROBNICATE");
        let i = classify(m.as_bytes(), false);
        assert_eq!(reject_code(&i), Some(501));
        let Inbound::Reject { response, .. } = i else {
            unreachable!()
        };
        let text = String::from_utf8(response).unwrap();
        assert!(text.contains("Allow: INVITE"), "{text}");
        assert!(
            text.starts_with("SIP/2.0 501 Not Implemented\r\n"),
            "{text}"
        );
        assert!(text.contains("Call-ID: a84b4c76e66710@pc33"));
        assert!(text.contains("CSeq: 314159 FROBNICATE\r\n"));
    }

    #[test]
    fn cseq_method_mismatch_is_400_naming_cseq() {
        let m = INVITE.replace("314159 INVITE", "314159 BYE");
        let i = classify(m.as_bytes(), false);
        assert_eq!(reject_code(&i), Some(400));
        let Inbound::Reject { response, .. } = i else {
            unreachable!()
        };
        assert!(String::from_utf8(response).unwrap().contains("CSeq"));
    }

    #[test]
    fn missing_call_id_is_dropped_not_answered() {
        let m = INVITE.replace("Call-ID: a84b4c76e66710@pc33\r\n", "");
        assert!(matches!(
            classify(m.as_bytes(), false),
            Inbound::Drop { .. }
        ));
    }

    #[test]
    fn datagram_body_is_trimmed_to_content_length() {
        let m = INVITE.replace("Content-Length: 0", "Content-Length: 3") + "abcdef";
        let Inbound::Request(r) = classify(m.as_bytes(), false) else {
            panic!("not accepted")
        };
        assert_eq!(r.req.body, b"abc");
    }

    #[test]
    fn content_length_beyond_the_body_is_400() {
        let m = INVITE.replace("Content-Length: 0", "Content-Length: 30") + "abc";
        assert_eq!(reject_code(&classify(m.as_bytes(), false)), Some(400));
    }

    #[test]
    fn response_copies_dialog_headers_and_adds_a_tag() {
        let Inbound::Request(r) = classify(INVITE.as_bytes(), false) else {
            panic!()
        };
        let resp = response_to(&r.req, 180, "Ringing", Some("abc"));
        let text = String::from_utf8(encode_response(&resp)).unwrap();
        assert!(text.starts_with("SIP/2.0 180 Ringing\r\n"), "{text}");
        assert!(text.contains("tag=abc"));
        let Inbound::Response(p) = classify(text.as_bytes(), false) else {
            panic!("{text}")
        };
        assert_eq!(p.code, 180);
        assert_eq!(p.ess.to_tag.as_deref(), Some("abc"));
        assert_eq!(p.ess.cseq, 314159);
    }

    #[test]
    fn garbage_is_dropped() {
        assert!(matches!(
            classify(b"\x00\x01hello", false),
            Inbound::Drop { .. }
        ));
        assert!(matches!(classify(b"\r\n\r\n", false), Inbound::Drop { .. }));
    }
}
