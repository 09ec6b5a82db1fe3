//! `dial()`: the call places calls of its own and bridges the first to answer with the
//! caller.
//!
//! Each dialled party is a leg of the call ([`LegId`] 1, 2, …): the driver prepares its media
//! ports ([`MediaAction::Prepare`]), the core offers SDP in the INVITE ([`SipAction::Dial`]),
//! and the leg's SIP events come back through [`CallCore::handle_sip`]. Targets are tried one
//! after another (each for `timeout`), or all at once (`parallel`: the first answer wins and
//! the others are cancelled). While the far end rings, an unanswered caller gets 180 and an
//! answered one hears the ringback (a tone or a prompt). On answer the caller is answered if
//! need be and the two legs are bridged; keys are relayed as RFC 4733 events. The verb
//! returns when the bridge ends (the callee hangs up, or `max` passes) or no target answers.
//! When the caller hangs up, every dialled leg is cancelled or hung up with it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::core::{Action, CallCore, LegId, MediaAction, PlaySpec, SipAction};
use super::note::Note;
use super::verbs::Active;
use crate::media::dtmf::Digit;
use crate::media::tone::ToneSpec;
use crate::script::CallReply;
use crate::sdp::{self, LocalSession, NegotiatedAudio};
use crate::sip::endpoint::{EndReason, Event};

/// What to hear while the far end rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ringback {
    /// The ringback tone.
    Tone,
    /// The callee's early media, when it sends some (else the tone).
    EarlyMedia,
    /// A prompt, repeated.
    Prompt(String),
}

/// A `dial` request.
#[derive(Debug, Clone, PartialEq)]
pub struct DialRequest {
    /// `sip:`/`sips:` URIs, in order.
    pub targets: Vec<String>,
    /// Ring every target at once.
    pub parallel: bool,
    /// How long a target may ring (each one, when sequential).
    pub timeout: Duration,
    /// The number or user the callee sees as the caller (None: the caller's own).
    pub caller_id: Option<String>,
    /// Extra SIP headers for the INVITE.
    pub headers: Vec<(String, String)>,
    /// What the caller hears meanwhile.
    pub ringback: Ringback,
    /// Longest bridge (None: until one side hangs up).
    pub max: Option<Duration>,
    /// Record the bridged call: the caller left, the callee right.
    pub record: bool,
    /// Screen an answer for an answering machine before bridging: a person (or a verdict
    /// not reached) is bridged, a machine is hung up on like a failed attempt.
    pub amd: Option<crate::speech::amd::AmdConfig>,
}

impl Default for DialRequest {
    fn default() -> Self {
        DialRequest {
            targets: Vec::new(),
            parallel: false,
            timeout: Duration::from_secs(30),
            caller_id: None,
            headers: Vec::new(),
            ringback: Ringback::Tone,
            max: None,
            record: false,
            amd: None,
        }
    }
}

/// How a `dial` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialOutcome {
    /// Someone answered and was bridged.
    Answered,
    /// Busy (486, 600).
    Busy,
    /// Nobody answered in time (408, 480, or our timeout).
    NoAnswer,
    /// Refused (403, 404, 603 and other final refusals).
    Rejected,
    /// The call could not be placed or failed on the way (5xx, no media, a bad answer).
    Failed,
    /// Cancelled before an answer.
    Cancelled,
    /// An answering machine answered (screened with `amd`) and was hung up on.
    Machine,
}

impl DialOutcome {
    /// The name scripts see.
    pub fn as_str(self) -> &'static str {
        match self {
            DialOutcome::Answered => "answered",
            DialOutcome::Busy => "busy",
            DialOutcome::NoAnswer => "no_answer",
            DialOutcome::Rejected => "rejected",
            DialOutcome::Failed => "failed",
            DialOutcome::Cancelled => "cancelled",
            DialOutcome::Machine => "machine",
        }
    }

    /// The outcome a final failure response means.
    pub fn of_status(code: u16) -> DialOutcome {
        match code {
            486 | 600 => DialOutcome::Busy,
            408 | 480 => DialOutcome::NoAnswer,
            487 => DialOutcome::Cancelled,
            300..=399 | 500..=599 => DialOutcome::Failed,
            _ => DialOutcome::Rejected,
        }
    }
}

/// What `dial` returns to the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialResult {
    /// How it ended.
    pub outcome: DialOutcome,
    /// The SIP status that decided it (200 when answered).
    pub code: Option<u16>,
    /// Its reason phrase, or why no call went out.
    pub reason: String,
    /// How long the bridge lasted.
    pub duration: Duration,
    /// The answering-machine verdict of the last answer screened.
    pub amd: Option<crate::speech::amd::AmdResult>,
}

/// The INVITE for a dialled leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// The Request-URI.
    pub target: String,
    /// The user part the callee sees as the caller (None: the caller's own).
    pub caller_id: Option<String>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Our SDP offer.
    pub sdp: Vec<u8>,
}

/// Where a dialled leg stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// Waiting for the driver's media ports.
    Preparing,
    /// INVITE sent.
    Calling,
    /// A provisional arrived.
    Ringing,
    /// Answered; its media is being screened for an answering machine.
    Screening,
    /// Answered and bridged with the caller since then.
    Bridged(Instant),
}

/// One INVITE a dial may send: a target, or one trunk of a target's failover list.
#[derive(Debug, Clone)]
struct Attempt {
    /// `sip:…`, or `trunk:NAME/NUMBER`.
    target: String,
    /// Which of the request's targets it serves.
    group: usize,
    /// Through a trunk: after a failure the callee itself gave, the list stops.
    trunk: bool,
}

/// The INVITEs `targets` may take: `trunk:a,b/N` is tried through `a`, then `b`.
fn attempts(targets: &[String]) -> Vec<Attempt> {
    let mut out = Vec::new();
    for (group, t) in targets.iter().enumerate() {
        match t.strip_prefix("trunk:").and_then(|r| r.split_once('/')) {
            Some((names, number)) => {
                for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    out.push(Attempt {
                        target: format!("trunk:{name}/{number}"),
                        group,
                        trunk: true,
                    });
                }
            }
            None => out.push(Attempt {
                target: t.clone(),
                group,
                trunk: false,
            }),
        }
    }
    out
}

/// One dialled leg.
struct OutLeg {
    id: LegId,
    /// Its index in [`Dialing::attempts`].
    attempt: usize,
    target: String,
    session: Option<LocalSession>,
    state: OutState,
    /// Its media runs (a `Start` went out).
    media: bool,
}

/// A `dial` in progress.
pub(super) struct Dialing {
    request: DialRequest,
    /// Every INVITE the dial may send, in order.
    attempts: Vec<Attempt>,
    /// The next attempt to try (sequential).
    next: usize,
    legs: Vec<OutLeg>,
    /// When the ringing target(s) give up.
    deadline: Option<Instant>,
    /// The last failure: status and reason.
    last: Option<(u16, String)>,
    /// The ringback playback on the caller's leg.
    ringback: Option<u64>,
    /// The leg whose early media the caller hears (bridged before its answer).
    early: Option<LegId>,
    /// The last screening's verdict.
    amd: Option<crate::speech::amd::AmdResult>,
}

impl Dialing {
    /// When the core must look at the dial next.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.bridged() {
            Some((_, since)) => self.request.max.and_then(|m| since.checked_add(m)),
            None => self.deadline,
        }
    }

    fn bridged(&self) -> Option<(LegId, Instant)> {
        self.legs.iter().find_map(|l| match l.state {
            OutState::Bridged(since) => Some((l.id, since)),
            _ => None,
        })
    }

    fn leg(&mut self, id: LegId) -> Option<&mut OutLeg> {
        self.legs.iter_mut().find(|l| l.id == id)
    }

    /// Keeps the leg that answered; the others (to cancel or hang up) are returned.
    fn keep_only(&mut self, winner: LegId) -> Vec<(LegId, OutState)> {
        let others = self
            .legs
            .iter()
            .filter(|l| l.id != winner)
            .map(|l| (l.id, l.state))
            .collect();
        self.legs.retain(|l| l.id == winner);
        others
    }
}

/// Slack past a screening's own analysis time before the dial gives up on the leg.
const SCREEN_SLACK: Duration = Duration::from_secs(5);

/// The ringback tone: 425 Hz, one second on, four off (ITU-T E.180), for up to `d`.
fn ringback_tone(d: Duration) -> Option<ToneSpec> {
    let cycles = d.as_secs() / 5 + 1;
    let spec = (0..cycles.min(720))
        .map(|_| "425/1000@-13,0/4000")
        .collect::<Vec<_>>()
        .join(",");
    spec.parse().ok()
}

impl CallCore {
    pub(super) fn start_dial(&mut self, now: Instant, request: DialRequest) {
        if request.targets.is_empty() {
            return self.reply_dial(DialOutcome::Failed, None, "no target".into());
        }
        if let Some(t) = request.targets.iter().find(|t| !self.outbound().allows(t)) {
            tracing::warn!(target = %t, "dial refused: no [outbound] allow pattern matches");
            let why = format!("{t} is not allowed by [outbound] allow");
            return self.reply_dial(DialOutcome::Failed, None, why);
        }
        let max = self.outbound().max_legs_per_call;
        let attempts = attempts(&request.targets);
        let wanted = self.legs_placed() + attempts.len() as u32;
        if wanted > max {
            tracing::warn!(max, "dial refused: too many legs for one call");
            let why = format!("a call may place {max} legs at most");
            return self.reply_dial(DialOutcome::Failed, None, why);
        }
        for t in &request.targets {
            self.note(Note::Dialling(t.clone()));
        }
        let parallel = request.parallel;
        let firsts: Vec<usize> = (0..attempts.len())
            .filter(|&i| i == 0 || attempts[i].group != attempts[i - 1].group)
            .collect();
        self.active = Active::Dial(Box::new(Dialing {
            request,
            attempts,
            next: 0,
            legs: Vec::new(),
            deadline: None,
            last: None,
            ringback: None,
            early: None,
            amd: None,
        }));
        if parallel {
            for i in firsts {
                self.dial_attempt(now, i);
            }
        } else {
            self.dial_next(now);
        }
    }

    fn dialing(&mut self) -> Option<&mut Dialing> {
        match &mut self.active {
            Active::Dial(d) => Some(d),
            _ => None,
        }
    }

    /// Starts the next attempt in order (sequential dials).
    fn dial_next(&mut self, now: Instant) -> bool {
        let Some(d) = self.dialing() else {
            return false;
        };
        let i = d.next;
        if i >= d.attempts.len() {
            return false;
        }
        d.next += 1;
        self.dial_attempt(now, i)
    }

    /// Starts attempt `i`: its media ports first.
    fn dial_attempt(&mut self, now: Instant, i: usize) -> bool {
        let id = self.new_leg_id();
        let Some(d) = self.dialing() else {
            return false;
        };
        let Some(target) = d.attempts.get(i).map(|a| a.target.clone()) else {
            return false;
        };
        if !d.request.parallel || d.deadline.is_none() {
            d.deadline = now.checked_add(d.request.timeout);
        }
        d.legs.push(OutLeg {
            id,
            attempt: i,
            target,
            session: None,
            state: OutState::Preparing,
            media: false,
        });
        self.push(Action::Media(id, MediaAction::Prepare));
        true
    }

    /// The driver's answer to [`MediaAction::Prepare`]: the leg's session (its media
    /// address), or why it has none.
    pub fn handle_prepared(
        &mut self,
        now: Instant,
        leg: LegId,
        session: Result<LocalSession, String>,
    ) {
        let Some(d) = self.dialing() else {
            return;
        };
        let request = d.request.clone();
        let Some(out) = d.leg(leg) else {
            return;
        };
        match session {
            Ok(mut s) => {
                let sdp = s.offer().to_string().into_bytes();
                out.session = Some(s);
                out.state = OutState::Calling;
                let target = out.target.clone();
                self.push(Action::Sip(
                    leg,
                    SipAction::Dial(Box::new(Dial {
                        target,
                        caller_id: request.caller_id,
                        headers: request.headers,
                        sdp,
                    })),
                ));
            }
            Err(why) => {
                tracing::warn!(%why, "no media for a dialled leg");
                self.out_failed(now, leg, 503, why);
            }
        }
    }

    /// An event of a dialled leg's dialog.
    pub(super) fn on_out_event(&mut self, now: Instant, leg: LegId, ev: Event) {
        match ev {
            Event::Progress { sdp, .. } => self.out_progress(leg, sdp),
            Event::Answered { sdp, .. } => self.out_answered(now, leg, sdp),
            Event::Failed { code, reason, .. } => self.out_failed(now, leg, code, reason),
            Event::Ended { reason, .. } => self.out_ended(now, leg, reason),
            Event::Info {
                content_type, body, ..
            } => {
                if let Ok(d) =
                    crate::media::dtmf::parse_info(content_type.as_deref().unwrap_or(""), &body)
                {
                    self.relay_digit(leg, d.digit);
                }
            }
            Event::ReInvite { sdp, .. } => self.out_offer(leg, sdp),
            Event::Update { sdp, .. } => self.out_offer(leg, Some(sdp)),
            // The rest (NOTIFYs, answers to requests of ours) needs nothing from the call.
            _ => {}
        }
    }

    fn out_progress(&mut self, leg: LegId, sdp: Option<Vec<u8>>) {
        let answered = self.is_answered() || self.is_early();
        let Some(d) = self.dialing() else {
            return;
        };
        let wants_early = d.request.ringback == Ringback::EarlyMedia && d.early.is_none();
        let Some(out) = d.leg(leg) else {
            return;
        };
        if wants_early {
            if let (Some(s), Some(body)) = (out.session.as_mut(), sdp.as_deref()) {
                let early = sdp::parse(body)
                    .map_err(|e| e.to_string())
                    .and_then(|a| s.accept_answer(&a).map_err(|e| e.to_string()));
                match early {
                    Ok(m) => return self.pass_early_media(leg, m),
                    Err(e) => tracing::info!(error = %e, "early media of a dialled leg not used"),
                }
            }
        }
        if out.state != OutState::Calling {
            return;
        }
        out.state = OutState::Ringing;
        let first = !d
            .legs
            .iter()
            .any(|l| l.id != leg && l.state == OutState::Ringing);
        let ringback = d.request.ringback.clone();
        let timeout = d.request.timeout;
        let playing = d.ringback.is_some();
        if !answered {
            if first {
                self.ring();
            }
            return;
        }
        if playing || !self.has_media() {
            return;
        }
        let what = match ringback {
            Ringback::Prompt(p) => PlaySpec::Prompts(vec![p]),
            Ringback::Tone | Ringback::EarlyMedia => match ringback_tone(timeout) {
                Some(t) => PlaySpec::Tone(Box::new(t)),
                None => return,
            },
        };
        let id = self.next_play_id();
        if let Some(d) = self.dialing() {
            d.ringback = Some(id);
        }
        self.media(MediaAction::Play {
            id,
            what,
            barge_in: false,
        });
    }

    /// A re-INVITE or UPDATE from a dialled party (hold, a new address): answered from the
    /// leg's own session, and its media follows; without an offer we offer again.
    fn out_offer(&mut self, leg: LegId, offer: Option<Vec<u8>>) {
        let refuse = |why: String| SipAction::RejectReinvite {
            code: 488,
            warning: Some(why),
        };
        let Some(out) = self.dialing().and_then(|d| d.leg(leg)) else {
            return self.push(Action::Sip(leg, refuse("the leg is gone".into())));
        };
        let Some(session) = out.session.as_mut() else {
            return self.push(Action::Sip(leg, refuse("no session yet".into())));
        };
        let media = out.media;
        let result = match offer {
            Some(body) => super::core::negotiate(session, &body).map(|(sdp, m)| (sdp, Some(m))),
            None => Ok((session.offer().to_string(), None)),
        };
        match result {
            Ok((sdp, m)) => {
                self.push(Action::Sip(
                    leg,
                    SipAction::AnswerReinvite(sdp.into_bytes()),
                ));
                if let (Some(m), true) = (m, media) {
                    self.push(Action::Media(leg, MediaAction::Update(m)));
                }
            }
            Err((_, why)) => self.push(Action::Sip(leg, refuse(why))),
        }
    }

    /// The caller hears the dialled leg's early media: the leg's media starts and the two are
    /// bridged, the caller getting a 183 of its own if it was not answered yet.
    fn pass_early_media(&mut self, leg: LegId, m: NegotiatedAudio) {
        let Some(d) = self.dialing() else {
            return;
        };
        let Some(out) = d.leg(leg) else {
            return;
        };
        out.media = true;
        out.state = OutState::Ringing;
        d.early = Some(leg);
        let ringback = d.ringback.take();
        if ringback.is_some() {
            self.media(MediaAction::StopPlay);
        }
        self.push(Action::Media(leg, MediaAction::Start(m)));
        if !(self.is_answered() || self.is_early()) && self.start_early_media().is_err() {
            // No offer of the caller's to answer in a 183: it hears ringing instead.
            return self.ring();
        }
        self.media(MediaAction::Bridge(leg));
    }

    /// A leg that was bridged for its early media is no longer.
    fn end_early(&mut self, leg: LegId) {
        let Some(d) = self.dialing() else {
            return;
        };
        if d.early == Some(leg) {
            d.early = None;
            self.media(MediaAction::Unbridge);
        }
    }

    fn out_answered(&mut self, now: Instant, leg: LegId, sdp: Option<Vec<u8>>) {
        let Some(d) = self.dialing() else {
            // Answered after the dial gave up: the call is not wanted.
            return self.push(Action::Sip(leg, SipAction::Hangup));
        };
        if d.bridged().is_some() {
            return self.push(Action::Sip(leg, SipAction::Hangup));
        }
        let early_bridged = d.early == Some(leg);
        let screening = d.request.amd;
        let Some(out) = d.leg(leg) else {
            return self.push(Action::Sip(leg, SipAction::Hangup));
        };
        if out.media {
            // Its early media runs already: the 2xx's SDP, if any, repeats the 183's.
            if let Some(cfg) = screening {
                let others = d.keep_only(leg);
                d.early = None;
                for (other, state) in others {
                    self.drop_out_leg(other, state);
                }
                if early_bridged {
                    self.media(MediaAction::Unbridge);
                }
                return self.screen(now, leg, cfg);
            }
            out.state = OutState::Bridged(now);
            let target = out.target.clone();
            let others = d.keep_only(leg);
            d.early = None;
            for (other, state) in others {
                self.drop_out_leg(other, state);
            }
            if !self.is_answered() {
                self.answer(now);
            }
            if !early_bridged {
                self.media(MediaAction::Bridge(leg));
            }
            self.record_bridge();
            return self.note(Note::Bridged(target));
        }
        if d.early.take().is_some() {
            // Another leg's early media was heard; this one answered first.
            self.media(MediaAction::Unbridge);
        }
        let Some(d) = self.dialing() else {
            return;
        };
        let Some(out) = d.leg(leg) else {
            return;
        };
        let negotiated: Result<NegotiatedAudio, String> = match (out.session.as_mut(), sdp) {
            (Some(s), Some(body)) => sdp::parse(&body)
                .map_err(|e| e.to_string())
                .and_then(|a| s.accept_answer(&a).map_err(|e| e.to_string())),
            _ => Err("no SDP answer".into()),
        };
        let m = match negotiated {
            Ok(m) => m,
            Err(why) => {
                tracing::info!(%why, "unusable answer from a dialled leg; hanging it up");
                self.push(Action::Sip(leg, SipAction::Hangup));
                return self.out_failed(now, leg, 488, why);
            }
        };
        out.media = true;
        if let Some(cfg) = screening {
            let others = d.keep_only(leg);
            for (other, state) in others {
                self.drop_out_leg(other, state);
            }
            self.push(Action::Media(leg, MediaAction::Start(m)));
            return self.screen(now, leg, cfg);
        }
        self.push(Action::Media(leg, MediaAction::Start(m)));
        self.bridge_answered(now, leg);
    }

    /// Bridges the leg that answered with the caller (answering the caller first if need
    /// be); the ringback stops, the others were let go already.
    fn bridge_answered(&mut self, now: Instant, leg: LegId) {
        let Some(d) = self.dialing() else {
            return;
        };
        let Some(out) = d.leg(leg) else {
            return;
        };
        out.state = OutState::Bridged(now);
        let target = out.target.clone();
        let others = d.keep_only(leg);
        let ringback = d.ringback.take();
        for (other, state) in others {
            self.drop_out_leg(other, state);
        }
        if ringback.is_some() {
            self.media(MediaAction::StopPlay);
        }
        if !self.is_answered() {
            self.answer(now);
        }
        self.media(MediaAction::Bridge(leg));
        self.record_bridge();
        self.note(Note::Bridged(target));
    }

    /// The answer is screened: the leg's ear analyses its greeting while the caller still
    /// hears the ringback. The ring timeout gives way to the analysis' own limit.
    fn screen(&mut self, now: Instant, leg: LegId, cfg: crate::speech::amd::AmdConfig) {
        let Some(d) = self.dialing() else {
            return;
        };
        let Some(out) = d.leg(leg) else {
            return;
        };
        out.state = OutState::Screening;
        let wait = Duration::from_millis(u64::from(cfg.total_analysis_time)) + SCREEN_SLACK;
        d.deadline = now.checked_add(wait);
        self.push(Action::Media(
            leg,
            MediaAction::Ear(crate::speech::EarMode::Amd(cfg)),
        ));
    }

    /// The screened leg's verdict: a person (or no verdict) is bridged; a machine is hung
    /// up on and the dial goes on as after a failed attempt.
    pub(super) fn screened(&mut self, now: Instant, leg: LegId, r: crate::speech::amd::AmdResult) {
        let Some(d) = self.dialing() else {
            return;
        };
        if !d
            .legs
            .iter()
            .any(|l| l.id == leg && l.state == OutState::Screening)
        {
            return;
        }
        tracing::info!(?leg, status = r.status_str(), cause = %r.cause, "screened");
        self.note(Note::Amd {
            status: r.status_str().to_string(),
            cause: r.cause.clone(),
            greeting_ms: r.greeting_ms,
            words: r.words,
        });
        let machine = matches!(
            r.status,
            crate::speech::amd::AmdStatus::Machine | crate::speech::amd::AmdStatus::Hangup
        );
        if let Some(d) = self.dialing() {
            d.amd = Some(r);
        }
        if !machine {
            return self.bridge_answered(now, leg);
        }
        self.push(Action::Sip(leg, SipAction::Hangup));
        self.out_failed(now, leg, 0, "answering machine".into());
    }

    /// With `record`, the bridged call is recorded on the caller's leg: what the caller says
    /// left, what the callee says (sent to the caller) right.
    fn record_bridge(&mut self) {
        let Some(d) = self.dialing() else {
            return;
        };
        if !d.request.record {
            return;
        }
        let max = d.request.max.unwrap_or(Duration::from_secs(4 * 3600));
        self.media(MediaAction::RecordBridge(max));
    }

    fn out_failed(&mut self, now: Instant, leg: LegId, code: u16, reason: String) {
        let Some(d) = self.dialing() else {
            return;
        };
        let Some(i) = d.legs.iter().position(|l| l.id == leg) else {
            return;
        };
        if matches!(d.legs[i].state, OutState::Bridged(_)) {
            return;
        }
        self.end_early(leg);
        let Some(d) = self.dialing() else {
            return;
        };
        let out = d.legs.remove(i);
        d.last = Some((code, reason));
        let attempt = d.attempts[out.attempt].clone();
        // A trunk's own trouble tries the next trunk of the list; the callee's answer ends it.
        let stop_list = attempt.trunk && !crate::sip::trunks::moves_on(code);
        let next_in_list = (!stop_list)
            .then(|| out.attempt + 1)
            .filter(|&j| d.attempts.get(j).is_some_and(|a| a.group == attempt.group));
        if !d.request.parallel && stop_list {
            while d
                .attempts
                .get(d.next)
                .is_some_and(|a| a.group == attempt.group)
            {
                d.next += 1;
            }
        }
        let parallel = d.request.parallel;
        let left = d.legs.len();
        self.push(Action::Media(leg, MediaAction::Close));
        let started = match (parallel, next_in_list) {
            (true, Some(j)) => self.dial_attempt(now, j),
            (true, None) => false,
            (false, _) => self.dial_next(now),
        };
        if !started && left == 0 {
            self.finish_dial(None);
        }
    }

    fn out_ended(&mut self, now: Instant, leg: LegId, reason: EndReason) {
        let Some(d) = self.dialing() else {
            return;
        };
        match d.bridged() {
            Some((bridged, since)) if bridged == leg => {
                tracing::info!(?reason, "the dialled party hung up");
                self.media(MediaAction::Unbridge);
                self.stop_bridge_recording();
                self.push(Action::Media(leg, MediaAction::Close));
                let duration = now.saturating_duration_since(since);
                if let Some(d) = self.dialing() {
                    d.legs.clear();
                }
                self.reply_dial_after(DialOutcome::Answered, Some(200), "OK".into(), duration);
            }
            // A leg that ends without a final failure first (our CANCEL raced, a timeout).
            _ => {
                let code = match reason {
                    EndReason::Rejected(c) => c,
                    EndReason::Cancelled => 487,
                    _ => 408,
                };
                self.out_failed(now, leg, code, format!("{reason:?}"));
            }
        }
    }

    /// Ends the bridged call's recording, if it has one.
    fn stop_bridge_recording(&mut self) {
        if self.dialing().is_some_and(|d| d.request.record) {
            self.media(MediaAction::StopRecord);
        }
    }

    /// Lets a leg go that lost the race or the wait: CANCEL before an answer, BYE after.
    fn drop_out_leg(&mut self, leg: LegId, state: OutState) {
        self.end_early(leg);
        match state {
            OutState::Preparing => {}
            OutState::Calling | OutState::Ringing => self.push(Action::Sip(leg, SipAction::Cancel)),
            OutState::Screening => self.push(Action::Sip(leg, SipAction::Hangup)),
            OutState::Bridged(_) => {
                self.media(MediaAction::Unbridge);
                self.stop_bridge_recording();
                self.push(Action::Sip(leg, SipAction::Hangup));
            }
        }
        self.push(Action::Media(leg, MediaAction::Close));
    }

    /// A placed leg's media could not be set up or bridged: it is hung up and the dial fails.
    pub(super) fn out_media_failed(&mut self, leg: LegId) {
        let Some(d) = self.dialing() else {
            return;
        };
        let Some(i) = d.legs.iter().position(|l| l.id == leg) else {
            return;
        };
        let out = d.legs.remove(i);
        if matches!(out.state, OutState::Bridged(_)) {
            self.media(MediaAction::Unbridge);
        }
        self.push(Action::Sip(leg, SipAction::Hangup));
        self.push(Action::Media(leg, MediaAction::Close));
        let left = self.dialing().map_or(0, |d| d.legs.len());
        if left == 0 {
            self.reply_dial(
                DialOutcome::Failed,
                Some(500),
                "no media for the call".into(),
            );
        }
    }

    /// The dial's timers: a target that rang too long, a bridge that lasted too long.
    pub(super) fn dial_timeout(&mut self, now: Instant) {
        let Some(d) = self.dialing() else {
            return;
        };
        if d.deadline().is_none_or(|t| t > now) {
            return;
        }
        if let Some((leg, since)) = d.bridged() {
            tracing::info!("the bridge reached its maximum duration");
            d.legs.clear();
            self.drop_out_leg(leg, OutState::Bridged(since));
            let duration = now.saturating_duration_since(since);
            return self.reply_dial_after(DialOutcome::Answered, Some(200), "OK".into(), duration);
        }
        let pending: Vec<(LegId, OutState)> = d.legs.drain(..).map(|l| (l.id, l.state)).collect();
        d.last = Some((408, "no answer".into()));
        d.deadline = None;
        let more = !d.request.parallel && d.next < d.attempts.len();
        for (leg, state) in pending {
            self.drop_out_leg(leg, state);
        }
        if !(more && self.dial_next(now)) {
            self.finish_dial(Some(DialOutcome::NoAnswer));
        }
    }

    /// Every target failed (or the wait ran out): the script learns how.
    fn finish_dial(&mut self, outcome: Option<DialOutcome>) {
        let Some(d) = self.dialing() else {
            return;
        };
        let (code, reason) = d.last.clone().unwrap_or((0, "no answer".into()));
        // A screened machine is told apart from a status: it answered (code 0 here).
        let machine = code == 0
            && d.amd
                .as_ref()
                .is_some_and(|r| r.status == crate::speech::amd::AmdStatus::Machine);
        let outcome = outcome
            .or(machine.then_some(DialOutcome::Machine))
            .unwrap_or(DialOutcome::of_status(code));
        let code = (code > 0).then_some(code);
        self.reply_dial(outcome, code, reason);
    }

    fn reply_dial(&mut self, outcome: DialOutcome, code: Option<u16>, reason: String) {
        self.reply_dial_after(outcome, code, reason, Duration::ZERO);
    }

    fn reply_dial_after(
        &mut self,
        outcome: DialOutcome,
        code: Option<u16>,
        reason: String,
        duration: Duration,
    ) {
        let mut amd = None;
        if let Some(d) = self.dialing() {
            amd = d.amd.take();
            if d.ringback.take().is_some() {
                self.media(MediaAction::StopPlay);
            }
        }
        self.active = Active::Idle;
        self.note(Note::DialEnded(outcome, code));
        self.reply(CallReply::Dialed(DialResult {
            outcome,
            code,
            reason,
            duration,
            amd,
        }));
    }

    /// The caller is gone: every dialled leg goes with it.
    pub(super) fn abandon_dial(&mut self) {
        let Some(d) = self.dialing() else {
            return;
        };
        let legs: Vec<(LegId, OutState)> = d.legs.drain(..).map(|l| (l.id, l.state)).collect();
        for (leg, state) in legs {
            self.drop_out_leg(leg, state);
        }
    }

    /// A key on one side of a bridge goes to the other as an RFC 4733 event.
    pub(super) fn relay_digit(&mut self, from: LegId, digit: Digit) {
        let Some((bridged, _)) = self.dialing().and_then(|d| d.bridged()) else {
            return;
        };
        let to = if from == LegId::CALLER {
            bridged
        } else if from == bridged {
            LegId::CALLER
        } else {
            return;
        };
        self.push(Action::Media(
            to,
            MediaAction::SendDtmf(digit.as_char().to_string()),
        ));
    }

    /// The ringback ended: a ringback prompt plays again while nobody has answered (the
    /// tone lasts as long as the wait already).
    pub(super) fn ringback_done(&mut self, id: u64) {
        let Some(d) = self.dialing() else {
            return;
        };
        if d.ringback != Some(id) {
            return;
        }
        d.ringback = None;
        let Ringback::Prompt(prompt) = d.request.ringback.clone() else {
            return;
        };
        if d.bridged().is_some() || d.early.is_some() || d.legs.is_empty() {
            return;
        }
        let id = self.next_play_id();
        if let Some(d) = self.dialing() {
            d.ringback = Some(id);
        }
        self.media(MediaAction::Play {
            id,
            what: PlaySpec::Prompts(vec![prompt]),
            barge_in: false,
        });
    }
}

/// A call to place (`POST /api/calls`, `originate()` in scripts).
#[derive(Debug, Clone)]
pub struct Originate {
    /// The target: a `sip:` URI with an IP address.
    pub to: String,
    /// The From display and user (default `switchboard`).
    pub from: Option<String>,
    /// The From user the callee sees (a number), when not `from`.
    pub caller_id: Option<String>,
    /// What runs when the far end answers.
    pub flow: OriginateFlow,
    /// Variables the script sees as `session.vars`.
    pub vars: BTreeMap<String, String>,
    /// How long the far end may ring.
    pub timeout: Duration,
    /// On answer, answering-machine detection runs first; the script sees its result as
    /// `session.amd`, the event bus as an `amd` event.
    pub amd: bool,
}

/// What a placed call does once answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginateFlow {
    /// Runs this script.
    Script(String),
    /// Joins this conference room; with `confirm`, only after the callee presses that key
    /// (so a voicemail box does not join).
    Room {
        /// The room.
        room: String,
        /// The key the callee must press first.
        confirm: Option<char>,
    },
}

/// Why a call could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginateError {
    /// The target matches no `[outbound] allow` pattern.
    #[error("{0} is not allowed by [outbound] allow")]
    NotAllowed(String),
    /// The target is neither a `sip:` URI with an IP address nor `trunk:NAME/NUMBER`.
    #[error("{0} is not a sip: URI with an IP address nor trunk:NAME/NUMBER")]
    BadTarget(String),
    /// No such script.
    #[error("no script {0}")]
    NoSuchScript(String),
    /// A bad room name or caller id.
    #[error("{0}")]
    Invalid(String),
}
