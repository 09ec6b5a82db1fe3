//! The per-call task: negotiates SDP, takes RTP ports, answers or refuses, follows re-INVITEs
//! (hold/unhold) and INFO, and releases everything when the call ends.
//!
//! What the call does once answered is decided by a built-in dialplan keyed on the
//! Request-URI user: `busy` is refused with 486, `ring` rings until the caller gives up, `echo`
//! sends the caller's audio back, and anything else leaves a message: the welcome and
//! record-after-the-tone prompts, a beep, a recording of the caller (until `#`, 5 s of
//! silence or 2 minutes), goodbye, hang up. Each answered call's media runs as a leg on a
//! media worker.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::Instrument;

use super::endpoint::{CallHandle, EndReason, Event};
use super::message::Request;
use super::transport::Command;
use crate::media::leg::{Leg, LegCommand, LegConfig, LegEvent};
use crate::media::prompt::PromptCache;
use crate::media::record::{
    DigitSet, RecordMode, RecordPolicy, RecordSession, RecorderFactory, RecordingMeta,
};
use crate::media::worker::{LegHandle, LegSockets, MediaEngine};
use crate::rtp::ports::{PortAllocator, PortLease};
use crate::rtp::types::Ssrc;
use crate::sdp::{self, LocalSession, NegotiatedAudio};

/// What every call needs from the server.
pub struct CallContext {
    /// The media workers.
    pub media: Arc<MediaEngine>,
    /// Starts recordings on the writer thread.
    pub recorder: RecorderFactory,
    /// Decoded prompts, shared by all calls.
    pub prompts: Arc<PromptCache>,
    /// End a call after this long without RTP (None: never).
    pub rtp_timeout: Option<Duration>,
    /// RTP/RTCP ports.
    pub ports: PortAllocator,
    /// Address written into our SDP.
    pub media_ip: IpAddr,
    /// End answered calls after this long (None: never).
    pub max_duration: Option<Duration>,
    /// How long `ring` rings before giving up.
    pub ring_timeout: Duration,
}

/// Starts a call task for an `Event::Incoming`.
pub fn spawn(
    ctx: Arc<CallContext>,
    call: CallHandle,
    incoming: Event,
    events: mpsc::UnboundedReceiver<Event>,
    commands: mpsc::Sender<Command>,
) {
    let Event::Incoming { request, .. } = incoming else {
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
    };
    let call_id = parties.call_id.clone();
    let span = tracing::info_span!("call", call_id = %call_id);
    tokio::spawn(
        async move {
            let (leg_tx, leg_events) = mpsc::unbounded_channel();
            let mut c = Call {
                ctx,
                call,
                events,
                commands,
                lease: None,
                session: None,
                leg: None,
                leg_tx,
                leg_events,
                echo: false,
                parties,
            };
            let reason = c.run(request).await;
            tracing::info!(?reason, "call ended");
        }
        .instrument(span),
    );
}

struct Call {
    ctx: Arc<CallContext>,
    call: CallHandle,
    events: mpsc::UnboundedReceiver<Event>,
    commands: mpsc::Sender<Command>,
    lease: Option<PortLease>,
    session: Option<LocalSession>,
    leg: Option<LegHandle>,
    leg_tx: mpsc::UnboundedSender<LegEvent>,
    leg_events: mpsc::UnboundedReceiver<LegEvent>,
    echo: bool,
    parties: Parties,
}

/// Who the call is between, for recordings' sidecars.
struct Parties {
    call_id: String,
    from: String,
    to: String,
}

/// Playback ids of the built-in message flow.
const PLAY_GREETING: u64 = 1;
const PLAY_GOODBYE: u64 = 2;

/// How the call ended, for the log.
#[derive(Debug)]
#[allow(dead_code)] // the fields are read through Debug in the end-of-call log line
enum Outcome {
    Ended(EndReason),
    Refused(u16),
    Lost,
}

impl Call {
    async fn send(&self, c: Command) {
        let _ = self.commands.send(c).await;
    }

    async fn reject(&self, code: u16, reason: &str, warning: Option<String>) -> Outcome {
        self.send(Command::Reject {
            call: self.call,
            code,
            reason: reason.into(),
            warning,
        })
        .await;
        Outcome::Refused(code)
    }

    async fn run(&mut self, request: Box<Request>) -> Outcome {
        let user = request.uri.user().unwrap_or("").to_string();
        tracing::info!(to = %user, "incoming call");
        match user.as_str() {
            "busy" => return self.reject(486, "Busy Here", None).await,
            "ring" => {
                self.send(Command::Ring(self.call, None)).await;
                return self.ring_until_cancelled().await;
            }
            _ => {}
        }
        let Some(lease) = self.ctx.ports.allocate() else {
            tracing::warn!("no RTP port free");
            return self
                .reject(
                    503,
                    "Service Unavailable",
                    Some("no media ports free".into()),
                )
                .await;
        };
        let media = std::net::SocketAddr::new(self.ctx.media_ip, lease.port());
        self.lease = Some(lease);
        let mut session = LocalSession::new(fastrand::u64(1..u64::MAX >> 1), media);
        let (sdp_out, media) = if request.body.is_empty() {
            // No offer in the INVITE: we offer in the 200 and take the answer from the ACK.
            (session.offer().to_string(), None)
        } else {
            match negotiate(&mut session, &request.body) {
                Ok((sdp, m)) => {
                    tracing::info!(codec = ?m.codec, remote = ?m.remote_rtp, "media negotiated");
                    (sdp, Some(m))
                }
                Err((code, why)) => {
                    tracing::info!(%code, %why, "offer refused");
                    let phrase = if code == 400 {
                        "Bad Request"
                    } else {
                        "Not Acceptable Here"
                    };
                    return self.reject(code, phrase, Some(why)).await;
                }
            }
        };
        let late_offer = request.body.is_empty();
        // The INVITE is not needed for the rest of the call; idle calls should stay small.
        drop(request);
        self.session = Some(session);
        self.echo = user == "echo";
        self.send(Command::Ring(self.call, None)).await;
        self.send(Command::Answer(self.call, sdp_out.into_bytes()))
            .await;
        if let Some(m) = media {
            self.start_media(&m);
        }
        self.in_call(late_offer).await
    }

    /// Puts the call's media on a worker, or updates it after a new offer/answer.
    fn start_media(&mut self, m: &NegotiatedAudio) {
        if let Some(leg) = &self.leg {
            leg.send(LegCommand::Update {
                remote: m.remote_rtp,
                remote_rtcp: m.remote_rtcp,
                direction: m.direction,
            });
            return;
        }
        let sockets = self.lease.as_ref().and_then(|l| {
            Some(LegSockets {
                rtp: l.rtp.try_clone().ok()?,
                rtcp: l.rtcp.try_clone().ok()?,
            })
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
            ssrc: Ssrc::new(fastrand::u32(..)),
        };
        let leg = match Leg::new(cfg, std::time::Instant::now()) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "no media for the call");
                return;
            }
        };
        match self.ctx.media.add(leg, sockets, self.leg_tx.clone()) {
            Ok(h) => {
                if self.echo {
                    h.send(LegCommand::Echo(true));
                }
                self.leg = Some(h);
                if !self.echo {
                    self.play(&["welcome", "record-after-tone", "beep"], PLAY_GREETING);
                }
            }
            Err(e) => tracing::warn!(error = %e, "no media worker took the call"),
        }
    }

    /// Loads prompts off the media path and hands them to the leg; a prompt that cannot be
    /// loaded is logged and skipped, the call goes on.
    fn play(&self, names: &[&str], id: u64) {
        let Some(sender) = self.leg.as_ref().map(LegHandle::sender) else {
            return;
        };
        let prompts = self.ctx.prompts.clone();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || match prompts.play(&names, 8000) {
            Ok(playlist) => sender.send(LegCommand::Play {
                id,
                source: Box::new(playlist),
                barge_in: true,
            }),
            Err(e) => tracing::warn!(error = %e, "prompt not played"),
        });
    }

    fn start_recording(&mut self) {
        let Some(leg) = &self.leg else {
            return;
        };
        let meta = RecordingMeta {
            call_id: self.parties.call_id.clone(),
            from: self.parties.from.clone(),
            to: self.parties.to.clone(),
            room: None,
            mode: RecordMode::Inbound,
            rate: 8000,
        };
        let handle = match self.ctx.recorder.start(meta) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record");
                return;
            }
        };
        let policy = RecordPolicy {
            max_duration: Some(Duration::from_secs(120)),
            silence_timeout: Some(Duration::from_secs(5)),
            min_duration: Duration::from_millis(500),
            terminators: DigitSet::from_chars("#"),
            beep: true,
            ..RecordPolicy::default()
        };
        tracing::info!(id = handle.id(), "recording");
        leg.send(LegCommand::Record {
            session: Box::new(RecordSession::new(policy)),
            handle,
        });
    }

    /// DTMF by SIP INFO joins the leg's digit stream, where it is merged with RFC 4733 and
    /// in-band detection of the same key press.
    fn on_info(&mut self, content_type: &str, body: &[u8]) {
        match crate::media::dtmf::parse_info(content_type, body) {
            Ok(d) => {
                if let Some(leg) = &self.leg {
                    leg.send(LegCommand::InfoDigit(d.to_event(std::time::Instant::now())));
                }
            }
            Err(e) => tracing::debug!(%content_type, error = %e, "INFO without DTMF"),
        }
    }

    async fn on_leg_event(&mut self, e: LegEvent) {
        match e {
            LegEvent::Digit { digit, method } => {
                tracing::info!(%digit, ?method, "DTMF");
            }
            LegEvent::PlayDone { id, interrupted } => {
                tracing::debug!(id, interrupted, "playback done");
                match id {
                    PLAY_GREETING => self.start_recording(),
                    PLAY_GOODBYE => self.send(Command::Hangup(self.call)).await,
                    _ => {}
                }
            }
            LegEvent::RecordDone {
                id,
                reason,
                kept,
                digits,
                discarded,
            } => {
                tracing::info!(%id, reason = reason.as_str(), kept_ms = kept.as_millis() as u64, %digits, discarded, "recording done");
                self.play(&["goodbye"], PLAY_GOODBYE);
            }
            LegEvent::RtpTimeout => {
                tracing::info!("no RTP from the caller; hanging up");
                self.send(Command::Hangup(self.call)).await;
            }
        }
    }

    async fn ring_until_cancelled(&mut self) -> Outcome {
        let timeout = tokio::time::sleep(self.ctx.ring_timeout);
        tokio::pin!(timeout);
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(Event::Ended { reason, .. }) => return Outcome::Ended(reason),
                    Some(_) => {}
                    None => return Outcome::Lost,
                },
                _ = &mut timeout => {
                    return self.reject(480, "Temporarily Unavailable", None).await;
                }
            }
        }
    }

    async fn in_call(&mut self, mut awaiting_answer: bool) -> Outcome {
        let limit = self
            .ctx
            .max_duration
            .unwrap_or(Duration::from_secs(u64::MAX >> 2));
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        let mut hung_up = false;
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(Event::Confirmed { sdp, .. }) => {
                        if let (true, Some(body), Some(s)) = (awaiting_answer, sdp, self.session.as_mut()) {
                            match accept_answer(s, &body) {
                                Ok(m) => {
                                    tracing::info!(codec = ?m.codec, "answer in ACK accepted");
                                    self.start_media(&m);
                                }
                                Err(e) => {
                                    tracing::info!(error = %e, "unusable answer in ACK; hanging up");
                                    self.send(Command::Hangup(self.call)).await;
                                }
                            }
                            awaiting_answer = false;
                        }
                    }
                    Some(Event::ReInvite { sdp, .. }) => self.on_reinvite(sdp).await,
                    Some(Event::Info { content_type, body, .. }) => {
                        self.on_info(content_type.as_deref().unwrap_or(""), &body);
                    }
                    Some(Event::Ended { reason, .. }) => return Outcome::Ended(reason),
                    Some(Event::ReInviteAnswered { code, sdp, .. }) => {
                        if let (Some(body), Some(s)) = (sdp, self.session.as_mut()) {
                            match accept_answer(s, &body) {
                                Ok(m) => {
                                    tracing::info!(%code, direction = ?m.direction, "re-INVITE answered");
                                    self.start_media(&m);
                                }
                                Err(e) => tracing::info!(%code, error = %e, "unusable answer to our re-INVITE"),
                            }
                        }
                    }
                    Some(Event::Incoming { .. })
                    | Some(Event::ReferAnswered { .. })
                    | Some(Event::TransferProgress { .. }) => {}
                    None => return Outcome::Lost,
                },
                Some(e) = self.leg_events.recv() => self.on_leg_event(e).await,
                _ = &mut deadline, if !hung_up => {
                    tracing::info!("maximum call duration reached");
                    hung_up = true;
                    self.send(Command::Hangup(self.call)).await;
                }
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
            Err((code, why)) => {
                self.send(Command::RejectReinvite {
                    call: self.call,
                    code,
                    reason: "Not Acceptable Here".into(),
                    warning: Some(why),
                })
                .await;
            }
        }
    }
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
    let offer = sdp::parse(body).map_err(|e| (400, format!("bad SDP: {e}")))?;
    let answer = session.answer(&offer).map_err(|e| (488, e.to_string()))?;
    Ok((answer.sdp.to_string(), answer.media))
}
