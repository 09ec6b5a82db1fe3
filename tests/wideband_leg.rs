//! Wideband codecs through a media leg: a leg runs at its codec's own rate (16 kHz for G.722
//! and L16/16000, 48 kHz for Opus), so what it hears and echoes keeps the whole band (a
//! 6 kHz tone comes back), and its packets are stamped on the codec's RTP clock (8000 Hz for
//! G.722, 16000 for L16/16000, 48000 for Opus).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime};

use switchboard::media::codec::{AudioCodec, CodecKind, G722};
use switchboard::media::leg::{Leg, LegCommand, LegConfig};
use switchboard::media::level::{rms_dbfs, tone_share};
use switchboard::rtp::packet::{RtpHeader, RtpPacket};
use switchboard::rtp::types::{PayloadType, RtpTimestamp, Ssrc, WireSeq};

const PEER: &str = "127.0.0.1:40000";

fn leg(codec: CodecKind, pt: u8, now: Instant) -> Result<Leg, String> {
    let cfg = LegConfig {
        codec,
        payload_type: PayloadType::new(pt).unwrap(),
        ..LegConfig::pcmu(PEER.parse().unwrap(), Ssrc::new(7))
    };
    Leg::new(cfg, now).map_err(|e| e.to_string())
}

fn sine(freq: f64, amp: f64, rate: u32, seconds: f64) -> Vec<i16> {
    let n = (f64::from(rate) * seconds) as usize;
    (0..n)
        .map(|i| {
            (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin()) as i16
        })
        .collect()
}

/// RTP packets, one per 20 ms, whose payloads are `payloads`, timestamps stepping by `step`.
fn rtp(payloads: &[Vec<u8>], pt: u8, step: u32) -> Vec<Vec<u8>> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let header = RtpHeader {
                marker: i == 0,
                payload_type: PayloadType::new(pt).unwrap(),
                seq: WireSeq::new(100 + i as u16),
                timestamp: RtpTimestamp::new(5000 + step * i as u32),
                ssrc: Ssrc::new(99),
            };
            let mut out = vec![0u8; 1500];
            let n = RtpPacket::new(header, p).write(&mut out).unwrap();
            out.truncate(n);
            out
        })
        .collect()
}

fn g722_payloads(pcm16k: &[i16]) -> Vec<Vec<u8>> {
    let mut enc = G722::new();
    pcm16k
        .chunks_exact(320)
        .map(|f| {
            let mut p = vec![0u8; 160];
            let n = enc.encode(f, &mut p).unwrap();
            p.truncate(n);
            p
        })
        .collect()
}

/// Feeds one packet per tick with echo on: returns what the leg heard (at its rate) and the
/// RTP packets it sent.
fn echo(leg: &mut Leg, t0: Instant, input: &[Vec<u8>]) -> (Vec<i16>, Vec<Vec<u8>>) {
    leg.apply(t0, LegCommand::Echo(true));
    let mut heard = Vec::new();
    let mut sent = Vec::new();
    for (n, p) in input.iter().enumerate() {
        let now = t0 + Duration::from_millis(20 * n as u64);
        if !p.is_empty() {
            leg.handle_packet(now, SystemTime::now(), PEER.parse().unwrap(), p);
        }
        leg.tick(now, SystemTime::now(), n as u64, &mut |_, _, bytes| {
            if RtpPacket::parse(bytes).is_ok() {
                sent.push(bytes.to_vec());
            }
        });
        heard.extend_from_slice(leg.input());
    }
    (heard, sent)
}

#[test]
fn g722_leg_hears_and_sends_at_its_rates() {
    let t0 = Instant::now();
    let mut l = leg(CodecKind::G722, 9, t0).unwrap();
    let input = rtp(&g722_payloads(&sine(1000.0, 8000.0, 16000, 1.0)), 9, 160);
    let (heard, sent) = echo(&mut l, t0, &input);

    assert_eq!(l.input().rate().hz(), 16000, "heard at G.722's own rate");
    let tail = &heard[heard.len() - 8000..];
    let share = tone_share(tail, 1000.0, 16000.0);
    let level = rms_dbfs(tail);
    // A sine of peak 8000 is −15.2 dBFS RMS.
    assert!(share > 0.95, "1 kHz share {share:.3}");
    assert!((level + 15.2).abs() < 1.0, "heard at {level:.1} dBFS");

    assert!(sent.len() >= 40, "{} packets sent", sent.len());
    let mut dec = G722::new();
    let mut out = Vec::new();
    let mut last_ts: Option<u32> = None;
    for bytes in &sent {
        let p = RtpPacket::parse(bytes).unwrap();
        assert_eq!(p.header.payload_type.get(), 9);
        // 20 ms of G.722: 160 bytes, 160 ticks of its 8000 Hz RTP clock.
        assert_eq!(p.payload.len(), 160);
        if let Some(t) = last_ts {
            assert_eq!(p.header.timestamp.get().wrapping_sub(t), 160);
        }
        last_ts = Some(p.header.timestamp.get());
        let mut frame = [0i16; 320];
        assert_eq!(dec.decode(p.payload, &mut frame).unwrap(), 320);
        out.extend_from_slice(&frame);
    }
    let tail = &out[out.len() - 8000..];
    let share = tone_share(tail, 1000.0, 16000.0);
    let level = rms_dbfs(tail);
    assert!(share > 0.95, "echoed 1 kHz share {share:.3}");
    assert!((level + 15.2).abs() < 1.5, "echoed at {level:.1} dBFS");
}

/// The echo of `sent` G.722 packets, decoded at 16 kHz.
fn g722_decoded(sent: &[Vec<u8>]) -> Vec<i16> {
    let mut dec = G722::new();
    let mut out = Vec::new();
    for bytes in sent {
        let p = RtpPacket::parse(bytes).unwrap();
        let mut frame = [0i16; 320];
        let n = dec.decode(p.payload, &mut frame).unwrap();
        out.extend_from_slice(&frame[..n]);
    }
    out
}

#[test]
fn g722_carries_a_6_khz_tone_there_and_back() {
    let t0 = Instant::now();
    let mut l = leg(CodecKind::G722, 9, t0).unwrap();
    let input = rtp(&g722_payloads(&sine(6000.0, 8000.0, 16000, 1.0)), 9, 160);
    let (heard, sent) = echo(&mut l, t0, &input);
    assert_tail_tone(&heard, 16000, 6000.0, 2.0, "heard by the leg");
    assert_tail_tone(&g722_decoded(&sent), 16000, 6000.0, 3.0, "echoed");
}

/// Asserts that the last half second of `pcm` (at `rate`) is a `hz` tone at −15.2 dBFS
/// (a sine of peak 8000) within `db`.
fn assert_tail_tone(pcm: &[i16], rate: u32, hz: f64, db: f64, what: &str) {
    let tail = &pcm[pcm.len() - rate as usize / 2..];
    let (share, level) = (tone_share(tail, hz, f64::from(rate)), rms_dbfs(tail));
    assert!(share > 0.9, "{what}: {hz} Hz share {share:.3}");
    assert!(
        (level + 15.2).abs() < db,
        "{what}: {hz} Hz at {level:.1} dBFS"
    );
}

#[test]
fn l16_narrowband_leg_reads_network_order() {
    let t0 = Instant::now();
    let mut l = leg(CodecKind::L16Narrow, 96, t0).unwrap();
    let frames = l16_payloads(&sine(440.0, 8000.0, 8000, 0.6), 160);
    let (heard, sent) = echo(&mut l, t0, &rtp(&frames, 96, 160));
    let tail = &heard[heard.len() - 2400..];
    assert!(tone_share(tail, 440.0, 8000.0) > 0.95);
    assert!((rms_dbfs(tail) + 15.2).abs() < 0.5);
    let p = RtpPacket::parse(sent.last().unwrap()).unwrap();
    assert_eq!(p.payload.len(), 320);
}

/// An L16/16000 leg (PT 97) sending packets of `ptime_ms`.
fn l16_wide_leg(ptime_ms: u64, now: Instant) -> Leg {
    let cfg = LegConfig {
        codec: CodecKind::L16Wide,
        payload_type: PayloadType::new(97).unwrap(),
        ptime: Duration::from_millis(ptime_ms),
        ..LegConfig::pcmu(PEER.parse().unwrap(), Ssrc::new(7))
    };
    Leg::new(cfg, now).unwrap()
}

/// L16 payloads (network order) of `samples` samples each.
fn l16_payloads(pcm: &[i16], samples: usize) -> Vec<Vec<u8>> {
    pcm.chunks_exact(samples)
        .map(|f| f.iter().flat_map(|s| s.to_be_bytes()).collect())
        .collect()
}

/// The RTP packets' payloads and timestamps.
fn payloads(sent: &[Vec<u8>], pt: u8) -> Vec<(u32, Vec<u8>)> {
    sent.iter()
        .map(|b| {
            let p = RtpPacket::parse(b).unwrap();
            assert_eq!(p.header.payload_type.get(), pt);
            (p.header.timestamp.get(), p.payload.to_vec())
        })
        .collect()
}

#[test]
fn l16_wideband_leg_counts_its_16_khz_clock() {
    let t0 = Instant::now();
    let mut l = l16_wide_leg(20, t0);
    let frames = l16_payloads(&sine(1000.0, 8000.0, 16000, 0.6), 320);
    // 20 ms of a 16 kHz clock: 320 ticks a packet.
    let (heard, sent) = echo(&mut l, t0, &rtp(&frames, 97, 320));
    let tail = &heard[heard.len() - 4800..];
    assert!(tone_share(tail, 1000.0, 16000.0) > 0.95);
    assert!((rms_dbfs(tail) + 15.2).abs() < 0.5, "{:.1}", rms_dbfs(tail));
    let out = payloads(&sent, 97);
    assert!(out.len() >= 20);
    for w in out.windows(2) {
        assert_eq!(w[1].0.wrapping_sub(w[0].0), 320);
        assert_eq!(w[1].1.len(), 640);
    }
    let echoed: Vec<i16> = out[out.len() - 10..]
        .iter()
        .flat_map(|(_, p)| p.chunks_exact(2).map(|b| i16::from_be_bytes([b[0], b[1]])))
        .collect();
    assert!(tone_share(&echoed, 1000.0, 16000.0) > 0.95);
    assert!((rms_dbfs(&echoed) + 15.2).abs() < 1.0);
}

#[test]
fn l16_wideband_leg_sends_the_peers_40_ms_packets() {
    // 40 ms at 16 kHz is 1280 bytes: the longest that fits a 1500-byte datagram.
    let t0 = Instant::now();
    let mut l = l16_wide_leg(40, t0);
    let frames = l16_payloads(&sine(440.0, 8000.0, 16000, 0.6), 640);
    let mut input = Vec::new();
    for p in rtp(&frames, 97, 640) {
        // One 40 ms packet, then a tick with nothing new.
        input.extend([p, Vec::new()]);
    }
    let (heard, sent) = echo(&mut l, t0, &input);
    assert!(tone_share(&heard[heard.len() - 4800..], 440.0, 16000.0) > 0.9);
    let out = payloads(&sent, 97);
    assert!(out.len() >= 5, "{} packets", out.len());
    for w in out.windows(2) {
        assert_eq!(w[1].0.wrapping_sub(w[0].0), 640);
        assert_eq!(w[1].1.len(), 1280);
    }
}

#[test]
fn l16_wideband_leg_sends_20_ms_where_60_would_not_fit_a_datagram() {
    let t0 = Instant::now();
    let mut l = l16_wide_leg(60, t0);
    let frames = l16_payloads(&sine(440.0, 8000.0, 16000, 0.4), 320);
    let (_, sent) = echo(&mut l, t0, &rtp(&frames, 97, 320));
    let out = payloads(&sent, 97);
    assert!(out.len() >= 15, "{} packets", out.len());
    assert!(out.iter().all(|(_, p)| p.len() == 640));
}

/// An Opus leg echoing a phone's `hz` tone (peak 8000) for a second: the leg, what it heard,
/// and the timestamps and decoded audio of what it sent.
#[cfg(feature = "opus")]
fn opus_echo(hz: f64) -> (Leg, Vec<i16>, Vec<u32>, Vec<i16>) {
    use switchboard::media::codec::opus::Opus;
    use switchboard::media::codec::OpusParams;

    let t0 = Instant::now();
    let mut l = leg(CodecKind::Opus, 111, t0).unwrap();
    let mut phone = Opus::new(&OpusParams::default());
    let frames: Vec<Vec<u8>> = sine(hz, 8000.0, 48000, 1.0)
        .chunks_exact(960)
        .map(|f| {
            let mut p = vec![0u8; 1500];
            let n = phone.encode(f, &mut p).unwrap();
            p.truncate(n);
            p
        })
        .collect();
    let (heard, sent) = echo(&mut l, t0, &rtp(&frames, 111, 960));
    let mut dec = Opus::new(&OpusParams::default());
    let mut stamps = Vec::new();
    let mut echoed = Vec::new();
    for (ts, p) in payloads(&sent, 111) {
        let mut frame = [0i16; 960];
        assert_eq!(dec.decode(&p, &mut frame).unwrap(), 960);
        echoed.extend_from_slice(&frame);
        stamps.push(ts);
    }
    (l, heard, stamps, echoed)
}

#[cfg(feature = "opus")]
#[test]
fn opus_leg_hears_and_sends_20_ms_packets_on_its_48_khz_clock() {
    let (l, heard, stamps, echoed) = opus_echo(1000.0);
    assert_eq!(l.input().rate().hz(), 48000, "heard at Opus's own rate");
    assert_tail_tone(&heard, 48000, 1000.0, 1.0, "heard by the leg");
    assert!(stamps.len() >= 40, "{} packets", stamps.len());
    for w in stamps.windows(2) {
        assert_eq!(w[1].wrapping_sub(w[0]), 960);
    }
    assert_tail_tone(&echoed, 48000, 1000.0, 1.5, "echoed");
}

/// Above narrowband's 4 kHz, inside what a wideband Opus stream carries at its bitrate.
#[cfg(feature = "opus")]
#[test]
fn opus_carries_a_6_khz_tone_there_and_back() {
    let (_, heard, _, echoed) = opus_echo(6000.0);
    assert_tail_tone(&heard, 48000, 6000.0, 2.0, "heard by the leg");
    assert_tail_tone(&echoed, 48000, 6000.0, 3.0, "echoed");
}

/// What a bridge does each tick: `from` hears its peer, and `to` sends what `from` heard.
/// A G.722 caller's 6 kHz tone reaches a G.722 leg, and stops at a PCMU leg (converted down
/// to its 8 kHz, not folded onto 2 kHz), where its 1 kHz companion still passes.
#[test]
fn a_6_khz_tone_crosses_a_bridge_to_g722_and_stops_at_g711() {
    let t0 = Instant::now();
    let pcm: Vec<i16> = sine(6000.0, 5000.0, 16000, 1.0)
        .iter()
        .zip(sine(1000.0, 5000.0, 16000, 1.0))
        .map(|(&a, b)| a + b)
        .collect();
    let input = rtp(&g722_payloads(&pcm), 9, 160);
    for (codec, pt) in [(CodecKind::Pcmu, 0u8), (CodecKind::G722, 9)] {
        let mut from = leg(CodecKind::G722, 9, t0).unwrap();
        let mut to = leg(codec, pt, t0).unwrap();
        let mut sent = Vec::new();
        for (n, p) in input.iter().enumerate() {
            let now = t0 + Duration::from_millis(20 * n as u64);
            from.handle_packet(now, SystemTime::now(), PEER.parse().unwrap(), p);
            from.receive(now);
            let heard = *from.input();
            to.receive(now);
            to.send(
                now,
                SystemTime::now(),
                n as u64,
                Some(&heard),
                &mut |_, _, bytes| {
                    if RtpPacket::parse(bytes).is_ok() {
                        sent.push(bytes.to_vec());
                    }
                },
            );
        }
        let (out, rate) = match codec {
            CodecKind::G722 => (g722_decoded(&sent), 16000.0),
            _ => {
                let mut dec = codec.new_codec();
                let mut out = Vec::new();
                for bytes in &sent {
                    let p = RtpPacket::parse(bytes).unwrap();
                    let mut frame = [0i16; 160];
                    let n = dec.decode(p.payload, &mut frame).unwrap();
                    out.extend_from_slice(&frame[..n]);
                }
                (out, 8000.0)
            }
        };
        let tail = &out[out.len() - rate as usize / 2..];
        let low = tone_share(tail, 1000.0, rate);
        if codec == CodecKind::G722 {
            let high = tone_share(tail, 6000.0, rate);
            assert!(
                high > 0.4 && low > 0.4,
                "G.722 to G.722: 6 kHz {high:.3}, 1 kHz {low:.3}"
            );
        } else {
            let alias = tone_share(tail, 2000.0, rate);
            assert!(low > 0.95, "G.722 to PCMU: 1 kHz share {low:.3}");
            assert!(alias < 0.01, "6 kHz folded onto 2 kHz: {alias:.3}");
        }
    }
}
