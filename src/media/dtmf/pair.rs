//! Level and frequency of the two tones of a DTMF candidate, freed of each other's leakage.
//!
//! A 102-sample block leaks up to −21 dB of one group's tone into the other group's filter,
//! which at 8 dB of twist moves the weaker tone's measured level by ±2 dB depending on the
//! tones' relative phase — too much to hold the twist limits to within a decibel. Both tones
//! are known once the strongest row and column are picked, and so is how much each leaks into
//! the other's filter (a property of the block length and the two frequencies), so the two
//! complex filter outputs are solved for the two tones' own outputs.
//!
//! The same correction on each half of the block gives the tones' phase at the two halves;
//! its advance over the half-block length, against the nominal frequency's, is the tone's
//! frequency deviation (unambiguous up to ±78 Hz at 8 kHz).

use super::goertzel::FilterState;
use std::sync::{Arc, Mutex};

/// Analysers built so far, by rate and block length. Detectors are made per call, and
/// building the tables costs about 20,000 sines (~0.1 ms), so each rate's are made once.
type Key = ([f32; 8], u32, usize);
static SHARED: Mutex<Vec<(Key, Arc<PairAnalyser>)>> = Mutex::new(Vec::new());
/// Rates kept in [`SHARED`]; past this many, more are built per detector, uncached.
const SHARED_MAX: usize = 16;

/// A complex number, just what this file needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Cx {
    re: f32,
    im: f32,
}

impl Cx {
    fn new(re: f32, im: f32) -> Self {
        Self { re, im }
    }

    fn from_angle(w: f64) -> Self {
        Self::new(w.cos() as f32, w.sin() as f32)
    }

    fn mul(self, o: Cx) -> Cx {
        Cx::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }

    fn conj(self) -> Cx {
        Cx::new(self.re, -self.im)
    }

    fn sub(self, o: Cx) -> Cx {
        Cx::new(self.re - o.re, self.im - o.im)
    }

    fn scale(self, k: f32) -> Cx {
        Cx::new(self.re * k, self.im * k)
    }

    fn norm_sqr(self) -> f32 {
        self.re * self.re + self.im * self.im
    }

    fn arg(self) -> f32 {
        self.im.atan2(self.re)
    }
}

/// Per filter: what turns its states into a DFT value referenced to a part's first sample.
#[derive(Debug, Clone, Copy)]
struct Filter {
    /// Angular frequency, rad/sample.
    w: f32,
    /// e^{−jω}.
    step: Cx,
    /// e^{−jω(M−1)} and e^{−jω(N−1)}: from the states after M or N samples to X(ω).
    at_mid: Cx,
    at_end: Cx,
}

/// Cross-leakage of a unit tone at one frequency into a filter at another, over the first
/// half, the second half and the whole block, relative to a tone's own response; phases
/// are referenced to the block's first sample throughout.
#[derive(Debug, Clone, Copy)]
struct Leak {
    first: Cx,
    second: Cx,
    whole: Cx,
}

/// What [`PairAnalyser::analyse`] found for one row/column pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct PairMeasure {
    /// Each tone's power in its filter as if it were alone; same scale as
    /// [`super::goertzel::GoertzelBank::power`].
    pub row_power: f32,
    pub col_power: f32,
    /// The same with the filter's loss for the tone's frequency deviation made good: the
    /// tone's level. Only meaningful for a block the tones fill.
    pub row_level: f32,
    pub col_level: f32,
    /// Frequency deviation of each tone, as a fraction of its nominal frequency.
    pub row_deviation: f32,
    pub col_deviation: f32,
    /// The tones' complex DFT values over the whole block, freed of each other's leakage.
    row_dft: Cx,
    col_dft: Cx,
}

/// Precomputed constants for one block length and sample rate.
#[derive(Debug, Clone)]
pub(super) struct PairAnalyser {
    n: usize,
    mid: usize,
    filters: [Filter; 8],
    /// Indexed by row, then column.
    leak: [[Leak; 4]; 4],
    /// Over the whole block, tone `a` into filter `b`, indexed `[a][b]`.
    leak_whole: [[Cx; 8]; 8],
}

/// Σ_{k<len} e^{jΔω·k}, divided by `len`.
fn leak_over(len: usize, dw: f64) -> Cx {
    let (mut re, mut im) = (0.0f64, 0.0f64);
    for k in 0..len {
        re += (dw * k as f64).cos();
        im += (dw * k as f64).sin();
    }
    Cx::new((re / len as f64) as f32, (im / len as f64) as f32)
}

/// Undoes the mutual leakage of two filters' outputs: `x_r = y_r + ℓ·y_c`,
/// `x_c = ℓ*·y_r + y_c`, with ℓ the column tone's leakage into the row filter.
fn unmix(x_r: Cx, x_c: Cx, l: Cx) -> (Cx, Cx) {
    let det = 1.0 / (1.0 - l.norm_sqr());
    (
        x_r.sub(l.mul(x_c)).scale(det),
        x_c.sub(l.conj().mul(x_r)).scale(det),
    )
}

impl PairAnalyser {
    /// The analyser [`new`](Self::new) makes for these arguments, built once and shared.
    pub fn shared(freqs: &[f32; 8], rate: u32, n: usize) -> Arc<Self> {
        let key = (*freqs, rate, n);
        let mut cache = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, a)) = cache.iter().find(|(k, _)| *k == key) {
            return Arc::clone(a);
        }
        let made = Arc::new(Self::new(freqs, rate, n));
        if cache.len() < SHARED_MAX {
            cache.push((key, Arc::clone(&made)));
        }
        made
    }

    /// Constants for blocks of `n` samples at `rate` Hz, filters at `freqs` (rows then columns).
    pub fn new(freqs: &[f32; 8], rate: u32, n: usize) -> Self {
        let mid = n / 2;
        let omega = |f: f32| 2.0 * std::f64::consts::PI * f64::from(f) / f64::from(rate);
        let filters = std::array::from_fn(|k| {
            let w = omega(freqs[k]);
            Filter {
                w: w as f32,
                step: Cx::from_angle(-w),
                at_mid: Cx::from_angle(-w * (mid as f64 - 1.0)),
                at_end: Cx::from_angle(-w * (n as f64 - 1.0)),
            }
        });
        let leak = std::array::from_fn(|r| {
            std::array::from_fn(|c| {
                let dw = omega(freqs[4 + c]) - omega(freqs[r]);
                Leak {
                    first: leak_over(mid, dw),
                    second: Cx::from_angle(dw * mid as f64).mul(leak_over(n - mid, dw)),
                    whole: leak_over(n, dw),
                }
            })
        });
        let leak_whole = std::array::from_fn(|a| {
            std::array::from_fn(|b| leak_over(n, omega(freqs[a]) - omega(freqs[b])))
        });
        Self {
            n,
            mid,
            filters,
            leak,
            leak_whole,
        }
    }

    /// Samples in the first half of a block; the split point for
    /// [`super::goertzel::GoertzelBank::states_split`].
    pub fn mid(&self) -> usize {
        self.mid
    }

    fn dft(&self, k: usize, (s1, s2): FilterState, rot: Cx) -> Cx {
        let f = &self.filters[k];
        rot.mul(Cx::new(s1, 0.0).sub(f.step.scale(s2)))
    }

    /// Levels and deviations of row tone `r` and column tone `c` from the bank's states
    /// after the first half and after the whole block.
    pub fn analyse(
        &self,
        mid: &[FilterState; 8],
        end: &[FilterState; 8],
        r: usize,
        c: usize,
    ) -> PairMeasure {
        let (fr, fc) = (&self.filters[r], &self.filters[4 + c]);
        let leak = &self.leak[r][c];
        let whole = |k, rot| self.dft(k, end[k], rot);
        let first = |k, rot| self.dft(k, mid[k], rot);
        let (xr, xc) = (whole(r, fr.at_end), whole(4 + c, fc.at_end));
        let (ar, ac) = (first(r, fr.at_mid), first(4 + c, fc.at_mid));
        let (br, bc) = (xr.sub(ar), xc.sub(ac));
        let (yr, yc) = unmix(xr, xc, leak.whole);
        let (ar, ac) = unmix(ar, ac, leak.first);
        let (br, bc) = unmix(br, bc, leak.second);
        // Both halves are referenced to the block's first sample, so a tone on the filter's
        // frequency has the same phase in each; a tone δω off advances by δω·M.
        let dev = |a: Cx, b: Cx, f: &Filter| b.mul(a.conj()).arg() / self.mid as f32 / f.w;
        let (dr, dc) = (dev(ar, br, fr), dev(ac, bc, fc));
        let (row_power, col_power) = (yr.norm_sqr(), yc.norm_sqr());
        PairMeasure {
            row_power,
            col_power,
            row_level: row_power / self.loss(dr * fr.w),
            col_level: col_power / self.loss(dc * fc.w),
            row_deviation: dr,
            col_deviation: dc,
            row_dft: yr,
            col_dft: yc,
        }
    }

    /// Powers of all eight filters with the leakage of the other group's tone of `m`
    /// removed, so that a group's other filters can be compared with its strongest one even
    /// when that tone is 8 dB below the other group's.
    pub fn powers_without_cross_leakage(
        &self,
        end: &[FilterState; 8],
        m: &PairMeasure,
        r: usize,
        c: usize,
    ) -> [f32; 8] {
        std::array::from_fn(|k| {
            let x = self.dft(k, end[k], self.filters[k].at_end);
            let (tone, y) = if k < 4 {
                (4 + c, m.col_dft)
            } else {
                (r, m.row_dft)
            };
            x.sub(self.leak_whole[tone][k].mul(y)).norm_sqr()
        })
    }

    /// Power response of an `n`-sample DFT to a tone `dw` rad/sample off its frequency,
    /// floored so that a poor estimate cannot inflate a level by more than 6 dB.
    fn loss(&self, dw: f32) -> f32 {
        let n = self.n as f32;
        let half = dw / 2.0;
        let g = if half.abs() < 1e-6 {
            1.0
        } else {
            ((n * half).sin() / (n * half.sin())).abs()
        };
        g.max(0.5).powi(2)
    }
}

#[cfg(test)]
mod tests {
    use super::super::goertzel::GoertzelBank;
    use super::*;

    const FREQS: [f32; 8] = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0];

    /// Row `r` and column `c` tones, `dev` off their nominal frequencies.
    fn measure(r: usize, c: usize, dev: (f64, f64), ar: f64, ac: f64, phase: f64) -> PairMeasure {
        let fr = f64::from(FREQS[r]) * (1.0 + dev.0);
        let fc = f64::from(FREQS[4 + c]) * (1.0 + dev.1);
        let n = 102;
        let x: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f64 / 8000.0;
                (ar * (2.0 * std::f64::consts::PI * fr * t + phase).sin()
                    + ac * (2.0 * std::f64::consts::PI * fc * t).sin()) as f32
            })
            .collect();
        let bank = GoertzelBank::new(&FREQS, 8000);
        let pa = PairAnalyser::new(&FREQS, 8000, n);
        let (mid, end) = bank.states_split(&x, pa.mid());
        pa.analyse(&mid, &end, r, c)
    }

    fn db(p: f32, amp: f64) -> f64 {
        10.0 * (f64::from(p) / (amp * 51.0).powi(2)).log10()
    }

    #[test]
    fn leakage_is_removed_from_both_levels() {
        // 941 and 1209 Hz are the closest row/column pair: raw filters read the weaker tone
        // up to ±2 dB off at 8 dB twist, depending on the tones' relative phase.
        for step in 0..16 {
            let phase = f64::from(step) * std::f64::consts::PI / 8.0;
            let m = measure(3, 0, (0.0, 0.0), 1000.0, 398.0, phase);
            assert!(db(m.row_power, 1000.0).abs() < 0.3, "{m:?}");
            assert!(db(m.col_power, 398.0).abs() < 0.3, "{m:?}");
            assert!(m.row_deviation.abs() < 0.002 && m.col_deviation.abs() < 0.002);
        }
    }

    #[test]
    fn deviation_is_measured_and_its_filter_loss_made_good() {
        for dev in [-0.035, -0.015, 0.015, 0.035] {
            let m = measure(0, 3, (0.0, dev), 1000.0, 1000.0, 0.5);
            assert!(
                (f64::from(m.col_deviation) - dev).abs() < 0.002,
                "{dev}: {m:?}"
            );
            // Only within tolerance does the level matter (and the model of the leakage
            // into the row filter, which assumes nominal frequencies, hold closely).
            if dev.abs() < 0.02 {
                assert!(db(m.col_level, 1000.0).abs() < 0.3, "{dev}: {m:?}");
                assert!(m.row_deviation.abs() < 0.002, "{dev}: {m:?}");
            }
        }
    }
}
