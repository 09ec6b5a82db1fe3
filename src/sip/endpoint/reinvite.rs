//! Offers and answers inside a confirmed call: the peer's re-INVITE and UPDATE (answered by the
//! layer above), our own re-INVITE, and the session timer (RFC 4028) they refresh: its
//! negotiation, deadlines, and the refreshes we send when we are the refresher.

use std::time::Instant;

use super::invite::allows_update;
use super::{
    Call, CallHandle, CallPhase, ClientPurpose, CommandError, EndReason, Endpoint, Event,
    InviteState, PendingUpdate, ServerTx, TimerOwner, TxKey,
};
use crate::error::Refusal;
use crate::sip::dialog::{content_type, Peer};
use crate::sip::message::{
    encode_response, header_value, push_header, refusal_to, response_to, set_body, Method,
    ParsedRequest, ParsedResponse, Request,
};
use crate::sip::session_timer::{Due, Negotiated, Refresher, SessionTimer};
use crate::sip::transaction::{InviteServerTx, NonInviteServerTx};

impl Endpoint {
    pub(super) fn on_reinvite(
        &mut self,
        now: Instant,
        peer: Peer,
        key: TxKey,
        call: CallHandle,
        r: ParsedRequest,
    ) {
        let busy = self
            .calls
            .get(&call)
            .is_none_or(|c| !c.may_offer() || c.phase != CallPhase::Confirmed);
        let glare = self
            .calls
            .get(&call)
            .is_some_and(|c| c.invite == InviteState::Ours);
        if glare {
            // §14.2: both sides re-INVITEd at once.
            let resp = refusal_to(&r.req, &Refusal::OurOfferPending, None);
            return self.reply(now, peer, key, Method::Invite, resp);
        }
        if busy {
            // §14.2: an INVITE arriving while another is pending gets 500 with Retry-After.
            let resp = self.their_offer_pending(&r.req);
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
            c.invite = InviteState::Theirs {
                key: key.clone(),
                reinvite: true,
            };
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
    pub(super) fn on_update(
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
        let ours_pending = matches!(
            c.invite,
            InviteState::Ours | InviteState::AwaitingAck { .. }
        );
        let theirs_pending = matches!(c.invite, InviteState::Theirs { reinvite: true, .. })
            || c.update_pending.is_some();
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
                let resp = self.their_offer_pending(&r.req);
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
            c.update_pending = Some(PendingUpdate {
                key,
                request: Box::new(r.req),
            });
        }
        self.events.push_back(Event::Update { call, sdp });
    }

    /// 500 to an offer while the peer's previous one awaits our answer, with a Retry-After of
    /// 0-10 s (RFC 3261 §14.2, RFC 3311 §5.2).
    fn their_offer_pending(&mut self, req: &Request) -> rsipstack::sip::Response {
        let mut resp = refusal_to(req, &Refusal::TheirOfferPending, None);
        push_header(&mut resp, "Retry-After", &self.ids.u64(0..=10).to_string());
        resp
    }

    /// Negotiates the session timer of a refresh request from the peer; also notes whether
    /// the peer allows UPDATE when the request says.
    pub(super) fn negotiate_refresh(
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
        crate::sip::session_timer::negotiate(&req.headers, &self.session_timers, c.current_timer())
    }

    /// Allow, Contact, Server and the session timer of our 2xx to the peer's INVITE,
    /// re-INVITE or UPDATE, whose SDP (if any) becomes the call's; the 2xx (re)starts the timer.
    pub(super) fn ok_headers(
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
    pub(super) fn arm_session(&mut self, call: CallHandle) {
        self.rearm(TimerOwner::Session(call));
    }

    /// The session timer's deadline: refresh (we are the refresher) or expiry (§10).
    pub(super) fn fire_session(&mut self, now: Instant, call: CallHandle) {
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
    pub(super) fn send_refresh(&mut self, now: Instant, call: CallHandle) {
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
        let sent = self.dialog_request(call, method, true, |c| update || c.may_offer());
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
                c.invite = InviteState::Ours;
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
    pub(super) fn on_refresh_answer(
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
                let se = crate::sip::session_timer::session_expires(&r.resp.headers);
                let interval = se
                    .as_ref()
                    .map_or(t.ask, |se| se.interval)
                    .max(crate::sip::session_timer::MIN_SE_FLOOR);
                // We were the UAC: `uas` hands the job to the peer.
                let refresher = match se.and_then(|se| se.refresher).as_deref() {
                    Some("uas") => Refresher::Peer,
                    _ => Refresher::Us,
                };
                *t = SessionTimer::start(now, interval, refresher);
            }
            422 => {
                // §7.4 / §8: retry at once with the peer's minimum, once it is larger.
                match crate::sip::session_timer::min_se(&r.resp.headers) {
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_reinvite_answer(
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
            super::local_for(&self.cfg, &self.ports, c.dialog.peer.transport),
            &self.cfg.user_agent,
        );
        let ack = ack.to_bytes();
        let first = c.invite == InviteState::Ours;
        if first {
            c.invite = InviteState::Idle;
        }
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

    /// Sends a re-INVITE with our new SDP offer (e.g. to put the caller on hold).
    pub fn reinvite(
        &mut self,
        now: Instant,
        call: CallHandle,
        sdp: Vec<u8>,
    ) -> Result<(), CommandError> {
        let (mut req, peer, cseq) =
            self.dialog_request(call, Method::Invite, true, Call::may_offer)?;
        set_body(&mut req, "application/sdp", sdp.clone());
        if let Some(c) = self.calls.get_mut(&call) {
            c.invite = InviteState::Ours;
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

    /// Answers a pending re-INVITE (or UPDATE offer) with 200 and our SDP.
    pub fn answer_reinvite(
        &mut self,
        now: Instant,
        call: CallHandle,
        sdp: Vec<u8>,
    ) -> Result<(), CommandError> {
        if let Some(PendingUpdate { key, request }) = self.take_pending_update(call) {
            let mut resp = response_to(&request, 200, "OK", None);
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
        if let Some(PendingUpdate { key, request }) = self.take_pending_update(call) {
            let resp = self.error_response(&request, code, reason, None, warning);
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
    pub(super) fn take_pending_update(&mut self, call: CallHandle) -> Option<PendingUpdate> {
        self.calls.get_mut(&call)?.update_pending.take()
    }

    /// Sends the final response to a pending UPDATE on its transaction.
    pub(super) fn respond_pending(
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

    /// Claims the call's pending re-INVITE for the final answer about to be sent.
    pub(super) fn take_pending_reinvite(&mut self, call: CallHandle) -> Result<(), CommandError> {
        let c = self.calls.get(&call).ok_or(CommandError::NoSuchCall)?;
        // The response about to be sent moves the state on.
        match c.invite {
            InviteState::Theirs { reinvite: true, .. } => Ok(()),
            _ => Err(CommandError::WrongState),
        }
    }
}

/// 422 Session Interval Too Small with our minimum (RFC 4028 §9).
pub(super) fn too_small(req: &Request, min: u32, to_tag: Option<&str>) -> rsipstack::sip::Response {
    let mut resp = refusal_to(req, &Refusal::IntervalTooSmall, to_tag);
    push_header(&mut resp, "Min-SE", &min.to_string());
    resp
}

/// The session timer headers of our 2xx to the peer's INVITE or UPDATE (RFC 4028 §9).
pub(super) fn timer_headers(resp: &mut rsipstack::sip::Response, n: &Negotiated) {
    push_header(resp, "Session-Expires", &n.session_expires());
    push_header(resp, "Supported", "timer");
    if n.peer_supports {
        push_header(resp, "Require", "timer");
    }
}
