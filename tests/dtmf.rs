//! DTMF end to end: what our senders produce, our receivers read back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use switchboard::media::dtmf::{
    DigitEvent, DigitPhase, DtmfEvent, DtmfMerger, EventReceiver, EventSender, InbandDetector,
    InbandSender, SampleClock,
};
use switchboard::rtp::types::{ClockRate, PayloadType, RtpTimestamp};

fn began(events: &[DtmfEvent]) -> String {
    events
        .iter()
        .filter(|e| e.phase == DigitPhase::Began)
        .map(|e| e.digit.as_char())
        .collect()
}

/// Runs a sender into a receiver on a 20 ms tick; `drop(i)` loses the i-th packet.
fn round_trip(digits: &str, drop: impl Fn(usize) -> bool) -> Vec<DtmfEvent> {
    let pt = PayloadType::new(101).unwrap();
    let mut tx = EventSender::new(pt, ClockRate::HZ_8000);
    let mut rx = EventReceiver::new(pt, ClockRate::HZ_8000);
    tx.queue(digits).unwrap();
    let t0 = Instant::now();
    let mut ts = RtpTimestamp::new(0x8000_0000);
    let mut events = Vec::new();
    let mut sent = 0;
    for tick in 0..500u64 {
        let now = t0 + Duration::from_millis(20 * tick);
        events.extend(rx.handle_timeout(now));
        if let Some(p) = tx.poll(ts) {
            assert_eq!(p.payload_type, rx.payload_type());
            if !drop(sent) {
                events.extend(rx.push(now, p.timestamp, p.marker, &p.payload));
                events.extend(std::iter::from_fn(|| rx.poll_event()));
            }
            sent += 1;
        }
        ts = ts.wrapping_add(160);
    }
    events
}

#[test]
fn rfc4733_sender_to_receiver() {
    let ev = round_trip("123#", |_| false);
    assert_eq!(began(&ev), "123#");
    let ends: Vec<_> = ev
        .iter()
        .filter(|e| e.phase == DigitPhase::Ended)
        .map(|e| e.duration)
        .collect();
    assert_eq!(ends, vec![Some(Duration::from_millis(100)); 4]);
}

#[test]
fn rfc4733_round_trip_survives_losing_non_essential_packets() {
    // Eight packets per digit: start, four continuations, three ends.
    for lose in [
        &[0usize][..],     // start of the first digit
        &[0, 1, 2],        // first packets
        &[5, 6, 7],        // every end report of the first digit
        &[1, 3, 6, 9, 14], // scattered
        &[8, 16, 24],      // each later digit's marker packet
        &[13, 14, 15, 16], // second digit's ends and the third's start
    ] {
        let ev = round_trip("123#", |i| lose.contains(&i));
        assert_eq!(began(&ev), "123#", "losing {lose:?}");
    }
    // Same digit twice in a row, with its ends lost.
    let ev = round_trip("55", |i| (5..8).contains(&i));
    assert_eq!(began(&ev), "55");
}

#[test]
fn inband_sender_to_detector() {
    let mut tx = InbandSender::new(ClockRate::HZ_8000).unwrap();
    let all = "0123456789*#ABCD";
    tx.queue(all).unwrap();
    tx.queue("1199").unwrap();
    let mut det = InbandDetector::new(ClockRate::HZ_8000).unwrap();
    let mut found: Vec<DigitEvent> = Vec::new();
    let mut frame = [0i16; 160];
    while !tx.is_idle() {
        let n = tx.fill(&mut frame);
        frame[n..].fill(0);
        det.push(&frame, |e| found.push(e));
    }
    det.push(&[0; 800], |e| found.push(e));
    let digits: String = found
        .iter()
        .filter(|e| e.phase == DigitPhase::Began)
        .map(|e| e.digit.as_char())
        .collect();
    assert_eq!(digits, format!("{all}1199"));
    // The merged stream of both directions' digits, in-band only, is unchanged.
    let clock = SampleClock::new(Instant::now(), 8000).unwrap();
    let mut merger = DtmfMerger::default();
    let merged: String = found
        .iter()
        .filter_map(|e| merger.push(DtmfEvent::from_inband(e, &clock)))
        .map(|k| k.digit.as_char())
        .collect();
    assert_eq!(merged, digits);
}

#[test]
fn rfc4733_and_inband_of_the_same_presses_merge() {
    let pt = PayloadType::new(101).unwrap();
    let mut tx = EventSender::new(pt, ClockRate::HZ_8000);
    let mut rx = EventReceiver::new(pt, ClockRate::HZ_8000);
    let mut tones = InbandSender::new(ClockRate::HZ_8000).unwrap();
    let mut det = InbandDetector::new(ClockRate::HZ_8000).unwrap();
    // Same presses both ways, including a quick repeat.
    tx.queue("4477").unwrap();
    tones.queue("4477").unwrap();
    let t0 = Instant::now();
    // In-band audio comes out of a 60 ms jitter buffer and the clock does not correct for
    // it: the overlap window absorbs the lag.
    let clock = SampleClock::new(t0, 8000).unwrap();
    let mut merger = DtmfMerger::default();
    let mut presses = String::new();
    let mut ts = RtpTimestamp::new(0);
    let mut frame = [0i16; 160];
    let mut delayed: Vec<[i16; 160]> = vec![[0; 160]; 3];
    for tick in 0..100u64 {
        let now = t0 + Duration::from_millis(20 * tick);
        let mut events = Vec::new();
        events.extend(rx.handle_timeout(now));
        if let Some(p) = tx.poll(ts) {
            events.extend(rx.push(now, p.timestamp, p.marker, &p.payload));
            events.extend(std::iter::from_fn(|| rx.poll_event()));
        }
        let n = tones.fill(&mut frame);
        frame[n..].fill(0);
        delayed.push(frame);
        let out = delayed.remove(0);
        det.push(&out, |e| events.push(DtmfEvent::from_inband(&e, &clock)));
        for e in events {
            presses.extend(merger.push(e).map(|k| k.digit.as_char()));
        }
        ts = ts.wrapping_add(160);
    }
    assert_eq!(presses, "4477");
    assert_eq!(merger.suppressed(), 4);
}

mod through_a_leg {
    //! In-band keys as a call carries them: G.711 RTP packets into a media leg.

    use std::time::{Duration, Instant, SystemTime};

    use switchboard::media::codec::CodecKind;
    use switchboard::media::dtmf::{DetectorConfig, Digit, DtmfMethod};
    use switchboard::media::leg::{Leg, LegConfig, LegEvent};
    use switchboard::media::level::dbm0_to_peak;
    use switchboard::rtp::packet::{RtpHeader, RtpPacket};
    use switchboard::rtp::types::{PayloadType, RtpTimestamp, Ssrc, WireSeq};

    const PEER: &str = "127.0.0.1:40000";

    fn leg(codec: CodecKind, dtmf: DetectorConfig, now: Instant) -> Leg {
        let cfg = LegConfig {
            codec,
            payload_type: codec_pt(codec),
            telephone_event: None,
            dtmf,
            ..LegConfig::pcmu(PEER.parse().unwrap(), Ssrc::new(7))
        };
        Leg::new(cfg, now).unwrap()
    }

    fn codec_pt(codec: CodecKind) -> PayloadType {
        codec.static_payload_type().unwrap()
    }

    /// 20 ms RTP packets of `codec` carrying a sine pair at the given levels (dBm0, exact
    /// for the law: µ-law's 0 dBm0 is a peak of 4 × 8159 × 10^(−3.17/20), A-law's is what
    /// `dbm0_to_peak` gives).
    fn key_packets(
        codec: CodecKind,
        d: Digit,
        low: f32,
        high: f32,
        tone_ms: usize,
    ) -> Vec<Vec<u8>> {
        let scale = if codec == CodecKind::Pcmu {
            4.0 * 8159.0 * 10f64.powf(-3.17 / 20.0) / f64::from(dbm0_to_peak(0.0))
        } else {
            1.0
        };
        let (fl, fh) = d.frequencies();
        let (al, ah) = (
            f64::from(dbm0_to_peak(low)) * scale,
            f64::from(dbm0_to_peak(high)) * scale,
        );
        let mut pcm = vec![0i16; 8 * 100];
        pcm.extend((0..8 * tone_ms).map(|n| {
            let t = n as f64 / 8000.0;
            let w = 2.0 * std::f64::consts::PI * t;
            (al * (w * f64::from(fl)).sin() + ah * (w * f64::from(fh) + 1.0).sin()).round() as i16
        }));
        pcm.extend(vec![0i16; 8 * 300]);
        let mut encoder = codec.new_codec();
        pcm.chunks(160)
            .enumerate()
            .map(|(i, frame)| {
                let mut payload = vec![0u8; frame.len()];
                let n = encoder.encode(frame, &mut payload).unwrap();
                payload.truncate(n);
                let header = RtpHeader {
                    marker: i == 0,
                    payload_type: codec_pt(codec),
                    seq: WireSeq::new(100 + i as u16),
                    timestamp: RtpTimestamp::new(5000 + 160 * i as u32),
                    ssrc: Ssrc::new(99),
                };
                let mut out = vec![0u8; 1500];
                let n = RtpPacket::new(header, &payload).write(&mut out).unwrap();
                out.truncate(n);
                out
            })
            .collect()
    }

    /// Feeds one packet per 20 ms tick (and a few ticks more) and returns the leg's events.
    fn run(leg: &mut Leg, t0: Instant, input: &[Vec<u8>]) -> Vec<LegEvent> {
        let mut events = Vec::new();
        for n in 0..input.len() + 10 {
            let now = t0 + Duration::from_millis(20 * n as u64);
            if let Some(p) = input.get(n) {
                leg.handle_packet(now, SystemTime::now(), PEER.parse().unwrap(), p);
            }
            leg.tick(now, SystemTime::now(), n as u64, &mut |_, _, _| {});
            events.extend(std::iter::from_fn(|| leg.poll_event()));
        }
        events
    }

    #[test]
    fn a_key_with_8_db_normal_twist_at_minus_30_dbm0_is_reported_once() {
        // Low group at −30 dBm0, high group 8 dB quieter, as a long line delivers it.
        for codec in CodecKind::ALL {
            for c in ['1', '5', '9', '#', 'D'] {
                let d = Digit::from_char(c).unwrap();
                let t0 = Instant::now();
                let mut l = leg(codec, DetectorConfig::default(), t0);
                let events = run(&mut l, t0, &key_packets(codec, d, -30.0, -38.0, 80));
                assert_eq!(
                    events,
                    vec![LegEvent::Digit {
                        digit: d,
                        method: DtmfMethod::Inband
                    }],
                    "{codec:?} {c}"
                );
            }
        }
    }

    #[test]
    fn the_legs_detector_follows_its_configured_limits() {
        let d = Digit::from_char('0').unwrap();
        let strict = DetectorConfig {
            min_level_dbm0: -30.0,
            ..DetectorConfig::default()
        };
        let narrow = DetectorConfig {
            normal_twist_db: 4.0,
            ..DetectorConfig::default()
        };
        for codec in CodecKind::ALL {
            let t0 = Instant::now();
            let quiet = key_packets(codec, d, -34.0, -34.0, 80);
            let twisted = key_packets(codec, d, -10.0, -16.0, 80);
            for (cfg, input) in [(strict, &quiet), (narrow, &twisted)] {
                let mut default = leg(codec, DetectorConfig::default(), t0);
                assert_eq!(run(&mut default, t0, input).len(), 1, "{codec:?}");
                let mut configured = leg(codec, cfg, t0);
                assert_eq!(run(&mut configured, t0, input), vec![], "{codec:?} {cfg:?}");
            }
        }
    }
}
