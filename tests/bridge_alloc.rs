//! A worker's tick over bridged legs (each pair PCMU on one side, PCMA on the other, so every
//! frame is transcoded) must not allocate in the steady state: counted with a global
//! allocator that tallies allocations made by this thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use switchboard::engine::{Datagram, MediaIo, Worker};
use switchboard::media::codec::g711::{
    alaw_decode_slice, alaw_encode_slice, ulaw_decode_slice, ulaw_encode_slice,
};
use switchboard::media::codec::CodecKind;
use switchboard::media::frame::{FRAME, FRAME_SAMPLES};
use switchboard::media::leg::{Leg, LegConfig, Port};
use switchboard::media::level::tone_share;
use switchboard::rtp::packet::{RtpHeader, RtpPacket};
use switchboard::rtp::types::{PayloadType, RtpTimestamp, Ssrc, WireSeq};

#[path = "support/thread_alloc.rs"]
mod thread_alloc;

use thread_alloc::allocations;

#[global_allocator]
static GLOBAL: thread_alloc::Counting = thread_alloc::Counting;

/// Where the legs' peers are (nothing is sent anywhere: the io keeps what the legs send).
const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);
const PAIRS: usize = 20;
/// The tone each side's peer sends: even legs (PCMU) and odd legs (PCMA).
const TONES: [f64; 2] = [500.0, 1300.0];
const CODECS: [CodecKind; 2] = [CodecKind::Pcmu, CodecKind::Pcma];

/// This tick's packet from each side's peer in, each leg's latest frame out, decoded.
struct Io {
    packets: [([u8; 512], usize); 2],
    unread: Vec<bool>,
    last: Vec<[i16; FRAME_SAMPLES]>,
    now: (Instant, SystemTime),
}

impl Io {
    /// Writes tick `n`'s packets, without allocating.
    fn feed(&mut self, n: u64) {
        for (side, (buf, len)) in self.packets.iter_mut().enumerate() {
            let mut pcm = [0i16; FRAME_SAMPLES];
            for (k, s) in pcm.iter_mut().enumerate() {
                let t = (n as usize * FRAME_SAMPLES + k) as f64 / 8000.0;
                *s = (6000.0 * (2.0 * std::f64::consts::PI * TONES[side] * t).sin()) as i16;
            }
            let mut payload = [0u8; FRAME_SAMPLES];
            let payload_type = match CODECS[side] {
                CodecKind::Pcma => {
                    alaw_encode_slice(&pcm, &mut payload);
                    PayloadType::PCMA
                }
                _ => {
                    ulaw_encode_slice(&pcm, &mut payload);
                    PayloadType::PCMU
                }
            };
            let header = RtpHeader {
                marker: n == 0,
                payload_type,
                seq: WireSeq::new(n as u16),
                timestamp: RtpTimestamp::new((n as usize * FRAME_SAMPLES) as u32),
                ssrc: Ssrc::new(0x5eed),
            };
            *len = RtpPacket::new(header, &payload).write(buf).unwrap();
        }
        self.unread.fill(true);
    }
}

impl MediaIo for Io {
    type Endpoint = usize;

    fn recv(&mut self, leg: &usize, port: Port, buf: &mut [u8]) -> Option<Datagram> {
        if port != Port::Rtp || !std::mem::take(&mut self.unread[*leg]) {
            return None;
        }
        let (pkt, len) = &self.packets[*leg % 2];
        buf[..*len].copy_from_slice(&pkt[..*len]);
        Some(Datagram {
            len: *len,
            from: PEER,
            stamp: None,
        })
    }

    fn send(&mut self, leg: &usize, port: Port, _to: SocketAddr, bytes: &[u8]) {
        let Some(p) = (port == Port::Rtp)
            .then(|| RtpPacket::parse(bytes).ok())
            .flatten()
        else {
            return;
        };
        let out = &mut self.last[*leg][..p.payload.len().min(FRAME_SAMPLES)];
        match p.header.payload_type {
            PayloadType::PCMA => alaw_decode_slice(p.payload, out),
            _ => ulaw_decode_slice(p.payload, out),
        }
    }

    fn now(&mut self) -> (Instant, SystemTime) {
        self.now
    }
}

#[test]
fn the_counter_sees_allocations() {
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 10]))) >= 1);
}

#[test]
fn a_tick_of_bridged_transcoding_pairs_does_not_allocate() {
    let t0 = (Instant::now(), SystemTime::now());
    let mut w = Worker::new();
    let mut events = Vec::new();
    for i in 0..2 * PAIRS {
        let codec = CODECS[i % 2];
        let cfg = LegConfig {
            codec,
            payload_type: codec.static_payload_type().unwrap(),
            ..LegConfig::pcmu(PEER, Ssrc::new(i as u32 + 1))
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        w.add_leg(i as u64, Leg::new(cfg, t0.0).unwrap(), i, tx);
        events.push(rx);
    }
    for p in 0..PAIRS as u64 {
        w.bridge(2 * p, 2 * p + 1).unwrap();
    }
    let mut io = Io {
        packets: [([0; 512], 0); 2],
        unread: vec![false; 2 * PAIRS],
        last: vec![[0; FRAME_SAMPLES]; 2 * PAIRS],
        now: t0,
    };
    let mut tick = |w: &mut Worker<usize>, io: &mut Io, n: u64| {
        io.feed(n);
        io.now = (t0.0 + FRAME * n as u32, t0.1 + FRAME * n as u32);
        w.tick(n, io.now.0, io.now.1, io);
        // The calls' side drains the events as it would.
        for rx in events.iter_mut() {
            while rx.try_recv().is_ok() {}
        }
    };
    for n in 0..200 {
        tick(&mut w, &mut io, n);
    }
    let allocs = allocations(|| {
        for n in 200..700 {
            tick(&mut w, &mut io, n);
        }
    });
    assert_eq!(allocs, 0, "{allocs} allocations in 500 bridged ticks");
    // The ticks counted did bridge: each leg's last frame is its peer's tone, not its own.
    for (i, last) in io.last.iter().enumerate() {
        let (theirs, own) = (
            tone_share(last, TONES[1 - i % 2], 8000.0),
            tone_share(last, TONES[i % 2], 8000.0),
        );
        assert!(
            theirs > 0.8 && own < 0.05,
            "leg {i}: {theirs} peer, {own} own"
        );
    }
}
