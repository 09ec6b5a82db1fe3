//! A worker's tick over io_uring and loopback sockets must not allocate in the steady state:
//! bridged pairs of legs, each pair's peers sending a tone every tick, counted with a global
//! allocator that tallies allocations made by this thread. What the peers hear back is
//! decoded and must be the other side's tone.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime};

use switchboard::engine::uring::UringIo;
use switchboard::engine::{LegSockets, MediaIo, Worker};
use switchboard::media::codec::g711::{ulaw_decode_slice, ulaw_encode_slice};
use switchboard::media::frame::{FRAME, FRAME_SAMPLES};
use switchboard::media::leg::{Leg, LegConfig};
use switchboard::media::level::tone_share;
use switchboard::rtp::packet::{RtpHeader, RtpPacket};
use switchboard::rtp::types::{PayloadType, RtpTimestamp, Ssrc, WireSeq};

#[path = "support/thread_alloc.rs"]
mod thread_alloc;

use thread_alloc::allocations;

#[global_allocator]
static GLOBAL: thread_alloc::Counting = thread_alloc::Counting;

const PAIRS: usize = 10;
/// The tones the peers of even and odd legs send.
const TONES: [f64; 2] = [500.0, 1300.0];

/// One leg's far end: it sends the leg a tone and keeps the last frame it heard back.
struct Peer {
    socket: UdpSocket,
    to: std::net::SocketAddr,
    heard: [i16; FRAME_SAMPLES],
    packets: usize,
}

/// Tick `n`'s packet of a tone, written without allocating.
fn packet(n: u64, tone: f64, out: &mut [u8; 512]) -> usize {
    let mut pcm = [0i16; FRAME_SAMPLES];
    for (k, s) in pcm.iter_mut().enumerate() {
        let t = (n as usize * FRAME_SAMPLES + k) as f64 / 8000.0;
        *s = (6000.0 * (2.0 * std::f64::consts::PI * tone * t).sin()) as i16;
    }
    let mut payload = [0u8; FRAME_SAMPLES];
    ulaw_encode_slice(&pcm, &mut payload);
    let header = RtpHeader {
        marker: n == 0,
        payload_type: PayloadType::PCMU,
        seq: WireSeq::new(n as u16),
        timestamp: RtpTimestamp::new((n as usize * FRAME_SAMPLES) as u32),
        ssrc: Ssrc::new(0x5eed),
    };
    RtpPacket::new(header, &payload).write(out).unwrap()
}

#[test]
fn the_counter_sees_allocations() {
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 10]))) >= 1);
}

#[test]
fn a_tick_over_io_uring_does_not_allocate() {
    let mut io = UringIo::new().unwrap();
    let mut w: Worker<LegSockets> = Worker::new();
    let t0 = (Instant::now(), SystemTime::now());
    let mut peers = Vec::new();
    let mut events = Vec::new();
    for i in 0..2 * PAIRS {
        let bind = || UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sockets = LegSockets::new(bind(), bind());
        sockets.prepare(false).unwrap();
        let socket = bind();
        socket.set_nonblocking(true).unwrap();
        let cfg = LegConfig::pcmu(socket.local_addr().unwrap(), Ssrc::new(i as u32 + 1));
        peers.push(Peer {
            to: sockets.rtp.local_addr().unwrap(),
            socket,
            heard: [0; FRAME_SAMPLES],
            packets: 0,
        });
        io.attach(&mut sockets);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        w.add_leg(i as u64, Leg::new(cfg, t0.0).unwrap(), sockets, tx);
        events.push(rx);
    }
    for p in 0..PAIRS as u64 {
        w.bridge(2 * p, 2 * p + 1).unwrap();
    }
    let mut tick = |w: &mut Worker<LegSockets>, io: &mut UringIo, n: u64| {
        let mut buf = [0u8; 512];
        for (i, p) in peers.iter_mut().enumerate() {
            let len = packet(n, TONES[i % 2], &mut buf);
            p.socket.send_to(&buf[..len], p.to).unwrap();
        }
        // What the peers sent is received by the time the wait returns.
        io.sleep_until(Instant::now() + Duration::from_millis(1));
        let now = (t0.0 + FRAME * n as u32, t0.1 + FRAME * n as u32);
        w.tick(n, now.0, now.1, io);
        io.sleep_until(Instant::now());
        for p in peers.iter_mut() {
            let mut got = [0u8; 2048];
            loop {
                match p.socket.recv_from(&mut got) {
                    Ok((len, _)) => {
                        if let Ok(pkt) = RtpPacket::parse(&got[..len]) {
                            if pkt.payload.len() == FRAME_SAMPLES {
                                ulaw_decode_slice(pkt.payload, &mut p.heard);
                                p.packets += 1;
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        for rx in events.iter_mut() {
            while rx.try_recv().is_ok() {}
        }
    };
    for n in 0..150 {
        tick(&mut w, &mut io, n);
    }
    let allocs = allocations(|| {
        for n in 150..400 {
            tick(&mut w, &mut io, n);
        }
    });
    assert_eq!(allocs, 0, "{allocs} allocations in 250 ticks over io_uring");
    let c = io.counters();
    assert_eq!(
        (c.queue_drops, c.send_drops, c.send_errors),
        (0, 0, 0),
        "{c:?}"
    );
    // The ticks counted moved real audio: each peer hears the other side's tone.
    for (i, p) in peers.iter().enumerate() {
        assert!(p.packets >= 350, "peer {i} heard {} packets", p.packets);
        let (theirs, own) = (
            tone_share(&p.heard, TONES[1 - i % 2], 8000.0),
            tone_share(&p.heard, TONES[i % 2], 8000.0),
        );
        assert!(
            theirs > 0.8 && own < 0.05,
            "peer {i}: {theirs} other side, {own} own"
        );
    }
}
