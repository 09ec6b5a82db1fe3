//! Talker detection for the mixer: an energy (or RFC 6464 level) gate with hysteresis, an
//! attack time and a hang-over, evaluated once per 20 ms frame.
//!
//! Levels are in dBov as RFC 6464 and ITU-T G.100.1 define them: the RMS of the frame relative
//! to a full-scale square wave, so a full-scale sine reads about −3 dBov and digital silence
//! reads as low as the scale goes. A silent member starts talking once `attack` worth of
//! consecutive frames reach `start_dbov`; a talking member keeps talking until more than
//! `hangover` worth of consecutive frames fall below `stop_dbov`. Having `stop_dbov` below
//! `start_dbov` is the hysteresis: a level wandering around one threshold does not flap.
//!
//! The per-frame work is integer only: thresholds are turned into sums of squares (and RFC
//! 6464 level bounds) once, when the configuration is validated.

use std::time::Duration;

use crate::media::frame::{FRAME, FRAME_SAMPLES};

use super::mixer::MixerError;

/// Lowest level RFC 6464 can express, in dBov.
const MIN_DBOV: f32 = -127.0;

/// An RFC 6464 audio level: how far below overload the frame is, 0 (loudest) to 127 dBov below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AudioLevel(u8);

impl AudioLevel {
    /// The level as carried in the header extension (0..=127, meaning −0..−127 dBov).
    pub const fn new(level: u8) -> Option<Self> {
        if level <= 127 {
            Some(Self(level))
        } else {
            None
        }
    }

    /// The raw 7-bit value: minus the level in dBov.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The level in dBov (0 or negative).
    pub fn dbov(self) -> i16 {
        -i16::from(self.0)
    }
}

/// Thresholds and timings of a room's talker detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Level (dBov) a silent member must reach to count towards starting to talk.
    pub start_dbov: f32,
    /// Level (dBov) below which a talking member counts towards stopping.
    pub stop_dbov: f32,
    /// Loud audio needed before a member starts talking; the frame that completes it is mixed.
    pub attack: Duration,
    /// Quiet audio a talker is still mixed through before it stops.
    pub hangover: Duration,
}

impl Default for VadConfig {
    /// −40 dBov to start, −46 dBov to stop, 40 ms attack, 400 ms hang-over: speech at usual
    /// levels (−20…−30 dBov) passes, line noise (−50 dBov and below) does not, and pauses
    /// between words do not cut a talker out.
    fn default() -> Self {
        Self {
            start_dbov: -40.0,
            stop_dbov: -46.0,
            attack: Duration::from_millis(40),
            hangover: Duration::from_millis(400),
        }
    }
}

impl VadConfig {
    /// Checks the configuration and turns it into per-frame integer thresholds.
    pub(crate) fn compile(&self) -> Result<VadParams, MixerError> {
        let ok = |db: f32| db.is_finite() && (MIN_DBOV..=0.0).contains(&db);
        if !ok(self.start_dbov) || !ok(self.stop_dbov) {
            return Err(MixerError::InvalidVad(
                "thresholds must lie in −127..=0 dBov",
            ));
        }
        if self.stop_dbov > self.start_dbov {
            return Err(MixerError::InvalidVad(
                "stop_dbov must not exceed start_dbov",
            ));
        }
        Ok(VadParams {
            start_energy: energy_threshold(self.start_dbov),
            stop_energy: energy_threshold(self.stop_dbov),
            start_level_max: level_at_or_above(self.start_dbov),
            stop_level_max: level_at_or_above(self.stop_dbov),
            attack_frames: frames_in(self.attack).max(1),
            hangover_frames: frames_in(self.hangover),
        })
    }
}

/// Frames in `d`, rounded up.
fn frames_in(d: Duration) -> u32 {
    let frame = FRAME.as_nanos();
    u32::try_from(d.as_nanos().div_ceil(frame)).unwrap_or(u32::MAX)
}

/// Sum of squares over one frame at which its RMS level reaches `dbov`.
fn energy_threshold(dbov: f32) -> u64 {
    let full = 32768.0f64 * 32768.0 * FRAME_SAMPLES as f64;
    (full * 10f64.powf(f64::from(dbov) / 10.0)).ceil() as u64
}

/// Largest RFC 6464 value whose level is at or above `dbov` (−1: none is).
fn level_at_or_above(dbov: f32) -> i16 {
    (-dbov).floor() as i16
}

/// A configuration in the form the per-frame check uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VadParams {
    start_energy: u64,
    stop_energy: u64,
    start_level_max: i16,
    stop_level_max: i16,
    attack_frames: u32,
    hangover_frames: u32,
}

impl VadParams {
    /// The loudest RFC 6464 level that is not loud enough to start a member talking: a
    /// silent member's packets at it or below (quieter) can be left undecoded. `None` when
    /// every level is loud enough.
    pub(crate) fn quiet_below(&self) -> Option<AudioLevel> {
        u8::try_from(self.start_level_max)
            .ok()
            .and_then(AudioLevel::new)
    }
}

/// What is known of a member's audio this tick.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Measure {
    /// Sum of squares of the frame's samples.
    Energy(u64),
    /// Level given by the sender (RFC 6464).
    Level(AudioLevel),
    /// No frame this tick.
    Absent,
}

impl Measure {
    pub(crate) fn loud(self, p: &VadParams) -> bool {
        match self {
            Measure::Energy(e) => e >= p.start_energy,
            Measure::Level(l) => i16::from(l.get()) <= p.start_level_max,
            Measure::Absent => false,
        }
    }

    fn quiet(self, p: &VadParams) -> bool {
        match self {
            Measure::Energy(e) => e < p.stop_energy,
            Measure::Level(l) => i16::from(l.get()) > p.stop_level_max,
            Measure::Absent => true,
        }
    }
}

/// Sum of squares of a frame's samples.
// Kept out of line: inlined into the mixer's loop the compiler leaves it scalar.
#[inline(never)]
pub(crate) fn frame_energy(pcm: &[i16]) -> u64 {
    // With −32768 read as −32767 a square stays below 2^30, so a u32 lane holds four of them;
    // 32-bit lanes keep the loop in vector registers (the 1-in-65536 error does not matter
    // to a threshold).
    let mut total = 0u64;
    for block in pcm.chunks_exact(32) {
        let mut lanes = [0u32; 8];
        for eight in block.chunks_exact(8) {
            for (lane, &x) in lanes.iter_mut().zip(eight) {
                let x = i32::from(x.max(-i16::MAX));
                *lane += (x * x) as u32;
            }
        }
        total += lanes.iter().map(|&l| u64::from(l)).sum::<u64>();
    }
    // Thresholds are sums over a narrowband frame; a wider frame's sum is scaled to one.
    if pcm.len() == FRAME_SAMPLES {
        total
    } else {
        total * FRAME_SAMPLES as u64 / pcm.len().max(1) as u64
    }
}

/// A change of a member's talking state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// Started talking.
    Started,
    /// Stopped talking.
    Stopped,
}

/// One member's detector state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Vad {
    talking: bool,
    /// Consecutive frames counting towards the next transition.
    run: u32,
}

impl Vad {
    /// Whether the member currently counts as talking.
    pub(crate) fn is_talking(&self) -> bool {
        self.talking
    }

    /// Back to silent, as if the member had just joined.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    /// Feeds one tick's measure; returns the transition it caused, if any.
    #[inline]
    pub(crate) fn update(&mut self, m: Measure, p: &VadParams) -> Option<Transition> {
        if self.talking {
            if !m.quiet(p) {
                self.run = 0;
                return None;
            }
            self.run += 1;
            if self.run > p.hangover_frames {
                *self = Self::default();
                return Some(Transition::Stopped);
            }
        } else {
            if !m.loud(p) {
                self.run = 0;
                return None;
            }
            self.run += 1;
            if self.run >= p.attack_frames {
                self.talking = true;
                self.run = 0;
                return Some(Transition::Started);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::level::rms_dbfs;

    fn tone(dbov: f64) -> [i16; FRAME_SAMPLES] {
        // A sine's RMS is its peak over √2; 0 dBov is an RMS of full scale.
        let peak = 32768.0 * 2f64.sqrt() * 10f64.powf(dbov / 20.0);
        std::array::from_fn(|n| {
            (peak * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 8000.0 + 0.3).sin()) as i16
        })
    }

    fn run(cfg: &VadConfig, frames: impl IntoIterator<Item = Measure>) -> Vec<(usize, Transition)> {
        let p = cfg.compile().expect("valid config");
        let mut vad = Vad::default();
        frames
            .into_iter()
            .enumerate()
            .filter_map(|(i, m)| vad.update(m, &p).map(|t| (i, t)))
            .collect()
    }

    fn energy(dbov: f64) -> Measure {
        Measure::Energy(frame_energy(&tone(dbov)))
    }

    #[test]
    fn energy_matches_the_level_convention() {
        for db in [-10.0, -25.0, -40.0] {
            let pcm = tone(db);
            assert!(
                (rms_dbfs(&pcm) - db).abs() < 0.1,
                "{db}: {}",
                rms_dbfs(&pcm)
            );
            let naive: u64 = pcm
                .iter()
                .map(|&x| (i64::from(x) * i64::from(x)) as u64)
                .sum();
            assert_eq!(frame_energy(&pcm), naive);
        }
        let loudest = [i16::MIN; FRAME_SAMPLES];
        assert_eq!(frame_energy(&loudest), 160 * 32767 * 32767);
        let alternating: [i16; FRAME_SAMPLES] =
            std::array::from_fn(|n| if n % 2 == 0 { i16::MIN } else { i16::MAX });
        assert_eq!(frame_energy(&alternating), 160 * 32767 * 32767);
    }

    #[test]
    fn silence_never_talks() {
        let cfg = VadConfig::default();
        let silent = std::iter::repeat_n(Measure::Energy(0), 500);
        assert!(run(&cfg, silent).is_empty());
        let noise = std::iter::repeat_n(energy(-55.0), 500);
        assert!(run(&cfg, noise).is_empty());
        let absent = std::iter::repeat_n(Measure::Absent, 500);
        assert!(run(&cfg, absent).is_empty());
    }

    #[test]
    fn a_tone_starts_after_attack_and_stops_after_hangover() {
        let cfg = VadConfig {
            attack: Duration::from_millis(60),
            hangover: Duration::from_millis(200),
            ..VadConfig::default()
        };
        // 50 frames of tone, then silence.
        let frames = (0..200).map(|i| {
            if i < 50 {
                energy(-20.0)
            } else {
                Measure::Energy(0)
            }
        });
        // The third loud frame completes 60 ms of attack; ten quiet frames are the hang-over,
        // the eleventh stops.
        assert_eq!(
            run(&cfg, frames),
            vec![(2, Transition::Started), (60, Transition::Stopped)]
        );
    }

    #[test]
    fn a_short_click_does_not_start_talking() {
        let cfg = VadConfig::default();
        let frames = (0..100).map(|i| {
            if i % 10 == 0 {
                energy(-10.0)
            } else {
                Measure::Energy(0)
            }
        });
        assert!(run(&cfg, frames).is_empty());
    }

    #[test]
    fn hysteresis_holds_a_level_near_the_threshold() {
        let wandering = || (0..200).map(|i| energy(if i % 2 == 0 { -38.5 } else { -41.5 }));
        let with = VadConfig {
            attack: Duration::ZERO,
            hangover: Duration::ZERO,
            ..VadConfig::default()
        };
        assert_eq!(run(&with, wandering()), vec![(0, Transition::Started)]);
        // The same signal without hysteresis flaps every frame: the check above can fail.
        let without = VadConfig {
            stop_dbov: with.start_dbov,
            ..with
        };
        assert_eq!(run(&without, wandering()).len(), 200);
    }

    #[test]
    fn rfc6464_levels_use_the_same_thresholds() {
        let cfg = VadConfig {
            attack: Duration::ZERO,
            hangover: Duration::ZERO,
            ..VadConfig::default()
        };
        let lvl = |l| Measure::Level(AudioLevel::new(l).expect("in range"));
        // 40 means −40 dBov: at the start threshold. 46 is at the stop threshold, 47 below.
        let frames = [lvl(41), lvl(40), lvl(46), lvl(47), lvl(127), lvl(0)];
        assert_eq!(
            run(&cfg, frames),
            vec![
                (1, Transition::Started),
                (3, Transition::Stopped),
                (5, Transition::Started)
            ]
        );
        assert_eq!(AudioLevel::new(128), None);
        assert_eq!(AudioLevel::new(30).map(AudioLevel::dbov), Some(-30));
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = [
            VadConfig {
                stop_dbov: -30.0,
                start_dbov: -40.0,
                ..VadConfig::default()
            },
            VadConfig {
                start_dbov: 3.0,
                ..VadConfig::default()
            },
            VadConfig {
                stop_dbov: f32::NAN,
                ..VadConfig::default()
            },
        ];
        for cfg in bad {
            assert!(cfg.compile().is_err(), "{cfg:?}");
        }
    }
}
