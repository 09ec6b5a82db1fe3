//! A conference room's whole per-tick work on its worker: one room of 500 G.711 members, 3 of
//! them talking, mixed, the shared frame encoded once, and every member's send half (RTP
//! header, payload, RTCP check) into a no-op sink. The receive half (jitter buffer, decode,
//! DTMF detection) is each leg's own cost with or without a room and is not counted here.
//!
//! Reports the median per member per tick, asserts the steady-state tick allocates nothing,
//! and prints the memory a member costs (leg and room state).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard::conference::host::{MemberLegs, RoomHost};
use switchboard::conference::MemberId;
use switchboard::media::codec::CodecKind;
use switchboard::media::frame::{Frame, FRAME, FRAME_SAMPLES, NARROW_RATE};
use switchboard::media::leg::Leg;

#[path = "support/alloc.rs"]
mod alloc;
#[path = "support/leg.rs"]
mod leg;
#[path = "support/room.rs"]
mod room;

use leg::pcmu_leg;

#[global_allocator]
static A: alloc::Counting = alloc::Counting;

const MEMBERS: usize = 500;
const TALKERS: usize = 3;

fn speech() -> Vec<i16> {
    include_bytes!("../tests/fixtures/speech-8k.raw")
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The worker's legs as the room reaches them, without sockets.
struct BenchLegs {
    legs: Vec<Leg>,
    ids: Vec<u64>,
    inputs: Vec<Frame>,
    tick: u64,
    now: Instant,
    bytes: usize,
}

impl MemberLegs for BenchLegs {
    fn find(&self, leg: u64) -> Option<usize> {
        self.ids.iter().position(|&i| i == leg)
    }
    fn bind(&mut self, _: usize, _: Option<(u64, MemberId)>) {}
    fn input(&self, tag: usize) -> Option<&Frame> {
        self.inputs.get(tag)
    }
    fn codec(&self, tag: usize) -> Option<CodecKind> {
        self.legs.get(tag).map(Leg::codec)
    }
    fn send(&mut self, tag: usize, pcm: &Frame, encoded: Option<&[u8]>) {
        if let Some(leg) = self.legs.get_mut(tag) {
            room::send_half(leg, self.now, self.tick, pcm, encoded, &mut self.bytes);
        }
    }
}

/// A room of `MEMBERS` members; returns it with its legs and the heap bytes the legs and
/// the room's member state took.
fn setup(t0: Instant) -> (RoomHost, BenchLegs, isize, isize) {
    let speech = speech();
    let mut noise = 777u32;
    let inputs: Vec<Frame> = (0..MEMBERS)
        .map(|k| {
            let mut f = Frame::silence(NARROW_RATE);
            if k < TALKERS {
                let at = 8000 + k * 4000;
                f.copy_from_slice(&speech[at..at + FRAME_SAMPLES]);
            } else {
                // Faint line noise (about −66 dBov): below the talker threshold.
                for s in f.iter_mut() {
                    noise ^= noise << 13;
                    noise ^= noise >> 17;
                    noise ^= noise << 5;
                    *s = (noise % 33) as i16 - 16;
                }
            }
            f
        })
        .collect();
    let held = alloc::held();
    let legs: Vec<Leg> = (0..MEMBERS).map(|i| pcmu_leg(i, t0)).collect();
    let leg_bytes = alloc::held() - held;
    let mut b = BenchLegs {
        legs,
        ids: (0..MEMBERS as u64).collect(),
        inputs,
        tick: 0,
        now: t0,
        bytes: 0,
    };
    let held = alloc::held();
    let host = room::joined_room("bench", MEMBERS, t0, &mut b);
    let room_bytes = alloc::held() - held;
    (host, b, leg_bytes, room_bytes)
}

fn run_tick(host: &mut RoomHost, legs: &mut BenchLegs, t0: Instant, n: u64) {
    legs.tick = n;
    legs.now = t0 + FRAME * n as u32;
    host.tick(legs.now, legs);
    host.flush(legs.now, legs);
}

fn bench(c: &mut Criterion) {
    let t0 = Instant::now();
    let (mut host, mut legs, leg_bytes, room_bytes) = setup(t0);
    let mut n = 0u64;
    for _ in 0..100 {
        run_tick(&mut host, &mut legs, t0, n);
        n += 1;
    }
    assert!(
        host.room().mix_frame().iter().any(|&s| s != 0),
        "the talkers are mixed"
    );
    assert_eq!(
        host.room()
            .members()
            .filter(|m| host.room().is_talking(m.id))
            .count(),
        TALKERS
    );

    let mut g = c.benchmark_group("conference room tick");
    g.throughput(Throughput::Elements(MEMBERS as u64));
    g.bench_function("500 members, 3 talkers", |b| {
        b.iter(|| {
            run_tick(&mut host, &mut legs, t0, n);
            n += 1;
        })
    });
    g.finish();

    // Median of single ticks, per member.
    let mut times: Vec<Duration> = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let start = Instant::now();
        run_tick(&mut host, &mut legs, t0, n);
        times.push(start.elapsed());
        n += 1;
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "median tick {:?}, {:.0} ns per member per tick (p99 tick {:?})",
        median,
        median.as_nanos() as f64 / MEMBERS as f64,
        times[times.len() * 99 / 100]
    );

    // Steady state: 500 ticks allocate nothing.
    let before = alloc::allocations();
    for _ in 0..500 {
        run_tick(&mut host, &mut legs, t0, n);
        n += 1;
    }
    let allocs = alloc::allocations() - before;
    println!("allocations in 500 steady-state room ticks: {allocs}");
    assert_eq!(allocs, 0, "the room tick allocated");

    println!(
        "memory per member: leg {} B (heap, plus {} B inline), room state {} B",
        leg_bytes / MEMBERS as isize,
        std::mem::size_of::<Leg>(),
        room_bytes / MEMBERS as isize
    );
    black_box(legs.bytes);
}

criterion_group!(benches, bench);
criterion_main!(benches);
