//! The sans-IO SIP user agent core, server and client: routes each inbound message to its
//! transaction or dialog, answers what needs no decision (100 Trying, OPTIONS, CANCEL, BYE,
//! NOTIFY, an UPDATE without body, 481, 405, 422 ...), runs each call's session timer
//! (RFC 4028: our refreshes, BYE when the peer's stop), and reports calls to the layer
//! above, which decides with [`Endpoint::answer`] and friends. Calls we place start with
//! [`Endpoint::invite`].
//!
//! Inputs: [`Endpoint::handle_message`], [`Endpoint::handle_timeout`] and the call commands.
//! Outputs, drained by the caller after every input: [`Endpoint::poll_transmit`],
//! [`Endpoint::poll_event`], then [`Endpoint::poll_timeout`].
//!
//! This module owns the endpoint's types, its public surface, the routing of messages and
//! timers, and the client transactions every request of ours shares. The methods for each
//! concern live beside it: `server` (server transactions, CANCEL, refusals), `invite`
//! (initial INVITE, ACK, BYE), `client` (calls we place: INVITE, CANCEL, forks, digest
//! challenges), `reinvite` (re-INVITE and UPDATE offers, session timer refreshes) and
//! `refer` (REFER and its NOTIFYs).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::auth::Authenticator;
use super::dialog::{content_type, Dialog, DialogId, Peer};
use super::ids::Ids;
use super::message::{
    classify_with, push_header, refusal_to, response_to, set_body, Essentials, Inbound, Method,
    ParsedRequest, ParsedResponse, Request, ALLOW,
};
use super::refer::TargetError;
use super::session_timer::{Negotiated, Refresher, SessionTimer, SessionTimerConfig};
use super::transaction::{
    ClientTx, InviteServerTx, NonInviteServerTx, ResponseDisposition, TimerConfig, TxOutput,
};
use crate::error::Refusal;
use rsipstack::sip::prelude::*;

mod client;
mod invite;
mod refer;
mod refuse;
mod reinvite;
mod server;

use server::{unsupported_requirement, unusable_media_type};

pub(crate) use client::leading_seconds;
pub use client::{OutgoingCall, Party};

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

/// Identifies a call (an INVITE dialog we answer or place) between the endpoint and the
/// layer above.
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
    /// The INVITE was cancelled before its answer: by the peer (a call we answer) or by us
    /// ([`Endpoint::cancel`], a call we place).
    Cancelled,
    /// The INVITE got this final error response: from us (a call we answer), or from the
    /// peer (a call we place; 408 when nobody answered).
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
        /// The caller's own address: `peer`, or what a trusted proxy said it is.
        source: std::net::SocketAddr,
        /// The user it authenticated as, when its dialled user needs authentication.
        auth_user: Option<String>,
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
    /// A provisional response (101-199) to an INVITE of ours: ringing, or early media when
    /// `sdp` is given. Each fork has its own `to_tag` (its early dialog). Not reported once
    /// the call is being cancelled.
    Progress {
        /// The call.
        call: CallHandle,
        /// Status code.
        code: u16,
        /// Reason phrase.
        reason: String,
        /// To tag of the early dialog, when the response has one.
        to_tag: Option<String>,
        /// The SDP of early media.
        sdp: Option<Vec<u8>>,
    },
    /// The first 2xx to an INVITE of ours; the ACK has gone out and the call is confirmed.
    /// When our INVITE had no offer, `sdp` is the peer's offer and the ACK waits for our
    /// answer ([`Endpoint::acknowledge`]).
    Answered {
        /// The call.
        call: CallHandle,
        /// The SDP answer (the peer's offer, see above).
        sdp: Option<Vec<u8>>,
    },
    /// A final error response to an INVITE of ours (408 when nobody answered); a 3xx is not
    /// followed, its targets are here. [`Event::Ended`] follows.
    Failed {
        /// The call.
        call: CallHandle,
        /// Status code (300-699).
        code: u16,
        /// Reason phrase.
        reason: String,
        /// Retry-After in seconds (a 503 or 486 may say when to try again).
        retry_after: Option<u32>,
        /// A 3xx's Contact URIs, in order.
        contacts: Vec<String>,
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
    /// An outgoing call we cannot place; says what is wrong with it.
    #[error("cannot place the call: {0}")]
    InvalidCall(&'static str),
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
    /// The initial INVITE of a call we place (see `client`).
    Invite,
    /// Our CANCEL of it; keyed apart from the INVITE, whose branch it shares.
    Cancel,
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

/// The call's INVITE transaction in progress, whichever side sent it: RFC 3261 §14 allows
/// one at a time (a second one meets 491 or 500), so one state covers both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InviteState {
    /// None in progress.
    Idle,
    /// The peer's INVITE (`reinvite` when inside the dialog) waits for our final response,
    /// decided by the layer above.
    Theirs {
        /// Its server transaction.
        key: TxKey,
        /// A re-INVITE rather than the initial INVITE.
        reinvite: bool,
    },
    /// Our 2xx to the peer's INVITE with CSeq `cseq` waits for its ACK.
    AwaitingAck {
        /// The INVITE's server transaction.
        key: TxKey,
        /// The CSeq the ACK repeats.
        cseq: u32,
    },
    /// Our re-INVITE waits for its final response.
    Ours,
}

struct Call {
    dialog: Dialog,
    phase: CallPhase,
    /// The INVITE transaction in progress.
    invite: InviteState,
    /// `Event::Ended` was reported.
    ended: bool,
    /// CSeq numbers of our REFERs whose implicit subscriptions may still send NOTIFY
    /// (RFC 3515 §2.4.6: a NOTIFY's `id` is the REFER's CSeq).
    refer_subs: Vec<u32>,
    /// An UPDATE with an offer waiting for the layer above.
    update_pending: Option<PendingUpdate>,
    /// The session timer the 2xx to the pending INVITE or UPDATE will start.
    timer_offer: Option<Negotiated>,
    /// The running session timer.
    timer: Option<SessionTimer>,
    /// The peer listed UPDATE in Allow: our refreshes use it.
    peer_allows_update: bool,
    /// The last SDP we sent, re-sent unchanged by a refreshing re-INVITE.
    local_sdp: Vec<u8>,
}

/// An UPDATE with an offer, waiting for the layer above's answer.
struct PendingUpdate {
    /// Its server transaction.
    key: TxKey,
    /// The UPDATE, to build the answer from.
    request: Box<Request>,
}

impl Call {
    /// A call in its initial INVITE transaction `key`.
    fn new(dialog: Dialog, key: TxKey, peer_allows_update: bool) -> Self {
        Call {
            invite: InviteState::Theirs {
                key,
                reinvite: false,
            },
            ..Self::new_base(dialog, peer_allows_update)
        }
    }

    /// An early call with no transaction: what [`Call::new`] and calls we place start from.
    fn new_base(dialog: Dialog, peer_allows_update: bool) -> Self {
        Call {
            dialog,
            phase: CallPhase::Early,
            invite: InviteState::Idle,
            ended: false,
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

    /// No INVITE transaction in progress and no UPDATE offer of the peer's waiting: a new
    /// offer of ours may go.
    fn may_offer(&self) -> bool {
        self.invite == InviteState::Idle && self.update_pending.is_none()
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
    /// Calls we placed, until their INVITE transaction ends.
    outgoing: HashMap<CallHandle, client::Outgoing>,
    dialogs: HashMap<DialogId, CallHandle>,
    timers: BinaryHeap<Reverse<(Instant, TimerOwner)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_call: u64,
    scratch: Vec<TxOutput>,
    session_timers: SessionTimerConfig,
    trusted_proxies: crate::sip::proxy::TrustedProxies,
    /// Every tag, branch, first CSeq and random delay the endpoint makes.
    ids: Ids,
    /// Checks callers of protected users before their call exists.
    auth: Option<Authenticator>,
    /// Our listening ports for TLS and WebSockets, for Via and Contact on them:
    /// `local_addr`'s for a transport not listed.
    ports: HashMap<super::dialog::Transport, u16>,
}

/// Our address for Via and Contact on `transport`: the port of that transport's own
/// listener (TLS, WS, WSS) when it has one.
fn local_for(
    cfg: &EndpointConfig,
    ports: &HashMap<super::dialog::Transport, u16>,
    transport: super::dialog::Transport,
) -> SocketAddr {
    match ports.get(&transport) {
        Some(port) => SocketAddr::new(cfg.local_addr.ip(), *port),
        None => cfg.local_addr,
    }
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
            outgoing: HashMap::new(),
            dialogs: HashMap::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_call: 1,
            scratch: Vec::new(),
            session_timers: SessionTimerConfig::default(),
            trusted_proxies: crate::sip::proxy::TrustedProxies::default(),
            ids,
            auth: None,
            ports: HashMap::new(),
        }
    }

    /// From now on a new INVITE to a user `auth` protects must authenticate first.
    pub fn set_auth(&mut self, auth: Authenticator) {
        self.auth = Some(auth);
    }

    /// The authenticator, when one is set (its failure counts).
    pub fn auth(&self) -> Option<&Authenticator> {
        self.auth.as_ref()
    }

    /// The authenticator, when one is set (to take the sources of its failures).
    pub fn auth_mut(&mut self) -> Option<&mut Authenticator> {
        self.auth.as_mut()
    }

    /// Sets the port our TLS listener is on, written into Contacts sent over TLS.
    pub fn set_tls_port(&mut self, port: u16) {
        self.set_listener_port(super::dialog::Transport::Tls, port);
    }

    /// Sets the port of our listener for `transport` (one of its own, such as TLS or a
    /// WebSocket's), written into Via and Contact sent over it.
    pub fn set_listener_port(&mut self, transport: super::dialog::Transport, port: u16) {
        self.ports.insert(transport, port);
    }

    /// Sets the session timer settings (RFC 4028) for calls from now on.
    pub fn set_session_timers(&mut self, cfg: SessionTimerConfig) {
        self.session_timers = cfg;
    }

    /// Believes these proxies' word on the caller's address ([`crate::sip::proxy`]).
    pub fn set_trusted_proxies(&mut self, proxies: crate::sip::proxy::TrustedProxies) {
        self.trusted_proxies = proxies;
    }

    /// Number of live calls, counting calls of ours not yet answered.
    pub fn call_count(&self) -> usize {
        self.calls.len() + self.unanswered_outgoing()
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
        match classify_with(bytes, peer.transport.is_byte_stream(), &mut self.ids) {
            Inbound::Request(mut r) => {
                if peer.transport.is_websocket() {
                    stamp_via(&mut r.req, peer.addr);
                }
                self.on_request(now, peer, *r)
            }
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

    fn fire_client(&mut self, now: Instant, branch: String) {
        self.step_client(now, branch, |tx, now, out| tx.handle_timeout(now, out));
    }

    /// No connection to `peer` could be opened (refused, not in time, or its TLS
    /// certificate did not verify): our requests waiting on it fail now, as at Timer B/F.
    pub fn peer_unreachable(&mut self, now: Instant, peer: Peer) {
        let waiting: Vec<String> = self
            .client_txs
            .iter()
            .filter(|(_, e)| e.peer == peer)
            .map(|(b, _)| b.clone())
            .collect();
        for branch in waiting {
            self.step_client(now, branch, |tx, _, out| tx.transport_failed(out));
        }
    }

    /// The connection to `peer` closed and cannot be opened again from our side (a
    /// WebSocket, RFC 7118 §5): what waits on it fails, and the calls it carried end (as
    /// [`EndReason::Timeout`]: the peer can no longer be reached).
    pub fn flow_closed(&mut self, now: Instant, peer: Peer) {
        self.peer_unreachable(now, peer);
        let mut gone: Vec<CallHandle> = self
            .calls
            .iter()
            .filter(|(_, c)| c.dialog.peer == peer && !c.ended)
            .map(|(h, _)| *h)
            .collect();
        gone.sort();
        for call in gone {
            self.end_call(now, call, EndReason::Timeout);
        }
    }

    /// Moves one client transaction on with `step` and acts on what it says.
    fn step_client(
        &mut self,
        now: Instant,
        branch: String,
        step: impl FnOnce(&mut ClientTx, Instant, &mut Vec<TxOutput>),
    ) {
        let mut out = std::mem::take(&mut self.scratch);
        let Some(entry) = self.client_txs.get_mut(&branch) else {
            self.scratch = out;
            return;
        };
        step(&mut entry.tx, now, &mut out);
        let (peer, call, purpose, terminated) = (
            entry.peer,
            entry.call,
            entry.purpose,
            entry.tx.is_terminated(),
        );
        for o in out.drain(..) {
            match o {
                TxOutput::Retransmit(bytes) => self.send(peer, bytes),
                TxOutput::TimedOut if purpose == ClientPurpose::Invite => {
                    self.on_invite_timeout(call, &branch)
                }
                TxOutput::TimedOut if purpose == ClientPurpose::Cancel => {}
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
            if purpose == ClientPurpose::Invite {
                self.invite_tx_gone(call, &branch);
            }
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
        if method == Method::Invite {
            return self.on_new_invite(now, peer, key, r);
        }
        self.on_out_of_dialog(now, peer, key, r);
    }

    /// Adds Server, Allow and Contact to a response.
    fn decorate(&self, resp: &mut rsipstack::sip::Response, peer: Peer) {
        push_header(resp, "Allow", ALLOW);
        push_header(resp, "Contact", &self.contact(peer));
        push_header(resp, "Server", &self.cfg.user_agent);
    }

    fn contact(&self, peer: Peer) -> String {
        let addr = local_for(&self.cfg, &self.ports, peer.transport);
        format!("<sip:switchboard@{addr}{}>", peer.transport.uri_param())
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
            local_for(&self.cfg, &self.ports, c.dialog.peer.transport),
            &self.cfg.user_agent,
        );
        if let Some(contact) = our_contact {
            push_header(&mut req, "Contact", &contact);
        }
        Ok((req, c.dialog.peer, c.dialog.local_cseq))
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

    fn on_response(&mut self, now: Instant, r: ParsedResponse) {
        let Some(branch) = r.ess.branch.as_deref() else {
            return;
        };
        let branch = if r.ess.cseq_method == Method::Cancel {
            cancel_key(branch)
        } else {
            branch.to_string()
        };
        let Some(entry) = self.client_txs.get_mut(&branch) else {
            tracing::debug!(code = r.code, "response matches no transaction");
            return;
        };
        let disposition = entry.tx.on_response(now, r.code);
        let resend_ack = entry.tx.ack_to_resend().map(<[u8]>::to_vec);
        let (call, purpose, peer) = (entry.call, entry.purpose, entry.peer);
        if purpose == ClientPurpose::Invite && disposition == ResponseDisposition::Deliver {
            self.on_invite_response(now, &branch, call, r);
        } else if disposition == ResponseDisposition::Absorb {
            if let Some(ack) = resend_ack {
                self.send(peer, ack);
            }
        } else if r.code >= 200 {
            match purpose {
                ClientPurpose::Invite | ClientPurpose::Cancel => {}
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
            if purpose == ClientPurpose::Invite {
                self.invite_tx_gone(call, &branch);
            }
        } else {
            self.rearm(TimerOwner::Client(branch));
        }
    }

    /// A final error response of ours to `req`, with our Warning (code 399, our host, the
    /// text made safe for quotes) when `warning` is given.
    fn error_response(
        &self,
        req: &Request,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
        warning: Option<&str>,
    ) -> rsipstack::sip::Response {
        let mut resp = response_to(req, code, reason, to_tag);
        if let Some(w) = warning {
            let w = w.replace(['"', '\r', '\n'], "'");
            let value = format!("399 {} \"{w}\"", self.cfg.local_addr.ip());
            push_header(&mut resp, "Warning", &value);
        }
        push_header(&mut resp, "Server", &self.cfg.user_agent);
        resp
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
        let branch = if purpose == ClientPurpose::Cancel {
            cancel_key(&branch)
        } else {
            branch
        };
        let bytes = req.to_bytes();
        let mut tx = ClientTx::new(
            now,
            self.cfg.timers,
            peer.transport.is_reliable(),
            matches!(
                purpose,
                ClientPurpose::ReInvite { .. } | ClientPurpose::Invite
            ),
            bytes.clone(),
        );
        if purpose == ClientPurpose::Invite {
            tx = tx.patient();
        }
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
        if let Some(PendingUpdate { key, request }) = self.take_pending_update(call) {
            let resp = refusal_to(&request, &Refusal::Terminated, None);
            self.respond_pending(now, call, key, resp);
        }
        if let Some(c) = self.calls.remove(&call) {
            self.dialogs.remove(&c.dialog.id);
        }
    }
}

/// Writes where a WebSocket peer's request came from into its top Via (RFC 3261 §18.2.1:
/// `received`; RFC 3581: `rport`'s value when it asked): its sent-by is a `.invalid` host
/// (RFC 7118 §5), so the answers, which go back over the connection anyway, say which
/// address the connection is from.
fn stamp_via(req: &mut Request, from: SocketAddr) {
    let Some(via) = req
        .headers
        .iter_mut()
        .find(|h| matches!(h, rsipstack::sip::Header::Via(_)))
    else {
        return;
    };
    let value = via.value().to_string();
    // A header may carry several values: only the first is ours to mark.
    let (first, rest) = match value.find(',') {
        Some(i) => value.split_at(i),
        None => (value.as_str(), ""),
    };
    let mut parts = first.split(';');
    let mut stamped = parts.next().unwrap_or("").trim_end().to_string();
    let mut rport = false;
    for p in parts {
        let name = p
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "received" => {}
            "rport" => rport = true,
            _ => {
                stamped.push(';');
                stamped.push_str(p.trim());
            }
        }
    }
    stamped.push_str(&format!(";received={}", from.ip()));
    if rport {
        stamped.push_str(&format!(";rport={}", from.port()));
    }
    stamped.push_str(rest);
    *via = rsipstack::sip::Header::Via(stamped.into());
}

/// The client transaction key of our CANCEL, which shares its INVITE's branch (§9.1).
fn cancel_key(branch: &str) -> String {
    format!("{branch} CANCEL")
}

fn dialog_id_of(ess: &Essentials) -> Option<DialogId> {
    Some(DialogId {
        call_id: ess.call_id.clone(),
        local_tag: ess.to_tag.clone()?,
        remote_tag: ess.from_tag.clone()?,
    })
}
