//! The voicemail beep for `wait_for_beep()`: one steady tone of [`MIN_HZ`]–[`MAX_HZ`] lasting
//! at least [`MIN_MS`], reported once it has ended (so what the script plays next is recorded
//! after it) with its frequency, start and length.
//!
//! A sans-IO core fed one 20 ms frame per tick. Each frame is first described by its
//! autocorrelations at lags 0, 1, 2, 4 and 8 (five multiply-adds a sample, in SIMD lanes): for
//! one sinusoid in white noise, lags 1 and 2 give its frequency without the noise's bias
//! (Pisarenko's estimate) and its share of the energy, and lags 4 and 8 must then follow the
//! same cosine, which speech almost never does. Only a frame that passes is checked with a
//! pass of [`SEARCH_FILTERS`] Goertzel filters around the candidate: a tone is there when the
//! strongest frequency carries at least [`MIN_PURITY`] of the frame's energy, which two tones
//! (DTMF, dial tone), speech and noise never do. While a tone lasts, one filter at its
//! frequency follows it, and the phase advance of that filter from frame to frame gives the
//! frequency to a fraction of a hertz; a tone whose frequency wanders (a held vowel's
//! harmonic) ends there. A bank over the whole band (65 filters at 25 Hz spacing) on every
//! frame of every caller would cost several times more; DESA-2 is as cheap as the
//! autocorrelations but needs band-pass filtering to be unbiased in noise below 1 kHz.
//! Single-frequency call-progress tones (the 425 Hz busy and ringback cadences of most of
//! Europe) are steady single tones as well and are reported like a beep; they come before an
//! answer, not after one.
//!
//! The tone's edges fall inside frames: the amplitude a filter at the tone's frequency sees in
//! a frame grows with the share of the frame the tone covers, so the frames at either edge
//! (and the one before it, kept for this) give the tone's start and length to a millisecond or
//! so, which the [`MIN_MS`] limit needs.

use thiserror::Error;

use crate::media::dtmf::goertzel::GoertzelBank;
use crate::rtp::types::ClockRate;

use super::vad::FRAME_MS;

/// Lowest beep frequency, Hz (inclusive).
pub const MIN_HZ: f64 = 400.0;
/// Highest beep frequency, Hz (inclusive).
pub const MAX_HZ: f64 = 2000.0;
/// Shortest beep, ms. Lengths are measured to about ±1 ms, so a tone of at least
/// `MIN_MS - 2` ms is accepted: a tone of exactly [`MIN_MS`] must never be missed.
pub const MIN_MS: f64 = 80.0;
/// Share of a frame's energy that one frequency must carry for the frame to be tone: a tone
/// 10 dB above white noise carries 0.91; DTMF with 8 dB of twist carries 0.86 in its stronger
/// tone, so the two never meet.
pub const MIN_PURITY: f64 = 0.9;
/// Quietest tone looked at: frame RMS in dBFS.
pub const MIN_LEVEL_DBFS: f64 = -45.0;
/// Largest change of the measured frequency from one frame to the next, Hz, within a tone.
const MAX_STEP_HZ: f64 = 2.5;
/// A tone that falls this far below its strongest frame (3 dB) has ended.
const MIN_AMPLITUDE_RATIO: f64 = 0.707;
/// Candidates this far outside the band are still followed, so that tones near the edges are
/// measured (and then judged on their measured frequency).
const SEARCH_MARGIN_HZ: f64 = 100.0;
/// Filters of the search around a candidate, half a bin apart (±100 Hz at 20 ms).
const SEARCH_FILTERS: usize = 9;
/// Samples kept from the previous frame, for the autocorrelations across the frame boundary.
const HISTORY: usize = 8;
/// Share of the energy the autocorrelations must attribute to one sinusoid before the
/// filters are run: the filters decide, this only spares them most frames of speech.
const MIN_MODEL_SHARE: f64 = 0.8;
/// How far the normalised autocorrelations at lags 4 and 8 may stray from what that
/// sinusoid predicts: noise 10 dB down moves them by at most 0.1.
const MAX_MODEL_ERROR: f64 = 0.15;
/// Lowest supported sample rate, Hz.
const MIN_RATE: u32 = 8000;
/// Highest supported sample rate, Hz.
const MAX_RATE: u32 = 48000;

/// A rate this detector cannot work at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error(
    "beep detection needs a sample rate of 8,000 to 48,000 Hz in whole 20 ms frames, not {0} Hz"
)]
pub struct BeepRateError(pub u32);

/// A tone found by a [`BeepDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beep {
    /// Its frequency, Hz.
    pub hz: f64,
    /// Where it began, ms from the first frame pushed.
    pub at_ms: f64,
    /// How long it lasted (or, when not `ended`, has lasted so far), ms.
    pub ms: f64,
    /// Whether the tone ended. Only [`BeepDetector::finish`] reports a tone that has not:
    /// it is not a beep, since it may go on, and a driver reports `beep: false` for it.
    pub ended: bool,
}

#[derive(Debug, Clone, Copy)]
struct Track {
    start_frame: u64,
    frames: u32,
    /// The filter's frequency, Hz, and its rotation per sample.
    hz: f64,
    cos: f64,
    sin: f64,
    /// Amplitudes seen by the filter: the frame before the tone, its first and last frames,
    /// its strongest.
    before: f64,
    first: f64,
    last: f64,
    max: f64,
    /// The filter's complex output in the last frame.
    x: (f64, f64),
    /// Sum and count of the frequencies measured from phase advances.
    sum_hz: f64,
    count_hz: u32,
    last_hz: Option<f64>,
}

/// Voicemail beep detector: see the module documentation.
#[derive(Debug, Clone)]
pub struct BeepDetector {
    rate: u32,
    n: usize,
    /// This frame and the last, each after the [`HISTORY`] samples that came before it.
    cur: Box<[f32]>,
    prev: Box<[f32]>,
    has_prev: bool,
    min_energy: f64,
    frames: u64,
    track: Option<Track>,
}

impl BeepDetector {
    /// A detector for audio at `rate`.
    pub fn new(rate: ClockRate) -> Result<Self, BeepRateError> {
        let hz = rate.hz();
        if !(MIN_RATE..=MAX_RATE).contains(&hz) || !hz.is_multiple_of(1000 / FRAME_MS) {
            return Err(BeepRateError(hz));
        }
        let n = (hz / (1000 / FRAME_MS)) as usize;
        let min_rms = 32768.0 * 10f64.powf(MIN_LEVEL_DBFS / 20.0);
        Ok(Self {
            rate: hz,
            n,
            cur: vec![0.0; HISTORY + n].into_boxed_slice(),
            prev: vec![0.0; HISTORY + n].into_boxed_slice(),
            has_prev: false,
            min_energy: min_rms * min_rms * n as f64,
            frames: 0,
            track: None,
        })
    }

    /// Frames pushed so far: the driver's clock for its timeout.
    pub fn frames_seen(&self) -> u64 {
        self.frames
    }

    /// Milliseconds of audio pushed so far.
    pub fn elapsed_ms(&self) -> u64 {
        self.frames * u64::from(FRAME_MS)
    }

    /// Whether a tone is being followed (it may still turn out too short or out of band).
    pub fn in_tone(&self) -> bool {
        self.track.is_some()
    }

    /// Feeds the next 20 ms frame (longer frames are cut, shorter ones padded with silence);
    /// returns a beep on the first frame after it ended.
    pub fn push(&mut self, frame: &[i16]) -> Option<Beep> {
        let index = self.frames;
        self.frames += 1;
        let n = self.n;
        let (history, samples) = self.cur.split_at_mut(HISTORY);
        history.copy_from_slice(&self.prev[n..]);
        let m = frame.len().min(n);
        for (slot, &x) in samples[..m].iter_mut().zip(frame) {
            *slot = f32::from(x);
        }
        samples[m..].fill(0.0);
        let lag = |k: usize| f64::from(dot(&self.cur[HISTORY..], &self.cur[HISTORY - k..][..n]));
        let r = [lag(0), lag(1), lag(2), lag(4), lag(8)];
        let energy = r[0];
        let found = match self.track {
            Some(track) => self.follow(track, energy),
            None => {
                self.acquire(index, r);
                None
            }
        };
        std::mem::swap(&mut self.cur, &mut self.prev);
        self.has_prev = true;
        found
    }

    /// The stream stopped. A tone still going on is reported with `ended: false` if it is in
    /// the band and already long enough (see [`Beep::ended`]); otherwise `None`.
    pub fn finish(&mut self) -> Option<Beep> {
        let track = self.track.take()?;
        self.measure(&track, None)
    }

    /// Forgets any tone in progress, as if newly built.
    pub fn reset(&mut self) {
        self.track = None;
        self.has_prev = false;
        self.cur.fill(0.0);
        self.prev.fill(0.0);
        self.frames = 0;
    }

    /// Looks for a tone starting in this frame, whose autocorrelations at lags 0, 1, 2, 4
    /// and 8 are `r`.
    fn acquire(&mut self, index: u64, r: [f64; 5]) {
        let [energy, r1, r2, r4, r8] = r;
        if energy < self.min_energy {
            return;
        }
        // One sinusoid (power P, cos ω = c) in white noise: r1 = P·c, r2 = P·(2c² − 1),
        // whatever the noise; c is the root of 2r1·c² − r2·c − r1 = 0 with the sign of r1.
        let denominator = (r2 * r2 + 8.0 * r1 * r1).sqrt() - r2;
        if denominator <= 0.0 {
            return;
        }
        let c = (2.0 * r1 / denominator).clamp(-1.0, 1.0);
        let rate = f64::from(self.rate);
        let candidate = c.acos() * rate / std::f64::consts::TAU;
        if !(MIN_HZ - SEARCH_MARGIN_HZ..=MAX_HZ + SEARCH_MARGIN_HZ).contains(&candidate) {
            return;
        }
        // P from r1 and r2 by least squares; then the sinusoid must also explain lags 4 and 8
        // (cos 4ω and cos 8ω by Chebyshev's recurrence), which speech almost never does.
        let t2 = 2.0 * c * c - 1.0;
        let share = (r1 * c + r2 * t2) / (c * c + t2 * t2) / energy;
        let t4 = 2.0 * t2 * t2 - 1.0;
        let t8 = 2.0 * t4 * t4 - 1.0;
        if share < MIN_MODEL_SHARE
            || (r4 / energy - share * t4).abs() > MAX_MODEL_ERROR
            || (r8 / energy - share * t8).abs() > MAX_MODEL_ERROR
        {
            return;
        }
        let hz = self.strongest_near(candidate);
        let (cos, sin) = rotation(hz, rate);
        let x = self.filter(&self.cur[HISTORY..], hz, (cos, sin));
        let amplitude = self.amplitude(x);
        if purity(amplitude, energy, self.n) < MIN_PURITY {
            return;
        }
        let before = if self.has_prev {
            self.amplitude(self.filter(&self.prev[HISTORY..], hz, (cos, sin)))
        } else {
            0.0
        };
        self.track = Some(Track {
            start_frame: index,
            frames: 1,
            hz,
            cos,
            sin,
            before,
            first: amplitude,
            last: amplitude,
            max: amplitude,
            x,
            sum_hz: 0.0,
            count_hz: 0,
            last_hz: None,
        });
    }

    fn follow(&mut self, mut track: Track, energy: f64) -> Option<Beep> {
        let x = self.filter(&self.cur[HISTORY..], track.hz, (track.cos, track.sin));
        let amplitude = self.amplitude(x);
        let hz = self.phase_frequency(&track, x);
        let steady = track
            .last_hz
            .is_none_or(|last| (hz - last).abs() <= MAX_STEP_HZ)
            && (hz - track.hz).abs() <= self.half_bin();
        let still = energy > 0.0
            && purity(amplitude, energy, self.n) >= MIN_PURITY
            && amplitude >= track.max * MIN_AMPLITUDE_RATIO
            && steady;
        if still {
            track.frames += 1;
            track.last = amplitude;
            track.max = track.max.max(amplitude);
            track.x = x;
            track.sum_hz += hz;
            track.count_hz += 1;
            track.last_hz = Some(hz);
            self.track = Some(track);
            return None;
        }
        self.track = None;
        self.measure(&track, Some(amplitude))
    }

    /// Start, length and frequency of a tone followed in `track`; `after` is the amplitude of
    /// the frame after its last (where the tone ended), `None` if it has not ended.
    fn measure(&self, track: &Track, after: Option<f64>) -> Option<Beep> {
        let reference = track.max;
        let share = |amplitude: f64| {
            let s = (amplitude / reference).clamp(0.0, 1.0);
            if s < 0.03 {
                0.0
            } else if s > 0.97 {
                1.0
            } else {
                s
            }
        };
        let (before, first, last) = (share(track.before), share(track.first), share(track.last));
        let tail = after.map_or(0.0, share);
        let frames = if track.frames >= 2 {
            first + last + f64::from(track.frames - 2)
        } else {
            first
        };
        let n = self.n as f64;
        let samples = (before + frames + tail) * n;
        let start = track.start_frame as f64 * n + (1.0 - first) * n - before * n;
        let hz = if track.count_hz > 0 {
            track.sum_hz / f64::from(track.count_hz)
        } else {
            track.hz
        };
        let per_ms = f64::from(self.rate) / 1000.0;
        let beep = Beep {
            hz,
            at_ms: start.max(0.0) / per_ms,
            ms: samples / per_ms,
            ended: after.is_some(),
        };
        ((MIN_HZ..=MAX_HZ).contains(&hz) && beep.ms >= MIN_MS - 2.0).then_some(beep)
    }

    /// The frequency of the filter's input from the phase advance of its output between the
    /// tone's last frame and this one: a frame is `n` samples, so the advance is 2π·f·n/rate
    /// modulo 2π, and the filter's own frequency (within half a bin) picks the turn.
    fn phase_frequency(&self, track: &Track, x: (f64, f64)) -> f64 {
        let (re, im) = (
            x.0 * track.x.0 + x.1 * track.x.1,
            x.1 * track.x.0 - x.0 * track.x.1,
        );
        let turns = im.atan2(re) / std::f64::consts::TAU;
        let bin = f64::from(self.rate) / self.n as f64;
        let whole = (track.hz / bin - turns).round();
        (whole + turns) * bin
    }

    fn half_bin(&self) -> f64 {
        0.5 * f64::from(self.rate) / self.n as f64
    }

    /// The frequency near `candidate` where a filter over this frame is strongest:
    /// [`SEARCH_FILTERS`] filters half a bin apart in one pass, then a parabola through the
    /// log powers of the strongest and its neighbours.
    fn strongest_near(&self, candidate: f64) -> f64 {
        let step = self.half_bin();
        let middle = (SEARCH_FILTERS / 2) as f64;
        let freqs: [f32; SEARCH_FILTERS] =
            std::array::from_fn(|i| (candidate + (i as f64 - middle) * step) as f32);
        let powers = GoertzelBank::new(&freqs, self.rate).power(&self.cur[HISTORY..]);
        let best = (1..SEARCH_FILTERS - 1)
            .max_by(|&a, &b| powers[a].total_cmp(&powers[b]))
            .unwrap_or(SEARCH_FILTERS / 2);
        let [a, b, c] = [best - 1, best, best + 1].map(|i| f64::from(powers[i].max(1e-12)).ln());
        let curvature = a - 2.0 * b + c;
        let offset = if curvature < 0.0 {
            (0.5 * (a - c) / curvature).clamp(-1.0, 1.0)
        } else {
            0.0
        };
        f64::from(freqs[best]) + offset * step
    }

    /// Complex output of a Goertzel filter at `hz` over `block` (the same constant phase
    /// factor in every frame, which the phase advance cancels).
    fn filter(&self, block: &[f32], hz: f64, (cos, sin): (f64, f64)) -> (f64, f64) {
        let bank = GoertzelBank::new(&[hz as f32], self.rate);
        let [(s1, s2)] = bank.states_split(block, block.len()).1;
        let (s1, s2) = (f64::from(s1), f64::from(s2));
        (s1 - cos * s2, sin * s2)
    }

    /// Amplitude of a sinusoid that would give the filter output `x` over a whole frame.
    fn amplitude(&self, x: (f64, f64)) -> f64 {
        2.0 * x.0.hypot(x.1) / self.n as f64
    }
}

/// Share of a frame's `energy` (sum of squares over `n` samples) in a sinusoid of `amplitude`.
fn purity(amplitude: f64, energy: f64, n: usize) -> f64 {
    if energy <= 0.0 {
        return 0.0;
    }
    amplitude * amplitude * n as f64 / (2.0 * energy)
}

/// Σ a·b in eight independent sums, so that the loop runs in SIMD lanes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for k in 0..8 {
            sums[k] += x[k] * y[k];
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// cos and sin of the rotation per sample of `hz` at `rate`.
fn rotation(hz: f64, rate: f64) -> (f64, f64) {
    let w = std::f64::consts::TAU * hz / rate;
    (w.cos(), w.sin())
}
