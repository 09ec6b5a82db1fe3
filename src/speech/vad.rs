//! Voice activity detection on the caller's audio: when speech starts and when it has ended,
//! for `listen()` (end of an answer) and barge-in (stop a prompt when the caller talks).
//!
//! A sans-IO core fed one 20 ms frame per tick, every tick (a lost packet is a frame of
//! concealment or silence), so time is counted in frames. The decision is on frame energy
//! above [`HIGH_PASS_HZ`] (rumble, hum and the low end of pink noise swing from frame to frame
//! far more than they carry speech), against a threshold that follows the background: the
//! noise level is the lowest frame energy of the last [`NOISE_WINDOW`] frames (speech always
//! has gaps that fall back to the background, steady noise never rises above its own floor),
//! speech must stand `margin_db` above it, and never below the absolute `floor_dbfs`. Steady
//! line noise or comfort noise therefore never counts as speech, however loud, once it has
//! been heard for a frame; a burst must hold [`VadConfig::min_speech_ms`] of loud frames to be
//! speech, so a click, a cough or a short key tone is not.

use crate::rtp::types::ClockRate;

/// Frames the noise floor looks back over (2 s): longer than any syllable, so a floor taken
/// during speech is the background between syllables, not the speech.
pub const NOISE_WINDOW: usize = 100;

/// Corner of the first-order high-pass filter in front of the energy measure, Hz.
pub const HIGH_PASS_HZ: f32 = 200.0;

/// Length of one frame in milliseconds; the speech detectors count time in these.
pub const FRAME_MS: u32 = 20;

/// Frames more than this far below the absolute floor (30 dB) before filtering are dead: lost
/// packets concealed with silence, or digital silence.
const DEAD_FRAME_BELOW_FLOOR: f64 = 1000.0;

/// Up to this many dead frames in a row (200 ms) are lost packets, and the background is
/// taken to be what it was before them; longer, the line has gone silent. Without this, one
/// lost packet in loud noise would drag the floor to nothing for the length of the window.
const MAX_LOST_FRAMES: u32 = 10;

/// Once speech has started, frames down to this share of the start threshold (3 dB under it)
/// still count as speech: word endings fade, and trimming them would end speech early.
const HOLD_RATIO: f64 = 0.5;

/// Inside a burst that is not yet confirmed as speech, this many quiet frames in a row (40 ms)
/// drop it: the loud frames of a burst must come close together.
const MAX_BURST_GAP: u32 = 2;

/// Settings of a [`Vad`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Speech has ended after this much non-speech, in ms (rounded up to whole frames).
    pub end_silence_ms: u32,
    /// A burst with less loud audio than this, in ms, is not speech (rounded up to frames).
    pub min_speech_ms: u32,
    /// Nothing quieter than this (frame RMS, dBFS) is speech, whatever the background.
    pub floor_dbfs: f32,
    /// How far above the background (dB) a frame must be to count as speech.
    pub margin_db: f32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            end_silence_ms: 800,
            min_speech_ms: 120,
            floor_dbfs: -40.0,
            margin_db: 6.0,
        }
    }
}

/// What a [`Vad`] reports; frames are counted from 0, the first frame pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech was confirmed (after `min_speech_ms` of it); `at_frame` is where it began.
    SpeechStarted {
        /// The first loud frame of the burst that became speech.
        at_frame: u64,
    },
    /// Speech ended `end_silence_ms` ago (or the stream stopped, see [`Vad::finish`]).
    SpeechEnded {
        /// The first frame after the last frame of speech.
        at_frame: u64,
        /// Frames from the start of speech to `at_frame`, pauses included.
        speech_frames: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Quiet,
    /// A burst of loud frames that may become speech.
    Burst {
        start: u64,
        loud: u32,
        gap: u32,
    },
    Speech {
        start: u64,
        /// Quiet frames in a row since the last speech frame.
        quiet: u32,
    },
}

/// Voice activity detector: see the module documentation.
#[derive(Debug, Clone)]
pub struct Vad {
    cfg: VadConfig,
    rate: ClockRate,
    end_frames: u32,
    min_frames: u32,
    floor: f64,
    margin: f64,
    /// Mean-square energy of recent frames that were not dead (see [`DEAD_FRAME_BELOW_FLOOR`]).
    noise: [f64; NOISE_WINDOW],
    noise_len: usize,
    noise_next: usize,
    /// Energy of the last frame that was not dead, and dead frames since.
    last_live: Option<f64>,
    dead_run: u32,
    frames: u64,
    state: State,
    /// High-pass filter coefficient and state (last input, last output).
    high_pass: HighPass,
}

impl Vad {
    /// A detector with `cfg` for audio at `rate`.
    pub fn new(rate: ClockRate, cfg: VadConfig) -> Self {
        let floor = (32768.0f64 * 32768.0) * 10f64.powf(f64::from(cfg.floor_dbfs) / 10.0);
        Self {
            cfg,
            end_frames: frames_for(cfg.end_silence_ms).max(1),
            min_frames: frames_for(cfg.min_speech_ms).max(1),
            floor,
            margin: 10f64.powf(f64::from(cfg.margin_db) / 10.0),
            noise: [0.0; NOISE_WINDOW],
            noise_len: 0,
            noise_next: 0,
            last_live: None,
            dead_run: 0,
            frames: 0,
            state: State::Quiet,
            high_pass: HighPass::new(
                1.0 / (1.0 + std::f32::consts::TAU * HIGH_PASS_HZ / rate.hz().max(1) as f32),
            ),
            rate,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> VadConfig {
        self.cfg
    }

    /// Frames pushed so far (the driver's clock for its own timeouts).
    pub fn frames_seen(&self) -> u64 {
        self.frames
    }

    /// Whether the caller is speaking (confirmed speech that has not ended).
    pub fn is_speaking(&self) -> bool {
        matches!(self.state, State::Speech { .. })
    }

    /// The background level the threshold follows, in dBFS (frame RMS); `None` before any
    /// frame with sound in it.
    pub fn noise_dbfs(&self) -> Option<f32> {
        self.noise_floor()
            .map(|ms| (10.0 * (ms.max(1e-9) / (32768.0f64 * 32768.0)).log10()) as f32)
    }

    /// Feeds the next 20 ms frame; at most one event per frame.
    pub fn push(&mut self, frame: &[i16]) -> Option<VadEvent> {
        let index = self.frames;
        self.frames += 1;
        let (energy, raw) = self.energies(frame);
        let heard = if raw * DEAD_FRAME_BELOW_FLOOR >= self.floor {
            self.dead_run = 0;
            self.last_live = Some(energy);
            Some(energy)
        } else {
            self.dead_run = self.dead_run.saturating_add(1);
            if self.dead_run <= MAX_LOST_FRAMES {
                self.last_live
            } else {
                Some(0.0)
            }
        };
        if let Some(level) = heard {
            self.noise[self.noise_next] = level;
            self.noise_next = (self.noise_next + 1) % NOISE_WINDOW;
            self.noise_len = (self.noise_len + 1).min(NOISE_WINDOW);
        }
        // The frame itself is in the window, so a steady sound is never above its own floor.
        let background = self.noise_floor().unwrap_or(0.0) * self.margin;
        let start_threshold = background.max(self.floor);
        match self.state {
            State::Quiet => {
                if energy > start_threshold {
                    self.state = State::Burst {
                        start: index,
                        loud: 1,
                        gap: 0,
                    };
                    return self.confirm();
                }
                None
            }
            State::Burst { start, loud, gap } => {
                if energy > start_threshold {
                    self.state = State::Burst {
                        start,
                        loud: loud + 1,
                        gap: 0,
                    };
                    self.confirm()
                } else {
                    self.state = if gap + 1 > MAX_BURST_GAP {
                        State::Quiet
                    } else {
                        State::Burst {
                            start,
                            loud,
                            gap: gap + 1,
                        }
                    };
                    None
                }
            }
            State::Speech { start, quiet } => {
                if energy > start_threshold * HOLD_RATIO {
                    self.state = State::Speech { start, quiet: 0 };
                    return None;
                }
                let quiet = quiet + 1;
                if quiet >= self.end_frames {
                    self.state = State::Quiet;
                    let at_frame = index + 1 - u64::from(quiet);
                    return Some(VadEvent::SpeechEnded {
                        at_frame,
                        speech_frames: at_frame - start,
                    });
                }
                self.state = State::Speech { start, quiet };
                None
            }
        }
    }

    /// The stream stopped (hang-up, end of listening): ends speech in progress, reporting the
    /// speech up to its last loud frame; `None` if the caller was not speaking.
    pub fn finish(&mut self) -> Option<VadEvent> {
        let State::Speech { start, quiet } = self.state else {
            self.state = State::Quiet;
            return None;
        };
        self.state = State::Quiet;
        let at_frame = self.frames - u64::from(quiet);
        Some(VadEvent::SpeechEnded {
            at_frame,
            speech_frames: at_frame - start,
        })
    }

    /// Forgets speech in progress and the background, as if newly built.
    pub fn reset(&mut self) {
        *self = Self::new(self.rate, self.cfg);
    }

    fn confirm(&mut self) -> Option<VadEvent> {
        match self.state {
            State::Burst { start, loud, .. } if loud >= self.min_frames => {
                self.state = State::Speech { start, quiet: 0 };
                Some(VadEvent::SpeechStarted { at_frame: start })
            }
            _ => None,
        }
    }

    /// Mean-squares of `frame` through the high-pass filter (which carries on across frames)
    /// and as it came.
    fn energies(&mut self, frame: &[i16]) -> (f64, f64) {
        if frame.is_empty() {
            return (0.0, 0.0);
        }
        let (filtered, raw) = self.high_pass.run(frame);
        let n = frame.len() as f64;
        (f64::from(filtered) / n, f64::from(raw) / n)
    }

    fn noise_floor(&self) -> Option<f64> {
        self.noise[..self.noise_len]
            .iter()
            .copied()
            .reduce(f64::min)
    }
}

/// Whole frames covering `ms` (rounded up).
pub(crate) fn frames_for(ms: u32) -> u32 {
    ms.div_ceil(FRAME_MS)
}

/// First-order high-pass filter `y[n] = a·(y[n−1] + x[n] − x[n−1])`, run four samples at a
/// time: unrolled, `y[n] = a⁴·y[n−4] + u[n]` with `u` from the last four input differences, so
/// the four phases are independent chains a quarter as long as the one recursion (the sums of
/// squares likewise), and the loop runs in SIMD lanes.
#[derive(Debug, Clone, Copy)]
struct HighPass {
    /// a, a², a³, a⁴.
    powers: [f32; 4],
    /// The last four inputs and outputs, oldest first.
    x: [f32; 4],
    y: [f32; 4],
}

impl HighPass {
    fn new(a: f32) -> Self {
        Self {
            powers: [a, a * a, a * a * a, a * a * a * a],
            x: [0.0; 4],
            y: [0.0; 4],
        }
    }

    /// Filters `frame`: (Σ y², Σ x²).
    fn run(&mut self, frame: &[i16]) -> (f32, f32) {
        let [a1, a2, a3, a4] = self.powers;
        let (mut sum_y, mut sum_x) = ([0.0f32; 4], [0.0f32; 4]);
        let chunks = frame.chunks_exact(4);
        let rest = chunks.remainder();
        for c in chunks {
            let x = [c[0], c[1], c[2], c[3]].map(f32::from);
            let w = [
                self.x[0], self.x[1], self.x[2], self.x[3], x[0], x[1], x[2], x[3],
            ];
            for j in 0..4 {
                let d = |k: usize| w[k] - w[k - 1];
                let u = a1 * d(4 + j) + a2 * d(3 + j) + a3 * d(2 + j) + a4 * d(1 + j);
                self.y[j] = a4 * self.y[j] + u;
                sum_y[j] += self.y[j] * self.y[j];
                sum_x[j] += x[j] * x[j];
            }
            self.x = x;
        }
        let (mut tail_y, mut tail_x) = (0.0f32, 0.0f32);
        for &s in rest {
            let s = f32::from(s);
            let y = a1 * (self.y[3] + s - self.x[3]);
            self.x = [self.x[1], self.x[2], self.x[3], s];
            self.y = [self.y[1], self.y[2], self.y[3], y];
            tail_y += y * y;
            tail_x += s * s;
        }
        (
            sum_y.iter().sum::<f32>() + tail_y,
            sum_x.iter().sum::<f32>() + tail_x,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The four-phase filter gives what the plain recursion gives, across frames of any length.
    #[test]
    fn high_pass_matches_the_plain_recursion() {
        let a = 0.864f32;
        let mut fast = HighPass::new(a);
        let (mut last_in, mut last_out) = (0.0f64, 0.0f64);
        let mut seed = 0x2545_f491_u64;
        for len in [160usize, 163, 1, 2, 320, 7, 160] {
            let frame: Vec<i16> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % 20_000) as i16 - 10_000
                })
                .collect();
            let (mut want_y, mut want_x) = (0.0f64, 0.0f64);
            for &x in &frame {
                let x = f64::from(x);
                last_out = f64::from(a) * (last_out + x - last_in);
                last_in = x;
                want_y += last_out * last_out;
                want_x += x * x;
            }
            let (got_y, got_x) = fast.run(&frame);
            assert!(
                (f64::from(got_y) / want_y - 1.0).abs() < 1e-4,
                "{len}: {got_y} {want_y}"
            );
            assert!((f64::from(got_x) / want_x - 1.0).abs() < 1e-4, "{len}");
        }
    }
}
