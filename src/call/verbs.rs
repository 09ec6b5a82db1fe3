//! Carrying out a call's script requests: one request at a time, each answered when its
//! media work is done (a prompt played out, a `collect` complete, a recording finalised).
//!
//! Timers belong here, not to the script: [`Active::deadline`] is the next moment the core
//! must look at the request in progress. Keys go where the request in progress wants them:
//! to a `collect`, to end an `echo`, to type-ahead during a barge-in `play` or between verbs
//! (the next `collect` reads them), and nowhere during other verbs (the leg's recorder sees
//! its own terminators, a room its own controls).

use std::time::{Duration, Instant};

use super::core::{
    Action, CallCore, LegId, MediaAction, PlaySpec, SipAction, Work, DTMF_KEY, TRANSFER_WAIT,
    TYPE_AHEAD_MAX,
};
use super::note::{HangupCause, Note};
use super::TransferTarget;
use crate::conference::{JoinError, LeaveReason};
use crate::error::{Refusal, SipStatus};
use crate::media::dtmf::Digit;
use crate::media::record::StopReason;
use crate::script::{
    CallReply, CallRequest, CollectAction, Collector, PromptKind, RecordInfo, RecordRequest,
};

/// A `collect` prompt playing on the leg.
#[derive(Debug, Clone, Copy)]
pub(super) struct CollectPrompt {
    /// The collector's number for the prompt.
    play: u32,
    /// The leg's playback id.
    leg_id: u64,
}

/// The request being carried out.
pub(super) enum Active {
    /// None: the next request may start.
    Idle,
    /// A media verb waits for the answer to our offer (in the caller's ACK).
    AwaitMedia(Box<CallRequest>),
    /// A playback (prompts, tone, silence) until the leg reports it done.
    Play { id: u64, barge_in: bool },
    /// Only time passes (`sleep`, `send_dtmf`).
    Wait { until: Instant },
    /// A `collect`, and the leg playback of its current prompt.
    Collect {
        collector: Box<Collector>,
        playing: Option<CollectPrompt>,
    },
    /// The beep before a recording.
    RecordBeep {
        id: u64,
        request: Box<RecordRequest>,
    },
    /// The driver is starting a recording.
    RecordStarting,
    /// A recording in progress, until the leg reports it done.
    Record { id: String },
    /// A file removal in progress.
    Discarding,
    /// Work the driver does and answers (a room request, a call to place).
    Work,
    /// A blind transfer: REFER sent; waiting for its answer, then for the final NOTIFY.
    Transfer {
        /// The target, until the REFER is sent (after the caller's ACK: REFER needs a
        /// confirmed dialog).
        target: Option<TransferTarget>,
        /// Sent, for the note when it is done.
        uri: String,
        accepted: bool,
        until: Instant,
    },
    /// Joining a room.
    Joining(crate::script::ConferenceRequest),
    /// In a conference room until the room lets the caller go.
    Conference,
    /// Echo until `#`, the limit or hangup.
    Echo {
        since: Instant,
        until: Option<Instant>,
    },
    /// Dialling, then bridged with whoever answered.
    Dial(Box<super::dial::Dialing>),
    /// Streaming to an application until the stream ends.
    Stream,
    /// A `listen`, `amd` or `wait_for_beep`, answered by the ear (or given up at `until`).
    Hearing {
        hearing: super::speech::Hearing,
        until: Instant,
    },
}

impl Active {
    pub(super) fn is_idle(&self) -> bool {
        matches!(self, Active::Idle)
    }

    /// When the core must next look at this request.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Active::Wait { until, .. } => Some(*until),
            Active::Echo { until, .. } => *until,
            Active::Transfer { until, .. } => Some(*until),
            Active::Collect { collector, .. } => collector.poll_timeout(),
            Active::Dial(d) => d.deadline(),
            Active::Hearing { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// A key now would be used.
    pub(super) fn is_listening(&self) -> bool {
        match self {
            Active::Collect { collector, .. } => collector.is_listening(),
            Active::Play { barge_in, .. } => *barge_in,
            Active::Record { .. } | Active::Echo { .. } | Active::Conference | Active::Stream => {
                true
            }
            Active::Hearing {
                hearing: super::speech::Hearing::Listen { .. },
                ..
            } => true,
            _ => false,
        }
    }
}

impl CallCore {
    /// Starts carrying out a script request (the previous one is done). Requests that
    /// arrive after the call began ending are not answered: the script learns the call is
    /// gone at its next step.
    pub fn handle_request(&mut self, now: Instant, request: CallRequest) {
        if self.is_ending() {
            return;
        }
        tracing::debug!(?request, "script request");
        let needs_media = matches!(
            request,
            CallRequest::Play(_)
                | CallRequest::Tone { .. }
                | CallRequest::Silence(_)
                | CallRequest::SendDtmf(_)
                | CallRequest::Echo { .. }
                | CallRequest::Collect(_)
                | CallRequest::Record(_)
                | CallRequest::Conference(_)
                | CallRequest::Stream { .. }
                | CallRequest::Say { .. }
                | CallRequest::Listen(_)
                | CallRequest::Amd(_)
                | CallRequest::WaitForBeep(_)
        );
        // What the ear kept from a barge-in prompt is for a `listen` right after it only (a
        // log line between them changes nothing).
        if !matches!(request, CallRequest::Listen(_) | CallRequest::Log(_)) {
            self.set_ear(crate::speech::EarMode::Off);
        }
        if needs_media {
            self.ensure_media(now);
            if self.awaits_answer() {
                self.active = Active::AwaitMedia(Box::new(request));
                return;
            }
        }
        self.start(now, request);
    }

    /// A media verb that waited for the answer in the ACK goes on.
    pub(super) fn resume_deferred(&mut self, now: Instant) {
        if let Active::AwaitMedia(request) = std::mem::replace(&mut self.active, Active::Idle) {
            self.start(now, *request);
        }
    }

    pub(super) fn fail(&mut self, why: impl Into<String>) {
        self.active = Active::Idle;
        self.reply(CallReply::Failed(why.into()));
    }

    fn done(&mut self) {
        self.active = Active::Idle;
        self.reply(CallReply::Done);
    }

    fn start(&mut self, now: Instant, request: CallRequest) {
        match request {
            CallRequest::Answer => {
                self.answer(now);
                self.done();
            }
            CallRequest::EarlyMedia => match self.start_early_media() {
                Ok(()) => self.done(),
                Err(e) => self.fail(e),
            },
            CallRequest::Ring => {
                self.ring();
                self.done();
            }
            CallRequest::Hangup { cause } => {
                self.hangup(
                    cause.unwrap_or(Refusal::Unavailable.code()),
                    HangupCause::Script,
                );
                self.done();
            }
            CallRequest::Log(s) => {
                tracing::info!(target: "switchboard::script", "{s}");
                self.note(Note::Log(s));
                self.done();
            }
            CallRequest::Sleep(d) => {
                self.note(Note::Slept(d));
                self.active = Active::Wait { until: now + d };
            }
            CallRequest::Play(p) => {
                self.note(Note::Played(p.prompts.clone()));
                match self.playable(&p.prompts) {
                    Ok(prompts) => {
                        if p.barge_in {
                            self.watch_for_speech();
                        }
                        self.play(PlaySpec::Prompts(prompts), p.barge_in)
                    }
                    Err(e) => self.fail(e),
                }
            }
            CallRequest::Tone { spec } => {
                self.note(Note::Tone(spec.duration_ms().unwrap_or(0)));
                self.play(PlaySpec::Tone(Box::new(spec)), false);
            }
            CallRequest::Silence(d) => {
                self.note(Note::Silence(d));
                self.play(PlaySpec::Silence(d), false);
            }
            CallRequest::SendDtmf(keys) => {
                if !self.has_media() {
                    return self.fail("the call has no media");
                }
                let until = now + DTMF_KEY * keys.len() as u32;
                self.note(Note::SentDtmf(keys.clone()));
                self.media(MediaAction::SendDtmf(keys));
                self.active = Active::Wait { until };
            }
            CallRequest::Echo { max } => {
                if !self.has_media() {
                    return self.fail("the call has no media");
                }
                self.note(Note::EchoStarted);
                self.media(MediaAction::Echo(true));
                self.active = Active::Echo {
                    since: now,
                    until: max.map(|m| now + m),
                };
            }
            CallRequest::Collect(opts) => {
                let collector = Collector::new(opts, now, &mut self.type_ahead);
                self.active = Active::Collect {
                    collector: Box::new(collector),
                    playing: None,
                };
                self.drive_collect(now);
            }
            CallRequest::Record(r) => self.start_record(r),
            CallRequest::DiscardRecording(id) => {
                let Some(i) = self.recordings.iter().position(|r| *r == id) else {
                    return self.fail(format!("no recording {id} was made in this call"));
                };
                self.recordings.remove(i);
                self.note(Note::Discarded(id.clone()));
                self.active = Active::Discarding;
                self.push(Action::Work(Work::Discard(id)));
            }
            CallRequest::Conference(c) => {
                if !self.has_media() {
                    return self.fail("the call has no media");
                }
                self.active = Active::Joining(c.clone());
                self.media(MediaAction::JoinRoom(c));
            }
            CallRequest::Dial(request) => self.start_dial(now, request),
            CallRequest::Originate(o) => {
                self.note(Note::Originated(o.to.clone()));
                self.active = Active::Work;
                self.push(Action::Work(Work::Originate(o)));
            }
            CallRequest::Stream {
                request,
                background,
            } => {
                if !self.has_media() {
                    return self.fail("the call has no media");
                }
                if self.streaming {
                    return self.fail("a stream already runs on this call");
                }
                self.start_stream(request);
                if background {
                    self.done();
                } else {
                    self.active = Active::Stream;
                }
            }
            CallRequest::StreamStop => {
                if self.streaming {
                    self.media(MediaAction::StopStream);
                }
                self.done();
            }
            CallRequest::Say { request, barge_in } => self.start_say(request, barge_in),
            CallRequest::Listen(options) => self.start_listen(now, options),
            CallRequest::Amd(config) => self.start_amd(now, *config),
            CallRequest::WaitForBeep(wait) => self.start_beep_wait(now, wait),
            CallRequest::Room { room, request } => {
                self.note(Note::Room {
                    room: room.clone(),
                    request: format!("{request:?}"),
                });
                self.active = Active::Work;
                self.push(Action::Work(Work::Room { room, request }));
            }
            CallRequest::Transfer(uri) => {
                if !self.is_answered() {
                    // Before the answer there is no dialog to send REFER in.
                    self.ensure_media(now);
                }
                tracing::info!(target = %uri, "transferring");
                let text = uri.as_str().to_string();
                self.active = Active::Transfer {
                    target: Some(uri),
                    uri: text,
                    accepted: false,
                    until: now + TRANSFER_WAIT,
                };
                self.send_refer();
            }
        }
    }

    /// The prompts of `names` that can be played: a `recording:ID` must name a recording
    /// this call made and kept (the others are noted and skipped, as a missing sound should
    /// not end a call). Only when none is left is it an error for the script.
    fn playable(&mut self, names: &[String]) -> Result<Vec<String>, String> {
        let mut out = Vec::with_capacity(names.len());
        let mut first_error = None;
        for name in names {
            match name.strip_prefix("recording:") {
                Some(id) if !self.recordings.iter().any(|r| r == id) => {
                    let why = format!("no recording {id} was made in this call");
                    self.note(Note::NotPlayed {
                        name: format!("recording {id}"),
                        why: why.clone(),
                    });
                    first_error.get_or_insert(why);
                }
                _ => out.push(name.clone()),
            }
        }
        match (out.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            (true, None) => Err("no prompt to play".into()),
            _ => Ok(out),
        }
    }

    /// Plays; the request is answered when the leg reports the playback done.
    pub(super) fn play(&mut self, what: PlaySpec, barge_in: bool) {
        if !self.has_media() {
            return self.fail("the call has no media");
        }
        let id = self.next_play_id();
        self.media(MediaAction::Play { id, what, barge_in });
        self.active = Active::Play { id, barge_in };
    }

    /// Runs the collector's actions until it waits for something.
    fn drive_collect(&mut self, now: Instant) {
        loop {
            let Active::Collect { collector, .. } = &mut self.active else {
                return;
            };
            let Some(action) = collector.poll_action() else {
                return;
            };
            match action {
                CollectAction::Play { kind, play, .. } => {
                    let names = match kind {
                        PromptKind::Prompt => collector.options().prompt.clone(),
                        PromptKind::Invalid => collector.options().invalid_prompt.clone(),
                    };
                    if let Active::Collect { playing, .. } = &mut self.active {
                        *playing = None;
                    }
                    let prompts = if names.is_empty() {
                        names
                    } else {
                        self.note(Note::Played(names.clone()));
                        self.playable(&names).unwrap_or_default()
                    };
                    if prompts.is_empty() || !self.has_media() {
                        // Nothing to play: the prompt is over at once.
                        if let Active::Collect { collector, .. } = &mut self.active {
                            collector.handle_play_done(now, play);
                        }
                        continue;
                    }
                    let leg_id = self.next_play_id();
                    // The collector decides about barge-in and stops the playback.
                    self.media(MediaAction::Play {
                        id: leg_id,
                        what: PlaySpec::Prompts(prompts),
                        barge_in: false,
                    });
                    if let Active::Collect { playing, .. } = &mut self.active {
                        *playing = Some(CollectPrompt { play, leg_id });
                    }
                }
                CollectAction::Stop { play } => {
                    let Active::Collect { playing, .. } = &mut self.active else {
                        return;
                    };
                    if playing.is_some_and(|p| p.play == play) {
                        *playing = None;
                        self.media(MediaAction::StopPlay);
                    }
                }
                CollectAction::Done(result) => {
                    tracing::info!(digits = ?result, "collected");
                    self.note(Note::Collected(result.clone()));
                    self.active = Active::Idle;
                    self.reply(CallReply::Digits(result));
                    return;
                }
            }
        }
    }

    pub(super) fn on_digit(&mut self, now: Instant, digit: Digit) {
        match &mut self.active {
            Active::Collect { collector, playing } => {
                if playing.is_some() && collector.is_listening() {
                    self.note(Note::Interrupted(digit));
                }
                if let Active::Collect { collector, .. } = &mut self.active {
                    collector.handle_digit(now, digit);
                }
                self.drive_collect(now);
            }
            Active::Echo { .. } if digit.as_char() == '#' => self.end_echo(now),
            Active::Play { barge_in: true, .. } => {
                self.note(Note::Interrupted(digit));
                self.keep_type_ahead(digit);
            }
            Active::Idle => self.keep_type_ahead(digit),
            Active::Dial(_) => self.relay_digit(LegId::CALLER, digit),
            Active::Hearing { .. } => {
                self.listen_digit(digit);
            }
            _ => {}
        }
    }

    fn keep_type_ahead(&mut self, digit: Digit) {
        if self.type_ahead.len() == TYPE_AHEAD_MAX {
            self.type_ahead.pop_front();
        }
        self.type_ahead.push_back(digit);
    }

    /// A playback finished (ran out, was stopped, or a key stopped it).
    pub fn handle_play_done(&mut self, now: Instant, _leg: LegId, done: u64) {
        match &mut self.active {
            Active::Play { id, .. } if *id == done => self.done(),
            Active::Collect { collector, playing } => {
                if let Some(CollectPrompt { play, leg_id }) = *playing {
                    if leg_id == done {
                        *playing = None;
                        collector.handle_play_done(now, play);
                        self.drive_collect(now);
                    }
                }
            }
            Active::Dial(_) => {
                self.ringback_done(done);
            }
            Active::RecordBeep { id, .. } if *id == done => {
                if let Active::RecordBeep { request, .. } =
                    std::mem::replace(&mut self.active, Active::Idle)
                {
                    self.begin_recording(request);
                }
            }
            _ => {}
        }
    }

    /// A playback could not start (its prompts would not load). A `play` fails with `why`;
    /// a `collect` prompt counts as played; a recording goes on without its beep.
    pub fn handle_play_failed(&mut self, now: Instant, leg: LegId, id: u64, why: String) {
        match &self.active {
            Active::Play { id: ours, .. } if *ours == id => self.fail(why),
            _ => self.handle_play_done(now, leg, id),
        }
    }

    pub(super) fn on_timer(&mut self, now: Instant) {
        match &mut self.active {
            Active::Wait { until } if *until <= now => self.done(),
            Active::Echo {
                until: Some(until), ..
            } if *until <= now => self.end_echo(now),
            Active::Transfer {
                until, accepted, ..
            } if *until <= now => {
                // Accepted but never told the outcome: the transferee has the call now.
                let accepted = *accepted;
                self.end_transfer(if accepted { None } else { Some(408) });
            }
            Active::Collect { collector, .. }
                if collector.poll_timeout().is_some_and(|t| t <= now) =>
            {
                collector.handle_timeout(now);
                self.drive_collect(now);
            }
            Active::Dial(_) => self.dial_timeout(now),
            Active::Hearing { .. } => self.hearing_timeout(now),
            _ => {}
        }
    }

    /// Sends the transfer's REFER once the dialog is confirmed.
    pub(super) fn send_refer(&mut self) {
        if !self.is_confirmed() {
            return;
        }
        let Active::Transfer { target, .. } = &mut self.active else {
            return;
        };
        if let Some(target) = target.take() {
            self.sip(SipAction::Refer(target.into_string()));
        }
    }

    /// The REFER was answered: a 2xx means the transferee took it on.
    pub(super) fn on_refer_answered(&mut self, now: Instant, code: u16) {
        let Active::Transfer {
            accepted, until, ..
        } = &mut self.active
        else {
            return;
        };
        if (200..300).contains(&code) {
            *accepted = true;
            *until = now + TRANSFER_WAIT;
        } else {
            self.end_transfer(Some(code));
        }
    }

    /// A NOTIFY of the transfer: a final status ends it, one way or the other.
    pub(super) fn on_transfer_progress(&mut self, status: u16, terminated: bool) {
        if !matches!(self.active, Active::Transfer { .. }) {
            return;
        }
        match status {
            200..=299 => self.end_transfer(None),
            300..=699 => self.end_transfer(Some(status)),
            _ if terminated => self.end_transfer(None),
            _ => {}
        }
    }

    /// Ends a transfer: done (we hang up; the call is the transferee's now) or failed with
    /// `code` (the call stays ours and the script can carry on).
    fn end_transfer(&mut self, failed: Option<u16>) {
        let Active::Transfer { uri, .. } = std::mem::replace(&mut self.active, Active::Idle) else {
            return;
        };
        match failed {
            None => {
                tracing::info!("transfer done; hanging up");
                self.note(Note::Transferred(uri));
                self.hangup(Refusal::Unavailable.code(), HangupCause::Transferred);
                self.reply(CallReply::Done);
            }
            Some(code) => {
                tracing::info!(code, "transfer failed");
                self.note(Note::TransferFailed(code));
                self.reply(CallReply::Failed(format!("transfer failed with {code}")));
            }
        }
    }

    /// The driver put the caller in a room (`Ok`), or could not.
    pub fn handle_room_joined(&mut self, result: Result<u64, JoinError>) {
        let Active::Joining(c) = std::mem::replace(&mut self.active, Active::Idle) else {
            return;
        };
        match result {
            Ok(member) => {
                tracing::info!(room = %c.room, member, "joined the conference");
                self.note(Note::Joined {
                    room: c.room.clone(),
                    moderator: c.moderator,
                    muted: c.muted,
                });
                self.room = Some(c.room);
                self.active = Active::Conference;
            }
            Err(JoinError::Full) => self.left_at_once("full"),
            Err(JoinError::Locked) => self.left_at_once("locked"),
            Err(JoinError::Failed(e)) => self.reply(CallReply::Failed(e)),
        }
    }

    fn left_at_once(&mut self, why: &str) {
        self.note(Note::Left(why.into()));
        self.reply(CallReply::Left(why.into()));
    }

    /// The room let the member go: its leave key, the room ended, or an operator's kick,
    /// which ends the call too.
    pub fn handle_room_left(&mut self, reason: LeaveReason) {
        self.room = None;
        let why = match reason {
            LeaveReason::Left => "left",
            LeaveReason::Kicked => "kicked",
            LeaveReason::Ended => "ended",
        };
        tracing::info!(why, "left the conference");
        self.note(Note::Left(why.into()));
        if reason == LeaveReason::Kicked {
            self.hangup(Refusal::Unavailable.code(), HangupCause::Kicked);
        }
        if let Active::Conference = self.active {
            self.active = Active::Idle;
            self.reply(CallReply::Left(why.into()));
        }
    }

    /// The room the caller is in.
    pub fn room(&self) -> Option<&str> {
        self.room.as_deref()
    }

    /// The answer to a room request or a call placed.
    pub fn handle_work_reply(&mut self, reply: CallReply) {
        if let Active::Work = self.active {
            self.active = Active::Idle;
            self.reply(reply);
        }
    }

    /// A recording's files were removed (or could not be).
    pub fn handle_discarded(&mut self, result: Result<(), String>) {
        if let Active::Discarding = self.active {
            match result {
                Ok(()) => self.done(),
                Err(e) => self.fail(e),
            }
        }
    }

    pub(super) fn start_stream(&mut self, request: Box<crate::stream::StreamRequest>) {
        self.streaming = true;
        self.note(Note::Streaming(request.url.clone()));
        self.media(MediaAction::Stream(request));
    }

    /// The caller's stream ended (the application closed it, it failed, or it was
    /// stopped); a blocking `stream` returns why.
    pub fn handle_stream_ended(&mut self, reason: &str) {
        if !self.streaming {
            return;
        }
        self.streaming = false;
        self.note(Note::StreamEnded(reason.to_string()));
        if matches!(self.active, Active::Stream) {
            self.active = Active::Idle;
            self.reply(CallReply::Text(Some(reason.to_string())));
        }
    }

    fn end_echo(&mut self, now: Instant) {
        let Active::Echo { since, .. } = std::mem::replace(&mut self.active, Active::Idle) else {
            return;
        };
        self.media(MediaAction::Echo(false));
        self.note(Note::EchoEnded(now.saturating_duration_since(since)));
        self.reply(CallReply::Done);
    }

    fn start_record(&mut self, request: RecordRequest) {
        if !self.has_media() {
            return self.fail("the call has no media");
        }
        if !request.beep {
            return self.begin_recording(Box::new(request));
        }
        let id = self.next_play_id();
        self.note(Note::Beep);
        self.media(MediaAction::Play {
            id,
            what: PlaySpec::Beep,
            barge_in: false,
        });
        self.active = Active::RecordBeep {
            id,
            request: Box::new(request),
        };
    }

    /// Starts the recording itself (after the beep, if any).
    fn begin_recording(&mut self, request: Box<RecordRequest>) {
        self.active = Active::RecordStarting;
        self.media(MediaAction::Record(request));
    }

    /// The driver started the recording `Ok(id)`, or could not.
    pub fn handle_record_started(&mut self, result: Result<String, String>) {
        if !matches!(self.active, Active::RecordStarting) {
            return;
        }
        match result {
            Ok(id) => {
                tracing::info!(%id, "recording");
                self.note(Note::RecordingStarted(id.clone()));
                self.active = Active::Record { id };
            }
            Err(e) => self.fail(e),
        }
    }

    /// A recording ended; its file is complete.
    pub fn handle_record_done(
        &mut self,
        _leg: LegId,
        id: String,
        reason: StopReason,
        kept: Duration,
        digits: String,
        discarded: bool,
    ) {
        self.all_recordings.push(id.clone());
        if !discarded {
            self.recordings.push(id.clone());
        }
        match &self.active {
            Active::Record { id: ours } if *ours == id => {}
            _ => return,
        }
        self.note(Note::Recorded {
            id: id.clone(),
            kept,
            reason,
            discarded,
        });
        self.active = Active::Idle;
        self.reply(CallReply::Recorded(RecordInfo {
            id,
            duration: kept,
            digits,
            reason: reason.as_str().to_string(),
            discarded,
        }));
    }
}
