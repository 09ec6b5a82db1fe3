//! The initial INVITE and the call's life around it: a new call from an INVITE, its
//! provisional and final responses (`ring`, `answer`, `reject`), the ACK, and BYE either way.

use std::time::Instant;

use super::reinvite::too_small;
use super::{
    dialog_id_of, tx_key, Call, CallHandle, CallPhase, ClientPurpose, CommandError, EndReason,
    Endpoint, Event, InviteState, ServerTx, TimerOwner, TxKey,
};
use crate::error::{Refusal, SipStatus};
use crate::sip::auth::Decision;
use crate::sip::dialog::{Dialog, Peer};
use crate::sip::message::{
    encode_response, push_header, refusal_to, response_to, set_body, Method, ParsedRequest, Request,
};
use crate::sip::session_timer::has_option_tag;
use crate::sip::transaction::InviteServerTx;
use rsipstack::sip::prelude::*;

impl Endpoint {
    pub(super) fn on_new_invite(&mut self, now: Instant, peer: Peer, key: TxKey, r: ParsedRequest) {
        // The last one: a proxy appends its own after whatever the caller wrote.
        let said = r
            .req
            .headers
            .iter()
            .filter(|h| {
                h.name()
                    .eq_ignore_ascii_case(crate::sip::proxy::SOURCE_HEADER)
            })
            .last()
            .map(|h| h.value());
        let source = self.trusted_proxies.source(peer, said);
        let auth_user = match self.authenticate(now, source.ip(), &r.req) {
            Ok(user) => user,
            Err(resp) => return self.reply(now, peer, key, Method::Invite, resp),
        };
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
        let timer_offer = match crate::sip::session_timer::negotiate(
            &r.req.headers,
            &self.session_timers,
            None,
        ) {
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
            source,
            auth_user,
        });
    }

    /// The authenticated user (None when the dialled user needs none), or the 401 or 403
    /// to answer with (see [`crate::sip::auth`]).
    fn authenticate(
        &mut self,
        now: Instant,
        source: std::net::IpAddr,
        req: &Request,
    ) -> Result<Option<String>, rsipstack::sip::Response> {
        let Some(auth) = self.auth.as_mut() else {
            return Ok(None);
        };
        let tag = self.ids.token();
        let mut resp = match auth.check(now, source, req) {
            Decision::Pass(user) => return Ok(user),
            Decision::Challenge { stale } => {
                let mut resp = response_to(req, 401, "Unauthorized", Some(&tag));
                for c in auth.challenges(now, stale) {
                    push_header(&mut resp, "WWW-Authenticate", &c);
                }
                resp
            }
            Decision::Forbidden => refusal_to(req, &Refusal::Forbidden, Some(&tag)),
        };
        push_header(&mut resp, "Server", &self.cfg.user_agent);
        Err(resp)
    }

    pub(super) fn on_ack(&mut self, now: Instant, r: ParsedRequest) {
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
        let InviteState::AwaitingAck { cseq, .. } = c.invite else {
            return;
        };
        if cseq != r.ess.cseq {
            return;
        }
        let InviteState::AwaitingAck { key, .. } =
            std::mem::replace(&mut c.invite, InviteState::Idle)
        else {
            return;
        };
        let first = c.phase == CallPhase::Answered;
        if first {
            c.phase = CallPhase::Confirmed;
        }
        if let Some(ServerTx::Invite { tx, .. }) = self.server_txs.get_mut(&key) {
            tx.on_2xx_ack();
        }
        let sdp = (!r.req.body.is_empty()).then(|| r.req.body.clone());
        if first || sdp.is_some() {
            self.events.push_back(Event::Confirmed { call, sdp });
        }
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

    /// Ends the call from our side: BYE when answered, 480 while still ringing, CANCEL for
    /// a call of ours not yet answered.
    pub fn hangup(&mut self, now: Instant, call: CallHandle) -> Result<(), CommandError> {
        if self.is_unanswered_outgoing(call) {
            return self.cancel(now, call);
        }
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

    pub(super) fn send_bye(&mut self, now: Instant, call: CallHandle) {
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
            super::local_for(&self.cfg, &self.ports, c.dialog.peer.transport),
            &self.cfg.user_agent,
        );
        let peer = c.dialog.peer;
        self.start_client(now, call, ClientPurpose::Bye, peer, req);
    }

    /// Sends a provisional or 2xx response on the call's pending INVITE transaction.
    pub(super) fn invite_response(
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
        let key = match &c.invite {
            InviteState::Theirs { key, .. } => key.clone(),
            _ => return Err(CommandError::WrongState),
        };
        let local_tag = c.dialog.id.local_tag.clone();
        let peer = c.dialog.peer;
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
        if (200..300).contains(&code) {
            self.ok_headers(call, &mut resp, now, sdp.as_deref());
        } else {
            self.decorate(&mut resp, peer);
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
                let cseq = invite_cseq.unwrap_or(c.dialog.remote_cseq);
                c.invite = InviteState::AwaitingAck {
                    key: key.clone(),
                    cseq,
                };
            }
        }
        self.rearm(TimerOwner::Server(key));
        Ok(())
    }

    pub(super) fn final_invite_response(
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
        let InviteState::Theirs { key, .. } = std::mem::replace(&mut c.invite, InviteState::Idle)
        else {
            return;
        };
        c.timer_offer = None;
        let local_tag = c.dialog.id.local_tag.clone();
        let peer = c.dialog.peer;
        let Some(ServerTx::Invite { request, .. }) = self.server_txs.get_mut(&key) else {
            return;
        };
        let Some(req) = request.take() else {
            return;
        };
        let resp = self.error_response(&req, code, reason, Some(&local_tag), warning);
        let bytes = encode_response(&resp);
        if let Some(ServerTx::Invite { tx, .. }) = self.server_txs.get_mut(&key) {
            tx.respond(now, code, bytes.clone());
        }
        self.send(peer, bytes);
        self.rearm(TimerOwner::Server(key));
    }
}

/// The peer's Allow lists UPDATE.
pub(super) fn allows_update(req: &Request) -> bool {
    has_option_tag(&req.headers, "Allow", "UPDATE")
}

/// The Allow of the peer's 2xx to our INVITE lists UPDATE.
pub(super) fn allows_update_response(resp: &rsipstack::sip::Response) -> bool {
    has_option_tag(&resp.headers, "Allow", "UPDATE")
}
