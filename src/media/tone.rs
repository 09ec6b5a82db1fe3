//! Call-progress and signalling tones: multi-frequency bursts with a cadence.
//!
//! A [`ToneSpec`] describes the tone, a [`ToneGenerator`] renders it frame by frame into
//! caller buffers without allocating. Oscillators are phase-continuous across frames and
//! start each burst at phase 0 (so bursts begin without a click); a burst that follows
//! another with the same frequencies and no pause continues the phase instead.
//!
//! Levels are per frequency component in dBm0 ([`crate::media::level`]: 0 dBm0 is a sine
//! of peak 32767 × 10^(−3.14/20)). Components are summed and saturated to 16 bits.
//!
//! # Tone spec syntax
//!
//! ```text
//! spec    = cadence [ "*" count ] [ "@" level ]
//! cadence = segment *( ";" segment )
//! segment = freqs "/" on_ms [ "/" off_ms ]
//! freqs   = freq *( "+" freq )        ; Hz, at most 4; "0" alone is silence
//! count   = integer ≥ 1 | "inf"       ; times the whole cadence plays
//! level   = decimal dBm0 per frequency (default −13)
//! ```
//!
//! Without `*count` a cadence with any pause repeats forever and one without plays once.
//! Whitespace is ignored. Examples:
//!
//! | spec | meaning |
//! |---|---|
//! | `1000/400` | 400 ms beep at 1 kHz, once |
//! | `440+480/2000/4000@-19` | US ringback: 2 s on, 4 s off, forever |
//! | `400+450/400/200;400+450/400/2000@-19` | UK ringback (double ring) |
//! | `480+620/500/500*10@-24` | US busy, ten cycles |
//! | `350+440/1000*inf` | continuous US dial tone |
//! | `0/3000` | three seconds of silence |

use std::fmt;
use std::str::FromStr;

use crate::media::dtmf::Digit;
use crate::media::level::dbm0_to_peak;
use crate::rtp::types::ClockRate;

/// Most frequencies one segment can mix.
pub const MAX_FREQS: usize = 4;
/// Most segments one cadence can hold.
pub const MAX_SEGMENTS: usize = 8;
/// Level used when a spec names none, in dBm0 per frequency.
pub const DEFAULT_LEVEL_DBM0: f32 = -13.0;

/// Why a tone spec was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToneSpecError {
    /// The spec has no segments.
    #[error("empty tone spec")]
    Empty,
    /// A number could not be parsed.
    #[error("invalid number {0:?} in tone spec")]
    InvalidNumber(String),
    /// A segment lacks its on duration.
    #[error("tone segment {0:?} needs freqs/on_ms[/off_ms]")]
    InvalidSegment(String),
    /// More than [`MAX_FREQS`] frequencies in one segment.
    #[error("at most {MAX_FREQS} frequencies per segment")]
    TooManyFrequencies,
    /// More than [`MAX_SEGMENTS`] segments.
    #[error("at most {MAX_SEGMENTS} segments per tone")]
    TooManySegments,
    /// The whole cadence lasts 0 ms, or a frequency is negative or not finite.
    #[error("tone cadence has zero length")]
    ZeroLength,
    /// A frequency cannot be produced at the sample rate.
    #[error("frequency {freq} Hz is not below half the sample rate ({rate} Hz)")]
    FrequencyOutOfRange {
        /// The offending frequency in Hz.
        freq: f32,
        /// The sample rate in Hz.
        rate: u32,
    },
    /// The level is not finite or above full scale.
    #[error("invalid tone level {0} dBm0")]
    InvalidLevel(f32),
    /// The repeat count is 0.
    #[error("repeat count must be at least 1")]
    InvalidRepeat,
}

/// One burst of a cadence: frequencies on for `on_ms`, then silence for `off_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    freqs: [f32; MAX_FREQS],
    n_freqs: u8,
    on_ms: u32,
    off_ms: u32,
}

impl Segment {
    /// A segment; an empty `freqs` (or only zeros) makes the on part silent.
    pub fn new(freqs: &[f32], on_ms: u32, off_ms: u32) -> Result<Self, ToneSpecError> {
        let mut f = [0.0; MAX_FREQS];
        let mut n = 0;
        for &freq in freqs {
            if !(freq.is_finite() && freq >= 0.0) {
                return Err(ToneSpecError::InvalidNumber(freq.to_string()));
            }
            if freq == 0.0 {
                continue;
            }
            if n == MAX_FREQS {
                return Err(ToneSpecError::TooManyFrequencies);
            }
            f[n] = freq;
            n += 1;
        }
        Ok(Self {
            freqs: f,
            n_freqs: n as u8,
            on_ms,
            off_ms,
        })
    }

    /// Frequencies of the on part, in Hz (empty for silence).
    pub fn freqs(&self) -> &[f32] {
        &self.freqs[..usize::from(self.n_freqs)]
    }

    /// Duration of the on part in ms.
    pub fn on_ms(&self) -> u32 {
        self.on_ms
    }

    /// Duration of the pause after it in ms.
    pub fn off_ms(&self) -> u32 {
        self.off_ms
    }
}

/// How many times a cadence plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// A fixed number of times (at least 1).
    Times(u32),
    /// Until the caller stops.
    Forever,
}

/// A complete tone: cadence, repetition and level. Fixed-size, so `Copy` and allocation-free.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneSpec {
    segments: [Segment; MAX_SEGMENTS],
    n_segments: u8,
    repeat: Repeat,
    level_dbm0: f32,
}

impl ToneSpec {
    /// A tone from segments played in order, `repeat` times, at `level_dbm0` per frequency.
    pub fn new(
        segments: &[Segment],
        repeat: Repeat,
        level_dbm0: f32,
    ) -> Result<Self, ToneSpecError> {
        if segments.is_empty() {
            return Err(ToneSpecError::Empty);
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(ToneSpecError::TooManySegments);
        }
        if segments
            .iter()
            .all(|s| u64::from(s.on_ms) + u64::from(s.off_ms) == 0)
        {
            return Err(ToneSpecError::ZeroLength);
        }
        if repeat == Repeat::Times(0) {
            return Err(ToneSpecError::InvalidRepeat);
        }
        if !level_dbm0.is_finite() || level_dbm0 > crate::media::level::FULL_SCALE_DBM0 {
            return Err(ToneSpecError::InvalidLevel(level_dbm0));
        }
        let mut all = [segments[0]; MAX_SEGMENTS];
        all[..segments.len()].copy_from_slice(segments);
        Ok(Self {
            segments: all,
            n_segments: segments.len() as u8,
            repeat,
            level_dbm0,
        })
    }

    /// A single segment played once or forever.
    fn simple(freqs: &[f32], on_ms: u32, off_ms: u32, repeat: Repeat, level_dbm0: f32) -> Self {
        let seg = Segment {
            freqs: {
                let mut f = [0.0; MAX_FREQS];
                f[..freqs.len()].copy_from_slice(freqs);
                f
            },
            n_freqs: freqs.len() as u8,
            on_ms,
            off_ms,
        };
        Self {
            segments: [seg; MAX_SEGMENTS],
            n_segments: 1,
            repeat,
            level_dbm0,
        }
    }

    /// 400 ms of 1 kHz at −10 dBm0, once (e.g. before recording).
    pub fn beep() -> Self {
        Self::simple(&[1000.0], 400, 0, Repeat::Times(1), -10.0)
    }

    /// North American ringback: 440+480 Hz, 2 s on, 4 s off, −19 dBm0.
    pub fn ringback_us() -> Self {
        Self::simple(&[440.0, 480.0], 2000, 4000, Repeat::Forever, -19.0)
    }

    /// UK ringback: 400+450 Hz, 0.4 on 0.2 off 0.4 on 2 s off, −19 dBm0.
    pub fn ringback_uk() -> Self {
        let mut s = Self::simple(&[400.0, 450.0], 400, 200, Repeat::Forever, -19.0);
        s.segments[1].off_ms = 2000;
        s.n_segments = 2;
        s
    }

    /// European (ETSI) ringback: 425 Hz, 1 s on, 4 s off, −13 dBm0.
    pub fn ringback_eu() -> Self {
        Self::simple(&[425.0], 1000, 4000, Repeat::Forever, -13.0)
    }

    /// North American busy: 480+620 Hz, 0.5 s on, 0.5 s off, −24 dBm0.
    pub fn busy_us() -> Self {
        Self::simple(&[480.0, 620.0], 500, 500, Repeat::Forever, -24.0)
    }

    /// European (ETSI) busy: 425 Hz, 0.5 s on, 0.5 s off, −13 dBm0.
    pub fn busy_eu() -> Self {
        Self::simple(&[425.0], 500, 500, Repeat::Forever, -13.0)
    }

    /// One in-band DTMF digit: its two tones for `on_ms`, then `off_ms` of silence, at −10 dBm0.
    pub fn dtmf(digit: Digit, on_ms: u32, off_ms: u32) -> Self {
        let (low, high) = digit.frequencies();
        Self::simple(&[low, high], on_ms, off_ms, Repeat::Times(1), -10.0)
    }

    /// Silence for `ms` milliseconds.
    pub fn silence(ms: u32) -> Self {
        Self::simple(&[], ms, 0, Repeat::Times(1), DEFAULT_LEVEL_DBM0)
    }

    /// Returns the same tone at another level (dBm0 per frequency).
    pub fn with_level(mut self, level_dbm0: f32) -> Result<Self, ToneSpecError> {
        if !level_dbm0.is_finite() || level_dbm0 > crate::media::level::FULL_SCALE_DBM0 {
            return Err(ToneSpecError::InvalidLevel(level_dbm0));
        }
        self.level_dbm0 = level_dbm0;
        Ok(self)
    }

    /// The cadence segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..usize::from(self.n_segments)]
    }

    /// How often the cadence plays.
    pub fn repeat(&self) -> Repeat {
        self.repeat
    }

    /// Level per frequency in dBm0.
    pub fn level_dbm0(&self) -> f32 {
        self.level_dbm0
    }

    /// Total length in ms, or `None` if it repeats forever.
    pub fn duration_ms(&self) -> Option<u64> {
        let cycle: u64 = self
            .segments()
            .iter()
            .map(|s| u64::from(s.on_ms) + u64::from(s.off_ms))
            .sum();
        match self.repeat {
            Repeat::Times(n) => Some(cycle * u64::from(n)),
            Repeat::Forever => None,
        }
    }
}

fn parse_num<T: FromStr>(s: &str) -> Result<T, ToneSpecError> {
    s.parse()
        .map_err(|_| ToneSpecError::InvalidNumber(s.to_string()))
}

impl FromStr for ToneSpec {
    type Err = ToneSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let (rest, level) = match compact.split_once('@') {
            Some((r, l)) => (r, parse_num::<f32>(l)?),
            None => (compact.as_str(), DEFAULT_LEVEL_DBM0),
        };
        let (cadence, repeat) = match rest.split_once('*') {
            Some((c, "inf")) => (c, Some(Repeat::Forever)),
            Some((c, n)) => (c, Some(Repeat::Times(parse_num(n)?))),
            None => (rest, None),
        };
        if cadence.is_empty() {
            return Err(ToneSpecError::Empty);
        }
        let mut segs = [Segment::new(&[], 0, 0)?; MAX_SEGMENTS];
        let mut n = 0;
        for part in cadence.split(';') {
            if n == MAX_SEGMENTS {
                return Err(ToneSpecError::TooManySegments);
            }
            let mut fields = part.split('/');
            let (freqs, on, off) =
                match (fields.next(), fields.next(), fields.next(), fields.next()) {
                    (Some(f), Some(on), off, None) if !f.is_empty() => (f, on, off),
                    _ => return Err(ToneSpecError::InvalidSegment(part.to_string())),
                };
            let mut fs = [0.0f32; MAX_FREQS + 1];
            let mut nf = 0;
            for f in freqs.split('+') {
                if nf > MAX_FREQS {
                    return Err(ToneSpecError::TooManyFrequencies);
                }
                fs[nf] = parse_num(f)?;
                nf += 1;
            }
            let off = match off {
                Some(o) => parse_num(o)?,
                None => 0,
            };
            segs[n] = Segment::new(&fs[..nf], parse_num(on)?, off)?;
            n += 1;
        }
        let segs = &segs[..n];
        let repeat = repeat.unwrap_or(if segs.iter().any(|s| s.off_ms > 0) {
            Repeat::Forever
        } else {
            Repeat::Times(1)
        });
        ToneSpec::new(segs, repeat, level)
    }
}

impl fmt::Display for ToneSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.segments().iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            if s.freqs().is_empty() {
                f.write_str("0")?;
            }
            for (j, freq) in s.freqs().iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                write!(f, "{freq}")?;
            }
            write!(f, "/{}/{}", s.on_ms, s.off_ms)?;
        }
        match self.repeat {
            Repeat::Forever => f.write_str("*inf")?,
            Repeat::Times(n) => write!(f, "*{n}")?,
        }
        write!(f, "@{}", self.level_dbm0)
    }
}

/// A sine oscillator kept as a rotating unit phasor; `im` is the output.
#[derive(Debug, Clone, Copy, Default)]
struct Osc {
    re: f64,
    im: f64,
    step_re: f64,
    step_im: f64,
}

impl Osc {
    fn start(freq: f32, rate: u32) -> Self {
        let w = 2.0 * std::f64::consts::PI * f64::from(freq) / f64::from(rate);
        Self {
            re: 1.0,
            im: 0.0,
            step_re: w.cos(),
            step_im: w.sin(),
        }
    }

    /// Pulls the phasor back to unit length; rounding would otherwise let it drift.
    fn renormalise(&mut self) {
        let k = 1.5 - 0.5 * (self.re * self.re + self.im * self.im);
        self.re *= k;
        self.im *= k;
    }
}

/// Renders a [`ToneSpec`] into PCM frames.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    spec: ToneSpec,
    rate: u32,
    amplitude: f64,
    /// Current segment index.
    seg: usize,
    /// Sample position within the current segment.
    pos: u64,
    seg_on: u64,
    seg_len: u64,
    cycles: u32,
    finished: bool,
    osc: [Osc; MAX_FREQS],
}

fn ms_to_samples(ms: u32, rate: u32) -> u64 {
    u64::from(ms) * u64::from(rate) / 1000
}

impl ToneGenerator {
    /// A generator for `spec` at `rate`.
    pub fn new(spec: &ToneSpec, rate: ClockRate) -> Result<Self, ToneSpecError> {
        let sample_rate = rate.hz();
        for s in spec.segments() {
            for &freq in s.freqs() {
                if f64::from(freq) * 2.0 >= f64::from(sample_rate) {
                    return Err(ToneSpecError::FrequencyOutOfRange {
                        freq,
                        rate: sample_rate,
                    });
                }
            }
        }
        let total: u64 = spec
            .segments()
            .iter()
            .map(|s| ms_to_samples(s.on_ms, sample_rate) + ms_to_samples(s.off_ms, sample_rate))
            .sum();
        if total == 0 {
            return Err(ToneSpecError::ZeroLength);
        }
        let mut g = Self {
            spec: *spec,
            rate: sample_rate,
            amplitude: f64::from(dbm0_to_peak(spec.level_dbm0)),
            seg: 0,
            pos: 0,
            seg_on: 0,
            seg_len: 0,
            cycles: 0,
            finished: false,
            osc: [Osc::default(); MAX_FREQS],
        };
        g.restart();
        Ok(g)
    }

    /// Starts again from the beginning of the cadence.
    pub fn restart(&mut self) {
        self.cycles = 0;
        self.finished = false;
        self.enter_segment(0, true);
    }

    /// The rate it renders at.
    pub fn rate(&self) -> ClockRate {
        ClockRate::new(self.rate).unwrap_or(crate::media::frame::NARROW_RATE)
    }

    /// The tone being played.
    pub fn spec(&self) -> &ToneSpec {
        &self.spec
    }

    /// True once a finite tone has played completely.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn enter_segment(&mut self, index: usize, fresh: bool) {
        let seg = self.spec.segments()[index];
        let prev = self.spec.segments()[self.seg];
        // A burst that directly continues the same frequencies keeps its phase.
        let continues = !fresh && prev.off_ms == 0 && prev.freqs() == seg.freqs();
        if !continues {
            for (o, &f) in self.osc.iter_mut().zip(seg.freqs()) {
                *o = Osc::start(f, self.rate);
            }
        }
        self.seg = index;
        self.pos = 0;
        self.seg_on = ms_to_samples(seg.on_ms, self.rate);
        self.seg_len = self.seg_on + ms_to_samples(seg.off_ms, self.rate);
    }

    fn advance_segment(&mut self) {
        let next = self.seg + 1;
        if next < self.spec.segments().len() {
            self.enter_segment(next, false);
            return;
        }
        self.cycles = self.cycles.saturating_add(1);
        if let Repeat::Times(n) = self.spec.repeat {
            if self.cycles >= n {
                self.finished = true;
                return;
            }
        }
        self.enter_segment(0, false);
    }

    /// Writes the next samples into `out` and returns how many were written.
    ///
    /// Fewer than `out.len()` means the tone has finished; the rest of `out` is left as is.
    pub fn fill(&mut self, out: &mut [i16]) -> usize {
        let mut written = 0;
        while written < out.len() && !self.finished {
            if self.pos >= self.seg_len {
                self.advance_segment();
                continue;
            }
            let room = (out.len() - written) as u64;
            if self.pos < self.seg_on {
                let n = room.min(self.seg_on - self.pos) as usize;
                self.render(&mut out[written..written + n]);
                written += n;
                self.pos += n as u64;
            } else {
                let n = room.min(self.seg_len - self.pos) as usize;
                out[written..written + n].fill(0);
                written += n;
                self.pos += n as u64;
            }
        }
        written
    }

    fn render(&mut self, out: &mut [i16]) {
        let nf = self.spec.segments()[self.seg].freqs().len();
        let oscs = &mut self.osc[..nf];
        let amp = self.amplitude;
        for o in out.iter_mut() {
            let mut v = 0.0;
            for osc in oscs.iter_mut() {
                v += osc.im;
                let re = osc.re * osc.step_re - osc.im * osc.step_im;
                osc.im = osc.re * osc.step_im + osc.im * osc.step_re;
                osc.re = re;
            }
            *o = (v * amp).round().clamp(-32768.0, 32767.0) as i16;
        }
        for osc in oscs {
            osc.renormalise();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dtmf::{goertzel::GoertzelBank, DigitPhase, InbandDetector};
    use crate::media::level::peak_to_dbm0;

    fn render(spec: &ToneSpec, rate: u32, samples: usize, frame: usize) -> Vec<i16> {
        let mut g = ToneGenerator::new(spec, ClockRate::new(rate).unwrap()).unwrap();
        let mut out = vec![0i16; samples];
        let mut at = 0;
        while at < samples {
            let end = (at + frame).min(samples);
            let n = g.fill(&mut out[at..end]);
            at += n;
            if n < end - (at - n) {
                break;
            }
        }
        out.truncate(at);
        out
    }

    /// Frequency from interpolated positive-going zero crossings.
    fn measure_freq(x: &[i16], rate: u32) -> f64 {
        let mut first = None;
        let mut last = 0.0;
        let mut count = 0;
        for i in 1..x.len() {
            let (a, b) = (f64::from(x[i - 1]), f64::from(x[i]));
            if a < 0.0 && b >= 0.0 {
                let t = (i - 1) as f64 + a / (a - b);
                if first.is_none() {
                    first = Some(t);
                } else {
                    count += 1;
                }
                last = t;
            }
        }
        let first = first.unwrap();
        f64::from(rate) * f64::from(count) / (last - first)
    }

    /// Level in dBm0 of the component at `f`, measured by Goertzel over `x`.
    fn component_dbm0(x: &[i16], f: f32, rate: u32) -> f32 {
        let xf: Vec<f32> = x.iter().map(|&s| f32::from(s)).collect();
        let p = GoertzelBank::new(&[f], rate).power(&xf)[0];
        let amp = 2.0 * p.sqrt() / xf.len() as f32;
        peak_to_dbm0(amp)
    }

    #[test]
    fn parses_the_documented_examples() {
        let us: ToneSpec = "440+480/2000/4000@-19".parse().unwrap();
        assert_eq!(us, ToneSpec::ringback_us());
        let uk: ToneSpec = "400+450/400/200; 400+450/400/2000 @ -19".parse().unwrap();
        assert_eq!(uk, ToneSpec::ringback_uk());
        let beep: ToneSpec = "1000/400@-10".parse().unwrap();
        assert_eq!(beep, ToneSpec::beep());
        assert_eq!(beep.duration_ms(), Some(400));
        let busy: ToneSpec = "480+620/500/500*10@-24".parse().unwrap();
        assert_eq!(busy.repeat(), Repeat::Times(10));
        assert_eq!(busy.duration_ms(), Some(10_000));
        let dial: ToneSpec = "350+440/1000*inf".parse().unwrap();
        assert_eq!(dial.repeat(), Repeat::Forever);
        assert_eq!(dial.level_dbm0(), DEFAULT_LEVEL_DBM0);
        let quiet: ToneSpec = "0/3000".parse().unwrap();
        assert_eq!(quiet, ToneSpec::silence(3000));
        assert_eq!(quiet.segments()[0].freqs(), &[] as &[f32]);
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            ToneSpec::ringback_uk(),
            ToneSpec::busy_us(),
            ToneSpec::silence(20),
            ToneSpec::dtmf(Digit::from_char('#').unwrap(), 80, 80),
            "425/1000/4000*3@-12.5".parse().unwrap(),
        ] {
            let again: ToneSpec = spec.to_string().parse().unwrap();
            assert_eq!(again, spec, "{spec}");
        }
    }

    #[test]
    fn rejects_bad_specs() {
        use ToneSpecError::*;
        let err = |s: &str| s.parse::<ToneSpec>().unwrap_err();
        assert_eq!(err(""), Empty);
        assert_eq!(err("@-10"), Empty);
        assert_eq!(err("abc/100"), InvalidNumber("abc".into()));
        assert_eq!(err("440"), InvalidSegment("440".into()));
        assert_eq!(
            err("440/100/100/100"),
            InvalidSegment("440/100/100/100".into())
        );
        assert_eq!(err("/100"), InvalidSegment("/100".into()));
        assert_eq!(err("440/x"), InvalidNumber("x".into()));
        assert_eq!(err("1+2+3+4+5/100"), TooManyFrequencies);
        assert_eq!(err("440/0/0"), ZeroLength);
        assert_eq!(err("440/100*0"), InvalidRepeat);
        assert_eq!(err("440/100@loud"), InvalidNumber("loud".into()));
        assert_eq!(err("440/100@6"), InvalidLevel(6.0));
        assert_eq!(err("-440/100"), InvalidNumber("-440".into()));
        assert_eq!(err(&["1/1"; 9].join(";")), TooManySegments);
        let high: ToneSpec = "5000/100".parse().unwrap();
        assert_eq!(
            ToneGenerator::new(&high, ClockRate::HZ_8000).unwrap_err(),
            FrequencyOutOfRange {
                freq: 5000.0,
                rate: 8000
            }
        );
        assert!(ToneGenerator::new(&high, ClockRate::HZ_16000).is_ok());
    }

    #[test]
    fn frequency_is_accurate() {
        for (f, rate) in [
            (1000.0, 8000),
            (425.0, 8000),
            (3000.0, 8000),
            (425.0, 48_000),
        ] {
            let spec: ToneSpec = format!("{f}/1000").parse().unwrap();
            let x = render(&spec, rate, rate as usize, 160);
            let got = measure_freq(&x, rate);
            // Linear interpolation of crossings is biased near Nyquist, hence 0.1 Hz.
            assert!((got - f).abs() < 0.1, "{f} Hz at {rate}: {got}");
        }
    }

    #[test]
    fn level_is_accurate() {
        for level in [-3.0, -10.0, -19.0, -30.0] {
            let spec = ToneSpec::beep().with_level(level).unwrap();
            let x = render(&spec, 8000, 3200, 160);
            let rms =
                (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
            let got = peak_to_dbm0((rms * 2f64.sqrt()) as f32);
            assert!((got - level).abs() < 0.5, "{level} dBm0: measured {got}");
            assert!((got - level).abs() < 0.05, "{level} dBm0: measured {got}");
        }
        // Each component of a dual tone carries the level on its own.
        let x = render(&ToneSpec::ringback_us(), 8000, 16_000, 160);
        for f in [440.0, 480.0] {
            let got = component_dbm0(&x, f, 8000);
            assert!((got + 19.0).abs() < 0.5, "{f} Hz: {got} dBm0");
        }
        assert!(component_dbm0(&x, 460.0, 8000) < -45.0);
    }

    #[test]
    fn cadence_timing_is_exact() {
        // US ringback at 8 kHz: 16 000 samples on, 32 000 off.
        let x = render(&ToneSpec::ringback_us(), 8000, 100_000, 160);
        assert_eq!(x.len(), 100_000);
        let on = |range: std::ops::Range<usize>| x[range].iter().any(|&s| s != 0);
        assert_eq!(x[0], 0, "bursts start at phase 0");
        assert!(on(0..3) && on(15_997..16_000), "burst covers 0..16000");
        assert!(!on(16_000..48_000), "pause covers 16000..48000");
        assert!(on(48_000..48_003) && on(63_997..64_000) && !on(64_000..96_000));
        assert!(on(96_000..96_003));

        // UK double ring, with an odd frame size so boundaries fall inside frames.
        let x = render(&ToneSpec::ringback_uk(), 8000, 48_000, 97);
        let on = |range: std::ops::Range<usize>| x[range].iter().any(|&s| s != 0);
        assert!(on(3197..3200) && !on(3200..4800) && on(4800..4803));
        assert!(on(7997..8000) && !on(8000..24_000) && on(24_000..24_003));

        // Finite repeat: three 100 ms beeps with 100 ms gaps, then nothing more.
        let spec: ToneSpec = "1000/100/100*3".parse().unwrap();
        let mut g = ToneGenerator::new(&spec, ClockRate::HZ_8000).unwrap();
        let mut buf = vec![0i16; 10_000];
        assert_eq!(g.fill(&mut buf), 4800);
        assert!(g.is_finished());
        assert_eq!(g.fill(&mut buf), 0);
        let bursts = (0..4800 / 800)
            .filter(|&i| buf[i * 800..i * 800 + 800].iter().any(|&s| s != 0))
            .count();
        assert_eq!(bursts, 3);
        g.restart();
        assert!(!g.is_finished());
        assert_eq!(g.fill(&mut buf[..160]), 160);
    }

    #[test]
    fn phase_is_continuous_across_frames() {
        let spec: ToneSpec = "1000+1336/5000".parse().unwrap();
        let whole = render(&spec, 8000, 40_000, 40_000);
        let amp = f64::from(dbm0_to_peak(DEFAULT_LEVEL_DBM0));
        for (n, &s) in whole.iter().enumerate() {
            let t = n as f64 / 8000.0;
            let ideal = amp
                * ((2.0 * std::f64::consts::PI * 1000.0 * t).sin()
                    + (2.0 * std::f64::consts::PI * 1336.0 * t).sin());
            assert!(
                (f64::from(s) - ideal).abs() <= 1.0,
                "sample {n}: {s} vs {ideal}"
            );
        }
        let mut rng = fastrand::Rng::with_seed(3);
        let mut g = ToneGenerator::new(&spec, ClockRate::HZ_8000).unwrap();
        let mut framed = vec![0i16; 40_000];
        let mut at = 0;
        while at < framed.len() {
            let n = rng.usize(1..400).min(framed.len() - at);
            assert_eq!(g.fill(&mut framed[at..at + n]), n);
            at += n;
        }
        for (n, (&a, &b)) in whole.iter().zip(&framed).enumerate() {
            assert!(
                (i32::from(a) - i32::from(b)).abs() <= 1,
                "sample {n}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn continuous_tone_keeps_phase_across_repeats() {
        // 13 ms is not a whole number of 700 Hz periods, so a phase reset would show.
        let spec: ToneSpec = "700/13*inf".parse().unwrap();
        let x = render(&spec, 8000, 8000, 160);
        // A 700 Hz sine at 8 kHz moves at most 2·sin(π·700/8000) ≈ 0.543 of its peak per sample.
        let amp = f64::from(dbm0_to_peak(DEFAULT_LEVEL_DBM0));
        let max_step = x
            .windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap();
        assert!(f64::from(max_step) <= amp * 0.544 + 2.0, "{max_step}");
        assert!((measure_freq(&x, 8000) - 700.0).abs() < 0.05);
    }

    #[test]
    fn dtmf_preset_is_detected() {
        let mut det = InbandDetector::new(ClockRate::HZ_8000).unwrap();
        let mut got = String::new();
        let mut frame = [0i16; 160];
        for c in "147*2580#369ABCD".chars() {
            let d = Digit::from_char(c).unwrap();
            let mut g = ToneGenerator::new(&ToneSpec::dtmf(d, 60, 60), ClockRate::HZ_8000).unwrap();
            while !g.is_finished() {
                let n = g.fill(&mut frame);
                det.push(&frame[..n], |e| {
                    if e.phase == DigitPhase::Began {
                        got.push(e.digit.as_char())
                    }
                });
            }
        }
        assert_eq!(got, "147*2580#369ABCD");
    }
}
