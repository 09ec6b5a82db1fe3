//! Answering-machine detection: tells a person who answers ("Hello?", then waits) from a
//! recorded greeting (a long run of words, or a long silence before anything), from the timing
//! of voice and silence in the first seconds of the call.
//!
//! Written from the documented behaviour of Asterisk's `AMD()` application, with its
//! parameter names, defaults and results, so the values people already tune carry over:
//! - a frame is silent when the average absolute sample value is below `silence_threshold`
//!   (16-bit scale, the same at 8 and 16 kHz);
//! - voice is a word once it has lasted `min_word_length`; a word ends after
//!   `between_words_silence` of silence, and voice after that is a new word. Shorter voice
//!   (a click, a breath) is not a word, and the silence around it goes on counting;
//! - `initial_silence` of silence before any word: MACHINE (`INITIALSILENCE-silence-limit`);
//! - more than `greeting` of voice in words: MACHINE (`LONGGREETING-voice-limit`);
//! - more than `maximum_number_of_words` words: MACHINE (`MAXWORDS-words-limit`);
//! - one word longer than `maximum_word_length`: MACHINE (`MAXWORDLENGTH-length-limit`);
//! - `after_greeting_silence` of silence after a word: HUMAN (`HUMAN-silence-limit`);
//! - `total_analysis_time` without a decision: NOTSURE (`TOOLONG-time`);
//! - the stream stopped first ([`Amd::finish`]): HANGUP (`HANGUP-time`).
//!
//! A sans-IO core fed one 20 ms frame per tick, every tick; durations are counted in whole
//! frames, and a silence limit is reached on the first frame whose count is at least the
//! limit, while the greeting, word count and word length limits must be exceeded.

use super::vad::{frames_for, FRAME_MS};

/// Parameters of a detection, with Asterisk's names and defaults (durations in ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmdConfig {
    /// Silence before the greeting after which the answer is a machine.
    pub initial_silence: u32,
    /// Voice in the greeting after which the answer is a machine.
    pub greeting: u32,
    /// Silence after a word after which the answer is a person.
    pub after_greeting_silence: u32,
    /// Time after which the detector gives up (NOTSURE).
    pub total_analysis_time: u32,
    /// Shortest voice that counts as a word.
    pub min_word_length: u32,
    /// Shortest silence that separates two words.
    pub between_words_silence: u32,
    /// Words after which (when exceeded) the answer is a machine.
    pub maximum_number_of_words: u32,
    /// Average absolute sample value (16-bit) under which a frame is silence.
    pub silence_threshold: u32,
    /// Longest single word before the answer is a machine.
    pub maximum_word_length: u32,
}

impl Default for AmdConfig {
    fn default() -> Self {
        Self {
            initial_silence: 2500,
            greeting: 1500,
            after_greeting_silence: 800,
            total_analysis_time: 5000,
            min_word_length: 100,
            between_words_silence: 50,
            maximum_number_of_words: 3,
            silence_threshold: 256,
            maximum_word_length: 5000,
        }
    }
}

/// The verdict of a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AmdStatus {
    /// A person answered.
    Human,
    /// A recorded greeting answered.
    Machine,
    /// No decision within `total_analysis_time`.
    NotSure,
    /// The stream stopped before a decision.
    Hangup,
}

impl AmdStatus {
    /// The name scripts, events and CDRs use: "HUMAN", "MACHINE", "NOTSURE" or "HANGUP".
    pub fn as_str(self) -> &'static str {
        match self {
            AmdStatus::Human => "HUMAN",
            AmdStatus::Machine => "MACHINE",
            AmdStatus::NotSure => "NOTSURE",
            AmdStatus::Hangup => "HANGUP",
        }
    }
}

/// The result of a detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdResult {
    /// The verdict.
    pub status: AmdStatus,
    /// Why, Asterisk-style: "HUMAN-800-800", "LONGGREETING-1520-1500", "MAXWORDS-4-3", ...
    pub cause: String,
    /// Voice heard in words so far, in ms.
    pub greeting_ms: u32,
    /// Words heard so far.
    pub words: u32,
    /// Time analysed, in ms (frames pushed × 20).
    pub elapsed_ms: u32,
}

impl AmdResult {
    /// The status as scripts see it: "HUMAN", "MACHINE", "NOTSURE" or "HANGUP".
    pub fn status_str(&self) -> &'static str {
        self.status.as_str()
    }
}

/// Answering-machine detector: see the module documentation.
#[derive(Debug, Clone)]
pub struct Amd {
    cfg: AmdConfig,
    /// `cfg.silence_threshold`, compared with a frame's sum of |sample| over its length.
    threshold: u64,
    /// Time analysed, ms.
    elapsed: u32,
    /// Silence since the last frame of a word (or the start), ms, short voice included.
    silence: u32,
    /// Voice frames in a row, ms.
    run: u32,
    /// Whether a word is going on (voice, or a gap shorter than `between_words_silence`).
    in_word: bool,
    /// Length of the current word, ms.
    word: u32,
    words: u32,
    voice: u32,
    done: bool,
}

impl Amd {
    /// A detector with `cfg`.
    pub fn new(cfg: AmdConfig) -> Self {
        Self {
            cfg,
            threshold: u64::from(cfg.silence_threshold),
            elapsed: 0,
            silence: 0,
            run: 0,
            in_word: false,
            word: 0,
            words: 0,
            voice: 0,
            done: false,
        }
    }

    /// The parameters in use.
    pub fn config(&self) -> AmdConfig {
        self.cfg
    }

    /// Frames pushed so far.
    pub fn frames_seen(&self) -> u64 {
        u64::from(self.elapsed / FRAME_MS)
    }

    /// Whether a result has been given (by [`Amd::push`] or [`Amd::finish`]).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds the next 20 ms frame; the result comes once, on the frame that decides it.
    /// Frames after that are ignored.
    pub fn push(&mut self, frame: &[i16]) -> Option<AmdResult> {
        if self.done {
            return None;
        }
        self.elapsed += FRAME_MS;
        // In u32 over at most 2¹⁶ samples (2¹⁶ · 2¹⁵ fits), which the compiler keeps in
        // SIMD lanes.
        let sum: u64 = frame
            .chunks(1 << 16)
            .map(|c| u64::from(c.iter().map(|&x| u32::from(x.unsigned_abs())).sum::<u32>()))
            .sum();
        // An empty frame (nothing arrived and nothing concealed it) is silence.
        let silent = frame.is_empty() || sum < self.threshold * frame.len() as u64;
        let cfg = self.cfg;
        let decided = if silent {
            self.run = 0;
            self.silence += FRAME_MS;
            if self.in_word && self.silence >= frames_ms(cfg.between_words_silence) {
                self.in_word = false;
            }
            if self.words == 0 && self.silence >= frames_ms(cfg.initial_silence) {
                Some((
                    AmdStatus::Machine,
                    format!("INITIALSILENCE-{}-{}", self.silence, cfg.initial_silence),
                ))
            } else if self.words > 0 && self.silence >= frames_ms(cfg.after_greeting_silence) {
                Some((
                    AmdStatus::Human,
                    format!("HUMAN-{}-{}", self.silence, cfg.after_greeting_silence),
                ))
            } else {
                None
            }
        } else {
            self.run += FRAME_MS;
            if self.in_word {
                self.silence = 0;
                self.voice += FRAME_MS;
                self.word += FRAME_MS;
            } else if self.run >= frames_ms(cfg.min_word_length) {
                self.in_word = true;
                self.words += 1;
                self.silence = 0;
                self.voice += self.run;
                self.word = self.run;
            } else {
                // Not a word yet, and perhaps never: the silence it interrupts goes on.
                self.silence += FRAME_MS;
            }
            if self.in_word && self.words > cfg.maximum_number_of_words {
                Some((
                    AmdStatus::Machine,
                    format!("MAXWORDS-{}-{}", self.words, cfg.maximum_number_of_words),
                ))
            } else if self.voice > cfg.greeting {
                Some((
                    AmdStatus::Machine,
                    format!("LONGGREETING-{}-{}", self.voice, cfg.greeting),
                ))
            } else if self.in_word && self.word > cfg.maximum_word_length {
                Some((
                    AmdStatus::Machine,
                    format!("MAXWORDLENGTH-{}-{}", self.word, cfg.maximum_word_length),
                ))
            } else {
                None
            }
        };
        let decided = decided.or_else(|| {
            (self.elapsed >= frames_ms(cfg.total_analysis_time))
                .then(|| (AmdStatus::NotSure, format!("TOOLONG-{}", self.elapsed)))
        });
        decided.map(|(status, cause)| self.conclude(status, cause))
    }

    /// The stream stopped: HANGUP if no result was given yet, otherwise `None`.
    pub fn finish(&mut self) -> Option<AmdResult> {
        if self.done {
            return None;
        }
        let cause = format!("HANGUP-{}", self.elapsed);
        Some(self.conclude(AmdStatus::Hangup, cause))
    }

    fn conclude(&mut self, status: AmdStatus, cause: String) -> AmdResult {
        self.done = true;
        AmdResult {
            status,
            cause,
            greeting_ms: self.voice,
            words: self.words,
            elapsed_ms: self.elapsed,
        }
    }
}

/// `ms` rounded up to whole frames, in ms: the count a limit is reached at.
fn frames_ms(ms: u32) -> u32 {
    frames_for(ms).saturating_mul(FRAME_MS)
}
