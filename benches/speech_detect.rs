//! Per 20 ms frame cost of the caller-audio detectors (voice activity, answering machines, the
//! voicemail beep), at 8 and 16 kHz: each runs for every caller being listened to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use switchboard::media::resample::resample;
use switchboard::rtp::types::ClockRate;
use switchboard::speech::amd::{Amd, AmdConfig};
use switchboard::speech::beep::BeepDetector;
use switchboard::speech::vad::{Vad, VadConfig};

fn speech() -> Vec<i16> {
    include_bytes!("../tests/fixtures/speech-8k.raw")
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The fixture's speech followed by 2 s of a 1 kHz beep at −15 dBFS, at `rate`: the beep
/// detector follows a tone for a sixth of the frames.
fn speech_and_beep(rate: ClockRate) -> Vec<i16> {
    let mut pcm = resample(&speech(), 8000, rate).expect("resampled");
    let hz = f64::from(rate.hz());
    let peak = 32768.0 * 10f64.powf(-15.0 / 20.0) * std::f64::consts::SQRT_2;
    pcm.extend(
        (0..rate.hz() as usize * 2)
            .map(|i| (peak * (std::f64::consts::TAU * 1000.0 * i as f64 / hz).sin()) as i16),
    );
    pcm
}

fn frames(pcm: &[i16], rate: ClockRate) -> Vec<&[i16]> {
    pcm.chunks_exact(rate.hz() as usize / 50).collect()
}

/// One iteration is one frame, taken in turn from the signal so the detector's state moves as
/// in a call.
fn per_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("speech_detect/per_20ms_frame");
    for rate in [ClockRate::HZ_8000, ClockRate::HZ_16000] {
        let pcm = speech_and_beep(rate);
        let frames = frames(&pcm, rate);
        let hz = rate.hz();
        group.bench_function(format!("vad_{hz}_hz"), |b| {
            let mut vad = Vad::new(rate, VadConfig::default());
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % frames.len();
                black_box(vad.push(black_box(frames[i])))
            });
        });
        group.bench_function(format!("amd_{hz}_hz"), |b| {
            // Limits that keep it analysing, and a new detection whenever one ends, so the
            // figure is the analysis, not the early return after a decision.
            let cfg = AmdConfig {
                greeting: 100_000,
                maximum_number_of_words: 100_000,
                maximum_word_length: 100_000,
                initial_silence: 100_000,
                after_greeting_silence: 100_000,
                total_analysis_time: 100_000,
                ..AmdConfig::default()
            };
            let mut amd = Amd::new(cfg);
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % frames.len();
                if amd.is_done() {
                    amd = Amd::new(cfg);
                }
                black_box(amd.push(black_box(frames[i])))
            });
        });
        group.bench_function(format!("beep_{hz}_hz"), |b| {
            let mut beep = BeepDetector::new(rate).expect("a supported rate");
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % frames.len();
                black_box(beep.push(black_box(frames[i])))
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = per_frame
}
criterion_main!(benches);
