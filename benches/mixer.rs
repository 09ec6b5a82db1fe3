//! Conference mixer cost per tick: a 500-member room with 3 talkers, against a naive
//! mix-minus that gives every member a frame of its own.
//!
//! Per member per tick = the tick's time / 500. The listeners' share is what the shared frame
//! saves: with it they cost one talker-detection check each (and with RFC 6464 levels from the
//! sender, not even that), and one G.711 encode serves all of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use switchboard::conference::{AudioLevel, Inbound, MemberKind, MixOutput, Mixer, VadConfig};
use switchboard::media::codec::g711;
use switchboard::media::frame::{Frame, FRAME_SAMPLES, NARROW_RATE};

#[path = "support/alloc.rs"]
mod alloc;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

const MEMBERS: usize = 500;
const TALKERS: usize = 3;

fn speech() -> Vec<i16> {
    include_bytes!("../tests/fixtures/speech-8k.raw")
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Each member's inbound frame: speech for the talkers, faint line noise for the rest.
fn inputs() -> Vec<(Frame, Option<AudioLevel>)> {
    let speech = speech();
    let mut state = 12345u32;
    (0..MEMBERS)
        .map(|k| {
            if k < TALKERS {
                let at = 8000 + k * 4000;
                let mut f = Frame::silence(NARROW_RATE);
                f.copy_from_slice(&speech[at..at + FRAME_SAMPLES]);
                (f, AudioLevel::new(20))
            } else {
                let f = Frame::from(std::array::from_fn(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    ((state >> 16) % 81) as i16 - 40
                }));
                (f, AudioLevel::new(65))
            }
        })
        .collect()
}

fn room() -> Mixer {
    let vad = VadConfig {
        start_dbov: -50.0,
        stop_dbov: -55.0,
        ..VadConfig::default()
    };
    let mut mixer = Mixer::with_capacity(vad, MEMBERS).expect("valid config");
    for _ in 0..MEMBERS {
        mixer
            .add_member(MemberKind::Speaker)
            .expect("room has space");
    }
    mixer
}

fn tick(mixer: &mut Mixer, inputs: &[(Frame, Option<AudioLevel>)], levels: bool) {
    mixer.mix(|id| {
        let (pcm, level) = &inputs[id.index()];
        Some(Inbound {
            pcm,
            level: if levels { *level } else { None },
        })
    });
}

/// Encodes what the mixer produced: the shared frame once, the own frames each.
fn encode_outputs(mixer: &Mixer, shared: &mut [u8; FRAME_SAMPLES], own: &mut [u8; FRAME_SAMPLES]) {
    g711::ulaw_encode_slice(mixer.shared_frame(), shared);
    for (_, out) in mixer.outputs() {
        if let MixOutput::Own(f) = out {
            g711::ulaw_encode_slice(f, own);
            black_box(&own);
        } else {
            black_box(&shared);
        }
    }
}

/// Every member's frame summed, then `sat16(sum − own)` for each: one frame per member.
struct Naive {
    sum: [i32; FRAME_SAMPLES],
    out: Vec<Frame>,
}

impl Naive {
    fn new() -> Self {
        Self {
            sum: [0; FRAME_SAMPLES],
            out: vec![Frame::silence(NARROW_RATE); MEMBERS],
        }
    }

    fn tick(&mut self, inputs: &[(Frame, Option<AudioLevel>)]) {
        self.sum = [0; FRAME_SAMPLES];
        for (f, _) in inputs {
            for (s, &x) in self.sum.iter_mut().zip(f) {
                *s += i32::from(x);
            }
        }
        for (out, (f, _)) in self.out.iter_mut().zip(inputs) {
            for ((o, &s), &x) in out.iter_mut().zip(&self.sum).zip(f) {
                *o = (s - i32::from(x)).clamp(-32768, 32767) as i16;
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let inputs = inputs();
    let mut mixer = room();
    for _ in 0..10 {
        tick(&mut mixer, &inputs, false);
    }
    assert_eq!(mixer.talker_count(), TALKERS, "the room's talkers");
    while mixer.poll_event().is_some() {}
    let before = alloc::allocations();
    for _ in 0..100 {
        tick(&mut mixer, &inputs, false);
    }
    assert_eq!(alloc::allocations(), before, "a tick allocated");

    let mut g = c.benchmark_group("mixer_500x3");
    g.bench_function("shared_energy", |b| {
        b.iter(|| tick(&mut mixer, black_box(&inputs), false))
    });
    g.bench_function("shared_rfc6464", |b| {
        b.iter(|| tick(&mut mixer, black_box(&inputs), true))
    });
    let mut naive = Naive::new();
    g.bench_function("naive_mix_minus", |b| {
        b.iter(|| {
            naive.tick(black_box(&inputs));
            black_box(&naive.out);
        })
    });

    let (mut shared, mut own) = ([0u8; FRAME_SAMPLES], [0u8; FRAME_SAMPLES]);
    g.bench_function("shared_energy_ulaw", |b| {
        b.iter(|| {
            tick(&mut mixer, black_box(&inputs), false);
            encode_outputs(&mixer, &mut shared, &mut own);
        })
    });
    g.bench_function("naive_mix_minus_ulaw", |b| {
        b.iter(|| {
            naive.tick(black_box(&inputs));
            for f in &naive.out {
                g711::ulaw_encode_slice(f, &mut own);
                black_box(&own);
            }
        })
    });
    g.finish();
    assert_eq!(mixer.talker_count(), TALKERS, "the room's talkers");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
