//! SRTP with SDES keys against the real server on 127.0.0.1: a caller that offers
//! `RTP/SAVP` with a key hears its echo through SRTP; forged packets (a bad tag) and replays
//! are dropped and counted and never heard; plain offers under `srtp = "required"` and
//! SRTP-only offers under `srtp = "off"` get 488.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::rtp::{peak_tone_power, tone, tone_power};
use support::server::{answered_port, call_offering, hang_up, metric, start_with, wire};
use support::uac::UacState;
use switchboard::media::codec::g711::{ulaw_decode, ulaw_encode};
use switchboard::rtp::srtp::{CryptoAttr, MasterKey, SrtpSession, Suite};
use switchboard::rtp::{PayloadType, RtpHeader, RtpPacket, RtpTimestamp, Ssrc, WireSeq};
use switchboard::sdp::SrtpPolicy;
use tokio::net::UdpSocket;

/// An `RTP/SAVP` offer of PCMU with telephone-event and one key of ours.
fn secure_offer(port: u16, key: &CryptoAttr) -> Vec<u8> {
    format!(
        "v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n\
         a=sendrecv\r\na=crypto:{key}\r\n"
    )
    .into_bytes()
}

/// The server's key from its answer.
fn answered_key(answer: &[u8]) -> CryptoAttr {
    let text = String::from_utf8_lossy(answer);
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .unwrap_or_else(|| panic!("no a=crypto in the answer\n{text}"));
    CryptoAttr::parse(value.trim()).unwrap()
}

/// One 20 ms PCMU packet of `pcm`, protected.
fn sealed(s: &mut SrtpSession, seq: u16, pcm: &[i16]) -> Vec<u8> {
    let payload: Vec<u8> = pcm.iter().map(|&x| ulaw_encode(x)).collect();
    let header = RtpHeader {
        marker: seq == 0,
        payload_type: PayloadType::PCMU,
        seq: WireSeq::new(seq),
        timestamp: RtpTimestamp::new(u32::from(seq) * 160),
        ssrc: Ssrc::new(0x5ec0),
    };
    let mut buf = vec![0u8; 1500];
    let n = RtpPacket::new(header, &payload).write(&mut buf).unwrap();
    let n = s.protect_rtp(&mut buf, n).unwrap();
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn srtp_echo_drops_forged_and_replayed_packets_unheard() {
    for suite in [
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::AeadAes128Gcm,
    ] {
        let server = start_with((49000, 49019), |_| {}).await;
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ours = CryptoAttr::new(1, MasterKey::random(suite).unwrap());
        let (mut w, mut uac) = wire(false, server.sip).await;
        let offer = secure_offer(sock.local_addr().unwrap().port(), &ours);
        call_offering(&mut w, &mut uac, "echo", &offer).await;
        let answer = uac.answer.clone().unwrap();
        assert!(
            String::from_utf8_lossy(&answer).contains("RTP/SAVP"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        let theirs = answered_key(&answer);
        assert_eq!((theirs.tag, theirs.key.suite()), (1, suite));
        let mut session = SrtpSession::new(&ours.key, &theirs).unwrap();
        // A second sender with the same keys makes the forgeries (one sender never seals a
        // sequence number twice).
        let mut forger = SrtpSession::new(&ours.key, &theirs).unwrap();
        let media = SocketAddr::new(server.sip.ip(), answered_port(&uac));

        // Each tick, a forged 2 kHz packet (its tag broken) goes ahead of the genuine 1 kHz
        // one with the same sequence number.
        const PACKETS: u16 = 75;
        let good = tone("1000/1500@-10", 1500);
        let bad = tone("2000/1500@-10", 1500);
        let mut sent = Vec::new();
        let mut heard = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut buf = vec![0u8; 2048];
        let end =
            tokio::time::Instant::now() + Duration::from_millis(20 * u64::from(PACKETS) + 400);
        let mut seq = 0u16;
        loop {
            tokio::select! {
                _ = tick.tick(), if seq < PACKETS => {
                    let at = usize::from(seq) * 160;
                    let mut forged = sealed(&mut forger, seq, &bad[at..at + 160]);
                    let last = forged.len() - 1;
                    forged[last] ^= 0x01;
                    sock.send_to(&forged, media).await.unwrap();
                    let genuine = sealed(&mut session, seq, &good[at..at + 160]);
                    sock.send_to(&genuine, media).await.unwrap();
                    sent.push(genuine);
                    seq += 1;
                }
                r = sock.recv_from(&mut buf) => {
                    let (n, _) = r.unwrap();
                    if let Ok(clear) = session.unprotect_rtp(&mut buf[..n]) {
                        if let Ok(p) = RtpPacket::parse(&buf[..clear]) {
                            if p.header.payload_type == PayloadType::PCMU {
                                heard.extend(p.payload.iter().map(|&b| ulaw_decode(b)));
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(end) => break,
            }
        }
        // Replays of packets already received.
        for p in sent.iter().take(10) {
            sock.send_to(p, media).await.unwrap();
        }
        let auth = "switchboard_srtp_dropped_total{reason=\"auth\",stream=\"rtp\"}";
        let replay = "switchboard_srtp_dropped_total{reason=\"replay\",stream=\"rtp\"}";
        let mut counted = (0.0, 0.0);
        for _ in 0..50 {
            counted = (
                metric(server.http, auth).await,
                metric(server.http, replay).await,
            );
            if counted == (f64::from(PACKETS), 10.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(counted, (f64::from(PACKETS), 10.0), "{suite:?}");

        assert!(
            heard.len() >= 8000,
            "{suite:?}: heard {} samples",
            heard.len()
        );
        let one = peak_tone_power(&heard, 1000.0);
        assert!(one > 0.9, "{suite:?}: 1 kHz share {one}");
        assert!(
            tone_power(&heard, 2000.0) < 0.01,
            "{suite:?}: the forged tone was played"
        );
        hang_up(&mut w, &mut uac).await;
        server.stop().await;
    }
}

/// The status the server answers `offer` to `echo` with.
async fn status_of(sip: SocketAddr, offer: &[u8]) -> u16 {
    let (mut w, mut uac) = wire(false, sip).await;
    uac.invite(std::time::Instant::now(), "echo", offer);
    let refused = |u: &support::uac::Uac| {
        u.statuses
            .iter()
            .find(|(m, c)| m == "INVITE" && *c >= 300)
            .map(|(_, c)| *c)
    };
    assert!(
        w.drive(&mut uac, Duration::from_secs(5), |u| {
            u.state == UacState::Confirmed || refused(u).is_some()
        })
        .await,
        "no final answer"
    );
    if uac.state == UacState::Confirmed {
        hang_up(&mut w, &mut uac).await;
        return 200;
    }
    refused(&uac).unwrap_or(0)
}

#[tokio::test]
async fn policies_refuse_what_they_do_not_take_with_488() {
    let key = CryptoAttr::new(1, MasterKey::random(Suite::AesCm128HmacSha1_80).unwrap());
    let plain = support::uac::offer("127.0.0.1", 40000, "sendrecv");
    let secure = secure_offer(40000, &key);

    let required = start_with((49020, 49039), |c| c.rtp.srtp = SrtpPolicy::Required).await;
    assert_eq!(status_of(required.sip, &plain).await, 488);
    assert_eq!(status_of(required.sip, &secure).await, 200);
    required.stop().await;

    let off = start_with((49040, 49059), |c| c.rtp.srtp = SrtpPolicy::Off).await;
    assert_eq!(status_of(off.sip, &secure).await, 488);
    assert_eq!(status_of(off.sip, &plain).await, 200);
    off.stop().await;
}
