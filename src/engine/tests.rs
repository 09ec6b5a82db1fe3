//! The worker's tick in virtual time over an in-memory [`MediaIo`]: no sockets, no threads.
//! Audio is checked by decoding what the legs sent and measuring its frequencies.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::oneshot;

use super::io::{Datagram, MediaIo};
use super::MediaClock;
use super::Worker;
use crate::conference::host::{JoinRefusal, RoomCommand, RoomHost, RoomLink};
use crate::conference::room::RemoveReason;
use crate::conference::{MemberId, Room, RoomSettings, RoomSounds};
use crate::events::EventBus;
use crate::media::codec::g711::{
    alaw_decode_slice, alaw_encode_slice, ulaw_decode_slice, ulaw_encode_slice,
};
use crate::media::codec::CodecKind;
use crate::media::frame::{FRAME, FRAME_SAMPLES};
use crate::media::leg::{Leg, LegCommand, LegConfig, LegEvent, Port};
use crate::media::level::tone_share;
use crate::rtp::packet::{RtpHeader, RtpPacket};
use crate::rtp::types::{PayloadType, RtpTimestamp, Ssrc, WireSeq};

/// Where every leg's peer sends from (a plain value: nothing is sent anywhere).
pub(super) const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);

/// Datagrams waiting for each leg (the endpoint is the leg's index), and the RTP payloads
/// each leg sent, decoded, with the payload type of its latest packet; the clock is virtual.
pub(super) struct MemIo {
    pub(super) now: (Instant, SystemTime),
    pub(super) inbox: Vec<VecDeque<Vec<u8>>>,
    pub(super) heard: Vec<Vec<i16>>,
    pub(super) sent_as: Vec<Option<PayloadType>>,
    reads: usize,
}

impl MemIo {
    pub(super) fn new(legs: usize, now: (Instant, SystemTime)) -> Self {
        MemIo {
            now,
            inbox: vec![VecDeque::new(); legs],
            heard: vec![Vec::new(); legs],
            sent_as: vec![None; legs],
            reads: 0,
        }
    }
}

impl MediaIo for MemIo {
    type Endpoint = usize;

    fn recv(&mut self, leg: &usize, port: Port, buf: &mut [u8]) -> Option<Datagram> {
        if port != Port::Rtp {
            return None;
        }
        let d = self.inbox.get_mut(*leg)?.pop_front()?;
        buf[..d.len()].copy_from_slice(&d);
        self.reads += 1;
        Some(Datagram {
            len: d.len(),
            from: PEER,
            stamp: None,
        })
    }

    fn send(&mut self, leg: &usize, port: Port, to: SocketAddr, bytes: &[u8]) {
        if port != Port::Rtp {
            // Reports go to the next port up.
            assert_eq!(to, SocketAddr::new(PEER.ip(), PEER.port() + 1));
            return;
        }
        assert_eq!(to, PEER, "leg {leg} sends to its peer");
        let p = RtpPacket::parse(bytes).expect("a leg sends valid RTP");
        let mut pcm = [0i16; FRAME_SAMPLES];
        let pcm = &mut pcm[..p.payload.len()];
        match p.header.payload_type {
            PayloadType::PCMU => ulaw_decode_slice(p.payload, pcm),
            PayloadType::PCMA => alaw_decode_slice(p.payload, pcm),
            pt => panic!("leg {leg} sent payload type {pt:?}"),
        }
        self.heard[*leg].extend_from_slice(pcm);
        self.sent_as[*leg] = Some(p.header.payload_type);
    }

    fn now(&mut self) -> (Instant, SystemTime) {
        self.now
    }
}

/// A peer's 20 ms of `freq` Hz at tick `n`, as the PCMU RTP packet it sends.
fn packet(freq: f64, n: u64) -> Vec<u8> {
    packet_as(CodecKind::Pcmu, freq, n)
}

/// A peer's 20 ms of `freq` Hz at tick `n`, as the RTP packet it sends in G.711 `codec`.
pub(super) fn packet_as(codec: CodecKind, freq: f64, n: u64) -> Vec<u8> {
    let mut pcm = [0i16; FRAME_SAMPLES];
    for (k, s) in pcm.iter_mut().enumerate() {
        let t = (n as usize * FRAME_SAMPLES + k) as f64 / 8000.0;
        *s = (6000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16;
    }
    pcm_packet(codec, &pcm, n)
}

/// A peer's frame `pcm` at tick `n`, as the RTP packet it sends in G.711 `codec`.
pub(super) fn pcm_packet(codec: CodecKind, pcm: &[i16; FRAME_SAMPLES], n: u64) -> Vec<u8> {
    let mut payload = [0u8; FRAME_SAMPLES];
    let payload_type = match codec {
        CodecKind::Pcma => {
            alaw_encode_slice(pcm, &mut payload);
            PayloadType::PCMA
        }
        _ => {
            ulaw_encode_slice(pcm, &mut payload);
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
    let mut buf = [0u8; 256];
    let len = RtpPacket::new(header, &payload)
        .write(&mut buf)
        .expect("packet fits");
    buf[..len].to_vec()
}

/// Adds PCMU legs `0..n` (endpoint = index = id) sending to [`PEER`].
pub(super) fn add_legs(
    w: &mut Worker<usize>,
    n: usize,
    now: Instant,
) -> Vec<UnboundedReceiver<LegEvent>> {
    (0..n)
        .map(|i| {
            let leg =
                Leg::new(LegConfig::pcmu(PEER, Ssrc::new(i as u32 + 1)), now).expect("a PCMU leg");
            let (events, rx) = unbounded_channel();
            w.add_leg(i as u64, leg, i, events);
            rx
        })
        .collect()
}

/// The share of `pcm`'s energy at `freq`, over its last `ms`.
pub(super) fn share_at(pcm: &[i16], freq: f64, ms: usize) -> f64 {
    let tail = &pcm[pcm.len().saturating_sub(ms * 8)..];
    tone_share(tail, freq, 8000.0)
}

#[test]
fn two_thousand_echo_legs_send_back_what_each_heard() {
    const LEGS: usize = 2000;
    const TICKS: u64 = 40;
    let started = Instant::now();
    let t0 = (Instant::now(), SystemTime::now());
    let mut io = MemIo::new(LEGS, t0);
    let mut w = Worker::new();
    let _events = add_legs(&mut w, LEGS, t0.0);
    for i in 0..LEGS as u64 {
        w.leg_command(t0.0, i, LegCommand::Echo(true));
    }
    let freq = |i: usize| 300.0 + 100.0 * (i % 8) as f64;
    // One packet per frequency and tick, shared by every leg of that frequency.
    for n in 0..TICKS {
        let packets: Vec<Vec<u8>> = (0..8).map(|f| packet(freq(f), n)).collect();
        for (i, inbox) in io.inbox.iter_mut().enumerate() {
            inbox.push_back(packets[i % 8].clone());
        }
        let now = (t0.0 + FRAME * n as u32, t0.1 + FRAME * n as u32);
        io.now = now;
        w.tick(n, now.0, now.1, &mut io);
    }
    assert_eq!(io.reads, LEGS * TICKS as usize, "every datagram read");
    assert_eq!(w.stats().ticks.load(Ordering::Relaxed), TICKS);
    assert_eq!(w.stats().legs.load(Ordering::Relaxed), LEGS);
    for (i, heard) in io.heard.iter().enumerate() {
        assert_eq!(
            heard.len(),
            TICKS as usize * FRAME_SAMPLES,
            "leg {i} sent every tick"
        );
        // Past the jitter buffer's delay, each leg echoes its own peer's tone, not another's.
        let own = share_at(heard, freq(i), 300);
        let other = share_at(heard, freq(i + 3), 300);
        assert!(
            own > 0.9 && other < 0.02,
            "leg {i}: {own} at its tone, {other} elsewhere"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "virtual time runs fast: {:?}",
        started.elapsed()
    );
}

/// A room without sounds, and its count of joins on their way.
pub(super) fn room_host(id: u64) -> (RoomHost, Arc<AtomicUsize>) {
    let link = RoomLink::new(id, "r", EventBus::new(64), String::new(), 0);
    let pending = link.pending.clone();
    let room = Room::new(RoomSettings::default(), RoomSounds::default()).expect("a room");
    (RoomHost::new(link, room, None, Box::new(|| {})), pending)
}

/// Joins leg `leg` to `room` (its id and count of joins on their way) as the registry
/// would; the worker's answer, and where the member's leaving will be told.
pub(super) fn join(
    w: &mut Worker<usize>,
    io: &mut MemIo,
    (room, pending): (u64, &AtomicUsize),
    leg: u64,
    now: Instant,
) -> (
    Result<MemberId, JoinRefusal>,
    oneshot::Receiver<RemoveReason>,
) {
    pending.fetch_add(1, Ordering::AcqRel);
    let (reply, mut answer) = oneshot::channel();
    let (left_tx, left_rx) = oneshot::channel();
    let join = RoomCommand::Join {
        leg,
        moderator: false,
        muted: false,
        call_id: format!("c{leg}"),
        from: String::new(),
        reply,
        left: left_tx,
    };
    w.room_command(now, room, join, io);
    let joined = answer.try_recv().unwrap_or(Err(JoinRefusal::Gone));
    (joined, left_rx)
}

#[test]
fn room_members_hear_each_other_not_themselves_for_a_minute() {
    const TICKS: u64 = 3000;
    const FREQS: [f64; 3] = [400.0, 700.0, 1100.0];
    const ROOM: u64 = 9;
    let started = Instant::now();
    let t0 = (Instant::now(), SystemTime::now());
    let mut io = MemIo::new(4, t0);
    let mut w = Worker::new();
    // Three members and a fourth leg that stays out of the room.
    let _events = add_legs(&mut w, 4, t0.0);
    let (host, pending) = room_host(ROOM);
    w.add_room(host);
    let mut left = Vec::new();
    for leg in 0..3u64 {
        let (joined, left_rx) = join(&mut w, &mut io, (ROOM, &pending), leg, t0.0);
        assert!(joined.is_ok(), "leg {leg} joined");
        left.push(left_rx);
    }
    w.leg_command(t0.0, 3, LegCommand::Echo(true));
    let mut clock = MediaClock::new(t0.0);
    for _ in 0..TICKS {
        let now = clock.deadline();
        let tick = clock.start(now);
        assert!(!tick.late && tick.skipped == 0);
        for (i, inbox) in io.inbox.iter_mut().enumerate() {
            inbox.push_back(packet(FREQS[i % 3], tick.n));
        }
        let wall = t0.1 + (now - t0.0);
        io.now = (now, wall);
        w.tick(tick.n, now, wall, &mut io);
    }
    assert_eq!(w.stats().members.load(Ordering::Relaxed), 3);
    for (i, heard) in io.heard.iter().enumerate().take(3) {
        assert_eq!(heard.len(), TICKS as usize * FRAME_SAMPLES);
        let own = share_at(heard, FREQS[i], 1000);
        let others: Vec<f64> = (1..3)
            .map(|k| share_at(heard, FREQS[(i + k) % 3], 1000))
            .collect();
        assert!(own < 0.01, "member {i} does not hear itself: {own}");
        for s in &others {
            assert!(*s > 0.3, "member {i} hears the others: {others:?}");
        }
    }
    // The leg outside the room echoes its own tone and hears nothing of the room.
    let echo = &io.heard[3];
    assert!(share_at(echo, FREQS[0], 1000) > 0.9);
    assert!(share_at(echo, FREQS[1], 1000) < 0.01);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "virtual time runs fast: {:?}",
        started.elapsed()
    );
}
