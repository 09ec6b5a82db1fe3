//! RTCP per leg: writing one compound report (SR + block + SDES) and parsing one.
//! Also checks, with a counting allocator, that neither allocates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use switchboard::rtp::{
    ClockRate, PayloadType, PayloadTypeSet, RecvConfig, RecvSession, RtcpSession, RtpHeader,
    RtpTimestamp, SendSession, Ssrc, WireSeq, MAX_COMPOUND_LEN,
};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const RATE: ClockRate = ClockRate::HZ_8000;

struct Leg {
    rtcp: RtcpSession,
    recv: RecvSession,
    send: SendSession,
    now: Instant,
}

fn leg(ssrc: Ssrc) -> Leg {
    let t0 = Instant::now();
    let mut send = SendSession::new(
        ssrc,
        WireSeq::new(1),
        RtpTimestamp::new(0),
        PayloadType::PCMU,
        RATE,
        Duration::from_millis(20),
    );
    let mut recv = RecvSession::new(RecvConfig::new(
        RATE,
        PayloadTypeSet::empty().with(PayloadType::PCMU),
    ));
    let peer: SocketAddr = "192.0.2.9:7000".parse().unwrap();
    for i in 0..250u16 {
        send.next_header(u64::from(i));
        let h = RtpHeader {
            marker: i == 0,
            payload_type: PayloadType::PCMU,
            seq: WireSeq::new(i),
            timestamp: RtpTimestamp::new(u32::from(i) * 160),
            ssrc: Ssrc::new(0x5eed),
        };
        recv.receive(t0 + Duration::from_millis(u64::from(i) * 20), peer, &h);
    }
    Leg {
        rtcp: RtcpSession::with_seed(ssrc, "switchboard@192.0.2.1", RATE, t0, 1),
        recv,
        send,
        now: t0,
    }
}

fn wall(leg: &Leg, t0: Instant) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000) + (leg.now - t0)
}

/// Writes the next due report (the clock jumps straight to its deadline).
fn write_one(leg: &mut Leg, t0: Instant, out: &mut [u8]) -> usize {
    leg.now = leg.rtcp.poll_timeout().unwrap();
    let w = wall(leg, t0);
    leg.rtcp
        .handle_timeout(leg.now, Some(&mut leg.recv), Some(&leg.send), w, out)
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtcp");
    let mut out = [0u8; MAX_COMPOUND_LEN];

    let mut writer = leg(Ssrc::new(0x1234_5678));
    let t0 = writer.now;
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..100 {
        write_one(&mut writer, t0, &mut out);
    }
    assert_eq!(ALLOCS.load(Ordering::Relaxed), before, "writing allocated");
    g.bench_function("write_compound_sr", |b| {
        b.iter(|| black_box(write_one(&mut writer, t0, &mut out)))
    });

    let n = write_one(&mut writer, t0, &mut out);
    let packet = out[..n].to_vec();
    // The reader is the source the report block is about, so the RTT path runs too.
    let mut reader = leg(Ssrc::new(0x5eed));
    let now = reader.now;
    let w = wall(&reader, now);
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..100 {
        reader.rtcp.handle_packet(now, w, &packet).unwrap();
    }
    assert_eq!(reader.rtcp.stats().remote_reports, 100);
    assert_eq!(ALLOCS.load(Ordering::Relaxed), before, "parsing allocated");
    g.bench_function("parse_compound_sr", |b| {
        b.iter(|| reader.rtcp.handle_packet(now, w, black_box(&packet)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
