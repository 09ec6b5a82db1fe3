//! What a script asks when it listens to the caller, and what it gets back: the options of
//! `listen()`, `amd()` and `wait_for_beep()`, and their results. Shared by the script API,
//! the call core and the ear that does the listening.

use std::time::Duration;

use super::amd::{AmdConfig, AmdResult};
use super::asr::Recognition;
use super::beep::Beep;

/// Longest `listen` timeout or utterance.
pub const MAX_LISTEN: Duration = Duration::from_secs(60);
/// Longest `wait_for_beep` wait.
pub const MAX_BEEP_WAIT: Duration = Duration::from_secs(120);
/// Choices one `listen` may offer.
pub const MAX_CHOICES: usize = 100;

/// The options of `listen()`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenOptions {
    /// Words or phrases the answer should be one of (empty: free speech).
    pub choices: Vec<String>,
    /// No speech (nor key) this long after listening starts: `no-input`.
    pub timeout: Duration,
    /// Speech ends after this much silence.
    pub end_silence: Duration,
    /// Speech is cut after this long.
    pub max: Duration,
    /// A key press ends listening and is returned.
    pub keys: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            choices: Vec::new(),
            timeout: Duration::from_secs(5),
            end_silence: Duration::from_millis(800),
            max: Duration::from_secs(15),
            keys: true,
        }
    }
}

impl ListenOptions {
    /// Checks the limits; the message names the option.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.is_zero() || self.timeout > MAX_LISTEN {
            return Err(format!(
                "listen: timeout_ms must be 1..={}",
                MAX_LISTEN.as_millis()
            ));
        }
        if self.max < Duration::from_millis(100) || self.max > MAX_LISTEN {
            return Err(format!(
                "listen: max_ms must be 100..={}",
                MAX_LISTEN.as_millis()
            ));
        }
        if self.end_silence < Duration::from_millis(100)
            || self.end_silence > Duration::from_secs(10)
        {
            return Err("listen: end_silence_ms must be 100..=10000".into());
        }
        if self.choices.len() > MAX_CHOICES {
            return Err(format!("listen: at most {MAX_CHOICES} choices"));
        }
        if self.choices.iter().any(|c| c.trim().is_empty()) {
            return Err("listen: a choice is empty".into());
        }
        Ok(())
    }
}

/// Why listening ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenEnd {
    /// The caller spoke and fell silent.
    Speech,
    /// The caller spoke past `max`: cut.
    MaxSpeech,
    /// The caller pressed a key.
    Key,
    /// Nothing within `timeout`.
    NoInput,
}

impl ListenEnd {
    /// The name scripts and events see.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenEnd::Speech => "speech",
            ListenEnd::MaxSpeech => "max-speech",
            ListenEnd::Key => "key",
            ListenEnd::NoInput => "no-input",
        }
    }
}

/// What `listen()` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    /// What the recogniser made of the speech (empty without speech).
    pub text: String,
    /// The choice it matched, when choices were given.
    pub choice: Option<String>,
    /// The recogniser's confidence, 0 to 1.
    pub confidence: f32,
    /// The key that ended listening.
    pub key: Option<char>,
    /// Why listening ended.
    pub reason: ListenEnd,
    /// Length of the caller's speech.
    pub speech: Duration,
}

impl Heard {
    /// A result without speech (a key, or nothing).
    pub fn without_speech(reason: ListenEnd, key: Option<char>) -> Heard {
        Heard {
            text: String::new(),
            choice: None,
            confidence: 0.0,
            key,
            reason,
            speech: Duration::ZERO,
        }
    }

    /// A recognition's result.
    pub fn recognized(r: Recognition, reason: ListenEnd, speech: Duration) -> Heard {
        Heard {
            text: r.text,
            choice: r.choice,
            confidence: r.confidence,
            key: None,
            reason,
            speech,
        }
    }
}

/// What `wait_for_beep()` returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeepResult {
    /// The tone heard, if one was.
    pub beep: Option<Beep>,
}

/// What the ear is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum EarMode {
    /// Nothing: the ear idles.
    Off,
    /// Watch for speech (a barge-in prompt) and keep what the caller says for a `listen`
    /// that follows.
    Watch,
    /// Listen for one utterance.
    Listen(ListenOptions),
    /// Tell a person from an answering machine.
    Amd(AmdConfig),
    /// Wait for the voicemail tone, at most this long.
    Beep(Duration),
}

/// What the ear heard.
#[derive(Debug)]
pub enum EarEvent {
    /// The caller started speaking.
    SpeechStarted,
    /// One utterance, for the recogniser.
    Utterance {
        /// The caller's speech, from its start, at `rate`.
        samples: Vec<i16>,
        /// Its rate.
        rate: crate::rtp::types::ClockRate,
        /// Why it ended.
        end: ListenEnd,
    },
    /// Nothing heard within the timeout.
    NoInput,
    /// The answering-machine verdict.
    Amd(AmdResult),
    /// The beep wait ended: the tone, or none within the time.
    Beep(Option<Beep>),
}
