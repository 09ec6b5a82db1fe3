//! The caller-audio detectors (voice activity, answering machines, the voicemail beep) on
//! synthesized speech, tones and noise, at 8 and 16 kHz, frame by frame as a call feeds them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/thread_alloc.rs"]
mod thread_alloc;

use flite_rs::Engine;
use switchboard::media::codec::g711;
use switchboard::rtp::types::ClockRate;
use switchboard::speech::amd::{Amd, AmdConfig, AmdResult, AmdStatus};
use switchboard::speech::beep::{Beep, BeepDetector};
use switchboard::speech::vad::{Vad, VadConfig, VadEvent};

#[global_allocator]
static GLOBAL: thread_alloc::Counting = thread_alloc::Counting;

const RATES: [u32; 2] = [8000, 16000];

fn samples(ms: f64, rate: u32) -> usize {
    (ms * f64::from(rate) / 1000.0).round() as usize
}

fn frame_len(rate: u32) -> usize {
    rate as usize / 50
}

/// Amplitude of a sine whose RMS is `dbfs`.
fn sine_peak(dbfs: f64) -> f64 {
    32768.0 * 10f64.powf(dbfs / 20.0) * std::f64::consts::SQRT_2
}

fn rms_dbfs(pcm: &[f64]) -> f64 {
    let ms = pcm.iter().map(|x| x * x).sum::<f64>() / pcm.len().max(1) as f64;
    10.0 * (ms.max(1e-9) / (32768.0f64 * 32768.0)).log10()
}

/// A deterministic white noise source (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        v as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    fn gauss(&mut self) -> f64 {
        (0..12).map(|_| self.next()).sum::<f64>() / 2.0
    }
}

/// Audio under construction, in floating point until it is cut into frames.
struct Signal {
    rate: u32,
    pcm: Vec<f64>,
}

impl Signal {
    fn new(rate: u32) -> Self {
        Signal {
            rate,
            pcm: Vec::new(),
        }
    }

    fn silence(mut self, ms: f64) -> Self {
        let n = samples(ms, self.rate);
        self.pcm.extend(std::iter::repeat_n(0.0, n));
        self
    }

    /// Tones summed, each at RMS `dbfs`, for `ms`.
    fn tones(mut self, freqs: &[(f64, f64)], ms: f64) -> Self {
        let n = samples(ms, self.rate);
        let rate = f64::from(self.rate);
        self.pcm.extend((0..n).map(|i| {
            freqs
                .iter()
                .map(|&(hz, dbfs)| {
                    sine_peak(dbfs) * (std::f64::consts::TAU * hz * i as f64 / rate + 0.3).sin()
                })
                .sum::<f64>()
        }));
        self
    }

    fn tone(self, hz: f64, dbfs: f64, ms: f64) -> Self {
        self.tones(&[(hz, dbfs)], ms)
    }

    /// White noise at RMS `dbfs` for `ms`.
    fn noise(mut self, dbfs: f64, ms: f64, seed: u64) -> Self {
        let n = samples(ms, self.rate);
        let mut rng = Rng(seed | 1);
        let peak = 32768.0 * 10f64.powf(dbfs / 20.0);
        self.pcm.extend((0..n).map(|_| peak * rng.gauss()));
        self
    }

    fn samples_of(mut self, pcm: &[f64]) -> Self {
        self.pcm.extend_from_slice(pcm);
        self
    }

    /// Adds noise over the whole signal: white or pink, at RMS `dbfs`.
    fn with_noise(mut self, dbfs: f64, pink: bool, seed: u64) -> Self {
        let mut rng = Rng(seed | 1);
        let mut noise: Vec<f64> = if pink {
            // Paul Kellet's economy filter: within 0.5 dB of -3 dB/octave over the band.
            let (mut b0, mut b1, mut b2) = (0.0, 0.0, 0.0);
            (0..self.pcm.len())
                .map(|_| {
                    let w = rng.gauss();
                    b0 = 0.99765 * b0 + w * 0.099_046_0;
                    b1 = 0.96300 * b1 + w * 0.296_516_4;
                    b2 = 0.57000 * b2 + w * 1.052_691_3;
                    b0 + b1 + b2 + w * 0.1848
                })
                .collect()
        } else {
            (0..self.pcm.len()).map(|_| rng.gauss()).collect()
        };
        let gain = 10f64.powf((dbfs - rms_dbfs(&noise)) / 20.0);
        for (x, n) in self.pcm.iter_mut().zip(&mut noise) {
            *x += *n * gain;
        }
        self
    }

    /// Through a G.711 encoder and decoder (µ-law, or A-law), as a PCMU or PCMA call carries it.
    fn through_g711(mut self, alaw: bool) -> Self {
        for x in &mut self.pcm {
            let s = x.round().clamp(-32768.0, 32767.0) as i16;
            let s = if alaw {
                g711::alaw_decode(g711::alaw_encode(s))
            } else {
                g711::ulaw_decode(g711::ulaw_encode(s))
            };
            *x = f64::from(s);
        }
        self
    }

    fn frames(&self) -> Vec<Vec<i16>> {
        let n = frame_len(self.rate);
        self.pcm
            .chunks(n)
            .map(|c| {
                let mut f: Vec<i16> = c
                    .iter()
                    .map(|&x| x.round().clamp(-32768.0, 32767.0) as i16)
                    .collect();
                f.resize(n, 0);
                f
            })
            .collect()
    }
}

/// Speech from the embedded synthesizer at `rate` (kal, or kal16 at 16 kHz), with its
/// duration stretched by `stretch` and pitch shifted by `f0`, scaled to RMS `dbfs`.
fn speech(text: &str, rate: u32, stretch: f32, f0: f32, dbfs: f64) -> Vec<f64> {
    let mut engine = Engine::new();
    if rate == 16000 {
        assert!(engine.select_voice("kal16"));
    }
    engine.set_duration_stretch(stretch);
    engine.set_f0_shift(f0);
    let audio = engine.synthesize(text);
    assert_eq!(audio.sample_rate, rate);
    let pcm: Vec<f64> = audio.samples.iter().map(|&x| f64::from(x)).collect();
    let gain = 10f64.powf((dbfs - rms_dbfs(&pcm)) / 20.0);
    pcm.iter().map(|x| x * gain).collect()
}

/// Where speech in `pcm` really begins and ends (ms): the first and last 5 ms whose RMS is
/// within 35 dB of the loudest.
fn speech_bounds(pcm: &[f64], rate: u32) -> (f64, f64) {
    let n = samples(5.0, rate);
    let levels: Vec<f64> = pcm.chunks(n).map(rms_dbfs).collect();
    let top = levels.iter().copied().fold(f64::MIN, f64::max);
    let first = levels.iter().position(|&l| l > top - 35.0).unwrap();
    let last = levels.iter().rposition(|&l| l > top - 35.0).unwrap();
    (first as f64 * 5.0, (last + 1) as f64 * 5.0)
}

fn run_vad_on(vad: &mut Vad, signal: &Signal) -> Vec<(u64, VadEvent)> {
    let mut events = Vec::new();
    for (i, frame) in signal.frames().iter().enumerate() {
        if let Some(e) = vad.push(frame) {
            events.push((i as u64, e));
        }
    }
    events
}

fn clock(rate: u32) -> ClockRate {
    ClockRate::new(rate).unwrap()
}

fn vad_events(signal: &Signal, cfg: VadConfig) -> Vec<(u64, VadEvent)> {
    let mut vad = Vad::new(clock(signal.rate), cfg);
    run_vad_on(&mut vad, signal)
}

const SENTENCES: [&str; 3] = [
    "Hello, I would like to speak to someone about my account please.",
    "Yes. Sales please.",
    "Operator.",
];

/// Speech placed 1 s into silence or noise: speech starts within 60 ms of its onset (80 ms
/// at 10 dB SNR, where the first breath of a word is under the noise), ends once, and the end
/// is reported exactly `end_silence_ms` after the last speech frame.
#[test]
fn vad_finds_speech_in_silence_and_noise() {
    let cfg = VadConfig::default();
    let end_frames = u64::from(cfg.end_silence_ms / 20);
    for rate in RATES {
        for text in SENTENCES {
            let pcm = speech(text, rate, 1.0, 1.0, -20.0);
            let (on, off) = speech_bounds(&pcm, rate);
            let (on, off) = (1000.0 + on, 1000.0 + off);
            // (noise dBFS, pink, onset tolerance ms, how much earlier than the true end the
            // detector may hear the last of the speech, ms)
            let cases = [
                (None, false, 60.0, 40.0),
                (Some(-40.0), false, 60.0, 100.0),
                (Some(-40.0), true, 60.0, 100.0),
                (Some(-30.0), false, 80.0, 200.0),
                (Some(-30.0), true, 80.0, 200.0),
            ];
            for (noise, pink, on_tol, off_tol) in cases {
                let mut signal = Signal::new(rate)
                    .silence(1000.0)
                    .samples_of(&pcm)
                    .silence(1500.0);
                if let Some(level) = noise {
                    signal = signal.with_noise(level, pink, 11);
                }
                let events = vad_events(&signal, cfg);
                let what = format!("{rate} Hz {text:?} noise {noise:?} pink {pink}: {events:?}");
                assert_eq!(events.len(), 2, "{what}");
                let VadEvent::SpeechStarted { at_frame: start } = events[0].1 else {
                    panic!("{what}");
                };
                let VadEvent::SpeechEnded {
                    at_frame: end,
                    speech_frames,
                } = events[1].1
                else {
                    panic!("{what}");
                };
                let start_ms = start as f64 * 20.0;
                println!(
                    "{rate:>5} Hz noise {:>5} {:<5} onset {:+4.0} ms end {:+5.0} ms  {text}",
                    noise.map_or("none".to_string(), |l| format!("{l}")),
                    if pink { "pink" } else { "white" },
                    start_ms - on,
                    end as f64 * 20.0 - off
                );
                assert!((start_ms - on).abs() <= on_tol, "onset {on} ms: {what}");
                // Confirmed once min_speech_ms of it was heard, not much later.
                assert!(events[0].0 <= start + 10, "{what}");
                let end_ms = end as f64 * 20.0;
                assert!(
                    end_ms <= off + 40.0 && end_ms >= off - off_tol,
                    "end {off}: {what}"
                );
                assert_eq!(events[1].0, end + end_frames - 1, "{what}");
                assert_eq!(speech_frames, end - start, "{what}");
            }
        }
    }
}

/// A loud burst of white noise (speech-like in level, exact in length) of `ms`.
fn burst(signal: Signal, ms: f64) -> Signal {
    signal.noise(-20.0, ms, 5)
}

/// Pauses just shorter than `end_silence_ms` keep the speech going; one of exactly
/// `end_silence_ms` ends it, on the frame that completes it.
#[test]
fn vad_end_silence_edges() {
    for rate in RATES {
        for end_silence_ms in [800, 500] {
            let cfg = VadConfig {
                end_silence_ms,
                ..VadConfig::default()
            };
            let pause = f64::from(end_silence_ms);
            let signal = burst(Signal::new(rate).silence(500.0), 400.0);
            let signal = burst(signal.silence(pause - 20.0), 300.0);
            let signal = burst(signal.silence(pause - 20.0), 300.0);
            let signal = signal.silence(pause).silence(1000.0);
            let events = vad_events(&signal, cfg);
            let last = (500.0 + 400.0 + 2.0 * (pause - 20.0 + 300.0)) / 20.0;
            let last = last as u64;
            let frames = u64::from(end_silence_ms / 20);
            assert_eq!(
                events,
                vec![
                    (25 + 5, VadEvent::SpeechStarted { at_frame: 25 }),
                    (
                        last + frames - 1,
                        VadEvent::SpeechEnded {
                            at_frame: last,
                            speech_frames: last - 25
                        }
                    )
                ],
                "{rate} Hz, end_silence_ms {end_silence_ms}"
            );
        }
    }
}

/// Between words of real speech, pauses shorter than `end_silence_ms` do not end it.
#[test]
fn vad_pause_between_words_does_not_end_speech() {
    for rate in RATES {
        let word = speech("Support.", rate, 1.0, 1.0, -20.0);
        let (on, off) = speech_bounds(&word, rate);
        let word = &word[samples(on, rate)..samples(off, rate)];
        let signal = Signal::new(rate)
            .silence(500.0)
            .samples_of(word)
            .silence(760.0)
            .samples_of(word)
            .silence(1200.0)
            .with_noise(-45.0, false, 3);
        let events = vad_events(&signal, VadConfig::default());
        assert_eq!(events.len(), 2, "{rate}: {events:?}");
        let VadEvent::SpeechEnded { speech_frames, .. } = events[1].1 else {
            panic!("{events:?}");
        };
        let expected = (2.0 * (off - on) + 760.0) / 20.0;
        assert!(
            (speech_frames as f64 - expected).abs() <= 4.0,
            "{rate}: {speech_frames} frames, expected about {expected}: {events:?}"
        );
    }
}

/// A 40 ms 1 kHz key-like tone, a click and a burst just under `min_speech_ms` are not
/// speech; a burst just over it is.
#[test]
fn vad_short_sounds_are_not_speech() {
    let cfg = VadConfig::default();
    for rate in RATES {
        let mut click = Signal::new(rate).silence(600.0);
        let at = click.pcm.len();
        click.pcm[at - 10] = 30000.0;
        click.pcm[at - 9] = -30000.0;
        let signal = click
            .silence(600.0)
            .tone(1000.0, -10.0, 40.0)
            .silence(600.0);
        let signal = burst(signal, 100.0).silence(600.0);
        let signal = signal.with_noise(-50.0, false, 9);
        assert_eq!(vad_events(&signal, cfg), vec![], "{rate}");
        let signal = burst(Signal::new(rate).silence(600.0), 140.0).silence(1000.0);
        let events = vad_events(&signal, cfg);
        assert_eq!(events.len(), 2, "{rate}: {events:?}");
        assert_eq!(events[0].1, VadEvent::SpeechStarted { at_frame: 30 });
    }
}

/// Steady noise from the first frame, however loud, and lost packets (silent frames) within
/// it, are not speech; speech over it is found.
#[test]
fn vad_steady_noise_and_lost_packets_are_not_speech() {
    for rate in RATES {
        for (level, pink) in [(-25.0, false), (-25.0, true), (-45.0, false)] {
            let mut signal = Signal::new(rate)
                .silence(4000.0)
                .with_noise(level, pink, 21);
            let n = frame_len(rate);
            for lost in [40, 41, 42, 90] {
                signal.pcm[lost * n..(lost + 1) * n].fill(0.0);
            }
            assert_eq!(
                vad_events(&signal, VadConfig::default()),
                vec![],
                "{rate} {level}"
            );
        }
    }
}

/// `finish()` while the caller speaks ends the speech at its last loud frame.
#[test]
fn vad_finish_ends_speech_in_progress() {
    let signal = burst(Signal::new(8000).silence(400.0), 600.0).silence(200.0);
    let mut vad = Vad::new(ClockRate::HZ_8000, VadConfig::default());
    let events = run_vad_on(&mut vad, &signal);
    assert_eq!(events, vec![(25, VadEvent::SpeechStarted { at_frame: 20 })]);
    assert!(vad.is_speaking());
    assert_eq!(
        vad.finish(),
        Some(VadEvent::SpeechEnded {
            at_frame: 50,
            speech_frames: 30
        })
    );
    assert_eq!(vad.finish(), None);
    assert_eq!(vad.frames_seen(), 60);
}

// ---- answering-machine detection ----

fn amd_run(signal: &Signal, cfg: AmdConfig) -> Option<(usize, AmdResult)> {
    let mut amd = Amd::new(cfg);
    for (i, frame) in signal.frames().iter().enumerate() {
        if let Some(r) = amd.push(frame) {
            return Some((i, r));
        }
    }
    amd.finish().map(|r| (usize::MAX, r))
}

fn amd_case(rate: u32, build: impl Fn(Signal) -> Signal, cfg: AmdConfig) -> AmdResult {
    let signal = build(Signal::new(rate));
    amd_run(&signal.silence(6000.0), cfg).unwrap().1
}

fn assert_amd(r: &AmdResult, status: AmdStatus, cause: &str, words: u32) {
    assert_eq!(
        (r.status, r.cause.as_str(), r.words),
        (status, cause, words),
        "{r:?}"
    );
}

#[test]
fn amd_hello_then_silence_is_human() {
    for rate in RATES {
        for (text, stretch, f0) in [
            ("Hello?", 1.0, 1.0),
            ("Hello?", 1.3, 1.2),
            ("Yeah, hello.", 0.9, 1.0),
        ] {
            let hello = speech(text, rate, stretch, f0, -20.0);
            let (_, off) = speech_bounds(&hello, rate);
            let signal = Signal::new(rate)
                .silence(300.0)
                .samples_of(&hello)
                .silence(2000.0);
            let signal = signal.with_noise(-55.0, true, 4);
            let (frame, r) = amd_run(&signal, AmdConfig::default()).unwrap();
            assert_eq!(
                (r.status, r.status_str()),
                (AmdStatus::Human, "HUMAN"),
                "{rate} {text}: {r:?}"
            );
            assert_eq!(r.cause, "HUMAN-800-800");
            assert!((1..=3).contains(&r.words), "{r:?}");
            assert!(r.greeting_ms >= 200 && r.greeting_ms <= 1200, "{r:?}");
            // Decided 800 ms after the last of the voice.
            let decided_ms = (frame + 1) as f64 * 20.0;
            let end_ms = 300.0 + off;
            assert!(
                (decided_ms - end_ms - 800.0).abs() <= 60.0,
                "{decided_ms} vs {end_ms}: {r:?}"
            );
        }
    }
}

#[test]
fn amd_voicemail_greeting_is_machine() {
    let greeting = "Hi, you have reached the Smith family, we cannot come to the phone right \
                    now, please leave a message after the tone.";
    for rate in RATES {
        for (stretch, f0, noise) in [
            (1.0, 1.0, None),
            (1.2, 0.9, Some(-45.0)),
            (0.85, 1.1, Some(-40.0)),
        ] {
            let pcm = speech(greeting, rate, stretch, f0, -20.0);
            let mut signal = Signal::new(rate)
                .silence(400.0)
                .samples_of(&pcm)
                .tone(1000.0, -15.0, 400.0);
            if let Some(level) = noise {
                signal = signal.with_noise(level, false, 8);
            }
            let (_, r) = amd_run(&signal, AmdConfig::default()).unwrap();
            assert_eq!(r.status, AmdStatus::Machine, "{rate} {stretch}: {r:?}");
            assert!(
                r.cause.starts_with("MAXWORDS-4-3") || r.cause.starts_with("LONGGREETING-"),
                "{r:?}"
            );
            assert!(r.elapsed_ms < 3000, "{r:?}");
        }
    }
}

#[test]
fn amd_initial_silence_edges() {
    let cfg = AmdConfig::default();
    for rate in RATES {
        let r = amd_run(&Signal::new(rate).silence(3000.0), cfg).unwrap().1;
        assert_amd(&r, AmdStatus::Machine, "INITIALSILENCE-2500-2500", 0);
        assert_eq!(r.elapsed_ms, 2500);
        let r = amd_case(rate, |s| burst(s.silence(2480.0), 400.0), cfg);
        assert_amd(&r, AmdStatus::Human, "HUMAN-800-800", 1);
        let r = amd_case(rate, |s| burst(s.silence(2520.0), 400.0), cfg);
        assert_amd(&r, AmdStatus::Machine, "INITIALSILENCE-2500-2500", 0);
        // A click or a breath shorter than a word does not break the initial silence.
        let r = amd_case(rate, |s| burst(s.silence(1000.0), 80.0), cfg);
        assert_amd(&r, AmdStatus::Machine, "INITIALSILENCE-2500-2500", 0);
    }
}

#[test]
fn amd_greeting_length_edges() {
    let cfg = AmdConfig::default();
    for rate in RATES {
        let r = amd_case(rate, |s| burst(s.silence(300.0), 1480.0), cfg);
        assert_amd(&r, AmdStatus::Human, "HUMAN-800-800", 1);
        assert_eq!(r.greeting_ms, 1480);
        let r = amd_case(rate, |s| burst(s.silence(300.0), 1520.0), cfg);
        assert_amd(&r, AmdStatus::Machine, "LONGGREETING-1520-1500", 1);
        // Voice in words adds up across words.
        let r = amd_case(
            rate,
            |s| burst(burst(s.silence(300.0), 800.0).silence(300.0), 800.0),
            cfg,
        );
        assert_amd(&r, AmdStatus::Machine, "LONGGREETING-1520-1500", 2);
    }
}

/// After 300 ms of silence, `n` bursts of 200 ms, each followed by `gap` ms of silence.
fn words(n: usize, gap: f64) -> impl Fn(Signal) -> Signal {
    move |mut s: Signal| {
        s = s.silence(300.0);
        for _ in 0..n {
            s = burst(s, 200.0).silence(gap);
        }
        s
    }
}

#[test]
fn amd_word_count_edges() {
    let cfg = AmdConfig::default();
    for rate in RATES {
        let r = amd_case(rate, words(3, 200.0), cfg);
        assert_amd(&r, AmdStatus::Human, "HUMAN-800-800", 3);
        assert_eq!(r.greeting_ms, 600);
        let r = amd_case(rate, words(4, 200.0), cfg);
        assert_amd(&r, AmdStatus::Machine, "MAXWORDS-4-3", 4);
    }
}

#[test]
fn amd_word_length_and_gap_edges() {
    let cfg = AmdConfig::default();
    for rate in RATES {
        // 100 ms of voice is a word; 80 ms is not.
        let r = amd_case(rate, |s| burst(s.silence(300.0), 100.0), cfg);
        assert_amd(&r, AmdStatus::Human, "HUMAN-800-800", 1);
        let r = amd_case(rate, |s| burst(s.silence(300.0), 80.0), cfg);
        assert_amd(&r, AmdStatus::Machine, "INITIALSILENCE-2500-2500", 0);
        // Four pieces of voice 40 ms apart are one word; 60 ms apart, four words.
        let r = amd_case(rate, words(4, 40.0), cfg);
        assert_amd(&r, AmdStatus::Human, "HUMAN-800-800", 1);
        let r = amd_case(rate, words(4, 60.0), cfg);
        assert_amd(&r, AmdStatus::Machine, "MAXWORDS-4-3", 4);
        // After-greeting silence: 780 ms between words is not yet a person.
        let r = amd_case(
            rate,
            |s| burst(burst(s.silence(300.0), 200.0).silence(780.0), 200.0),
            cfg,
        );
        assert_amd(&r, AmdStatus::Human, "HUMAN-800-800", 2);
        assert_eq!(r.elapsed_ms, 300 + 200 + 780 + 200 + 800);
    }
}

#[test]
fn amd_threshold_is_average_absolute_value() {
    for rate in RATES {
        // A square wave of ±250 is silence at 256, ±260 is voice.
        for (level, words) in [(250.0, 0), (260.0, 1)] {
            let mut s = Signal::new(rate).silence(300.0);
            let n = samples(400.0, rate);
            s.pcm
                .extend((0..n).map(|i| if (i / 4) % 2 == 0 { level } else { -level }));
            let r = amd_run(&s.silence(3000.0), AmdConfig::default()).unwrap().1;
            assert_eq!(r.words, words, "{rate} {level}: {r:?}");
        }
    }
}

#[test]
fn amd_continuous_speech_is_not_sure() {
    // The greeting and word limits raised, as for a line whose callers talk at length:
    // speech with no pause as long as after_greeting_silence runs into the analysis limit.
    let cfg = AmdConfig {
        greeting: 10_000,
        maximum_number_of_words: 100,
        maximum_word_length: 10_000,
        ..AmdConfig::default()
    };
    for rate in RATES {
        let text = "Well I was going to say that the thing about the account is that it keeps \
                    changing every month and nobody can tell me why it does that";
        let pcm = speech(text, rate, 1.0, 1.0, -20.0);
        let signal = Signal::new(rate).silence(200.0).samples_of(&pcm);
        let (frame, r) = amd_run(&signal, cfg).unwrap();
        assert_eq!(
            (r.status, r.status_str()),
            (AmdStatus::NotSure, "NOTSURE"),
            "{r:?}"
        );
        assert_eq!(r.cause, "TOOLONG-5000");
        assert_eq!(frame, 249);
        assert!(r.words >= 4, "{r:?}");
        // With the defaults the same speech is a machine.
        let r = amd_run(&signal, AmdConfig::default()).unwrap().1;
        assert_eq!(r.status, AmdStatus::Machine, "{r:?}");
        // Continuous sound with no gap at all, one very long word.
        let r = amd_case(rate, |s| burst(s, 5200.0), cfg);
        assert_amd(&r, AmdStatus::NotSure, "TOOLONG-5000", 1);
    }
}

#[test]
fn amd_hangup_mid_analysis() {
    for rate in RATES {
        let signal = burst(Signal::new(rate).silence(500.0), 300.0).silence(300.0);
        let (frame, r) = amd_run(&signal, AmdConfig::default()).unwrap();
        assert_eq!(frame, usize::MAX);
        assert_eq!((r.status, r.status_str()), (AmdStatus::Hangup, "HANGUP"));
        assert_eq!(
            (r.cause.as_str(), r.words, r.greeting_ms),
            ("HANGUP-1100", 1, 300)
        );
        let mut amd = Amd::new(AmdConfig::default());
        assert_eq!(amd.finish().map(|r| r.cause), Some("HANGUP-0".to_string()));
        assert_eq!(amd.finish(), None);
        assert_eq!(amd.push(&[0; 160]), None);
    }
}

// ---- the voicemail beep ----

fn beeps(signal: &Signal) -> (Vec<(usize, Beep)>, Option<Beep>) {
    let mut det = BeepDetector::new(clock(signal.rate)).unwrap();
    let mut found = Vec::new();
    for (i, frame) in signal.frames().iter().enumerate() {
        if let Some(b) = det.push(frame) {
            found.push((i, b));
        }
    }
    (found, det.finish())
}

/// One beep found where it is, with its frequency and length, reported on the frame after it
/// ended (within 40 ms of its end, never before).
fn assert_one_beep(signal: &Signal, hz: f64, at_ms: f64, ms: f64, what: &str) {
    let (found, unfinished) = beeps(signal);
    assert_eq!(found.len(), 1, "{what}: {found:?}");
    assert_eq!(unfinished, None, "{what}");
    let (frame, b) = found[0];
    assert!(b.ended, "{what}");
    assert!((b.hz - hz).abs() <= 2.0, "{what}: {b:?}");
    assert!((b.at_ms - at_ms).abs() <= 3.0, "{what}: {b:?}");
    assert!((b.ms - ms).abs() <= 3.0, "{what}: {b:?}");
    let reported_ms = (frame + 1) as f64 * 20.0;
    let end = at_ms + ms;
    assert!(
        reported_ms >= end && reported_ms <= end + 40.0,
        "{what}: {reported_ms} {b:?}"
    );
}

#[test]
fn beep_after_greeting_is_found() {
    let text = "Please leave a message after the tone.";
    for rate in RATES {
        for (i, hz) in [440.0, 850.0, 1000.0, 1400.0, 1900.0]
            .into_iter()
            .enumerate()
        {
            let pcm = speech(text, rate, 1.0, 1.0, -20.0);
            let greeting_ms = pcm.len() as f64 * 1000.0 / f64::from(rate);
            // Straight after the greeting, no gap; and 300 ms later.
            for gap in [0.0, 300.0 + i as f64 * 7.0] {
                let signal = Signal::new(rate)
                    .silence(200.0)
                    .samples_of(&pcm)
                    .silence(gap)
                    .tone(hz, -12.0, 500.0)
                    .silence(1000.0);
                let signal = if rate == 8000 {
                    signal.through_g711(i % 2 == 1)
                } else {
                    signal
                };
                let at = 200.0 + greeting_ms + gap;
                assert_one_beep(
                    &signal,
                    hz,
                    at,
                    500.0,
                    &format!("{rate} Hz, {hz} Hz, gap {gap}"),
                );
            }
        }
    }
}

#[test]
fn beep_band_edges() {
    for rate in RATES {
        for (hz, found) in [
            (395.0, false),
            (405.0, true),
            (1995.0, true),
            (2005.0, false),
        ] {
            let signal = Signal::new(rate)
                .silence(333.0)
                .tone(hz, -15.0, 300.0)
                .silence(500.0);
            let what = format!("{rate} Hz, tone {hz}");
            if found {
                assert_one_beep(&signal, hz, 333.0, 300.0, &what);
            } else {
                assert_eq!(beeps(&signal), (vec![], None), "{what}");
            }
        }
    }
}

#[test]
fn beep_length_edges() {
    for rate in RATES {
        // Starting at several places within a frame.
        for offset in [0.0, 3.0, 7.5, 11.0, 16.0, 19.0] {
            for (ms, found) in [(75.0, false), (80.0, true), (85.0, true)] {
                let at = 500.0 + offset;
                let signal = Signal::new(rate)
                    .silence(at)
                    .tone(1000.0, -15.0, ms)
                    .silence(500.0);
                let what = format!("{rate} Hz, {ms} ms at {at}");
                if found {
                    assert_one_beep(&signal, 1000.0, at, ms, &what);
                } else {
                    assert_eq!(beeps(&signal), (vec![], None), "{what}");
                }
            }
        }
    }
}

#[test]
fn quiet_beep_in_noise_is_found() {
    for rate in RATES {
        for (noise, pink) in [(-50.0, false), (-45.0, true), (-42.0, false)] {
            let signal = Signal::new(rate)
                .silence(1000.0)
                .tone(1000.0, -30.0, 250.0)
                .silence(1000.0)
                .tone(500.0, -30.0, 250.0)
                .silence(1000.0)
                .with_noise(noise, pink, 17);
            let (found, _) = beeps(&signal);
            assert_eq!(found.len(), 2, "{rate} {noise} {pink}: {found:?}");
            for ((_, b), (hz, at)) in found.iter().zip([(1000.0, 1000.0), (500.0, 2250.0)]) {
                assert!((b.hz - hz).abs() <= 3.0, "{b:?}");
                assert!(
                    (b.at_ms - at).abs() <= 5.0 && (b.ms - 250.0).abs() <= 8.0,
                    "{b:?}"
                );
            }
        }
    }
}

#[test]
fn speech_is_not_a_beep() {
    let texts = [
        "Hi, you have reached the Smith family, we cannot come to the phone right now, \
         please leave a message after the tone.",
        "Ooooooh. Aaaaaah. Eeeeeee. Mmmmmm. Nooooo.",
        "Hello? Hello, who is this? Yes, speaking.",
    ];
    for rate in RATES {
        for text in texts {
            for (stretch, f0) in [(1.0, 1.0), (0.8, 1.3), (2.0, 0.8), (3.0, 1.6)] {
                let signal = Signal::new(rate)
                    .silence(200.0)
                    .samples_of(&speech(text, rate, stretch, f0, -15.0));
                assert_eq!(
                    beeps(&signal),
                    (vec![], None),
                    "{rate} {text} {stretch} {f0}"
                );
            }
        }
    }
}

#[test]
fn dtmf_dial_tone_silence_and_noise_are_not_beeps() {
    const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
    const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    for rate in RATES {
        let mut signal = Signal::new(rate).silence(300.0);
        for (row, col) in ROWS.iter().flat_map(|r| COLS.iter().map(move |c| (*r, *c))) {
            // Equal levels, and 6 dB of twist either way.
            for (lo, hi) in [(-15.0, -15.0), (-12.0, -18.0), (-18.0, -12.0)] {
                signal = signal.tones(&[(row, lo), (col, hi)], 120.0).silence(80.0);
            }
        }
        signal = signal
            .tones(&[(350.0, -13.0), (440.0, -13.0)], 3000.0)
            .silence(300.0);
        signal = signal
            .tones(&[(440.0, -19.0), (480.0, -19.0)], 2000.0)
            .silence(300.0);
        signal = signal.noise(-20.0, 1000.0, 3).silence(2000.0);
        assert_eq!(beeps(&signal), (vec![], None), "{rate}");
        let pink = Signal::new(rate).silence(3000.0).with_noise(-20.0, true, 5);
        assert_eq!(beeps(&pink), (vec![], None), "{rate}");
    }
}

#[test]
fn unfinished_tone_is_not_a_beep() {
    for rate in RATES {
        let signal = Signal::new(rate).silence(400.0).tone(1000.0, -15.0, 300.0);
        let (found, unfinished) = beeps(&signal);
        assert_eq!(found, vec![]);
        let b = unfinished.unwrap();
        assert!(!b.ended && (b.hz - 1000.0).abs() < 2.0, "{b:?}");
        assert!(
            (b.at_ms - 400.0).abs() <= 3.0 && (b.ms - 300.0).abs() <= 3.0,
            "{b:?}"
        );
        // Too short so far: nothing at all.
        let signal = Signal::new(rate).silence(400.0).tone(1000.0, -15.0, 50.0);
        assert_eq!(beeps(&signal), (vec![], None));
        assert!(BeepDetector::new(ClockRate::new(8001).unwrap()).is_err());
    }
}

/// One generated answer: what AMD must say, and the beep (Hz) the beep detector must find.
struct AnswerCase {
    name: String,
    signal: Signal,
    hangup_after_ms: Option<f64>,
    status: AmdStatus,
    cause: &'static str,
    beep_hz: Option<f64>,
}

/// AMD and beep detection run side by side over generated answers (voices, speeds, noise,
/// greetings with and without beeps, "hello?", silence, hang-ups), as a call feeds them; the
/// table is printed.
#[test]
fn amd_and_beep_on_generated_answers() {
    let greetings = [
        "Hi, you have reached the Smith family, we cannot come to the phone right now, \
         please leave a message after the tone.",
        "You have reached the voicemail of John. Leave a message.",
        "The person you are calling is not available. Please record your message.",
    ];
    let hellos = ["Hello?", "Speaking.", "Yes?"];
    let mut cases = Vec::new();
    for rate in RATES {
        for (i, text) in greetings.iter().enumerate() {
            let (stretch, f0, noise) = [
                (1.0, 1.0, None),
                (1.15, 0.9, Some(-45.0)),
                (0.9, 1.2, Some(-38.0)),
            ][i];
            for beep in [None, Some([440.0, 1000.0, 1900.0][i])] {
                let pcm = speech(text, rate, stretch, f0, -18.0);
                let mut signal = Signal::new(rate).silence(500.0).samples_of(&pcm);
                if let Some(hz) = beep {
                    signal = signal.silence(150.0).tone(hz, -14.0, 400.0);
                }
                signal = signal.silence(1500.0);
                if let Some(level) = noise {
                    signal = signal.with_noise(level, i == 2, 31 + i as u64);
                }
                cases.push(AnswerCase {
                    name: format!(
                        "{rate} Hz greeting {} ×{stretch} noise {noise:?} beep {beep:?}",
                        i + 1
                    ),
                    signal,
                    hangup_after_ms: None,
                    status: AmdStatus::Machine,
                    // Synthesized speech has few pauses as long as a word gap: its words run
                    // together, and the voice adds up past the greeting limit.
                    cause: "LONGGREETING-1520-1500",
                    beep_hz: beep,
                });
            }
        }
        for (i, text) in hellos.iter().enumerate() {
            let (stretch, noise) = [(1.0, None), (1.2, Some(-45.0)), (0.9, Some(-40.0))][i];
            let pcm = speech(text, rate, stretch, 1.0, -18.0);
            let mut signal = Signal::new(rate)
                .silence(400.0)
                .samples_of(&pcm)
                .silence(3000.0);
            if let Some(level) = noise {
                signal = signal.with_noise(level, true, 41 + i as u64);
            }
            cases.push(AnswerCase {
                name: format!("{rate} Hz {text:?} ×{stretch} noise {noise:?}"),
                signal,
                hangup_after_ms: None,
                status: AmdStatus::Human,
                cause: "HUMAN-800-800",
                beep_hz: None,
            });
        }
        cases.push(AnswerCase {
            name: format!("{rate} Hz silence"),
            signal: Signal::new(rate)
                .silence(4000.0)
                .with_noise(-60.0, false, 2),
            hangup_after_ms: None,
            status: AmdStatus::Machine,
            cause: "INITIALSILENCE-2500-2500",
            beep_hz: None,
        });
        let pcm = speech("Hello? Who is", rate, 1.0, 1.0, -18.0);
        cases.push(AnswerCase {
            name: format!("{rate} Hz hangs up mid-word"),
            signal: Signal::new(rate).silence(300.0).samples_of(&pcm),
            hangup_after_ms: Some(300.0 + pcm.len() as f64 * 1000.0 / f64::from(rate) - 250.0),
            status: AmdStatus::Hangup,
            cause: "HANGUP-",
            beep_hz: None,
        });
    }
    assert!(cases.len() >= 20);
    println!(
        "{:<72} {:>8} {:<26} {:>6} {:>6}",
        "case", "status", "cause", "words", "beep"
    );
    let mut failures = Vec::new();
    for case in cases.iter_mut() {
        // A narrowband answer comes as PCMU.
        if case.signal.rate == 8000 {
            let pcm = std::mem::take(&mut case.signal.pcm);
            case.signal = Signal { rate: 8000, pcm }.through_g711(false);
        }
    }
    for case in &cases {
        let rate = case.signal.rate;
        let mut amd = Amd::new(AmdConfig::default());
        let mut det = BeepDetector::new(clock(rate)).unwrap();
        let mut result = None;
        let mut found = Vec::new();
        for (i, frame) in case.signal.frames().iter().enumerate() {
            if case.hangup_after_ms.is_some_and(|ms| i as f64 * 20.0 >= ms) {
                break;
            }
            if result.is_none() {
                result = amd.push(frame);
            }
            found.extend(det.push(frame));
        }
        let result = result.or_else(|| amd.finish()).unwrap();
        let beep = found.first().map(|b| b.hz);
        println!(
            "{:<72} {:>8} {:<26} {:>6} {:>6}",
            case.name,
            result.status_str(),
            result.cause,
            result.words,
            beep.map_or("-".to_string(), |hz| format!("{hz:.0}"))
        );
        let beep_ok = match (case.beep_hz, beep) {
            (Some(want), Some(got)) => (want - got).abs() <= 2.0 && found.len() == 1,
            (None, None) => true,
            _ => false,
        };
        if result.status != case.status || !result.cause.starts_with(case.cause) || !beep_ok {
            failures.push(case.name.clone());
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// After construction the detectors allocate nothing per frame; AMD allocates once, for the
/// text of its result.
#[test]
fn detectors_do_not_allocate_per_frame() {
    for rate in RATES {
        let pcm = speech(
            "Please leave a message after the tone.",
            rate,
            1.0,
            1.0,
            -20.0,
        );
        let signal = Signal::new(rate)
            .silence(300.0)
            .samples_of(&pcm)
            .tone(1000.0, -15.0, 300.0)
            .silence(1500.0)
            .with_noise(-50.0, true, 1);
        let frames = signal.frames();
        let mut vad = Vad::new(clock(rate), VadConfig::default());
        let mut amd = Amd::new(AmdConfig::default());
        let mut det = BeepDetector::new(clock(rate)).unwrap();
        let (mut vad_events, mut results, mut found) = (0, 0, 0);
        let allocs = thread_alloc::allocations(|| {
            for frame in &frames {
                vad_events += usize::from(vad.push(frame).is_some());
                found += usize::from(det.push(frame).is_some());
                results += usize::from(amd.push(frame).is_some());
            }
        });
        assert_eq!((vad_events, results, found), (2, 1, 1), "{rate}");
        assert_eq!(allocs, 1, "{rate}");
    }
}
