//! Strict RTP sources against the real server on 127.0.0.1: a stranger spraying the RTP port
//! range is neither heard nor answered, and a caller behind (simulated) NAT is still learned.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use support::rtp::{peak_tone_power, tone, RtpPeer};
use support::server::{
    answered_port, call_offering, hang_up, http_get, start_with, wire, Server, Wire,
};
use support::uac::{offer, Uac};
use switchboard::media::codec::g711::ulaw_encode;
use switchboard::media::dtmf::rfc4733::encode_event;
use switchboard::rtp::packet::{RtpHeader, RtpPacket};
use switchboard::rtp::types::{PayloadType, RtpTimestamp, Ssrc, WireSeq};
use tokio::net::UdpSocket;

const CALLER_HZ: f64 = 1000.0;
const STRANGER_HZ: f64 = 2000.0;
/// Upper bound on the spray, in 20 ms rounds.
const MAX_ROUNDS: u32 = 500;

/// The Prometheus samples of `/metrics`, keyed by name and labels.
async fn metrics(http: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = http_get(http, "/metrics").await;
    assert_eq!(status, 200);
    String::from_utf8(body)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn stranger_drops(m: &HashMap<String, f64>, stream: &str) -> f64 {
    let key = format!("switchboard_rtp_stranger_packets_dropped_total{{stream=\"{stream}\"}}");
    m.get(&key).copied().unwrap_or_else(|| panic!("no {key}"))
}

fn digits_reported(m: &HashMap<String, f64>) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with("switchboard_dtmf_digits_total"))
        .map(|(_, v)| v)
        .sum()
}

fn packet(pt: PayloadType, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let header = RtpHeader {
        marker: false,
        payload_type: pt,
        seq: WireSeq::new(seq),
        timestamp: RtpTimestamp::new(ts),
        ssrc: Ssrc::new(0xbad_c0de),
    };
    let mut out = vec![0u8; 1500];
    let n = RtpPacket::new(header, payload).write(&mut out).unwrap();
    out.truncate(n);
    out
}

/// Every 20 ms, sends to every port of `range` a well-formed, in-sequence RTP stream with one
/// SSRC: a loud 2 kHz tone, with an in-band '5' and RFC 4733 '9' presses in it, and an RTCP
/// receiver report. Runs until `stop` fires (or `MAX_ROUNDS`); returns how many datagrams
/// came back to it.
async fn spray(
    socket: UdpSocket,
    range: (u16, u16),
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> usize {
    let loud = tone("2000/10000@-3", 10_000);
    let key = tone("770+1336/200@-10", 200);
    let rtcp = [0x80, 201, 0, 1, 0x0b, 0xad, 0xc0, 0xde];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut buf = [0u8; 2048];
    let mut received = 0;
    let mut seq = 1u16;
    for round in 0..MAX_ROUNDS {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        received += drain(&socket, &mut buf);
        let r = round as usize;
        let pcm = if (25..35).contains(&(r % 100)) {
            &key[(r % 100 - 25) * 160..][..160]
        } else {
            &loud[(r % 60) * 160..][..160]
        };
        let payload: Vec<u8> = pcm.iter().map(|&s| ulaw_encode(s)).collect();
        let mut datagrams = vec![packet(PayloadType::PCMU, seq, round * 160, &payload)];
        seq = seq.wrapping_add(1);
        if (60..70).contains(&(r % 100)) {
            let start = (round - r as u32 % 100 + 60) * 160;
            let ev = encode_event(9, r % 100 >= 67, 10, ((r % 100 - 60) * 160) as u16);
            let te = PayloadType::DEFAULT_TELEPHONE_EVENT;
            datagrams.push(packet(te, seq, start, &ev));
            seq = seq.wrapping_add(1);
        }
        for port in (range.0..=range.1).step_by(2) {
            for d in &datagrams {
                let _ = socket.send_to(d, ("127.0.0.1", port)).await;
            }
            let _ = socket.send_to(&rtcp, ("127.0.0.1", port + 1)).await;
        }
    }
    received + drain(&socket, &mut buf)
}

/// Datagrams waiting on `socket`, read and counted (at most a thousand).
fn drain(socket: &UdpSocket, buf: &mut [u8]) -> usize {
    (0..1000)
        .take_while(|_| socket.try_recv_from(buf).is_ok())
        .count()
}

/// Calls `echo` offering `sdp`, sends the caller's tone from `rtp` for 1.5 s and returns what
/// came back meanwhile; the call is still up.
async fn echo_call(server: &Server, rtp: &mut RtpPeer, sdp: &[u8]) -> (Wire, Uac, Vec<i16>) {
    let (mut w, mut uac) = wire(false, server.sip).await;
    call_offering(&mut w, &mut uac, "echo", sdp).await;
    let media = SocketAddr::new(server.sip.ip(), answered_port(&uac));
    let tone = tone("1000/1500@-10", 1500);
    let back = rtp.exchange(media, &tone, Duration::from_millis(300)).await;
    (w, uac, back)
}

fn assert_own_tone_came_back(back: &[i16]) {
    assert!(
        back.len() >= 50 * 160,
        "only {} samples came back",
        back.len()
    );
    let best = peak_tone_power(back, CALLER_HZ);
    assert!(best > 0.9, "the caller's own tone: {best}");
}

#[tokio::test]
async fn a_stranger_spraying_the_port_range_is_not_heard_and_hears_nothing() {
    let range = (45200, 45219);
    let server = start_with(range, |c| c.sip.max_call_secs = 0).await;
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let sprayer = tokio::spawn(spray(attacker, range, stopped));
    // The spray is on before the call is placed.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut rtp = RtpPeer::bind().await;
    let sdp = offer("127.0.0.1", rtp.port(), "sendrecv");
    let (mut w, mut uac, back) = echo_call(&server, &mut rtp, &sdp).await;
    let during = metrics(server.http).await;
    hang_up(&mut w, &mut uac).await;
    let _ = stop.send(());
    let answered_to_attacker = tokio::time::timeout(Duration::from_secs(5), sprayer)
        .await
        .expect("spray ends")
        .unwrap();

    assert_own_tone_came_back(&back);
    let worst = peak_tone_power(&back, STRANGER_HZ);
    assert!(worst < 0.01, "the stranger's tone came back: {worst}");
    assert_eq!(answered_to_attacker, 0, "the attacker was sent something");
    assert_eq!(digits_reported(&during), 0.0, "a key press was reported");
    assert!(stranger_drops(&during, "rtp") > 50.0, "{during:?}");
    server.stop().await;
}

/// SIP from 127.0.0.1, the SDP's `c=` saying 127.0.0.2 (still loopback), RTP really from
/// 127.0.0.1 on another port: NAT is evident, so the real source is learned.
#[tokio::test]
async fn a_caller_behind_nat_is_learned_and_hears_its_echo() {
    let server = start_with((45300, 45319), |c| c.sip.max_call_secs = 0).await;
    // Bound so that what the server sends to the SDP address lands somewhere known.
    let sdp_side = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let sdp_port = sdp_side.local_addr().unwrap().port();
    let mut rtp = RtpPeer::bind().await;
    assert_ne!(rtp.port(), sdp_port);
    let sdp = offer("127.0.0.2", sdp_port, "sendrecv");
    let (mut w, mut uac, back) = echo_call(&server, &mut rtp, &sdp).await;
    hang_up(&mut w, &mut uac).await;
    assert_own_tone_came_back(&back);
    // Only the frames before the source was learned went to the SDP address.
    let mut buf = [0u8; 2048];
    let mut to_sdp = 0;
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(50), sdp_side.recv_from(&mut buf)).await
    {
        to_sdp += 1;
        assert!(to_sdp < 200, "the SDP address kept getting media");
    }
    assert!(to_sdp < 50, "{to_sdp} packets to the SDP address");
    server.stop().await;
}

#[path = "support/thread_alloc.rs"]
mod thread_alloc;

#[global_allocator]
static GLOBAL: thread_alloc::Counting = thread_alloc::Counting;

/// Judging, dropping and counting strangers stays off the heap: a `strict` leg hearing its
/// caller and a stranger (RTP and RTCP), then only the stranger; a `learn` leg that learned
/// the stranger (its caller never sends) and drops its RTCP.
#[test]
fn strangers_cost_the_tick_no_allocation() {
    use std::sync::Arc;
    use std::time::{Instant, SystemTime};

    use switchboard::media::frame::FRAME;
    use switchboard::media::leg::{Leg, LegCommand, LegConfig, LegSources};
    use switchboard::rtp::session::StrictRtp;

    let caller: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let stranger: SocketAddr = "127.0.0.1:40002".parse().unwrap();
    let stranger_rtcp: SocketAddr = "127.0.0.1:40003".parse().unwrap();
    let metrics = Arc::new(switchboard::metrics::Metrics::default());
    let counted = thread_alloc::allocations(|| drop(std::hint::black_box(vec![1u8; 10])));
    assert!(counted >= 1, "the counter sees allocations");
    for mode in [StrictRtp::Strict, StrictRtp::Learn] {
        let t0 = Instant::now();
        let cfg = LegConfig {
            remote_rtcp: Some("127.0.0.1:40001".parse().unwrap()),
            sources: LegSources {
                mode,
                learn_window: Duration::from_secs(60),
                signalling: Some(caller.ip()),
                metrics: Some(metrics.clone()),
            },
            ..LegConfig::pcmu(caller, Ssrc::new(1))
        };
        let mut leg = Leg::new(cfg, t0).unwrap();
        leg.apply(t0, LegCommand::Echo(true));
        let wc = SystemTime::now();
        let audio: Vec<u8> = tone("2000/5000@-3", 20)
            .iter()
            .map(|&s| ulaw_encode(s))
            .collect();
        let rtcp = [0x80, 201, 0, 1, 0x0b, 0xad, 0xc0, 0xde];
        // Packets are built before the measurement; only the leg's work is counted.
        let packets: Vec<Vec<u8>> = (0..700u32)
            .map(|n| packet(PayloadType::PCMU, n as u16, n * 160, &audio))
            .collect();
        let mut step = |n: u32, with_caller: bool| {
            let now = t0 + FRAME * n;
            let p = &packets[n as usize];
            if with_caller {
                leg.handle_packet(now, wc, caller, p);
            }
            leg.handle_packet(now, wc, stranger, p);
            leg.handle_rtcp(now, wc, stranger_rtcp, &rtcp);
            leg.tick(now, wc, u64::from(n), &mut |_, _, _| {});
            while leg.poll_event().is_some() {}
        };
        let with_caller = mode == StrictRtp::Strict;
        for n in 0..100 {
            step(n, with_caller);
        }
        let both = thread_alloc::allocations(|| {
            for n in 100..400 {
                step(n, with_caller);
            }
        });
        let alone = thread_alloc::allocations(|| {
            for n in 400..700 {
                step(n, false);
            }
        });
        assert_eq!((both, alone), (0, 0), "{mode:?}");
        let dropped = leg.report().recv.foreign;
        let expected = if with_caller { 700 } else { 3 };
        assert_eq!(dropped, expected, "{mode:?}: stranger packets dropped");
    }
}
