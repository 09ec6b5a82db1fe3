//! Audio prompts: decoding files, converting them to the call's rate, caching them, and
//! playing them frame by frame.
//!
//! A [`PromptCache`] turns a prompt name (`"welcome"`, `"digits/5"`) into decoded mono
//! 16-bit samples at the rate asked for, shared as an `Arc<Prompt>`. Files may be WAV
//! (8/16/24/32-bit integer or float PCM), FLAC, OGG/Vorbis or MP3, at any rate, mono or
//! with channels averaged down to mono.
//!
//! **Loading blocks** (file I/O, decoding, resampling): call [`PromptCache::load`] from a
//! blocking thread (e.g. `tokio::task::spawn_blocking`), never from the media tick. The
//! tick only touches [`PromptPlayer`] and [`Playlist`], which copy samples out of shared
//! buffers without allocating.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

use crate::media::resample::{resample, ResampleError};
use crate::rtp::types::ClockRate;

/// Extensions tried, in order, for a name given without one.
pub const EXTENSIONS: [&str; 4] = ["wav", "flac", "ogg", "mp3"];

/// Longest prompt accepted, so a stray long file cannot fill memory.
pub const MAX_PROMPT: Duration = Duration::from_secs(600);

/// Why a prompt could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// No file matched the name.
    #[error("prompt {name:?} not found; tried {}", list_paths(tried))]
    NotFound {
        /// The name asked for.
        name: String,
        /// Every path looked at, in order.
        tried: Vec<PathBuf>,
    },
    /// The name leads outside the prompt folder (`..`, an absolute path elsewhere, or a
    /// symbolic link pointing out).
    #[error("prompt {name:?} is outside the prompt folder {}", root.display())]
    OutsideRoot {
        /// The name asked for.
        name: String,
        /// The prompt folder.
        root: PathBuf,
    },
    /// The name is empty.
    #[error("empty prompt name")]
    EmptyName,
    /// The file exists but could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file is not audio in a format or codec this build decodes.
    #[error("{}: unsupported format: {reason}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The decoder's explanation.
        reason: String,
    },
    /// The file is damaged.
    #[error("{}: decode error: {reason}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's explanation.
        reason: String,
    },
    /// The file holds no samples.
    #[error("{}: no audio in file", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file is longer than [`MAX_PROMPT`].
    #[error("{}: longer than {} s", path.display(), MAX_PROMPT.as_secs())]
    TooLong {
        /// The file.
        path: PathBuf,
    },
    /// Conversion to the requested rate failed.
    #[error("{}: {source}", path.display())]
    Resample {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ResampleError,
    },
    /// Prompts of different rates were put in one playlist.
    #[error("prompt {name:?} is at {rate} Hz, the playlist at {playlist_rate} Hz")]
    MixedRates {
        /// The odd prompt.
        name: String,
        /// Its rate.
        rate: u32,
        /// The rate of the playlist's first prompt.
        playlist_rate: u32,
    },
}

fn list_paths(paths: &[PathBuf]) -> String {
    let v: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    v.join(", ")
}

/// A decoded prompt: mono 16-bit samples at one rate.
#[derive(Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The samples, shared by every player of this prompt.
    pub samples: Arc<[i16]>,
    /// Sample rate in Hz.
    pub rate: u32,
    /// The name it was loaded by.
    pub name: String,
}

impl fmt::Debug for Prompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prompt")
            .field("name", &self.name)
            .field("rate", &self.rate)
            .field("samples", &self.samples.len())
            .finish()
    }
}

impl Prompt {
    /// How long the prompt plays.
    pub fn duration(&self) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.samples.len() as f64 / f64::from(self.rate))
    }
}

/// Decodes a whole audio file to mono `f32` samples (full scale 1.0) and its rate.
///
/// Blocking. Multi-channel audio is averaged to mono. Damaged headers, OGG pages and WAV
/// formats are errors; a file cut short keeps the audio before the cut. The FLAC and MP3
/// readers resynchronise past a damaged frame, so such a frame is dropped, not reported.
pub fn decode_file(path: &Path) -> Result<(Vec<f32>, u32), PromptError> {
    let file = File::open(path).map_err(|source| PromptError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(Box::new(file), path)
}

/// Decodes audio held in memory as [`decode_file`] decodes a file; `name` stands for its
/// path in errors.
pub fn decode_bytes(bytes: Vec<u8>, name: &Path) -> Result<(Vec<f32>, u32), PromptError> {
    decode(Box::new(io::Cursor::new(bytes)), name)
}

fn decode(source: Box<dyn MediaSource>, path: &Path) -> Result<(Vec<f32>, u32), PromptError> {
    let unsupported = |reason: String| PromptError::Unsupported {
        path: path.to_path_buf(),
        reason,
    };
    let classify = |e: SymphoniaError| match e {
        SymphoniaError::Unsupported(what) => unsupported(what.to_string()),
        SymphoniaError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            PromptError::Decode {
                path: path.to_path_buf(),
                reason: "file ends inside its headers".into(),
            }
        }
        SymphoniaError::IoError(source) => PromptError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => PromptError::Decode {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    };

    let mss = MediaSourceStream::new(source, Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(classify)?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| unsupported("no audio track".into()))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| unsupported("no audio codec parameters".into()))?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(classify)?;

    let mut mono: Vec<f32> = Vec::new();
    let mut interleaved: Vec<f32> = Vec::new();
    let mut rate = 0u32;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // A file cut short ends where its data ends, as players treat it.
            Err(SymphoniaError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(classify(e)),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = decoder.decode(&packet).map_err(classify)?;
        let spec = buf.spec();
        let channels = spec.channels().count().max(1);
        if rate == 0 {
            rate = spec.rate();
        } else if spec.rate() != rate {
            return Err(unsupported(format!(
                "sample rate changes from {rate} to {} Hz",
                spec.rate()
            )));
        }
        buf.copy_to_vec_interleaved(&mut interleaved);
        let scale = 1.0 / channels as f32;
        mono.extend(
            interleaved
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() * scale),
        );
        if rate > 0 && mono.len() as f64 / f64::from(rate) > MAX_PROMPT.as_secs_f64() {
            return Err(PromptError::TooLong {
                path: path.to_path_buf(),
            });
        }
    }
    if mono.is_empty() || rate == 0 {
        return Err(PromptError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok((mono, rate))
}

/// Decodes `path` and converts it to mono 16-bit samples at `rate`. Blocking.
pub fn load_file(path: &Path, name: &str, rate: ClockRate) -> Result<Prompt, PromptError> {
    let (samples, from) = decode_file(path)?;
    let samples = resample(&samples, from, rate).map_err(|source| PromptError::Resample {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Prompt {
        samples: samples.into(),
        rate: rate.hz(),
        name: name.to_string(),
    })
}

/// What a cached prompt was decoded from, to notice when the file changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

/// Cached prompts by (canonical path, rate), with the file stamp they were decoded from.
type Entries = HashMap<(PathBuf, u32), (Stamp, Arc<Prompt>)>;

/// Prompts by the rate and name a load asked for, with when their file was last looked at
/// (by rate first, so that a look-up borrows the name).
type Recent = HashMap<u32, HashMap<String, (Instant, Arc<Prompt>)>>;

/// How long a prompt loaded by name is played again without looking at its file: a
/// replaced file is heard within this long, and a busy server does not look up the same
/// file for every call.
pub const RECHECK_AFTER: Duration = Duration::from_secs(1);
/// Names remembered per rate in the recent list; past this it starts afresh.
const RECENT_MAX: usize = 1024;

/// Decoded prompts under one folder, shared and reloaded when their file changes.
#[derive(Debug)]
pub struct PromptCache {
    root: PathBuf,
    entries: Mutex<Entries>,
    recent: Mutex<Recent>,
}

impl PromptCache {
    /// A cache of the prompts under `root`. The folder is looked at on each load, not now.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            entries: Mutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// The prompt folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of decoded prompts held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every cached prompt (players keep theirs alive).
    pub fn clear(&self) {
        self.lock().clear();
        self.lock_recent().clear();
    }

    /// The prompt `name` at `rate` if a [`load`](Self::load) found it less than
    /// [`RECHECK_AFTER`] before `now`: no file system access, so the caller need not leave
    /// its thread.
    pub fn recent(&self, name: &str, rate: ClockRate, now: Instant) -> Option<Arc<Prompt>> {
        let recent = self.lock_recent();
        let (checked, prompt) = recent.get(&rate.hz())?.get(name)?;
        (now.saturating_duration_since(*checked) < RECHECK_AFTER).then(|| Arc::clone(prompt))
    }

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // Each change is a single insert or clear, as with `entries`.
        self.recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the map half-updated: every
        // change is a single insert or clear.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Finds the file for `name`: the path as given, then with each of [`EXTENSIONS`].
    ///
    /// Returns the canonical path. Names with `..` are refused outright; an absolute name,
    /// or a symbolic link, must still end up under the root.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, PromptError> {
        if name.is_empty() {
            return Err(PromptError::EmptyName);
        }
        let outside = || PromptError::OutsideRoot {
            name: name.to_string(),
            root: self.root.clone(),
        };
        let given = Path::new(name);
        if given.components().any(|c| c == Component::ParentDir) {
            return Err(outside());
        }
        let base = if given.is_absolute() {
            given.to_path_buf()
        } else {
            self.root.join(given)
        };
        let mut tried = Vec::with_capacity(1 + EXTENSIONS.len());
        let mut candidates = vec![base.clone()];
        for ext in EXTENSIONS {
            let mut p = OsString::from(base.as_os_str());
            p.push(".");
            p.push(ext);
            candidates.push(PathBuf::from(p));
        }
        for candidate in candidates {
            let is_file = candidate.is_file();
            tried.push(candidate);
            if !is_file {
                continue;
            }
            let Some(found) = tried.last() else { break };
            let canonical = found.canonicalize().map_err(|source| PromptError::Io {
                path: found.clone(),
                source,
            })?;
            let root = self.root.canonicalize().map_err(|source| PromptError::Io {
                path: self.root.clone(),
                source,
            })?;
            if !canonical.starts_with(&root) {
                return Err(outside());
            }
            return Ok(canonical);
        }
        Err(PromptError::NotFound {
            name: name.to_string(),
            tried,
        })
    }

    /// The prompt `name` at `rate`, decoded on first use or when its file changed.
    ///
    /// Blocking: run it on a blocking thread, never on the media tick. Two threads
    /// loading the same new prompt at once may both decode it; both get a valid prompt
    /// and the cache keeps one.
    pub fn load(&self, name: &str, rate: ClockRate) -> Result<Arc<Prompt>, PromptError> {
        let checked = Instant::now();
        let prompt = self.load_file_checked(name, rate)?;
        let mut recent = self.lock_recent();
        let names = recent.entry(rate.hz()).or_default();
        if names.len() >= RECENT_MAX {
            names.clear();
        }
        names.insert(name.to_string(), (checked, Arc::clone(&prompt)));
        Ok(prompt)
    }

    fn load_file_checked(&self, name: &str, rate: ClockRate) -> Result<Arc<Prompt>, PromptError> {
        let path = self.resolve(name)?;
        let meta = std::fs::metadata(&path).map_err(|source| PromptError::Io {
            path: path.clone(),
            source,
        })?;
        let stamp = Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        };
        let key = (path, rate.hz());
        if let Some((s, prompt)) = self.lock().get(&key) {
            if *s == stamp {
                return Ok(Arc::clone(prompt));
            }
        }
        let prompt = Arc::new(load_file(&key.0, name, rate)?);
        self.lock().insert(key, (stamp, Arc::clone(&prompt)));
        Ok(prompt)
    }

    /// Loads each named prompt at `rate` and returns them as one playlist.
    pub fn play<I, S>(&self, names: I, rate: ClockRate) -> Result<Playlist, PromptError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let prompts = names
            .into_iter()
            .map(|n| self.load(n.as_ref(), rate))
            .collect::<Result<Vec<_>, _>>()?;
        Playlist::new(prompts)
    }
}

/// Plays one prompt into caller frames.
#[derive(Debug, Clone)]
pub struct PromptPlayer {
    prompt: Arc<Prompt>,
    pos: usize,
}

impl PromptPlayer {
    /// A player at the start of `prompt`.
    pub fn new(prompt: Arc<Prompt>) -> Self {
        Self { prompt, pos: 0 }
    }

    /// Copies the next samples into `out` and returns how many; fewer than `out.len()`
    /// only at the end, where the caller pads the rest (with silence, or the next prompt).
    pub fn fill(&mut self, out: &mut [i16]) -> usize {
        let rest = self.prompt.samples.get(self.pos..).unwrap_or(&[]);
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        n
    }

    /// True once every sample has been played.
    pub fn is_finished(&self) -> bool {
        self.pos >= self.prompt.samples.len()
    }

    /// Samples played so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Samples left to play.
    pub fn remaining(&self) -> usize {
        self.prompt.samples.len().saturating_sub(self.pos)
    }

    /// Starts again from the beginning.
    pub fn rewind(&mut self) {
        self.pos = 0;
    }

    /// The prompt being played.
    pub fn prompt(&self) -> &Arc<Prompt> {
        &self.prompt
    }
}

/// Plays several prompts back to back, with no gap between them.
#[derive(Debug, Clone)]
pub struct Playlist {
    prompts: Vec<Arc<Prompt>>,
    index: usize,
    pos: usize,
}

impl Playlist {
    /// A playlist of `prompts`, which must all have the same rate.
    pub fn new(prompts: Vec<Arc<Prompt>>) -> Result<Self, PromptError> {
        if let Some(first) = prompts.first() {
            if let Some(odd) = prompts.iter().find(|p| p.rate != first.rate) {
                return Err(PromptError::MixedRates {
                    name: odd.name.clone(),
                    rate: odd.rate,
                    playlist_rate: first.rate,
                });
            }
        }
        Ok(Self {
            prompts,
            index: 0,
            pos: 0,
        })
    }

    /// Copies the next samples into `out`, running on from one prompt into the next, and
    /// returns how many; fewer than `out.len()` only when the playlist ends.
    pub fn fill(&mut self, out: &mut [i16]) -> usize {
        let mut written = 0;
        while written < out.len() {
            let Some(prompt) = self.prompts.get(self.index) else {
                break;
            };
            let rest = prompt.samples.get(self.pos..).unwrap_or(&[]);
            let n = rest.len().min(out.len() - written);
            out[written..written + n].copy_from_slice(&rest[..n]);
            written += n;
            self.pos += n;
            if self.pos >= prompt.samples.len() {
                self.index += 1;
                self.pos = 0;
            }
        }
        written
    }

    /// The rate of its prompts (the narrowband rate when it has none).
    pub fn rate(&self) -> ClockRate {
        self.prompts
            .first()
            .and_then(|p| ClockRate::new(p.rate))
            .unwrap_or(crate::media::frame::NARROW_RATE)
    }

    /// True once every prompt has been played.
    pub fn is_finished(&self) -> bool {
        self.index >= self.prompts.len()
    }

    /// The prompt now playing, if any.
    pub fn current(&self) -> Option<&Arc<Prompt>> {
        self.prompts.get(self.index)
    }

    /// Skips the rest of the prompt now playing.
    pub fn skip(&mut self) {
        if self.index < self.prompts.len() {
            self.index += 1;
            self.pos = 0;
        }
    }

    /// The prompts, in play order.
    pub fn prompts(&self) -> &[Arc<Prompt>] {
        &self.prompts
    }

    /// Total length of all prompts.
    pub fn duration(&self) -> Duration {
        self.prompts.iter().map(|p| p.duration()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(name: &str, samples: &[i16]) -> Arc<Prompt> {
        Arc::new(Prompt {
            samples: samples.into(),
            rate: 8000,
            name: name.into(),
        })
    }

    #[test]
    fn player_fills_then_reports_short_frames() {
        let data: Vec<i16> = (1..=350).collect();
        let mut p = PromptPlayer::new(prompt("x", &data));
        let mut frame = [0i16; 160];
        assert_eq!(p.fill(&mut frame), 160);
        assert_eq!(frame[0], 1);
        assert_eq!(p.fill(&mut frame), 160);
        assert_eq!(frame[159], 320);
        assert!(!p.is_finished());
        assert_eq!(p.remaining(), 30);
        assert_eq!(p.fill(&mut frame), 30);
        assert_eq!(frame[29], 350);
        assert!(p.is_finished());
        assert_eq!(p.fill(&mut frame), 0);
        p.rewind();
        assert_eq!(p.position(), 0);
        assert_eq!(p.fill(&mut frame), 160);
    }

    #[test]
    fn playlist_runs_prompts_together() {
        let a: Vec<i16> = (0..100).collect();
        let b: Vec<i16> = (100..130).collect();
        let c: Vec<i16> = (130..300).collect();
        let mut list = Playlist::new(vec![
            prompt("a", &a),
            prompt("empty", &[]),
            prompt("b", &b),
            prompt("c", &c),
        ])
        .unwrap();
        assert_eq!(list.duration(), Duration::from_micros(37_500));
        let mut got = Vec::new();
        let mut frame = [0i16; 160];
        loop {
            let n = list.fill(&mut frame);
            got.extend_from_slice(&frame[..n]);
            if n < frame.len() {
                break;
            }
        }
        assert_eq!(got, (0..300).collect::<Vec<i16>>());
        assert!(list.is_finished());
        assert!(list.current().is_none());
    }

    #[test]
    fn playlist_skip_moves_to_next_prompt() {
        let mut list = Playlist::new(vec![prompt("a", &[1; 500]), prompt("b", &[2; 10])]).unwrap();
        let mut frame = [0i16; 160];
        list.fill(&mut frame);
        list.skip();
        assert_eq!(list.current().map(|p| p.name.as_str()), Some("b"));
        assert_eq!(list.fill(&mut frame), 10);
        assert_eq!(frame[..10], [2; 10]);
    }

    #[test]
    fn playlist_refuses_mixed_rates() {
        let mut wide = (*prompt("wide", &[0; 10])).clone();
        wide.rate = 16000;
        let err = Playlist::new(vec![prompt("a", &[0; 10]), Arc::new(wide)]).unwrap_err();
        assert!(
            matches!(err, PromptError::MixedRates { rate: 16000, .. }),
            "{err}"
        );
    }

    #[test]
    fn duration_counts_samples() {
        assert_eq!(
            prompt("x", &[0; 12000]).duration(),
            Duration::from_millis(1500)
        );
    }
}
