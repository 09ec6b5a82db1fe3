//! Per-frame cost of the media DSP blocks: G.711, in-band DTMF detection, tone generation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use switchboard::media::codec::{g711, CodecKind};
use switchboard::media::dtmf::{Digit, InbandDetector};
use switchboard::media::tone::{ToneGenerator, ToneSpec};
use switchboard::rtp::types::ClockRate;

const FRAME: usize = 160;

fn speech() -> Vec<i16> {
    include_bytes!("../tests/fixtures/speech-8k.raw")
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn g711_bench(c: &mut Criterion) {
    let pcm: Vec<i16> = speech()[8000..8000 + FRAME].to_vec();
    let mut enc = [0u8; FRAME];
    let mut dec = [0i16; FRAME];
    c.bench_function("g711/ulaw_encode_decode_160", |b| {
        b.iter(|| {
            g711::ulaw_encode_slice(black_box(&pcm), &mut enc);
            g711::ulaw_decode_slice(black_box(&enc), &mut dec);
            black_box(&dec);
        })
    });
    c.bench_function("g711/ulaw_encode_160", |b| {
        b.iter(|| {
            g711::ulaw_encode_slice(black_box(&pcm), &mut enc);
            black_box(&enc);
        })
    });
    c.bench_function("g711/ulaw_decode_160", |b| {
        b.iter(|| {
            g711::ulaw_decode_slice(black_box(&enc), &mut dec);
            black_box(&dec);
        })
    });
    c.bench_function("g711/alaw_encode_decode_160", |b| {
        b.iter(|| {
            g711::alaw_encode_slice(black_box(&pcm), &mut enc);
            g711::alaw_decode_slice(black_box(&enc), &mut dec);
            black_box(&dec);
        })
    });
    // The leg's path: one boxed codec per leg, called through the trait.
    let mut codec = CodecKind::Pcmu.new_codec();
    c.bench_function("g711/codec_ulaw_encode_decode_160", |b| {
        b.iter(|| {
            let n = codec.encode(black_box(&pcm), &mut enc).unwrap();
            codec.decode(black_box(&enc[..n]), &mut dec).unwrap();
            black_box(&dec);
        })
    });
}

/// Cost of one 160-sample frame, cycling through `signal` so the detector's state evolves.
fn detect_frames(c: &mut Criterion, name: &str, signal: &[i16]) {
    let frames: Vec<&[i16]> = signal.chunks_exact(FRAME).collect();
    let mut det = InbandDetector::new(ClockRate::HZ_8000).expect("8 kHz is supported");
    let mut i = 0;
    let mut digits = 0u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            det.push(black_box(frames[i]), |_| digits += 1);
            i = (i + 1) % frames.len();
        })
    });
    black_box(digits);
}

fn dtmf_bench(c: &mut Criterion) {
    let speech = speech();
    detect_frames(c, "dtmf/detect_160_speech", &speech);

    let mut tones = vec![0i16; 8000];
    let mut at = 0;
    for ch in "0123456789*#ABCD".chars() {
        let d = Digit::from_char(ch).expect("keypad character");
        let mut g = ToneGenerator::new(&ToneSpec::dtmf(d, 100, 60), ClockRate::HZ_8000)
            .expect("valid tone");
        at += g.fill(&mut tones[at..]);
    }
    tones.truncate(at);
    detect_frames(c, "dtmf/detect_160_dtmf", &tones);

    let silence = vec![0i16; 1600];
    detect_frames(c, "dtmf/detect_160_silence", &silence);
}

fn tone_bench(c: &mut Criterion) {
    let mut g =
        ToneGenerator::new(&ToneSpec::ringback_us(), ClockRate::HZ_8000).expect("valid tone");
    let mut frame = [0i16; FRAME];
    c.bench_function("tone/ringback_us_160", |b| {
        b.iter(|| {
            g.fill(black_box(&mut frame));
            black_box(&frame);
        })
    });
}

criterion_group!(benches, g711_bench, dtmf_bench, tone_bench);
criterion_main!(benches);
