//! Per-frame cost of the media tick's prompt path: streaming resampling and prompt playback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use switchboard::media::prompt::{Prompt, PromptPlayer};
use switchboard::media::resample::StreamResampler;
use switchboard::rtp::types::ClockRate;

/// `r` Hz as a clock rate.
fn hz(r: u32) -> ClockRate {
    ClockRate::new(r).expect("a non-zero rate")
}

fn tone(n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| ((i as f64 * 0.37).sin() * 8000.0) as i16)
        .collect()
}

fn resample_frame(c: &mut Criterion) {
    for (from, to) in [
        (8000, 16000),
        (16000, 8000),
        (8000, 48000),
        (48000, 8000),
        (16000, 48000),
        (48000, 16000),
    ] {
        let mut r = StreamResampler::new(hz(from), hz(to), 20).expect("valid rates");
        let input = tone(r.input_len());
        let mut output = vec![0i16; r.output_len()];
        c.bench_function(&format!("stream_resample_20ms_{from}_to_{to}"), |b| {
            b.iter(|| {
                r.process(black_box(&input), &mut output)
                    .expect("frame sizes match");
                black_box(&output);
            })
        });
    }
}

fn player_fill(c: &mut Criterion) {
    let prompt = Arc::new(Prompt {
        samples: tone(8000 * 10).into(),
        rate: 8000,
        name: "bench".into(),
    });
    let mut player = PromptPlayer::new(prompt);
    let mut frame = [0i16; 160];
    c.bench_function("prompt_player_fill_20ms_8k", |b| {
        b.iter(|| {
            if player.fill(black_box(&mut frame)) < frame.len() {
                player.rewind();
            }
            black_box(&frame);
        })
    });
}

criterion_group!(benches, resample_frame, player_fill);
criterion_main!(benches);
