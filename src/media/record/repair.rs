//! Start-up recovery of recordings interrupted by a crash, and the header surgery it shares
//! with the writer's tail trimming.
//!
//! A `.part` file's header is only as fresh as the writer's last flush, but every byte that
//! reached the file after it is still audio. Repair therefore trusts the file length, not
//! the header: the data chunk runs to the end of the file, cut down to whole sample frames,
//! and both RIFF sizes are rewritten to match. Only a file too short to hold a complete
//! header is beyond repair; it is removed, because a WAV that no player can open is worse
//! than none.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::names::{self, PART_SUFFIX, TIMELINE_LINES_SUFFIX};
use super::sidecar::{is_sidecar_path, rfc3339, sync_dir};
use super::timeline::{finish_timeline, Timeline};
use super::{Format, RecordError, RecordMode, RoomFields, Sidecar, SidecarState};

/// Header bytes read when looking for the data chunk; hound's headers are 44 or 68 bytes.
const HEADER_SCAN: usize = 4096;

/// One recording recovered by [`repair_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// Recording id (file stem).
    pub id: String,
    /// The repaired `ID.wav`.
    pub wav: PathBuf,
    /// Audio kept, in milliseconds.
    pub duration_ms: u64,
    /// Bytes of audio data kept.
    pub data_bytes: u64,
    /// Bytes of a trailing partial sample frame that were cut off.
    pub truncated_bytes: u64,
}

/// Where the audio sits in a WAV file and how it is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WavLayout {
    pub channels: u16,
    pub rate: u32,
    pub bits: u16,
    /// Bytes per sample frame (all channels).
    pub block_align: u16,
    /// Offset of the first data byte; the data chunk size sits in the 4 bytes before it.
    pub data_offset: u64,
}

impl WavLayout {
    pub fn format(&self) -> Format {
        Format {
            rate: self.rate,
            channels: self.channels,
            bits: self.bits,
        }
    }

    /// Largest data length whose RIFF size still fits in 32 bits, in whole frames.
    fn max_data_len(&self) -> u64 {
        let room = u64::from(u32::MAX) - (self.data_offset - 8);
        room - room % u64::from(self.block_align)
    }

    pub fn duration_ms(&self, data_len: u64) -> u64 {
        let frames = data_len / u64::from(self.block_align);
        frames * 1000 / u64::from(self.rate.max(1))
    }
}

/// Reads the RIFF/fmt/data headers at the start of `file`.
pub(crate) fn read_layout(file: &mut File, path: &Path) -> Result<WavLayout, RecordError> {
    let bad = |reason| RecordError::BadWav {
        path: path.to_path_buf(),
        reason,
    };
    let mut buf = Vec::with_capacity(HEADER_SCAN);
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.take(HEADER_SCAN as u64).read_to_end(&mut buf))
        .map_err(|e| RecordError::io("read", path, e))?;

    if buf.len() < 12 || &buf[0..4] != b"RIFF" || &buf[8..12] != b"WAVE" {
        return Err(bad("not a RIFF/WAVE file"));
    }
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);

    let mut fmt: Option<(u16, u32, u16, u16)> = None;
    let mut pos = 12usize;
    loop {
        if pos + 8 > buf.len() {
            return Err(bad("no data chunk in the header"));
        }
        let id = &buf[pos..pos + 4];
        let size = u32_at(&buf, pos + 4) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            if size < 16 || body + 16 > buf.len() {
                return Err(bad("truncated fmt chunk"));
            }
            let channels = u16_at(&buf, body + 2);
            let rate = u32_at(&buf, body + 4);
            let block_align = u16_at(&buf, body + 12);
            let bits = u16_at(&buf, body + 14);
            fmt = Some((channels, rate, block_align, bits));
        } else if id == b"data" {
            let (channels, rate, block_align, bits) = fmt.ok_or(bad("data before fmt chunk"))?;
            let expected = u32::from(channels) * u32::from(bits).div_ceil(8);
            if channels == 0 || rate == 0 || block_align == 0 || u32::from(block_align) != expected
            {
                return Err(bad("inconsistent fmt chunk"));
            }
            return Ok(WavLayout {
                channels,
                rate,
                bits,
                block_align,
                data_offset: body as u64,
            });
        }
        pos = body
            .checked_add(size)
            .and_then(|p| p.checked_add(size & 1))
            .ok_or(bad("chunk size overflows"))?;
    }
}

/// Sets the file to hold exactly `data_len` bytes of audio (rounded down to whole frames and
/// to what a 32-bit RIFF size allows) and rewrites both size fields. Returns the length kept.
pub(crate) fn set_data_len(
    file: &mut File,
    path: &Path,
    layout: &WavLayout,
    data_len: u64,
) -> Result<u64, RecordError> {
    let align = u64::from(layout.block_align);
    let data_len = (data_len - data_len % align).min(layout.max_data_len());
    let end = layout.data_offset + data_len;
    let io = |e| RecordError::io("rewrite header of", path, e);
    file.set_len(end).map_err(io)?;
    // Both fit in u32: max_data_len() guarantees it.
    let riff = (end - 8) as u32;
    let data = data_len as u32;
    file.seek(SeekFrom::Start(4)).map_err(io)?;
    file.write_all(&riff.to_le_bytes()).map_err(io)?;
    file.seek(SeekFrom::Start(layout.data_offset - 4))
        .map_err(io)?;
    file.write_all(&data.to_le_bytes()).map_err(io)?;
    Ok(data_len)
}

/// The id of a `ID.wav.part` path.
fn part_id(part: &Path) -> Option<&str> {
    names::id_of(part, PART_SUFFIX)
}

/// Repairs one `ID.wav.part`: header sizes from the file length, partial frame cut, fsync,
/// renamed to `ID.wav`, sidecar marked `repaired`. A file whose header is incomplete is
/// left alone and reported as [`RecordError::BadWav`].
pub fn repair_file(part: &Path) -> Result<Repaired, RecordError> {
    let dir = part.parent().unwrap_or(Path::new("."));
    let id = part_id(part)
        .ok_or(RecordError::BadWav {
            path: part.to_path_buf(),
            reason: "not a .wav.part file",
        })?
        .to_owned();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(part)
        .map_err(|e| RecordError::io("open", part, e))?;
    let layout = read_layout(&mut file, part)?;
    let len = file
        .metadata()
        .map_err(|e| RecordError::io("stat", part, e))?
        .len();
    let raw = len.saturating_sub(layout.data_offset);
    let data_bytes = set_data_len(&mut file, part, &layout, raw)?;
    file.sync_all()
        .map_err(|e| RecordError::io("fsync", part, e))?;
    drop(file);

    // Check with an independent reader before the file gets its final name.
    hound::WavReader::open(part).map_err(|source| RecordError::Wav {
        path: part.to_path_buf(),
        source,
    })?;

    let wav = names::wav_path(dir, &id);
    fs::rename(part, &wav).map_err(|e| RecordError::io("rename", part, e))?;
    sync_dir(dir);

    let duration_ms = layout.duration_ms(data_bytes);
    mark_repaired(dir, &id, layout.format(), duration_ms, &wav);
    Ok(Repaired {
        id,
        wav,
        duration_ms,
        data_bytes,
        truncated_bytes: raw - data_bytes,
    })
}

/// Updates (or, if lost, creates) the sidecar of a repaired recording; failures are logged,
/// since the audio itself is already safe.
fn mark_repaired(dir: &Path, id: &str, format: Format, duration_ms: u64, wav: &Path) {
    let path = Sidecar::path(dir, id);
    let (mut sidecar, room) = match Sidecar::read_with(&path) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, id, "recording sidecar missing; writing a minimal one");
            let started = fs::metadata(wav)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::now());
            let sidecar = Sidecar {
                id: id.to_owned(),
                call_id: String::new(),
                from: String::new(),
                to: String::new(),
                room: None,
                started: rfc3339(started),
                duration_ms: 0,
                format,
                mode: if format.channels == 2 {
                    RecordMode::Stereo
                } else {
                    RecordMode::Inbound
                },
                digits: String::new(),
                stop_reason: None,
                state: SidecarState::Repaired,
                file: String::new(),
            };
            (sidecar, RoomFields::default())
        }
    };
    sidecar.state = SidecarState::Repaired;
    sidecar.duration_ms = duration_ms;
    sidecar.format = format;
    sidecar.file = names::wav_name(id);
    if let Err(e) = sidecar.write_with(dir, &room) {
        tracing::error!(error = %e, id, "could not update sidecar of repaired recording");
    }
}

/// Repairs `part`, or removes it (and its sidecar) if not even its header survived.
pub(crate) fn repair_or_remove(part: &Path) -> Option<Repaired> {
    match repair_file(part) {
        Ok(r) => {
            tracing::warn!(id = %r.id, duration_ms = r.duration_ms, "repaired interrupted recording");
            Some(r)
        }
        Err(e @ RecordError::BadWav { .. }) => {
            tracing::warn!(error = %e, "removing unrecoverable partial recording");
            let _ = fs::remove_file(part);
            if let (Some(dir), Some(id)) = (part.parent(), part_id(part)) {
                let _ = fs::remove_file(Sidecar::path(dir, id));
            }
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "could not repair partial recording");
            None
        }
    }
}

/// Recovers every recording in `dir` left behind by a crash; call it before starting a
/// writer on the same directory.
///
/// Each `ID.wav.part` becomes a valid `ID.wav` holding all audio that reached the disk and
/// its sidecar is marked `repaired`; a sidecar stuck in `recording` whose WAV was already
/// renamed is marked `repaired` too; one with no audio left is removed. A room's
/// `ID.timeline.jsonl` becomes `ID.timeline.json` marked `repaired`. Problems are logged.
pub fn repair_dir(dir: &Path) -> Vec<Repaired> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot scan recordings");
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();

    let mut repaired = Vec::new();
    for path in paths.iter().filter(|p| part_id(p).is_some()) {
        repaired.extend(repair_or_remove(path));
    }

    for path in &paths {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if names::is_sidecar_tmp(name) {
            let _ = fs::remove_file(path);
            continue;
        }
        if !is_sidecar_path(path) {
            continue;
        }
        let Ok(sidecar) = Sidecar::read(path) else {
            continue;
        };
        if sidecar.state != SidecarState::Recording {
            continue;
        }
        let wav = names::wav_path(dir, &sidecar.id);
        match hound::WavReader::open(&wav) {
            Ok(reader) => {
                let spec = reader.spec();
                let format = Format {
                    rate: spec.sample_rate,
                    channels: spec.channels,
                    bits: spec.bits_per_sample,
                };
                let ms = u64::from(reader.duration()) * 1000 / u64::from(spec.sample_rate.max(1));
                mark_repaired(dir, &sidecar.id, format, ms, &wav);
                repaired.push(Repaired {
                    id: sidecar.id.clone(),
                    wav,
                    duration_ms: ms,
                    data_bytes: u64::from(reader.len()) * u64::from(spec.bits_per_sample / 8),
                    truncated_bytes: 0,
                });
            }
            Err(_) if !wav.exists() && !names::part_path(dir, &sidecar.id).exists() => {
                tracing::warn!(id = %sidecar.id, "removing sidecar of a recording with no audio");
                let _ = fs::remove_file(path);
            }
            Err(_) => {}
        }
    }

    // After the WAVs, so a timeline can take its length from its repaired recording.
    for path in &paths {
        let Some(id) = names::id_of(path, TIMELINE_LINES_SUFFIX) else {
            continue;
        };
        repair_timeline(dir, id, path);
    }
    repaired
}

/// Finishes the timeline `lines` of recording `id` left behind by a crash.
fn repair_timeline(dir: &Path, id: &str, lines: &Path) {
    // Killed between writing the finished timeline and removing its lines: keep the former.
    if Timeline::read(&Timeline::path(dir, id)).is_ok() {
        let _ = fs::remove_file(lines);
        return;
    }
    let duration_ms = Sidecar::read(&Sidecar::path(dir, id))
        .ok()
        .map(|s| s.duration_ms);
    match finish_timeline(lines, SidecarState::Repaired, duration_ms) {
        Ok(path) => tracing::warn!(path = %path.display(), "repaired interrupted timeline"),
        Err(e @ RecordError::BadTimeline { .. }) => {
            tracing::warn!(error = %e, "removing timeline with no header");
            let _ = fs::remove_file(lines);
        }
        Err(e) => tracing::error!(error = %e, "could not repair timeline"),
    }
}
