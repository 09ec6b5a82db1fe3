use super::*;
use crate::media::codec::g711;
use std::f64::consts::PI;

const RATE: u32 = 8000;

/// `hz` as a clock rate, for the constructors.
fn clock(hz: u32) -> ClockRate {
    ClockRate::new(hz).unwrap()
}

fn ms(ms: u32) -> usize {
    (ms * RATE / 1000) as usize
}

/// Test signal builder, independent of the tone generator under `media::tone`.
struct Signal {
    rate: u32,
    pcm: Vec<f64>,
    /// (digit, first sample, length) of every tone written.
    tones: Vec<(Digit, usize, usize)>,
}

impl Signal {
    fn new() -> Self {
        Self::at(RATE)
    }

    fn at(rate: u32) -> Self {
        Self {
            rate,
            pcm: Vec::new(),
            tones: Vec::new(),
        }
    }

    fn silence(mut self, samples: usize) -> Self {
        self.pcm.extend(std::iter::repeat_n(0.0, samples));
        self
    }

    /// Appends digit `d` with the low tone at `low_dbm0` and the high tone at `high_dbm0`.
    fn tone_twist(self, d: Digit, samples: usize, low_dbm0: f32, high_dbm0: f32) -> Self {
        self.tone_off(d, (0.0, 0.0), samples, (low_dbm0, high_dbm0))
    }

    /// Appends digit `d` with its tones `dev` (fractions) off their nominal frequencies and
    /// at `dbm0` levels, low tone first.
    fn tone_off(mut self, d: Digit, dev: (f64, f64), samples: usize, dbm0: (f32, f32)) -> Self {
        let (low_dbm0, high_dbm0) = dbm0;
        let (fl, fh) = d.frequencies();
        let (fl, fh) = (fl * (1.0 + dev.0) as f32, fh * (1.0 + dev.1) as f32);
        let (al, ah) = (
            f64::from(dbm0_to_peak(low_dbm0)),
            f64::from(dbm0_to_peak(high_dbm0)),
        );
        let start = self.pcm.len();
        // Arbitrary but fixed starting phases, so blocks never see a special alignment.
        let (pl, ph) = (0.3 + start as f64 * 0.001, 1.1);
        let r = f64::from(self.rate);
        for i in 0..samples {
            let t = i as f64 / r;
            self.pcm.push(
                al * (2.0 * PI * f64::from(fl) * t + pl).sin()
                    + ah * (2.0 * PI * f64::from(fh) * t + ph).sin(),
            );
        }
        self.tones.push((d, start, samples));
        self
    }

    fn tone(self, d: Digit, samples: usize, dbm0: f32) -> Self {
        self.tone_twist(d, samples, dbm0, dbm0)
    }

    fn sine(mut self, f: f64, samples: usize, dbm0: f32) -> Self {
        let a = f64::from(dbm0_to_peak(dbm0));
        let r = f64::from(self.rate);
        self.pcm
            .extend((0..samples).map(|i| a * (2.0 * PI * f * i as f64 / r).sin()));
        self
    }

    /// Adds white Gaussian noise of the given RMS.
    fn noise(mut self, rms: f64, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        for x in &mut self.pcm {
            // Box–Muller
            let u1 = rng.f64().max(1e-12);
            let u2 = rng.f64();
            *x += rms * (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos();
        }
        self
    }

    fn i16(&self) -> Vec<i16> {
        self.pcm
            .iter()
            .map(|&x| x.round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }
}

fn digit(c: char) -> Digit {
    Digit::from_char(c).unwrap()
}

fn detect_in_chunks(pcm: &[i16], rate: u32, chunk: usize) -> Vec<DigitEvent> {
    let mut det = InbandDetector::new(clock(rate)).unwrap();
    let mut events = Vec::new();
    for c in pcm.chunks(chunk) {
        det.push(c, |e| events.push(e));
    }
    det.finish(|e| events.push(e));
    events
}

fn detect(pcm: &[i16]) -> Vec<DigitEvent> {
    detect_in_chunks(pcm, RATE, 160)
}

fn began(events: &[DigitEvent]) -> Vec<DigitEvent> {
    events
        .iter()
        .copied()
        .filter(|e| e.phase == DigitPhase::Began)
        .collect()
}

fn digits(events: &[DigitEvent]) -> String {
    began(events).iter().map(|e| e.digit.as_char()).collect()
}

/// Every `Began` is followed by the matching `Ended` before the next digit begins.
fn assert_paired(events: &[DigitEvent]) {
    assert_eq!(events.len() % 2, 0, "{events:?}");
    for pair in events.chunks(2) {
        assert_eq!(pair[0].phase, DigitPhase::Began, "{events:?}");
        assert_eq!(pair[1].phase, DigitPhase::Ended, "{events:?}");
        assert_eq!(pair[0].digit, pair[1].digit);
        assert_eq!(pair[0].start_sample, pair[1].start_sample);
    }
}

fn all_digits_signal(dbm0: f32, tone_ms: u32, gap_ms: u32) -> Signal {
    let mut s = Signal::new().silence(ms(gap_ms));
    for d in Digit::ALL {
        s = s.tone(d, ms(tone_ms), dbm0).silence(ms(gap_ms));
    }
    s
}

#[test]
fn all_digits_detected_once_at_minus_10_and_minus_25_dbm0() {
    for dbm0 in [-10.0, -25.0] {
        let s = all_digits_signal(dbm0, 50, 50);
        let events = detect(&s.i16());
        assert_paired(&events);
        assert_eq!(digits(&events), "0123456789*#ABCD", "at {dbm0} dBm0");
        for (pair, &(d, start, len)) in events.chunks(2).zip(&s.tones) {
            assert_eq!(pair[0].digit, d);
            let err = pair[0].start_sample as i64 - start as i64;
            assert!(
                err.abs() <= 16,
                "{d} at {dbm0} dBm0: start off by {err} samples"
            );
            let dur = i64::from(pair[1].duration_ms);
            let want = (len * 1000 / RATE as usize) as i64;
            assert!((dur - want).abs() <= 3, "{d}: {dur} ms, want {want}");
        }
    }
}

#[test]
fn minus_46_dbm0_is_not_detected() {
    // 6 dB below the default threshold; Bellcore's non-operate level is lower still.
    for law in LAWS {
        let s = all_digits_signal(-46.0, 50, 50);
        assert_eq!(detect(&through(law, &s)), vec![], "{law:?}");
    }
}

#[test]
fn duration_limits_hold_for_every_alignment() {
    let d = digit('5');
    for offset in (0..102).step_by(3) {
        let run = |tone_samples: usize| {
            let s = Signal::new()
                .silence(offset + 400)
                .tone(d, tone_samples, -10.0)
                .silence(800);
            digits(&detect(&s.i16()))
        };
        assert_eq!(run(ms(45)), "5", "45 ms at offset {offset}");
        assert_eq!(run(ms(40)), "5", "40 ms at offset {offset}");
        assert_eq!(run(305), "5", "38.1 ms at offset {offset}");
        assert_eq!(run(ms(20)), "", "20 ms at offset {offset}");
        assert_eq!(run(182), "", "22.75 ms at offset {offset}");
    }
}

#[test]
fn thirty_ms_tones_depend_on_alignment_only() {
    // Documented as unspecified; this pins that the outcome is all-or-nothing per alignment
    // and never a double detection.
    let mut accepted = 0;
    for offset in 0..102 {
        let s = Signal::new()
            .silence(offset + 400)
            .tone(digit('9'), ms(30), -10.0)
            .silence(800);
        let got = digits(&detect(&s.i16()));
        assert!(got.is_empty() || got == "9", "{got}");
        accepted += usize::from(!got.is_empty());
    }
    assert!(accepted > 0 && accepted < 102, "{accepted}");
}

#[test]
fn repeated_digit_with_20ms_gap_counts_each_press() {
    let d = digit('7');
    for offset in 0..102 {
        let mut s = Signal::new().silence(offset + 200);
        for _ in 0..3 {
            s = s.tone(d, ms(45), -10.0).silence(ms(20));
        }
        let events = detect(&s.i16());
        assert_paired(&events);
        assert_eq!(digits(&events), "777", "offset {offset}");
    }
}

#[test]
fn repeated_digit_with_20ms_gap_in_noise() {
    let d = digit('0');
    for offset in (0..102).step_by(7) {
        let mut s = Signal::new().silence(offset + 200);
        for _ in 0..3 {
            s = s.tone(d, ms(50), -20.0).silence(ms(20));
        }
        let rms = f64::from(dbm0_to_peak(-20.0)) * 10f64.powf(-20.0 / 20.0); // 20 dB SNR
        let events = detect(&s.noise(rms, offset as u64).i16());
        assert_eq!(digits(&events), "000", "offset {offset}");
    }
}

#[test]
fn short_dropout_does_not_split_a_digit() {
    let d = digit('3');
    for offset in 0..102 {
        let s = Signal::new()
            .silence(offset + 200)
            .tone(d, ms(60), -10.0)
            .silence(ms(5))
            .tone(d, ms(60), -10.0)
            .silence(ms(100));
        assert_eq!(digits(&detect(&s.i16())), "3", "offset {offset}");
    }
}

#[test]
fn noise_and_single_tones_produce_nothing() {
    let len = ms(3000);
    for (rms, seed) in [(300.0, 1), (3000.0, 2), (12000.0, 3)] {
        let s = Signal::new().silence(len).noise(rms, seed);
        assert_eq!(detect(&s.i16()), vec![], "noise rms {rms}");
    }
    for f in [1000.0, 697.0, 1209.0, 1633.0] {
        let s = Signal::new().sine(f, len, -5.0);
        assert_eq!(detect(&s.i16()), vec![], "{f} Hz");
    }
}

#[test]
fn digits_survive_20db_snr_noise() {
    for dbm0 in [-10.0, -25.0] {
        let s = all_digits_signal(dbm0, 50, 50);
        // Per-tone level L gives a dual-tone power of 2·(A²/2) = A²; noise 20 dB below.
        let rms = f64::from(dbm0_to_peak(dbm0)) * 0.1;
        let events = detect(&s.noise(rms, 42).i16());
        assert_paired(&events);
        assert_eq!(digits(&events), "0123456789*#ABCD", "at {dbm0} dBm0");
    }
}

#[test]
fn digits_survive_g711_round_trip() {
    let s = all_digits_signal(-25.0, 50, 50).i16();
    let via_ulaw: Vec<i16> = s
        .iter()
        .map(|&x| g711::ulaw_decode(g711::ulaw_encode(x)))
        .collect();
    let via_alaw: Vec<i16> = s
        .iter()
        .map(|&x| g711::alaw_decode(g711::alaw_encode(x)))
        .collect();
    assert_eq!(digits(&detect(&via_ulaw)), "0123456789*#ABCD");
    assert_eq!(digits(&detect(&via_alaw)), "0123456789*#ABCD");
}

fn speech() -> Vec<i16> {
    let bytes = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/speech-8k.raw"
    ));
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

#[test]
fn speech_produces_no_digits() {
    let pcm = speech();
    assert!(pcm.len() > ms(10_000));
    assert_eq!(detect(&pcm), vec![]);
    // Quieter speech as well: level changes which blocks pass the gate.
    let quiet: Vec<i16> = pcm.iter().map(|&x| x / 8).collect();
    assert_eq!(detect(&quiet), vec![]);
}

#[test]
fn digits_are_found_between_speech() {
    let pcm = speech();
    let mut s = Signal::new();
    s.pcm.extend(pcm[..ms(2000)].iter().map(|&x| f64::from(x)));
    let s = s.tone(digit('#'), ms(60), -15.0).silence(ms(60));
    let mut s2 = s;
    s2.pcm
        .extend(pcm[ms(2000)..ms(4000)].iter().map(|&x| f64::from(x)));
    let events = detect(&s2.i16());
    assert_eq!(digits(&events), "#");
}

#[test]
fn chunking_does_not_change_events() {
    let s = all_digits_signal(-20.0, 45, 30).noise(200.0, 7).i16();
    let framed = detect_in_chunks(&s, RATE, 160);
    assert_eq!(digits(&framed), "0123456789*#ABCD");
    assert_eq!(detect_in_chunks(&s, RATE, 1), framed);
    assert_eq!(detect_in_chunks(&s, RATE, 7), framed);
    assert_eq!(detect_in_chunks(&s, RATE, 1000), framed);
    let mut det = InbandDetector::new(clock(RATE)).unwrap();
    let mut events = Vec::new();
    let mut rng = fastrand::Rng::with_seed(9);
    let mut rest = &s[..];
    while !rest.is_empty() {
        let n = rng.usize(0..=rest.len().min(400));
        det.push(&rest[..n], |e| events.push(e));
        rest = &rest[n..];
    }
    det.finish(|e| events.push(e));
    assert_eq!(events, framed);
}

#[test]
fn works_at_16_khz() {
    let mut s = Signal::at(16_000).silence(1600);
    for c in "159#D".chars() {
        s = s.tone(digit(c), 800, -20.0).silence(800);
    }
    let events = detect_in_chunks(&s.i16(), 16_000, 320);
    assert_paired(&events);
    assert_eq!(digits(&events), "159#D");
}

#[test]
fn finish_ends_an_open_digit_and_reset_restarts_positions() {
    let s = Signal::new()
        .silence(100)
        .tone(digit('A'), ms(100), -10.0)
        .i16();
    let mut det = InbandDetector::new(clock(RATE)).unwrap();
    let mut events = Vec::new();
    det.push(&s, |e| events.push(e));
    assert_eq!(digits(&events), "A");
    assert_eq!(events.len(), 1);
    det.finish(|e| events.push(e));
    assert_paired(&events);
    assert!((i64::from(events[1].duration_ms) - 100).abs() <= 13);
    det.reset();
    assert_eq!(det.position(), 0);
    let mut again = Vec::new();
    det.push(&s, |e| again.push(e));
    assert_eq!(again[0], events[0]);
}

#[test]
fn bad_configuration_is_rejected() {
    assert_eq!(
        InbandDetector::new(clock(4000)).unwrap_err(),
        DetectorError::UnsupportedRate(4000)
    );
    assert!(InbandDetector::new(clock(96_000)).is_err());
    let cfg = DetectorConfig {
        min_tone_fraction: 1.5,
        ..DetectorConfig::default()
    };
    assert!(InbandDetector::with_config(clock(RATE), cfg).is_err());
    let cfg = DetectorConfig {
        normal_twist_db: f32::NAN,
        ..DetectorConfig::default()
    };
    assert!(InbandDetector::with_config(clock(RATE), cfg).is_err());
}

/// The two G.711 laws, which every edge test goes through as the call path does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Law {
    Mu,
    A,
}

const LAWS: [Law; 2] = [Law::Mu, Law::A];

const ALL_KEYS: &str = "0123456789*#ABCD";

/// `s` as the detector gets it after G.711 encoding and decoding.
///
/// [`dbm0_to_peak`] is exact for A-law (0 dBm0 = 32 768 × 10^(−3.14/20) = 22 827 peak). For
/// µ-law, whose overload is 4 × 8159 = 32 636 on the 16-bit scale at +3.17 dBm0, 0 dBm0 is a
/// peak of 22 657, 0.065 dB lower: µ-law signals are scaled by that ratio so their levels are
/// exact too.
fn through(law: Law, s: &Signal) -> Vec<i16> {
    let scale = match law {
        Law::Mu => 4.0 * 8159.0 * 10f64.powf(-3.17 / 20.0) / f64::from(dbm0_to_peak(0.0)),
        Law::A => 1.0,
    };
    s.pcm
        .iter()
        .map(|&x| {
            let v = (x * scale).round().clamp(-32768.0, 32767.0) as i16;
            match law {
                Law::Mu => g711::ulaw_decode(g711::ulaw_encode(v)),
                Law::A => g711::alaw_decode(g711::alaw_encode(v)),
            }
        })
        .collect()
}

fn detect_with(cfg: DetectorConfig, pcm: &[i16]) -> Vec<DigitEvent> {
    let mut det = InbandDetector::with_config(clock(RATE), cfg).unwrap();
    let mut events = Vec::new();
    for c in pcm.chunks(160) {
        det.push(c, |e| events.push(e));
    }
    det.finish(|e| events.push(e));
    events
}

/// Every key, low tone at `low` and high tone at `high` dBm0, through `law`.
fn every_key(law: Law, low: f32, high: f32) -> String {
    let mut s = Signal::new().silence(ms(60));
    for d in Digit::ALL {
        s = s.tone_twist(d, ms(50), low, high).silence(ms(50));
    }
    keys_through(law, &s)
}

/// The keys found in `s` through `law`, each with its `Began` and `Ended`.
fn keys_through(law: Law, s: &Signal) -> String {
    let events = detect(&through(law, s));
    assert_paired(&events);
    digits(&events)
}

#[test]
fn normal_twist_up_to_8_db_is_accepted() {
    // Normal twist: the high group quieter than the low group, as a line's loss makes it.
    for law in LAWS {
        for twist in [4.0, 8.0] {
            for low in [-10.0, -26.0] {
                let got = every_key(law, low, low - twist);
                assert_eq!(got, ALL_KEYS, "{law:?}, {twist} dB at {low} dBm0");
            }
        }
    }
}

#[test]
fn normal_twist_of_10_db_is_rejected() {
    // 2 dB outside the limit: the twist is measured free of leakage to about ±0.3 dB, and
    // G.711 adds less than 0.1 dB, so 10 dB cannot read as 8.
    for law in LAWS {
        assert_eq!(every_key(law, -10.0, -20.0), "", "{law:?}");
    }
}

#[test]
fn reverse_twist_up_to_4_db_is_accepted_and_6_db_rejected() {
    // Reverse twist: the high group louder. 6 dB is 2 dB outside, for the same reason as above.
    for law in LAWS {
        for low in [-14.0, -30.0] {
            assert_eq!(every_key(law, low, low + 4.0), ALL_KEYS, "{law:?} at {low}");
            assert_eq!(every_key(law, low, low + 6.0), "", "{law:?} at {low}");
        }
    }
}

#[test]
fn minus_36_dbm0_per_tone_is_accepted() {
    for law in LAWS {
        assert_eq!(every_key(law, -36.0, -36.0), ALL_KEYS, "{law:?}");
    }
}

#[test]
fn a_stricter_configured_threshold_rejects_what_the_default_accepts() {
    let s = all_digits_signal(-36.0, 50, 50);
    for law in LAWS {
        let pcm = through(law, &s);
        assert_eq!(digits(&detect(&pcm)), ALL_KEYS);
        let strict = DetectorConfig {
            min_level_dbm0: -30.0,
            ..DetectorConfig::default()
        };
        assert_eq!(detect_with(strict, &pcm), vec![], "{law:?}");
    }
    // And a narrower twist window: 6 dB of normal twist passes by default, not at 4 dB.
    let mut s = Signal::new().silence(ms(60));
    for d in Digit::ALL {
        s = s.tone_twist(d, ms(50), -10.0, -16.0).silence(ms(50));
    }
    let pcm = through(Law::A, &s);
    assert_eq!(digits(&detect(&pcm)), ALL_KEYS);
    let narrow = DetectorConfig {
        normal_twist_db: 4.0,
        ..DetectorConfig::default()
    };
    assert_eq!(detect_with(narrow, &pcm), vec![]);
}

/// Three presses of `d` with its tones `dev` off, at `dbm0` per tone, through `law`.
fn presses_off(law: Law, d: Digit, dev: (f64, f64), dbm0: f32) -> String {
    let mut s = Signal::new().silence(ms(30));
    for _ in 0..3 {
        s = s.tone_off(d, dev, ms(50), (dbm0, dbm0)).silence(ms(60));
    }
    keys_through(law, &s)
}

/// Three presses of a key for each row with its row tone `devs` off, and for each column
/// with its column tone `devs` off, at each of `levels`: all found, or none.
fn check_deviation(levels: [f32; 2], devs: [f64; 2], accepted: bool) {
    for law in LAWS {
        for dbm0 in levels {
            for i in 0..4 {
                let by_row = Digit::from_row_col(i, (i + 1) % 4).unwrap();
                let by_col = Digit::from_row_col((i + 2) % 4, i).unwrap();
                for dev in devs {
                    for (what, d, dev) in
                        [("row", by_row, (dev, 0.0)), ("column", by_col, (0.0, dev))]
                    {
                        let want: String = if accepted {
                            std::iter::repeat_n(d.as_char(), 3).collect()
                        } else {
                            String::new()
                        };
                        let got = presses_off(law, d, dev, dbm0);
                        assert_eq!(got, want, "{law:?} {what} {i} {dev:?} at {dbm0}");
                    }
                }
            }
        }
    }
}

#[test]
fn frequency_deviation_of_1_5_percent_is_accepted_for_every_row_and_column() {
    check_deviation([-10.0, -36.0], [-0.015, 0.015], true);
}

#[test]
fn frequency_deviation_of_3_5_percent_is_rejected_for_every_row_and_column() {
    check_deviation([-10.0, -30.0], [-0.035, 0.035], false);
}

#[test]
fn forty_ms_tones_are_accepted_and_twenty_ms_rejected_through_g711() {
    for law in LAWS {
        for d in Digit::ALL {
            for offset in [0, 37, 71] {
                let run = |len| {
                    let s = Signal::new()
                        .silence(offset + 200)
                        .tone(d, len, -20.0)
                        .silence(600);
                    digits(&detect(&through(law, &s)))
                };
                assert_eq!(run(ms(40)), d.to_string(), "{law:?} {d} offset {offset}");
                assert_eq!(run(ms(20)), "", "{law:?} {d} offset {offset}");
            }
        }
    }
}

#[test]
fn a_40_ms_pause_between_two_identical_keys_gives_two_digits() {
    for law in LAWS {
        for d in Digit::ALL {
            for offset in [0, 29, 64] {
                let s = Signal::new()
                    .silence(offset + 200)
                    .tone(d, ms(40), -25.0)
                    .silence(ms(40))
                    .tone(d, ms(40), -25.0)
                    .silence(600);
                assert_eq!(
                    keys_through(law, &s),
                    format!("{d}{d}"),
                    "{law:?} offset {offset}"
                );
            }
        }
    }
}

/// Speech-like test signal: a glottal pulse train with a gliding pitch through formant
/// resonators, one vowel after another.
fn synthetic_speech(seconds: f64, pitch: (f64, f64), seed: u64) -> Vec<f64> {
    // Formants (Hz) and bandwidths of /a/, /i/, /u/, /e/, /o/.
    const VOWELS: [[(f64, f64); 3]; 5] = [
        [(730.0, 90.0), (1090.0, 110.0), (2440.0, 170.0)],
        [(270.0, 60.0), (2290.0, 100.0), (3010.0, 200.0)],
        [(300.0, 60.0), (870.0, 90.0), (2240.0, 150.0)],
        [(530.0, 70.0), (1840.0, 100.0), (2480.0, 160.0)],
        [(570.0, 80.0), (840.0, 90.0), (2410.0, 160.0)],
    ];
    let r = f64::from(RATE);
    let n = (seconds * r) as usize;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut phase = 0.0;
    let mut out = Vec::with_capacity(n);
    // Two-pole resonators, one state pair per formant.
    let mut state = [(0.0f64, 0.0f64); 3];
    let vowel_len = (0.18 * r) as usize;
    for i in 0..n {
        let t = i as f64 / n as f64;
        // Pitch glides between the two values and back, with a little vibrato.
        let f0 = pitch.0
            + (pitch.1 - pitch.0) * (PI * t * 3.0).sin().abs()
            + 3.0 * (2.0 * PI * 5.5 * i as f64 / r).sin();
        phase += f0 / r;
        let pulse = if phase >= 1.0 {
            phase -= 1.0;
            1.0
        } else {
            0.0
        };
        // A breath of noise, as in real voicing.
        let excitation = pulse + 0.02 * (rng.f64() - 0.5);
        let vowel = VOWELS[(i / vowel_len + seed as usize) % VOWELS.len()];
        let mut y = 0.0;
        for ((f, bw), st) in vowel.iter().zip(state.iter_mut()) {
            let rad = (-PI * bw / r).exp();
            let a1 = 2.0 * rad * (2.0 * PI * f / r).cos();
            let a2 = -rad * rad;
            let v = excitation + a1 * st.0 + a2 * st.1;
            st.1 = st.0;
            st.0 = v;
            y += v;
        }
        // Syllable envelope: 180 ms vowels with short gaps between some of them.
        let k = i % vowel_len;
        let env = (PI * k as f64 / vowel_len as f64).sin().powf(0.5);
        out.push(y * env);
    }
    out
}

/// Music-like test signal: chords of notes with harmonics, then a melody; some notes sit
/// close to DTMF frequencies (F5 = 698.5 Hz, A5 = 880 Hz, D#6 = 1244.5 Hz, G#6 = 1661 Hz).
fn synthetic_music() -> Vec<f64> {
    let note = |midi: f64| 440.0 * 2f64.powf((midi - 69.0) / 12.0);
    let chords: [&[f64]; 8] = [
        &[60.0, 64.0, 67.0],
        &[57.0, 60.0, 64.0],
        &[77.0, 87.0],
        &[81.0, 92.0],
        &[65.0, 69.0, 72.0, 77.0],
        &[79.0, 83.0, 86.0],
        &[77.0, 81.0, 84.0, 87.0],
        &[74.0, 78.0, 81.0, 91.0],
    ];
    let melody = [
        72.0, 74.0, 76.0, 77.0, 79.0, 81.0, 83.0, 84.0, 87.0, 89.0, 91.0, 92.0,
    ];
    let r = f64::from(RATE);
    let mut out = Vec::new();
    let play = |notes: &[f64], seconds: f64, out: &mut Vec<f64>| {
        let n = (seconds * r) as usize;
        for i in 0..n {
            let t = i as f64 / r;
            // Piano-like: quick attack, exponential decay.
            let env = (1.0 - (-t * 200.0).exp()) * (-t * 3.0).exp();
            let mut y = 0.0;
            for &m in notes {
                let f = note(m);
                for h in 1..=6 {
                    let fh = f * f64::from(h);
                    if fh < r / 2.0 {
                        y += (2.0 * PI * fh * t).sin() / f64::from(h);
                    }
                }
            }
            out.push(y * env);
        }
    };
    for c in chords {
        play(c, 0.6, &mut out);
    }
    for m in melody {
        play(&[m], 0.15, &mut out);
    }
    out
}

/// `x` scaled so that its loudest sample is a sine peak of `dbm0`.
fn at_peak(x: &[f64], dbm0: f32) -> Signal {
    let peak = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let k = f64::from(dbm0_to_peak(dbm0)) / peak;
    let mut s = Signal::new();
    s.pcm = x.iter().map(|v| v * k).collect();
    s
}

#[test]
fn synthetic_speech_music_and_noise_give_no_digits() {
    let mut corpus: Vec<(&str, Vec<f64>)> = vec![
        ("low voice", synthetic_speech(6.0, (85.0, 140.0), 1)),
        ("high voice", synthetic_speech(6.0, (180.0, 320.0), 2)),
        ("music", synthetic_music()),
    ];
    let noise = Signal::new().silence(ms(3000)).noise(1000.0, 5).pcm;
    corpus.push(("white noise", noise.clone()));
    // Low-passed noise has most of its energy where the row tones are.
    let mut lp = 0.0;
    let pink: Vec<f64> = noise
        .iter()
        .map(|&x| {
            lp = 0.9 * lp + 0.1 * x;
            lp
        })
        .collect();
    corpus.push(("low-passed noise", pink));
    for (name, x) in &corpus {
        for law in LAWS {
            for dbm0 in [3.0, -10.0, -25.0, -35.0] {
                let events = detect(&through(law, &at_peak(x, dbm0)));
                assert_eq!(events, vec![], "{name} {law:?} at {dbm0}");
            }
        }
    }
}

/// A generated key press for the property test: all within Q.24's accept limits.
#[derive(Debug, Clone)]
struct Press {
    digit: Digit,
    low_dbm0: f32,
    /// Positive: normal twist (high group quieter); negative: reverse twist.
    twist_db: f32,
    dev: (f64, f64),
    tone_ms: u32,
    gap_ms: u32,
}

fn press() -> impl proptest::strategy::Strategy<Value = Press> {
    use proptest::prelude::*;
    (
        0usize..16,
        -28.0f32..-8.0,
        -3.5f32..7.5,
        (-0.014f64..0.014, -0.014f64..0.014),
        40u32..120,
        40u32..150,
    )
        .prop_map(|(d, low_dbm0, twist_db, dev, tone_ms, gap_ms)| Press {
            digit: Digit::ALL[d],
            low_dbm0,
            twist_db,
            dev,
            tone_ms,
            gap_ms,
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    #[test]
    fn keys_within_limits_are_each_detected_once(
        presses in proptest::collection::vec(press(), 1..10),
        mu in proptest::bool::ANY,
        lead in 0usize..400,
    ) {
        let mut s = Signal::new().silence(lead + 80);
        for p in &presses {
            let high = (p.low_dbm0 - p.twist_db).max(-36.0);
            s = s
                .tone_off(p.digit, p.dev, ms(p.tone_ms), (p.low_dbm0, high))
                .silence(ms(p.gap_ms));
        }
        let law = if mu { Law::Mu } else { Law::A };
        let events = detect(&through(law, &s));
        assert_paired(&events);
        let want: String = presses.iter().map(|p| p.digit.as_char()).collect();
        proptest::prop_assert_eq!(digits(&events), want);
    }
}

#[test]
fn a_phase_jump_inside_a_key_does_not_split_it() {
    // What packet loss concealment makes of a tone: the frequency test fails for the block
    // holding the jump, but a confirmed digit carries on through it.
    let d = digit('6');
    for offset in (0..102).step_by(5) {
        for law in LAWS {
            let mut s = Signal::new().silence(offset + 200).tone(d, ms(60), -20.0);
            // Restart both tones, and drop half a period of the high tone from the restart.
            let (_, fh) = d.frequencies();
            let start = s.pcm.len();
            s = s.tone(d, ms(60), -20.0);
            let shift = (f64::from(RATE) / f64::from(fh) / 2.0) as usize;
            s.pcm.drain(start..start + shift);
            s = s.silence(ms(100));
            assert_eq!(digits(&detect(&through(law, &s))), "6", "offset {offset}");
        }
    }
}

#[test]
fn audio_passed_unanalysed_still_counts_towards_positions() {
    let lead = ms(1000);
    let pcm = Signal::new()
        .silence(lead)
        .tone(digit('5'), ms(100), -10.0)
        .silence(ms(100))
        .i16();
    let heard = detect(&pcm);
    assert_eq!(digits(&heard), "5");
    // The lead-in let go by unanalysed: the same events at the same positions.
    let mut det = InbandDetector::new(clock(RATE)).unwrap();
    let mut events = Vec::new();
    for _ in 0..lead / 160 {
        det.pass(160, |e| events.push(e));
    }
    assert!(events.is_empty());
    assert_eq!(det.position(), lead as u64);
    for c in pcm[lead..].chunks(160) {
        det.push(c, |e| events.push(e));
    }
    det.finish(|e| events.push(e));
    assert_eq!(events, heard);
}

#[test]
fn passing_audio_mid_tone_ends_the_digit_there() {
    let pcm = Signal::new()
        .silence(ms(100))
        .tone(digit('9'), ms(200), -10.0)
        .i16();
    let mut det = InbandDetector::new(clock(RATE)).unwrap();
    let mut events = Vec::new();
    // 100 ms of silence and 100 ms of the tone: begun, not ended.
    for c in pcm[..ms(200)].chunks(160) {
        det.push(c, |e| events.push(e));
    }
    assert_eq!(digits(&events), "9");
    assert_eq!(events.len(), 1);
    det.pass(160, |e| events.push(e));
    assert_paired(&events);
    assert!(!det.tone_suspected(), "nothing is followed while passing");
    // What follows is another press, not the same one going on.
    for c in pcm[ms(200) + 160..].chunks(160) {
        det.push(c, |e| events.push(e));
    }
    det.finish(|e| events.push(e));
    assert_eq!(digits(&events), "99");
    assert_paired(&events);
}
