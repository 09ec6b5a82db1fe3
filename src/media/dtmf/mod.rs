//! DTMF: the shared [`Digit`] type and in-band detection on linear PCM (ITU-T Q.23/Q.24).
//!
//! # How [`InbandDetector`] decides
//!
//! Audio is cut into blocks of 102 samples at 8 kHz (12.75 ms; scaled with the sample rate),
//! independent of how the caller frames it. Each block gets:
//!
//! 1. an energy gate: if even a perfectly concentrated block could not reach the level
//!    threshold, the Goertzel filters are skipped (silence and quiet background cost one
//!    sum of squares);
//! 2. Goertzel power at the eight DTMF frequencies, then per block a *hit* for digit d when
//!    - every other tone of the same group is [`DetectorConfig::relative_peak_db`] weaker
//!      than the strongest row and column tone,
//!    - the two tones carry at least [`DetectorConfig::min_tone_fraction`] of the block's
//!      energy (this rejects speech, music, noise and tones with strong harmonics),
//!    - each tone, measured free of the other's leakage (module `pair`), is at least
//!      [`DetectorConfig::min_level_dbm0`],
//!    - twist is within limits (Q.24, Bellcore GR-506): the low group may exceed the high
//!      group by [`DetectorConfig::normal_twist_db`] (normal twist: lines lose more at high
//!      frequencies), the high group may exceed the low group by
//!      [`DetectorConfig::reverse_twist_db`]; both are accepted to the limit, and rejection
//!      starts within 1 dB beyond it,
//!    - each tone is within [`FREQ_TOLERANCE`] of its nominal frequency: Q.24 asks that
//!      ±1.5 % be accepted and ±3.5 % rejected; the deviation is measured from the tone's
//!      phase advance between the block's two halves.
//!
//! Two consecutive hits for the same digit with levels within 2 dB of each other make a
//! candidate (the level test stops a partly covered block from pairing with a full one).
//! The digit **begins** (`Began` is reported) when the next block still carries the tone,
//! or, if the tone stops right there, when the samples it covered add up to at least 23 ms
//! (counted from each block's share of energy in the two tones). Hence:
//! - tones of 305 samples (38.1 ms) or more always contain two full blocks: always accepted;
//! - tones shorter than 23 ms are rejected;
//! - in between (e.g. 30 ms) the outcome depends on alignment. Q.24 leaves 23–40 ms open.
//!
//! A digit **ends** at the first block where one of its tones has fallen 20 dB below its
//! level so far while the block's energy fell by 8 dB, or after two consecutive blocks that
//! are not hits within 6 dB of that level; here a block need not pass the frequency test,
//! since packet loss concealment repeats a pitch period and breaks the tones' phase. Any 20 ms pause either contains a whole silent
//! block or splits into two blocks that each hold at most 43 tone samples (−7.5 dB), so a
//! 20 ms gap separates two presses of the same key (with noise at least ~8 dB below the
//! tone), while a 5 ms dropout (even with a phase jump) does not split a digit; dropouts
//! of 8–10 ms can, at some alignments.
//!
//! Start and end positions are refined to within a few samples from the partial blocks'
//! levels, so `start_sample` and `duration_ms` describe the tone, not the block grid.
//!
//! Levels are in dBm0 per tone on the scale of [`crate::media::level`] (0 dBm0 = a sine of
//! peak 22 827 on the 16-bit scale, which is exact for A-law; µ-law's 0 dBm0 is 0.065 dB
//! lower, well inside the margin between the default threshold and Q.24's −36 dBm0).

pub mod digit;
pub mod goertzel;
pub mod info;
pub mod merge;
mod pair;
pub mod rfc4733;
pub mod send;

pub use digit::{Digit, InvalidDigit, COL_FREQS, ROW_FREQS};
pub use info::{format_dtmf_relay, parse_info, InfoDigit, InfoError};
pub use merge::{DtmfEvent, DtmfMerger, DtmfMethod, KeyPress, MergeConfig, SampleClock};
pub use rfc4733::{EventReceiver, ReceiverStats};
pub use send::{
    EventPacket, EventSender, InbandConfig, InbandSender, SenderConfig, SenderConfigError,
};

use crate::media::level::dbm0_to_peak;
use crate::rtp::types::ClockRate;
use goertzel::{FilterState, GoertzelBank};
use pair::PairAnalyser;
use std::sync::Arc;

/// Block length at 8 kHz; 102 gives 78 Hz bins, enough to separate 697 from 770 Hz.
const BLOCK_AT_8K: usize = 102;
/// Smallest supported sample rate, the one [`BLOCK_AT_8K`] is counted at.
const MIN_RATE: u32 = ClockRate::HZ_8000.hz();
/// Largest supported sample rate.
const MAX_RATE: u32 = ClockRate::HZ_48000.hz();
/// Two consecutive blocks pair up to begin a digit only if their powers agree within this
/// ratio (2 dB).
const CONFIRM_RATIO: f32 = 1.584_893;
/// More than this power ratio (6 dB) below its running level, a digit's tone counts as gone.
const PRESENT_RATIO: f32 = 3.981_072;
/// More than this power ratio (20 dB) below its running level, a tone has certainly stopped...
const ABSENT_RATIO: f32 = 100.0;
/// ...provided the block's energy fell by this ratio (8 dB) as well.
const ABSENT_ENERGY_RATIO: f32 = 6.309_573;
/// Shortest tone reported, in ms; Q.24 asks for rejection below 23 ms.
const MIN_TONE_MS: u32 = 23;
/// Twist up to the configured limits must be accepted; the measurement is good to about
/// ±0.3 dB (G.711 and what is left of the leakage), so the test allows this much more.
const TWIST_MARGIN_DB: f32 = 1.0;
/// Largest accepted frequency deviation of either tone: midway between Q.24's ±1.5 % (must
/// accept) and ±3.5 % (must reject), so measurement error has room on both sides.
pub const FREQ_TOLERANCE: f32 = 0.025;

/// Which legs run the in-band detector (`[dtmf] inband`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InbandDetection {
    /// Every leg: a key heard in the audio counts even from a phone that also agreed
    /// RFC 4733 events (some send both, some send tones whatever they agreed).
    #[default]
    Always,
    /// Only legs whose peer did not agree RFC 4733 telephone-events, as Asterisk's
    /// `dtmf_mode = auto` does: legs that send keys as events skip the detector's work on
    /// every frame. A room then hears, rather than drops, key tones such a phone puts in its
    /// audio.
    Auto,
}

/// Thresholds for [`InbandDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Minimum level of each of the two tones, in dBm0 (see [`crate::media::level`]).
    pub min_level_dbm0: f32,
    /// Normal twist: how much quieter the high-group tone may be than the low-group tone, dB.
    pub normal_twist_db: f32,
    /// Reverse twist: how much louder the high-group tone may be than the low-group tone, dB.
    pub reverse_twist_db: f32,
    /// How far the second-strongest tone of each group must stay below the strongest, in dB.
    pub relative_peak_db: f32,
    /// Fraction of the block's energy the two tones must carry (0–1).
    pub min_tone_fraction: f32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            // 4 dB below Q.24's −36 dBm0 per tone, so a weakest-allowed key that lost a little
            // more on the way still counts; speech and music are kept out by the tests of
            // shape (energy share, other tones, frequency, duration), not by level.
            min_level_dbm0: -40.0,
            normal_twist_db: 8.0,
            reverse_twist_db: 4.0,
            relative_peak_db: 8.0,
            min_tone_fraction: 0.7,
        }
    }
}

/// Whether a [`DigitEvent`] marks the start or the end of a tone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigitPhase {
    /// The tone has been confirmed; `duration_ms` is how long it had lasted by then.
    Began,
    /// The tone has stopped; `duration_ms` is its total length.
    Ended,
}

/// A detected digit: one `Began` and, later, one `Ended` event per key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DigitEvent {
    /// The digit.
    pub digit: Digit,
    /// Position of the tone's first sample, counted from the detector's creation or reset.
    pub start_sample: u64,
    /// Tone duration in milliseconds (so far for `Began`, total for `Ended`).
    pub duration_ms: u32,
    /// Start or end.
    pub phase: DigitPhase,
}

/// The detector was configured with values it cannot work with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DetectorError {
    /// The sample rate is outside 8–48 kHz.
    #[error("unsupported sample rate {0} Hz (8000–48000)")]
    UnsupportedRate(u32),
    /// A threshold is not a finite value in its range.
    #[error("invalid detector threshold: {0}")]
    InvalidThreshold(&'static str),
}

/// Goertzel results of one block.
#[derive(Debug, Clone, Copy)]
struct Block {
    start: u64,
    /// Sum of squares of the block's samples.
    energy: f32,
    /// Row powers then column powers, as the filters measured them.
    power: [f32; 8],
    /// A digit's tones pass every test: such blocks can start a digit.
    hit: Option<Digit>,
    /// A digit's tones pass every test but the frequency one: enough to continue a digit
    /// already confirmed, so that packet loss concealment, which repeats the last pitch
    /// period and so jumps in phase, does not split a key press in two.
    held: Option<Digit>,
    /// For `held`, the powers of its two tones freed of each other's leakage.
    tones: (f32, f32),
}

impl Block {
    const EMPTY: Block = Block {
        start: 0,
        energy: 0.0,
        power: [0.0; 8],
        hit: None,
        held: None,
        tones: (0.0, 0.0),
    };

    /// Powers of the row and column tone of `d`: without leakage if the block is a hit for
    /// `d`, so that levels compared across blocks do not swing with the tones' phases.
    fn pair(&self, d: Digit) -> (f32, f32) {
        if self.held == Some(d) {
            self.tones
        } else {
            self.raw_pair(d)
        }
    }

    /// Powers of the row and column tone of `d` as the filters measured them.
    fn raw_pair(&self, d: Digit) -> (f32, f32) {
        let (r, c) = d.row_col();
        (self.power[r], self.power[4 + c])
    }
}

/// What [`InbandDetector::classify`] found in a block.
#[derive(Debug, Clone, Copy)]
struct Found {
    digit: Digit,
    /// Powers of the two tones freed of each other's leakage.
    tones: (f32, f32),
    /// Both tones are within [`FREQ_TOLERANCE`] of their frequencies.
    in_tolerance: bool,
}

/// A tone being followed, from the first consistent pair of blocks to its end.
#[derive(Debug, Clone, Copy)]
struct Track {
    digit: Digit,
    start: u64,
    /// Running (maximum) power of the row and column tones.
    level: (f32, f32),
    /// Running (maximum) energy of blocks in which the tone was present.
    energy: f32,
    /// End of the last block in which the tone was present at full level.
    present_until: u64,
    /// Samples of tone seen up to `present_until`, for tones that stop right after the pair.
    coverage: f32,
    misses: u8,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Idle,
    /// Two consistent hits; waiting for a third block to tell a real key press from a blip.
    Pending(Track),
    /// `Began` has been reported.
    Active(Track),
}

/// Streaming in-band DTMF detector; see the module documentation for the algorithm.
#[derive(Debug, Clone)]
pub struct InbandDetector {
    rate: ClockRate,
    block_len: usize,
    /// One block at the detector's rate.
    buf: Box<[f32]>,
    fill: usize,
    /// Samples consumed so far.
    position: u64,
    bank: GoertzelBank<8>,
    /// Shared by every detector at the same rate: its tables take ~20,000 sines to build.
    pair: Arc<PairAnalyser>,
    /// Minimum tone power (|X|²).
    min_power: f32,
    /// Blocks with less energy than this cannot contain a hit.
    gate_energy: f32,
    normal_twist: f32,
    reverse_twist: f32,
    relative_peak: f32,
    /// `min_tone_fraction` × n / 2, to compare tone power with block energy directly.
    fraction_scale: f32,
    /// Shortest tone accepted, in samples.
    min_tone: f32,
    /// The last two blocks, newest last.
    history: [Block; 2],
    state: State,
    /// Audio is going by unanalysed (see [`InbandDetector::pass`]).
    passing: bool,
}

fn db_to_power_ratio(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

impl InbandDetector {
    /// A detector for mono PCM at `rate` with the default thresholds.
    pub fn new(rate: ClockRate) -> Result<Self, DetectorError> {
        Self::with_config(rate, DetectorConfig::default())
    }

    /// A detector with explicit thresholds.
    pub fn with_config(rate: ClockRate, cfg: DetectorConfig) -> Result<Self, DetectorError> {
        let sample_rate = rate.hz();
        if !(MIN_RATE..=MAX_RATE).contains(&sample_rate) {
            return Err(DetectorError::UnsupportedRate(sample_rate));
        }
        let finite_nonneg = |v: f32| v.is_finite() && v >= 0.0;
        if !cfg.min_level_dbm0.is_finite() {
            return Err(DetectorError::InvalidThreshold("min_level_dbm0"));
        }
        if !finite_nonneg(cfg.normal_twist_db) || !finite_nonneg(cfg.reverse_twist_db) {
            return Err(DetectorError::InvalidThreshold("twist"));
        }
        if !finite_nonneg(cfg.relative_peak_db) {
            return Err(DetectorError::InvalidThreshold("relative_peak_db"));
        }
        if !(finite_nonneg(cfg.min_tone_fraction) && cfg.min_tone_fraction <= 1.0) {
            return Err(DetectorError::InvalidThreshold("min_tone_fraction"));
        }
        let block_len = ((BLOCK_AT_8K as u64 * u64::from(sample_rate) + u64::from(MIN_RATE / 2))
            / u64::from(MIN_RATE)) as usize;
        let n = block_len as f32;
        let amp = dbm0_to_peak(cfg.min_level_dbm0);
        let min_power = (amp * n / 2.0).powi(2);
        let mut freqs = [0.0f32; 8];
        freqs[..4].copy_from_slice(&ROW_FREQS);
        freqs[4..].copy_from_slice(&COL_FREQS);
        Ok(Self {
            rate,
            block_len,
            buf: vec![0.0; block_len].into_boxed_slice(),
            fill: 0,
            position: 0,
            bank: GoertzelBank::new(&freqs, sample_rate),
            pair: PairAnalyser::shared(&freqs, sample_rate, block_len),
            min_power,
            // Cauchy–Schwarz: |X(f)|² ≤ n·Σx², so a block below this has no tone above min_power.
            gate_energy: min_power / n,
            normal_twist: db_to_power_ratio(cfg.normal_twist_db + TWIST_MARGIN_DB),
            reverse_twist: db_to_power_ratio(cfg.reverse_twist_db + TWIST_MARGIN_DB),
            relative_peak: db_to_power_ratio(cfg.relative_peak_db),
            fraction_scale: cfg.min_tone_fraction * n / 2.0,
            min_tone: (MIN_TONE_MS * sample_rate / 1000) as f32,
            history: [Block::EMPTY; 2],
            state: State::Idle,
            passing: false,
        })
    }

    /// The sample rate this detector was built for.
    pub fn sample_rate(&self) -> ClockRate {
        self.rate
    }

    /// Samples consumed since creation or [`reset`](Self::reset).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Forgets all state, as if newly created.
    pub fn reset(&mut self) {
        self.fill = 0;
        self.position = 0;
        self.history = [Block::EMPTY; 2];
        self.state = State::Idle;
        self.passing = false;
    }

    /// Feeds PCM of any length; calls `on_event` for each digit start and end found.
    pub fn push(&mut self, pcm: &[i16], mut on_event: impl FnMut(DigitEvent)) {
        if self.passing {
            self.resume();
        }
        let mut rest = pcm;
        while !rest.is_empty() {
            let take = (self.block_len - self.fill).min(rest.len());
            for (d, &s) in self.buf[self.fill..self.fill + take].iter_mut().zip(rest) {
                *d = f32::from(s);
            }
            self.fill += take;
            self.position += take as u64;
            rest = &rest[take..];
            if self.fill == self.block_len {
                self.fill = 0;
                self.process_block(&mut on_event);
            }
        }
    }

    /// Lets `n` samples go by unanalysed, for a leg that does not listen for key tones now:
    /// a digit in progress ends here (reported as by [`finish`](Self::finish)), and
    /// positions and the block grid keep counting, so that digits heard later are placed in
    /// time correctly.
    pub fn pass(&mut self, n: usize, on_event: impl FnMut(DigitEvent)) {
        if !self.passing {
            if !matches!(self.state, State::Idle) {
                self.finish(on_event);
            }
            self.history = [Block::EMPTY; 2];
            self.passing = true;
        }
        self.position += n as u64;
    }

    /// Back from [`pass`](Self::pass): the block grid stays where it was, the passed part
    /// of the current block counting as silence, so audio after a silent pause is analysed
    /// exactly as if it had been.
    fn resume(&mut self) {
        self.passing = false;
        self.fill = (self.position % self.block_len as u64) as usize;
        self.buf[..self.fill].fill(0.0);
    }

    /// Whether the latest audio looks like a key tone: a digit being confirmed or in
    /// progress, or the newest block alone already a hit. Earlier than `Began` by one or two
    /// blocks, so a conference can keep key tones out of its mix from their first block; a
    /// false alarm on speech costs a member at most a block or two of being heard.
    pub fn tone_suspected(&self) -> bool {
        !matches!(self.state, State::Idle) || self.history[1].hit.is_some()
    }

    /// Ends a digit still in progress, e.g. when the stream stops, reporting it as `Ended`.
    pub fn finish(&mut self, mut on_event: impl FnMut(DigitEvent)) {
        match self.state {
            State::Idle => {}
            State::Pending(t) => {
                if t.coverage >= self.min_tone {
                    let end = t.start + t.coverage as u64;
                    on_event(self.event(t.digit, t.start, end, DigitPhase::Began));
                    on_event(self.event(t.digit, t.start, end, DigitPhase::Ended));
                }
            }
            State::Active(t) => {
                on_event(self.event(t.digit, t.start, t.present_until, DigitPhase::Ended));
            }
        }
        self.state = State::Idle;
        self.history = [Block::EMPTY; 2];
    }

    fn event(&self, digit: Digit, start: u64, end: u64, phase: DigitPhase) -> DigitEvent {
        let ms = end.saturating_sub(start) * 1000 / u64::from(self.rate.hz());
        DigitEvent {
            digit,
            start_sample: start,
            duration_ms: u32::try_from(ms).unwrap_or(u32::MAX),
            phase,
        }
    }

    fn analyse(&self, start: u64) -> Block {
        let block = &self.buf[..self.block_len];
        let energy = sum_of_squares(block);
        if energy < self.gate_energy {
            return Block {
                start,
                energy,
                power: [0.0; 8],
                hit: None,
                held: None,
                tones: (0.0, 0.0),
            };
        }
        let (mid, end) = self.bank.states_split(block, self.pair.mid());
        let power = std::array::from_fn(|k| self.bank.power_of(k, end[k]));
        let found = self.classify(&power, energy, &mid, &end);
        Block {
            start,
            energy,
            power,
            hit: found.filter(|f| f.in_tolerance).map(|f| f.digit),
            held: found.map(|f| f.digit),
            tones: found.map_or((0.0, 0.0), |f| f.tones),
        }
    }

    fn classify(
        &self,
        power: &[f32; 8],
        energy: f32,
        mid: &[FilterState; 8],
        end: &[FilterState; 8],
    ) -> Option<Found> {
        let (row, rp) = strongest(&power[..4]);
        let (col, cp) = strongest(&power[4..]);
        // A tone's raw power reads low by up to 2.2 dB of leakage plus the filter's loss for
        // a tone off its frequency (3.9 dB at 2.5 % off 1633 Hz); skip the finer analysis
        // for blocks that cannot pass even so.
        if rp * 4.1 < self.min_power || cp * 4.1 < self.min_power {
            return None;
        }
        // Tone power (A·n/2)² relates to the tone's energy A²·n/2 by a factor n/2.
        if rp + cp < energy * self.fraction_scale {
            return None;
        }
        let m = self.pair.analyse(mid, end, row, col);
        let clean = self.pair.powers_without_cross_leakage(end, &m, row, col);
        let others_low = |group: &[f32], best: usize| {
            let best_power = group[best];
            group
                .iter()
                .enumerate()
                .all(|(i, &p)| i == best || p * self.relative_peak <= best_power)
        };
        if !others_low(&clean[..4], row) || !others_low(&clean[4..], col) {
            return None;
        }
        let (rl, cl) = (m.row_level, m.col_level);
        if rl < self.min_power || cl < self.min_power {
            return None;
        }
        if rl > cl * self.normal_twist || cl > rl * self.reverse_twist {
            return None;
        }
        let in_tolerance =
            m.row_deviation.abs() <= FREQ_TOLERANCE && m.col_deviation.abs() <= FREQ_TOLERANCE;
        Digit::from_row_col(row, col).map(|digit| Found {
            digit,
            tones: (m.row_power, m.col_power),
            in_tolerance,
        })
    }

    fn process_block(&mut self, on_event: &mut impl FnMut(DigitEvent)) {
        let n = self.block_len as f32;
        let start = self.position - self.block_len as u64;
        let end = self.position;
        let cur = self.analyse(start);
        let [older, prev] = self.history;
        self.history = [prev, cur];
        let mut track = match self.state {
            State::Idle => {
                if let Some(t) = self.pair(older, prev, cur) {
                    self.state = State::Pending(t);
                }
                return;
            }
            State::Pending(t) | State::Active(t) => t,
        };
        let (cr, cc) = cur.pair(track.digit);
        let present = cur.held == Some(track.digit)
            && within_below(cr, track.level.0, PRESENT_RATIO)
            && within_below(cc, track.level.1, PRESENT_RATIO);
        if present {
            track.misses = 0;
            track.present_until = end;
            track.level = (track.level.0.max(cr), track.level.1.max(cc));
            track.energy = track.energy.max(cur.energy);
            if let State::Pending(_) = self.state {
                on_event(self.event(track.digit, track.start, end, DigitPhase::Began));
            }
            self.state = State::Active(track);
            return;
        }
        track.misses += 1;
        match self.state {
            State::Pending(_) => {
                // The tone stopped right after the pair: keep it only if long enough.
                let length = track.coverage + fraction_present(&cur, &track) * n;
                if length >= self.min_tone {
                    let end = track.start + length.round() as u64;
                    on_event(self.event(track.digit, track.start, end, DigitPhase::Began));
                    on_event(self.event(track.digit, track.start, end, DigitPhase::Ended));
                }
                self.state = State::Idle;
            }
            _ => {
                // Both conditions: a dropout with a phase jump can cancel the tones in one
                // block, but it leaves the block's energy up.
                let vanished = (!within_below(cr, track.level.0, ABSENT_RATIO)
                    || !within_below(cc, track.level.1, ABSENT_RATIO))
                    && !within_below(cur.energy, track.energy, ABSENT_ENERGY_RATIO);
                if vanished || track.misses >= 2 {
                    // The first block after the tone may still hold its last samples.
                    let first_miss = if track.misses >= 2 { &prev } else { &cur };
                    let tail = fraction_present(first_miss, &track) * n;
                    let end = track.present_until + tail.round() as u64;
                    on_event(self.event(track.digit, track.start, end, DigitPhase::Ended));
                    self.state = State::Idle;
                } else {
                    self.state = State::Active(track);
                }
            }
        }
    }

    /// Starts tracking a digit if `prev` and `cur` are hits for it at consistent levels.
    fn pair(&self, older: Block, prev: Block, cur: Block) -> Option<Track> {
        let d = cur.hit.filter(|&d| prev.hit == Some(d))?;
        let (pr, pc) = prev.pair(d);
        let (cr, cc) = cur.pair(d);
        if !(within_ratio(pr, cr, CONFIRM_RATIO) && within_ratio(pc, cc, CONFIRM_RATIO)) {
            return None;
        }
        let n = self.block_len as f32;
        let mut track = Track {
            digit: d,
            start: prev.start,
            level: (pr.max(cr), pc.max(cc)),
            energy: prev.energy.max(cur.energy),
            present_until: cur.start + self.block_len as u64,
            coverage: 0.0,
            misses: 0,
        };
        // The block before the pair may hold the tone's first samples.
        let lead = if older.start + self.block_len as u64 == prev.start {
            (fraction_present(&older, &track) * n).round()
        } else {
            0.0
        };
        // Or the pair's first block may be only partly filled.
        let late = ((1.0 - fraction_present(&prev, &track)) * n).round();
        track.start = (prev.start + late as u64).saturating_sub(lead as u64);
        // A pair of partly filled blocks can agree in level, so count the samples the
        // tones actually cover: their share of each block's energy, 1 for a clean tone.
        let share = |b: &Block| {
            let (r, c) = b.raw_pair(d);
            (2.0 * (r + c) / (n * b.energy)).min(1.0)
        };
        track.coverage = lead + (share(&prev) + share(&cur)) * n;
        Some(track)
    }
}

/// Σx², with eight partial sums so the loop is not one long chain of dependent adds.
fn sum_of_squares(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Index and value of the largest element.
fn strongest(powers: &[f32]) -> (usize, f32) {
    let mut best = (0, powers[0]);
    for (i, &p) in powers.iter().enumerate().skip(1) {
        if p > best.1 {
            best = (i, p);
        }
    }
    best
}

/// `a` and `b` are within power ratio `r` of each other.
fn within_ratio(a: f32, b: f32, r: f32) -> bool {
    a <= b * r && b <= a * r
}

/// `p` is no more than power ratio `r` below `reference`.
fn within_below(p: f32, reference: f32, r: f32) -> bool {
    p * r >= reference
}

/// Fraction of `block` covered by the tracked tone.
///
/// Two estimates that err in opposite situations: relative tone power overstates short
/// pieces of tone (their wide spectrum leaks into the other bin), relative energy overstates
/// blocks with other sound in them. The smaller one is kept.
fn fraction_present(block: &Block, track: &Track) -> f32 {
    let (r, c) = block.pair(track.digit);
    let by_power = (r / track.level.0).min(c / track.level.1).sqrt();
    let by_energy = block.energy / track.energy;
    let f = by_power.min(by_energy);
    if f.is_finite() {
        f.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests;
