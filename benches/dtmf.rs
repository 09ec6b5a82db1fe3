//! Per-packet and per-event cost of the DTMF paths: RFC 4733 receive, merging, sending;
//! and per 20 ms frame, in-band detection on what a call carries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use switchboard::media::codec::g711;
use switchboard::media::dtmf::{
    Digit, DtmfEvent, DtmfMerger, DtmfMethod, EventPacket, EventReceiver, EventSender,
    InbandDetector,
};
use switchboard::media::level::dbm0_to_peak;
use switchboard::media::resample::resample;
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

/// `pcm` after µ-law encoding and decoding, as a PCMU leg hands it to the detector.
fn through_ulaw(pcm: &[i16]) -> Vec<i16> {
    let mut enc = vec![0u8; pcm.len()];
    let mut dec = vec![0i16; pcm.len()];
    g711::ulaw_encode_slice(pcm, &mut enc);
    g711::ulaw_decode_slice(&enc, &mut dec);
    dec
}

/// Every key, 60 ms on and 60 ms off, low tone at −30 dBm0 and high tone 8 dB quieter: the
/// hardest key the detector accepts, so every block goes through the full analysis.
fn weak_twisted_keys() -> Vec<i16> {
    let (al, ah) = (
        f64::from(dbm0_to_peak(-30.0)),
        f64::from(dbm0_to_peak(-38.0)),
    );
    let mut pcm = Vec::new();
    for d in Digit::ALL {
        let (fl, fh) = d.frequencies();
        pcm.extend((0..480).map(|n| {
            let w = 2.0 * std::f64::consts::PI * f64::from(n) / 8000.0;
            (al * (w * f64::from(fl)).sin() + ah * (w * f64::from(fh)).sin()) as i16
        }));
        pcm.extend([0i16; 480]);
    }
    through_ulaw(&pcm)
}

fn speech() -> Vec<i16> {
    include_bytes!("../tests/fixtures/speech-8k.raw")
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Times the detector at `rate` over the whole of `pcm` in 20 ms frames: one iteration is the
/// whole signal, so the detector sees it as a call would; criterion's throughput figure is
/// frames per second.
fn detect_all(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    rate: ClockRate,
    pcm: &[i16],
) {
    let frames: Vec<&[i16]> = pcm.chunks_exact(rate.hz() as usize / 50).collect();
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.bench_function(name, |b| {
        let mut det = InbandDetector::new(rate).expect("a supported rate");
        let mut events = 0u64;
        b.iter(|| {
            for f in &frames {
                det.push(black_box(f), |_| events += 1);
            }
        });
        black_box(events);
    });
}

fn inband_bench(c: &mut Criterion) {
    let signals = [
        ("speech", through_ulaw(&speech())),
        ("keys_minus_30_dbm0_8_db_twist", weak_twisted_keys()),
        ("silence", vec![0i16; 8000]),
    ];
    let mut group = c.benchmark_group("dtmf/inband_per_20ms_frame");
    for (name, pcm) in &signals {
        detect_all(&mut group, name, ClockRate::HZ_8000, pcm);
    }
    group.finish();
}

/// The detector at a wideband leg's rate, on the same speech resampled: what in-band DTMF
/// costs a G.722 (16 kHz) or Opus (48 kHz) leg per tick.
fn inband_wide_bench(c: &mut Criterion) {
    let speech = speech();
    let mut group = c.benchmark_group("dtmf/inband_speech_per_20ms_frame_at");
    for rate in [ClockRate::HZ_16000, ClockRate::HZ_48000] {
        let pcm = resample(&speech, 8000, rate).expect("resampled");
        detect_all(&mut group, &format!("{}_hz", rate.hz()), rate, &pcm);
    }
    group.finish();
}

criterion_group!(
    benches,
    receiver_bench,
    merger_bench,
    sender_bench,
    inband_bench,
    inband_wide_bench
);
criterion_main!(benches);
