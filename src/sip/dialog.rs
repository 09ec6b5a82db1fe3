//! Dialog state of a call (RFC 3261 §12), one we answered or one we placed: identifiers,
//! CSeq spaces, remote target and route set, and building the in-dialog requests we send
//! (BYE, INFO, re-INVITE, REFER, the ACK for a 2xx).
//!
//! Routing is loose only (RFC 3261 §16.12.1.1, `;lr`): a strict router in the route set is
//! treated as a loose one, which every current stack is.

use super::ids::Ids;
use super::message::{header_value, Method, Request};
use rsipstack::sip::prelude::*;
use rsipstack::sip::{Header, Headers, Uri};

/// Identifies a dialog from our side: Call-ID, our tag, the peer's tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our tag (To tag of requests we receive).
    pub local_tag: String,
    /// The peer's tag (From tag of requests we receive).
    pub remote_tag: String,
}

/// Where and how the peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Transport protocol.
    pub transport: Transport,
    /// The peer's transport address (for TCP, the connection's remote address).
    pub addr: std::net::SocketAddr,
}

/// Transport protocol of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams: the transaction layer retransmits.
    Udp,
    /// A stream: reliable, no retransmission below 64·T1 timeouts.
    Tcp,
    /// TCP under TLS (RFC 3261 §26.2): framed and timed like TCP.
    Tls,
    /// A WebSocket (RFC 7118): reliable like TCP, one SIP message per WebSocket message. Only
    /// the peer opens it, so a closed one cannot be opened again from our side.
    Ws,
    /// A WebSocket under TLS (`wss://`).
    Wss,
}

impl Transport {
    /// True for stream transports.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }
    /// True for byte streams, whose messages are cut out by Content-Length; a datagram or a
    /// WebSocket message holds one whole message.
    pub fn is_byte_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
    /// True for WebSockets, which only the peer can open.
    pub fn is_websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }
    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }
    /// The `transport` URI parameter that reaches us this way (none for UDP, the default).
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
            Transport::Ws => ";transport=ws",
            Transport::Wss => ";transport=wss",
        }
    }
}

/// A dialog, from either side.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID and tags.
    pub id: DialogId,
    /// Our URI with our tag, as the To header we answered with.
    local_party: String,
    /// Our URI alone (the To URI of the INVITE), e.g. for Referred-By.
    local_uri: String,
    /// The peer's From header value (with its tag).
    remote_party: String,
    /// The peer's Contact URI: where in-dialog requests go.
    pub remote_target: String,
    /// Record-Route values in received order (a UAS uses them as-is, §12.1.1).
    pub route_set: Vec<String>,
    /// Last CSeq we used.
    pub local_cseq: u32,
    /// Highest CSeq the peer used.
    pub remote_cseq: u32,
    /// How the peer is reached.
    pub peer: Peer,
}

/// A dialog-creating request lacked what a dialog needs.
#[derive(Debug, thiserror::Error)]
#[error("cannot create a dialog: {0}")]
pub struct DialogError(pub &'static str);

impl Dialog {
    /// Creates the dialog our 1xx/2xx to `req` establishes (§12.1.1); our first request in it
    /// will carry CSeq `first_cseq` + 1.
    pub fn new_uas(
        req: &Request,
        local_tag: &str,
        peer: Peer,
        first_cseq: u32,
    ) -> Result<Dialog, DialogError> {
        let call_id = call_id_of(req)?;
        let from = req.from_header().map_err(|_| DialogError("no From"))?;
        let remote_tag = tag_of(from.tag(), "no From tag")?;
        let to = req.to_header().map_err(|_| DialogError("no To"))?;
        let local_uri = to
            .typed()
            .map(|t| t.uri.to_string())
            .unwrap_or_else(|_| bare_uri(to.value()));
        let contact = req
            .contact_header()
            .map_err(|_| DialogError("no Contact"))?
            .typed()
            .map_err(|_| DialogError("bad Contact"))?;
        let route_set = record_routes(&req.headers);
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag: local_tag.to_string(),
                remote_tag,
            },
            local_party: format!("{};tag={local_tag}", to.value().trim()),
            local_uri,
            remote_party: from.value().trim().to_string(),
            remote_target: contact.uri.to_string(),
            route_set,
            local_cseq: first_cseq,
            remote_cseq: cseq_of(req),
            peer,
        })
    }

    /// Creates the dialog a 2xx (or tagged 1xx) `resp` to our INVITE `req` establishes
    /// (§12.1.2): the route set is the response's Record-Route reversed, the remote target
    /// its Contact (the Request-URI when it has none). In-dialog requests go to the first
    /// route, else to the remote target, when either names an IP address; else to `peer`.
    pub fn new_uac(
        req: &Request,
        resp: &rsipstack::sip::Response,
        peer: Peer,
    ) -> Result<Dialog, DialogError> {
        let call_id = call_id_of(req)?;
        let from = req.from_header().map_err(|_| DialogError("no From"))?;
        let local_tag = tag_of(from.tag(), "no From tag")?;
        let to = resp.to_header().map_err(|_| DialogError("no To"))?;
        let remote_tag = tag_of(to.tag(), "no To tag")?;
        let remote_target = resp
            .contact_header()
            .ok()
            .and_then(|c| c.typed().ok())
            .map(|c| c.uri.to_string())
            .unwrap_or_else(|| req.uri.to_string());
        let mut route_set = record_routes(&resp.headers);
        route_set.reverse();
        let next_hop = route_set
            .first()
            .map_or(remote_target.as_str(), String::as_str);
        let peer = uri_peer(next_hop, peer.transport).unwrap_or(peer);
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag,
                remote_tag,
            },
            local_party: from.value().trim().to_string(),
            local_uri: bare_uri(from.value()),
            remote_party: to.value().trim().to_string(),
            remote_target,
            route_set,
            local_cseq: cseq_of(req),
            remote_cseq: 0,
            peer,
        })
    }

    /// Our URI in this dialog, without display name or tag.
    pub fn local_uri(&self) -> &str {
        &self.local_uri
    }

    /// Checks an in-dialog request's CSeq (§12.2.2): false when it is lower than seen before.
    /// ACK and CANCEL reuse their INVITE's number and are not checked.
    pub fn accept_remote_cseq(&mut self, method: Method, cseq: u32) -> bool {
        if matches!(method, Method::Ack | Method::Cancel) {
            return true;
        }
        if cseq < self.remote_cseq {
            return false;
        }
        self.remote_cseq = cseq;
        true
    }

    /// A target refresh (re-INVITE) may move the remote target.
    pub fn refresh_target(&mut self, req: &Request) {
        if let Ok(c) = req.contact_header().and_then(|c| c.typed()) {
            self.remote_target = c.uri.to_string();
        }
    }

    /// A 2xx to our re-INVITE may move the remote target too (§12.2.1.2).
    pub fn refresh_target_from_response(&mut self, resp: &rsipstack::sip::Response) {
        if let Ok(c) = resp.contact_header().and_then(|c| c.typed()) {
            self.remote_target = c.uri.to_string();
        }
    }

    /// Builds an in-dialog request (§12.2.1.1) with a fresh branch from `ids` and the next
    /// CSeq. `local` is our address as written into Via.
    pub fn request(
        &mut self,
        method: Method,
        ids: &mut Ids,
        local: std::net::SocketAddr,
        user_agent: &str,
    ) -> Request {
        self.local_cseq += 1;
        let cseq = self.local_cseq;
        self.request_with_cseq(method, cseq, &ids.branch(), local, user_agent)
    }

    /// Builds the ACK for a final response to our re-INVITE with CSeq `cseq`: for a 2xx a
    /// transaction of its own (§13.2.2.4, `branch` None, a fresh one from `ids`), for an
    /// error the INVITE's `branch` (§17.1.1.3).
    pub fn ack(
        &self,
        cseq: u32,
        branch: Option<&str>,
        ids: &mut Ids,
        local: std::net::SocketAddr,
        user_agent: &str,
    ) -> Request {
        let fresh;
        let branch = match branch {
            Some(b) => b,
            None => {
                fresh = ids.branch();
                &fresh
            }
        };
        self.request_with_cseq(Method::Ack, cseq, branch, local, user_agent)
    }

    fn request_with_cseq(
        &self,
        method: Method,
        cseq: u32,
        branch: &str,
        local: std::net::SocketAddr,
        user_agent: &str,
    ) -> Request {
        // Loose routing (lr): the Request-URI is the remote target and the route set becomes
        // Route headers. A strict first route would swap them (§12.2.1.1); we treat every route
        // as loose, as every current stack does.
        let uri = Uri::try_from(self.remote_target.as_str())
            .or_else(|_| Uri::try_from(format!("sip:{}", self.peer.addr).as_str()));
        let mut headers = Headers::default();
        headers.push(via(self.peer.transport, local, branch));
        headers.push(Header::MaxForwards(70.into()));
        for r in &self.route_set {
            headers.push(Header::Route(r.clone().into()));
        }
        headers.push(Header::From(self.local_party.clone().into()));
        headers.push(Header::To(self.remote_party.clone().into()));
        headers.push(Header::CallId(self.id.call_id.clone().into()));
        headers.push(Header::CSeq(format!("{cseq} {method}").into()));
        headers.push(Header::UserAgent(user_agent.into()));
        headers.push(Header::ContentLength(0.into()));
        Request {
            method,
            uri: uri.unwrap_or_default(),
            version: rsipstack::sip::Version::V2,
            headers,
            body: Vec::new(),
        }
    }
}

fn call_id_of(req: &Request) -> Result<String, DialogError> {
    Ok(req
        .call_id_header()
        .map_err(|_| DialogError("no Call-ID"))?
        .value()
        .trim()
        .to_string())
}

fn tag_of<E>(
    tag: Result<Option<rsipstack::sip::param::Tag>, E>,
    missing: &'static str,
) -> Result<String, DialogError> {
    tag.ok()
        .flatten()
        .map(|t| t.value().to_string())
        .ok_or(DialogError(missing))
}

fn cseq_of(req: &Request) -> u32 {
    req.cseq_header()
        .ok()
        .and_then(|c| c.seq().ok())
        .unwrap_or(0)
}

/// The Record-Route entries of a message, in received order.
fn record_routes(headers: &Headers) -> Vec<String> {
    headers
        .iter()
        .filter_map(|h| match h {
            Header::RecordRoute(rr) => Some(rr.value().to_string()),
            _ => None,
        })
        .flat_map(|v| split_commas(&v))
        .collect()
}

/// The Via of a request we send: our address, a branch of its own, and `rport` so that the
/// answer comes back to the port we sent from (RFC 3581).
pub fn via(transport: Transport, local: std::net::SocketAddr, branch: &str) -> Header {
    Header::Via(
        format!(
            "SIP/2.0/{} {local};branch={branch};rport",
            transport.via_token()
        )
        .into(),
    )
}

/// Where a `sip:`/`sips:` URI (bare or in `<>`) points when its host is an IP address: the
/// port defaults to 5060 (5061 for TLS), the transport to its `transport` parameter, else
/// `default`. A `sips:` URI is always reached over TLS (RFC 3261 §19.1, §26.2).
/// None for a host name, which the layer above must resolve.
pub fn uri_peer(uri: &str, default: Transport) -> Option<Peer> {
    // A bare URI keeps its parameters (`transport` among them).
    let uri = if uri.contains('<') {
        bare_uri(uri)
    } else {
        uri.trim().to_string()
    };
    let lower = uri.to_ascii_lowercase();
    let (rest, secure) = match lower.strip_prefix("sips:") {
        Some(r) => (r, true),
        None => (lower.strip_prefix("sip:")?, false),
    };
    let (hostport, params) = match rest.find([';', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    let transport = params
        .split(';')
        .find_map(|p| p.strip_prefix("transport="))
        .map_or(default, |t| match t.split('?').next().unwrap_or("") {
            "tcp" => Transport::Tcp,
            "udp" => Transport::Udp,
            "tls" => Transport::Tls,
            "ws" => Transport::Ws,
            "wss" => Transport::Wss,
            _ => default,
        });
    let transport = match (secure, transport) {
        (true, Transport::Ws | Transport::Wss) => Transport::Wss,
        (true, _) => Transport::Tls,
        (false, t) => t,
    };
    let port = if transport == Transport::Tls {
        5061
    } else {
        5060
    };
    let addr = hostport
        .parse::<std::net::SocketAddr>()
        .or_else(|_| {
            let host = hostport.trim_start_matches('[').trim_end_matches(']');
            host.parse::<std::net::IpAddr>()
                .map(|ip| std::net::SocketAddr::new(ip, port))
        })
        .ok()?;
    Some(Peer { transport, addr })
}

/// The URI of a name-addr (`"Name" <uri>;params`) or addr-spec (`uri;params`) header value.
pub(crate) fn bare_uri(v: &str) -> String {
    let v = v.trim();
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
        _ => v.split(';').next().unwrap_or("").trim().to_string(),
    }
}

/// Splits a header value at commas outside `<...>` and quotes.
pub(crate) fn split_commas(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in v.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(v[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = v[start..].trim();
    if !last.is_empty() {
        out.push(last.to_string());
    }
    out
}

/// The Content-Type of a message, lowercased without parameters.
pub fn content_type(headers: &Headers) -> Option<String> {
    header_value(headers, "Content-Type").map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{classify, Inbound};

    const INVITE: &str = "INVITE sip:echo@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds\r\n\
Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
Max-Forwards: 70\r\n\
To: <sip:echo@127.0.0.1>\r\n\
From: \"Alice\" <sip:alice@127.0.0.1>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@127.0.0.1:5070>\r\n\
Content-Length: 0\r\n\r\n";

    fn dialog() -> Dialog {
        let Inbound::Request(r) = classify(INVITE.as_bytes(), false) else {
            panic!()
        };
        let peer = Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
        };
        Dialog::new_uas(&r.req, "ourtag", peer, 7).unwrap()
    }

    #[test]
    fn bye_is_routed_and_addressed_per_the_dialog() {
        let mut d = dialog();
        let mut ids = Ids::with_seed(1);
        let bye = d.request(
            Method::Bye,
            &mut ids,
            "127.0.0.1:5060".parse().unwrap(),
            "sb",
        );
        let text = String::from_utf8(bye.to_bytes()).unwrap();
        assert!(
            text.starts_with("BYE sip:alice@127.0.0.1:5070 SIP/2.0\r\n"),
            "{text}"
        );
        let routes: Vec<_> = text.lines().filter(|l| l.starts_with("Route:")).collect();
        assert_eq!(
            routes,
            vec![
                "Route: <sip:p1.example.com;lr>",
                "Route: <sip:p2.example.com;lr>"
            ]
        );
        let Inbound::Request(p) = classify(text.as_bytes(), false) else {
            panic!("{text}")
        };
        assert_eq!(p.ess.from_tag.as_deref(), Some("ourtag"));
        assert_eq!(p.ess.to_tag.as_deref(), Some("1928301774"));
        assert_eq!(p.ess.cseq, d.local_cseq);
        assert_eq!(p.ess.cseq, 8, "one past the first CSeq given");
        assert!(p.ess.has_rfc3261_branch());
    }

    #[test]
    fn uri_peer_reads_ip_hosts_ports_and_transport_only() {
        let p = uri_peer("<sip:10.0.0.1;lr>", Transport::Udp).unwrap();
        assert_eq!(p.addr, "10.0.0.1:5060".parse().unwrap());
        assert_eq!(p.transport, Transport::Udp);
        let p = uri_peer("sip:bob@10.0.0.2:5080;transport=TCP", Transport::Udp).unwrap();
        assert_eq!(p.addr, "10.0.0.2:5080".parse().unwrap());
        assert_eq!(p.transport, Transport::Tcp);
        let p = uri_peer("sip:[::1]:5062", Transport::Tcp).unwrap();
        assert_eq!(p.addr, "[::1]:5062".parse().unwrap());
        assert_eq!(uri_peer("sip:proxy.example.com;lr", Transport::Udp), None);
        let p = uri_peer("sips:bob@10.0.0.3", Transport::Udp).unwrap();
        assert_eq!(
            (p.transport, p.addr),
            (Transport::Tls, "10.0.0.3:5061".parse().unwrap())
        );
        // sips: means TLS whatever the parameter says (§19.1).
        let p = uri_peer("<sips:10.0.0.3:5071;transport=tcp;lr>", Transport::Udp).unwrap();
        assert_eq!(
            (p.transport, p.addr),
            (Transport::Tls, "10.0.0.3:5071".parse().unwrap())
        );
        let p = uri_peer("sip:10.0.0.4;transport=TLS", Transport::Udp).unwrap();
        assert_eq!(
            (p.transport, p.addr),
            (Transport::Tls, "10.0.0.4:5061".parse().unwrap())
        );
        assert_eq!(Transport::Tls.via_token(), "TLS");
        assert!(Transport::Tls.is_reliable());
        // A WebSocket peer: reliable, yet each message whole (no Content-Length framing).
        let p = uri_peer("sip:10.0.0.5:8080;transport=ws", Transport::Udp).unwrap();
        assert_eq!(p.transport, Transport::Ws);
        let p = uri_peer("sips:10.0.0.5:8443;transport=ws", Transport::Udp).unwrap();
        assert_eq!(p.transport, Transport::Wss);
        assert_eq!(Transport::Wss.via_token(), "WSS");
        assert_eq!(Transport::Ws.uri_param(), ";transport=ws");
        assert!(Transport::Ws.is_reliable() && !Transport::Ws.is_byte_stream());
        assert!(Transport::Tcp.is_byte_stream() && !Transport::Tcp.is_websocket());
        assert_eq!(uri_peer("tel:+123", Transport::Udp), None);
    }

    #[test]
    fn local_uri_is_the_invite_to_uri_without_tag_or_name() {
        let d = dialog();
        assert_eq!(d.local_uri(), "sip:echo@127.0.0.1");
        assert_eq!(bare_uri("\"Bob\" <sip:bob@x;lr>;tag=1"), "sip:bob@x;lr");
        assert_eq!(bare_uri("sip:bob@x;tag=1"), "sip:bob@x");
    }

    #[test]
    fn lower_remote_cseq_is_refused_but_ack_is_not_checked() {
        let mut d = dialog();
        assert!(!d.accept_remote_cseq(Method::Bye, 314158));
        assert!(d.accept_remote_cseq(Method::Ack, 1));
        assert!(d.accept_remote_cseq(Method::Bye, 314160));
        assert!(!d.accept_remote_cseq(Method::Info, 314159));
    }
}
