//! A re-INVITE that changes the codec, end to end over loopback: a caller talks to the echo
//! service in one codec, re-INVITEs offering only another, and from the ACK on hears its tone
//! echoed in the new codec, and nothing more in the old one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::server::*;
use support::uac::Uac;
use switchboard::media::codec::{CodecKind, CodecParams};
use switchboard::media::level::{rms_dbfs, tone_share};
use switchboard::rtp::packet::{RtpHeader, RtpPacket};
use switchboard::rtp::types::{PayloadType, RtpTimestamp, Ssrc, WireSeq};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// After the ACK, the server's leg may still send one tick of the old codec: it takes the
/// new codec at its next 20 ms tick after the answer leaves. Allow that and scheduling.
const IN_FLIGHT: Duration = Duration::from_millis(30);
/// Packets of the new codec to collect after the switch: a second of echo.
const AFTER: usize = 50;

/// An offer of `codec` alone, with telephone-event, on `port`.
fn offer_only(codec: CodecKind, port: u16) -> Vec<u8> {
    let pt = codec.static_payload_type().unwrap().get();
    format!(
        "v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {port} RTP/AVP {pt} 101\r\na=rtpmap:{pt} {}/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
        codec.name()
    )
    .into_bytes()
}

/// The payload type the latest answer's `m=audio` line puts first.
fn answered_pt(uac: &Uac) -> u8 {
    let sdp = String::from_utf8(uac.latest_answer.clone().expect("an answer")).unwrap();
    let m = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    m.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Sends a 1 kHz tone at −10 dBFS to `to` every 20 ms in the codec `codec` says, until the
/// channel closes or 30 s have passed.
async fn talk(socket: Arc<UdpSocket>, to: SocketAddr, mut codec: watch::Receiver<CodecKind>) {
    let spec = "1000/30000@-10".parse().unwrap();
    let tone_at = |kind: CodecKind| {
        switchboard::media::tone::ToneGenerator::new(&spec, kind.sample_rate()).unwrap()
    };
    let mut kind = *codec.borrow_and_update();
    let mut tone = tone_at(kind);
    let mut enc = kind.new_codec_with(&CodecParams::default());
    let mut marker = true;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut seq, mut ts) = (fastrand::u16(..), fastrand::u32(..));
    for _ in 0..1500 {
        tick.tick().await;
        if codec.has_changed().unwrap_or(false) {
            kind = *codec.borrow_and_update();
            enc = kind.new_codec_with(&CodecParams::default());
            tone = tone_at(kind);
            marker = true;
        }
        // 20 ms at the codec's own rate.
        let mut pcm = [0i16; 320];
        let pcm = &mut pcm[..kind.sample_rate().hz() as usize / 50];
        switchboard::media::frame::AudioSource::fill(&mut tone, pcm);
        let mut payload = [0u8; 320];
        let n = enc.encode(pcm, &mut payload).unwrap();
        let header = RtpHeader {
            marker,
            payload_type: kind.static_payload_type().unwrap(),
            seq: WireSeq::new(seq),
            timestamp: RtpTimestamp::new(ts),
            ssrc: Ssrc::new(0x5eed),
        };
        let mut out = [0u8; 200];
        let len = RtpPacket::new(header, &payload[..n])
            .write(&mut out)
            .unwrap();
        if socket.send_to(&out[..len], to).await.is_err() {
            return;
        }
        (seq, ts, marker) = (seq.wrapping_add(1), ts.wrapping_add(160), false);
    }
}

/// Passes on every RTP packet `socket` receives with the time it was read.
async fn listen(socket: Arc<UdpSocket>, tx: mpsc::UnboundedSender<(Instant, Vec<u8>)>) {
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = socket.recv_from(&mut buf).await {
        if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
            return;
        }
    }
}

/// One audio packet the caller received: when, its payload type and payload.
struct Heard {
    at: Instant,
    pt: u8,
    payload: Vec<u8>,
}

/// Moves what arrived into `heard` (audio only: telephone-events are left out).
fn collect(rx: &mut mpsc::UnboundedReceiver<(Instant, Vec<u8>)>, heard: &mut Vec<Heard>) {
    while let Ok((at, bytes)) = rx.try_recv() {
        if let Ok(p) = RtpPacket::parse(&bytes) {
            if p.header.payload_type != PayloadType::DEFAULT_TELEPHONE_EVENT {
                heard.push(Heard {
                    at,
                    pt: p.header.payload_type.get(),
                    payload: p.payload.to_vec(),
                });
            }
        }
    }
}

/// The 1 kHz share and level of the last 25 packets (half a second) of `codec` in `heard`.
fn echoed_tone(heard: &[Heard], codec: CodecKind) -> (f64, f64) {
    let pt = codec.static_payload_type().unwrap().get();
    let packets: Vec<&Heard> = heard.iter().filter(|h| h.pt == pt).collect();
    assert!(
        packets.len() >= 25,
        "{} packets of {codec:?}",
        packets.len()
    );
    let mut dec = codec.new_codec_with(&CodecParams::default());
    let mut pcm = Vec::new();
    for h in &packets {
        let mut frame = [0i16; 960];
        let n = dec.decode(&h.payload, &mut frame).unwrap();
        pcm.extend_from_slice(&frame[..n]);
    }
    let rate = codec.sample_rate().hz();
    let tail = &pcm[pcm.len() - 25 * rate as usize / 50..];
    (tone_share(tail, 1000.0, f64::from(rate)), rms_dbfs(tail))
}

/// Calls the echo service in `from`, re-INVITEs offering only `to`, and checks the echo
/// follows the codec from the ACK on.
async fn echo_follows_the_codec(from: CodecKind, to: CodecKind) {
    let server = start_with(common::rtp_ports(10), |cfg| {
        cfg.media.codecs = ["PCMU", "PCMA", "G722"].map(String::from).to_vec();
    })
    .await;
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let port = socket.local_addr().unwrap().port();
    let (mut w, mut uac) = wire(false, server.sip).await;
    call_offering(&mut w, &mut uac, "echo", &offer_only(from, port)).await;
    let from_pt = from.static_payload_type().unwrap().get();
    let to_pt = to.static_payload_type().unwrap().get();
    assert_eq!(answered_pt(&uac), from_pt);
    let media = SocketAddr::new(server.sip.ip(), answered_port(&uac));

    let (codec_tx, codec_rx) = watch::channel(from);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let talker = tokio::spawn(talk(socket.clone(), media, codec_rx));
    let listener = tokio::spawn(listen(socket.clone(), tx));
    let mut heard = Vec::new();

    // A second of echo in the first codec.
    for _ in 0..250 {
        w.drive(&mut uac, Duration::from_millis(20), |_| false)
            .await;
        collect(&mut rx, &mut heard);
        if heard.iter().filter(|h| h.pt == from_pt).count() >= AFTER {
            break;
        }
    }
    let (share, level) = echoed_tone(&heard, from);
    assert!(share > 0.9, "{from:?} echo: 1 kHz share {share:.3}");
    assert!(level > -25.0, "{from:?} echo at {level:.1} dBFS");

    uac.reinvite(Instant::now(), &offer_only(to, port));
    let answered = w
        .drive(&mut uac, Duration::from_secs(5), |u| {
            u.statuses
                .iter()
                .filter(|s| *s == &("INVITE".into(), 200))
                .count()
                >= 2
        })
        .await;
    // The ACK has left: like a phone, the caller now speaks the answer's codec.
    let acked = Instant::now();
    assert!(answered, "no 200 for the re-INVITE");
    assert_eq!(answered_pt(&uac), to_pt, "the answer's codec");
    codec_tx.send(to).unwrap();

    let mut after = 0;
    for _ in 0..250 {
        w.drive(&mut uac, Duration::from_millis(20), |_| false)
            .await;
        collect(&mut rx, &mut heard);
        after = heard
            .iter()
            .filter(|h| h.at > acked && h.pt == to_pt)
            .count();
        if after >= AFTER {
            break;
        }
    }
    assert!(
        after >= AFTER,
        "only {after} packets of {to:?} after the ACK"
    );
    let late: Vec<Duration> = heard
        .iter()
        .filter(|h| h.pt == from_pt && h.at > acked)
        .map(|h| h.at - acked)
        .collect();
    assert!(
        late.iter().all(|d| *d <= IN_FLIGHT),
        "{from:?} still arriving after the ACK: {late:?}"
    );
    let first_new = heard.iter().position(|h| h.pt == to_pt).unwrap();
    assert!(
        heard[first_new..].iter().all(|h| h.pt == to_pt),
        "{from:?} after {to:?} began"
    );
    let (share, level) = echoed_tone(&heard, to);
    assert!(share > 0.9, "{to:?} echo: 1 kHz share {share:.3}");
    assert!(level > -25.0, "{to:?} echo at {level:.1} dBFS");

    talker.abort();
    listener.abort();
    hang_up(&mut w, &mut uac).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinvite_from_pcmu_to_g722_moves_the_echo_to_g722() {
    echo_follows_the_codec(CodecKind::Pcmu, CodecKind::G722).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinvite_from_g722_to_pcmu_moves_the_echo_to_pcmu() {
    echo_follows_the_codec(CodecKind::G722, CodecKind::Pcmu).await;
}
