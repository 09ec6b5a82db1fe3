//! Per-packet and per-event cost of the DTMF paths: RFC 4733 receive, merging, sending.

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use switchboard::media::dtmf::{
    Digit, DtmfEvent, DtmfMerger, DtmfMethod, EventPacket, EventReceiver, EventSender,
};
use switchboard::rtp::types::{ClockRate, PayloadType, RtpTimestamp};

fn pt() -> PayloadType {
    PayloadType::DEFAULT_TELEPHONE_EVENT
}

/// The packets of `n` digits as our sender emits them.
fn packets(n: usize) -> Vec<EventPacket> {
    let mut tx = EventSender::new(pt(), ClockRate::HZ_8000);
    let digits: String = "0123456789*#ABCD".chars().cycle().take(n).collect();
    tx.queue(&digits).expect("valid digits");
    let mut ts = RtpTimestamp::new(0);
    let mut out = Vec::new();
    while !tx.is_idle() {
        out.extend(tx.poll(ts));
        ts = ts.wrapping_add(160);
    }
    out
}

fn receiver_bench(c: &mut Criterion) {
    let pkts = packets(64);
    let t0 = Instant::now();
    c.bench_function("dtmf/rfc4733_push_per_packet", |b| {
        let mut rx = EventReceiver::new(pt(), ClockRate::HZ_8000);
        let mut i = 0usize;
        let mut ms = 0u64;
        b.iter(|| {
            let p = &pkts[i];
            i = (i + 1) % pkts.len();
            // Shift timestamps each lap so every lap's events are new ones.
            let lap = (ms / 20) / pkts.len() as u64;
            let ts = p.timestamp.wrapping_add(lap * 1_000_000);
            ms += 20;
            let now = t0 + Duration::from_millis(ms);
            let e = rx.push(now, ts, p.marker, black_box(&p.payload));
            while rx.poll_event().is_some() {}
            black_box(e)
        })
    });
}

fn merger_bench(c: &mut Criterion) {
    let t0 = Instant::now();
    // Each press arrives by RFC 4733 and in band: begin, begin, end, end.
    c.bench_function("dtmf/merger_per_event", |b| {
        let mut m = DtmfMerger::default();
        let mut n = 0u64;
        b.iter(|| {
            let press = n / 4;
            let digit = Digit::ALL[(press % 16) as usize];
            let start = t0 + Duration::from_millis(press * 180);
            let len = Duration::from_millis(100);
            let e = match n % 4 {
                0 => DtmfEvent::began(digit, DtmfMethod::Rfc4733, start),
                1 => DtmfEvent::began(digit, DtmfMethod::Inband, start + len / 2),
                2 => DtmfEvent::ended(digit, DtmfMethod::Rfc4733, start, len),
                _ => DtmfEvent::ended(digit, DtmfMethod::Inband, start + len / 2, len),
            };
            n += 1;
            black_box(m.push(black_box(e)))
        })
    });
}

fn sender_bench(c: &mut Criterion) {
    c.bench_function("dtmf/rfc4733_sender_poll_per_tick", |b| {
        let mut tx = EventSender::new(pt(), ClockRate::HZ_8000);
        let mut ts = RtpTimestamp::new(0);
        b.iter(|| {
            if tx.is_idle() {
                tx.queue("0123456789").expect("valid digits");
            }
            ts = ts.wrapping_add(160);
            black_box(tx.poll(ts))
        })
    });
}

criterion_group!(benches, receiver_bench, merger_bench, sender_bench);
criterion_main!(benches);
