//! Conference rooms. For now this module holds the room's mixer ([`mixer`]) and its talker
//! detection ([`vad`]); membership by call, sounds and the room registry come on top of it.

pub mod mixer;
pub mod recording;
pub mod vad;

pub use mixer::{Gain, Inbound, MemberId, MemberKind, MixOutput, Mixer, MixerError, MixerEvent};
pub use vad::{AudioLevel, VadConfig};

#[cfg(test)]
mod tests;
