//! Bridged legs in virtual time: each leg of a pair sends what the other hears, across codecs,
//! under its own playback, until unbridged or until the other leg is removed; rooms and
//! bridges exclude each other. Audio is checked by decoding what the legs sent and measuring it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::oneshot;

use super::tests::{join, packet_as, pcm_packet, room_host, share_at, MemIo, PEER};
use super::worker::Command;
use super::{BridgeError, Worker};
use crate::conference::host::JoinRefusal;
use crate::media::codec::CodecKind;
use crate::media::dtmf::Digit;
use crate::media::frame::{FRAME, FRAME_SAMPLES, NARROW_RATE};
use crate::media::leg::{Leg, LegCommand, LegConfig, LegEvent};
use crate::media::level::tone_share;
use crate::media::tone::{ToneGenerator, ToneSpec};
use crate::rtp::types::{PayloadType, Ssrc};

const LOW: f64 = 500.0;
const HIGH: f64 = 1300.0;

/// A worker of legs `0..n` (id = endpoint = index) in virtual time, each fed by its own peer.
struct Harness {
    w: Worker<usize>,
    io: MemIo,
    t0: (Instant, SystemTime),
    n: u64,
    codecs: Vec<CodecKind>,
    events: Vec<UnboundedReceiver<LegEvent>>,
}

impl Harness {
    fn new(codecs: &[CodecKind]) -> Self {
        let t0 = (Instant::now(), SystemTime::now());
        let mut w = Worker::new();
        let events = codecs
            .iter()
            .enumerate()
            .map(|(i, &codec)| {
                let pcmu = LegConfig::pcmu(PEER, Ssrc::new(i as u32 + 1));
                let cfg = LegConfig {
                    codec,
                    payload_type: codec.static_payload_type().unwrap_or(PayloadType::PCMU),
                    ..pcmu
                };
                let leg = Leg::new(cfg, t0.0).expect("a G.711 leg");
                let (tx, rx) = unbounded_channel();
                w.add_leg(i as u64, leg, i, tx);
                rx
            })
            .collect();
        Harness {
            w,
            io: MemIo::new(codecs.len(), t0),
            t0,
            n: 0,
            codecs: codecs.to_vec(),
            events,
        }
    }

    fn now(&self) -> Instant {
        self.t0.0 + FRAME * self.n as u32
    }

    /// Runs `ticks` ticks, leg `i`'s peer sending `tone(i)` Hz (nothing for `None`).
    fn run(&mut self, ticks: u64, tone: impl Fn(usize) -> Option<f64>) {
        for _ in 0..ticks {
            // One packet per codec and tone, shared by every leg sending it.
            let mut made: Vec<(CodecKind, u64, Vec<u8>)> = Vec::new();
            for (i, inbox) in self.io.inbox.iter_mut().enumerate() {
                let Some(freq) = tone(i) else { continue };
                let codec = self.codecs[i];
                let key = freq.to_bits();
                let k = match made.iter().position(|m| m.0 == codec && m.1 == key) {
                    Some(k) => k,
                    None => {
                        made.push((codec, key, packet_as(codec, freq, self.n)));
                        made.len() - 1
                    }
                };
                inbox.push_back(made[k].2.clone());
            }
            let now = (self.now(), self.t0.1 + FRAME * self.n as u32);
            self.io.now = now;
            self.w.tick(self.n, now.0, now.1, &mut self.io);
            self.n += 1;
        }
    }

    /// Runs `ticks` ticks with leg 0 hearing [`LOW`] and leg 1 [`HIGH`].
    fn talk(&mut self, ticks: u64) {
        self.run(ticks, |i| [Some(LOW), Some(HIGH)].get(i).copied().flatten());
    }

    /// What leg `leg` sent over its last `ms`.
    fn tail(&self, leg: usize, ms: usize) -> &[i16] {
        let heard = &self.io.heard[leg];
        &heard[heard.len().saturating_sub(ms * 8)..]
    }

    /// The share of leg `leg`'s last `ms` at `freq`.
    fn share(&self, leg: usize, freq: f64, ms: usize) -> f64 {
        share_at(&self.io.heard[leg], freq, ms)
    }

    /// Asserts leg 0 sends what leg 1 hears and the other way round, not their own audio.
    fn assert_crossed(&self) {
        for (leg, own, other) in [(0, LOW, HIGH), (1, HIGH, LOW)] {
            let (o, h) = (self.share(leg, other, 600), self.share(leg, own, 600));
            assert!(
                o > 0.9 && h < 0.01,
                "leg {leg}: {o} at its peer's tone, {h} at its own"
            );
        }
    }
}

/// Whether `pcm` is silence as G.711 carries it (A-law has no exact zero).
fn silent(pcm: &[i16]) -> bool {
    pcm.iter().all(|&s| s.abs() <= 8)
}

#[test]
fn bridged_legs_hear_each_other_not_themselves() {
    let mut h = Harness::new(&[CodecKind::Pcmu; 3]);
    h.w.bridge(0, 1).expect("bridged");
    // Leg 2 stays out, echoing its own peer.
    h.w.leg_command(h.now(), 2, LegCommand::Echo(true));
    h.run(100, |i| [LOW, HIGH, 700.0].get(i).copied());
    h.assert_crossed();
    for leg in 0..3 {
        assert_eq!(h.io.heard[leg].len(), 100 * FRAME_SAMPLES, "leg {leg}");
    }
    assert!(h.share(2, 700.0, 600) > 0.9, "the unbridged leg echoes");
    assert!(h.share(2, LOW, 600) < 0.01 && h.share(2, HIGH, 600) < 0.01);
    assert_eq!(h.w.stats().bridges.load(Ordering::Relaxed), 1);
}

#[test]
fn pcmu_and_pcma_legs_bridged_are_transcoded() {
    let mut h = Harness::new(&[CodecKind::Pcmu, CodecKind::Pcma]);
    h.w.bridge(1, 0).expect("bridged");
    h.talk(100);
    h.assert_crossed();
    assert_eq!(h.io.sent_as[0], Some(PayloadType::PCMU));
    assert_eq!(h.io.sent_as[1], Some(PayloadType::PCMA));
}

#[test]
fn a_peer_sending_nothing_is_heard_as_silence() {
    let mut h = Harness::new(&[CodecKind::Pcmu, CodecKind::Pcma]);
    h.w.bridge(0, 1).expect("bridged");
    // Leg 1's peer says nothing; echo on leg 0 must not leak into the bridge either.
    h.w.leg_command(h.now(), 0, LegCommand::Echo(true));
    h.run(50, |i| (i == 0).then_some(LOW));
    assert!(silent(&h.io.heard[0]), "leg 0 heard its silent peer");
    assert!(h.share(1, LOW, 600) > 0.9, "leg 1 sends leg 0's audio");
}

#[test]
fn a_playback_replaces_the_bridge_audio_for_its_own_leg_only() {
    let mut h = Harness::new(&[CodecKind::Pcmu, CodecKind::Pcmu]);
    h.w.bridge(0, 1).expect("bridged");
    h.talk(50);
    h.assert_crossed();
    let spec: ToneSpec = "800/600@-10".parse().expect("a tone");
    let source = Box::new(ToneGenerator::new(&spec, NARROW_RATE).expect("tone"));
    let play = LegCommand::Play {
        id: 7,
        source,
        barge_in: false,
    };
    h.w.leg_command(h.now(), 0, play);
    h.talk(25);
    // Leg 0 sends its announcement; leg 1 still sends leg 0's audio.
    let (tone, peer) = (h.share(0, 800.0, 400), h.share(0, HIGH, 400));
    assert!(
        tone > 0.9 && peer < 0.01,
        "leg 0: {tone} announcement, {peer} peer"
    );
    assert!(h.share(1, LOW, 400) > 0.9, "leg 1 still hears leg 0");
    // Once it is over (600 ms in), leg 0 hears its peer again.
    h.talk(40);
    let mut done = false;
    while let Ok(e) = h.events[0].try_recv() {
        done |= matches!(e, LegEvent::PlayDone { id: 7, .. });
    }
    assert!(done, "the announcement finished");
    h.assert_crossed();
}

#[test]
fn key_tones_are_not_passed_through_the_bridge() {
    let mut h = Harness::new(&[CodecKind::Pcmu, CodecKind::Pcma]);
    h.w.bridge(0, 1).expect("bridged");
    h.talk(25);
    // Leg 0's caller presses 5 in-band for 200 ms, then talks on.
    let five = Digit::from_char('5').expect("a digit");
    let mut key = ToneGenerator::new(&ToneSpec::dtmf(five, 200, 0), NARROW_RATE).expect("tone");
    for _ in 0..10 {
        let mut pcm = [0i16; FRAME_SAMPLES];
        key.fill(&mut pcm);
        h.io.inbox[0].push_back(pcm_packet(CodecKind::Pcmu, &pcm, h.n));
        h.run(1, |i| (i == 1).then_some(HIGH));
    }
    h.talk(25);
    let mut pressed = false;
    while let Ok(e) = h.events[0].try_recv() {
        pressed |= matches!(e, LegEvent::Digit { digit, .. } if digit == five);
    }
    assert!(pressed, "leg 0 saw the key");
    let (low, high) = five.frequencies();
    // What leg 1 sent from the key's first tick on, 400 ms: the key (late by the jitter
    // buffer's delay), then leg 0's voice again.
    let sent = &h.io.heard[1][25 * FRAME_SAMPLES..45 * FRAME_SAMPLES];
    let leaked =
        tone_share(sent, f64::from(low), 8000.0) + tone_share(sent, f64::from(high), 8000.0);
    // Passed through, the key would be ~40% of it.
    assert!(leaked < 0.03, "leg 1 sent the key tone: {leaked}");
    assert!(
        h.share(1, LOW, 400) > 0.9,
        "leg 1 sends leg 0's voice again"
    );
}

#[test]
fn unbridging_silences_both_ways() {
    let mut h = Harness::new(&[CodecKind::Pcmu, CodecKind::Pcma]);
    h.w.bridge(0, 1).expect("bridged");
    h.talk(50);
    h.assert_crossed();
    let sent = [h.io.heard[0].len(), h.io.heard[1].len()];
    // Through the command a handle sends, naming the second leg: it ends for both.
    h.w.command(h.now(), h.n, Command::Unbridge(1), &mut h.io);
    h.talk(50);
    for (leg, from) in sent.into_iter().enumerate() {
        let after = &h.io.heard[leg][from..];
        assert_eq!(after.len(), 50 * FRAME_SAMPLES, "leg {leg} still sends");
        assert!(silent(after), "leg {leg} is silent after unbridging");
    }
    assert_eq!(h.w.stats().bridges.load(Ordering::Relaxed), 0);
    // The legs are free again: they can be bridged anew.
    h.w.bridge(1, 0).expect("bridged again");
    h.talk(50);
    h.assert_crossed();
}

#[test]
fn removing_one_leg_leaves_the_other_sending_silence() {
    let mut h = Harness::new(&[CodecKind::Pcmu, CodecKind::Pcmu]);
    h.w.bridge(0, 1).expect("bridged");
    h.talk(50);
    h.assert_crossed();
    h.w.command(h.now(), h.n, Command::Remove(1), &mut h.io);
    let from = h.io.heard[0].len();
    h.talk(50);
    let after = &h.io.heard[0][from..];
    assert_eq!(after.len(), 50 * FRAME_SAMPLES, "leg 0 still sends");
    assert!(silent(after), "leg 0 hears nothing once its peer is gone");
    assert_eq!(h.w.stats().bridges.load(Ordering::Relaxed), 0);
    assert_eq!(h.w.stats().legs.load(Ordering::Relaxed), 1);
    let mut closed = false;
    while let Ok(e) = h.events[1].try_recv() {
        closed |= matches!(e, LegEvent::Closed(_));
    }
    assert!(closed, "the removed leg closed");
    // Leg 0 is a plain leg again: it can be bridged or echo.
    assert_eq!(h.w.bridge(0, 1), Err(BridgeError::Gone(1)));
    h.w.leg_command(h.now(), 0, LegCommand::Echo(true));
    h.talk(50);
    assert!(h.share(0, LOW, 600) > 0.9, "leg 0 echoes as a plain leg");
}

#[test]
fn rooms_and_bridges_exclude_each_other() {
    const ROOM: u64 = 4;
    let mut h = Harness::new(&[CodecKind::Pcmu; 4]);
    let (host, pending) = room_host(ROOM);
    h.w.add_room(host);
    let now = h.now();
    let (joined, _left0) = join(&mut h.w, &mut h.io, (ROOM, &pending), 0, now);
    assert!(joined.is_ok(), "leg 0 joined the room");
    assert_eq!(h.w.bridge(0, 1), Err(BridgeError::InRoom(0)));
    assert_eq!(h.w.bridge(1, 0), Err(BridgeError::InRoom(0)));
    assert_eq!(h.w.bridge(1, 1), Err(BridgeError::SameLeg));
    assert_eq!(h.w.bridge(1, 99), Err(BridgeError::Gone(99)));
    // Through the command a handle sends, answered on its channel.
    let (done, mut answer) = oneshot::channel();
    h.w.command(now, 0, Command::Bridge { a: 1, b: 2, done }, &mut h.io);
    assert_eq!(answer.try_recv(), Ok(Ok(())));
    assert_eq!(h.w.bridge(2, 1), Ok(()), "the same pair again");
    assert_eq!(h.w.bridge(3, 2), Err(BridgeError::Bridged(2)));
    let (joined, _left1) = join(&mut h.w, &mut h.io, (ROOM, &pending), 1, now);
    assert_eq!(
        joined,
        Err(JoinRefusal::NoLeg),
        "a bridged leg joins no room"
    );
    // A leg that is not here answers as gone.
    let (done, mut answer) = oneshot::channel();
    h.w.command(now, 0, Command::Bridge { a: 42, b: 3, done }, &mut h.io);
    assert_eq!(answer.try_recv(), Ok(Err(BridgeError::Gone(42))));
    assert_eq!(
        h.w.stats().bridges.load(Ordering::Relaxed),
        0,
        "not ticked yet"
    );
    h.run(1, |_| None);
    assert_eq!(h.w.stats().bridges.load(Ordering::Relaxed), 1);
    assert_eq!(h.w.stats().members.load(Ordering::Relaxed), 1);
}

#[test]
fn two_hundred_bridged_pairs_for_500_ticks() {
    const PAIRS: usize = 200;
    const TICKS: u64 = 500;
    let started = Instant::now();
    let freq = |i: usize| 300.0 + 100.0 * (i % 8) as f64;
    // Every other pair is PCMU on one side and PCMA on the other.
    let codecs: Vec<CodecKind> = (0..2 * PAIRS)
        .map(|i| {
            if i % 4 == 3 {
                CodecKind::Pcma
            } else {
                CodecKind::Pcmu
            }
        })
        .collect();
    let mut h = Harness::new(&codecs);
    for p in 0..PAIRS as u64 {
        h.w.bridge(2 * p, 2 * p + 1).expect("bridged");
    }
    h.run(TICKS, |i| Some(freq(i)));
    assert_eq!(h.w.stats().bridges.load(Ordering::Relaxed), PAIRS);
    assert_eq!(h.w.stats().ticks.load(Ordering::Relaxed), TICKS);
    for i in 0..2 * PAIRS {
        let heard = &h.io.heard[i];
        assert_eq!(heard.len(), TICKS as usize * FRAME_SAMPLES, "leg {i}");
        let peer = i ^ 1;
        let (theirs, own) = (h.share(i, freq(peer), 1000), h.share(i, freq(i), 1000));
        assert!(
            theirs > 0.9 && own < 0.01,
            "leg {i}: {theirs} at its peer's tone, {own} at its own"
        );
        assert!(!silent(h.tail(i, 100)));
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "virtual time runs fast: {:?}",
        started.elapsed()
    );
}
