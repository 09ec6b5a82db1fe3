//! A conference room whose members' phones send RFC 6464 audio levels, over 127.0.0.1. Each
//! caller offers one wideband codec with `a=extmap` for the level and sends every 20 ms
//! packet with its level in a one-byte header extension: one member talks throughout, two
//! listen (faint line noise, a packet every 20 ms), and one listens first and then starts
//! talking loudly. The talkers must be heard by everyone (decoded and measured), the
//! listeners' quiet packets must go undecoded (the worker's skipped-decode counter), and the
//! member who starts talking must be heard at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

#[cfg(feature = "opus")]
use support::offers::OPUS;
use support::offers::{Offer, G722};
use support::server::*;
use switchboard::media::codec::AudioCodec;
use switchboard::media::level::{rms_dbfs, tone_share};
use switchboard::media::tone::ToneGenerator;
use switchboard::rtp::hdrext::{audio_level, ONE_BYTE_PROFILE};
use switchboard::rtp::packet::{HeaderExtension, RtpHeader, RtpPacket};
use switchboard::rtp::types::{PayloadType, RtpTimestamp, Ssrc, WireSeq};
use tokio::net::UdpSocket;

/// How long the test talks.
const TALK_MS: u64 = 3000;
/// When the late talker starts.
const LATE_MS: u64 = 1500;
/// The level's header extension id the callers offer.
const LEVEL_ID: u8 = 5;
/// The counter of packets left undecoded, summed over the workers.
const SKIPPED: &str = "switchboard_media_worker_decodes_skipped_total";

/// What a member sends: its tone from `from_ms` on (silence but faint line noise before),
/// or line noise throughout.
#[derive(Clone, Copy)]
struct Part {
    tone: Option<(u32, u64)>,
}

const TALKER: Part = Part {
    tone: Some((700, 0)),
};
const LISTENER: Part = Part { tone: None };
const LATE_TALKER: Part = Part {
    tone: Some((1900, LATE_MS)),
};

/// One member: its call, its media socket and where the server wants its RTP.
struct Member {
    part: Part,
    wire: Wire,
    uac: support::uac::Uac,
    socket: UdpSocket,
    media: SocketAddr,
}

/// A packet of room audio a member decoded, with when it arrived since the talk began.
struct Received {
    at: Duration,
    pcm: Vec<i16>,
}

/// An SDP offer of `o` alone with the audio level extension.
fn sdp(o: &Offer, port: u16) -> Vec<u8> {
    format!(
        "v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {map}\r\na=ptime:20\r\na=sendrecv\r\n\
a=extmap:{LEVEL_ID} urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=off\r\n",
        pt = o.pt,
        map = o.rtpmap
    )
    .into_bytes()
}

/// A frame's RFC 6464 level: minus its RMS in dBov.
fn level_of(pcm: &[i16]) -> u8 {
    (-rms_dbfs(pcm)).round().clamp(0.0, 127.0) as u8
}

/// Sends the member's part for [`TALK_MS`] as 20 ms packets paced in real time, each with
/// its level, and decodes every packet the room sends meanwhile (and 300 ms after).
async fn talk(o: &Offer, m: &Member, start: tokio::time::Instant) -> Vec<Received> {
    let kind = o.kind;
    let rate = kind.sample_rate();
    let frame = kind.frame_samples(20).unwrap();
    let mut tone = m.part.tone.map(|(f, from)| {
        let spec = format!("{f}/{}@-16", TALK_MS - from).parse().unwrap();
        (ToneGenerator::new(&spec, rate).unwrap(), from)
    });
    let mut enc: Box<dyn AudioCodec> = kind.new_codec();
    let mut dec: Box<dyn AudioCodec> = kind.new_codec();
    let mut rng = fastrand::Rng::new();
    let mut pcm = vec![0i16; frame];
    let mut payload = vec![0u8; enc.max_encoded_len(frame).max(1500)];
    let (mut out, mut buf) = (vec![0u8; 2048], vec![0u8; 2048]);
    let mut decoded = vec![0i16; 48000 * 120 / 1000];
    let mut heard = Vec::new();
    let step = (frame as u64 * u64::from(kind.rtp_clock().hz()) / u64::from(rate.hz())) as u32;
    let (mut seq, mut ts) = (fastrand::u16(..), fastrand::u32(..));
    let ssrc = Ssrc::new(fastrand::u32(..));
    let mut sent = 0u64;
    let mut tick = tokio::time::interval_at(start, Duration::from_millis(20));
    let until = start + Duration::from_millis(TALK_MS + 300);
    loop {
        tokio::select! {
            _ = tick.tick(), if sent < TALK_MS / 20 => {
                match tone.as_mut() {
                    Some((t, from)) if sent * 20 >= *from => {
                        t.fill(&mut pcm);
                    }
                    // Line noise at about −64 dBov.
                    _ => pcm.iter_mut().for_each(|s| *s = rng.i16(-35..=35)),
                }
                let n = enc.encode(&pcm, &mut payload).unwrap();
                let block = [LEVEL_ID << 4, level_of(&pcm), 0, 0];
                let mut packet = RtpPacket::new(
                    RtpHeader {
                        marker: sent == 0,
                        payload_type: PayloadType::new(o.pt).unwrap(),
                        seq: WireSeq::new(seq),
                        timestamp: RtpTimestamp::new(ts),
                        ssrc,
                    },
                    &payload[..n],
                );
                packet.extension = Some(HeaderExtension { profile: ONE_BYTE_PROFILE, data: &block });
                let len = packet.write(&mut out).unwrap();
                m.socket.send_to(&out[..len], m.media).await.unwrap();
                (seq, ts) = (seq.wrapping_add(1), ts.wrapping_add(step));
                sent += 1;
            }
            r = m.socket.recv_from(&mut buf) => {
                let (n, _) = r.unwrap();
                if let Ok(p) = RtpPacket::parse(&buf[..n]) {
                    // We offered to receive no level: the server sends none.
                    assert_eq!(audio_level(p.extension, LEVEL_ID), None);
                    if p.header.payload_type.get() == o.pt {
                        let got = dec.decode(p.payload, &mut decoded).unwrap();
                        heard.push(Received {
                            at: start.elapsed(),
                            pcm: decoded[..got].to_vec(),
                        });
                    }
                }
            }
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    heard
}

/// What arrived between `from_ms` and `to_ms` after the talk began, joined.
fn between(heard: &[Received], from_ms: u64, to_ms: u64) -> Vec<i16> {
    let (from, to) = (Duration::from_millis(from_ms), Duration::from_millis(to_ms));
    heard
        .iter()
        .filter(|r| r.at >= from && r.at < to)
        .flat_map(|r| r.pcm.iter().copied())
        .collect()
}

/// The median over 100 ms blocks of `f`'s share of `pcm`.
fn share(pcm: &[i16], rate: u32, f: u32) -> f64 {
    let mut shares: Vec<f64> = pcm
        .chunks_exact(rate as usize / 10)
        .map(|b| tone_share(b, f64::from(f), f64::from(rate)))
        .collect();
    if shares.is_empty() {
        return 0.0;
    }
    shares.sort_by(f64::total_cmp);
    shares[shares.len() / 2]
}

/// The sum of a counter over every worker's sample of it.
async fn total(http: SocketAddr, name: &str) -> f64 {
    let (status, body) = http_get(http, "/metrics").await;
    assert_eq!(status, 200);
    String::from_utf8(body)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn room_with_levels(room: &str, codec: &str, o: &'static Offer) {
    let parts = [TALKER, LISTENER, LISTENER, LATE_TALKER];
    let codecs = vec![codec.to_string()];
    let server = start_with(common::rtp_ports(2 * parts.len() as u16 + 2), move |c| {
        c.media.codecs = codecs;
        only_members_heard(c);
    })
    .await;
    let mut members = Vec::new();
    for part in parts {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let (mut wire, mut uac) = wire(false, server.sip).await;
        call_offering(&mut wire, &mut uac, &format!("conf-{room}"), &sdp(o, port)).await;
        let answer = String::from_utf8(uac.answer.clone().unwrap()).unwrap();
        assert!(
            answer.contains(&format!(
                "a=extmap:{LEVEL_ID}/recvonly urn:ietf:params:rtp-hdrext:ssrc-audio-level"
            )),
            "the answer does not take the level:\n{answer}"
        );
        let media = SocketAddr::new(server.sip.ip(), answered_port(&uac));
        members.push(Member {
            part,
            wire,
            uac,
            socket,
            media,
        });
    }
    room_members_joined(server.http, room, parts.len()).await;

    let skipped_before = total(server.http, SKIPPED).await;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let heard = futures_util::future::join_all(members.iter().map(|m| talk(o, m, start))).await;
    let skipped = total(server.http, SKIPPED).await - skipped_before;

    let rate = o.kind.sample_rate().hz();
    let talker_alone = 600..LATE_MS - 100;
    let both = LATE_MS + 300..TALK_MS;
    for (k, h) in heard.iter().enumerate() {
        let alone = between(h, talker_alone.start, talker_alone.end);
        let late = between(h, both.start, both.end);
        let (s700, s1900) = (share(&alone, rate, 700), share(&late, rate, 1900));
        eprintln!(
            "member {k}: {:.1} dBFS then {:.1} dBFS; 700 Hz {s700:.2}, then 1900 Hz {s1900:.2}",
            rms_dbfs(&alone),
            rms_dbfs(&late)
        );
        assert!(alone.len() > rate as usize / 2 && late.len() > rate as usize / 2);
        if k == 0 {
            // The talker hears the quiet members' silence, then the late talker.
            assert!(
                rms_dbfs(&alone) < -50.0,
                "the talker hears the quiet members"
            );
            assert!(s1900 > 0.8, "the talker does not hear the late talker");
        } else {
            assert!(s700 > 0.8, "member {k} does not hear the talker");
            assert!(rms_dbfs(&alone) > -25.0);
        }
        if k == 1 || k == 2 {
            let s = share(&late, rate, 700);
            assert!(
                s > 0.25 && s1900 > 0.25,
                "member {k} does not hear both talkers"
            );
        }
    }
    // The late talker is heard at once: within the attack, the jitter buffer and a packet
    // or two of scheduling, its tone is in what the listeners get.
    for h in &heard[1..3] {
        let first = h
            .iter()
            .find(|r| {
                r.at > Duration::from_millis(LATE_MS)
                    && tone_share(&r.pcm, 1900.0, f64::from(rate)) > 0.3
                    && rms_dbfs(&r.pcm) > -30.0
            })
            .expect("the late talker is heard");
        let lag = first.at - Duration::from_millis(LATE_MS);
        eprintln!("the late talker is heard {lag:?} after starting");
        assert!(lag < Duration::from_millis(250), "heard only after {lag:?}");
    }
    // Both listeners' packets and the late talker's before it talked, less those the
    // jitter buffers took to start: none of the talkers' loud ones.
    let quiet = (2 * TALK_MS + LATE_MS) / 20;
    eprintln!("{skipped} decodes skipped of {quiet} quiet packets");
    assert!(
        skipped > (quiet - 30) as f64 && skipped <= quiet as f64,
        "{skipped} decodes skipped, {quiet} quiet packets sent"
    );

    for m in &mut members {
        hang_up(&mut m.wire, &mut m.uac).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g722_listeners_sending_levels_are_not_decoded_and_talkers_are_heard() {
    room_with_levels("levels-g722", "G722", &G722).await;
}

#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_listeners_sending_levels_are_not_decoded_and_talkers_are_heard() {
    room_with_levels("levels-opus", "opus", &OPUS).await;
}
