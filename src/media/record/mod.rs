//! Call recording to WAV.
//!
//! Three pieces, split so the media tick never touches the disk:
//!
//! - [`RecordSession`] (sans-IO) decides when a recording stops — max duration, silence,
//!   terminator digits, hangup — and lays the two directions of a call out as the recorded
//!   frame (one direction, a saturated mono mix, or stereo with the caller on the left).
//! - [`RecorderHandle::push`] copies a frame into fixed-size chunks and `try_send`s them on
//!   a bounded queue: no allocation, no blocking; when the queue is full the chunk is dropped
//!   and counted, and the writer later fills the gap with silence so timing is kept.
//! - [`RecordingWriter`] is one OS thread that owns every open file. A recording is written
//!   as `ID.wav.part` whose header is rewritten at least once per second of audio, so the
//!   file is always a readable WAV; on finish it is trimmed, fsync'd and renamed to
//!   `ID.wav`. A sidecar `ID.json` describes each recording, so listing needs no WAV.
//!
//! After a crash, [`repair_dir`] turns leftover `.part` files into valid WAVs holding
//! everything that reached the file and marks their sidecars `repaired`.
//!
//! A room recording adds two things ([`timeline`]): extra sidecar fields ([`RoomFields`])
//! linking a member's track to the room's mixed recording, and a timeline of the room's
//! events that the writer appends to as JSON Lines and turns into `ID.timeline.json` when the
//! mixed recording ends (or [`repair_dir`] does after a crash).
//!
//! Every one of these file names is built (and parsed back) by [`names`].

pub mod names;
pub mod policy;
pub mod repair;
pub mod sidecar;
pub mod timeline;
pub mod writer;

#[cfg(test)]
pub(crate) mod tests;

use serde::{Deserialize, Serialize};

pub use policy::{lay_out, DigitSet, RecordOutcome, RecordPolicy, RecordSession, Step, StopReason};
pub use repair::{repair_dir, repair_file, Repaired};
pub use sidecar::{list_recordings, new_id, Format, RoomFields, Sidecar, SidecarState};
pub use timeline::{
    finish_timeline, Timeline, TimelineEntry, TimelineHeader, TimelineKind, TimelineMember,
};
pub use writer::{
    RecorderFactory, RecorderHandle, RecordingMeta, RecordingWriter, StartOptions, WriterConfig,
    WriterStats, CHUNK_SAMPLES,
};

/// Which directions of a call are recorded and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    /// What the caller sends (mono).
    Inbound,
    /// What the server sends to the caller (mono).
    Outbound,
    /// Both directions summed with saturation (mono).
    MixedMono,
    /// Caller on the left channel, server on the right.
    Stereo,
}

impl RecordMode {
    /// Channels in the recorded file.
    pub const fn channels(self) -> u16 {
        match self {
            RecordMode::Stereo => 2,
            _ => 1,
        }
    }
}

/// Errors of the recording module.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A file or directory operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing WAV data failed.
    #[error("WAV {path}: {source}")]
    Wav {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: hound::Error,
    },
    /// A file is not a WAV this module can repair.
    #[error("{path}: {reason}")]
    BadWav {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A sidecar could not be encoded or decoded.
    #[error("sidecar {path}: {source}")]
    Sidecar {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A timeline file cannot be finished.
    #[error("timeline {path}: {reason}")]
    BadTimeline {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The writer thread has exited.
    #[error("recording writer is not running")]
    WriterGone,
}

impl RecordError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        RecordError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
