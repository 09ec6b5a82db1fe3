//! Application audio streams over WebSocket: a call's audio sent to an application (voice
//! bot, transcription, analytics) and the audio it sends back played to the caller.
//!
//! This module owns the wire formats ([`twilio`]: Twilio Media Streams JSON with base64
//! µ-law; [`l16`]: a JSON start frame then binary little-endian 16-bit PCM), the sans-IO
//! [`playout`] queue that paces the application's audio on the media clock, and the
//! [`client`] task that carries both over a `ws://` or `wss://` socket, off the media tick,
//! through bounded queues.

pub mod client;
pub mod l16;
pub mod playout;
pub mod twilio;

use std::collections::BTreeMap;

pub use client::{
    spawn, AudioFrame, EndReason, Format, Outbound, StreamConfig, StreamHandle, StreamStats,
};
pub use playout::{Player, PlayoutEvent};

/// Samples in one 20 ms frame at the highest rate a stream carries (16 kHz).
pub const MAX_FRAME_SAMPLES: usize = 320;

/// Which side of the call a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// What the caller says.
    Inbound,
    /// What the caller hears.
    Outbound,
    /// Both, as separate tracks.
    Both,
}

impl Track {
    /// The name used in options and on the wire (`inbound`, `outbound`, `both`).
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Inbound => "inbound",
            Track::Outbound => "outbound",
            Track::Both => "both",
        }
    }

    /// The single tracks this selection carries, in wire order.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Track::Inbound => &["inbound"],
            Track::Outbound => &["outbound"],
            Track::Both => &["inbound", "outbound"],
        }
    }

    /// Parses `inbound`, `outbound` or `both`.
    pub fn parse(s: &str) -> Option<Track> {
        match s {
            "inbound" => Some(Track::Inbound),
            "outbound" => Some(Track::Outbound),
            "both" => Some(Track::Both),
            _ => None,
        }
    }
}

/// What the `start` message tells the application about the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartInfo {
    /// The call's id (Twilio's `callSid`).
    pub call_id: String,
    /// The caller.
    pub from: String,
    /// The called party.
    pub to: String,
    /// The tracks sent.
    pub tracks: Track,
    /// Free-form parameters from the script or API (Twilio's `customParameters`).
    pub parameters: BTreeMap<String, String>,
}

/// What the application asked for, decoded from either format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppCommand {
    /// Audio to play, 16-bit linear at the stream's rate.
    Audio(Vec<i16>),
    /// Echo this name once the audio queued before it has been played.
    Mark(String),
    /// Drop everything queued (barge-in).
    Clear,
}

/// A message from the application that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    /// Not JSON, or JSON without the fields its event needs.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// An event this side does not accept.
    #[error("unexpected event {0:?}")]
    UnexpectedEvent(String),
    /// A payload that is not valid base64.
    #[error("payload is not base64: {0}")]
    Base64(String),
    /// Binary PCM with an odd number of bytes.
    #[error("binary frame of {0} bytes is not 16-bit PCM")]
    OddLength(usize),
    /// A binary frame where the format has none.
    #[error("binary frames are not part of this format")]
    UnexpectedBinary,
}

/// A message as JSON text.
fn to_json<T: serde::Serialize>(msg: &T) -> String {
    // The messages are structs of strings, numbers and maps with string keys, which cannot
    // fail to serialise.
    serde_json::to_string(msg).unwrap_or_default()
}
