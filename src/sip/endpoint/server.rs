//! Server transactions and what the endpoint answers on its own: their timers (a missing ACK
//! ends the call), final responses on a fresh transaction, CANCEL, requests outside a dialog
//! (OPTIONS, 481, 405), and the refusals decided before a request reaches a dialog
//! (unsupported Require, unusable media type).

use std::time::Instant;

use super::{CallHandle, CallPhase, EndReason, Endpoint, InviteState, ServerTx, TimerOwner, TxKey};
use crate::error::{Refusal, SipStatus};
use crate::sip::dialog::{content_type, Peer};
use crate::sip::message::{
    encode_response, push_header, refusal_to, response_to, Method, ParsedRequest, Request, ALLOW,
};
use crate::sip::transaction::{InviteServerTx, NonInviteServerTx, TxOutput};

impl Endpoint {
    /// A request other than INVITE outside any dialog: OPTIONS is answered, requests that
    /// need a dialog get 481, anything else 405.
    pub(super) fn on_out_of_dialog(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxKey,
        r: ParsedRequest,
    ) {
        match r.req.method {
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

    pub(super) fn fire_server(&mut self, now: Instant, key: TxKey) {
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
    pub(super) fn on_server_invite_timeout(&mut self, now: Instant, call: CallHandle) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        match c.phase {
            CallPhase::Answered if matches!(c.invite, InviteState::AwaitingAck { .. }) => {
                tracing::warn!(
                    call = call.0,
                    "no ACK for our 2xx; ending the call with BYE"
                );
                self.send_bye(now, call);
                self.end_call(now, call, EndReason::AckTimeout);
            }
            CallPhase::Confirmed if matches!(c.invite, InviteState::AwaitingAck { .. }) => {
                // A re-INVITE's 2xx was never acknowledged: same remedy (§14.2).
                self.send_bye(now, call);
                self.end_call(now, call, EndReason::AckTimeout);
            }
            _ => {}
        }
    }

    pub(super) fn answer_non_invite(
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

    pub(super) fn on_cancel(&mut self, now: Instant, peer: Peer, key: TxKey, r: ParsedRequest) {
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
        if state == crate::sip::transaction::InviteServerState::Proceeding {
            let initial = self
                .calls
                .get(&call)
                .is_some_and(|c| c.phase == CallPhase::Early);
            let (code, reason) = Refusal::Terminated.status();
            self.final_invite_response(now, call, code, reason, None);
            if initial {
                self.end_call(now, call, EndReason::Cancelled);
            } else if let Some(c) = self.calls.get_mut(&call) {
                c.timer_offer = None;
            }
        }
    }

    pub(super) fn reply(
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
}

/// An INVITE whose body is not SDP (415), or whose Accept rules out the SDP we would answer
/// with (406), RFC 3261 §8.2.3 and §21.4.7.
pub(super) fn unusable_media_type(req: &Request) -> Option<Refusal> {
    if !req.body.is_empty() {
        match content_type(&req.headers) {
            Some(ct) if ct == "application/sdp" => {}
            _ => return Some(Refusal::UnsupportedMediaType),
        }
    }
    let accept = crate::sip::message::header_value(&req.headers, "Accept")?;
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
pub(super) fn unsupported_requirement(req: &Request) -> Option<String> {
    let tags: Vec<&str> = req
        .headers
        .iter()
        .filter(|h| crate::sip::message::canonical_name(h.name()).eq_ignore_ascii_case("Require"))
        .flat_map(|h| h.value().split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("timer"))
        .collect();
    (!tags.is_empty()).then(|| tags.join(", "))
}
