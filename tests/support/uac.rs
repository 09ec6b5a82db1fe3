//! A sans-IO SIP user agent client for tests: places one call (INVITE, ACK, BYE or CANCEL),
//! answers the server's requests (200, or a code set per method), retransmits through the
//! library's client transactions.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use switchboard::sip::message::{classify, Inbound};
use switchboard::sip::transaction::{ClientTx, ResponseDisposition, TimerConfig, TxOutput};

/// Where the call stands, from the caller's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UacState {
    Idle,
    Calling,
    Ringing,
    Confirmed,
    Terminated,
}

pub struct Uac {
    timers: TimerConfig,
    reliable: bool,
    /// Over TLS: Via says so.
    pub tls: bool,
    /// The Via transport when the socket does not say it (`WS`, `WSS`).
    pub via: Option<&'static str>,
    pub local: SocketAddr,
    pub server: SocketAddr,
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: Option<String>,
    cseq: u32,
    invite_cseq: u32,
    invite_branch: String,
    user: String,
    invite: Option<ClientTx>,
    other: Vec<(String, ClientTx)>,
    pub state: UacState,
    pub outbox: VecDeque<Vec<u8>>,
    /// Every final or provisional status received, in order (retransmissions included).
    pub statuses: Vec<(String, u16)>,
    /// The body of the 2xx to our INVITE.
    pub answer: Option<Vec<u8>>,
    /// The body of the 2xx to our latest INVITE or re-INVITE.
    pub latest_answer: Option<Vec<u8>>,
    /// Requests the server sent us (method names).
    pub requests_in: Vec<String>,
    pub acks_sent: usize,
    /// Extra header lines (each ending in CRLF) for our INVITEs, e.g. Record-Route.
    pub invite_headers: String,
    /// The status to answer a request method with, when not 200.
    pub reply_codes: Vec<(String, u16)>,
    /// Extra header lines (name, value) for our answers to a request method.
    pub reply_headers: Vec<(String, String, String)>,
    /// Behind a proxy: in-dialog requests go to the 2xx's Contact through the Route set its
    /// Record-Route gives (RFC 3261 §12.1.2), instead of to `user@server`.
    pub follow_record_route: bool,
    /// The route set and remote target learnt from the 2xx, when following Record-Route.
    route: Option<(Vec<String>, String)>,
    /// Where the Call-ID, From tag and branches come from.
    rng: fastrand::Rng,
}

impl Uac {
    pub fn new(local: SocketAddr, server: SocketAddr, reliable: bool) -> Self {
        Self::seeded(local, server, reliable, fastrand::u64(..))
    }

    /// A caller whose Call-ID, From tag and branches follow from `seed`.
    pub fn seeded(local: SocketAddr, server: SocketAddr, reliable: bool, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        Uac {
            timers: TimerConfig::default(),
            reliable,
            tls: false,
            via: None,
            local,
            server,
            call_id: format!("{:x}@test", rng.u64(..)),
            from_tag: format!("{:x}", rng.u32(..)),
            to_tag: None,
            cseq: 1,
            invite_cseq: 1,
            invite_branch: String::new(),
            user: String::new(),
            invite: None,
            other: Vec::new(),
            state: UacState::Idle,
            outbox: VecDeque::new(),
            statuses: Vec::new(),
            answer: None,
            latest_answer: None,
            requests_in: Vec::new(),
            acks_sent: 0,
            invite_headers: String::new(),
            reply_codes: Vec::new(),
            reply_headers: Vec::new(),
            follow_record_route: false,
            route: None,
            rng,
        }
    }

    /// The 2xx's Contact URI, when following Record-Route: which server took the call.
    pub fn remote_target(&self) -> Option<&str> {
        self.route.as_ref().map(|(_, target)| target.as_str())
    }

    fn transport(&self) -> &'static str {
        if let Some(via) = self.via {
            via
        } else if self.tls {
            "TLS"
        } else if self.reliable {
            "TCP"
        } else {
            "UDP"
        }
    }

    fn head(&self, method: &str, branch: &str, cseq: u32, cseq_method: &str) -> String {
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let (target, routes) = match (&self.route, &self.to_tag) {
            (Some((set, target)), Some(_)) if method != "CANCEL" => (
                target.clone(),
                set.iter().map(|r| format!("Route: {r}\r\n")).collect(),
            ),
            _ => (format!("sip:{}@{}", self.user, self.server), String::new()),
        };
        format!(
            "{method} {target} SIP/2.0\r\n\
{routes}Via: SIP/2.0/{tp} {local};branch={branch}\r\n\
Max-Forwards: 70\r\n\
From: <sip:tester@{local}>;tag={ft}\r\n\
To: <sip:{user}@{server}>{to_tag}\r\n\
Call-ID: {cid}\r\n\
CSeq: {cseq} {cseq_method}\r\n\
Contact: <sip:tester@{local}>\r\n",
            user = self.user,
            server = self.server,
            tp = self.transport(),
            local = self.local,
            ft = self.from_tag,
            cid = self.call_id,
        )
    }

    fn with_body(head: String, ct: &str, body: &[u8]) -> Vec<u8> {
        let mut m = head;
        if body.is_empty() {
            m.push_str("Content-Length: 0\r\n\r\n");
            return m.into_bytes();
        }
        m.push_str(&format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ));
        let mut b = m.into_bytes();
        b.extend_from_slice(body);
        b
    }

    /// Sends an INVITE to `user` with `sdp` as the offer (empty: no offer).
    pub fn invite(&mut self, now: Instant, user: &str, sdp: &[u8]) {
        self.user = user.to_string();
        self.send_invite(now, sdp);
        self.state = UacState::Calling;
    }

    /// Sends a re-INVITE in the dialog.
    pub fn reinvite(&mut self, now: Instant, sdp: &[u8]) {
        self.cseq += 1;
        self.send_invite(now, sdp);
    }

    fn send_invite(&mut self, now: Instant, sdp: &[u8]) {
        self.invite_cseq = self.cseq;
        self.invite_branch = format!("z9hG4bK{:x}", self.rng.u64(..));
        let head = self.head("INVITE", &self.invite_branch, self.cseq, "INVITE")
            + self.invite_headers.as_str();
        let msg = Self::with_body(head, "application/sdp", sdp);
        self.invite = Some(ClientTx::new(
            now,
            self.timers,
            self.reliable,
            true,
            msg.clone(),
        ));
        self.outbox.push_back(msg);
    }

    /// Sends a non-INVITE request in the dialog (BYE, INFO, OPTIONS).
    pub fn request(&mut self, now: Instant, method: &str, ct: &str, body: &[u8]) {
        self.request_with(now, method, "", ct, body);
    }

    /// Sends a non-INVITE request in the dialog with extra header lines (each ending in CRLF).
    pub fn request_with(&mut self, now: Instant, method: &str, extra: &str, ct: &str, body: &[u8]) {
        self.cseq += 1;
        let branch = format!("z9hG4bK{:x}", self.rng.u64(..));
        let head = self.head(method, &branch, self.cseq, method) + extra;
        let msg = Self::with_body(head, ct, body);
        self.other.push((
            branch,
            ClientTx::new(now, self.timers, self.reliable, false, msg.clone()),
        ));
        self.outbox.push_back(msg);
        if method == "BYE" {
            self.state = UacState::Terminated;
        }
    }

    /// Cancels the pending INVITE (§9.1: same branch, same CSeq number).
    pub fn cancel(&mut self, now: Instant) {
        let saved = self.to_tag.take();
        let msg = Self::with_body(
            self.head("CANCEL", &self.invite_branch, self.invite_cseq, "CANCEL"),
            "",
            b"",
        );
        self.to_tag = saved;
        self.other.push((
            self.invite_branch.clone(),
            ClientTx::new(now, self.timers, self.reliable, false, msg.clone()),
        ));
        self.outbox.push_back(msg);
    }

    fn ack(&mut self, branch: &str) -> Vec<u8> {
        self.acks_sent += 1;
        Self::with_body(self.head("ACK", branch, self.invite_cseq, "ACK"), "", b"")
    }

    pub fn handle(&mut self, now: Instant, bytes: &[u8]) {
        match classify(bytes, self.reliable) {
            Inbound::Response(r) => {
                let method = r.ess.cseq_method.to_string();
                self.statuses.push((method.clone(), r.code));
                if method == "INVITE" && r.ess.branch.as_deref() == Some(&self.invite_branch) {
                    let Some(tx) = self.invite.as_mut() else {
                        return;
                    };
                    let disposition = tx.on_response(now, r.code);
                    if r.code >= 101 && r.ess.to_tag.is_some() {
                        self.to_tag = r.ess.to_tag.clone();
                    }
                    match r.code {
                        180..=199 if self.state == UacState::Calling => {
                            self.state = UacState::Ringing
                        }
                        200..=299 => {
                            if self.follow_record_route && self.route.is_none() {
                                self.route = route_of(&r.resp.headers);
                            }
                            // Every 2xx, first or retransmitted, gets an ACK (§13.2.2.4).
                            let branch = format!("z9hG4bK{:x}", self.rng.u64(..));
                            let ack = self.ack(&branch);
                            self.outbox.push_back(ack);
                            if self.answer.is_none() {
                                self.answer = Some(r.resp.body.clone());
                            }
                            self.latest_answer = Some(r.resp.body.clone());
                            if self.state != UacState::Terminated {
                                self.state = UacState::Confirmed;
                            }
                        }
                        300..=699 => {
                            if disposition == ResponseDisposition::Deliver {
                                let b = self.invite_branch.clone();
                                let ack = self.ack(&b);
                                if let Some(tx) = self.invite.as_mut() {
                                    tx.set_ack(ack.clone());
                                }
                                self.outbox.push_back(ack);
                                if self.state != UacState::Confirmed {
                                    self.state = UacState::Terminated;
                                }
                            } else if let Some(a) = tx_ack(&self.invite) {
                                self.outbox.push_back(a);
                            }
                        }
                        _ => {}
                    }
                } else if let Some((_, tx)) = self
                    .other
                    .iter_mut()
                    .find(|(b, _)| Some(b.as_str()) == r.ess.branch.as_deref())
                {
                    tx.on_response(now, r.code);
                }
            }
            Inbound::Request(r) => {
                self.requests_in.push(r.req.method.to_string());
                if r.req.method.to_string() == "ACK" {
                    return;
                }
                if r.req.method.to_string() == "BYE" {
                    self.state = UacState::Terminated;
                }
                let method = r.req.method.to_string();
                let code = self
                    .reply_codes
                    .iter()
                    .find(|(m, _)| *m == method)
                    .map_or(200, |(_, c)| *c);
                let reason = match code {
                    200 => "OK",
                    202 => "Accepted",
                    _ => "Refused",
                };
                let mut resp = switchboard::sip::message::response_to(&r.req, code, reason, None);
                for (_, name, value) in self.reply_headers.iter().filter(|h| h.0 == method) {
                    switchboard::sip::message::push_header(&mut resp, name, value);
                }
                self.outbox
                    .push_back(switchboard::sip::message::encode_response(&resp));
            }
            _ => {}
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.invite
            .iter()
            .chain(self.other.iter().map(|(_, t)| t))
            .filter_map(|t| t.poll_timeout())
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut out = Vec::new();
        for tx in self
            .invite
            .iter_mut()
            .chain(self.other.iter_mut().map(|(_, t)| t))
        {
            tx.handle_timeout(now, &mut out);
        }
        for o in out {
            if let TxOutput::Retransmit(b) = o {
                self.outbox.push_back(b);
            }
        }
    }
}

/// The route set (Record-Route, reversed) and remote target (Contact URI) of a 2xx.
fn route_of(headers: &rsipstack::sip::Headers) -> Option<(Vec<String>, String)> {
    let mut set = Vec::new();
    let mut target = None;
    for h in headers.iter() {
        let name = h.name().to_ascii_lowercase();
        let value = h.value().to_string();
        if name == "record-route" {
            set.extend(value.split(',').map(|v| v.trim().to_string()));
        } else if name == "contact" || name == "m" {
            let uri = value.trim();
            let uri = match (uri.find('<'), uri.find('>')) {
                (Some(a), Some(b)) if a < b => &uri[a + 1..b],
                _ => uri,
            };
            target = Some(uri.to_string());
        }
    }
    set.reverse();
    Some((set, target?))
}

fn tx_ack(tx: &Option<ClientTx>) -> Option<Vec<u8>> {
    tx.as_ref()
        .and_then(|t| t.ack_to_resend())
        .map(<[u8]>::to_vec)
}

/// A PCMU/PCMA offer with telephone-event, the way most phones send it.
pub fn offer(ip: &str, port: u16, direction: &str) -> Vec<u8> {
    format!(
        "v=0\r\no=tester 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na={direction}\r\n"
    )
    .into_bytes()
}
