//! `GET /api/recordings/{id}/levels`: a recording's peak levels in `n` equal slices, for a
//! level strip drawn next to it.
//!
//! The WAV is read on a blocking thread, never on the async workers, and the answer is kept
//! in a small cache keyed by the file's ETag, so a page listing many recordings reads each
//! file once.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::sync::{Arc, Mutex};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::recordings::finished_wav;
use super::{ApiError, ApiState, ErrorBody};

/// Slices when `n` is not given.
pub const DEFAULT_SLICES: usize = 200;
/// Most slices one request may ask for.
pub const MAX_SLICES: usize = 2000;
/// Answers kept before the cache is emptied and starts again.
const CACHE_ENTRIES: usize = 256;

/// Query of `GET /api/recordings/{id}/levels`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LevelParams {
    /// Number of slices, 1 to 2000; default 200.
    #[param(minimum = 1, maximum = 2000)]
    pub n: Option<usize>,
}

/// Answer of `GET /api/recordings/{id}/levels`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Levels {
    /// The recording.
    pub id: String,
    /// Length of the audio in milliseconds, from the WAV itself.
    pub duration_ms: u64,
    /// Peak of each slice, 0 (silence) to 1 (full scale), first slice first. A recording
    /// shorter than `n` samples has one slice per sample.
    pub peaks: Vec<f32>,
}

/// Answers already computed, by `(ETag, n)`.
#[derive(Debug, Default)]
pub(crate) struct LevelCache {
    entries: Mutex<HashMap<(String, usize), Arc<Levels>>>,
}

impl LevelCache {
    fn get(&self, key: &(String, usize)) -> Option<Arc<Levels>> {
        self.lock().get(key).cloned()
    }

    fn put(&self, key: (String, usize), levels: Arc<Levels>) {
        let mut map = self.lock();
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, levels);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, usize), Arc<Levels>>> {
        match self.entries.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// Peak levels of a finished recording.
#[utoipa::path(
    get,
    path = "/api/recordings/{id}/levels",
    tag = "recordings",
    params(("id" = String, Path, description = "Recording id"), LevelParams),
    responses(
        (status = 200, description = "Peak level of each slice", body = Levels),
        (status = 400, description = "Malformed id or `n`", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such recording, or its audio file is missing", body = ErrorBody),
        (status = 409, description = "Still recording", body = ErrorBody),
        (status = 500, description = "The WAV could not be read", body = ErrorBody),
    )
)]
pub(crate) async fn levels(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<LevelParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let n = params.n.unwrap_or(DEFAULT_SLICES);
    if !(1..=MAX_SLICES).contains(&n) {
        return Err(ApiError::BadRequest(format!(
            "`n` must be 1 to {MAX_SLICES}"
        )));
    }
    let wav = finished_wav(&state, id).await?;
    let key = (wav.etag.clone(), n);
    if let Some(hit) = state.levels.get(&key) {
        return Ok(Json(&*hit).into_response());
    }
    let id = wav.sidecar.id.clone();
    let file = wav.file.into_std().await;
    let path = wav.path;
    let computed = tokio::task::spawn_blocking(move || peaks(BufReader::new(file), n))
        .await
        .map_err(|e| ApiError::Internal(format!("level task: {e}")))?
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    let levels = Arc::new(Levels {
        id,
        duration_ms: computed.duration_ms,
        peaks: computed.peaks,
    });
    state.levels.put(key, levels.clone());
    Ok(Json(&*levels).into_response())
}

/// What [`peaks`] finds in a WAV.
#[derive(Debug, Clone, PartialEq)]
pub struct Peaks {
    /// Audio length in milliseconds.
    pub duration_ms: u64,
    /// Peak of each slice, 0 to 1.
    pub peaks: Vec<f32>,
}

/// Reads a WAV of integer or float samples and answers the peak of each of `n` equal
/// slices (all channels together), streaming so memory stays constant.
pub fn peaks<R: Read>(reader: R, n: usize) -> Result<Peaks, hound::Error> {
    let mut wav = hound::WavReader::new(reader)?;
    let spec = wav.spec();
    let channels = usize::from(spec.channels.max(1));
    let frames = wav.duration() as usize;
    let duration_ms = if spec.sample_rate == 0 {
        0
    } else {
        frames as u64 * 1000 / u64::from(spec.sample_rate)
    };
    let slices = n.min(frames).max(usize::from(frames > 0));
    let mut out = vec![0f32; slices];
    // Frame f belongs to slice f * slices / frames, so slices differ in length by one
    // frame at most and the last frame lands in the last slice.
    let slice_of = |frame: usize| (frame * slices / frames.max(1)).min(slices.saturating_sub(1));
    match spec.sample_format {
        hound::SampleFormat::Float => {
            for (i, s) in wav.samples::<f32>().enumerate() {
                let Some(s) = sample(s)? else { break };
                let v = s.abs().min(1.0);
                let slot = &mut out[slice_of(i / channels)];
                *slot = slot.max(v);
            }
        }
        hound::SampleFormat::Int => {
            let full = (1i64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            for (i, s) in wav.samples::<i32>().enumerate() {
                let Some(s) = sample(s)? else { break };
                let v = (s.unsigned_abs() as f32 / full).min(1.0);
                let slot = &mut out[slice_of(i / channels)];
                *slot = slot.max(v);
            }
        }
    }
    // Three decimals are finer than any strip is drawn and keep the JSON small.
    for p in &mut out {
        *p = (*p * 1000.0).round() / 1000.0;
    }
    Ok(Peaks {
        duration_ms,
        peaks: out,
    })
}

/// A sample, or None where a file cut short ends before its header says: the levels of
/// what is there are still worth drawing.
fn sample<T>(s: Result<T, hound::Error>) -> Result<Option<T>, hound::Error> {
    match s {
        Ok(v) => Ok(Some(v)),
        // Past a valid header, a read failure means the data ran out.
        Err(hound::Error::IoError(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(samples: &[i16], channels: u16) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        buf.into_inner()
    }

    #[test]
    fn slices_split_the_audio_evenly() {
        // 10 frames, peaks 0.5 in the first half and 0.25 in the second.
        let mut s = vec![16384i16; 5];
        s.extend([-8192i16; 5]);
        let p = peaks(&wav(&s, 1)[..], 2).unwrap();
        assert_eq!(p.peaks, vec![0.5, 0.25]);
        assert_eq!(p.duration_ms, 1);
        let p = peaks(&wav(&s, 1)[..], 5).unwrap();
        assert_eq!(p.peaks, vec![0.5, 0.5, 0.5, 0.25, 0.25]);
        // More slices than frames: one per frame.
        assert_eq!(peaks(&wav(&s, 1)[..], 11).unwrap().peaks.len(), 10);
    }

    #[test]
    fn extremes_and_channels() {
        let p = peaks(&wav(&[i16::MIN, 0, 0, i16::MAX], 2)[..], 2).unwrap();
        assert_eq!(p.peaks, vec![1.0, 1.0]);
        let p = peaks(&wav(&[], 1)[..], 200).unwrap();
        assert!(p.peaks.is_empty());
        assert_eq!(p.duration_ms, 0);
        assert!(peaks(&b"not a wav"[..], 10).is_err());
    }

    #[test]
    fn a_file_cut_short_gives_the_levels_it_has() {
        let mut s = vec![16384i16; 50];
        s.extend([0i16; 50]);
        let full = wav(&s, 1);
        // Half the data is gone, the header still claims all of it.
        let cut = &full[..full.len() - 100];
        let p = peaks(cut, 2).unwrap();
        assert_eq!(p.peaks, vec![0.5, 0.0]);
        assert_eq!(p.duration_ms, 12);
    }
}
