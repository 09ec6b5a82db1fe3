//! The sans-IO call core: one call's state and every decision it makes, with no socket,
//! task, file or clock inside.
//!
//! # Inputs and outputs
//!
//! The driver (the tokio call task for a live call, the simulator for a simulated one) feeds
//! the core what happens — the SIP dialog's events ([`CallCore::handle_sip`]), its media
//! legs' events (`handle_digit`, `handle_play_done`, `handle_record_done`, ...), the script's
//! requests ([`CallCore::handle_request`], one at a time, when [`CallCore::is_ready`]), the
//! script's end, operator controls and [`CallCore::handle_timeout`] at
//! [`CallCore::poll_timeout`] — always with `now`. After each input it drains
//! [`CallCore::poll_action`]: SIP to send, media commands for a leg, the reply to the
//! script's request, notes (what the call did, for transcripts, events and the live
//! registry) and work whose result comes back as another input (a recording started, a
//! file deleted, a room's answer).
//!
//! # Legs
//!
//! A call owns legs named by [`LegId`]; the caller's is [`LegId::CALLER`]. Actions and
//! media inputs carry the leg they concern, so a dialled second leg fits beside the first.
//!
//! # The caller's INVITE
//!
//! [`Phase`] is the answer state of the caller's INVITE: ringing with our SDP ready, early
//! media, answered (with or without its ACK), or ending. Verbs that need media answer the
//! call unless early media flows; when we made the offer in the 200 OK, such verbs wait for
//! the answer in the ACK.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::note::{HangupCause, Note};
use super::verbs::Active;
use crate::error::{Refusal, SipStatus};
use crate::media::dtmf::{Digit, DtmfEvent, DtmfMethod};
use crate::media::tone::ToneSpec;
use crate::script::{CallReply, ConferenceRequest, RecordRequest, ScriptOutcome};
use crate::sdp::{self, LocalSession, NegotiatedAudio};
use crate::sip::endpoint::{EndReason, Event};

/// Keys kept for the next `collect` at most; older ones are dropped first.
pub const TYPE_AHEAD_MAX: usize = 32;
/// Time to send one DTMF key (100 ms tone, 70 ms gap) plus a frame of slack.
pub const DTMF_KEY: Duration = Duration::from_millis(190);
/// How long a transfer waits for the REFER's answer, and then for its outcome.
pub const TRANSFER_WAIT: Duration = Duration::from_secs(32);

/// One of a call's legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u32);

impl LegId {
    /// The leg of the caller whose INVITE made the call.
    pub const CALLER: LegId = LegId(0);
}

/// SIP the driver sends on a leg's dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipAction {
    /// 180 Ringing, or 183 with this SDP.
    Ring(Option<Vec<u8>>),
    /// 200 OK with this SDP.
    Answer(Vec<u8>),
    /// A final error response.
    Reject {
        /// Status code.
        code: u16,
        /// Text for a Warning header.
        warning: Option<String>,
    },
    /// 200 OK with SDP to a re-INVITE or UPDATE.
    AnswerReinvite(Vec<u8>),
    /// A 488 to a re-INVITE or UPDATE.
    RejectReinvite {
        /// Status code.
        code: u16,
        /// Text for a Warning header.
        warning: Option<String>,
    },
    /// BYE.
    Hangup,
    /// REFER to this target.
    Refer(String),
    /// Place the leg's call.
    Dial(Box<super::dial::Dial>),
    /// CANCEL the leg's call before its answer.
    Cancel,
}

/// What a leg should play.
#[derive(Debug, Clone, PartialEq)]
pub enum PlaySpec {
    /// Prompts in order; `recording:ID` names a recording this call made.
    Prompts(Vec<String>),
    /// A finite tone.
    Tone(Box<ToneSpec>),
    /// Silence.
    Silence(Duration),
    /// The beep before a recording: the `beep` prompt, else a beep tone.
    Beep,
    /// Synthesized speech, played as it is made.
    Speech(Box<crate::speech::tts::SayRequest>),
}

/// Media work for a leg.
#[derive(Debug, Clone)]
pub enum MediaAction {
    /// Start the leg's media with this negotiation.
    Start(NegotiatedAudio),
    /// A new offer/answer changed the media.
    Update(NegotiatedAudio),
    /// The call was answered after early media.
    Answered,
    /// Play; the leg reports [`CallCore::handle_play_done`] (or the driver
    /// [`CallCore::handle_play_failed`] when it cannot).
    Play {
        /// Reported back when done.
        id: u64,
        /// What.
        what: PlaySpec,
        /// A key stops it.
        barge_in: bool,
    },
    /// Stop the playback.
    StopPlay,
    /// Echo on or off.
    Echo(bool),
    /// Send DTMF.
    SendDtmf(String),
    /// A key press that came by SIP INFO, merged with what the media saw.
    InfoDigit(DtmfEvent),
    /// Start recording; the driver answers [`CallCore::handle_record_started`].
    Record(Box<RecordRequest>),
    /// Join a conference room; the driver answers [`CallCore::handle_room_joined`].
    JoinRoom(ConferenceRequest),
    /// Take media ports for a new leg; the driver answers [`CallCore::handle_prepared`].
    Prepare,
    /// Bridge this leg with the other one named.
    Bridge(LegId),
    /// End this leg's bridge.
    Unbridge,
    /// Record the bridged call on this leg (stereo: the caller left, the callee right) for
    /// at most this long; it ends with [`MediaAction::StopRecord`] or the call.
    RecordBridge(Duration),
    /// Stop the leg's recording.
    StopRecord,
    /// Stream the leg's audio to an application; the driver answers
    /// [`CallCore::handle_stream_ended`] when it ends.
    Stream(Box<crate::stream::StreamRequest>),
    /// Stop the leg's stream.
    StopStream,
    /// Set the mode of the leg's ear (put on the leg the first time).
    Ear(crate::speech::EarMode),
    /// The leg is done: its media and ports go.
    Close,
}

/// Work whose result comes back as an input.
#[derive(Debug, Clone)]
pub enum Work {
    /// Delete a recording's files; answer [`CallCore::handle_discarded`].
    Discard(String),
    /// Place a call of its own (its id or why not: [`CallCore::handle_work_reply`]).
    Originate(Box<super::dial::Originate>),
    /// Recognise an utterance; answer [`CallCore::handle_recognized`].
    Recognize {
        /// The caller's speech.
        samples: Vec<i16>,
        /// Its rate.
        rate: crate::rtp::types::ClockRate,
        /// What the answer should be one of.
        choices: Vec<String>,
    },
    /// Act on a room; answer [`CallCore::handle_work_reply`].
    Room {
        /// The room.
        room: String,
        /// What to do.
        request: crate::script::RoomRequest,
    },
}

/// What the core asks of its driver.
#[derive(Debug, Clone)]
pub enum Action {
    /// SIP on a leg's dialog.
    Sip(LegId, SipAction),
    /// Media on a leg.
    Media(LegId, MediaAction),
    /// The answer to the script's request in progress.
    Reply(CallReply),
    /// What the call did.
    Note(Note),
    /// Work to do and report back.
    Work(Work),
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its dialog ended.
    Ended(EndReason),
    /// Refused before a dialog could form (no script, no port, a bad offer).
    Refused(u16),
    /// The SIP side went away.
    Lost,
}

impl Outcome {
    /// The cause's name for events and CDRs, and the final status when one was sent.
    pub fn describe(&self) -> (&'static str, Option<u16>) {
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

/// The ACK of our 200 OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    /// Not yet; `answer_due`: our 200 carried the offer and the ACK brings the answer.
    Waiting { answer_due: bool },
    /// Arrived: in-dialog requests of ours may go out.
    Received,
}

/// The answer state of the caller's INVITE.
#[derive(Debug, Clone)]
enum Phase {
    /// No final response yet: the SDP for our 200 OK, and the media the INVITE's offer
    /// negotiated (None when the INVITE had no offer, so `sdp` is our offer).
    Ringing {
        sdp: String,
        media: Option<NegotiatedAudio>,
    },
    /// 183 with our answer sent and media flowing; the 200 OK carries `sdp` again.
    Early { sdp: String },
    /// 200 OK sent at `at`.
    Answered { at: Instant, ack: Ack },
    /// We hung up or refused: waiting for the dialog to end.
    Ending { answered_at: Option<Instant> },
    /// A call we place (originate): INVITE sent, no answer yet; given up at `deadline`.
    Placing {
        deadline: Option<Instant>,
        rang: bool,
    },
}

/// Settings a call core starts with.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// End answered calls after this long (None: never).
    pub max_duration: Option<Duration>,
    /// What calls the call may place.
    pub outbound: std::sync::Arc<super::outbound::OutboundPolicy>,
}

/// One call's sans-IO core.
pub struct CallCore {
    cfg: CoreConfig,
    phase: Phase,
    session: LocalSession,
    /// The caller's leg has media running (a `Start` went out).
    media: bool,
    pub(super) active: Active,
    /// Keys pressed ahead of the next `collect` (barge-in, or between verbs).
    pub(super) type_ahead: VecDeque<Digit>,
    /// Next playback id.
    next_play: u64,
    /// Next id for a leg the call places.
    next_leg: u32,
    /// Recordings this call made and kept, playable as `recording:ID`.
    pub(super) recordings: Vec<String>,
    /// Recordings this call made, kept or not, for its CDR.
    pub(super) all_recordings: Vec<String>,
    /// Every key the caller pressed, for the CDR.
    digits: String,
    /// The room the caller is in.
    pub(super) room: Option<String>,
    /// The maximum duration passed (so it is acted on once).
    limit_passed: bool,
    /// The script is still running.
    script_running: bool,
    /// A stream taps the caller's leg (until the driver reports its end).
    pub(super) streaming: bool,
    /// The caller's ear is in a mode other than off.
    pub(super) ear_on: bool,
    ended: Option<Outcome>,
    /// Why we hung up, when we did and it was not the script's plain `hangup()`.
    hangup_cause: Option<HangupCause>,
    actions: VecDeque<Action>,
}

impl CallCore {
    /// A core for an incoming INVITE with `offer` (empty: no offer, we offer in the 200).
    /// An offer we cannot take is refused at once: [`CallCore::outcome`] is then set and
    /// the actions hold the refusal.
    pub fn incoming(cfg: CoreConfig, mut session: LocalSession, offer: &[u8]) -> Self {
        let (phase, refusal) = if offer.is_empty() {
            let sdp = session.offer().to_string();
            (Phase::Ringing { sdp, media: None }, None)
        } else {
            match negotiate(&mut session, offer) {
                Ok((sdp, m)) => {
                    tracing::info!(codec = ?m.codec, remote = ?m.remote_rtp, "media negotiated");
                    (
                        Phase::Ringing {
                            sdp,
                            media: Some(m),
                        },
                        None,
                    )
                }
                Err((code, why)) => {
                    tracing::info!(%code, %why, "offer refused");
                    (Phase::Ending { answered_at: None }, Some((code, why)))
                }
            }
        };
        let mut core = CallCore {
            cfg,
            phase,
            session,
            media: false,
            active: Active::Idle,
            type_ahead: VecDeque::new(),
            next_play: 1,
            next_leg: 1,
            recordings: Vec::new(),
            all_recordings: Vec::new(),
            digits: String::new(),
            room: None,
            limit_passed: false,
            script_running: true,
            streaming: false,
            ear_on: false,
            ended: None,
            hangup_cause: None,
            actions: VecDeque::new(),
        };
        if let Some((code, why)) = refusal {
            core.refuse_now(code, Some(why));
        }
        core
    }

    /// A core for a call we place: `dial` goes to the far end with our offer, given up
    /// after `timeout` without an answer. The script starts once [`CallCore::is_answered`].
    pub fn outgoing(
        cfg: CoreConfig,
        mut session: LocalSession,
        mut dial: super::dial::Dial,
        now: Instant,
        timeout: Duration,
    ) -> Self {
        dial.sdp = session.offer().to_string().into_bytes();
        let target = dial.target.clone();
        let mut core = CallCore::incoming(cfg, session, b"");
        core.phase = Phase::Placing {
            deadline: now.checked_add(timeout),
            rang: false,
        };
        core.note(Note::Dialling(target));
        core.sip(SipAction::Dial(Box::new(dial)));
        core
    }

    /// The far end of a call we place answered (and the call is not over).
    pub fn is_answered(&self) -> bool {
        matches!(self.phase, Phase::Answered { .. }) && self.ended.is_none()
    }

    /// Refuses the call before any script runs.
    pub fn refuse_now(&mut self, code: u16, warning: Option<String>) {
        self.phase = Phase::Ending { answered_at: None };
        self.script_running = false;
        self.sip(SipAction::Reject { code, warning });
        self.note(Note::Refused(code));
        self.ended = Some(Outcome::Refused(code));
    }

    // --- outputs ---------------------------------------------------------------------

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`CallCore::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended.is_some() {
            return None;
        }
        let limit = match (&self.phase, self.cfg.max_duration, self.limit_passed) {
            // A limit past the end of time is no limit.
            (Phase::Answered { at, .. }, Some(max), false) => at.checked_add(max),
            (Phase::Placing { deadline, .. }, _, _) => *deadline,
            _ => None,
        };
        match (limit, self.active.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A script request may start: the call goes on and none is in progress (a media verb
    /// that must wait for the answer to our offer waits inside the core).
    pub fn is_ready(&self) -> bool {
        self.ended.is_none() && self.active.is_idle()
    }

    /// The call listens for keys: a key now would be used (collected, recorded, ending an
    /// echo, barge-in, a room's controls).
    pub fn is_listening(&self) -> bool {
        self.active.is_listening()
    }

    /// How the call ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.ended.as_ref()
    }

    /// When the call was answered.
    pub fn answered_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Answered { at, .. } => Some(at),
            Phase::Ending { answered_at } => answered_at,
            _ => None,
        }
    }

    /// Every key the caller pressed.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// Every recording the call made, kept or not.
    pub fn all_recordings(&self) -> &[String] {
        &self.all_recordings
    }

    /// The status of the final response the caller got: a refusal's, 487 for a cancelled
    /// INVITE (RFC 3261 §9.2), or 200 once answered.
    pub fn final_status(&self) -> Option<u16> {
        match &self.ended {
            Some(Outcome::Ended(EndReason::Cancelled)) => Some(487),
            Some(Outcome::Ended(EndReason::Rejected(c)) | Outcome::Refused(c)) => Some(*c),
            _ => self.answered_at().map(|_| 200),
        }
    }

    pub(super) fn push(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    pub(super) fn sip(&mut self, a: SipAction) {
        self.push(Action::Sip(LegId::CALLER, a));
    }

    pub(super) fn media(&mut self, a: MediaAction) {
        self.push(Action::Media(LegId::CALLER, a));
    }

    pub(super) fn note(&mut self, n: Note) {
        self.push(Action::Note(n));
    }

    pub(super) fn reply(&mut self, r: CallReply) {
        self.push(Action::Reply(r));
    }

    pub(super) fn next_play_id(&mut self) -> u64 {
        let id = self.next_play;
        self.next_play += 1;
        id
    }

    /// Legs the call has placed so far.
    pub(super) fn legs_placed(&self) -> u32 {
        self.next_leg - 1
    }

    pub(super) fn outbound(&self) -> &super::outbound::OutboundPolicy {
        &self.cfg.outbound
    }

    pub(super) fn new_leg_id(&mut self) -> LegId {
        let id = LegId(self.next_leg);
        self.next_leg += 1;
        id
    }

    pub(super) fn is_early(&self) -> bool {
        matches!(self.phase, Phase::Early { .. })
    }

    pub(super) fn has_media(&self) -> bool {
        self.media
    }

    pub(super) fn is_ending(&self) -> bool {
        matches!(self.phase, Phase::Ending { .. }) || self.ended.is_some()
    }

    /// The caller's ACK arrived: REFER may go out.
    pub(super) fn is_confirmed(&self) -> bool {
        matches!(
            self.phase,
            Phase::Answered {
                ack: Ack::Received,
                ..
            }
        )
    }

    /// Media verbs must wait: we offered in the 200 OK and the answer is yet to come.
    pub(super) fn awaits_answer(&self) -> bool {
        matches!(
            self.phase,
            Phase::Answered {
                ack: Ack::Waiting { answer_due: true },
                ..
            }
        )
    }

    // --- the caller's INVITE -----------------------------------------------------------

    /// Media verbs need media: answer, unless early media already flows.
    pub(super) fn ensure_media(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Early { .. }) {
            self.answer(now);
        }
    }

    /// Sends the 200 OK (once) and starts the media negotiated in the INVITE (if early
    /// media has not already).
    pub(super) fn answer(&mut self, now: Instant) {
        let answer_due;
        match std::mem::replace(&mut self.phase, Phase::Ending { answered_at: None }) {
            Phase::Ringing { sdp, media } => {
                self.sip(SipAction::Answer(sdp.into_bytes()));
                answer_due = media.is_none();
                if let Some(m) = media {
                    self.start_media(m);
                }
            }
            Phase::Early { sdp } => {
                self.sip(SipAction::Answer(sdp.into_bytes()));
                answer_due = false;
                self.media(MediaAction::Answered);
            }
            other => {
                self.phase = other;
                return;
            }
        }
        self.phase = Phase::Answered {
            at: now,
            ack: Ack::Waiting { answer_due },
        };
        self.note(Note::Answered);
    }

    /// 183 Session Progress with our answer SDP, and media before the 200 OK. Only for an
    /// offer in the INVITE: an offer of ours in a 183 would need reliable provisional
    /// responses (RFC 3262), which are not supported.
    pub(super) fn start_early_media(&mut self) -> Result<(), String> {
        match std::mem::replace(&mut self.phase, Phase::Ending { answered_at: None }) {
            Phase::Ringing {
                sdp,
                media: Some(m),
            } => {
                self.sip(SipAction::Ring(Some(sdp.clone().into_bytes())));
                self.start_media(m);
                self.phase = Phase::Early { sdp };
                self.note(Note::EarlyMedia);
                Ok(())
            }
            ringing @ Phase::Ringing { media: None, .. } => {
                self.phase = ringing;
                Err("early media needs an SDP offer in the INVITE".into())
            }
            other => {
                self.phase = other;
                Ok(())
            }
        }
    }

    /// 180 Ringing, before the answer.
    pub(super) fn ring(&mut self) {
        if matches!(self.phase, Phase::Ringing { .. } | Phase::Early { .. }) {
            self.sip(SipAction::Ring(None));
            self.note(Note::Ringing);
        }
    }

    /// Why we hung up, in words (`no RTP`, `media transport: …`), when it was for a reason
    /// other than the script's plain `hangup()`.
    pub fn hangup_reason(&self) -> Option<String> {
        self.hangup_cause.as_ref().and_then(HangupCause::text)
    }

    /// Ends the call from our side: BYE once answered, else a final response.
    pub(super) fn hangup(&mut self, refuse_with: u16, cause: HangupCause) {
        let answered_at = match self.phase {
            Phase::Ending { .. } => return,
            Phase::Answered { at, .. } => Some(at),
            _ => None,
        };
        if self.ended.is_some() {
            return;
        }
        let placing = matches!(self.phase, Phase::Placing { .. });
        self.phase = Phase::Ending { answered_at };
        if cause != HangupCause::Script {
            self.hangup_cause = Some(cause.clone());
        }
        if answered_at.is_some() {
            self.sip(SipAction::Hangup);
            self.note(Note::HungUp(cause));
        } else if placing {
            self.sip(SipAction::Cancel);
            self.note(Note::HungUp(cause));
        } else {
            self.sip(SipAction::Reject {
                code: refuse_with,
                warning: None,
            });
            match cause {
                HangupCause::Script => self.note(Note::Refused(refuse_with)),
                other => self.note(Note::HungUp(other)),
            }
        }
    }

    /// Puts the caller's media on a worker, or updates it after a new offer/answer.
    fn start_media(&mut self, m: NegotiatedAudio) {
        if self.media {
            self.media(MediaAction::Update(m));
        } else {
            self.media = true;
            self.media(MediaAction::Start(m));
        }
    }

    /// The driver could not set up a leg's media: the caller's call cannot go on; a placed
    /// leg is hung up and its dial fails.
    pub fn handle_media_failed(&mut self, leg: LegId) {
        if leg != LegId::CALLER {
            return self.out_media_failed(leg);
        }
        self.media = false;
        self.hangup(Refusal::Overloaded.code(), HangupCause::NoMedia);
    }

    /// An event of a leg's dialog.
    pub fn handle_sip(&mut self, now: Instant, leg: LegId, ev: Event) {
        if leg != LegId::CALLER {
            return self.on_out_event(now, leg, ev);
        }
        if let Phase::Placing { rang, .. } = &mut self.phase {
            match ev {
                Event::Progress { .. } => {
                    if !*rang {
                        *rang = true;
                        self.note(Note::Ringing);
                    }
                    return;
                }
                Event::Answered { sdp, .. } => return self.placed_answered(now, sdp),
                Event::Failed { code, reason, .. } => {
                    return self.note(Note::CallFailed(code, reason));
                }
                _ => {}
            }
        }
        match ev {
            Event::Ended { reason, .. } => self.end(Outcome::Ended(reason)),
            Event::Confirmed { sdp, .. } => self.on_confirmed(now, sdp),
            Event::ReInvite { sdp, .. } => self.on_offer(sdp),
            // An UPDATE's offer is answered the way a re-INVITE's is (RFC 3311 §5.2).
            Event::Update { sdp, .. } => self.on_offer(Some(sdp)),
            Event::Info {
                content_type, body, ..
            } => {
                let ct = content_type.as_deref().unwrap_or("");
                match crate::media::dtmf::parse_info(ct, &body) {
                    Ok(d) if self.media => self.media(MediaAction::InfoDigit(d.to_event(now))),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(content_type = %ct, error = %e, "INFO without DTMF"),
                }
            }
            Event::ReferAnswered { code, .. } => self.on_refer_answered(now, code),
            Event::TransferProgress {
                status, terminated, ..
            } => self.on_transfer_progress(status, terminated),
            Event::ReInviteAnswered { code, sdp, .. } => {
                if let Some(body) = sdp {
                    match accept_answer(&mut self.session, &body) {
                        Ok(m) => {
                            tracing::info!(%code, direction = ?m.direction, "re-INVITE answered");
                            self.start_media(m);
                        }
                        Err(e) => {
                            tracing::info!(%code, error = %e, "unusable answer to our re-INVITE")
                        }
                    }
                }
            }
            Event::Incoming { .. } => {}
            // Events of calls we place; the caller's leg is one we answered.
            Event::Progress { .. } | Event::Answered { .. } | Event::Failed { .. } => {}
        }
    }

    /// The far end of a call we placed answered.
    fn placed_answered(&mut self, now: Instant, sdp: Option<Vec<u8>>) {
        let negotiated = match sdp {
            Some(body) => accept_answer(&mut self.session, &body),
            None => Err("no SDP answer".into()),
        };
        self.phase = Phase::Answered {
            at: now,
            ack: Ack::Received,
        };
        match negotiated {
            Ok(m) => {
                self.start_media(m);
                self.note(Note::Answered);
            }
            Err(e) => {
                tracing::info!(error = %e, "unusable answer from the called party; hanging up");
                self.hangup(Refusal::OfferNotAcceptable.code(), HangupCause::BadAnswer);
            }
        }
    }

    /// The SIP side of the call is gone without a word (its channel closed).
    pub fn handle_lost(&mut self) {
        self.end(Outcome::Lost);
    }

    fn end(&mut self, outcome: Outcome) {
        if self.ended.is_some() {
            return;
        }
        let answered_at = self.answered_at();
        self.phase = Phase::Ending { answered_at };
        self.abandon_dial();
        self.ended = Some(outcome);
        // Whatever the script waits for will not come: its request fails as the call is gone.
        self.active = Active::Idle;
    }

    fn on_confirmed(&mut self, now: Instant, sdp: Option<Vec<u8>>) {
        let Phase::Answered { ack, .. } = &mut self.phase else {
            return;
        };
        let answer_due = matches!(ack, Ack::Waiting { answer_due: true });
        *ack = Ack::Received;
        self.send_refer();
        if !answer_due {
            return;
        }
        match sdp.map(|body| accept_answer(&mut self.session, &body)) {
            Some(Ok(m)) => {
                tracing::info!(codec = ?m.codec, "answer in ACK accepted");
                self.start_media(m);
                self.resume_deferred(now);
            }
            Some(Err(e)) => {
                tracing::info!(error = %e, "unusable answer in ACK; hanging up");
                self.hangup(Refusal::OfferNotAcceptable.code(), HangupCause::BadAnswer);
            }
            None => {
                tracing::info!("no answer in the ACK; hanging up");
                self.hangup(Refusal::OfferNotAcceptable.code(), HangupCause::BadAnswer);
            }
        }
    }

    /// A re-INVITE or UPDATE: answer its offer, or offer again when it has none.
    fn on_offer(&mut self, offer: Option<Vec<u8>>) {
        let result = match offer {
            Some(body) => negotiate(&mut self.session, &body).map(|(sdp, m)| (sdp, Some(m))),
            // An offerless re-INVITE: we offer again; the answer comes in the ACK.
            None => Ok((self.session.offer().to_string(), None)),
        };
        match result {
            Ok((sdp, m)) => {
                tracing::info!(direction = ?m.as_ref().map(|m| m.direction), "re-INVITE accepted");
                self.sip(SipAction::AnswerReinvite(sdp.into_bytes()));
                if let Some(m) = m {
                    self.start_media(m);
                }
            }
            // In a call, a broken offer is refused like an unacceptable one: 488, and the
            // session goes on as it was.
            Err((_, why)) => self.sip(SipAction::RejectReinvite {
                code: Refusal::OfferNotAcceptable.code(),
                warning: Some(why),
            }),
        }
    }

    // --- media and script events ------------------------------------------------------

    /// A key press on a leg.
    pub fn handle_digit(&mut self, now: Instant, leg: LegId, digit: Digit, method: DtmfMethod) {
        if self.ended.is_some() {
            return;
        }
        if leg != LegId::CALLER {
            return self.relay_digit(leg, digit);
        }
        self.digits.push(digit.as_char());
        self.note(Note::Digit { digit, method });
        self.on_digit(now, digit);
    }

    /// The leg's RTP stopped for longer than allowed.
    pub fn handle_rtp_timeout(&mut self, leg: LegId) {
        if leg != LegId::CALLER {
            tracing::info!(?leg, "no RTP from a dialled leg; hanging it up");
            return self.push(Action::Sip(leg, SipAction::Hangup));
        }
        tracing::info!("no RTP from the caller; hanging up");
        self.hangup(Refusal::Unavailable.code(), HangupCause::NoRtp);
    }

    /// A leg's media transport failed (ICE, DTLS, consent): its call cannot have media.
    pub fn handle_transport_failed(&mut self, leg: LegId, why: String) {
        if leg != LegId::CALLER {
            tracing::info!(?leg, %why, "a dialled leg's media transport failed; hanging it up");
            return self.push(Action::Sip(leg, SipAction::Hangup));
        }
        tracing::info!(%why, "the caller's media transport failed; hanging up");
        self.hangup(
            Refusal::Unavailable.code(),
            HangupCause::MediaTransport(why),
        );
    }

    /// An operator's hangup.
    pub fn handle_operator_hangup(&mut self) {
        tracing::info!("hung up by the operator");
        self.hangup(Refusal::Unavailable.code(), HangupCause::Operator);
    }

    /// An operator's stream of the caller's audio; false (and nothing done) when the call
    /// has no media yet or already streams.
    pub fn handle_operator_stream(&mut self, request: crate::stream::StreamRequest) -> bool {
        if !self.media || self.streaming || self.is_ending() {
            return false;
        }
        self.start_stream(Box::new(request));
        true
    }

    /// An operator's stop of the caller's stream.
    pub fn handle_operator_stream_stop(&mut self) {
        if self.streaming {
            self.media(MediaAction::StopStream);
        }
    }

    /// An operator's DTMF for the caller.
    pub fn handle_operator_dtmf(&mut self, digits: String) {
        if self.media {
            self.media(MediaAction::SendDtmf(digits));
        }
    }

    /// The script ended: a flow that ends without hanging up hangs up; one that never
    /// answered refuses.
    pub fn handle_script_end(&mut self, outcome: &ScriptOutcome) {
        self.script_running = false;
        if self.is_ending() {
            return;
        }
        match outcome {
            ScriptOutcome::Error(e) => {
                tracing::warn!(error = %e, "the script failed; ending the call");
                self.hangup(
                    Refusal::Internal.code(),
                    HangupCause::ScriptError(e.to_string()),
                );
            }
            ScriptOutcome::Stopped(crate::script::StopCause::Limit(l)) => {
                tracing::info!(limit = %l, "the script was stopped; ending the call");
                self.hangup(
                    Refusal::Internal.code(),
                    HangupCause::ScriptLimit(l.to_string()),
                );
            }
            ScriptOutcome::Stopped(crate::script::StopCause::Hangup) => {
                self.hangup(Refusal::Internal.code(), HangupCause::Script);
            }
            ScriptOutcome::Finished => {
                self.hangup(Refusal::Unavailable.code(), HangupCause::ScriptEnded)
            }
        }
    }

    /// Whether the script is still running.
    pub fn script_running(&self) -> bool {
        self.script_running
    }

    /// Timers: the request in progress, the maximum duration.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ended.is_some() {
            return;
        }
        if let Phase::Placing {
            deadline: Some(d), ..
        } = self.phase
        {
            if d <= now {
                tracing::info!("no answer from the called party");
                return self.hangup(Refusal::Unavailable.code(), HangupCause::NoAnswer);
            }
        }
        if let (Phase::Answered { at, .. }, Some(max), false) =
            (&self.phase, self.cfg.max_duration, self.limit_passed)
        {
            if at.checked_add(max).is_some_and(|end| end <= now) {
                tracing::info!("maximum call duration reached");
                self.limit_passed = true;
                self.hangup(Refusal::Unavailable.code(), HangupCause::MaxDuration);
            }
        }
        self.on_timer(now);
    }
}

/// Parses the peer's answer to our offer.
fn accept_answer(session: &mut LocalSession, body: &[u8]) -> Result<NegotiatedAudio, String> {
    let answer = sdp::parse(body).map_err(|e| e.to_string())?;
    session.accept_answer(&answer).map_err(|e| e.to_string())
}

/// Parses and answers an offer: the answer text, or the status code and reason to refuse with.
pub(super) fn negotiate(
    session: &mut LocalSession,
    body: &[u8],
) -> Result<(String, NegotiatedAudio), (u16, String)> {
    let offer = sdp::parse(body).map_err(|e| (e.code(), format!("bad SDP: {e}")))?;
    let answer = session
        .answer(&offer)
        .map_err(|e| (e.code(), e.to_string()))?;
    Ok((answer.sdp.to_string(), answer.media))
}
