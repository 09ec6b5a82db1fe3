//! When a recording stops, and how the two directions of a call become the recorded frame.
//!
//! [`RecordSession`] is sans-IO: the media tick hands it one 20 ms frame per direction and
//! gets back [`Step::Continue`] or [`Step::Stop`]; digits and hangups come in as calls.
//! Time is counted in frames, never read from a clock, so a test can step through an hour
//! of audio in milliseconds and the stop lands on an exact frame.
//!
//! Silence uses two thresholds: a frame whose mean power drops below
//! [`RecordPolicy::silence_threshold_dbm0`] starts (or continues) a silent run, and only a
//! frame above the threshold plus [`RecordPolicy::hysteresis_db`] ends it. A level hovering
//! around the threshold therefore cannot keep a recording alive. The recording starts in the
//! silent state, so a caller who never speaks is stopped by the same timeout.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::RecordMode;
use crate::media::dtmf::Digit;
use crate::media::frame::{ClockRate, FRAME, NARROW_RATE};
use crate::media::level::dbm0_to_peak;

/// Digits kept for the sidecar; a caller leaning on the keypad cannot grow it further.
pub const MAX_DIGITS: usize = 64;

/// A set of DTMF digits, stored as a 16-bit mask so it is `Copy` and never allocates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DigitSet(u16);

impl DigitSet {
    /// The empty set.
    pub const EMPTY: DigitSet = DigitSet(0);

    /// The set of the keypad characters in `s`; other characters are ignored.
    pub fn from_chars(s: &str) -> DigitSet {
        s.chars()
            .filter_map(Digit::from_char)
            .fold(DigitSet::EMPTY, DigitSet::with)
    }

    /// This set plus `d`.
    pub const fn with(self, d: Digit) -> DigitSet {
        DigitSet(self.0 | 1 << d.event_code())
    }

    /// Whether `d` is in the set.
    pub const fn contains(self, d: Digit) -> bool {
        self.0 & (1 << d.event_code()) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Options of one recording.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordPolicy {
    /// Which directions are recorded and how they are laid out.
    pub mode: RecordMode,
    /// Sample rate of the frames handed to [`RecordSession::push_frame`].
    pub rate: ClockRate,
    /// Stop after this much audio; `None` records until something else stops it.
    pub max_duration: Option<Duration>,
    /// Stop after this much continuous silence; `None` disables silence detection.
    pub silence_timeout: Option<Duration>,
    /// Mean frame power below this level (dBm0, sine convention) counts as silence.
    pub silence_threshold_dbm0: f32,
    /// A silent run ends only when the level rises this many dB above the threshold.
    pub hysteresis_db: f32,
    /// Recordings shorter than this (after trimming) are discarded.
    pub min_duration: Duration,
    /// Digits that stop the recording.
    pub terminators: DigitSet,
    /// Whether the caller plays a beep before recording starts; carried, not acted on here.
    pub beep: bool,
}

impl Default for RecordPolicy {
    fn default() -> Self {
        RecordPolicy {
            mode: RecordMode::Inbound,
            rate: NARROW_RATE,
            max_duration: None,
            silence_timeout: None,
            silence_threshold_dbm0: -45.0,
            hysteresis_db: 3.0,
            min_duration: Duration::ZERO,
            terminators: DigitSet::EMPTY,
            beep: false,
        }
    }
}

/// What the tick should do after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep recording.
    Continue,
    /// Stop; the frame just pushed is still part of the recording.
    Stop(StopReason),
}

/// Why a recording stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// [`RecordPolicy::max_duration`] was reached.
    MaxDuration,
    /// [`RecordPolicy::silence_timeout`] of continuous silence.
    Silence,
    /// A terminator digit was pressed.
    Terminator(#[serde(with = "digit_char")] Digit),
    /// The call ended.
    Hangup,
    /// Stopped on request (script, API, shutdown).
    Requested,
}

impl StopReason {
    /// A short snake_case name, as in the sidecar.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::MaxDuration => "max_duration",
            StopReason::Silence => "silence",
            StopReason::Terminator(_) => "terminator",
            StopReason::Hangup => "hangup",
            StopReason::Requested => "requested",
        }
    }
}

/// Serde for a [`Digit`] as its keypad character.
mod digit_char {
    use super::Digit;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Digit, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Digit, D::Error> {
        let s = String::deserialize(de)?;
        let mut chars = s.chars();
        match (chars.next().and_then(Digit::from_char), chars.next()) {
            (Some(d), None) => Ok(d),
            _ => Err(D::Error::custom(format!("not a DTMF digit: {s:?}"))),
        }
    }
}

/// How a recording ended and what of it to keep; handed to the writer on finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOutcome {
    /// Why it stopped.
    pub reason: StopReason,
    /// Frames recorded, including any that are trimmed.
    pub frames: u64,
    /// Frames to cut from the end (trailing silence, a terminator's tone).
    pub trim_frames: u64,
    /// Recordings keeping fewer frames than this are discarded.
    pub min_frames: u64,
    /// Digits pressed while recording, terminator included, as keypad characters.
    pub digits: String,
}

impl RecordOutcome {
    /// An outcome that keeps everything written, for callers without a [`RecordSession`].
    pub fn new(reason: StopReason) -> Self {
        RecordOutcome {
            reason,
            frames: 0,
            trim_frames: 0,
            min_frames: 0,
            digits: String::new(),
        }
    }

    /// Also cut `frames` more from the end, e.g. the tone of a terminator digit.
    pub fn trim_tail(mut self, frames: u64) -> Self {
        self.trim_frames = self.trim_frames.saturating_add(frames);
        self
    }

    /// Frames left after trimming.
    pub fn kept_frames(&self) -> u64 {
        self.frames.saturating_sub(self.trim_frames)
    }

    /// Length of everything recorded.
    pub fn duration(&self) -> Duration {
        frames_to_duration(self.frames)
    }

    /// Length after trimming.
    pub fn kept_duration(&self) -> Duration {
        frames_to_duration(self.kept_frames())
    }

    /// Whether the recording is too short to keep (only meaningful when `frames` is known).
    pub fn discard(&self) -> bool {
        self.kept_frames() < self.min_frames
    }
}

fn frames_to_duration(frames: u64) -> Duration {
    Duration::from_millis(frames.saturating_mul(FRAME.as_millis() as u64))
}

/// Whole frames in `d`, rounded down.
fn frames_floor(d: Duration) -> u64 {
    (d.as_millis() / FRAME.as_millis()) as u64
}

/// Whole frames needed to cover `d`, rounded up.
fn frames_ceil(d: Duration) -> u64 {
    d.as_millis().div_ceil(FRAME.as_millis()) as u64
}

/// Mean-square power of a full-scale-convention sine at `dbm0` (a sine's mean square is half
/// its peak squared).
fn mean_square(dbm0: f32) -> f64 {
    let peak = f64::from(dbm0_to_peak(dbm0));
    peak * peak / 2.0
}

/// The state of one recording: counts frames, watches for silence, digits and limits, and
/// lays out the recorded frame.
#[derive(Debug)]
pub struct RecordSession {
    policy: RecordPolicy,
    /// Samples per channel in one frame at the policy's rate.
    frame_len: usize,
    max_frames: Option<u64>,
    silence_frames: Option<u64>,
    min_frames: u64,
    /// Mean-square thresholds: below `off` a voiced run turns silent, above `on` a silent
    /// run turns voiced.
    off_ms: f64,
    on_ms: f64,
    frames: u64,
    voiced: bool,
    silent_run: u64,
    stopped: Option<StopReason>,
    /// Frames to trim decided by the policy itself (trailing silence).
    trim: u64,
    digits: Vec<Digit>,
    /// The last laid-out frame; sized once so pushing never allocates.
    out: Vec<i16>,
    out_len: usize,
}

impl RecordSession {
    /// A session for `policy`; allocates its frame buffer here, never per frame.
    pub fn new(policy: RecordPolicy) -> Self {
        let frame_len = policy.rate.ticks_in(FRAME).max(1) as usize;
        let channels = usize::from(policy.mode.channels());
        let max_frames = policy.max_duration.map(|d| frames_floor(d).max(1));
        let silence_frames = policy.silence_timeout.map(|d| frames_ceil(d).max(1));
        let min_frames = frames_ceil(policy.min_duration);
        let off_ms = mean_square(policy.silence_threshold_dbm0);
        let on_ms = mean_square(policy.silence_threshold_dbm0 + policy.hysteresis_db.max(0.0));
        RecordSession {
            frame_len,
            max_frames,
            silence_frames,
            min_frames,
            off_ms,
            on_ms,
            frames: 0,
            voiced: false,
            silent_run: 0,
            stopped: None,
            trim: 0,
            digits: Vec::with_capacity(MAX_DIGITS),
            out: vec![0; frame_len * channels],
            out_len: 0,
            policy,
        }
    }

    /// The policy this session follows.
    pub fn policy(&self) -> &RecordPolicy {
        &self.policy
    }

    /// Samples per channel in a 20 ms frame at the policy's rate.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Takes one 20 ms frame of each direction and says whether to go on.
    ///
    /// A direction the mode does not use may be empty; a shorter direction is padded with
    /// silence and anything beyond one frame is ignored. After a stop, frames are ignored
    /// and the same stop is returned again.
    pub fn push_frame(&mut self, inbound: &[i16], outbound: &[i16]) -> Step {
        if let Some(reason) = self.stopped {
            self.out_len = 0;
            return Step::Stop(reason);
        }
        let inbound = &inbound[..inbound.len().min(self.frame_len)];
        let outbound = &outbound[..outbound.len().min(self.frame_len)];
        let (n, power) = lay_out(self.policy.mode, inbound, outbound, &mut self.out);
        self.out_len = n;
        self.frames += 1;
        self.track_silence(power);

        if self.max_frames.is_some_and(|max| self.frames >= max) {
            return self.stop(StopReason::MaxDuration);
        }
        if self
            .silence_frames
            .is_some_and(|limit| self.silent_run >= limit)
        {
            self.trim = self.silent_run;
            return self.stop(StopReason::Silence);
        }
        Step::Continue
    }

    /// Dividing by the full frame length, not the samples given, makes a short frame count
    /// as padded with silence.
    fn track_silence(&mut self, sum_sq: f64) {
        let ms = sum_sq / self.frame_len as f64;
        if self.voiced {
            if ms < self.off_ms {
                self.voiced = false;
                self.silent_run = 1;
            }
        } else if ms >= self.on_ms {
            self.voiced = true;
            self.silent_run = 0;
        } else {
            self.silent_run += 1;
        }
    }

    fn stop(&mut self, reason: StopReason) -> Step {
        self.stopped = Some(reason);
        Step::Stop(reason)
    }

    /// The recorded frame from the last [`push_frame`](Self::push_frame): interleaved
    /// left/right in stereo mode; empty after a stop.
    pub fn frame(&self) -> &[i16] {
        &self.out[..self.out_len]
    }

    /// Notes a digit; returns the stop reason if it is a terminator.
    pub fn on_digit(&mut self, digit: Digit) -> Option<StopReason> {
        if self.stopped.is_some() {
            return None;
        }
        if self.digits.len() < MAX_DIGITS {
            self.digits.push(digit);
        }
        if self.policy.terminators.contains(digit) {
            let reason = StopReason::Terminator(digit);
            self.stopped = Some(reason);
            Some(reason)
        } else {
            None
        }
    }

    /// The call ended; returns the reason the recording stopped (an earlier stop wins).
    pub fn hangup(&mut self) -> StopReason {
        *self.stopped.get_or_insert(StopReason::Hangup)
    }

    /// Stops on request; returns the reason the recording stopped (an earlier stop wins).
    pub fn request_stop(&mut self) -> StopReason {
        *self.stopped.get_or_insert(StopReason::Requested)
    }

    /// Why the recording stopped, if it has.
    pub fn stopped(&self) -> Option<StopReason> {
        self.stopped
    }

    /// Audio recorded so far, including trailing silence not yet trimmed.
    pub fn elapsed(&self) -> Duration {
        frames_to_duration(self.frames)
    }

    /// Frames recorded so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Digits pressed so far.
    pub fn digits(&self) -> &[Digit] {
        &self.digits
    }

    /// The outcome to hand to the writer; `None` until the recording has stopped.
    pub fn outcome(&self) -> Option<RecordOutcome> {
        let reason = self.stopped?;
        Some(RecordOutcome {
            reason,
            frames: self.frames,
            trim_frames: self.trim,
            min_frames: self.min_frames,
            digits: self.digits.iter().map(|d| d.as_char()).collect(),
        })
    }
}

/// Writes the recorded layout of one frame into `out` and returns (samples written, the
/// sum of squares the silence detector looks at).
///
/// The sum is per channel: for stereo it is the louder side, so either party speaking keeps
/// the recording alive. Frames are cut to what fits in `out`.
pub fn lay_out(
    mode: RecordMode,
    inbound: &[i16],
    outbound: &[i16],
    out: &mut [i16],
) -> (usize, f64) {
    let sq = |s: i16| {
        let s = i64::from(s);
        (s * s) as u64
    };
    match mode {
        RecordMode::Inbound | RecordMode::Outbound => {
            let src = if mode == RecordMode::Inbound {
                inbound
            } else {
                outbound
            };
            let n = src.len().min(out.len());
            let mut sum = 0u64;
            for (o, &s) in out[..n].iter_mut().zip(src) {
                *o = s;
                sum += sq(s);
            }
            (n, sum as f64)
        }
        RecordMode::MixedMono => {
            let n = inbound.len().max(outbound.len()).min(out.len());
            let mut sum = 0u64;
            let both = inbound.len().min(outbound.len()).min(n);
            // The common case, both directions present, as a plain zip the compiler
            // vectorises; the padded tail of a short direction follows.
            for ((o, &a), &b) in out[..both].iter_mut().zip(inbound).zip(outbound) {
                let m = i16::saturating_add(a, b);
                *o = m;
                sum += sq(m);
            }
            let longer = if inbound.len() > outbound.len() {
                inbound
            } else {
                outbound
            };
            for (o, &m) in out[both..n].iter_mut().zip(&longer[both..]) {
                *o = m;
                sum += sq(m);
            }
            (n, sum as f64)
        }
        RecordMode::Stereo => {
            let n = inbound.len().max(outbound.len()).min(out.len() / 2);
            let (mut left, mut right) = (0u64, 0u64);
            for (i, pair) in out[..2 * n].chunks_exact_mut(2).enumerate() {
                let l = inbound.get(i).copied().unwrap_or(0);
                let r = outbound.get(i).copied().unwrap_or(0);
                pair[0] = l;
                pair[1] = r;
                left += sq(l);
                right += sq(r);
            }
            (2 * n, left.max(right) as f64)
        }
    }
}
