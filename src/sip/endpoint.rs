//! The sans-IO SIP user agent server core: routes each inbound message to its transaction
//! or dialog, answers what needs no decision (100 Trying, OPTIONS, CANCEL, BYE, NOTIFY, an
//! UPDATE without body, 481, 405, 422 ...), runs each call's session timer (RFC 4028: our
//! refreshes, BYE when the peer's stop), and reports calls to the layer above, which decides
//! with [`Endpoint::answer`] and friends.
//!
//! Inputs: [`Endpoint::handle_message`], [`Endpoint::handle_timeout`] and the call commands.
//! Outputs, drained by the caller after every input: [`Endpoint::poll_transmit`],
//! [`Endpoint::poll_event`], then [`Endpoint::poll_timeout`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::dialog::{content_type, Dialog, DialogId, Peer};
use super::ids::Ids;
use super::message::{
    classify_with, encode_response, header_value, push_header, refusal_to, response_to, set_body,
    Essentials, Inbound, Method, ParsedRequest, ParsedResponse, Request, ALLOW,
};
use super::refer::{refer_event_id, sipfrag_status, subscription_terminated, TargetError};
use super::session_timer::{
    has_option_tag, Due, Negotiated, Refresher, SessionTimer, SessionTimerConfig,
};
use super::transaction::{
    ClientTx, InviteServerTx, NonInviteServerTx, ResponseDisposition, TimerConfig, TxOutput,
};
use crate::error::{Refusal, SipStatus};
use rsipstack::sip::prelude::*;

/// Static settings of the endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// RFC 3261 timers.
    pub timers: TimerConfig,
    /// Our address as written into Via and Contact.
    pub local_addr: SocketAddr,
    /// Server / User-Agent header value.
    pub user_agent: String,
}

/// Identifies a call (an INVITE dialog we answer) between the endpoint and the layer above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(pub u64);

/// Bytes to send to a peer.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Destination.
    pub peer: Peer,
    /// The serialized message.
    pub bytes: Vec<u8>,
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The peer sent BYE.
    RemoteBye,
    /// We sent BYE (and it completed or timed out).
    LocalBye,
    /// The peer cancelled before we answered.
    Cancelled,
    /// We answered with a final error response.
    Rejected(u16),
    /// No ACK for our 2xx within 64·T1; we sent BYE.
    AckTimeout,
    /// The peer stopped answering (a request of ours timed out).
    Timeout,
    /// The session timer ran out without a refresh (RFC 4028 §10); we sent BYE.
    SessionExpired,
}

/// Something the layer above must know or decide.
#[derive(Debug)]
pub enum Event {
    /// A new INVITE: answer with `ring`/`answer`/`reject`.
    Incoming {
        /// The call.
        call: CallHandle,
        /// The INVITE as received.
        request: Box<Request>,
        /// Where it came from.
        peer: Peer,
    },
    /// The ACK for our 2xx arrived; its body is the SDP answer when we made the offer.
    Confirmed {
        /// The call.
        call: CallHandle,
        /// The ACK's SDP body, if any.
        sdp: Option<Vec<u8>>,
    },
    /// An UPDATE with an SDP offer (RFC 3311): reply with `answer_reinvite` or
    /// `reject_reinvite`, as for a re-INVITE. UPDATEs without a body are answered here.
    Update {
        /// The call.
        call: CallHandle,
        /// The offer.
        sdp: Vec<u8>,
    },
    /// A re-INVITE: reply with `answer_reinvite` or `reject_reinvite`.
    ReInvite {
        /// The call.
        call: CallHandle,
        /// The offer, when the re-INVITE carries one.
        sdp: Option<Vec<u8>>,
    },
    /// The final answer to a re-INVITE we sent (already ACKed).
    ReInviteAnswered {
        /// The call.
        call: CallHandle,
        /// Final status code.
        code: u16,
        /// The SDP answer of a 2xx.
        sdp: Option<Vec<u8>>,
    },
    /// The final response to a REFER of ours (a 2xx, normally 202, means the peer took the
    /// transfer on); 408 when the peer never answered. A 408 or 481 also ends the call, so
    /// [`Event::Ended`] follows.
    ReferAnswered {
        /// The call.
        call: CallHandle,
        /// Final status code.
        code: u16,
    },
    /// A NOTIFY of the `refer` subscription (RFC 3515 §2.4.4), already answered 200.
    TransferProgress {
        /// The call.
        call: CallHandle,
        /// The status code of the `message/sipfrag` body (e.g. 100, 180, 200, 486); 0 when
        /// the body is not a sipfrag starting with a status line.
        status: u16,
        /// `Subscription-State: terminated`: no more progress will be reported.
        terminated: bool,
    },
    /// An INFO request in the call (already answered 200).
    Info {
        /// The call.
        call: CallHandle,
        /// Content-Type without parameters, lowercased.
        content_type: Option<String>,
        /// Body.
        body: Vec<u8>,
    },
    /// The call is over; the handle is no longer valid.
    Ended {
        /// The call.
        call: CallHandle,
        /// Why.
        reason: EndReason,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The call ended or never existed.
    #[error("no such call")]
    NoSuchCall,
    /// The call is not in a state where this is possible.
    #[error("not possible in the call's current state")]
    WrongState,
    /// A transfer target we cannot send.
    #[error("transfer target {0}")]
    InvalidTarget(#[from] TargetError),
}

/// Key of a server transaction (RFC 3261 §17.2.3): branch, sent-by, method (ACK → INVITE).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct TxKey {
    id: String,
    invite: bool,
    cancel: bool,
}

fn tx_key(ess: &Essentials, method: Method) -> TxKey {
    let id = if ess.has_rfc3261_branch() {
        format!("{}|{}", ess.branch.as_deref().unwrap_or(""), ess.sent_by)
    } else {
        // RFC 2543 peers: match on what their requests share (§17.2.3, last paragraph, simplified).
        format!(
            "2543|{}|{}|{}|{}",
            ess.call_id,
            ess.cseq,
            ess.from_tag.as_deref().unwrap_or(""),
            ess.sent_by
        )
    };
    TxKey {
        id,
        invite: matches!(method, Method::Invite | Method::Ack),
        cancel: method == Method::Cancel,
    }
}

enum ServerTx {
    Invite {
        tx: InviteServerTx,
        call: CallHandle,
        /// Kept until the final response is built from it, then dropped (idle calls stay small).
        request: Option<Box<Request>>,
    },
    NonInvite(NonInviteServerTx),
}

/// What a client transaction was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientPurpose {
    Bye,
    Info,
    /// `refresh`: a session refresh of ours (RFC 4028), not reported to the layer above.
    ReInvite {
        cseq: u32,
        refresh: bool,
    },
    Refer {
        cseq: u32,
    },
    /// A session refresh of ours by UPDATE.
    Update,
}

struct ClientEntry {
    tx: ClientTx,
    call: CallHandle,
    purpose: ClientPurpose,
    peer: Peer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallPhase {
    /// INVITE received, no final response yet.
    Early,
    /// 2xx sent, waiting for ACK.
    Answered,
    /// ACK received.
    Confirmed,
    /// We sent BYE.
    Terminating,
}

struct Call {
    dialog: Dialog,
    phase: CallPhase,
    /// The INVITE (initial or re-INVITE) transaction awaiting our final response or its ACK.
    invite_tx: Option<TxKey>,
    /// CSeq of the INVITE whose 2xx awaits ACK.
    awaiting_ack: Option<u32>,
    /// A re-INVITE is waiting for the layer above.
    reinvite_pending: bool,
    /// `Event::Ended` was reported.
    ended: bool,
    /// A re-INVITE of ours awaits its final response.
    reinvite_out: bool,
    /// CSeq numbers of our REFERs whose implicit subscriptions may still send NOTIFY
    /// (RFC 3515 §2.4.6: a NOTIFY's `id` is the REFER's CSeq).
    refer_subs: Vec<u32>,
    /// An UPDATE with an offer waiting for the layer above: its transaction and request.
    update_pending: Option<(TxKey, Box<Request>)>,
    /// The session timer the 2xx to the pending INVITE or UPDATE will start.
    timer_offer: Option<Negotiated>,
    /// The running session timer.
    timer: Option<SessionTimer>,
    /// The peer listed UPDATE in Allow: our refreshes use it.
    peer_allows_update: bool,
    /// The last SDP we sent, re-sent unchanged by a refreshing re-INVITE.
    local_sdp: Vec<u8>,
}

impl Call {
    /// A call in its initial INVITE transaction `key`.
    fn new(dialog: Dialog, key: TxKey, peer_allows_update: bool) -> Self {
        Call {
            dialog,
            phase: CallPhase::Early,
            invite_tx: Some(key),
            awaiting_ack: None,
            reinvite_pending: false,
            ended: false,
            reinvite_out: false,
            refer_subs: Vec::new(),
            update_pending: None,
            timer_offer: None,
            timer: None,
            peer_allows_update,
            local_sdp: Vec::new(),
        }
    }

    /// Starts the negotiated session timer: our 2xx is a refresh (RFC 4028 §7.2).
    fn start_timer(&mut self, now: Instant) -> Option<Negotiated> {
        let n = self.timer_offer.take()?;
        self.timer = Some(SessionTimer::start(now, n.interval, n.refresher));
        Some(n)
    }

    /// The running timer as a negotiation input.
    fn current_timer(&self) -> Option<(u32, Refresher)> {
        self.timer.map(|t| (t.interval, t.refresher))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerOwner {
    Server(TxKey),
    Client(String),
    /// A call's session timer (RFC 4028).
    Session(CallHandle),
}

/// The user agent server core.
pub struct Endpoint {
    cfg: EndpointConfig,
    server_txs: HashMap<TxKey, ServerTx>,
    client_txs: HashMap<String, ClientEntry>,
    calls: HashMap<CallHandle, Call>,
    dialogs: HashMap<DialogId, CallHandle>,
    timers: BinaryHeap<Reverse<(Instant, TimerOwner)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_call: u64,
    scratch: Vec<TxOutput>,
    session_timers: SessionTimerConfig,
    /// Every tag, branch, first CSeq and random delay the endpoint makes.
    ids: Ids,
}

impl Endpoint {
    /// An endpoint with no calls, its identifiers seeded from entropy.
    pub fn new(cfg: EndpointConfig) -> Self {
        Self::with_ids(cfg, Ids::from_entropy())
    }

    /// An endpoint with no calls whose identifiers come from `ids`: the same seed and the
    /// same inputs give the same messages.
    pub fn with_ids(cfg: EndpointConfig, ids: Ids) -> Self {
        Endpoint {
            cfg,
            server_txs: HashMap::new(),
            client_txs: HashMap::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_call: 1,
            scratch: Vec::new(),
            session_timers: SessionTimerConfig::default(),
            ids,
        }
    }

    /// Sets the session timer settings (RFC 4028) for calls from now on.
    pub fn set_session_timers(&mut self, cfg: SessionTimerConfig) {
        self.session_timers = cfg;
    }

    /// Number of live calls.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Number of live transactions (server and client).
    pub fn transaction_count(&self) -> usize {
        self.server_txs.len() + self.client_txs.len()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the layer above.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Handles one message from the network.
    pub fn handle_message(&mut self, now: Instant, peer: Peer, bytes: &[u8]) {
        match classify_with(bytes, peer.transport.is_reliable(), &mut self.ids) {
            Inbound::Request(r) => self.on_request(now, peer, *r),
            Inbound::Response(r) => self.on_response(now, *r),
            Inbound::Reject {
                response,
                code,
                reason,
            } => {
                tracing::info!(%code, %reason, from = %peer.addr, "refused a malformed request");
                self.send(peer, response);
            }
            Inbound::Drop { reason } => {
                tracing::debug!(%reason, from = %peer.addr, "dropped a message");
            }
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, owner))) = self.timers.pop() else {
                break;
            };
            match owner {
                TimerOwner::Server(key) => self.fire_server(now, key),
                TimerOwner::Client(branch) => self.fire_client(now, branch),
                TimerOwner::Session(call) => self.fire_session(now, call),
            }
        }
    }

    fn fire_server(&mut self, now: Instant, key: TxKey) {
        let mut out = std::mem::take(&mut self.scratch);
        let (terminated, call, peer) = match self.server_txs.get_mut(&key) {
            Some(ServerTx::Invite { tx, call, .. }) => {
                tx.handle_timeout(now, &mut out);
                let peer = self.calls.get(call).map(|c| c.dialog.peer);
                (tx.is_terminated(), Some(*call), peer)
            }
            Some(ServerTx::NonInvite(tx)) => {
                tx.handle_timeout(now);
                (tx.is_terminated(), None, None)
            }
            None => (false, None, None),
        };
        for o in out.drain(..) {
            match (o, call) {
                (TxOutput::Retransmit(bytes), _) => {
                    if let Some(peer) = peer {
                        self.send(peer, bytes);
                    }
                }
                (TxOutput::TimedOut, Some(call)) => self.on_server_invite_timeout(now, call),
                (TxOutput::TimedOut, None) => {}
            }
        }
        self.scratch = out;
        if terminated {
            self.server_txs.remove(&key);
        } else {
            self.rearm(TimerOwner::Server(key));
        }
    }

    /// Timer H (no ACK for an error response) or L without ACK for a 2xx.
    fn on_server_invite_timeout(&mut self, now: Instant, call: CallHandle) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        match c.phase {
            CallPhase::Answered if c.awaiting_ack.is_some() => {
                tracing::warn!(
                    call = call.0,
                    "no ACK for our 2xx; ending the call with BYE"
                );
                self.send_bye(now, call);
                self.end_call(now, call, EndReason::AckTimeout);
            }
            CallPhase::Confirmed if c.awaiting_ack.is_some() => {
                // A re-INVITE's 2xx was never acknowledged: same remedy (§14.2).
                self.send_bye(now, call);
                self.end_call(now, call, EndReason::AckTimeout);
            }
            _ => {}
        }
    }

    fn fire_client(&mut self, now: Instant, branch: String) {
        let mut out = std::mem::take(&mut self.scratch);
        let Some(entry) = self.client_txs.get_mut(&branch) else {
            self.scratch = out;
            return;
        };
        entry.tx.handle_timeout(now, &mut out);
        let (peer, call, purpose, terminated) = (
            entry.peer,
            entry.call,
            entry.purpose,
            entry.tx.is_terminated(),
        );
        for o in out.drain(..) {
            match o {
                TxOutput::Retransmit(bytes) => self.send(peer, bytes),
                TxOutput::TimedOut => {
                    if let ClientPurpose::Refer { cseq } = purpose {
                        self.refer_answered(call, cseq, 408);
                    }
                    if purpose == ClientPurpose::Bye {
                        self.forget_call(now, call);
                    } else {
                        // An unanswered in-dialog request means the peer is gone (§12.2.1.2).
                        self.send_bye(now, call);
                        self.end_call(now, call, EndReason::Timeout);
                    }
                }
            }
        }
        self.scratch = out;
        if terminated {
            self.client_txs.remove(&branch);
        } else {
            self.rearm(TimerOwner::Client(branch));
        }
    }

    fn rearm(&mut self, owner: TimerOwner) {
        let at = match &owner {
            TimerOwner::Server(k) => match self.server_txs.get(k) {
                Some(ServerTx::Invite { tx, .. }) => tx.poll_timeout(),
                Some(ServerTx::NonInvite(tx)) => tx.poll_timeout(),
                None => None,
            },
            TimerOwner::Client(b) => self.client_txs.get(b).and_then(|e| e.tx.poll_timeout()),
            TimerOwner::Session(call) => {
                self.calls.get(call).and_then(|c| c.timer).map(|t| t.next())
            }
        };
        if let Some(at) = at {
            self.timers.push(Reverse((at, owner)));
        }
    }

    fn send(&mut self, peer: Peer, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit { peer, bytes });
    }

    fn on_request(&mut self, now: Instant, peer: Peer, r: ParsedRequest) {
        let method = r.req.method;
        if method == Method::Ack {
            return self.on_ack(now, r);
        }
        let key = tx_key(&r.ess, method);
        if let Some(tx) = self.server_txs.get(&key) {
            let again = match tx {
                ServerTx::Invite { tx, .. } => tx.on_retransmitted_request(),
                ServerTx::NonInvite(tx) => tx.on_retransmitted_request(),
            };
            if let Some(bytes) = again.map(<[u8]>::to_vec) {
                self.send(peer, bytes);
            }
            return;
        }
        if method == Method::Cancel {
            return self.on_cancel(now, peer, key, r);
        }
        if let Some(reason) = unsupported_requirement(&r.req) {
            let mut resp = refusal_to(&r.req, &Refusal::BadExtension, Some(&self.ids.token()));
            push_header(&mut resp, "Unsupported", &reason);
            return self.answer_non_invite(now, peer, key, resp);
        }
        if method == Method::Invite {
            if let Some(why) = unusable_media_type(&r.req) {
                let mut resp = refusal_to(&r.req, &why, Some(&self.ids.token()));
                push_header(&mut resp, "Accept", "application/sdp");
                return self.reply(now, peer, key, method, resp);
            }
        }
        if r.ess.to_tag.is_some() {
            return self.on_in_dialog(now, peer, key, r);
        }
        match method {
            Method::Invite => self.on_new_invite(now, peer, key, r),
            Method::Options => {
                let mut resp = response_to(&r.req, 200, "OK", Some(&self.ids.token()));
                self.decorate(&mut resp, peer);
                push_header(
                    &mut resp,
                    "Accept",
                    "application/sdp, application/dtmf-relay, application/dtmf",
                );
                push_header(&mut resp, "Accept-Language", "en");
                push_header(&mut resp, "Supported", "timer");
                self.answer_non_invite(now, peer, key, resp);
            }
            Method::Bye | Method::Info | Method::Update | Method::PRack | Method::Notify => {
                let resp = refusal_to(&r.req, &Refusal::NoSuchDialog, Some(&self.ids.token()));
                self.answer_non_invite(now, peer, key, resp);
            }
            _ => {
                let mut resp =
                    refusal_to(&r.req, &Refusal::MethodNotAllowed, Some(&self.ids.token()));
                push_header(&mut resp, "Allow", ALLOW);
                self.answer_non_invite(now, peer, key, resp);
            }
        }
    }

    /// Adds Server, Allow and Contact to a response.
    fn decorate(&self, resp: &mut rsipstack::sip::Response, peer: Peer) {
        push_header(resp, "Allow", ALLOW);
        push_header(resp, "Contact", &self.contact(peer));
        push_header(resp, "Server", &self.cfg.user_agent);
    }

    fn contact(&self, peer: Peer) -> String {
        match peer.transport {
            super::dialog::Transport::Udp => format!("<sip:switchboard@{}>", self.cfg.local_addr),
            super::dialog::Transport::Tcp => {
                format!("<sip:switchboard@{};transport=tcp>", self.cfg.local_addr)
            }
        }
    }

    /// A new in-dialog request of ours on a confirmed call that also passes `ready`: the
    /// request (with our Contact when `contact`), where it goes, and its CSeq.
    fn dialog_request(
        &mut self,
        call: CallHandle,
        method: Method,
        contact: bool,
        ready: impl FnOnce(&Call) -> bool,
    ) -> Result<(Request, Peer, u32), CommandError> {
        let c = self.calls.get(&call).ok_or(CommandError::NoSuchCall)?;
        let our_contact = contact.then(|| self.contact(c.dialog.peer));
        let c = self.calls.get_mut(&call).ok_or(CommandError::NoSuchCall)?;
        if c.phase != CallPhase::Confirmed || !ready(c) {
            return Err(CommandError::WrongState);
        }
        let mut req = c.dialog.request(
            method,
            &mut self.ids,
            self.cfg.local_addr,
            &self.cfg.user_agent,
        );
        if let Some(contact) = our_contact {
            push_header(&mut req, "Contact", &contact);
        }
        Ok((req, c.dialog.peer, c.dialog.local_cseq))
    }

    fn answer_non_invite(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxKey,
        resp: rsipstack::sip::Response,
    ) {
        let code = resp.status_code.code();
        let bytes = encode_response(&resp);
        let mut tx = NonInviteServerTx::new(self.cfg.timers, peer.transport.is_reliable());
        tx.respond(now, code, bytes.clone());
        self.send(peer, bytes);
        if !tx.is_terminated() {
            self.server_txs.insert(key.clone(), ServerTx::NonInvite(tx));
            self.rearm(TimerOwner::Server(key));
        }
    }

    fn on_new_invite(&mut self, now: Instant, peer: Peer, key: TxKey, r: ParsedRequest) {
        let call = CallHandle(self.next_call);
        self.next_call += 1;
        let local_tag = self.ids.token();
        let first_cseq = self.ids.first_cseq();
        let dialog = match Dialog::new_uas(&r.req, &local_tag, peer, first_cseq) {
            Ok(d) => d,
            Err(e) => {
                // The phrase says what the dialog lacks.
                let resp = response_to(&r.req, e.code(), &e.to_string(), Some(&local_tag));
                return self.reply(now, peer, key, Method::Invite, resp);
            }
        };
        let timer_offer =
            match super::session_timer::negotiate(&r.req.headers, &self.session_timers, None) {
                Ok(n) => n,
                Err(min) => {
                    let resp = too_small(&r.req, min, Some(&local_tag));
                    return self.reply(now, peer, key, Method::Invite, resp);
                }
            };
        let mut tx = InviteServerTx::new(self.cfg.timers, peer.transport.is_reliable());
        // 100 Trying at once (§17.2.1), without a To tag.
        let trying = encode_response(&response_to(&r.req, 100, "Trying", None));
        tx.respond(now, 100, trying.clone());
        self.send(peer, trying);
        self.dialogs.insert(dialog.id.clone(), call);
        let mut c = Call::new(dialog, key.clone(), allows_update(&r.req));
        c.timer_offer = timer_offer;
        self.calls.insert(call, c);
        self.server_txs.insert(
            key,
            ServerTx::Invite {
                tx,
                call,
                request: Some(Box::new(r.req.clone())),
            },
        );
        self.events.push_back(Event::Incoming {
            call,
            request: Box::new(r.req),
            peer,
        });
    }

    fn on_cancel(&mut self, now: Instant, peer: Peer, key: TxKey, r: ParsedRequest) {
        let invite_key = TxKey {
            invite: true,
            cancel: false,
            ..key.clone()
        };
        let target = match self.server_txs.get(&invite_key) {
            Some(ServerTx::Invite { call, tx, .. }) => Some((*call, tx.state())),
            _ => None,
        };
        let Some((call, state)) = target else {
            let resp = refusal_to(&r.req, &Refusal::NoSuchDialog, Some(&self.ids.token()));
            return self.answer_non_invite(now, peer, key, resp);
        };
        let local_tag = self
            .calls
            .get(&call)
            .map(|c| c.dialog.id.local_tag.clone())
            .unwrap_or_else(|| self.ids.token());
        let ok = response_to(&r.req, 200, "OK", Some(&local_tag));
        self.answer_non_invite(now, peer, key, ok);
        if state == super::transaction::InviteServerState::Proceeding {
            let initial = self
                .calls
                .get(&call)
                .is_some_and(|c| c.phase == CallPhase::Early);
            let (code, reason) = Refusal::Terminated.status();
            self.final_invite_response(now, call, code, reason, None);
            if initial {
                self.end_call(now, call, EndReason::Cancelled);
            } else if let Some(c) = self.calls.get_mut(&call) {
                c.reinvite_pending = false;
                c.timer_offer = None;
            }
        }
    }

    fn on_ack(&mut self, now: Instant, r: ParsedRequest) {
        // ACK for a non-2xx final shares the INVITE's branch.
        let key = tx_key(&r.ess, Method::Ack);
        if let Some(ServerTx::Invite { tx, .. }) = self.server_txs.get_mut(&key) {
            if tx.on_ack(now) {
                self.rearm(TimerOwner::Server(key));
                return;
            }
        }
        let Some(id) = dialog_id_of(&r.ess) else {
            return;
        };
        let Some(&call) = self.dialogs.get(&id) else {
            tracing::debug!(call_id = %r.ess.call_id, "stray ACK ignored");
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.awaiting_ack != Some(r.ess.cseq) {
            return;
        }
        c.awaiting_ack = None;
        let first = c.phase == CallPhase::Answered;
        if first {
            c.phase = CallPhase::Confirmed;
        }
        if let Some(k) = c.invite_tx.take() {
            if let Some(ServerTx::Invite { tx, .. }) = self.server_txs.get_mut(&k) {
                tx.on_2xx_ack();
            }
        }
        let sdp = (!r.req.body.is_empty()).then(|| r.req.body.clone());
        if first || sdp.is_some() {
            self.events.push_back(Event::Confirmed { call, sdp });
        }
    }

    fn on_in_dialog(&mut self, now: Instant, peer: Peer, key: TxKey, r: ParsedRequest) {
        let method = r.req.method;
        let call = dialog_id_of(&r.ess).and_then(|id| self.dialogs.get(&id).copied());
        let Some(call) = call else {
            let resp = refusal_to(&r.req, &Refusal::NoSuchDialog, None);
            return self.reply(now, peer, key, method, resp);
        };
        let cseq_ok = self
            .calls
            .get_mut(&call)
            .is_some_and(|c| c.dialog.accept_remote_cseq(method, r.ess.cseq));
        if !cseq_ok {
            let resp = refusal_to(&r.req, &Refusal::CSeqOutOfOrder, None);
            return self.reply(now, peer, key, method, resp);
        }
        match method {
            Method::Bye => {
                let resp = response_to(&r.req, 200, "OK", None);
                self.answer_non_invite(now, peer, key, resp);
                self.end_call(now, call, EndReason::RemoteBye);
            }
            Method::Info => {
                let resp = response_to(&r.req, 200, "OK", None);
                self.answer_non_invite(now, peer, key, resp);
                self.events.push_back(Event::Info {
                    call,
                    content_type: content_type(&r.req.headers),
                    body: r.req.body,
                });
            }
            Method::Options => {
                let mut resp = response_to(&r.req, 200, "OK", None);
                self.decorate(&mut resp, peer);
                self.answer_non_invite(now, peer, key, resp);
            }
            Method::Invite => self.on_reinvite(now, peer, key, call, r),
            Method::Update => self.on_update(now, peer, key, call, r),
            Method::Notify => self.on_notify(now, peer, key, call, r),
            _ => {
                let mut resp = refusal_to(&r.req, &Refusal::MethodNotAllowed, None);
                push_header(&mut resp, "Allow", ALLOW);
                self.answer_non_invite(now, peer, key, resp);
            }
        }
    }

    /// A NOTIFY in a dialog: progress of a transfer we asked for (RFC 3515 §2.4.4).
    fn on_notify(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxKey,
        call: CallHandle,
        r: ParsedRequest,
    ) {
        let id = header_value(&r.req.headers, "Event").and_then(refer_event_id);
        let mut c = self.calls.get_mut(&call);
        // Without an id RFC 3515 §2.4.6 means the dialog's first REFER; we take the oldest one
        // still subscribed, which is the same unless several REFERs overlap.
        let sub = c.as_deref_mut().and_then(|c| match id {
            Some(Some(id)) => c.refer_subs.iter().position(|s| *s == id),
            Some(None) if !c.refer_subs.is_empty() => Some(0),
            _ => None,
        });
        let (Some(c), Some(sub)) = (c, sub) else {
            // Not a subscription of ours: RFC 6665 §4.1.3.
            let resp = refusal_to(&r.req, &Refusal::NoSuchSubscription, None);
            return self.answer_non_invite(now, peer, key, resp);
        };
        let terminated =
            header_value(&r.req.headers, "Subscription-State").is_some_and(subscription_terminated);
        if terminated {
            c.refer_subs.remove(sub);
        }
        // A body we cannot read still gets 200: a non-2xx would end the subscription at the
        // notifier (RFC 6665 §4.2.2) and we would never learn the transfer's outcome.
        let is_sipfrag = content_type(&r.req.headers).is_none_or(|ct| ct == "message/sipfrag");
        let status = if is_sipfrag {
            sipfrag_status(&r.req.body).unwrap_or(0)
        } else {
            0
        };
        let report = !c.ended;
        let resp = response_to(&r.req, 200, "OK", None);
        self.answer_non_invite(now, peer, key, resp);
        tracing::debug!(call = call.0, status, terminated, "transfer progress");
        if report {
            self.events.push_back(Event::TransferProgress {
                call,
                status,
                terminated,
            });
        }
    }

    fn reply(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxKey,
        method: Method,
        resp: rsipstack::sip::Response,
    ) {
        if method == Method::Invite {
            let code = resp.status_code.code();
            let bytes = encode_response(&resp);
            let mut tx = InviteServerTx::new(self.cfg.timers, peer.transport.is_reliable());
            tx.respond(now, code, bytes.clone());
            self.send(peer, bytes);
            self.server_txs.insert(
                key.clone(),
                ServerTx::Invite {
                    tx,
                    call: CallHandle(0),
                    request: None,
                },
            );
            self.rearm(TimerOwner::Server(key));
        } else {
            self.answer_non_invite(now, peer, key, resp);
        }
    }

    fn on_reinvite(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxKey,
        call: CallHandle,
        r: ParsedRequest,
    ) {
        let busy = self.calls.get(&call).is_none_or(|c| {
            c.reinvite_pending
                || c.update_pending.is_some()
                || c.awaiting_ack.is_some()
                || c.phase != CallPhase::Confirmed
        });
        let glare = self.calls.get(&call).is_some_and(|c| c.reinvite_out);
        if glare {
            // §14.2: both sides re-INVITEd at once.
            let resp = refusal_to(&r.req, &Refusal::OurOfferPending, None);
            return self.reply(now, peer, key, Method::Invite, resp);
        }
        if busy {
            // §14.2: an INVITE arriving while another is pending gets 500 with Retry-After.
            let mut resp = refusal_to(&r.req, &Refusal::TheirOfferPending, None);
            push_header(&mut resp, "Retry-After", &self.ids.u64(0..=10).to_string());
            return self.reply(now, peer, key, Method::Invite, resp);
        }
        let timer_offer = match self.negotiate_refresh(call, &r.req) {
            Ok(n) => n,
            Err(min) => {
                let resp = too_small(&r.req, min, None);
                return self.reply(now, peer, key, Method::Invite, resp);
            }
        };
        let mut tx = InviteServerTx::new(self.cfg.timers, peer.transport.is_reliable());
        let trying = encode_response(&response_to(&r.req, 100, "Trying", None));
        tx.respond(now, 100, trying.clone());
        self.send(peer, trying);
        if let Some(c) = self.calls.get_mut(&call) {
            c.timer_offer = timer_offer;
            c.reinvite_pending = true;
            c.invite_tx = Some(key.clone());
            c.dialog.refresh_target(&r.req);
            c.dialog.peer = peer;
        }
        let sdp = (!r.req.body.is_empty()).then(|| r.req.body.clone());
        self.server_txs.insert(
            key,
            ServerTx::Invite {
                tx,
                call,
                request: Some(Box::new(r.req)),
            },
        );
        self.events.push_back(Event::ReInvite { call, sdp });
    }

    /// An UPDATE in the dialog (RFC 3311): a session refresh without a body, an offer with
    /// one (answered by the layer above, like a re-INVITE's).
    fn on_update(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxKey,
        call: CallHandle,
        r: ParsedRequest,
    ) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let phase = c.phase;
        // §5.2: an offer of ours awaits its answer (our re-INVITE, or the 2xx to an INVITE
        // without offer awaiting its ACK) → 491; an offer of the peer awaits ours → 500.
        let ours_pending = c.reinvite_out || c.awaiting_ack.is_some();
        let theirs_pending = c.reinvite_pending || c.update_pending.is_some();
        let offer = !r.req.body.is_empty();
        if offer {
            if content_type(&r.req.headers).as_deref() != Some("application/sdp") {
                let mut resp = refusal_to(&r.req, &Refusal::UnsupportedMediaType, None);
                push_header(&mut resp, "Accept", "application/sdp");
                return self.answer_non_invite(now, peer, key, resp);
            }
            if ours_pending {
                let resp = refusal_to(&r.req, &Refusal::OurOfferPending, None);
                return self.answer_non_invite(now, peer, key, resp);
            }
            // In the early dialog the INVITE's offer is answered only unreliably (no 100rel):
            // the first offer/answer is not complete, so a new offer must wait.
            if theirs_pending || phase == CallPhase::Early {
                let mut resp = refusal_to(&r.req, &Refusal::TheirOfferPending, None);
                push_header(&mut resp, "Retry-After", &self.ids.u64(0..=10).to_string());
                return self.answer_non_invite(now, peer, key, resp);
            }
        }
        if phase == CallPhase::Early {
            // The session timer starts with the INVITE's 2xx: nothing to refresh yet, and the
            // INVITE's negotiation stays as it is.
            if let Some(c) = self.calls.get_mut(&call) {
                c.dialog.refresh_target(&r.req);
            }
            let mut resp = response_to(&r.req, 200, "OK", None);
            self.decorate(&mut resp, peer);
            return self.answer_non_invite(now, peer, key, resp);
        }
        let timer_offer = match self.negotiate_refresh(call, &r.req) {
            Ok(n) => n,
            Err(min) => {
                let resp = too_small(&r.req, min, None);
                return self.answer_non_invite(now, peer, key, resp);
            }
        };
        if let Some(c) = self.calls.get_mut(&call) {
            c.dialog.refresh_target(&r.req);
            c.dialog.peer = peer;
            c.timer_offer = timer_offer;
        }
        if !offer {
            let mut resp = response_to(&r.req, 200, "OK", None);
            self.ok_headers(call, &mut resp, now, None);
            return self.answer_non_invite(now, peer, key, resp);
        }
        // The answer comes from the layer above; retransmissions meanwhile are absorbed.
        let tx = NonInviteServerTx::new(self.cfg.timers, peer.transport.is_reliable());
        self.server_txs.insert(key.clone(), ServerTx::NonInvite(tx));
        let sdp = r.req.body.clone();
        if let Some(c) = self.calls.get_mut(&call) {
            c.update_pending = Some((key, Box::new(r.req)));
        }
        self.events.push_back(Event::Update { call, sdp });
    }

    /// Negotiates the session timer of a refresh request from the peer; also notes whether
    /// the peer allows UPDATE when the request says.
    fn negotiate_refresh(
        &mut self,
        call: CallHandle,
        req: &Request,
    ) -> Result<Option<Negotiated>, u32> {
        let Some(c) = self.calls.get_mut(&call) else {
            return Ok(None);
        };
        if header_value(&req.headers, "Allow").is_some() {
            c.peer_allows_update = allows_update(req);
        }
        super::session_timer::negotiate(&req.headers, &self.session_timers, c.current_timer())
    }

    /// Allow, Contact, Server and the session timer of a 2xx to the peer's UPDATE; the 2xx
    /// (re)starts the timer.
    fn ok_headers(
        &mut self,
        call: CallHandle,
        resp: &mut rsipstack::sip::Response,
        now: Instant,
        sdp: Option<&[u8]>,
    ) {
        let Some(peer) = self.calls.get(&call).map(|c| c.dialog.peer) else {
            return;
        };
        self.decorate(resp, peer);
        if let Some(c) = self.calls.get_mut(&call) {
            if let Some(sdp) = sdp {
                c.local_sdp = sdp.to_vec();
            }
            if let Some(n) = c.start_timer(now) {
                timer_headers(resp, &n);
            }
        }
        self.arm_session(call);
    }

    /// Puts the call's session timer deadline on the heap.
    fn arm_session(&mut self, call: CallHandle) {
        self.rearm(TimerOwner::Session(call));
    }

    /// The session timer's deadline: refresh (we are the refresher) or expiry (§10).
    fn fire_session(&mut self, now: Instant, call: CallHandle) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.ended || c.phase == CallPhase::Terminating {
            return;
        }
        let Some(t) = c.timer.as_mut() else {
            return;
        };
        match t.on_due(now) {
            None => {}
            Some(Due::Refresh) => {
                self.arm_session(call);
                self.send_refresh(now, call);
            }
            Some(Due::Expire) => {
                let interval = t.interval;
                tracing::info!(
                    call = call.0,
                    interval,
                    "session timer expired without refresh; ending the call"
                );
                self.send_bye(now, call);
                self.end_call(now, call, EndReason::SessionExpired);
            }
        }
    }

    /// A session refresh of ours (RFC 4028 §7.4): UPDATE without body when the peer allows
    /// it, else a re-INVITE with our current SDP unchanged.
    fn send_refresh(&mut self, now: Instant, call: CallHandle) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let Some(interval) = c.timer.map(|t| t.ask) else {
            return;
        };
        let update = c.peer_allows_update;
        let method = if update {
            Method::Update
        } else {
            Method::Invite
        };
        let sent = self.dialog_request(call, method, true, |c| {
            update || (!c.reinvite_out && !c.reinvite_pending && c.update_pending.is_none())
        });
        let Ok((mut req, peer, cseq)) = sent else {
            // Another INVITE is under way (or the ACK is still to come): try again shortly.
            if let Some(t) = self.calls.get_mut(&call).and_then(|c| c.timer.as_mut()) {
                t.retry_at(now + std::time::Duration::from_secs(1));
            }
            return self.arm_session(call);
        };
        push_header(
            &mut req,
            "Session-Expires",
            &format!("{interval};refresher=uac"),
        );
        push_header(&mut req, "Min-SE", &self.session_timers.floor().to_string());
        push_header(&mut req, "Supported", "timer");
        let purpose = if update {
            ClientPurpose::Update
        } else {
            if let Some(c) = self.calls.get_mut(&call) {
                c.reinvite_out = true;
                set_body(&mut req, "application/sdp", c.local_sdp.clone());
            }
            ClientPurpose::ReInvite {
                cseq,
                refresh: true,
            }
        };
        tracing::debug!(call = call.0, %method, interval, "session refresh");
        self.start_client(now, call, purpose, peer, req);
    }

    /// The final response to a refresh of ours.
    fn on_refresh_answer(
        &mut self,
        now: Instant,
        call: CallHandle,
        r: &ParsedResponse,
        update: bool,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(t) = c.timer.as_mut() else {
            return;
        };
        match r.code {
            200..=299 => {
                let se = super::session_timer::session_expires(&r.resp.headers);
                let interval = se
                    .as_ref()
                    .map_or(t.ask, |(i, _)| *i)
                    .max(super::session_timer::MIN_SE_FLOOR);
                // We were the UAC: `uas` hands the job to the peer.
                let refresher = match se.and_then(|(_, r)| r).as_deref() {
                    Some("uas") => Refresher::Peer,
                    _ => Refresher::Us,
                };
                *t = SessionTimer::start(now, interval, refresher);
            }
            422 => {
                // §7.4 / §8: retry at once with the peer's minimum, once it is larger.
                match super::session_timer::min_se(&r.resp.headers) {
                    Some(min) if min > t.ask => {
                        t.ask = min;
                        t.retry_at(now);
                    }
                    _ => return,
                }
            }
            // RFC 3261 §14.1: glare; we own no Call-ID here, so 0-2 s.
            491 => t.retry_at(now + std::time::Duration::from_millis(self.ids.u64(0..=2000))),
            405 | 501 if update => {
                c.peer_allows_update = false;
                t.retry_at(now);
            }
            // Anything else: the session ends at expiry unless the peer refreshes it.
            _ => return,
        }
        self.arm_session(call);
    }

    fn on_response(&mut self, now: Instant, r: ParsedResponse) {
        let Some(branch) = r.ess.branch.clone() else {
            return;
        };
        let Some(entry) = self.client_txs.get_mut(&branch) else {
            tracing::debug!(code = r.code, "response matches no transaction");
            return;
        };
        let disposition = entry.tx.on_response(now, r.code);
        let resend_ack = entry.tx.ack_to_resend().map(<[u8]>::to_vec);
        let (call, purpose, peer) = (entry.call, entry.purpose, entry.peer);
        if disposition == ResponseDisposition::Absorb {
            if let Some(ack) = resend_ack {
                self.send(peer, ack);
            }
        } else if r.code >= 200 {
            match purpose {
                ClientPurpose::Bye => self.forget_call(now, call),
                ClientPurpose::Info => {}
                ClientPurpose::Refer { cseq } => self.refer_answered(call, cseq, r.code),
                ClientPurpose::ReInvite { cseq, refresh } => {
                    self.on_reinvite_answer(now, &branch, call, cseq, refresh, peer, r);
                    return;
                }
                ClientPurpose::Update => self.on_refresh_answer(now, call, &r, true),
            }
            if r.code == 481 || r.code == 408 {
                // The dialog is gone at the peer (§12.2.1.2).
                self.send_bye(now, call);
                self.end_call(now, call, EndReason::Timeout);
            }
        }
        let terminated = self
            .client_txs
            .get(&branch)
            .is_none_or(|e| e.tx.is_terminated());
        if terminated {
            self.client_txs.remove(&branch);
        } else {
            self.rearm(TimerOwner::Client(branch));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_reinvite_answer(
        &mut self,
        now: Instant,
        branch: &str,
        call: CallHandle,
        cseq: u32,
        refresh: bool,
        peer: Peer,
        r: ParsedResponse,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let success = (200..300).contains(&r.code);
        let ack = c.dialog.ack(
            cseq,
            (!success).then_some(branch),
            &mut self.ids,
            self.cfg.local_addr,
            &self.cfg.user_agent,
        );
        let ack = ack.to_bytes();
        let first = std::mem::replace(&mut c.reinvite_out, false);
        if success {
            c.dialog.refresh_target_from_response(&r.resp);
        } else if let Some(e) = self.client_txs.get_mut(branch) {
            e.tx.set_ack(ack.clone());
        }
        self.send(peer, ack);
        if first && (refresh || success) {
            self.on_refresh_answer(now, call, &r, false);
        }
        if first && !refresh {
            let sdp = (!r.resp.body.is_empty()).then(|| r.resp.body.clone());
            self.events.push_back(Event::ReInviteAnswered {
                call,
                code: r.code,
                sdp,
            });
        }
        if first && (r.code == 481 || r.code == 408) {
            self.send_bye(now, call);
            self.end_call(now, call, EndReason::Timeout);
        }
        if self
            .client_txs
            .get(branch)
            .is_none_or(|e| e.tx.is_terminated())
        {
            self.client_txs.remove(branch);
        } else {
            self.rearm(TimerOwner::Client(branch.to_string()));
        }
    }

    // ---- commands from the layer above ----

    /// Sends a re-INVITE with our new SDP offer (e.g. to put the caller on hold).
    pub fn reinvite(
        &mut self,
        now: Instant,
        call: CallHandle,
        sdp: Vec<u8>,
    ) -> Result<(), CommandError> {
        let (mut req, peer, cseq) = self.dialog_request(call, Method::Invite, true, |c| {
            !c.reinvite_out && !c.reinvite_pending && c.update_pending.is_none()
        })?;
        set_body(&mut req, "application/sdp", sdp.clone());
        if let Some(c) = self.calls.get_mut(&call) {
            c.reinvite_out = true;
            c.local_sdp = sdp;
            // A re-INVITE without Session-Expires would turn the peer's session timer off
            // (RFC 4028 §9): this one refreshes the session as it stands.
            if let Some(t) = c.timer {
                let r = match t.refresher {
                    Refresher::Us => "uac",
                    Refresher::Peer => "uas",
                };
                push_header(
                    &mut req,
                    "Session-Expires",
                    &format!("{};refresher={r}", t.interval),
                );
                push_header(&mut req, "Supported", "timer");
            }
        }
        let purpose = ClientPurpose::ReInvite {
            cseq,
            refresh: false,
        };
        self.start_client(now, call, purpose, peer, req);
        Ok(())
    }

    /// Sends 180 Ringing, or 183 Session Progress with early media when `sdp` is given.
    pub fn ring(
        &mut self,
        now: Instant,
        call: CallHandle,
        sdp: Option<Vec<u8>>,
    ) -> Result<(), CommandError> {
        let (code, reason) = if sdp.is_some() {
            (183, "Session Progress")
        } else {
            (180, "Ringing")
        };
        self.invite_response(now, call, code, reason, sdp, true)
    }

    /// Answers the call with 200 OK and our SDP (an answer, or an offer when the INVITE had none).
    pub fn answer(
        &mut self,
        now: Instant,
        call: CallHandle,
        sdp: Vec<u8>,
    ) -> Result<(), CommandError> {
        self.invite_response(now, call, 200, "OK", Some(sdp), true)?;
        if let Some(c) = self.calls.get_mut(&call) {
            c.phase = CallPhase::Answered;
        }
        Ok(())
    }

    /// Refuses the call with a final error response; `warning` goes into a Warning header.
    pub fn reject(
        &mut self,
        now: Instant,
        call: CallHandle,
        code: u16,
        reason: &str,
        warning: Option<&str>,
    ) -> Result<(), CommandError> {
        if !(300..=699).contains(&code) {
            return Err(CommandError::WrongState);
        }
        let early = self.calls.get(&call).map(|c| c.phase);
        if early != Some(CallPhase::Early) {
            return Err(if early.is_none() {
                CommandError::NoSuchCall
            } else {
                CommandError::WrongState
            });
        }
        self.final_invite_response(now, call, code, reason, warning);
        self.end_call(now, call, EndReason::Rejected(code));
        Ok(())
    }

    /// Answers a pending re-INVITE (or UPDATE offer) with 200 and our SDP.
    pub fn answer_reinvite(
        &mut self,
        now: Instant,
        call: CallHandle,
        sdp: Vec<u8>,
    ) -> Result<(), CommandError> {
        if let Some((key, req)) = self.take_pending_update(call) {
            let mut resp = response_to(&req, 200, "OK", None);
            self.ok_headers(call, &mut resp, now, Some(&sdp));
            set_body(&mut resp, "application/sdp", sdp);
            self.respond_pending(now, call, key, resp);
            return Ok(());
        }
        self.take_pending_reinvite(call)?;
        self.invite_response(now, call, 200, "OK", Some(sdp), false)
    }

    /// Refuses a pending re-INVITE (e.g. 488); the call continues as before.
    pub fn reject_reinvite(
        &mut self,
        now: Instant,
        call: CallHandle,
        code: u16,
        reason: &str,
        warning: Option<&str>,
    ) -> Result<(), CommandError> {
        if let Some((key, req)) = self.take_pending_update(call) {
            let mut resp = response_to(&req, code, reason, None);
            if let Some(w) = warning {
                push_header(&mut resp, "Warning", &self.warning(w));
            }
            push_header(&mut resp, "Server", &self.cfg.user_agent);
            if let Some(c) = self.calls.get_mut(&call) {
                c.timer_offer = None;
            }
            self.respond_pending(now, call, key, resp);
            return Ok(());
        }
        self.take_pending_reinvite(call)?;
        self.final_invite_response(now, call, code, reason, warning);
        Ok(())
    }

    /// Claims the call's pending UPDATE offer, if there is one.
    fn take_pending_update(&mut self, call: CallHandle) -> Option<(TxKey, Box<Request>)> {
        self.calls.get_mut(&call)?.update_pending.take()
    }

    /// Sends the final response to a pending UPDATE on its transaction.
    fn respond_pending(
        &mut self,
        now: Instant,
        call: CallHandle,
        key: TxKey,
        resp: rsipstack::sip::Response,
    ) {
        let Some(peer) = self.calls.get(&call).map(|c| c.dialog.peer) else {
            return;
        };
        let code = resp.status_code.code();
        let bytes = encode_response(&resp);
        if let Some(ServerTx::NonInvite(tx)) = self.server_txs.get_mut(&key) {
            tx.respond(now, code, bytes.clone());
        }
        self.send(peer, bytes);
        let terminated = match self.server_txs.get(&key) {
            Some(ServerTx::NonInvite(tx)) => tx.is_terminated(),
            _ => false,
        };
        if terminated {
            self.server_txs.remove(&key);
        } else {
            self.rearm(TimerOwner::Server(key));
        }
    }

    /// Our Warning header value (code 399, our host, the text made safe for quotes).
    fn warning(&self, w: &str) -> String {
        let w = w.replace(['"', '\r', '\n'], "'");
        format!("399 {} \"{w}\"", self.cfg.local_addr.ip())
    }

    /// Claims the call's pending re-INVITE for the final answer about to be sent.
    fn take_pending_reinvite(&mut self, call: CallHandle) -> Result<(), CommandError> {
        let c = self.calls.get_mut(&call).ok_or(CommandError::NoSuchCall)?;
        if !std::mem::replace(&mut c.reinvite_pending, false) {
            return Err(CommandError::WrongState);
        }
        Ok(())
    }

    /// Ends the call from our side: BYE when answered, 480 while still ringing.
    pub fn hangup(&mut self, now: Instant, call: CallHandle) -> Result<(), CommandError> {
        let phase = self
            .calls
            .get(&call)
            .map(|c| c.phase)
            .ok_or(CommandError::NoSuchCall)?;
        match phase {
            CallPhase::Early => {
                let (code, reason) = Refusal::Unavailable.status();
                self.reject(now, call, code, reason, None)
            }
            CallPhase::Terminating => Ok(()),
            CallPhase::Answered | CallPhase::Confirmed => {
                self.send_bye(now, call);
                self.end_call(now, call, EndReason::LocalBye);
                Ok(())
            }
        }
    }

    /// Sends an INFO in the call (e.g. DTMF relay).
    pub fn send_info(
        &mut self,
        now: Instant,
        call: CallHandle,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(), CommandError> {
        let (mut req, peer, _) = self.dialog_request(call, Method::Info, false, |_| true)?;
        set_body(&mut req, content_type, body);
        self.start_client(now, call, ClientPurpose::Info, peer, req);
        Ok(())
    }

    /// Asks the peer to call `target` instead (blind transfer, RFC 3515): an in-dialog REFER
    /// with `Refer-To: <target>` and our URI in Referred-By. `target` must be a `sip:`,
    /// `sips:` or `tel:` URI. The answer comes as [`Event::ReferAnswered`], the transfer's
    /// progress as [`Event::TransferProgress`].
    pub fn refer(
        &mut self,
        now: Instant,
        call: CallHandle,
        target: &str,
    ) -> Result<(), CommandError> {
        let target = super::refer::validate_target(target)?;
        let (mut req, peer, cseq) = self.dialog_request(call, Method::Refer, true, |_| true)?;
        push_header(&mut req, "Refer-To", &format!("<{target}>"));
        if let Some(c) = self.calls.get_mut(&call) {
            let referred_by = format!("<{}>", c.dialog.local_uri());
            push_header(&mut req, "Referred-By", &referred_by);
            // The subscription exists from now on: its first NOTIFY may overtake the 202.
            c.refer_subs.push(cseq);
        }
        tracing::info!(call = call.0, %target, "sending REFER");
        self.start_client(now, call, ClientPurpose::Refer { cseq }, peer, req);
        Ok(())
    }

    /// Reports the final answer to the REFER with CSeq `cseq`; without a 2xx no subscription
    /// was created.
    fn refer_answered(&mut self, call: CallHandle, cseq: u32, code: u16) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if !(200..300).contains(&code) {
            c.refer_subs.retain(|s| *s != cseq);
        }
        if !c.ended {
            self.events.push_back(Event::ReferAnswered { call, code });
        }
    }

    fn start_client(
        &mut self,
        now: Instant,
        call: CallHandle,
        purpose: ClientPurpose,
        peer: Peer,
        req: Request,
    ) {
        let branch = req
            .via_header()
            .ok()
            .and_then(|v| v.typed().ok())
            .and_then(|v| v.branch().map(|b| b.to_string()))
            .unwrap_or_default();
        let bytes = req.to_bytes();
        let tx = ClientTx::new(
            now,
            self.cfg.timers,
            peer.transport.is_reliable(),
            matches!(purpose, ClientPurpose::ReInvite { .. }),
            bytes.clone(),
        );
        self.send(peer, bytes);
        self.client_txs.insert(
            branch.clone(),
            ClientEntry {
                tx,
                call,
                purpose,
                peer,
            },
        );
        self.rearm(TimerOwner::Client(branch));
    }

    fn send_bye(&mut self, now: Instant, call: CallHandle) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.phase == CallPhase::Terminating {
            return;
        }
        c.phase = CallPhase::Terminating;
        let req = c.dialog.request(
            Method::Bye,
            &mut self.ids,
            self.cfg.local_addr,
            &self.cfg.user_agent,
        );
        let peer = c.dialog.peer;
        self.start_client(now, call, ClientPurpose::Bye, peer, req);
    }

    /// Sends a provisional or 2xx response on the call's pending INVITE transaction.
    fn invite_response(
        &mut self,
        now: Instant,
        call: CallHandle,
        code: u16,
        reason: &str,
        sdp: Option<Vec<u8>>,
        initial: bool,
    ) -> Result<(), CommandError> {
        let c = self.calls.get(&call).ok_or(CommandError::NoSuchCall)?;
        if initial && c.phase != CallPhase::Early {
            return Err(CommandError::WrongState);
        }
        let key = c.invite_tx.clone().ok_or(CommandError::WrongState)?;
        let local_tag = c.dialog.id.local_tag.clone();
        let peer = c.dialog.peer;
        let contact = self.contact(peer);
        let Some(ServerTx::Invite { request, .. }) = self.server_txs.get(&key) else {
            return Err(CommandError::WrongState);
        };
        let Some(req) = request.as_deref() else {
            return Err(CommandError::WrongState);
        };
        // The ACK repeats the INVITE's CSeq; in-dialog requests since (an UPDATE in the
        // early dialog) may have raised the peer's latest.
        let invite_cseq = req.cseq_header().ok().and_then(|c| c.seq().ok());
        let mut resp = response_to(req, code, reason, Some(&local_tag));
        for h in req.headers.iter() {
            if let rsipstack::sip::Header::RecordRoute(_) = h {
                resp.headers.push(h.clone());
            }
        }
        push_header(&mut resp, "Allow", ALLOW);
        push_header(&mut resp, "Contact", &contact);
        push_header(&mut resp, "Server", &self.cfg.user_agent);
        if (200..300).contains(&code) {
            if let Some(c) = self.calls.get_mut(&call) {
                if let Some(sdp) = &sdp {
                    c.local_sdp = sdp.clone();
                }
                if let Some(n) = c.start_timer(now) {
                    timer_headers(&mut resp, &n);
                }
            }
            self.arm_session(call);
        }
        if let Some(sdp) = sdp {
            set_body(&mut resp, "application/sdp", sdp);
        }
        let Some(ServerTx::Invite { tx, request, .. }) = self.server_txs.get_mut(&key) else {
            return Err(CommandError::WrongState);
        };
        let bytes = encode_response(&resp);
        tx.respond(now, code, bytes.clone());
        if code >= 200 {
            *request = None;
        }
        self.send(peer, bytes);
        if code >= 200 {
            if let Some(c) = self.calls.get_mut(&call) {
                c.awaiting_ack = Some(invite_cseq.unwrap_or(c.dialog.remote_cseq));
            }
        }
        self.rearm(TimerOwner::Server(key));
        Ok(())
    }

    fn final_invite_response(
        &mut self,
        now: Instant,
        call: CallHandle,
        code: u16,
        reason: &str,
        warning: Option<&str>,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(key) = c.invite_tx.take() else {
            return;
        };
        c.timer_offer = None;
        let local_tag = c.dialog.id.local_tag.clone();
        let peer = c.dialog.peer;
        let warning = warning.map(|w| self.warning(w));
        let Some(ServerTx::Invite { tx, request, .. }) = self.server_txs.get_mut(&key) else {
            return;
        };
        let Some(req) = request.take() else {
            return;
        };
        let mut resp = response_to(&req, code, reason, Some(&local_tag));
        if let Some(w) = warning {
            push_header(&mut resp, "Warning", &w);
        }
        push_header(&mut resp, "Server", &self.cfg.user_agent);
        let bytes = encode_response(&resp);
        tx.respond(now, code, bytes.clone());
        self.send(peer, bytes);
        self.rearm(TimerOwner::Server(key));
    }

    /// Reports the end and forgets the dialog, unless a BYE of ours is still in flight.
    fn end_call(&mut self, now: Instant, call: CallHandle, reason: EndReason) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let already = std::mem::replace(&mut c.ended, true);
        if c.phase != CallPhase::Terminating {
            self.forget_call(now, call);
        }
        if !already {
            self.events.push_back(Event::Ended { call, reason });
        }
    }

    fn forget_call(&mut self, now: Instant, call: CallHandle) {
        // An UPDATE offer still unanswered is closed, or its transaction would wait forever.
        if let Some((key, req)) = self.take_pending_update(call) {
            let resp = refusal_to(&req, &Refusal::Terminated, None);
            self.respond_pending(now, call, key, resp);
        }
        if let Some(c) = self.calls.remove(&call) {
            self.dialogs.remove(&c.dialog.id);
        }
    }
}

fn dialog_id_of(ess: &Essentials) -> Option<DialogId> {
    Some(DialogId {
        call_id: ess.call_id.clone(),
        local_tag: ess.to_tag.clone()?,
        remote_tag: ess.from_tag.clone()?,
    })
}

/// An INVITE whose body is not SDP (415), or whose Accept rules out the SDP we would answer
/// with (406), RFC 3261 §8.2.3 and §21.4.7.
fn unusable_media_type(req: &Request) -> Option<Refusal> {
    if !req.body.is_empty() {
        match content_type(&req.headers) {
            Some(ct) if ct == "application/sdp" => {}
            _ => return Some(Refusal::UnsupportedMediaType),
        }
    }
    let accept = super::message::header_value(&req.headers, "Accept")?;
    let acceptable = accept.split(',').any(|range| {
        let range = range
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        matches!(range.as_str(), "application/sdp" | "application/*" | "*/*")
    });
    (!acceptable && !accept.trim().is_empty()).then_some(Refusal::NotAcceptable)
}

/// Required extensions other than `timer`, the only one we implement (RFC 3261 §8.2.2.3).
fn unsupported_requirement(req: &Request) -> Option<String> {
    let tags: Vec<&str> = req
        .headers
        .iter()
        .filter(|h| super::message::canonical_name(h.name()).eq_ignore_ascii_case("Require"))
        .flat_map(|h| h.value().split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("timer"))
        .collect();
    (!tags.is_empty()).then(|| tags.join(", "))
}

/// The peer's Allow lists UPDATE.
fn allows_update(req: &Request) -> bool {
    has_option_tag(&req.headers, "Allow", "UPDATE")
}

/// 422 Session Interval Too Small with our minimum (RFC 4028 §9).
fn too_small(req: &Request, min: u32, to_tag: Option<&str>) -> rsipstack::sip::Response {
    let mut resp = refusal_to(req, &Refusal::IntervalTooSmall, to_tag);
    push_header(&mut resp, "Min-SE", &min.to_string());
    resp
}

/// The session timer headers of our 2xx to the peer's INVITE or UPDATE (RFC 4028 §9).
fn timer_headers(resp: &mut rsipstack::sip::Response, n: &Negotiated) {
    push_header(resp, "Session-Expires", &n.session_expires());
    push_header(resp, "Supported", "timer");
    if n.peer_supports {
        push_header(resp, "Require", "timer");
    }
}
