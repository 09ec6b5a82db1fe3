//! A conference room whose members speak different codecs, over 127.0.0.1: each caller
//! offers one codec alone (PCMU, G.722, L16/16000, Opus), sends its own tone at its codec's
//! own sample rate and decodes what comes back the same way. Each must hear every other
//! member and not itself, and the room's recording must hold everyone. Nothing here depends
//! on the rate the room mixes at: tones stay below 3 kHz and every measurement is made at
//! the rate of the audio measured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "opus")]
use support::offers::OPUS;
use support::offers::{Offer, G722, L16_WIDE, PCMU};
use support::server::*;
use switchboard::media::codec::AudioCodec;
use switchboard::media::level::{rms_dbfs, tone_share};
use switchboard::media::tone::ToneGenerator;
use switchboard::rtp::packet::{RtpHeader, RtpPacket};
use switchboard::rtp::types::{PayloadType, RtpTimestamp, Ssrc, WireSeq};
use tokio::net::UdpSocket;

/// How long every member talks at once.
const TALK_MS: u64 = 3000;
/// The stretch of what a member heard that is measured: its last 1.6 s, so that the jitter
/// buffer's start and the moments after the others stop are left out.
const MEASURED_MS: u64 = 1600;

/// An SDP offer of `o` alone on `port`.
fn sdp(o: &Offer, port: u16) -> Vec<u8> {
    format!(
        "v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {map}\r\na=ptime:20\r\na=sendrecv\r\n",
        pt = o.pt,
        map = o.rtpmap
    )
    .into_bytes()
}

/// The payload type the answer's `m=audio` line puts first.
fn answered_pt(answer: &[u8]) -> u8 {
    let sdp = String::from_utf8_lossy(answer);
    let m = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    m.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// One member: its call, its media socket and where the server wants its RTP.
struct Member {
    offer: &'static Offer,
    /// The tone it talks with; None for a member that only listens (and sends silence).
    freq: Option<u32>,
    wire: Wire,
    uac: support::uac::Uac,
    socket: UdpSocket,
    media: SocketAddr,
}

/// What a member decoded, at its codec's sample rate.
struct Heard {
    pcm: Vec<i16>,
    rate: u32,
}

/// Sends the member's tone at −16 dBFS (or silence) for `ms` in its codec as 20 ms packets
/// paced in real time, and decodes every packet of its payload type that arrives meanwhile
/// (and 300 ms after), in arrival order.
async fn talk(m: &Member, ms: u64) -> Heard {
    let kind = m.offer.kind;
    let rate = kind.sample_rate();
    let frame = kind.frame_samples(20).unwrap();
    let mut tone = m.freq.map(|f| {
        let spec = format!("{f}/{ms}@-16").parse().unwrap();
        ToneGenerator::new(&spec, rate).unwrap()
    });
    let mut enc: Box<dyn AudioCodec> = kind.new_codec();
    let mut dec: Box<dyn AudioCodec> = kind.new_codec();
    let mut pcm = vec![0i16; frame];
    let mut payload = vec![0u8; enc.max_encoded_len(frame).max(1500)];
    let mut out = vec![0u8; 2048];
    let mut buf = vec![0u8; 2048];
    let mut decoded = vec![0i16; 48000 * 120 / 1000];
    let mut heard = Vec::new();
    let step = (frame as u64 * u64::from(kind.rtp_clock().hz()) / u64::from(rate.hz())) as u32;
    let (mut seq, mut ts) = (fastrand::u16(..), fastrand::u32(..));
    let ssrc = Ssrc::new(fastrand::u32(..));
    let packets = ms / 20;
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let until = tokio::time::Instant::now() + Duration::from_millis(ms + 300);
    loop {
        tokio::select! {
            _ = tick.tick(), if sent < packets => {
                if let Some(tone) = tone.as_mut() {
                    switchboard::media::frame::AudioSource::fill(tone, &mut pcm);
                }
                let n = enc.encode(&pcm, &mut payload).unwrap();
                let header = RtpHeader {
                    marker: sent == 0,
                    payload_type: PayloadType::new(m.offer.pt).unwrap(),
                    seq: WireSeq::new(seq),
                    timestamp: RtpTimestamp::new(ts),
                    ssrc,
                };
                let len = RtpPacket::new(header, &payload[..n]).write(&mut out).unwrap();
                m.socket.send_to(&out[..len], m.media).await.unwrap();
                (seq, ts) = (seq.wrapping_add(1), ts.wrapping_add(step));
                sent += 1;
            }
            r = m.socket.recv_from(&mut buf) => {
                let (n, _) = r.unwrap();
                if let Ok(p) = RtpPacket::parse(&buf[..n]) {
                    if p.header.payload_type.get() == m.offer.pt {
                        let got = dec.decode(p.payload, &mut decoded).unwrap();
                        heard.extend_from_slice(&decoded[..got]);
                    }
                }
            }
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    Heard {
        pcm: heard,
        rate: rate.hz(),
    }
}

/// The median over 200 ms blocks of `f`'s share of `pcm`, so that one late or concealed
/// packet does not decide.
fn share(pcm: &[i16], rate: u32, f: u32) -> f64 {
    let block = rate as usize / 5;
    let mut shares: Vec<f64> = pcm
        .chunks_exact(block)
        .map(|b| tone_share(b, f64::from(f), f64::from(rate)))
        .collect();
    if shares.is_empty() {
        return 0.0;
    }
    shares.sort_by(f64::total_cmp);
    shares[shares.len() / 2]
}

/// A folder removed when the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Puts one caller per `(offer, tone)` into room `room` of a server allowing `codecs`, has
/// them all talk at once (those without a tone listen, sending silence), and checks what
/// each heard and what the room recorded.
async fn mixed_room(room: &str, codecs: &[&str], members: &[(&'static Offer, Option<u32>)]) {
    let dir = TempDir(std::env::temp_dir().join(format!("sb-wide-{}", fastrand::u64(..))));
    std::fs::create_dir_all(&dir.0).unwrap();
    let rec = dir.0.clone();
    let codecs: Vec<String> = codecs.iter().map(|c| c.to_string()).collect();
    let server = start_with(common::rtp_ports(2 * members.len() as u16 + 2), move |c| {
        c.media.codecs = codecs;
        c.paths.recordings = rec;
        c.conference.auto_record = true;
        only_members_heard(c);
    })
    .await;

    let mut callers = Vec::new();
    for &(offer, freq) in members {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let (mut wire, mut uac) = wire(false, server.sip).await;
        call_offering(
            &mut wire,
            &mut uac,
            &format!("conf-{room}"),
            &sdp(offer, port),
        )
        .await;
        assert_eq!(
            answered_pt(uac.answer.as_ref().unwrap()),
            offer.pt,
            "{:?} caller: the answer's codec",
            offer.kind
        );
        let media = SocketAddr::new(server.sip.ip(), answered_port(&uac));
        callers.push(Member {
            offer,
            freq,
            wire,
            uac,
            socket,
            media,
        });
    }
    room_members_joined(server.http, room, members.len()).await;

    let heard = futures_util::future::join_all(callers.iter().map(|m| talk(m, TALK_MS))).await;
    let tones: Vec<u32> = members.iter().filter_map(|&(_, f)| f).collect();
    for (m, h) in callers.iter().zip(&heard) {
        let what = match m.freq {
            Some(f) => format!("{:?} member ({f} Hz)", m.offer.kind),
            None => format!("{:?} listener", m.offer.kind),
        };
        let measured = MEASURED_MS as usize * h.rate as usize / 1000;
        assert!(
            h.pcm.len() > measured + h.rate as usize / 5,
            "{what} received {} samples",
            h.pcm.len()
        );
        // Past the other members' last packets: the 300 ms after talking ends.
        let end = h.pcm.len().saturating_sub(h.rate as usize * 3 / 10);
        let tail = &h.pcm[end.saturating_sub(measured)..end];
        let shares: Vec<(u32, f64)> = tones.iter().map(|&f| (f, share(tail, h.rate, f))).collect();
        let others = tones.len() - usize::from(m.freq.is_some());
        eprintln!("{what}: {:.1} dBFS, {shares:?}", rms_dbfs(tail));
        for &(f, s) in &shares {
            if Some(f) == m.freq {
                assert!(s < 0.05, "{what} hears itself: {shares:?}");
            } else {
                let floor = 0.5 / others as f64;
                assert!(s > floor, "{what} does not hear {f} Hz: {shares:?}");
            }
        }
        assert!(rms_dbfs(tail) > -30.0, "{what} hears too little");
    }

    for m in &mut callers {
        hang_up(&mut m.wire, &mut m.uac).await;
    }
    let sidecars = support::complete_sidecars(&dir.0, 1).await;
    let mixed = sidecars
        .iter()
        .find(|v| v["room"] == room && v.get("track_of").is_none_or(|t| t.is_null()))
        .unwrap_or_else(|| panic!("no mixed recording of {room}: {sidecars:?}"));
    let mut wav = hound::WavReader::open(dir.0.join(mixed["file"].as_str().unwrap())).unwrap();
    let rate = wav.spec().sample_rate;
    // The room's rate once its first member was in: no narrower than that member's codec,
    // no wider than the widest member's.
    let first = members[0].0.kind.sample_rate().hz();
    let widest = members
        .iter()
        .map(|m| m.0.kind.sample_rate().hz())
        .max()
        .unwrap();
    assert!(
        (first..=widest).contains(&rate),
        "the room recorded at {rate} Hz, its members at {first}..={widest}"
    );
    let pcm: Vec<i16> = wav.samples::<i16>().map(|s| s.unwrap()).collect();
    // The second in which the recording's talk is loudest: everyone at once.
    let loudest = pcm
        .chunks(rate as usize)
        .max_by(|a, b| rms_dbfs(a).total_cmp(&rms_dbfs(b)))
        .unwrap();
    for (offer, f) in members.iter().filter_map(|&(o, f)| Some((o, f?))) {
        let s = share(loudest, rate, f);
        assert!(
            s > 0.5 / tones.len() as f64,
            "the recording lacks the {:?} member's {f} Hz: {s:.3}",
            offer.kind
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_g722_and_l16_members_hear_each_other_not_themselves_and_are_recorded() {
    mixed_room(
        "narrow-wide",
        &["PCMU", "G722", "L16"],
        &[
            (&PCMU, Some(500)),
            (&G722, Some(900)),
            (&L16_WIDE, Some(1400)),
        ],
    )
    .await;
}

/// Wideband members only: the room mixes and records at 16 kHz at least.
#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_of_g722_and_opus_members_is_recorded_wideband() {
    mixed_room(
        "hd",
        &["G722", "opus"],
        &[(&G722, Some(700)), (&OPUS, Some(1900)), (&G722, Some(3100))],
    )
    .await;
}

#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_g722_and_opus_members_hear_each_other_not_themselves_and_are_recorded() {
    mixed_room(
        "three-codecs",
        &["PCMU", "G722", "opus"],
        &[(&PCMU, Some(500)), (&G722, Some(900)), (&OPUS, Some(1400))],
    )
    .await;
}

/// Three talkers (PCMU, G.722, L16/16000) and a member of `listener`'s codec that only
/// listens: it is sent the room's shared frame, and must hear every talker.
async fn listener_hears_every_talker(room: &str, codecs: &[&str], listener: &'static Offer) {
    mixed_room(
        room,
        codecs,
        &[
            (&PCMU, Some(500)),
            (&G722, Some(900)),
            (&L16_WIDE, Some(1400)),
            (listener, None),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pcmu_listener_hears_every_talker() {
    listener_hears_every_talker("pcmu-ear", &["PCMU", "G722", "L16"], &PCMU).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_g722_listener_hears_every_talker() {
    listener_hears_every_talker("g722-ear", &["PCMU", "G722", "L16"], &G722).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l16_wideband_listener_hears_every_talker() {
    listener_hears_every_talker("l16-ear", &["PCMU", "G722", "L16"], &L16_WIDE).await;
}

#[cfg(feature = "opus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opus_listener_hears_every_talker() {
    listener_hears_every_talker("opus-ear", &["PCMU", "G722", "L16", "opus"], &OPUS).await;
}
