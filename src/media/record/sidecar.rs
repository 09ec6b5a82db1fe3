//! The JSON file next to each recording (`ID.json`), so recordings can be listed and
//! described without opening a WAV.
//!
//! It is written when a recording starts (state `recording`) and again when it ends
//! (`complete`) or is recovered after a crash (`repaired`). Every write goes to a temporary
//! file that is fsync'd and renamed over the old one, so a reader sees either the old or
//! the new version, never half of one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::names;
use super::{RecordError, RecordMode, StopReason};

/// Sample format of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format {
    /// Samples per second.
    pub rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Bits per sample.
    pub bits: u16,
}

/// Where a recording is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SidecarState {
    /// Still being written (or the writer died; see [`repair_dir`](super::repair_dir)).
    Recording,
    /// Finished normally.
    Complete,
    /// Recovered from a `.part` file after a crash.
    Repaired,
}

/// Description of one recording, stored as `ID.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// Unique, filesystem-safe id; also the file stem.
    pub id: String,
    /// SIP Call-ID of the recorded call.
    pub call_id: String,
    /// Caller (From URI).
    pub from: String,
    /// Callee (To URI).
    pub to: String,
    /// Conference room, when the recording is of a room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Start time, RFC 3339 UTC.
    pub started: String,
    /// Length of the audio in the WAV.
    pub duration_ms: u64,
    /// Sample format.
    pub format: Format,
    /// Recorded directions and layout.
    pub mode: RecordMode,
    /// Digits pressed while recording, as keypad characters.
    #[serde(default)]
    pub digits: String,
    /// Why it stopped; absent while recording and after a repair.
    #[serde(default)]
    pub stop_reason: Option<StopReason>,
    /// Life-cycle state.
    pub state: SidecarState,
    /// WAV file name, relative to the sidecar's directory.
    pub file: String,
}

/// Fields a room recording's sidecar carries besides [`Sidecar`]'s; all absent on a call
/// recording. Kept outside [`Sidecar`] so that readers that only know the common fields (the
/// API's index) read room sidecars unchanged: unknown JSON fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomFields {
    /// On a room's mixed recording: the file name of its timeline (`ID.timeline.json`),
    /// written when the recording ends or is repaired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<String>,
    /// On a member's track: the id of the room's mixed recording it is aligned with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_of: Option<String>,
    /// On a member's track: the member's number in the timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<u64>,
}

impl RoomFields {
    /// Whether no field is set (a call recording).
    pub fn is_empty(&self) -> bool {
        *self == RoomFields::default()
    }
}

/// The sidecar file's JSON: the common fields and the room fields side by side.
#[derive(Serialize, Deserialize)]
struct SidecarFile<S> {
    #[serde(flatten)]
    sidecar: S,
    #[serde(flatten)]
    room: RoomFields,
}

impl Sidecar {
    /// Path of the sidecar for `id` in `dir`.
    pub fn path(dir: &Path, id: &str) -> PathBuf {
        names::sidecar_path(dir, id)
    }

    /// Writes `dir/ID.json` atomically (temporary file, fsync, rename).
    pub fn write(&self, dir: &Path) -> Result<(), RecordError> {
        self.write_with(dir, &RoomFields::default())
    }

    /// Writes `dir/ID.json` atomically with `room`'s fields beside the common ones.
    pub fn write_with(&self, dir: &Path, room: &RoomFields) -> Result<(), RecordError> {
        let path = Sidecar::path(dir, &self.id);
        let bytes = if room.is_empty() {
            serde_json::to_vec_pretty(self)
        } else {
            serde_json::to_vec_pretty(&SidecarFile {
                sidecar: self,
                room: room.clone(),
            })
        }
        .map_err(|source| RecordError::Sidecar {
            path: path.clone(),
            source,
        })?;
        write_atomic(dir, &path, &bytes)
    }

    /// Reads a sidecar file with its room fields (empty for a call recording).
    pub fn read_with(path: &Path) -> Result<(Sidecar, RoomFields), RecordError> {
        let bytes = fs::read(path).map_err(|e| RecordError::io("read", path, e))?;
        let file: SidecarFile<Sidecar> =
            serde_json::from_slice(&bytes).map_err(|source| RecordError::Sidecar {
                path: path.to_path_buf(),
                source,
            })?;
        Ok((file.sidecar, file.room))
    }

    /// Reads a sidecar file.
    pub fn read(path: &Path) -> Result<Sidecar, RecordError> {
        let bytes = fs::read(path).map_err(|e| RecordError::io("read", path, e))?;
        serde_json::from_slice(&bytes).map_err(|source| RecordError::Sidecar {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Replaces `path` (in `dir`) by `bytes` so that a reader sees the old or the new content,
/// never part of one: a hidden temporary file, fsync, rename, directory fsync.
pub(crate) fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("sidecar");
    let tmp = names::tmp_path(dir, name);
    let mut f = File::create(&tmp).map_err(|e| RecordError::io("create", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| RecordError::io("write", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| RecordError::io("rename", &tmp, e))?;
    sync_dir(dir);
    Ok(())
}

/// Whether `path` names a sidecar (`ID.json` with a safe id), not a timeline or temporary file.
pub(crate) fn is_sidecar_path(path: &Path) -> bool {
    names::id_of(path, names::SIDECAR_SUFFIX).is_some_and(is_safe_id)
}

/// All readable sidecars in `dir`, oldest first; unreadable ones are skipped with a warning.
pub fn list_recordings(dir: &Path) -> Result<Vec<Sidecar>, RecordError> {
    let entries = fs::read_dir(dir).map_err(|e| RecordError::io("read dir", dir, e))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !is_sidecar_path(&path) {
            continue;
        }
        match Sidecar::read(&path) {
            Ok(s) => out.push(s),
            Err(e) => tracing::warn!(error = %e, "skipping unreadable recording sidecar"),
        }
    }
    out.sort_by(|a, b| (&a.started, &a.id).cmp(&(&b.started, &b.id)));
    Ok(out)
}

/// A new recording id: UTC time to the second plus 64 random bits, e.g.
/// `20240501T120000Z-9f3a61c2d0b7e845`; only ASCII letters, digits and `-`.
pub fn new_id(now: SystemTime) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(clamp_time(now))
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("{stamp}-{:016x}", fastrand::u64(..))
}

/// RFC 3339 UTC with milliseconds, for [`Sidecar::started`].
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(clamp_time(t)).to_string()
}

/// humantime panics outside years 1970–9999; a clock that far off is wrong anyway.
fn clamp_time(t: SystemTime) -> SystemTime {
    // 9999-12-31T23:59:59Z
    let max = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    t.clamp(UNIX_EPOCH, max)
}

/// Whether `id` is safe as a file stem: non-empty, ASCII letters, digits, `-` and `_`.
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Makes a rename in `dir` durable; best effort, as some filesystems refuse to sync a
/// directory and the rename itself has already happened.
pub(crate) fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "directory fsync failed");
    }
}
