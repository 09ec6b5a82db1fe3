//! One media tick over many legs (sans-IO: packets in from memory, frames out to a no-op
//! sender), bare and through a media worker's tick, a worker's tick over bridged pairs beside
//! as many echo legs, and a check that the steady state of both does not allocate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard::engine::{Datagram, MediaIo, Worker};
use switchboard::media::codec::g711::ulaw_encode;
use switchboard::media::frame::FRAME;
use switchboard::media::leg::{Leg, LegCommand, LegEvent, Port};
use switchboard::rtp::packet::{RtpHeader, RtpPacket};
use switchboard::rtp::types::{PayloadType, RtpTimestamp, Ssrc, WireSeq};

#[path = "support/alloc.rs"]
mod alloc;
#[path = "support/leg.rs"]
mod leg;

use leg::{pcmu_leg_inband, PEER};
use switchboard::media::dtmf::InbandDetection;

#[global_allocator]
static A: alloc::Counting = alloc::Counting;

fn legs(n: usize, now: Instant) -> Vec<Leg> {
    legs_inband(n, now, InbandDetection::Always)
}

/// `n` echoing legs with in-band detection as `[dtmf] inband` says.
fn legs_inband(n: usize, now: Instant, inband: InbandDetection) -> Vec<Leg> {
    (0..n)
        .map(|i| {
            let mut l = pcmu_leg_inband(i, now, inband);
            l.apply(now, LegCommand::Echo(true));
            l
        })
        .collect()
}

/// Ticks `legs` once per iteration, each hearing that tick's packet.
fn run_ticks(b: &mut criterion::Bencher<'_>, legs: &mut [Leg], t0: Instant) {
    let mut buf = [0u8; 1500];
    let mut n = 0u64;
    let mut sent = 0usize;
    b.iter(|| {
        let len = packet(n, &mut buf);
        let now = t0 + FRAME * n as u32;
        tick_all(legs, now, n, &buf[..len], &mut sent);
        n += 1;
    });
    black_box(sent);
}

/// A ready-made packet per tick number (speech-like noise, so DTMF detection does real work).
fn packet(n: u64, buf: &mut [u8]) -> usize {
    let mut payload = [0u8; 160];
    let mut x = n as u32 | 1;
    for p in payload.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *p = ulaw_encode(((x & 0x0fff) as i16) - 2048);
    }
    let header = RtpHeader {
        marker: n == 0,
        payload_type: PayloadType::PCMU,
        seq: WireSeq::new(n as u16),
        timestamp: RtpTimestamp::new((n * 160) as u32),
        ssrc: Ssrc::new(1),
    };
    RtpPacket::new(header, &payload).write(buf).unwrap_or(0)
}

fn tick_all(legs: &mut [Leg], now: Instant, n: u64, pkt: &[u8], sent: &mut usize) {
    let wallclock = std::time::SystemTime::now();
    for l in legs.iter_mut() {
        l.handle_packet(now, wallclock, PEER, pkt);
        l.tick(now, wallclock, n, &mut |_, _, b| *sent += b.len());
        while l.poll_event().is_some() {}
    }
}

/// A worker's io: the tick's one packet for every leg in, sent bytes counted.
struct BenchIo {
    pkt: [u8; 1500],
    len: usize,
    unread: Vec<bool>,
    sent: usize,
    now: (Instant, SystemTime),
}

impl MediaIo for BenchIo {
    type Endpoint = usize;

    fn recv(&mut self, leg: &usize, port: Port, buf: &mut [u8]) -> Option<Datagram> {
        if port != Port::Rtp || !std::mem::take(&mut self.unread[*leg]) {
            return None;
        }
        buf[..self.len].copy_from_slice(&self.pkt[..self.len]);
        Some(Datagram {
            len: self.len,
            from: PEER,
            stamp: None,
        })
    }

    fn send(&mut self, _leg: &usize, _port: Port, _to: SocketAddr, bytes: &[u8]) {
        self.sent += bytes.len();
    }

    fn now(&mut self) -> (Instant, SystemTime) {
        self.now
    }
}

/// A worker of `n` echo legs, its io, and the legs' event receivers (kept open).
fn worker(
    n: usize,
    now: Instant,
) -> (
    Worker<usize>,
    BenchIo,
    Vec<tokio::sync::mpsc::UnboundedReceiver<LegEvent>>,
) {
    let mut w = Worker::new();
    let mut events = Vec::with_capacity(n);
    for (i, leg) in legs(n, now).into_iter().enumerate() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        w.add_leg(i as u64, leg, i, tx);
        events.push(rx);
    }
    let io = BenchIo {
        pkt: [0; 1500],
        len: 0,
        unread: vec![false; n],
        sent: 0,
        now: (now, SystemTime::now()),
    };
    (w, io, events)
}

/// A worker of `pairs` bridged pairs of legs (echo off), its io and event receivers.
fn bridged_worker(
    pairs: usize,
    now: Instant,
) -> (
    Worker<usize>,
    BenchIo,
    Vec<tokio::sync::mpsc::UnboundedReceiver<LegEvent>>,
) {
    let (mut w, io, events) = worker(2 * pairs, now);
    for i in 0..2 * pairs as u64 {
        w.leg_command(now, i, LegCommand::Echo(false));
    }
    for p in 0..pairs as u64 {
        w.bridge(2 * p, 2 * p + 1).unwrap();
    }
    (w, io, events)
}

fn worker_tick(w: &mut Worker<usize>, io: &mut BenchIo, t0: Instant, n: u64) {
    io.len = packet(n, &mut io.pkt);
    io.unread.fill(true);
    let now = t0 + FRAME * n as u32;
    io.now.0 = now;
    w.tick(n, now, io.now.1, io);
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("media tick");
    for n_legs in [100usize, 1000] {
        g.throughput(Throughput::Elements(n_legs as u64));
        g.bench_with_input(
            BenchmarkId::new("echo legs", n_legs),
            &n_legs,
            |b, &n_legs| {
                let t0 = Instant::now();
                run_ticks(b, &mut legs(n_legs, t0), t0);
            },
        );
    }
    // The same 100 legs hearing speech-like noise, with in-band detection as `[dtmf] inband`
    // = "always" (the default) and "auto" (these legs agreed RFC 4733, so no detector).
    g.throughput(Throughput::Elements(100));
    for (name, inband) in [
        ("inband always", InbandDetection::Always),
        ("inband auto", InbandDetection::Auto),
    ] {
        g.bench_function(BenchmarkId::new(name, 100), |b| {
            let t0 = Instant::now();
            run_ticks(b, &mut legs_inband(100, t0, inband), t0);
        });
    }
    for n_legs in [100usize, 1000] {
        g.throughput(Throughput::Elements(n_legs as u64));
        g.bench_with_input(
            BenchmarkId::new("worker echo legs", n_legs),
            &n_legs,
            |b, &n_legs| {
                let t0 = Instant::now();
                let (mut w, mut io, _events) = worker(n_legs, t0);
                let mut n = 0u64;
                b.iter(|| {
                    worker_tick(&mut w, &mut io, t0, n);
                    n += 1;
                });
                black_box(io.sent);
            },
        );
    }
    // 200 bridged pairs beside the same number of legs echoing, in one run.
    g.throughput(Throughput::Elements(400));
    g.bench_function(BenchmarkId::new("worker echo legs", 400), |b| {
        let t0 = Instant::now();
        let (mut w, mut io, _events) = worker(400, t0);
        let mut n = 0u64;
        b.iter(|| {
            worker_tick(&mut w, &mut io, t0, n);
            n += 1;
        });
        black_box(io.sent);
    });
    g.bench_function(BenchmarkId::new("worker bridged pairs", 200), |b| {
        let t0 = Instant::now();
        let (mut w, mut io, _events) = bridged_worker(200, t0);
        let mut n = 0u64;
        b.iter(|| {
            worker_tick(&mut w, &mut io, t0, n);
            n += 1;
        });
        black_box(io.sent);
    });
    g.finish();

    // Steady state: after warming up, 500 ticks of 100 legs allocate nothing.
    let t0 = Instant::now();
    let mut l = legs(100, t0);
    let mut buf = [0u8; 1500];
    let mut sent = 0;
    for n in 0..200u64 {
        let len = packet(n, &mut buf);
        tick_all(&mut l, t0 + FRAME * n as u32, n, &buf[..len], &mut sent);
    }
    let before = alloc::allocations();
    for n in 200..700u64 {
        let len = packet(n, &mut buf);
        tick_all(&mut l, t0 + FRAME * n as u32, n, &buf[..len], &mut sent);
    }
    let allocs = alloc::allocations() - before;
    println!("allocations in 500 steady-state ticks of 100 legs: {allocs}");
    assert_eq!(allocs, 0, "the media tick allocated");

    // The same through a worker's tick (receive, echo, send, events, counters).
    let (mut w, mut io, _events) = worker(100, t0);
    for n in 0..200u64 {
        worker_tick(&mut w, &mut io, t0, n);
    }
    let before = alloc::allocations();
    for n in 200..700u64 {
        worker_tick(&mut w, &mut io, t0, n);
    }
    let allocs = alloc::allocations() - before;
    println!("allocations in 500 steady-state worker ticks of 100 legs: {allocs}");
    assert_eq!(allocs, 0, "the worker tick allocated");
    assert!(io.sent > 0, "the worker's legs sent");
}

criterion_group!(benches, bench);
criterion_main!(benches);
