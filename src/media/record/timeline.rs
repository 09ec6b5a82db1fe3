//! The timeline of a room recording: who joined, left, muted and talked, and when.
//!
//! While the room is recorded the writer thread appends one JSON object a line to
//! `ID.timeline.jsonl` (a header line, then one [`TimelineEntry`] a line), written straight
//! to the file so a killed process loses at most the line being written. When the mixed
//! recording ends, or when [`repair_dir`](super::repair_dir) finds the `.jsonl` after a
//! crash, [`finish_timeline`] turns it into one JSON document, `ID.timeline.json`
//! ([`Timeline`]), written atomically; a torn last line is skipped.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::names;
use super::sidecar::{sync_dir, write_atomic};
use super::{RecordError, SidecarState};

/// What happened to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineKind {
    /// Joined the room (or joined again).
    Join,
    /// Left the room.
    Leave,
    /// Was muted.
    Mute,
    /// Was unmuted.
    Unmute,
    /// Started talking.
    TalkStart,
    /// Stopped talking.
    TalkStop,
}

/// Who a member is; registered with the writer when the member first joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineMember {
    /// The member's number in this timeline, stable across a leave and a rejoin.
    pub member: u64,
    /// SIP Call-ID of the member's call.
    pub call_id: String,
    /// Caller (From URI).
    pub from: String,
    /// Id of the member's own track, when tracks are recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
}

/// One event of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Milliseconds from the start of the mixed recording.
    pub at_ms: u64,
    /// What happened.
    pub event: TimelineKind,
    /// The member's number.
    pub member: u64,
    /// SIP Call-ID of the member's call.
    pub call_id: String,
    /// Caller (From URI).
    pub from: String,
    /// Id of the member's track, when tracks are recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
}

/// First line of `ID.timeline.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineHeader {
    /// Id of the mixed recording.
    pub id: String,
    /// Room name.
    pub room: String,
    /// Start of the mixed recording, RFC 3339 UTC (as in its sidecar).
    pub started: String,
}

/// The finished timeline, `ID.timeline.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// Id of the mixed recording.
    pub id: String,
    /// Room name.
    pub room: String,
    /// Start of the mixed recording, RFC 3339 UTC.
    pub started: String,
    /// `complete`, or `repaired` when rebuilt after a crash.
    pub state: SidecarState,
    /// Length of the mixed recording, in milliseconds.
    pub duration_ms: u64,
    /// Everyone who took part, in order of first joining.
    pub members: Vec<TimelineMember>,
    /// Events in time order (ties keep the order they happened in).
    pub events: Vec<TimelineEntry>,
}

impl Timeline {
    /// Path of the finished timeline of recording `id` in `dir`.
    pub fn path(dir: &Path, id: &str) -> PathBuf {
        names::timeline_path(dir, id)
    }

    /// Path of the timeline of recording `id` while it is written.
    pub fn lines_path(dir: &Path, id: &str) -> PathBuf {
        names::timeline_lines_path(dir, id)
    }

    /// Reads a finished timeline.
    pub fn read(path: &Path) -> Result<Timeline, RecordError> {
        let bytes = fs::read(path).map_err(|e| RecordError::io("read", path, e))?;
        serde_json::from_slice(&bytes).map_err(|source| RecordError::Sidecar {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A timeline being appended to, owned by the writer thread.
pub(crate) struct TimelineLog {
    path: PathBuf,
    /// `None` after a write error; later events are dropped (and logged once).
    file: Option<File>,
    members: HashMap<u64, TimelineMember>,
    line: Vec<u8>,
}

impl TimelineLog {
    /// Creates `ID.timeline.jsonl` holding the header line.
    pub(crate) fn create(dir: &Path, header: &TimelineHeader) -> Result<TimelineLog, RecordError> {
        let path = Timeline::lines_path(dir, &header.id);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| RecordError::io("create", &path, e))?;
        let mut log = TimelineLog {
            path,
            file: Some(file),
            members: HashMap::new(),
            line: Vec::with_capacity(256),
        };
        log.append(header);
        Ok(log)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Remembers who `member.member` is, so later events can name the call and track.
    pub(crate) fn register(&mut self, member: TimelineMember) {
        self.members.insert(member.member, member);
    }

    /// Appends one event line.
    pub(crate) fn event(&mut self, at_ms: u64, event: TimelineKind, member: u64) {
        let entry = match self.members.get(&member) {
            Some(m) => TimelineEntry {
                at_ms,
                event,
                member,
                call_id: m.call_id.clone(),
                from: m.from.clone(),
                track: m.track.clone(),
            },
            None => TimelineEntry {
                at_ms,
                event,
                member,
                call_id: String::new(),
                from: String::new(),
                track: None,
            },
        };
        self.append(&entry);
    }

    fn append<T: Serialize>(&mut self, value: &T) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        self.line.clear();
        if serde_json::to_writer(&mut self.line, value).is_err() {
            return;
        }
        self.line.push(b'\n');
        // One write per line: after a kill the file ends at a line boundary or in the
        // middle of the last line, which finishing skips.
        if let Err(e) = file.write_all(&self.line) {
            tracing::error!(path = %self.path.display(), error = %e, "timeline write failed");
            self.file = None;
        }
    }

    /// Writes `ID.timeline.json` from the lines written so far and removes the `.jsonl`.
    pub(crate) fn finish(mut self, duration_ms: u64) -> Result<PathBuf, RecordError> {
        drop(self.file.take());
        finish_timeline(&self.path, SidecarState::Complete, Some(duration_ms))
    }

    /// Removes the `.jsonl` (its recording was discarded).
    pub(crate) fn discard(mut self) {
        drop(self.file.take());
        let _ = fs::remove_file(&self.path);
    }
}

/// Turns `ID.timeline.jsonl` into `ID.timeline.json` marked `state` and removes the `.jsonl`.
///
/// Unreadable lines (a torn last line after a kill) are skipped. Without `duration_ms` the
/// duration is taken from the time of the last event.
pub fn finish_timeline(
    lines: &Path,
    state: SidecarState,
    duration_ms: Option<u64>,
) -> Result<PathBuf, RecordError> {
    let dir = lines.parent().unwrap_or(Path::new("."));
    let text = fs::read(lines).map_err(|e| RecordError::io("read", lines, e))?;
    let mut rows = text.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let header: TimelineHeader = rows
        .next()
        .and_then(|l| serde_json::from_slice(l).ok())
        .ok_or(RecordError::BadTimeline {
            path: lines.to_path_buf(),
            reason: "no header line",
        })?;
    let mut events: Vec<TimelineEntry> = Vec::new();
    let mut skipped = 0usize;
    for row in rows {
        match serde_json::from_slice(row) {
            Ok(e) => events.push(e),
            Err(_) => skipped += 1,
        }
    }
    if skipped > 0 {
        tracing::warn!(path = %lines.display(), skipped, "timeline lines unreadable; skipped");
    }
    // Stable: events of one instant stay in the order they were written.
    events.sort_by_key(|e| e.at_ms);
    let mut members: Vec<TimelineMember> = Vec::new();
    for e in events.iter().filter(|e| e.event == TimelineKind::Join) {
        if !members.iter().any(|m| m.member == e.member) {
            members.push(TimelineMember {
                member: e.member,
                call_id: e.call_id.clone(),
                from: e.from.clone(),
                track: e.track.clone(),
            });
        }
    }
    let last = events.last().map_or(0, |e| e.at_ms);
    let timeline = Timeline {
        duration_ms: duration_ms.unwrap_or(last),
        id: header.id,
        room: header.room,
        started: header.started,
        state,
        members,
        events,
    };
    let path = Timeline::path(dir, &timeline.id);
    let bytes = serde_json::to_vec_pretty(&timeline).map_err(|source| RecordError::Sidecar {
        path: path.clone(),
        source,
    })?;
    write_atomic(dir, &path, &bytes)?;
    fs::remove_file(lines).map_err(|e| RecordError::io("remove", lines, e))?;
    sync_dir(dir);
    Ok(path)
}
