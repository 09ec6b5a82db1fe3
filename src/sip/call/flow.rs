//! Carrying out a call's script requests with its media leg: one request at a time, each
//! answered when its media work is done (a prompt played out, a `collect` complete, a
//! recording finalised).
//!
//! Timers belong here, not to the script: [`Active::deadline`] is the next moment the call
//! task must look at the request in progress. Keys go where the request in progress wants
//! them: to a `collect`, to end an `echo`, to type-ahead during a barge-in `play` or
//! between verbs (the next `collect` reads them), and nowhere during other verbs (the
//! leg's recorder sees its own terminators).

use std::time::{Duration, Instant};

use super::{Call, TransferTarget};
use crate::conference::{JoinError, JoinOptions, LeaveReason, Membership};
use crate::error::{Refusal, SipStatus};
use crate::events::Event as BusEvent;
use crate::media::dtmf::Digit;
use crate::media::frame::{AudioSource, INTERNAL_RATE};
use crate::media::leg::LegCommand;
use crate::media::prompt::{load_file, Playlist};
use crate::media::record::names::{claimed_paths, wav_path};
use crate::media::record::{RecordMode, RecordSession, RecordingMeta};
use crate::media::tone::{ToneGenerator, ToneSpec};
use crate::script::{
    CallReply, CallRequest, CollectAction, Collector, PromptKind, RecordInfo, RecordRequest,
    Replier, ScriptRequest,
};

/// Keys kept for the next `collect` at most; older ones are dropped first.
const TYPE_AHEAD_MAX: usize = 32;
/// Time to send one DTMF key (100 ms tone, 70 ms gap) plus a frame of slack.
const DTMF_KEY: Duration = Duration::from_millis(190);
/// How long a transfer waits for the REFER's answer, and then for its outcome.
const TRANSFER_WAIT: Duration = Duration::from_secs(32);

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
    /// A playback (prompts, tone, silence) until the leg reports it done.
    Play {
        id: u64,
        barge_in: bool,
        reply: Replier,
    },
    /// Only time passes (`sleep`, `send_dtmf`).
    Wait { until: Instant, reply: Replier },
    /// A `collect`, and the leg playback of its current prompt.
    Collect {
        collector: Box<Collector>,
        playing: Option<CollectPrompt>,
        reply: Replier,
    },
    /// The beep before a recording.
    RecordBeep {
        id: u64,
        request: Box<RecordRequest>,
        reply: Replier,
    },
    /// A recording in progress, until the leg reports it done.
    Record { id: String, reply: Replier },
    /// A blind transfer: REFER sent; waiting for its answer, then for the final NOTIFY.
    Transfer {
        /// The target, until the REFER is sent (after the caller's ACK: REFER needs a
        /// confirmed dialog).
        target: Option<TransferTarget>,
        accepted: bool,
        until: Instant,
        reply: Replier,
    },
    /// In a conference room until the room lets the caller go.
    Conference { reply: Replier },
    /// Echo until `#`, the limit or hangup.
    Echo {
        until: Option<Instant>,
        reply: Replier,
    },
}

impl Active {
    pub(super) fn is_idle(&self) -> bool {
        matches!(self, Active::Idle)
    }

    /// When the call task must next look at this request.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Active::Wait { until, .. } => Some(*until),
            Active::Echo { until, .. } => *until,
            Active::Transfer { until, .. } => Some(*until),
            Active::Collect { collector, .. } => collector.poll_timeout(),
            _ => None,
        }
    }
}

/// Resolves when the room lets the call's member go; never while the call is in no room.
pub(super) async fn room_left(room: &mut Option<Membership>) -> LeaveReason {
    match room {
        Some(m) => m.left().await,
        None => std::future::pending().await,
    }
}

/// `ms` of silence as a playable source.
struct Silence {
    left: usize,
}

impl AudioSource for Silence {
    fn fill(&mut self, out: &mut [i16]) -> usize {
        let n = out.len().min(self.left);
        out[..n].fill(0);
        self.left -= n;
        n
    }
}

impl Call {
    /// Starts carrying out a script request (the previous one is done).
    pub(super) async fn start_request(&mut self, r: ScriptRequest) {
        let (request, reply) = r.into_parts();
        if self.ending {
            // The call is going: the script learns it at its next step.
            return;
        }
        tracing::debug!(?request, "script request");
        match request {
            CallRequest::Answer => {
                self.answer().await;
                reply.send(CallReply::Done);
            }
            CallRequest::EarlyMedia => match self.start_early_media().await {
                Ok(()) => reply.send(CallReply::Done),
                Err(e) => reply.send(CallReply::Failed(e)),
            },
            CallRequest::Ring => {
                if !self.answered {
                    self.send(super::Command::Ring(self.call, None)).await;
                }
                reply.send(CallReply::Done);
            }
            CallRequest::Hangup { cause } => {
                self.hangup(cause.unwrap_or(Refusal::Unavailable.code()))
                    .await;
                reply.send(CallReply::Done);
            }
            CallRequest::Log(s) => {
                tracing::info!(target: "switchboard::script", "{s}");
                reply.send(CallReply::Done);
            }
            CallRequest::Sleep(d) => {
                self.active = Active::Wait {
                    until: Instant::now() + d,
                    reply,
                };
            }
            CallRequest::Play(p) => {
                self.ensure_media().await;
                match self.load(&p.prompts).await {
                    Ok(playlist) => self.play(Box::new(playlist), p.barge_in, reply),
                    Err(e) => reply.send(CallReply::Failed(e)),
                }
            }
            CallRequest::Tone { spec } => {
                self.ensure_media().await;
                match ToneGenerator::new(&spec, INTERNAL_RATE) {
                    Ok(g) => self.play(Box::new(g), false, reply),
                    Err(e) => reply.send(CallReply::Failed(e.to_string())),
                }
            }
            CallRequest::Silence(d) => {
                self.ensure_media().await;
                let left =
                    (d.as_millis() as usize).saturating_mul(INTERNAL_RATE.hz() as usize / 1000);
                self.play(Box::new(Silence { left }), false, reply);
            }
            CallRequest::SendDtmf(keys) => {
                self.ensure_media().await;
                let Some(leg) = &self.leg else {
                    return reply.send(CallReply::Failed("the call has no media".into()));
                };
                let until = Instant::now() + DTMF_KEY * keys.len() as u32;
                leg.send(LegCommand::SendDtmf {
                    digits: keys,
                    inband: false,
                });
                self.active = Active::Wait { until, reply };
            }
            CallRequest::Echo { max } => {
                self.ensure_media().await;
                let Some(leg) = &self.leg else {
                    return reply.send(CallReply::Failed("the call has no media".into()));
                };
                leg.send(LegCommand::Echo(true));
                self.active = Active::Echo {
                    until: max.map(|m| Instant::now() + m),
                    reply,
                };
            }
            CallRequest::Collect(opts) => {
                self.ensure_media().await;
                let collector = Collector::new(opts, Instant::now(), &mut self.type_ahead);
                self.active = Active::Collect {
                    collector: Box::new(collector),
                    playing: None,
                    reply,
                };
                self.drive_collect().await;
            }
            CallRequest::Record(r) => {
                self.ensure_media().await;
                self.start_record(r, reply).await;
            }
            CallRequest::DiscardRecording(id) => {
                let Some(i) = self.recordings.iter().position(|r| *r == id) else {
                    return reply.send(CallReply::Failed(format!(
                        "no recording {id} was made in this call"
                    )));
                };
                self.recordings.remove(i);
                let dir = self.ctx.recorder.dir().to_path_buf();
                let removed = tokio::task::spawn_blocking(move || {
                    for ext in ["wav", "json"] {
                        let path = dir.join(format!("{id}.{ext}"));
                        if let Err(e) = std::fs::remove_file(&path) {
                            if e.kind() != std::io::ErrorKind::NotFound {
                                return Err(format!("{}: {e}", path.display()));
                            }
                        }
                    }
                    Ok(())
                })
                .await;
                match removed {
                    Ok(Ok(())) => reply.send(CallReply::Done),
                    Ok(Err(e)) => reply.send(CallReply::Failed(e)),
                    Err(e) => reply.send(CallReply::Failed(e.to_string())),
                }
            }
            CallRequest::Conference(c) => {
                self.ensure_media().await;
                self.join_room(c, reply).await;
            }
            CallRequest::Room { room, request } => {
                use crate::live::{RoomAction, Rooms};
                use crate::script::RoomRequest as R;
                let rooms = &self.ctx.rooms;
                let done = |r: Result<Option<String>, crate::live::ControlError>| match r {
                    Ok(t) => CallReply::Text(t),
                    Err(e) => CallReply::Failed(format!("room {room}: {e}")),
                };
                let answer = match request {
                    R::Members => match rooms.get(&room) {
                        Some(info) => CallReply::Members(info.members),
                        None => CallReply::Failed(format!("room {room}: no such room")),
                    },
                    R::Member(m, action) => {
                        done(rooms.member_action(&room, m, action).map(|()| None))
                    }
                    R::Lock => done(rooms.room_action(&room, RoomAction::Lock)),
                    R::Unlock => done(rooms.room_action(&room, RoomAction::Unlock)),
                    R::End => done(rooms.room_action(&room, RoomAction::End)),
                    R::Play(p) => done(rooms.room_action(&room, RoomAction::Play(p))),
                    R::RecordStart => done(rooms.room_action(&room, RoomAction::RecordStart)),
                    R::RecordStop => done(rooms.room_action(&room, RoomAction::RecordStop)),
                };
                reply.send(answer);
            }
            CallRequest::Transfer(uri) => {
                if !self.answered {
                    // Before the answer there is no dialog to send REFER in.
                    self.ensure_media().await;
                }
                tracing::info!(target = %uri, "transferring");
                self.active = Active::Transfer {
                    target: Some(uri),
                    accepted: false,
                    until: Instant::now() + TRANSFER_WAIT,
                    reply,
                };
                self.send_refer().await;
            }
        }
    }

    /// Plays `source`; the request is answered when the leg reports the playback done.
    fn play(&mut self, source: Box<dyn AudioSource>, barge_in: bool, reply: Replier) {
        let Some(leg) = &self.leg else {
            return reply.send(CallReply::Failed("the call has no media".into()));
        };
        let id = self.next_play;
        self.next_play += 1;
        leg.send(LegCommand::Play {
            id,
            source,
            barge_in,
        });
        self.active = Active::Play {
            id,
            barge_in,
            reply,
        };
    }

    /// Loads prompts off the call task: `recording:ID` names a recording this call made,
    /// anything else a prompt. A prompt that cannot be loaded is logged and skipped, as a
    /// missing sound file should not end a call; only when none can be played is it an
    /// error for the script.
    async fn load(&self, names: &[String]) -> Result<Playlist, String> {
        let prompts = self.ctx.prompts.clone();
        let dir = self.ctx.recorder.dir().to_path_buf();
        let ours = self.recordings.clone();
        let names = names.to_vec();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(names.len());
            let mut first_error = None;
            for name in &names {
                let got = match name.strip_prefix("recording:") {
                    Some(id) if ours.iter().any(|r| r == id) => {
                        load_file(&wav_path(&dir, id), name, INTERNAL_RATE)
                            .map(std::sync::Arc::new)
                            .map_err(|e| e.to_string())
                    }
                    Some(id) => Err(format!("no recording {id} was made in this call")),
                    None => prompts.load(name, INTERNAL_RATE).map_err(|e| e.to_string()),
                };
                match got {
                    Ok(p) => out.push(p),
                    Err(e) => {
                        tracing::warn!(prompt = %name, error = %e, "prompt not played");
                        first_error.get_or_insert(e);
                    }
                }
            }
            match (out.is_empty(), first_error) {
                (true, Some(e)) => Err(e),
                _ => Playlist::new(out).map_err(|e| e.to_string()),
            }
        })
        .await;
        loaded.unwrap_or_else(|e| Err(e.to_string()))
    }

    /// Runs the collector's actions until it waits for something.
    async fn drive_collect(&mut self) {
        loop {
            let Active::Collect {
                collector, playing, ..
            } = &mut self.active
            else {
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
                    *playing = None;
                    let loaded = if names.is_empty() {
                        Err("no prompt".to_string())
                    } else {
                        self.load(&names).await
                    };
                    let leg_id = self.next_play;
                    self.next_play += 1;
                    let sent = match (loaded, &self.leg) {
                        (Ok(playlist), Some(leg)) => {
                            // The collector decides about barge-in and stops the playback.
                            leg.send(LegCommand::Play {
                                id: leg_id,
                                source: Box::new(playlist),
                                barge_in: false,
                            });
                            true
                        }
                        _ => false,
                    };
                    if let Active::Collect {
                        collector, playing, ..
                    } = &mut self.active
                    {
                        if sent {
                            *playing = Some(CollectPrompt { play, leg_id });
                        } else {
                            // Nothing to play: the prompt is over at once.
                            collector.handle_play_done(Instant::now(), play);
                        }
                    }
                }
                CollectAction::Stop { play } => {
                    if playing.is_some_and(|p| p.play == play) {
                        *playing = None;
                        if let Some(leg) = &self.leg {
                            leg.send(LegCommand::StopPlay);
                        }
                    }
                }
                CollectAction::Done(result) => {
                    tracing::info!(digits = ?result, "collected");
                    if let Active::Collect { reply, .. } =
                        std::mem::replace(&mut self.active, Active::Idle)
                    {
                        reply.send(CallReply::Digits(result));
                    }
                    return;
                }
            }
        }
    }

    pub(super) async fn on_digit(&mut self, digit: Digit) {
        match &mut self.active {
            Active::Collect { collector, .. } => {
                collector.handle_digit(Instant::now(), digit);
                self.drive_collect().await;
            }
            Active::Echo { .. } if digit.as_char() == '#' => self.end_echo(),
            Active::Idle | Active::Play { barge_in: true, .. } => {
                if self.type_ahead.len() == TYPE_AHEAD_MAX {
                    self.type_ahead.pop_front();
                }
                self.type_ahead.push_back(digit);
            }
            _ => {}
        }
    }

    pub(super) async fn on_play_done(&mut self, done: u64) {
        match &mut self.active {
            Active::Play { id, .. } if *id == done => {
                if let Active::Play { reply, .. } =
                    std::mem::replace(&mut self.active, Active::Idle)
                {
                    reply.send(CallReply::Done);
                }
            }
            Active::Collect {
                collector, playing, ..
            } => {
                if let Some(CollectPrompt { play, leg_id }) = *playing {
                    if leg_id == done {
                        *playing = None;
                        collector.handle_play_done(Instant::now(), play);
                        self.drive_collect().await;
                    }
                }
            }
            Active::RecordBeep { id, .. } if *id == done => {
                if let Active::RecordBeep { request, reply, .. } =
                    std::mem::replace(&mut self.active, Active::Idle)
                {
                    self.begin_recording(&request, reply);
                }
            }
            _ => {}
        }
    }

    pub(super) async fn on_timer(&mut self) {
        let now = Instant::now();
        match &mut self.active {
            Active::Wait { until, .. } if *until <= now => {
                if let Active::Wait { reply, .. } =
                    std::mem::replace(&mut self.active, Active::Idle)
                {
                    reply.send(CallReply::Done);
                }
            }
            Active::Echo {
                until: Some(until), ..
            } if *until <= now => self.end_echo(),
            Active::Transfer {
                until, accepted, ..
            } if *until <= now => {
                // Accepted but never told the outcome: the transferee has the call now.
                let accepted = *accepted;
                self.end_transfer(if accepted { None } else { Some(408) })
                    .await;
            }
            Active::Collect { collector, .. }
                if collector.poll_timeout().is_some_and(|t| t <= now) =>
            {
                collector.handle_timeout(now);
                self.drive_collect().await;
            }
            _ => {}
        }
    }

    /// Sends the transfer's REFER once the dialog is confirmed.
    pub(super) async fn send_refer(&mut self) {
        if !self.confirmed {
            return;
        }
        let Active::Transfer { target, .. } = &mut self.active else {
            return;
        };
        if let Some(target) = target.take() {
            self.send(super::Command::Refer {
                call: self.call,
                target: target.into_string(),
            })
            .await;
        }
    }

    /// The REFER was answered: a 2xx means the transferee took it on.
    pub(super) async fn on_refer_answered(&mut self, code: u16) {
        let Active::Transfer {
            accepted, until, ..
        } = &mut self.active
        else {
            return;
        };
        if (200..300).contains(&code) {
            *accepted = true;
            *until = Instant::now() + TRANSFER_WAIT;
        } else {
            self.end_transfer(Some(code)).await;
        }
    }

    /// A NOTIFY of the transfer: a final status ends it, one way or the other.
    pub(super) async fn on_transfer_progress(&mut self, status: u16, terminated: bool) {
        if !matches!(self.active, Active::Transfer { .. }) {
            return;
        }
        match status {
            200..=299 => self.end_transfer(None).await,
            300..=699 => self.end_transfer(Some(status)).await,
            _ if terminated => self.end_transfer(None).await,
            _ => {}
        }
    }

    /// Ends a transfer: done (we hang up; the call is the transferee's now) or failed with
    /// `code` (the call stays ours and the script can carry on).
    async fn end_transfer(&mut self, failed: Option<u16>) {
        let Active::Transfer { reply, .. } = std::mem::replace(&mut self.active, Active::Idle)
        else {
            return;
        };
        match failed {
            None => {
                tracing::info!("transfer done; hanging up");
                self.hangup(Refusal::Unavailable.code()).await;
                reply.send(CallReply::Done);
            }
            Some(code) => {
                tracing::info!(code, "transfer failed");
                reply.send(CallReply::Failed(format!("transfer failed with {code}")));
            }
        }
    }

    /// Puts the call's leg in a room; the script's `conference` returns when it leaves.
    async fn join_room(&mut self, c: crate::script::ConferenceRequest, reply: Replier) {
        let rooms = self.ctx.rooms.clone();
        let Some(leg) = self.leg.as_mut() else {
            return reply.send(CallReply::Failed("the call has no media".into()));
        };
        let opts = JoinOptions {
            moderator: c.moderator,
            muted: c.muted,
            call_id: self.parties.call_id.clone(),
            from: self.parties.from.clone(),
        };
        match rooms.join(&c.room, opts, leg).await {
            Ok(m) => {
                tracing::info!(room = %c.room, member = m.member_id(), "joined the conference");
                self.room = Some(m);
                let name = c.room.clone();
                self.live.update(|i| i.room = Some(name));
                self.active = Active::Conference { reply };
            }
            Err(JoinError::Full) => reply.send(CallReply::Left("full".into())),
            Err(JoinError::Locked) => reply.send(CallReply::Left("locked".into())),
            Err(JoinError::Failed(e)) => reply.send(CallReply::Failed(e)),
        }
    }

    /// The room let the member go: its leave key, the room ended, or an operator's kick,
    /// which ends the call too.
    pub(super) async fn on_room_left(&mut self, reason: LeaveReason) {
        self.room = None;
        self.live.update(|i| i.room = None);
        let why = match reason {
            LeaveReason::Left => "left",
            LeaveReason::Kicked => "kicked",
            LeaveReason::Ended => "ended",
        };
        tracing::info!(why, "left the conference");
        if reason == LeaveReason::Kicked {
            self.hangup(Refusal::Unavailable.code()).await;
        }
        if let Active::Conference { reply } = std::mem::replace(&mut self.active, Active::Idle) {
            reply.send(CallReply::Left(why.into()));
        }
    }

    fn end_echo(&mut self) {
        if let Some(leg) = &self.leg {
            leg.send(LegCommand::Echo(false));
        }
        if let Active::Echo { reply, .. } = std::mem::replace(&mut self.active, Active::Idle) {
            reply.send(CallReply::Done);
        }
    }

    async fn start_record(&mut self, request: RecordRequest, reply: Replier) {
        if self.leg.is_none() {
            return reply.send(CallReply::Failed("the call has no media".into()));
        }
        if let Some(name) = &request.file {
            let dir = self.ctx.recorder.dir();
            let taken = claimed_paths(dir, name).iter().any(|p| p.exists());
            if taken {
                return reply.send(CallReply::Failed(format!(
                    "record: a recording named {name} exists"
                )));
            }
        }
        if !request.beep {
            return self.begin_recording(&request, reply);
        }
        let beep: Box<dyn AudioSource> = match self.load(&["beep".to_string()]).await {
            Ok(p) => Box::new(p),
            Err(_) => match ToneGenerator::new(&ToneSpec::beep(), INTERNAL_RATE) {
                Ok(g) => Box::new(g),
                Err(_) => return self.begin_recording(&request, reply),
            },
        };
        let id = self.next_play;
        self.next_play += 1;
        if let Some(leg) = &self.leg {
            leg.send(LegCommand::Play {
                id,
                source: beep,
                barge_in: false,
            });
        }
        self.active = Active::RecordBeep {
            id,
            request: Box::new(request),
            reply,
        };
    }

    /// Starts the recording itself (after the beep, if any).
    fn begin_recording(&mut self, request: &RecordRequest, reply: Replier) {
        let Some(leg) = &self.leg else {
            return reply.send(CallReply::Failed("the call has no media".into()));
        };
        let meta = RecordingMeta {
            call_id: self.parties.call_id.clone(),
            from: self.parties.from.clone(),
            to: self.parties.to.clone(),
            room: None,
            mode: if request.stereo {
                RecordMode::Stereo
            } else {
                RecordMode::Inbound
            },
            rate: INTERNAL_RATE,
        };
        let opts = crate::media::record::StartOptions {
            id: request.file.clone(),
            ..Default::default()
        };
        let handle = match self.ctx.recorder.start_with(meta, opts) {
            Ok(h) => h,
            Err(e) => return reply.send(CallReply::Failed(format!("cannot record: {e}"))),
        };
        let id = handle.id().to_string();
        tracing::info!(%id, "recording");
        self.ctx.events.publish(BusEvent::RecordingStarted {
            id: id.clone(),
            call_id: Some(self.parties.call_id.clone()),
            room: None,
        });
        self.live.update(|c| c.recording = Some(id.clone()));
        leg.send(LegCommand::Record {
            session: Box::new(RecordSession::new(request.policy())),
            handle,
        });
        self.active = Active::Record { id, reply };
    }

    pub(super) async fn on_record_done(
        &mut self,
        id: String,
        reason: &str,
        kept: Duration,
        digits: String,
        discarded: bool,
    ) {
        self.live.update(|c| c.recording = None);
        // The writer finalises the file on its own thread: wait for it, so the script can
        // play the recording back (or discard it) the moment `record` returns.
        let recorder = self.ctx.recorder.clone();
        let _ = tokio::task::spawn_blocking(move || recorder.sync()).await;
        self.ctx.events.publish(BusEvent::RecordingFinished {
            id: id.clone(),
            duration_ms: kept.as_millis() as u64,
            reason: reason.to_string(),
            discarded,
        });
        self.all_recordings.push(id.clone());
        if !discarded {
            self.recordings.push(id.clone());
            let path = wav_path(self.ctx.recorder.dir(), &id);
            let bytes = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
            self.ctx.metrics.recording_finished(bytes);
        }
        match &self.active {
            Active::Record { id: ours, .. } if *ours == id => {}
            _ => return,
        }
        if let Active::Record { reply, .. } = std::mem::replace(&mut self.active, Active::Idle) {
            reply.send(CallReply::Recorded(RecordInfo {
                id,
                duration: kept,
                digits,
                reason: reason.to_string(),
                discarded,
            }));
        }
    }
}
