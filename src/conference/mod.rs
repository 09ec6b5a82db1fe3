//! Conference rooms: the room's mixer ([`mixer`]) and talker detection ([`vad`]), the sans-IO
//! room with its members, controls, keys and sounds ([`room`]), the worker-side glue that
//! runs a room next to its members' legs ([`host`]), and the registry that maps room names
//! to rooms on the media workers and lets calls join them ([`registry`]).

pub mod host;
pub mod mixer;
pub mod recording;
pub mod registry;
pub mod room;
pub mod vad;

pub use mixer::{Gain, Inbound, MemberId, MemberKind, MixOutput, Mixer, MixerError, MixerEvent};
pub use registry::{ConferenceRegistry, JoinError, JoinOptions, LeaveReason, Membership};
pub use room::{KeyAction, KeyMap, Room, RoomEvent, RoomOutput, RoomSettings, RoomSounds};
pub use vad::{AudioLevel, VadConfig};

#[cfg(test)]
mod tests;
