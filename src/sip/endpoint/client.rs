//! The user agent client side of the endpoint (RFC 3261 §13.2, §17.1.1): calls we place.
//!
//! [`Endpoint::invite`] sends an INVITE on an INVITE client transaction (Timer A retransmits
//! on UDP, Timer B gives up with 408 while nothing was heard, Timer D absorbs retransmitted
//! error responses). What comes back is reported as [`Event::Progress`] (1xx, early media),
//! [`Event::Answered`] (the first 2xx, once its ACK went out) or [`Event::Failed`] (a final
//! error, then [`Event::Ended`]). A 3xx is reported with its Contacts and not followed.
//!
//! A 401 or 407 is answered once per nonce with digest credentials when the call has them
//! (a new CSeq on the same Call-ID and From tag). [`Endpoint::cancel`] sends CANCEL once a
//! provisional arrived (§9.1), holding it until then. Forks (§13.2.2.4): each To tag of a
//! provisional is an early dialog reported with its tag; the first 2xx makes the dialog and
//! every later 2xx of another fork is ACKed and at once sent BYE.
//!
//! Once answered the call is an ordinary dialog: the in-dialog commands (BYE, re-INVITE,
//! INFO, UPDATE, REFER) and the peer's requests work as on calls we answered. The route set
//! is the 2xx's Record-Route reversed; strict routers are not supported (every route is
//! taken as loose, see `dialog`). An INVITE without SDP asks the peer to offer (late offer):
//! the 2xx's offer comes in [`Event::Answered`] and the ACK waits for the answer, given with
//! [`Endpoint::acknowledge`].

use std::time::Instant;

use super::{Call, CallHandle, CallPhase, ClientPurpose, CommandError, EndReason, Endpoint, Event};
use crate::sip::dialog::{via, Dialog, Peer, Transport};
use crate::sip::digest::{ClientAuth, Credentials};
use crate::sip::message::{
    canonical_name, header_value, is_token, push_header, set_body, Method, ParsedResponse, Request,
};
use rsipstack::sip::prelude::*;
use rsipstack::sip::{Header, Headers, Uri};

/// A party of an outgoing call: a URI with an optional display name (From, To).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// Display name, quoted on the wire.
    pub display_name: Option<String>,
    /// A `sip:`, `sips:` (or, for To, `tel:`) URI.
    pub uri: String,
}

impl Party {
    /// A party without display name.
    pub fn uri(uri: impl Into<String>) -> Self {
        Party {
            display_name: None,
            uri: uri.into(),
        }
    }

    fn name_addr(&self) -> String {
        match &self.display_name {
            Some(n) => {
                let n = n.replace('\\', "\\\\").replace('"', "\\\"");
                format!("\"{n}\" <{}>", self.uri)
            }
            None => format!("<{}>", self.uri),
        }
    }
}

/// What [`Endpoint::invite`] needs to place a call.
#[derive(Debug, Clone)]
pub struct OutgoingCall {
    /// The Request-URI: a `sip:` or `sips:` URI, optionally with `;transport=udp|tcp`
    /// (which must then agree with `peer`).
    pub target: String,
    /// Where the INVITE goes: the first preloaded route, an outbound proxy or the target's
    /// host, already resolved by the layer above.
    pub peer: Peer,
    /// Who calls.
    pub from: Party,
    /// Who is called (usually the target).
    pub to: Party,
    /// The SDP offer.
    pub sdp: Option<Vec<u8>>,
    /// Extra headers (name, value), in order.
    pub headers: Vec<(String, String)>,
    /// Preloaded route set (an outbound proxy), first hop first; each a URI with `;lr`,
    /// bare or in `<>`.
    pub route: Vec<String>,
    /// Used to answer a 401/407 challenge.
    pub credentials: Option<Credentials>,
    /// The Call-ID to use (None: a new one), so the layer above can name the call before
    /// it goes out.
    pub call_id: Option<String>,
}

/// Where the INVITE transaction stands, from the UAC core's side.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UacPhase {
    /// INVITE sent, nothing heard: a CANCEL must wait.
    Calling,
    /// A provisional arrived.
    Proceeding,
    /// A 2xx made the dialog: retransmissions of it get `ack` again, other forks' 2xx a BYE.
    Accepted {
        /// The winning fork's To tag.
        tag: String,
        /// Our ACK for it; None while the answer to the 2xx's offer is awaited.
        ack: Option<Vec<u8>>,
        /// Where the ACK goes.
        ack_peer: Peer,
        /// The INVITE's CSeq, which the ACK repeats.
        cseq: u32,
    },
}

/// Whether the layer above asked to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelState {
    NotAsked,
    /// Asked before any provisional: sent with the first one (§9.1).
    Held,
    Sent,
}

/// Headers the INVITE's own machinery writes: an extra one would contradict it.
const OUR_HEADERS: [&str; 10] = [
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Route",
    "Content-Length",
    "Content-Type",
];

/// Early dialogs remembered per call.
const MAX_EARLY_DIALOGS: usize = 16;

/// A call of ours until its INVITE transaction ends.
pub(super) struct Outgoing {
    /// The INVITE last sent (a challenge makes a new one): CANCEL and ACKs copy it.
    invite: Request,
    /// Its branch, the key of its client transaction.
    branch: String,
    /// Where it went.
    peer: Peer,
    phase: UacPhase,
    cancel: CancelState,
    /// To tags of the early dialogs seen.
    early: Vec<String>,
    /// Digest state when the call has credentials.
    auth: Option<ClientAuth>,
}

impl Endpoint {
    /// Places a call: sends the INVITE and returns its handle. Its progress comes as
    /// [`Event::Progress`], then [`Event::Answered`] or [`Event::Failed`] and
    /// [`Event::Ended`]. Once something answered provisionally the call rings as long as
    /// the peer lets it: bounding that is the caller's choice, by [`Endpoint::cancel`].
    pub fn invite(&mut self, now: Instant, out: OutgoingCall) -> Result<CallHandle, CommandError> {
        let uri = checked_target(&out)?;
        for p in [&out.from, &out.to] {
            let scheme = p.uri.split(':').next().unwrap_or("").to_ascii_lowercase();
            if !matches!(scheme.as_str(), "sip" | "sips" | "tel") || !clean(&p.uri) {
                return Err(CommandError::InvalidCall("a From or To URI"));
            }
            if p.display_name.as_deref().is_some_and(|n| !clean(n)) {
                return Err(CommandError::InvalidCall("a display name"));
            }
        }
        let extra_ok = out.headers.iter().all(|(n, v)| is_token(n) && clean(v))
            && out.route.iter().all(|r| clean(r));
        if !extra_ok {
            return Err(CommandError::InvalidCall("an extra header or route"));
        }
        let ours = out.headers.iter().any(|(n, _)| {
            OUR_HEADERS
                .iter()
                .any(|o| canonical_name(n).eq_ignore_ascii_case(o))
        });
        if ours {
            return Err(CommandError::InvalidCall(
                "an extra header the endpoint writes",
            ));
        }
        let call = CallHandle(self.next_call);
        self.next_call += 1;
        let tag = self.ids.token();
        let call_id = match out.call_id.as_deref() {
            Some(id) if is_call_id(id) => id.to_string(),
            Some(_) => return Err(CommandError::InvalidCall("a Call-ID of one word")),
            None => format!("{}@{}", self.ids.token(), self.cfg.local_addr.ip()),
        };
        let branch = self.ids.branch();
        let cseq = self.ids.first_cseq();
        let mut headers = Headers::default();
        headers.push(via(
            out.peer.transport,
            super::local_for(&self.cfg, &self.ports, out.peer.transport),
            &branch,
        ));
        headers.push(Header::MaxForwards(70.into()));
        for r in &out.route {
            let r = r.trim();
            let r = if r.starts_with('<') {
                r.to_string()
            } else {
                format!("<{r}>")
            };
            headers.push(Header::Route(r.into()));
        }
        headers.push(Header::From(
            format!("{};tag={tag}", out.from.name_addr()).into(),
        ));
        headers.push(Header::To(out.to.name_addr().into()));
        headers.push(Header::CallId(call_id.into()));
        headers.push(Header::CSeq(format!("{cseq} INVITE").into()));
        headers.push(Header::Contact(self.contact(out.peer).into()));
        headers.push(Header::Other("Allow".into(), super::ALLOW.into()));
        headers.push(Header::UserAgent(self.cfg.user_agent.clone().into()));
        for (n, v) in &out.headers {
            headers.push(Header::Other(n.clone(), v.clone()));
        }
        headers.push(Header::ContentLength(0.into()));
        let mut req = Request {
            method: Method::Invite,
            uri,
            version: rsipstack::sip::Version::V2,
            headers,
            body: Vec::new(),
        };
        if let Some(sdp) = out.sdp {
            set_body(&mut req, "application/sdp", sdp);
        }
        tracing::info!(call = call.0, target = %out.target, to = %out.peer.addr, "placing a call");
        self.outgoing.insert(
            call,
            Outgoing {
                invite: req.clone(),
                branch,
                peer: out.peer,
                phase: UacPhase::Calling,
                cancel: CancelState::NotAsked,
                early: Vec::new(),
                auth: out.credentials.map(ClientAuth::new),
            },
        );
        self.start_client(now, call, ClientPurpose::Invite, out.peer, req);
        Ok(call)
    }

    /// Cancels a call of ours not yet answered (§9.1): CANCEL goes out now when a provisional
    /// arrived, else with the first one. The call ends with [`EndReason::Cancelled`]; a 2xx
    /// that crosses the CANCEL is ACKed and sent BYE.
    pub fn cancel(&mut self, now: Instant, call: CallHandle) -> Result<(), CommandError> {
        let Some(o) = self.outgoing.get_mut(&call) else {
            return Err(if self.calls.contains_key(&call) {
                CommandError::WrongState
            } else {
                CommandError::NoSuchCall
            });
        };
        if o.cancel != CancelState::NotAsked {
            return Ok(());
        }
        match o.phase {
            UacPhase::Accepted { .. } => Err(CommandError::WrongState),
            UacPhase::Calling => {
                o.cancel = CancelState::Held;
                Ok(())
            }
            UacPhase::Proceeding => {
                self.send_cancel(now, call);
                Ok(())
            }
        }
    }

    /// The To tags of the early dialogs (forks) a call of ours has heard from, in order;
    /// None once its INVITE transaction is over or for a call we answered.
    pub fn early_dialogs(&self, call: CallHandle) -> Option<&[String]> {
        self.outgoing.get(&call).map(|o| o.early.as_slice())
    }

    /// Sends the ACK with our SDP answer to the offer of the 2xx, for a call we placed
    /// without an offer (the offer came in [`Event::Answered`]).
    pub fn acknowledge(
        &mut self,
        _now: Instant,
        call: CallHandle,
        sdp: Vec<u8>,
    ) -> Result<(), CommandError> {
        let Some(o) = self.outgoing.get(&call) else {
            return Err(if self.calls.contains_key(&call) {
                CommandError::WrongState
            } else {
                CommandError::NoSuchCall
            });
        };
        let UacPhase::Accepted {
            ack: None, cseq, ..
        } = o.phase
        else {
            return Err(CommandError::WrongState);
        };
        let c = self.calls.get(&call).ok_or(CommandError::NoSuchCall)?;
        let ack = ack_2xx(
            &mut self.ids,
            &self.cfg,
            super::local_for(&self.cfg, &self.ports, c.dialog.peer.transport),
            &c.dialog,
            &o.invite,
            cseq,
            sdp.clone(),
        );
        let peer = c.dialog.peer;
        if let Some(c) = self.calls.get_mut(&call) {
            c.local_sdp = sdp;
        }
        let bytes = ack.to_bytes();
        if let Some(Outgoing {
            phase: UacPhase::Accepted { ack, .. },
            ..
        }) = self.outgoing.get_mut(&call)
        {
            *ack = Some(bytes.clone());
        }
        self.send(peer, bytes);
        Ok(())
    }

    /// True while `call` is a call of ours whose INVITE has no 2xx yet.
    pub(super) fn is_unanswered_outgoing(&self, call: CallHandle) -> bool {
        self.outgoing
            .get(&call)
            .is_some_and(|o| !matches!(o.phase, UacPhase::Accepted { .. }))
    }

    /// Calls of ours still waiting for their answer.
    pub(super) fn unanswered_outgoing(&self) -> usize {
        self.outgoing
            .values()
            .filter(|o| !matches!(o.phase, UacPhase::Accepted { .. }))
            .count()
    }

    fn send_cancel(&mut self, now: Instant, call: CallHandle) {
        let Some(o) = self.outgoing.get_mut(&call) else {
            return;
        };
        o.cancel = CancelState::Sent;
        // §9.1: the INVITE's Request-URI, Call-ID, From, To, CSeq number, top Via and Route.
        let mut headers = Headers::default();
        let mut via_done = false;
        for h in o.invite.headers.iter() {
            match h {
                Header::Via(_) if !via_done => {
                    via_done = true;
                    headers.push(h.clone());
                }
                Header::Route(_)
                | Header::From(_)
                | Header::To(_)
                | Header::CallId(_)
                | Header::MaxForwards(_) => headers.push(h.clone()),
                _ => {}
            }
        }
        let cseq = invite_cseq(&o.invite);
        headers.push(Header::CSeq(format!("{cseq} CANCEL").into()));
        headers.push(Header::UserAgent(self.cfg.user_agent.clone().into()));
        headers.push(Header::ContentLength(0.into()));
        let req = Request {
            method: Method::Cancel,
            uri: o.invite.uri.clone(),
            version: rsipstack::sip::Version::V2,
            headers,
            body: Vec::new(),
        };
        let (peer, branch) = (o.peer, o.branch.clone());
        let timeout = now + self.cfg.timers.timeout();
        if let Some(e) = self.client_txs.get_mut(&branch) {
            e.tx.time_out_at(timeout);
        }
        self.rearm(super::TimerOwner::Client(branch));
        tracing::info!(call = call.0, "cancelling");
        self.start_client(now, call, ClientPurpose::Cancel, peer, req);
    }

    /// A response on one of our INVITE transactions that the transaction passed up.
    pub(super) fn on_invite_response(
        &mut self,
        now: Instant,
        key: &str,
        call: CallHandle,
        r: ParsedResponse,
    ) {
        let Some(o) = self.outgoing.get(&call) else {
            return;
        };
        // A provisional or error of an INVITE already replaced (a challenge was answered).
        if o.branch != key && r.code < 200 {
            return;
        }
        match r.code {
            100..=199 => self.on_provisional(now, call, r),
            200..=299 => self.on_invite_2xx(now, call, r),
            _ => self.on_invite_error(now, key, call, r),
        }
    }

    fn on_provisional(&mut self, now: Instant, call: CallHandle, r: ParsedResponse) {
        let Some(o) = self.outgoing.get_mut(&call) else {
            return;
        };
        if o.phase == UacPhase::Calling {
            o.phase = UacPhase::Proceeding;
        }
        if let Some(tag) = &r.ess.to_tag {
            // Bounded: a peer inventing tags cannot grow the call without end.
            if !o.early.contains(tag) && o.early.len() < MAX_EARLY_DIALOGS {
                o.early.push(tag.clone());
            }
        }
        let cancel = o.cancel;
        if cancel == CancelState::Held {
            self.send_cancel(now, call);
        }
        // 100 Trying is hop by hop: nothing for the layer above.
        if r.code > 100 && cancel == CancelState::NotAsked {
            self.events.push_back(Event::Progress {
                call,
                code: r.code,
                reason: reason_of(&r),
                to_tag: r.ess.to_tag.clone(),
                sdp: (!r.resp.body.is_empty()).then(|| r.resp.body.clone()),
            });
        }
    }

    fn on_invite_2xx(&mut self, now: Instant, call: CallHandle, r: ParsedResponse) {
        let Some(o) = self.outgoing.get(&call) else {
            return;
        };
        let Some(tag) = r.ess.to_tag.clone() else {
            tracing::debug!(call = call.0, "2xx without To tag ignored");
            return;
        };
        if let UacPhase::Accepted {
            tag: won,
            ack,
            ack_peer,
            ..
        } = &o.phase
        {
            if *won == tag {
                // §13.2.2.4: every retransmission of the 2xx gets the ACK again (none yet
                // while the layer above works out its answer).
                if let Some(ack) = ack.clone() {
                    let peer = *ack_peer;
                    self.send(peer, ack);
                }
                return;
            }
            // A later fork answered too: that dialog is not wanted.
            tracing::info!(call = call.0, fork = %tag, "a second fork answered; ending it");
            let hidden = CallHandle(self.next_call);
            self.next_call += 1;
            if let Some((ack, peer)) = self.confirm_dialog(hidden, &r) {
                self.send(peer, ack.to_bytes());
                if let Some(c) = self.calls.get_mut(&hidden) {
                    c.ended = true;
                }
                self.send_bye(now, hidden);
            }
            return;
        }
        let cancelled = o.cancel != CancelState::NotAsked;
        // With the offer in the 2xx the ACK carries our answer: it waits for the layer above.
        let late_offer = o.invite.body.is_empty() && !r.resp.body.is_empty() && !cancelled;
        let Some((ack, ack_peer)) = self.confirm_dialog(call, &r) else {
            return;
        };
        let ack = (!late_offer).then(|| ack.to_bytes());
        if let Some(ack) = &ack {
            self.send(ack_peer, ack.clone());
        }
        if let Some(o) = self.outgoing.get_mut(&call) {
            o.phase = UacPhase::Accepted {
                tag,
                ack,
                ack_peer,
                cseq: r.ess.cseq,
            };
        }
        if cancelled {
            // The answer crossed our CANCEL: the call is still unwanted.
            self.send_bye(now, call);
            self.end_call(now, call, EndReason::Cancelled);
            return;
        }
        let sdp = (!r.resp.body.is_empty()).then(|| r.resp.body.clone());
        self.events.push_back(Event::Answered { call, sdp });
    }

    /// Makes the dialog of a 2xx to our INVITE a confirmed call `handle`: the ACK it needs
    /// (without body) and where it goes.
    fn confirm_dialog(
        &mut self,
        handle: CallHandle,
        r: &ParsedResponse,
    ) -> Option<(Request, Peer)> {
        let owner = self
            .client_txs
            .get(r.ess.branch.as_deref().unwrap_or(""))
            .map(|e| e.call)?;
        let o = self.outgoing.get(&owner)?;
        let dialog = match Dialog::new_uac(&o.invite, &r.resp, o.peer) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(call = owner.0, error = %e, "unusable 2xx");
                return None;
            }
        };
        let ack = ack_2xx(
            &mut self.ids,
            &self.cfg,
            super::local_for(&self.cfg, &self.ports, dialog.peer.transport),
            &dialog,
            &o.invite,
            r.ess.cseq,
            Vec::new(),
        );
        let peer = dialog.peer;
        self.dialogs.insert(dialog.id.clone(), handle);
        let allows = super::invite::allows_update_response(&r.resp);
        self.calls.insert(handle, Call::outgoing(dialog, allows));
        Some((ack, peer))
    }

    fn on_invite_error(&mut self, now: Instant, key: &str, call: CallHandle, r: ParsedResponse) {
        let Some(o) = self.outgoing.get_mut(&call) else {
            return;
        };
        let ack = non_2xx_ack(&o.invite, &r, &self.cfg.user_agent).to_bytes();
        let (peer, current) = (o.peer, o.branch == key);
        if let Some(e) = self.client_txs.get_mut(key) {
            e.tx.set_ack(ack.clone());
        }
        self.send(peer, ack);
        let Some(o) = self.outgoing.get_mut(&call).filter(|_| current) else {
            return;
        };
        if matches!(r.code, 401 | 407) && o.cancel == CancelState::NotAsked {
            if let Some(auth) = o.auth.as_mut() {
                match auth.on_challenge(&r.resp.headers, r.code == 407) {
                    Ok(()) => return self.resend_invite(now, call),
                    Err(e) => {
                        tracing::info!(call = call.0, code = r.code, error = %e, "authentication failed")
                    }
                }
            }
        }
        let cancelled = o.cancel != CancelState::NotAsked;
        self.outgoing.remove(&call);
        let retry_after = header_value(&r.resp.headers, "Retry-After").and_then(leading_seconds);
        let contacts = if (300..400).contains(&r.code) {
            contact_uris(&r.resp.headers)
        } else {
            Vec::new()
        };
        tracing::info!(call = call.0, code = r.code, "call failed");
        self.events.push_back(Event::Failed {
            call,
            code: r.code,
            reason: reason_of(&r),
            retry_after,
            contacts,
        });
        let reason = if cancelled {
            EndReason::Cancelled
        } else {
            EndReason::Rejected(r.code)
        };
        self.events.push_back(Event::Ended { call, reason });
    }

    /// Sends the INVITE again with a new CSeq and branch and the credentials for the
    /// challenge just received.
    fn resend_invite(&mut self, now: Instant, call: CallHandle) {
        let branch = self.ids.branch();
        let cnonce = self.ids.token();
        let Some(o) = self.outgoing.get_mut(&call) else {
            return;
        };
        let local = super::local_for(&self.cfg, &self.ports, o.peer.transport);
        let mut req = o.invite.clone();
        let cseq = invite_cseq(&req) + 1;
        req.headers.retain(|h| {
            !matches!(h, Header::Via(_) | Header::CSeq(_)) && !is_credentials_header(h.name())
        });
        let mut headers = Headers::default();
        headers.push(via(o.peer.transport, local, &branch));
        for h in req.headers.iter() {
            headers.push(h.clone());
            if matches!(h, Header::CallId(_)) {
                headers.push(Header::CSeq(format!("{cseq} INVITE").into()));
            }
        }
        req.headers = headers;
        if let Some(auth) = o.auth.as_mut() {
            let uri = req.uri.to_string();
            for (name, value) in auth.authorizations("INVITE", &uri, &req.body, &cnonce) {
                push_header(&mut req, name, &value);
            }
        }
        // Content-Length stays the last header.
        let body = std::mem::take(&mut req.body);
        let ct = crate::sip::dialog::content_type(&req.headers);
        set_body(&mut req, ct.as_deref().unwrap_or("application/sdp"), body);
        o.invite = req.clone();
        o.branch = branch;
        o.phase = UacPhase::Calling;
        let peer = o.peer;
        tracing::debug!(call = call.0, "answering a challenge");
        self.start_client(now, call, ClientPurpose::Invite, peer, req);
    }

    /// Timer B: nobody answered the INVITE (or the CANCEL's 487 never came).
    pub(super) fn on_invite_timeout(&mut self, call: CallHandle, key: &str) {
        let Some(o) = self.outgoing.get(&call) else {
            return;
        };
        if o.branch != key || matches!(o.phase, UacPhase::Accepted { .. }) {
            return;
        }
        let cancelled = o.cancel != CancelState::NotAsked;
        self.outgoing.remove(&call);
        tracing::info!(call = call.0, "no final response to our INVITE");
        self.events.push_back(Event::Failed {
            call,
            code: 408,
            reason: "Request Timeout".into(),
            retry_after: None,
            contacts: Vec::new(),
        });
        let reason = if cancelled {
            EndReason::Cancelled
        } else {
            EndReason::Rejected(408)
        };
        self.events.push_back(Event::Ended { call, reason });
    }

    /// The INVITE transaction `key` of `call` is over: once it is the current one, the
    /// call no longer needs its UAC state.
    pub(super) fn invite_tx_gone(&mut self, call: CallHandle, key: &str) {
        if self.outgoing.get(&call).is_some_and(|o| o.branch == key) {
            self.outgoing.remove(&call);
        }
    }
}

impl Call {
    /// A call we placed whose 2xx we just ACKed.
    fn outgoing(dialog: Dialog, peer_allows_update: bool) -> Self {
        Call {
            phase: CallPhase::Confirmed,
            ..Call::new_base(dialog, peer_allows_update)
        }
    }
}

/// The INVITE's Request-URI, checked.
fn checked_target(out: &OutgoingCall) -> Result<Uri, CommandError> {
    let t = out.target.trim();
    let lower = t.to_ascii_lowercase();
    if !(lower.starts_with("sip:") || lower.starts_with("sips:"))
        || !clean(t)
        || t.contains(['<', '>', ' '])
    {
        return Err(CommandError::InvalidCall(
            "the target must be a sip: or sips: URI",
        ));
    }
    let transport = lower
        .split(';')
        .skip(1)
        .find_map(|p| p.strip_prefix("transport="))
        .map(|t| t.split('?').next().unwrap_or(""));
    match (transport, out.peer.transport) {
        (None, _)
        | (Some("udp"), Transport::Udp)
        | (Some("tcp"), Transport::Tcp)
        | (Some("tls"), Transport::Tls) => {}
        _ => {
            return Err(CommandError::InvalidCall(
                "the target's transport is not the peer's",
            ))
        }
    }
    Uri::try_from(t).map_err(|_| CommandError::InvalidCall("the target does not parse"))
}

/// No CR, LF or NUL: nothing that could end a header line.
fn clean(s: &str) -> bool {
    !s.contains(['\r', '\n', '\0'])
}

fn invite_cseq(req: &Request) -> u32 {
    req.cseq_header()
        .ok()
        .and_then(|c| c.seq().ok())
        .unwrap_or(1)
}

fn is_credentials_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("Authorization") || name.eq_ignore_ascii_case("Proxy-Authorization")
}

/// The ACK for the 2xx to `invite` in `dialog` (§13.2.2.4): a transaction of its own, the
/// INVITE's CSeq number and credentials, `sdp` (the answer to a 2xx offer, or nothing) as its
/// body.
fn ack_2xx(
    ids: &mut crate::sip::ids::Ids,
    cfg: &super::EndpointConfig,
    local: std::net::SocketAddr,
    dialog: &Dialog,
    invite: &Request,
    cseq: u32,
    sdp: Vec<u8>,
) -> Request {
    let mut ack = dialog.ack(cseq, None, ids, local, &cfg.user_agent);
    for h in invite.headers.iter() {
        if is_credentials_header(h.name()) {
            ack.headers.push(h.clone());
        }
    }
    set_body(&mut ack, "application/sdp", sdp);
    ack
}

/// The ACK for an error response to `invite` (§17.1.1.3): the INVITE's Request-URI, top Via
/// (so its branch), Route, From, Call-ID and CSeq number, and the response's To.
fn non_2xx_ack(invite: &Request, r: &ParsedResponse, user_agent: &str) -> Request {
    let mut headers = Headers::default();
    let mut via_done = false;
    for h in invite.headers.iter() {
        match h {
            Header::Via(_) if !via_done => {
                via_done = true;
                headers.push(h.clone());
            }
            Header::MaxForwards(_) | Header::Route(_) | Header::From(_) | Header::CallId(_) => {
                headers.push(h.clone())
            }
            _ => {}
        }
    }
    if let Ok(to) = r.resp.to_header() {
        headers.push(Header::To(to.clone()));
    }
    headers.push(Header::CSeq(format!("{} ACK", invite_cseq(invite)).into()));
    headers.push(Header::UserAgent(user_agent.into()));
    headers.push(Header::ContentLength(0.into()));
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: rsipstack::sip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

fn reason_of(r: &ParsedResponse) -> String {
    r.resp
        .wire_reason
        .clone()
        .unwrap_or_else(|| r.resp.status_code.text().to_string())
}

/// Retry-After's delta-seconds (RFC 3261 §20.33), ignoring comment and parameters.
pub(crate) fn leading_seconds(v: &str) -> Option<u32> {
    let digits: String = v.trim().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Every Contact URI of a response, in order (a 3xx's targets).
fn contact_uris(headers: &Headers) -> Vec<String> {
    headers
        .iter()
        .filter(|h| crate::sip::message::canonical_name(h.name()).eq_ignore_ascii_case("Contact"))
        .flat_map(|h| crate::sip::dialog::split_commas(h.value()))
        .map(|v| crate::sip::dialog::bare_uri(&v))
        .filter(|u| !u.is_empty())
        .collect()
}

/// A Call-ID's word (RFC 3261 §25.1 `word ["@" word]`): printable, no blanks or separators
/// that would break the header.
fn is_call_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b',' | b';'))
}
