//! What a call did, step by step, as the call core reports it: the simulator's transcript
//! lines, the `call_step` events of a live call, and the hooks for the live registry and
//! the event bus. One vocabulary, so a transcript from the simulator and the steps of a
//! live call with the same key presses can be compared line by line.

use std::fmt;
use std::time::Duration;

use crate::media::dtmf::{Digit, DtmfMethod};
use crate::media::record::StopReason;

/// Why the call core hung up (the text after "hung up").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HangupCause {
    /// The script called `hangup()`.
    Script,
    /// The script returned without hanging up.
    ScriptEnded,
    /// The script failed.
    ScriptError(String),
    /// The script ran into a limit.
    ScriptLimit(String),
    /// An operator hung up through the API.
    Operator,
    /// The maximum call duration passed.
    MaxDuration,
    /// No RTP from the caller.
    NoRtp,
    /// Kicked out of a conference room.
    Kicked,
    /// The call was handed over by a transfer.
    Transferred,
    /// The caller's media could not be set up.
    NoMedia,
    /// The answer to our offer was unusable.
    BadAnswer,
    /// A call we placed was not answered in time.
    NoAnswer,
    /// The media's ICE or DTLS failed, or the peer's consent lapsed.
    MediaTransport(String),
}

/// One step of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// 180 Ringing sent.
    Ringing,
    /// 183 with SDP sent; media flows before the answer.
    EarlyMedia,
    /// 200 OK sent.
    Answered,
    /// A final error response sent instead of an answer.
    Refused(u16),
    /// We ended the call.
    HungUp(HangupCause),
    /// Prompts started playing.
    Played(Vec<String>),
    /// A tone of this many milliseconds started.
    Tone(u64),
    /// Silence started.
    Silence(Duration),
    /// A `sleep` started.
    Slept(Duration),
    /// DTMF started going out.
    SentDtmf(String),
    /// A key stopped a prompt.
    Interrupted(Digit),
    /// A `collect` ended.
    Collected(Option<String>),
    /// A prompt or recording was asked for but cannot be played.
    NotPlayed {
        /// The prompt's name.
        name: String,
        /// Why.
        why: String,
    },
    /// The beep before a recording started.
    Beep,
    /// A recording started (its id).
    RecordingStarted(String),
    /// A recording ended.
    Recorded {
        /// Its id.
        id: String,
        /// Audio kept.
        kept: Duration,
        /// Why it ended.
        reason: StopReason,
        /// Too short: not kept.
        discarded: bool,
    },
    /// A recording was deleted on the script's request.
    Discarded(String),
    /// The call joined a conference room.
    Joined {
        /// The room.
        room: String,
        /// As moderator.
        moderator: bool,
        /// Muted.
        muted: bool,
    },
    /// The call left its room (`left`, `kicked`, `ended`, `full`, `locked`).
    Left(String),
    /// An echo test started.
    EchoStarted,
    /// An echo test ended after this long.
    EchoEnded(Duration),
    /// A transfer completed.
    Transferred(String),
    /// A transfer failed with this status.
    TransferFailed(u16),
    /// A call to this target goes out.
    Dialling(String),
    /// A call of its own was placed to this target.
    Originated(String),
    /// A call we placed failed with this status and reason.
    CallFailed(u16, String),
    /// The target answered and is bridged with the caller.
    Bridged(String),
    /// A `dial` ended.
    DialEnded(super::dial::DialOutcome, Option<u16>),
    /// A stream of the call's audio to this URL started.
    Streaming(String),
    /// The stream ended, and why.
    StreamEnded(String),
    /// Synthesized speech started playing.
    Said(String),
    /// The caller's speech stopped a prompt.
    InterruptedBySpeech,
    /// A `listen` ended.
    Heard {
        /// What was recognised.
        text: String,
        /// The choice it matched.
        choice: Option<String>,
        /// The recogniser's confidence in thousandths.
        confidence: u16,
        /// The key that ended it.
        key: Option<char>,
        /// Why it ended (`speech`, `max-speech`, `key`, `no-input`).
        reason: &'static str,
        /// Length of the caller's speech, in milliseconds.
        speech_ms: u64,
    },
    /// The recogniser failed.
    NotRecognized(String),
    /// The answering-machine verdict.
    Amd {
        /// `HUMAN`, `MACHINE`, `NOTSURE` or `HANGUP`.
        status: String,
        /// Why, Asterisk-style (`LONGGREETING-1540-1500`).
        cause: String,
        /// Length of the greeting, in milliseconds.
        greeting_ms: u32,
        /// Words counted.
        words: u32,
    },
    /// The voicemail tone was heard (and has ended).
    BeepHeard {
        /// Its frequency.
        hz: u32,
        /// Its length in milliseconds.
        ms: u32,
    },
    /// No voicemail tone within the wait.
    NoBeep,
    /// A line from the script.
    Log(String),
    /// The script acted on a room.
    Room {
        /// The room.
        room: String,
        /// The request, as debug text.
        request: String,
    },
    /// The caller pressed a key (not a transcript line: keys show in what they do).
    Digit {
        /// The key.
        digit: Digit,
        /// How it was detected.
        method: DtmfMethod,
    },
}

impl Note {
    /// Whether the note is a transcript line (a step of the call flow).
    pub fn is_step(&self) -> bool {
        !matches!(self, Note::Digit { .. } | Note::RecordingStarted(_))
    }
}

impl HangupCause {
    /// The cause in words; none for the script's plain `hangup()`.
    pub fn text(&self) -> Option<String> {
        Some(match self {
            HangupCause::Script => return None,
            HangupCause::ScriptEnded => "script ended".into(),
            HangupCause::ScriptError(e) => format!("script error: {e}"),
            HangupCause::ScriptLimit(l) => l.clone(),
            HangupCause::Operator => "operator".into(),
            HangupCause::MaxDuration => "maximum duration".into(),
            HangupCause::NoRtp => "no RTP".into(),
            HangupCause::Kicked => "kicked".into(),
            HangupCause::Transferred => "transferred".into(),
            HangupCause::NoMedia => "no media".into(),
            HangupCause::BadAnswer => "unusable SDP answer".into(),
            HangupCause::NoAnswer => "no answer".into(),
            HangupCause::MediaTransport(why) => format!("media transport: {why}"),
        })
    }
}

impl fmt::Display for HangupCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            Some(t) => write!(f, " ({t})"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Ringing => write!(f, "ringing"),
            Note::EarlyMedia => write!(f, "early media"),
            Note::Answered => write!(f, "answered"),
            Note::Refused(code) => write!(f, "refused with {code}"),
            Note::HungUp(cause) => write!(f, "hung up{cause}"),
            Note::Played(names) => write!(f, "played {}", names.join(", ")),
            Note::Tone(ms) => write!(f, "tone {ms} ms"),
            Note::Silence(d) => write!(f, "silence {:.1} s", d.as_secs_f64()),
            Note::Slept(d) => write!(f, "slept {:.1} s", d.as_secs_f64()),
            Note::SentDtmf(keys) => write!(f, "sent DTMF {keys}"),
            Note::Interrupted(k) => write!(f, "interrupted by {k}"),
            Note::Collected(Some(s)) => write!(f, "collected {s:?}"),
            Note::Collected(None) => write!(f, "collected nothing"),
            Note::NotPlayed { name, why } => write!(f, "{name} not played: {why}"),
            Note::Beep => write!(f, "beep"),
            Note::RecordingStarted(id) => write!(f, "recording {id}"),
            Note::Recorded {
                kept,
                reason,
                discarded,
                ..
            } => write!(
                f,
                "recorded {:.1} s ({}){}",
                kept.as_secs_f64(),
                reason.as_str(),
                if *discarded { ", discarded" } else { "" }
            ),
            Note::Discarded(id) => write!(f, "discarded recording {id}"),
            Note::Joined {
                room,
                moderator,
                muted,
            } => {
                write!(f, "joined conference {room}")?;
                match (moderator, muted) {
                    (true, true) => write!(f, " (moderator, muted)"),
                    (true, false) => write!(f, " (moderator)"),
                    (false, true) => write!(f, " (muted)"),
                    (false, false) => Ok(()),
                }
            }
            Note::Left(why) => write!(f, "left conference ({why})"),
            Note::EchoStarted => write!(f, "echo test"),
            Note::EchoEnded(d) => write!(f, "echo ended after {:.1} s", d.as_secs_f64()),
            Note::Transferred(uri) => write!(f, "transferred to {uri}"),
            Note::TransferFailed(code) => write!(f, "transfer failed with {code}"),
            Note::Dialling(t) => write!(f, "dialling {t}"),
            Note::Originated(t) => write!(f, "placed a call to {t}"),
            Note::CallFailed(code, reason) => write!(f, "call failed: {code} {reason}"),
            Note::Bridged(t) => write!(f, "bridged with {t}"),
            Note::DialEnded(outcome, Some(code)) => {
                write!(f, "dial ended: {} ({code})", outcome.as_str())
            }
            Note::DialEnded(outcome, None) => write!(f, "dial ended: {}", outcome.as_str()),
            Note::Streaming(url) => write!(f, "streaming to {url}"),
            Note::StreamEnded(why) => write!(f, "stream ended ({why})"),
            Note::Said(text) => write!(f, "said {text:?}"),
            Note::InterruptedBySpeech => write!(f, "interrupted by speech"),
            Note::Heard {
                text,
                choice,
                key,
                reason,
                ..
            } => match (key, choice) {
                (Some(k), _) => write!(f, "heard key {k}"),
                (None, Some(c)) => write!(f, "heard {text:?} ({c}, {reason})"),
                (None, None) if text.is_empty() => write!(f, "heard nothing ({reason})"),
                (None, None) => write!(f, "heard {text:?} ({reason})"),
            },
            Note::NotRecognized(why) => write!(f, "speech not recognised: {why}"),
            Note::Amd { status, cause, .. } => {
                write!(f, "answering machine detection: {status} ({cause})")
            }
            Note::BeepHeard { hz, ms } => write!(f, "beep heard: {hz} Hz, {ms} ms"),
            Note::NoBeep => write!(f, "no beep heard"),
            Note::Log(s) => write!(f, "log: {s}"),
            Note::Room { room, request } => write!(f, "room {room}: {request}"),
            Note::Digit { digit, .. } => write!(f, "key {digit}"),
        }
    }
}
