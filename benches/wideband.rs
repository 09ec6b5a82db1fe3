//! What wideband codecs cost on a media worker, sans-IO (packets in from memory, datagrams out
//! to a no-op sink): one G.722 leg's 20 ms tick beside a PCMU leg's; with the `opus` feature,
//! a worker's tick over one bridged call transcoding Opus to PCMU and back, and a room of
//! 100 Opus members with 3 talkers, every member's receive half (jitter buffer, Opus decode,
//! DTMF detection) and the room's mix and send halves counted: listeners sending line noise,
//! in DTX, or sending line noise with RFC 6464 levels (their quiet packets left undecoded).
//!
//! Prints each median as a share of one core (a tick is due every 20 ms) and asserts the
//! steady state allocates nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use switchboard::media::codec::{CodecKind, CodecParams};
use switchboard::media::frame::FRAME;
use switchboard::media::leg::{Leg, LegCommand, LegConfig};
use switchboard::rtp::types::{PayloadType, Ssrc};

#[path = "support/alloc.rs"]
mod alloc;
#[path = "support/leg.rs"]
mod leg;
#[path = "support/measure.rs"]
mod measure;
#[cfg(feature = "opus")]
#[path = "support/room.rs"]
mod room;
#[path = "support/stream.rs"]
mod stream;

use leg::{pcmu_leg, PEER};
use measure::{allocations_in, core_percent, median_of, runs};
use stream::{speech, Stream};

#[global_allocator]
static A: alloc::Counting = alloc::Counting;

/// A leg of `kind` on payload type `pt`, sending to [`PEER`].
fn wide_leg(kind: CodecKind, pt: u8, ssrc: u32, now: Instant) -> Leg {
    wide_leg_with(kind, pt, ssrc, now, CodecParams::default())
}

/// [`wide_leg`] with the parameters its peer agreed (an RFC 6464 level id, say).
fn wide_leg_with(kind: CodecKind, pt: u8, ssrc: u32, now: Instant, params: CodecParams) -> Leg {
    let cfg = LegConfig {
        codec: kind,
        payload_type: PayloadType::new(pt).unwrap(),
        params,
        ..LegConfig::pcmu(PEER, Ssrc::new(ssrc))
    };
    Leg::new(cfg, now).unwrap()
}

/// One echoing leg's whole tick: its packet in (jitter buffer, decode, DTMF detection), the
/// echo encoded and sent, RTCP checked.
fn leg_tick(leg: &mut Leg, stream: &Stream, t0: Instant, n: u64, buf: &mut [u8], sent: &mut usize) {
    let len = stream.packet(n, buf);
    let now = t0 + FRAME * n as u32;
    let wallclock = SystemTime::UNIX_EPOCH + FRAME * n as u32;
    leg.handle_packet(now, wallclock, PEER, &buf[..len]);
    leg.tick(now, wallclock, n, &mut |_, _, b| *sent += b.len());
    while leg.poll_event().is_some() {}
}

fn single_legs(c: &mut Criterion) {
    let mut g = c.benchmark_group("wideband leg tick");
    for (kind, pt) in [(CodecKind::Pcmu, 0u8), (CodecKind::G722, 9)] {
        let t0 = Instant::now();
        let mut leg = match kind {
            CodecKind::Pcmu => pcmu_leg(1, t0),
            _ => wide_leg(kind, pt, 1, t0),
        };
        leg.apply(t0, LegCommand::Echo(true));
        let stream = Stream::new(kind, pt, &speech(kind.sample_rate()), 2);
        let mut buf = [0u8; 1500];
        let mut sent = 0usize;
        let mut n = 0u64;
        runs(100, &mut n, |n| {
            leg_tick(&mut leg, &stream, t0, n, &mut buf, &mut sent)
        });
        g.bench_function(format!("{kind:?} echo leg"), |b| {
            b.iter(|| {
                leg_tick(&mut leg, &stream, t0, n, &mut buf, &mut sent);
                n += 1;
            })
        });
        let median = median_of(2000, &mut n, |n| {
            leg_tick(&mut leg, &stream, t0, n, &mut buf, &mut sent)
        });
        println!(
            "{kind:?} leg: median tick {median:?}, {:.4}% of a core",
            core_percent(median)
        );
        let allocs = allocations_in(500, &mut n, |n| {
            leg_tick(&mut leg, &stream, t0, n, &mut buf, &mut sent)
        });
        assert_eq!(allocs, 0, "the {kind:?} leg allocated");
        assert!(sent > 0);
    }
    g.finish();
}

#[cfg(feature = "opus")]
mod opus {
    //! The Opus benchmarks: a bridged Opus–PCMU call through a worker, and an Opus room.

    use std::hint::black_box;
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::stream::LEVEL_ID;
    use super::*;
    use switchboard::conference::host::{MemberLegs, RoomHost};
    use switchboard::conference::{AudioLevel, MemberId};
    use switchboard::engine::{Datagram, MediaIo, Worker};
    use switchboard::media::frame::Frame;
    use switchboard::media::leg::{LegEvent, Port};
    use switchboard::rtp::types::ClockRate;

    const OPUS_PT: u8 = 111;

    /// Faint line noise at `rate` (about −66 dBov): what a listening member's phone sends.
    fn line_noise(rate: ClockRate, seconds: usize, seed: u32) -> Vec<i16> {
        let mut x = seed | 1;
        (0..rate.hz() as usize * seconds)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 33) as i16 - 16
            })
            .collect()
    }

    /// A worker's io: each leg's packet of the tick in once, sent bytes counted.
    struct BridgeIo {
        streams: [Stream; 2],
        n: u64,
        unread: [bool; 2],
        sent: usize,
        now: (Instant, SystemTime),
    }

    impl MediaIo for BridgeIo {
        type Endpoint = usize;

        fn recv(&mut self, leg: &usize, port: Port, buf: &mut [u8]) -> Option<Datagram> {
            if port != Port::Rtp || !std::mem::take(&mut self.unread[*leg]) {
                return None;
            }
            let len = self.streams[*leg].packet(self.n, buf);
            Some(Datagram {
                len,
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

    fn bridge_tick(w: &mut Worker<usize>, io: &mut BridgeIo, t0: Instant, n: u64) {
        io.n = n;
        io.unread = [true; 2];
        let now = t0 + FRAME * n as u32;
        io.now.0 = now;
        w.tick(n, now, io.now.1, io);
    }

    /// One call bridged on a worker, an Opus phone on one side and a PCMU phone on the other,
    /// both talking: each tick decodes an Opus and a PCMU packet, encodes one of each.
    pub fn bridged_call(c: &mut Criterion) {
        let t0 = Instant::now();
        let mut w = Worker::new();
        let mut events: Vec<tokio::sync::mpsc::UnboundedReceiver<LegEvent>> = Vec::new();
        for (i, (kind, pt)) in [(CodecKind::Opus, OPUS_PT), (CodecKind::Pcmu, 0)]
            .into_iter()
            .enumerate()
        {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            w.add_leg(i as u64, wide_leg(kind, pt, i as u32 + 1, t0), i, tx);
            events.push(rx);
        }
        w.bridge(0, 1).unwrap();
        let speech48 = speech(ClockRate::HZ_48000);
        let speech8 = speech(ClockRate::HZ_8000);
        // The two phones say different things: the PCMU one from 3 s in.
        let mut io = BridgeIo {
            streams: [
                Stream::new(CodecKind::Opus, OPUS_PT, &speech48, 10),
                Stream::new(CodecKind::Pcmu, 0, &speech8[3 * 8000..], 11),
            ],
            n: 0,
            unread: [false; 2],
            sent: 0,
            now: (t0, SystemTime::now()),
        };
        let mut n = 0u64;
        runs(100, &mut n, |n| bridge_tick(&mut w, &mut io, t0, n));
        let mut g = c.benchmark_group("wideband bridged call");
        g.bench_function("Opus to PCMU, worker tick", |b| {
            b.iter(|| {
                bridge_tick(&mut w, &mut io, t0, n);
                n += 1;
            })
        });
        g.finish();
        let median = median_of(2000, &mut n, |n| bridge_tick(&mut w, &mut io, t0, n));
        println!(
            "bridged Opus-PCMU call: median tick {median:?}, {:.4}% of a core per call",
            core_percent(median)
        );
        let allocs = allocations_in(500, &mut n, |n| bridge_tick(&mut w, &mut io, t0, n));
        assert_eq!(allocs, 0, "the bridged call allocated");
        assert!(io.sent > 0);
        black_box(events);
    }

    const MEMBERS: usize = 100;
    const TALKERS: usize = 3;

    /// The room's legs as its worker reaches them, without sockets; each hears what it
    /// decoded this tick.
    struct OpusLegs {
        legs: Vec<Leg>,
        streams: Vec<Stream>,
        tick: u64,
        now: Instant,
        buf: [u8; 1500],
        bytes: usize,
    }

    impl MemberLegs for OpusLegs {
        fn find(&self, leg: u64) -> Option<usize> {
            (leg < self.legs.len() as u64).then_some(leg as usize)
        }
        fn bind(&mut self, _: usize, _: Option<(u64, MemberId)>) {}
        fn input(&self, tag: usize) -> Option<&Frame> {
            let leg = self.legs.get(tag)?;
            (leg.hearing() && !leg.dtmf_sounding()).then(|| leg.input())
        }
        fn codec(&self, tag: usize) -> Option<CodecKind> {
            self.legs.get(tag).map(Leg::codec)
        }
        fn input_level(&self, tag: usize) -> Option<AudioLevel> {
            self.legs.get(tag)?.input_level()
        }
        fn set_quiet_floor(&mut self, tag: usize, floor: Option<AudioLevel>) {
            if let Some(leg) = self.legs.get_mut(tag) {
                leg.set_quiet_floor(floor);
            }
        }
        fn send(&mut self, tag: usize, pcm: &Frame, encoded: Option<&[u8]>) {
            if let Some(leg) = self.legs.get_mut(tag) {
                super::room::send_half(leg, self.now, self.tick, pcm, encoded, &mut self.bytes);
            }
        }
    }

    impl OpusLegs {
        /// Every member's receive half: its packet of tick `n` in, the frame decoded.
        fn receive(&mut self, n: u64) {
            let wallclock = SystemTime::UNIX_EPOCH + FRAME * n as u32;
            for (leg, stream) in self.legs.iter_mut().zip(&self.streams) {
                let len = stream.packet(n, &mut self.buf);
                if len > 0 {
                    leg.handle_packet(self.now, wallclock, PEER, &self.buf[..len]);
                }
                leg.receive(self.now);
                while leg.poll_event().is_some() {}
            }
        }
    }

    /// What the listeners' phones send.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Listeners {
        /// Faint line noise, a packet every 20 ms.
        LineNoise,
        /// Nothing, after a moment: DTX (`usedtx=1`) with quiet mics.
        Dtx,
        /// Faint line noise, a packet every 20 ms, each with its RFC 6464 level (as the
        /// talkers' do too): the room lets the listeners' legs leave them undecoded.
        LineNoiseWithLevels,
    }

    /// The room of [`MEMBERS`], [`TALKERS`] of them talking, the rest `listeners`.
    fn room(t0: Instant, listeners: Listeners) -> (RoomHost, OpusLegs) {
        let speech = speech(ClockRate::HZ_48000);
        let dtx = listeners == Listeners::Dtx;
        let levels = (listeners == Listeners::LineNoiseWithLevels).then_some(LEVEL_ID);
        let mut listener = CodecParams::default();
        listener.opus.use_dtx = dtx;
        listener.audio_level_id = levels;
        let talker = CodecParams {
            audio_level_id: levels,
            ..CodecParams::default()
        };
        let streams: Vec<Stream> = (0..MEMBERS)
            .map(|k| {
                if k < TALKERS {
                    let at = (1 + 4 * k) * 48000;
                    Stream::with(CodecKind::Opus, OPUS_PT, &speech[at..], k as u32, &talker)
                } else {
                    // A phone in DTX has a quiet mic (libopus codes even faint line noise
                    // as sound); one sending every frame has line noise.
                    let noise = if dtx {
                        vec![0; 48000]
                    } else {
                        line_noise(ClockRate::HZ_48000, 1, k as u32)
                    };
                    Stream::with(CodecKind::Opus, OPUS_PT, &noise, k as u32, &listener)
                }
            })
            .collect();
        let legs: Vec<Leg> = (0..MEMBERS)
            .map(|i| {
                let agreed = CodecParams {
                    audio_level_id: levels,
                    ..CodecParams::default()
                };
                wide_leg_with(CodecKind::Opus, OPUS_PT, 1000 + i as u32, t0, agreed)
            })
            .collect();
        let mut b = OpusLegs {
            legs,
            streams,
            tick: 0,
            now: t0,
            buf: [0; 1500],
            bytes: 0,
        };
        let host = super::room::joined_room("opus", MEMBERS, t0, &mut b);
        (host, b)
    }

    /// The room's part of a tick: the mix, the shared and the talkers' own encodes, every
    /// member's send half.
    fn mix_and_send(host: &mut RoomHost, legs: &mut OpusLegs) {
        host.tick(legs.now, legs);
        host.flush(legs.now, legs);
    }

    fn room_tick(host: &mut RoomHost, legs: &mut OpusLegs, t0: Instant, n: u64) {
        legs.tick = n;
        legs.now = t0 + FRAME * n as u32;
        legs.receive(n);
        mix_and_send(host, legs);
    }

    /// A room of 100 Opus members, 3 of them talking, every member sending a packet a tick.
    pub fn opus_room(c: &mut Criterion) {
        room_case(c, Listeners::LineNoise);
    }

    /// The same room with the listeners' phones in DTX: after a moment of their line noise
    /// they send nothing, and their legs stop decoding.
    pub fn opus_room_dtx(c: &mut Criterion) {
        room_case(c, Listeners::Dtx);
    }

    /// The same room with every phone sending RFC 6464 levels: the listeners' line noise is
    /// below the talker threshold, so their legs skip decoding it.
    pub fn opus_room_levels(c: &mut Criterion) {
        room_case(c, Listeners::LineNoiseWithLevels);
    }

    fn room_case(c: &mut Criterion, listeners: Listeners) {
        let t0 = Instant::now();
        let (mut host, mut legs) = room(t0, listeners);
        let case = match listeners {
            Listeners::LineNoise => "100 Opus members, 3 talkers",
            Listeners::Dtx => "100 Opus members, 3 talkers, listeners in DTX",
            Listeners::LineNoiseWithLevels => {
                "100 Opus members, 3 talkers, listeners sending line noise with ssrc-audio-level"
            }
        };
        let mut n = 0u64;
        runs(100, &mut n, |n| room_tick(&mut host, &mut legs, t0, n));
        let talking = host
            .room()
            .members()
            .filter(|m| host.room().is_talking(m.id))
            .count();
        assert_eq!(talking, TALKERS, "the talkers, and only they, are talking");

        let mut g = c.benchmark_group("wideband room tick");
        g.bench_function(case, |b| {
            b.iter(|| {
                room_tick(&mut host, &mut legs, t0, n);
                n += 1;
            })
        });
        g.finish();

        let whole = median_of(2000, &mut n, |n| room_tick(&mut host, &mut legs, t0, n));
        // The room's part alone: the receive halves run outside the timed stretch.
        let mut times = Vec::with_capacity(2000);
        for _ in 0..2000 {
            legs.tick = n;
            legs.now = t0 + FRAME * n as u32;
            legs.receive(n);
            let start = Instant::now();
            mix_and_send(&mut host, &mut legs);
            times.push(start.elapsed());
            n += 1;
        }
        times.sort();
        let mix = times[times.len() / 2];
        let per = |d: Duration| d / MEMBERS as u32;
        println!(
            "{case}: median whole tick {whole:?} ({:?} per member, \
             {:.4}% of a core per member; target 0.2%: {}); mix and send halves alone \
             {mix:?} ({:?} per member, {:.4}% of a core)",
            per(whole),
            core_percent(per(whole)),
            if core_percent(per(whole)) <= 0.2 {
                "met"
            } else {
                "not met"
            },
            per(mix),
            core_percent(per(mix)),
        );
        let allocs = allocations_in(500, &mut n, |n| room_tick(&mut host, &mut legs, t0, n));
        assert_eq!(allocs, 0, "the Opus room tick allocated");
        assert!(legs.bytes > 0);
        let skipped: u64 = legs.legs.iter().map(|l| l.stats().decodes_skipped).sum();
        let decoded: u64 = legs.legs.iter().map(|l| l.stats().frames_decoded).sum();
        println!("{case}: {decoded} packets decoded, {skipped} skipped");
        if listeners == Listeners::LineNoiseWithLevels {
            // Almost every listener packet is skipped; the talkers' are decoded.
            assert!(
                skipped > 20 * decoded,
                "{skipped} skipped, {decoded} decoded"
            );
        } else {
            assert_eq!(skipped, 0);
        }
    }
}

#[cfg(feature = "opus")]
criterion_group!(
    benches,
    single_legs,
    opus::bridged_call,
    opus::opus_room,
    opus::opus_room_dtx,
    opus::opus_room_levels
);
#[cfg(not(feature = "opus"))]
criterion_group!(benches, single_legs);
criterion_main!(benches);
