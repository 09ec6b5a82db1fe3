//! The per-call task: picks the call's script from the dialplan, negotiates SDP, takes RTP
//! ports, runs the script and carries out what it asks, follows re-INVITEs and UPDATEs
//! (hold/unhold) and INFO, and releases everything when the call ends.
//!
//! The SDP offer is checked before any script runs, so a call we cannot carry gets its 488
//! (or 400, 503) at once. The call is answered when the script says so — `answer()`, or the
//! first verb that needs media. Serving the script's requests is [`flow`]'s part; this file
//! is the SIP side and the task's event loop.

mod flow;
mod transfer;

pub use transfer::TransferTarget;

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::Instrument;

use super::endpoint::{CallHandle, EndReason, Event};
use super::ids::Ids;
use super::message::Request;
use super::transport::Command;
use crate::cdr::{Cdr, HangupSide, RtpStats};
use crate::engine::{LegHandle, LegSockets, MediaEngine};
use crate::error::{reason_phrase, Refusal, SipStatus};
use crate::events::{Event as BusEvent, EventBus};
use crate::live::{CallControl, CallGuard, CallRegistry, CallState};
use crate::media::dtmf::Digit;
use crate::media::leg::{Leg, LegCommand, LegConfig, LegEvent};
use crate::media::prompt::PromptCache;
use crate::media::record::RecorderFactory;
use crate::rtp::ports::{PortAllocator, PortLease};
use crate::rtp::types::Ssrc;
use crate::script::dialplan::Dialplan;
use crate::script::{
    channel_port, spawn_script, CallInfo, ScriptOutcome, ScriptRequest, ScriptSet,
};
use crate::sdp::{self, LocalSession, NegotiatedAudio};

/// What every call needs from the server.
pub struct CallContext {
    /// The media workers.
    pub media: Arc<MediaEngine>,
    /// Starts recordings on the writer thread.
    pub recorder: RecorderFactory,
    /// Decoded prompts, shared by all calls.
    pub prompts: Arc<PromptCache>,
    /// Conference rooms.
    pub rooms: crate::conference::ConferenceRegistry,
    /// End a call after this long without RTP (None: never).
    pub rtp_timeout: Option<Duration>,
    /// Which RTP sources a call hears; the leg adds the SIP source address of its call.
    pub rtp_sources: crate::media::leg::LegSources,
    /// In-band DTMF detection limits.
    pub dtmf: crate::media::dtmf::DetectorConfig,
    /// RTP/RTCP ports.
    pub ports: PortAllocator,
    /// Address written into our SDP.
    pub media_ip: IpAddr,
    /// End answered calls after this long (None: never).
    pub max_duration: Option<Duration>,
    /// The compiled call-flow scripts.
    pub scripts: Arc<ScriptSet>,
    /// Which script a dialled user runs.
    pub dialplan: Arc<Dialplan>,
    /// Live calls, for the HTTP API.
    pub calls: CallRegistry,
    /// Where call events are published.
    pub events: EventBus,
    /// Counters for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where finished calls' records go (None: no CDRs).
    pub cdr: Option<crate::cdr::CdrWriter>,
    /// With the call handle, seeds each call's SDP session id, SSRC and RTP start points.
    pub ids_seed: u64,
}

/// Starts a call task for an `Event::Incoming`.
pub fn spawn(
    ctx: Arc<CallContext>,
    call: CallHandle,
    incoming: Event,
    events: mpsc::UnboundedReceiver<Event>,
    commands: mpsc::Sender<Command>,
) {
    let Event::Incoming { request, peer, .. } = incoming else {
        return;
    };
    let header = |name| {
        super::message::header_value(&request.headers, name)
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let parties = Parties {
        call_id: header("Call-ID"),
        from: header("From"),
        to: header("To"),
        user: request.uri.user().unwrap_or("").to_string(),
        signalling: peer.addr.ip(),
    };
    let call_id = parties.call_id.clone();
    let span = tracing::info_span!("call", call_id = %call_id);
    tokio::spawn(
        async move {
            let (control_tx, control) = mpsc::unbounded_channel();
            ctx.metrics.call_started();
            let live = ctx.calls.register(
                crate::live::CallInfo::new(&parties.call_id, &parties.from, &parties.user),
                control_tx,
            );
            ctx.events.publish(BusEvent::CallStarted {
                call_id: parties.call_id.clone(),
                from: parties.from.clone(),
                to: parties.user.clone(),
            });
            let (leg_tx, leg_events) = mpsc::unbounded_channel();
            let ids = Ids::for_call(ctx.ids_seed, call.0);
            let mut c = Call {
                ctx,
                ids,
                call,
                events,
                commands,
                lease: None,
                session: None,
                leg: None,
                leg_tx,
                leg_events,
                parties,
                live,
                control,
                answered: false,
                answer_sdp: None,
                pending_media: None,
                awaiting_answer: false,
                early_media: false,
                confirmed: false,
                ending: false,
                active: flow::Active::Idle,
                type_ahead: VecDeque::new(),
                next_play: 1,
                recordings: Vec::new(),
                all_recordings: Vec::new(),
                digits: String::new(),
                answered_at: None,
                room: None,
                rtp: Default::default(),
            };
            let outcome = c.run(request).await;
            let ended = EndedAt {
                at: Instant::now(),
                rfc3339: crate::live::rfc3339_now(),
            };
            let (reason, code) = outcome.describe();
            tracing::info!(reason, ?code, "call ended");
            c.ctx.metrics.call_ended();
            c.ctx.events.publish(BusEvent::CallEnded {
                call_id: c.parties.call_id.clone(),
                reason: reason.into(),
                code,
            });
            c.close_media().await;
            c.write_cdr(&outcome, reason, code, ended);
        }
        .instrument(span),
    );
}

pub(crate) struct Call {
    ctx: Arc<CallContext>,
    /// The call's identifiers: SDP session id, SSRC, RTP start points.
    ids: Ids,
    call: CallHandle,
    events: mpsc::UnboundedReceiver<Event>,
    commands: mpsc::Sender<Command>,
    lease: Option<PortLease>,
    session: Option<LocalSession>,
    leg: Option<LegHandle>,
    leg_tx: mpsc::UnboundedSender<LegEvent>,
    leg_events: mpsc::UnboundedReceiver<LegEvent>,
    parties: Parties,
    live: CallGuard,
    control: mpsc::UnboundedReceiver<CallControl>,
    answered: bool,
    /// Our SDP for the 200 OK, until the call is answered.
    answer_sdp: Option<String>,
    /// Media negotiated in the INVITE, started when the call is answered.
    pending_media: Option<NegotiatedAudio>,
    /// We offered in the 200 OK and wait for the answer in the ACK.
    awaiting_answer: bool,
    /// 183 with SDP sent: media flows before the answer.
    early_media: bool,
    /// The caller's ACK arrived: in-dialog requests of ours may go out.
    confirmed: bool,
    /// We hung up or refused; waiting for the dialog to end.
    ending: bool,
    /// The script request being carried out.
    active: flow::Active,
    /// Keys pressed ahead of the next `collect` (barge-in, or between verbs).
    type_ahead: VecDeque<Digit>,
    /// Next playback id for the leg.
    next_play: u64,
    /// Recordings this call made and kept, playable as `recording:ID`.
    recordings: Vec<String>,
    /// Recordings this call made, kept or not, for its CDR.
    all_recordings: Vec<String>,
    /// Every key the caller pressed, for the CDR.
    digits: String,
    /// When the 200 OK went out.
    answered_at: Option<Instant>,
    /// The conference room the call is in.
    room: Option<crate::conference::Membership>,
    /// The leg's receive statistics, once it is closed.
    rtp: crate::media::leg::RtpSummary,
}

/// Who the call is between.
struct Parties {
    call_id: String,
    from: String,
    to: String,
    /// The dialled user (Request-URI user part).
    user: String,
    /// Where the INVITE came from: NAT is evident when the SDP's media address differs.
    signalling: std::net::IpAddr,
}

/// When a call ended, monotonic (for its duration) and as RFC 3339 (for the CDR).
struct EndedAt {
    at: Instant,
    rfc3339: String,
}

/// How the call ended, for the log and the event stream.
#[derive(Debug)]
enum Outcome {
    Ended(EndReason),
    Refused(u16),
    Lost,
}

impl Outcome {
    fn describe(&self) -> (&'static str, Option<u16>) {
        match self {
            Outcome::Ended(EndReason::RemoteBye) => ("caller_bye", None),
            Outcome::Ended(EndReason::LocalBye) => ("server_bye", None),
            Outcome::Ended(EndReason::Cancelled) => ("cancelled", None),
            Outcome::Ended(EndReason::Rejected(c)) | Outcome::Refused(c) => ("refused", Some(*c)),
            Outcome::Ended(EndReason::AckTimeout) => ("ack_timeout", None),
            Outcome::Ended(EndReason::Timeout) => ("timeout", None),
            Outcome::Ended(EndReason::SessionExpired) => ("session_expired", None),
            Outcome::Lost => ("lost", None),
        }
    }
}

/// The final status the caller got: a refusal's, 487 for a cancelled INVITE (RFC 3261 §9.2),
/// or 200 once answered.
fn cdr_code(outcome: &Outcome, refused: Option<u16>, answered: bool) -> Option<u16> {
    match outcome {
        Outcome::Ended(EndReason::Cancelled) => Some(487),
        _ => refused.or(answered.then_some(200)),
    }
}

impl Call {
    /// Leaves the room and removes the leg, and waits briefly for the leg's final
    /// statistics (the worker reports them as it removes the leg).
    async fn close_media(&mut self) {
        self.room = None;
        if self.leg.take().is_none() {
            return;
        }
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(e)) = tokio::time::timeout_at(until, self.leg_events.recv()).await {
            match e {
                LegEvent::Closed(summary) => {
                    self.rtp = summary;
                    return;
                }
                // A recording the hangup ended: announced and counted like any other.
                LegEvent::RecordDone {
                    id,
                    reason,
                    kept,
                    digits,
                    discarded,
                } => {
                    self.on_record_done(id, reason.as_str(), kept, digits, discarded)
                        .await
                }
                _ => {}
            }
        }
    }

    /// Hands the call's record to the CDR writer, if CDRs are on. `ended` is when the call
    /// ended (not when its media was closed), monotonic and as RFC 3339.
    fn write_cdr(&self, outcome: &Outcome, cause: &str, code: Option<u16>, ended: EndedAt) {
        let Some(cdr) = &self.ctx.cdr else {
            return;
        };
        let info = self.ctx.calls.get(&self.parties.call_id);
        let hangup = match outcome {
            Outcome::Ended(EndReason::RemoteBye | EndReason::Cancelled) => HangupSide::Caller,
            _ => HangupSide::Server,
        };
        cdr.submit(Cdr {
            call_id: self.parties.call_id.clone(),
            from: self.parties.from.clone(),
            to: self.parties.user.clone(),
            started_at: info
                .as_ref()
                .map_or_else(crate::live::rfc3339_now, |i| i.started_at.clone()),
            answered_at: info.and_then(|i| i.answered_at),
            ended_at: ended.rfc3339,
            duration_ms: self.answered_at.map_or(0, |t| {
                ended.at.saturating_duration_since(t).as_millis() as u64
            }),
            hangup,
            cause: cause.to_string(),
            sip_code: cdr_code(outcome, code, self.answered),
            digits: self.digits.clone(),
            recordings: self.all_recordings.clone(),
            rtp: RtpStats {
                packets: self.rtp.packets,
                lost: self.rtp.lost,
                jitter_ms: self.rtp.jitter_us as f64 / 1000.0,
            },
        });
    }

    async fn send(&self, c: Command) {
        let _ = self.commands.send(c).await;
    }

    async fn reject(&self, code: u16, warning: Option<String>) -> Outcome {
        self.send(Command::Reject {
            call: self.call,
            code,
            reason: reason_phrase(code).into(),
            warning,
        })
        .await;
        Outcome::Refused(code)
    }

    async fn run(&mut self, request: Box<Request>) -> Outcome {
        let user = self.parties.user.clone();
        let route = self.ctx.dialplan.route(&user);
        tracing::info!(to = %user, script = %route.script, "incoming call");
        let Some(ast) = self.ctx.scripts.get(&route.script) else {
            tracing::warn!(script = %route.script, "no such script; refusing the call");
            return self
                .reject(
                    Refusal::NoSuchUser.code(),
                    Some(format!("no script {}", route.script)),
                )
                .await;
        };
        let Some(lease) = self.ctx.ports.allocate() else {
            tracing::warn!("no RTP port free");
            return self
                .reject(
                    Refusal::Overloaded.code(),
                    Some("no media ports free".into()),
                )
                .await;
        };
        let media = std::net::SocketAddr::new(self.ctx.media_ip, lease.port());
        self.lease = Some(lease);
        let mut session = LocalSession::new(self.ids.u64(1..u64::MAX >> 1), media);
        if request.body.is_empty() {
            // No offer in the INVITE: we offer in the 200 and take the answer from the ACK.
            self.answer_sdp = Some(session.offer().to_string());
            self.awaiting_answer = true;
        } else {
            match negotiate(&mut session, &request.body) {
                Ok((sdp, m)) => {
                    tracing::info!(codec = ?m.codec, remote = ?m.remote_rtp, "media negotiated");
                    self.answer_sdp = Some(sdp);
                    self.pending_media = Some(m);
                }
                Err((code, why)) => {
                    tracing::info!(%code, %why, "offer refused");
                    return self.reject(code, Some(why)).await;
                }
            }
        }
        self.session = Some(session);
        let info = CallInfo {
            from: self.parties.from.clone(),
            to: user,
            call_id: self.parties.call_id.clone(),
            headers: request_headers(&request),
            vars: route.vars,
        };
        // The INVITE is not needed for the rest of the call; idle calls should stay small.
        drop(request);
        self.live.update(|c| c.script = Some(route.script.clone()));
        let (port, requests) = channel_port();
        let script = spawn_script(ast, self.ctx.scripts.engine().clone(), info, Box::new(port));
        let hangup = script.hangup_flag();
        let outcome = self.in_call(requests, script).await;
        // Whatever ended the call, a script still running stops at its next step.
        hangup.store(true, std::sync::atomic::Ordering::Relaxed);
        outcome
    }

    /// Media verbs need media: answer, unless early media already flows.
    async fn ensure_media(&mut self) {
        if !self.early_media {
            self.answer().await;
        }
    }

    /// 183 Session Progress with our answer SDP, and media before the 200 OK. Only for an
    /// offer in the INVITE: an offer of ours in a 183 would need reliable provisional
    /// responses (RFC 3262), which are not supported.
    async fn start_early_media(&mut self) -> Result<(), String> {
        if self.answered || self.early_media {
            return Ok(());
        }
        if self.awaiting_answer {
            return Err("early media needs an SDP offer in the INVITE".into());
        }
        let Some(sdp) = self.answer_sdp.clone() else {
            return Err("no SDP to send".into());
        };
        self.early_media = true;
        self.send(Command::Ring(self.call, Some(sdp.into_bytes())))
            .await;
        if let Some(m) = self.pending_media.take() {
            self.start_media(&m);
        }
        Ok(())
    }

    /// Sends the 200 OK (once) and starts the media negotiated in the INVITE (if early
    /// media has not already).
    async fn answer(&mut self) {
        if self.answered || self.ending {
            return;
        }
        let Some(sdp) = self.answer_sdp.take() else {
            return;
        };
        self.answered = true;
        self.answered_at = Some(Instant::now());
        self.send(Command::Answer(self.call, sdp.into_bytes()))
            .await;
        if let Some(m) = self.pending_media.take() {
            self.start_media(&m);
        } else if let Some(leg) = &self.leg {
            leg.send(LegCommand::Answered);
        }
        self.live.update(|c| {
            c.state = CallState::Answered;
            c.answered_at = Some(crate::live::rfc3339_now());
        });
        self.ctx.events.publish(BusEvent::CallAnswered {
            call_id: self.parties.call_id.clone(),
        });
    }

    /// Ends the call from our side: BYE once answered, else a final response.
    async fn hangup(&mut self, refuse_with: u16) {
        if self.ending {
            return;
        }
        self.ending = true;
        if self.answered {
            self.send(Command::Hangup(self.call)).await;
        } else {
            self.reject(refuse_with, None).await;
        }
    }

    /// Puts the call's media on a worker, or updates it after a new offer/answer.
    fn start_media(&mut self, m: &NegotiatedAudio) {
        if let Some(leg) = &self.leg {
            leg.send(LegCommand::Update {
                remote: m.remote_rtp,
                remote_rtcp: m.remote_rtcp,
                direction: m.direction,
                ptime: Duration::from_millis(u64::from(m.ptime_ms)),
            });
            return;
        }
        let sockets = self.lease.as_ref().and_then(|l| {
            Some(LegSockets::new(
                l.rtp.try_clone().ok()?,
                l.rtcp.try_clone().ok()?,
            ))
        });
        let Some(sockets) = sockets else {
            return;
        };
        let cfg = LegConfig {
            codec: m.codec,
            payload_type: m.payload_type,
            telephone_event: m.telephone_event_pt,
            remote: m.remote_rtp,
            remote_rtcp: m.remote_rtcp,
            rtcp_mux: m.rtcp_mux,
            direction: m.direction,
            rtp_timeout: self.ctx.rtp_timeout.unwrap_or(Duration::MAX),
            ssrc: Ssrc::new(self.ids.u32()),
            ptime: Duration::from_millis(u64::from(m.ptime_ms)),
            sources: crate::media::leg::LegSources {
                signalling: Some(self.parties.signalling),
                ..self.ctx.rtp_sources.clone()
            },
            dtmf: self.ctx.dtmf,
            first_seq: self.ids.u16(),
            first_timestamp: self.ids.u32(),
            rtcp_seed: self.ids.u64(..),
        };
        let leg = match Leg::new(cfg, Instant::now()) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "no media for the call");
                return;
            }
        };
        match self.ctx.media.add(leg, sockets, self.leg_tx.clone()) {
            Ok(h) => self.leg = Some(h),
            Err(e) => tracing::warn!(error = %e, "no media worker took the call"),
        }
    }

    /// DTMF by SIP INFO joins the leg's digit stream, where it is merged with RFC 4733 and
    /// in-band detection of the same key press.
    fn on_info(&mut self, content_type: &str, body: &[u8]) {
        match crate::media::dtmf::parse_info(content_type, body) {
            Ok(d) => {
                if let Some(leg) = &self.leg {
                    leg.send(LegCommand::InfoDigit(d.to_event(Instant::now())));
                }
            }
            Err(e) => tracing::debug!(%content_type, error = %e, "INFO without DTMF"),
        }
    }

    /// The event loop: SIP events, media events, the script's requests, timers, controls.
    async fn in_call(
        &mut self,
        mut requests: mpsc::Receiver<ScriptRequest>,
        script: crate::script::ScriptHandle,
    ) -> Outcome {
        let limit = self.ctx.max_duration;
        // Counted from the answer: armed once the call is answered.
        let deadline = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(deadline);
        let mut deadline_armed = false;
        let mut deadline_passed = false;
        let done = script.join();
        tokio::pin!(done);
        let mut script_running = true;
        let mut requests_open = true;
        loop {
            if let (false, Some(at), Some(limit)) = (deadline_passed, self.answered_at, limit) {
                if !deadline_armed {
                    deadline_armed = true;
                    // A limit past the end of time is no limit.
                    match tokio::time::Instant::from_std(at).checked_add(limit) {
                        Some(end) => deadline.as_mut().reset(end),
                        None => deadline_passed = true,
                    }
                }
            }
            let timer = self.active.deadline();
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
                timer.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            ));
            // Verbs that need media wait while the answer to our offer is still to come.
            let ready = self.active.is_idle() && !(self.answered && self.awaiting_answer);
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(Event::Ended { reason, .. }) => return Outcome::Ended(reason),
                    Some(ev) => self.on_sip_event(ev).await,
                    None => return Outcome::Lost,
                },
                Some(e) = self.leg_events.recv() => self.on_leg_event(e).await,
                reason = flow::room_left(&mut self.room) => self.on_room_left(reason).await,
                req = requests.recv(), if ready && requests_open => match req {
                    Some(r) => self.start_request(r).await,
                    None => requests_open = false,
                },
                outcome = &mut done, if script_running => {
                    script_running = false;
                    self.on_script_end(&outcome).await;
                }
                _ = sleep, if timer.is_some() => self.on_timer().await,
                Some(c) = self.control.recv() => match c {
                    CallControl::Hangup => {
                        tracing::info!("hung up by the operator");
                        self.hangup(Refusal::Unavailable.code()).await;
                    }
                    CallControl::Dtmf(digits) => {
                        if let Some(leg) = &self.leg {
                            leg.send(LegCommand::SendDtmf { digits, inband: false });
                        }
                    }
                },
                _ = &mut deadline, if !deadline_passed && deadline_armed => {
                    tracing::info!("maximum call duration reached");
                    deadline_passed = true;
                    self.hangup(Refusal::Unavailable.code()).await;
                }
            }
        }
    }

    async fn on_script_end(&mut self, outcome: &ScriptOutcome) {
        if self.ending {
            return;
        }
        match outcome {
            ScriptOutcome::Error(e) => {
                self.ctx.metrics.script_error();
                tracing::warn!(error = %e, "the script failed; ending the call");
                self.hangup(Refusal::Internal.code()).await;
            }
            ScriptOutcome::Stopped(cause) => {
                tracing::info!(?cause, "the script was stopped; ending the call");
                self.hangup(Refusal::Internal.code()).await;
            }
            // A flow that ends without hanging up hangs up; one that never answered refuses.
            ScriptOutcome::Finished => self.hangup(Refusal::Unavailable.code()).await,
        }
    }

    async fn on_sip_event(&mut self, ev: Event) {
        match ev {
            Event::Confirmed { sdp, .. } => {
                self.confirmed = true;
                self.send_refer().await;
                if let (true, Some(s)) = (self.awaiting_answer, self.session.as_mut()) {
                    self.awaiting_answer = false;
                    match sdp.map(|body| accept_answer(s, &body)) {
                        Some(Ok(m)) => {
                            tracing::info!(codec = ?m.codec, "answer in ACK accepted");
                            self.start_media(&m);
                        }
                        Some(Err(e)) => {
                            tracing::info!(error = %e, "unusable answer in ACK; hanging up");
                            self.hangup(Refusal::OfferNotAcceptable.code()).await;
                        }
                        None => {
                            tracing::info!("no answer in the ACK; hanging up");
                            self.hangup(Refusal::OfferNotAcceptable.code()).await;
                        }
                    }
                }
            }
            Event::ReInvite { sdp, .. } => self.on_reinvite(sdp).await,
            // An UPDATE's offer is answered the way a re-INVITE's is (RFC 3311 §5.2).
            Event::Update { sdp, .. } => self.on_reinvite(Some(sdp)).await,
            Event::Info {
                content_type, body, ..
            } => {
                self.on_info(content_type.as_deref().unwrap_or(""), &body);
            }
            Event::ReferAnswered { code, .. } => self.on_refer_answered(code).await,
            Event::TransferProgress {
                status, terminated, ..
            } => self.on_transfer_progress(status, terminated).await,
            Event::ReInviteAnswered { code, sdp, .. } => {
                if let (Some(body), Some(s)) = (sdp, self.session.as_mut()) {
                    match accept_answer(s, &body) {
                        Ok(m) => {
                            tracing::info!(%code, direction = ?m.direction, "re-INVITE answered");
                            self.start_media(&m);
                        }
                        Err(e) => {
                            tracing::info!(%code, error = %e, "unusable answer to our re-INVITE")
                        }
                    }
                }
            }
            _ => {}
        }
    }

    async fn on_leg_event(&mut self, e: LegEvent) {
        match e {
            LegEvent::Digit { digit, method } => {
                tracing::info!(%digit, ?method, "DTMF");
                self.digits.push(digit.as_char());
                self.ctx.metrics.dtmf(method.as_str());
                self.ctx.events.publish(BusEvent::Dtmf {
                    call_id: self.parties.call_id.clone(),
                    digit: digit.as_char().to_string(),
                    method: method.as_str().into(),
                });
                self.on_digit(digit).await;
            }
            LegEvent::PlayDone { id, interrupted } => {
                tracing::debug!(id, interrupted, "playback done");
                self.on_play_done(id).await;
            }
            LegEvent::RecordDone {
                id,
                reason,
                kept,
                digits,
                discarded,
            } => {
                tracing::info!(%id, reason = reason.as_str(), kept_ms = kept.as_millis() as u64, %digits, discarded, "recording done");
                self.on_record_done(id, reason.as_str(), kept, digits, discarded)
                    .await;
            }
            LegEvent::Closed(summary) => self.rtp = summary,
            LegEvent::RtpTimeout => {
                tracing::info!("no RTP from the caller; hanging up");
                self.hangup(Refusal::Unavailable.code()).await;
            }
        }
    }

    async fn on_reinvite(&mut self, offer: Option<Vec<u8>>) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let result = match offer {
            Some(body) => negotiate(session, &body).map(|(sdp, m)| (sdp, Some(m))),
            // An offerless re-INVITE: we offer again; the answer comes in the ACK.
            None => Ok((session.offer().to_string(), None)),
        };
        match result {
            Ok((sdp, m)) => {
                tracing::info!(direction = ?m.as_ref().map(|m| m.direction), "re-INVITE accepted");
                self.send(Command::AnswerReinvite(self.call, sdp.into_bytes()))
                    .await;
                if let Some(m) = m {
                    self.start_media(&m);
                }
            }
            // In a call, a broken offer is refused like an unacceptable one: 488, and the
            // session goes on as it was.
            Err((_, why)) => {
                let (code, reason) = Refusal::OfferNotAcceptable.status();
                self.send(Command::RejectReinvite {
                    call: self.call,
                    code,
                    reason: reason.into(),
                    warning: Some(why),
                })
                .await;
            }
        }
    }
}

/// The INVITE's headers by lower-case name, repeated headers joined by ", ".
fn request_headers(request: &Request) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for h in request.headers.iter() {
        let name = super::message::canonical_name(h.name()).to_ascii_lowercase();
        let value = h.value().trim();
        out.entry(name)
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    }
    out
}

/// Parses the peer's answer to our offer.
fn accept_answer(session: &mut LocalSession, body: &[u8]) -> Result<NegotiatedAudio, String> {
    let answer = sdp::parse(body).map_err(|e| e.to_string())?;
    session.accept_answer(&answer).map_err(|e| e.to_string())
}

/// Parses and answers an offer: the answer text, or the status code and reason to refuse with.
fn negotiate(
    session: &mut LocalSession,
    body: &[u8],
) -> Result<(String, NegotiatedAudio), (u16, String)> {
    let offer = sdp::parse(body).map_err(|e| (e.code(), format!("bad SDP: {e}")))?;
    let answer = session
        .answer(&offer)
        .map_err(|e| (e.code(), e.to_string()))?;
    Ok((answer.sdp.to_string(), answer.media))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_name_their_cause_and_code() {
        let cases = [
            (Outcome::Ended(EndReason::Cancelled), ("cancelled", None)),
            (
                Outcome::Ended(EndReason::SessionExpired),
                ("session_expired", None),
            ),
            (
                Outcome::Ended(EndReason::Rejected(486)),
                ("refused", Some(486)),
            ),
            (Outcome::Refused(480), ("refused", Some(480))),
            (Outcome::Ended(EndReason::RemoteBye), ("caller_bye", None)),
        ];
        for (outcome, want) in cases {
            assert_eq!(outcome.describe(), want, "{outcome:?}");
        }
    }

    #[test]
    fn cdr_code_is_the_final_status_the_caller_got() {
        let cancelled = Outcome::Ended(EndReason::Cancelled);
        assert_eq!(cdr_code(&cancelled, None, false), Some(487));
        assert_eq!(
            cdr_code(&Outcome::Refused(486), Some(486), false),
            Some(486)
        );
        let bye = Outcome::Ended(EndReason::RemoteBye);
        assert_eq!(cdr_code(&bye, None, true), Some(200));
        assert_eq!(cdr_code(&Outcome::Lost, None, false), None);
    }
}
