//! Speech in call flows: text to speech for `say()`, recognition for `listen()`, and the
//! detectors that listen to a caller without understanding words (voice activity,
//! answering machines, the voicemail beep).
//!
//! Everything here runs off the media tick: synthesis and recognition on blocking threads,
//! the detectors as sans-IO cores fed 20 ms frames by whoever holds the caller's audio.

pub mod amd;
pub mod asr;
pub mod beep;
pub mod ear;
pub mod listen;
pub mod tap;
pub mod tts;
pub mod vad;

pub use listen::{BeepResult, EarEvent, EarMode, Heard, ListenEnd, ListenOptions};

/// An error and its causes on one line: a speech server's client error says what went
/// wrong only in its causes (hyper's own message is "client error").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
