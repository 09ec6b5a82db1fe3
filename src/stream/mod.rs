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
pub mod run;
pub mod tap;
pub mod twilio;

use std::collections::BTreeMap;

pub use client::{
    spawn, spawn_watched, AudioFrame, EndReason, Format, Outbound, StreamConfig, StreamHandle,
    StreamStats,
};
pub use playout::{Player, PlayoutEvent};
pub use tap::{StreamTap, TapConfig};

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

/// A stream asked for by a script or an operator: where, in which format, which audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    /// `ws://` or `wss://` URL of the application.
    pub url: String,
    /// Wire format and rate.
    pub format: Format,
    /// Which side of the call is sent.
    pub track: Track,
    /// The application's audio is played to the caller.
    pub bidirectional: bool,
    /// Free-form parameters passed on in the start message.
    pub parameters: BTreeMap<String, String>,
}

/// The options of a stream as a script or an HTTP body names them, before checking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// `twilio` (default) or `l16`.
    pub format: Option<String>,
    /// `inbound` (default), `outbound` or `both`.
    pub track: Option<String>,
    /// Sample rate of an `l16` stream: 8000 (default) or 16000.
    pub rate: Option<u32>,
    /// Play the application's audio to the caller.
    pub bidirectional: bool,
    /// Passed on in the start message.
    pub parameters: BTreeMap<String, String>,
}

/// Longest stream URL taken.
pub const MAX_URL: usize = 2048;

impl StreamRequest {
    /// Checks a URL and its options: the URL must be `ws://` or `wss://` with a host, the
    /// format, track and rate ones this side speaks.
    pub fn new(url: &str, options: StreamOptions) -> Result<StreamRequest, String> {
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("wss://"))
            .ok_or_else(|| format!("stream URL {url:?} is not ws:// or wss://"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("stream URL {url:?} has no host"));
        }
        if url.len() > MAX_URL {
            return Err(format!("stream URL longer than {MAX_URL} bytes"));
        }
        let format = match (options.format.as_deref().unwrap_or("twilio"), options.rate) {
            ("twilio", None | Some(8000)) => Format::Twilio,
            ("twilio", Some(r)) => return Err(format!("a twilio stream is 8000 Hz, not {r}")),
            ("l16", rate) => {
                let rate = rate.unwrap_or(8000);
                if !l16::RATES.contains(&rate) {
                    return Err(format!("an l16 stream is 8000 or 16000 Hz, not {rate}"));
                }
                Format::L16 { rate }
            }
            (other, _) => return Err(format!("unknown stream format {other:?} (twilio, l16)")),
        };
        let track = match options.track.as_deref() {
            None => Track::Inbound,
            Some(t) => Track::parse(t)
                .ok_or_else(|| format!("unknown track {t:?} (inbound, outbound, both)"))?,
        };
        Ok(StreamRequest {
            url: url.to_string(),
            format,
            track,
            bidirectional: options.bidirectional,
            parameters: options.parameters,
        })
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
