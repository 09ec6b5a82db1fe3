//! RTCP timing on a real media worker over 127.0.0.1: a test peer sends a sender report,
//! reads the report block we send back and computes the round trip (RFC 3550 §6.4.1) from
//! our LSR and DLSR; then it answers our SR with a known delay, and the round trip the leg
//! computes is checked. On loopback both are (almost) zero: any error is our timing.
//!
//! And the send side of every ptime, RFC 4733 events included, allocates nothing per tick.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use rtcp_types::{Compound, Packet};
use switchboard::engine::{LegSockets, MediaEngine};
use switchboard::media::frame::{Frame, FRAME, FRAME_SAMPLES};
use switchboard::media::leg::{Leg, LegCommand, LegConfig, LegEvent};
use switchboard::media::stamp;
use switchboard::media::tone::{ToneGenerator, ToneSpec};
use switchboard::rtp::packet::{RtpHeader, RtpPacket};
use switchboard::rtp::types::{ClockRate, PayloadType, RtpTimestamp, Ssrc, WireSeq};
use switchboard::rtp::NtpTime;

#[path = "support/thread_alloc.rs"]
mod thread_alloc;

#[global_allocator]
static GLOBAL: thread_alloc::Counting = thread_alloc::Counting;

const PEER_SSRC: u32 = 0x5eed;
const LEG_SSRC: u32 = 0x0bad_cafe;

fn ntp_middle(t: SystemTime) -> u32 {
    NtpTime::from_system_time(t).middle().get()
}

/// An SR from the peer (no report blocks) stamped with the wallclock `at`.
fn sender_report(at: SystemTime) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend(PEER_SSRC.to_be_bytes());
    p.extend(NtpTime::from_system_time(at).get().to_be_bytes());
    p.extend(1234u32.to_be_bytes());
    p.extend(10u32.to_be_bytes());
    p.extend(1600u32.to_be_bytes());
    p
}

/// An RR from the peer with one block about our stream echoing `lsr` after `dlsr` (16.16 s).
fn receiver_report(lsr: u32, dlsr: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend(PEER_SSRC.to_be_bytes());
    p.extend(LEG_SSRC.to_be_bytes());
    p.extend(0u32.to_be_bytes());
    p.extend(1u32.to_be_bytes());
    p.extend(0u32.to_be_bytes());
    p.extend(lsr.to_be_bytes());
    p.extend(dlsr.to_be_bytes());
    p
}

/// A 16.16 round trip as signed milliseconds.
fn units_ms(units: u32) -> f64 {
    f64::from(units as i32) * 1000.0 / 65536.0
}

fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    stamp::enable(&s).unwrap();
    s
}

/// One report from the leg with its arrival time: (our SR's NTP if it is an SR, LSR, DLSR
/// of the block about the peer).
struct Report {
    arrival: SystemTime,
    sr_ntp: Option<u64>,
    block: Option<(u32, u32)>,
}

fn read_report(socket: &UdpSocket) -> Option<Report> {
    let mut buf = [0u8; 1500];
    // The kernel's receive time, as the server's worker takes it: the test thread may be
    // scheduled late on a loaded machine, and that delay is no part of the round trip.
    let (n, _, stamp) = stamp::recv(socket, &mut buf).ok()?;
    let arrival = stamp.unwrap_or_else(SystemTime::now);
    let mut report = Report {
        arrival,
        sr_ntp: None,
        block: None,
    };
    for p in Compound::parse(&buf[..n]).ok()? {
        match p.ok()? {
            Packet::Sr(sr) => {
                report.sr_ntp = Some(sr.ntp_timestamp());
                for b in sr.report_blocks().filter(|b| b.ssrc() == PEER_SSRC) {
                    report.block = Some((
                        b.last_sender_report_timestamp(),
                        b.delay_since_last_sender_report_timestamp(),
                    ));
                }
            }
            Packet::Rr(rr) => {
                for b in rr.report_blocks().filter(|b| b.ssrc() == PEER_SSRC) {
                    report.block = Some((
                        b.last_sender_report_timestamp(),
                        b.delay_since_last_sender_report_timestamp(),
                    ));
                }
            }
            _ => {}
        }
    }
    Some(report)
}

fn leg_config(remote: SocketAddr, remote_rtcp: Option<SocketAddr>, ptime_ms: u64) -> LegConfig {
    LegConfig {
        remote_rtcp,
        ptime: Duration::from_millis(ptime_ms),
        ..LegConfig::pcmu(remote, Ssrc::new(LEG_SSRC))
    }
}

#[test]
fn round_trips_over_loopback_come_out_near_zero() {
    let media = MediaEngine::start(1, 0).unwrap();
    let (rtp, rtcp) = (bind(), bind());
    let leg_rtp = rtp.local_addr().unwrap();
    let leg_rtcp = rtcp.local_addr().unwrap();
    let (peer_rtp, peer_rtcp) = (bind(), bind());
    let cfg = leg_config(
        peer_rtp.local_addr().unwrap(),
        Some(peer_rtcp.local_addr().unwrap()),
        20,
    );
    let leg = Leg::new(cfg, Instant::now()).unwrap();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let handle = media.add(leg, LegSockets::new(rtp, rtcp), tx).unwrap();

    // A few packets, so that the leg has a source to report on.
    send_rtp(&peer_rtp, leg_rtp, 0..10);
    let sr_wall = SystemTime::now();
    peer_rtcp
        .send_to(&sender_report(sr_wall), leg_rtcp)
        .unwrap();
    let lsr = ntp_middle(sr_wall);

    // Our first report is due 1.25-3.75 s after the leg started, every ~5 s after that.
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut echoed = None;
    let mut seq = 10;
    while echoed.is_none() && Instant::now() < deadline {
        send_rtp(&peer_rtp, leg_rtp, seq..seq + 1);
        seq += 1;
        let Some(r) = read_report(&peer_rtcp) else {
            continue;
        };
        if r.block.is_some_and(|(l, _)| l == lsr) {
            echoed = Some(r);
        }
    }
    let report = echoed.expect("a report echoing the peer's SR");
    let (_, dlsr) = report.block.unwrap();
    let rtt = ntp_middle(report.arrival)
        .wrapping_sub(lsr)
        .wrapping_sub(dlsr);
    let rtt_ms = units_ms(rtt);
    assert!(
        rtt_ms.abs() < 1.0,
        "the peer's round trip {rtt_ms:.3} ms (DLSR {:.3} ms)",
        units_ms(dlsr)
    );

    // Answer our SR after a delay off the tick grid, stating it exactly as DLSR.
    let our_ntp = report
        .sr_ntp
        .expect("the leg sends, so it reports with an SR");
    std::thread::sleep(Duration::from_micros(37_300));
    let waited = SystemTime::now()
        .duration_since(report.arrival)
        .unwrap_or_default();
    let dlsr = (waited.as_secs_f64() * 65536.0) as u32;
    let our_lsr = (our_ntp >> 16) as u32;
    peer_rtcp
        .send_to(&receiver_report(our_lsr, dlsr), leg_rtcp)
        .unwrap();
    // The worker polls the RTCP socket every eighth tick (160 ms); nothing tells the test
    // when it did, so give it several rounds (a loaded machine may starve the worker) before
    // the leg goes.
    std::thread::sleep(Duration::from_millis(1000));
    drop(handle);
    let deadline = Instant::now() + Duration::from_secs(5);
    let summary = loop {
        assert!(Instant::now() < deadline, "no Closed event");
        match events.try_recv() {
            Ok(LegEvent::Closed(s)) => break s,
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let rtt_us = summary.rtt_us.expect("the leg computed a round trip");
    assert!(rtt_us < 1000, "our round trip {rtt_us} µs");
}

/// RTP packets `seqs` of 20 ms PCMU silence from the peer.
fn send_rtp(socket: &UdpSocket, to: SocketAddr, seqs: std::ops::Range<u16>) {
    for seq in seqs {
        let header = RtpHeader {
            marker: seq == 0,
            payload_type: PayloadType::PCMU,
            seq: WireSeq::new(seq),
            timestamp: RtpTimestamp::new(u32::from(seq) * 160),
            ssrc: Ssrc::new(PEER_SSRC),
        };
        let mut out = [0u8; 200];
        let n = RtpPacket::new(header, &[0xff; 160])
            .write(&mut out)
            .unwrap();
        socket.send_to(&out[..n], to).unwrap();
    }
}

#[test]
fn the_counter_sees_allocations() {
    assert!(thread_alloc::allocations(|| drop(std::hint::black_box(vec![1u8; 10]))) >= 1);
}

/// Ticks of legs playing a tone at every ptime, alone and with a room's shared encode, with
/// a key sent by RFC 4733 halfway: after warming up, none allocates.
#[test]
fn packetising_any_ptime_allocates_nothing() {
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let t0 = Instant::now();
    let spec: ToneSpec = "1000/60000@-10".parse().unwrap();
    let pcm = [1000i16; FRAME_SAMPLES];
    let payload = [0x5au8; FRAME_SAMPLES];
    for ptime in [10, 20, 30, 40, 50, 60] {
        for room in [false, true] {
            let mut leg = Leg::new(leg_config(peer, None, ptime), t0).unwrap();
            leg.apply(
                t0,
                LegCommand::Play {
                    id: 1,
                    source: Box::new(ToneGenerator::new(&spec, ClockRate::HZ_8000).unwrap()),
                    barge_in: false,
                },
            );
            if room {
                leg.apply(t0, LegCommand::StopPlay);
            }
            let mut packets = 0u64;
            let mut run = |leg: &mut Leg, ticks: std::ops::Range<u64>| {
                for n in ticks {
                    let now = t0 + FRAME * n as u32;
                    let wall = SystemTime::UNIX_EPOCH + FRAME * n as u32;
                    let mut out = |_, _, _: &[u8]| packets += 1;
                    leg.receive(now);
                    if room {
                        leg.send_encoded(now, wall, n, &Frame::from(pcm), &payload, &mut out);
                    } else {
                        leg.send(now, wall, n, None, &mut out);
                    }
                }
            };
            run(&mut leg, 0..50);
            leg.apply(
                t0 + FRAME * 50,
                LegCommand::SendDtmf {
                    digits: "1".into(),
                    inband: false,
                },
            );
            let allocs = thread_alloc::allocations(|| run(&mut leg, 50..400));
            assert_eq!(allocs, 0, "ptime {ptime}, room {room}");
            let _ = leg.poll_event();
            assert!(
                packets > 350 * 20 / ptime,
                "ptime {ptime}: {packets} packets"
            );
        }
    }
}
