//! Opus loss over loopback: a caller talks to the echo service in Opus with in-band FEC and
//! leaves out every tenth packet; the leg rebuilds each lost frame from the FEC in the packet
//! after it, so the echoed tone comes back clean and without dropouts.
//!
//! The tone comes in bursts with short pauses, as speech does: libopus codes FEC only for
//! frames its voice activity detector finds active, and it takes a steady tone for
//! background noise within a second.
#![cfg(feature = "opus")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;
#[path = "support/thread_alloc.rs"]
mod thread_alloc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use support::server::*;
use switchboard::media::codec::opus::Opus;
use switchboard::media::codec::{AudioCodec, CodecKind, CodecParams, OpusParams};
use switchboard::media::frame::FRAME;
use switchboard::media::leg::{Leg, LegConfig};
use switchboard::media::level::{rms_dbfs, tone_share};
use switchboard::media::resample::StreamResampler;
use switchboard::rtp::packet::{RtpHeader, RtpPacket};
use switchboard::rtp::types::{ClockRate, PayloadType, RtpTimestamp, Ssrc, WireSeq};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

#[global_allocator]
static GLOBAL: thread_alloc::Counting = thread_alloc::Counting;

const OPUS_PT: u8 = 111;
/// One packet in this many is never sent.
const DROP_EVERY: u64 = 10;
/// Packets in one burst of tone and the pause after it: 240 ms on, 60 ms off.
const BURST: u64 = 15;
const PAUSE: u64 = 3;
/// The echo is heard from its first 20 ms window louder than this.
const HEARD_DBFS: f64 = -40.0;
/// Echo packets skipped after that while the call settles (jitter buffer, encoders), then
/// measured.
const SETTLE: usize = 25;
const MEASURED: usize = 120;
/// A 20 ms window of the echo this much below the median level is in a pause.
const PAUSE_DB: f64 = 20.0;

fn offer(port: u16) -> Vec<u8> {
    format!(
        "v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {port} RTP/AVP {OPUS_PT}\r\na=rtpmap:{OPUS_PT} opus/48000/2\r\n\
a=fmtp:{OPUS_PT} useinbandfec=1\r\na=ptime:20\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

/// The payload type the answer's `m=audio` line puts first.
fn answered_pt(uac: &support::uac::Uac) -> u8 {
    let sdp = String::from_utf8(uac.answer.clone().expect("an answer")).unwrap();
    let m = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    m.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Sends `packets` every 20 ms, leaving out every [`DROP_EVERY`]th (its sequence number and
/// timestamp are spent all the same).
async fn talk(socket: Arc<UdpSocket>, to: SocketAddr, packets: Vec<Vec<u8>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (n, p) in packets.iter().enumerate() {
        tick.tick().await;
        if n as u64 % DROP_EVERY != DROP_EVERY - 1 && socket.send_to(p, to).await.is_err() {
            return;
        }
    }
}

/// Passes on the payload of every Opus packet `socket` receives.
async fn listen(socket: Arc<UdpSocket>, tx: mpsc::UnboundedSender<Vec<u8>>) {
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = socket.recv_from(&mut buf).await {
        if let Ok(p) = RtpPacket::parse(&buf[..n]) {
            if p.header.payload_type.get() == OPUS_PT && tx.send(p.payload.to_vec()).is_err() {
                return;
            }
        }
    }
}

/// Level, in dB, of the 1 kHz tone in `pcm` (8 kHz audio).
fn tone_level_db(pcm: &[i16]) -> f64 {
    let mean_square = pcm.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / pcm.len() as f64;
    10.0 * (tone_share(pcm, 1000.0, 8000.0) * mean_square)
        .max(1e-9)
        .log10()
}

/// `n` RTP packets, from `seq` and `ts` on, of a 1 kHz tone at −12 dBFS in bursts, 20 ms
/// each, in Opus with FEC.
fn burst_packets(n: u64, seq: u16, ts: u32) -> Vec<Vec<u8>> {
    let mut enc = Opus::new(&OpusParams {
        use_inband_fec: true,
        ..OpusParams::default()
    });
    (0..n)
        .map(|k| {
            let gain = if k % BURST < BURST - PAUSE {
                8000.0
            } else {
                0.0
            };
            let pcm: Vec<i16> = (0..960u64)
                .map(|i| {
                    let t = (k * 960 + i) as f64 / 48000.0;
                    (gain * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
                })
                .collect();
            let mut payload = [0u8; 1500];
            let len = enc.encode(&pcm, &mut payload).unwrap();
            let header = RtpHeader {
                marker: k == 0,
                payload_type: PayloadType::new(OPUS_PT).unwrap(),
                seq: WireSeq::new(seq.wrapping_add(k as u16)),
                timestamp: RtpTimestamp::new(ts.wrapping_add(960 * k as u32)),
                ssrc: Ssrc::new(0x0b05),
            };
            let mut out = vec![0u8; 1500];
            let len = RtpPacket::new(header, &payload[..len])
                .write(&mut out)
                .unwrap();
            out.truncate(len);
            out
        })
        .collect()
}

/// Recovering from FEC, concealing through libopus, ending a talkspurt and starting the next
/// allocate nothing: a leg's steady state stays allocation-free under loss.
#[test]
fn opus_loss_handling_does_not_allocate() {
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let t0 = Instant::now();
    let cfg = LegConfig {
        codec: CodecKind::Opus,
        payload_type: PayloadType::new(OPUS_PT).unwrap(),
        ..LegConfig::pcmu(peer, Ssrc::new(7))
    };
    let mut leg = Leg::new(cfg, t0).unwrap();
    let packets = burst_packets(300, 0, 0);
    // Lost: every tenth, a pair, and a second in which the peer says nothing at all.
    let lost = |k: usize| k % 10 == 9 || k == 123 || (200..250).contains(&k);
    let run = |leg: &mut Leg, ticks: std::ops::Range<usize>| {
        for k in ticks {
            let now = t0 + FRAME * k as u32;
            if !lost(k) {
                leg.handle_packet(now, SystemTime::UNIX_EPOCH, peer, &packets[k]);
            }
            leg.receive(now);
        }
    };
    run(&mut leg, 0..50);
    let before = leg.stats();
    let n = thread_alloc::allocations(|| run(&mut leg, 50..300));
    let st = leg.stats();
    assert!(st.frames_recovered > before.frames_recovered + 10, "{st:?}");
    assert!(st.frames_concealed > before.frames_concealed, "{st:?}");
    assert!(st.frames_decoded > before.frames_decoded + 150, "{st:?}");
    assert_eq!(n, 0, "allocations while handling loss");
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenth_packet_lost_the_echo_stays_clean() {
    let server = start_with(common::rtp_ports(10), |cfg| {
        cfg.media.codecs = ["opus", "PCMU"].map(String::from).to_vec();
    })
    .await;
    // At most 10 s of talk, made before the call so that it starts at once.
    let packets = burst_packets(500, fastrand::u16(..), fastrand::u32(..));
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let port = socket.local_addr().unwrap().port();
    let (mut w, mut uac) = wire(false, server.sip).await;
    call_offering(&mut w, &mut uac, "echo", &offer(port)).await;
    assert_eq!(answered_pt(&uac), OPUS_PT, "answered in Opus");
    let media = SocketAddr::new(server.sip.ip(), answered_port(&uac));

    let (tx, mut rx) = mpsc::unbounded_channel();
    let talker = tokio::spawn(talk(socket.clone(), media, packets));
    let listener = tokio::spawn(listen(socket.clone(), tx));
    // The echo decoded as it comes, one 20 ms window a packet; measured from SETTLE
    // windows after the first that is heard.
    // Measured at 8 kHz, as the level and tone helpers expect.
    let mut dec = CodecKind::Opus.new_codec_with(&CodecParams::default());
    let mut narrow = StreamResampler::new(ClockRate::HZ_48000, ClockRate::HZ_8000, 20).unwrap();
    let mut wide = [0i16; 960];
    let mut pcm: Vec<i16> = Vec::new();
    let mut heard_from = None;
    let enough = |heard_from: Option<usize>, pcm: &[i16]| {
        heard_from.is_some_and(|h| pcm.len() >= (h + SETTLE + MEASURED) * 160)
    };
    // At most 10 s for 2.9 s of echo.
    for _ in 0..500 {
        w.drive(&mut uac, Duration::from_millis(20), |_| false)
            .await;
        while let Ok(p) = rx.try_recv() {
            let mut frame = [0i16; 160];
            assert_eq!(dec.decode(&p, &mut wide).unwrap(), 960);
            narrow.process(&wide, &mut frame).unwrap();
            if heard_from.is_none() && rms_dbfs(&frame) > HEARD_DBFS {
                heard_from = Some(pcm.len() / 160);
            }
            pcm.extend_from_slice(&frame);
        }
        if enough(heard_from, &pcm) {
            break;
        }
    }
    talker.abort();
    listener.abort();
    assert!(
        enough(heard_from, &pcm),
        "{} ms of echo, heard from {heard_from:?}",
        pcm.len() / 8
    );
    let start = heard_from.unwrap_or(0) + SETTLE;
    let pcm = &pcm[start * 160..(start + MEASURED) * 160];

    // Windows of tone: neither in a pause nor by one. A pause's edges fall anywhere in a
    // window, as the echo's packets follow the server's ticks, not ours, and after a pause
    // the two encoders on the way take a window or two to reach the full level.
    let windows: Vec<&[i16]> = pcm.chunks_exact(160).collect();
    let rms: Vec<f64> = windows.iter().map(|w| rms_dbfs(w)).collect();
    let median_rms = median(&rms);
    let quiet: Vec<bool> = rms.iter().map(|&r| r < median_rms - PAUSE_DB).collect();
    let mut run = 0;
    for &q in &quiet {
        run = if q { run + 1 } else { 0 };
        assert!(
            run <= PAUSE as usize + 1,
            "silence longer than a pause: {rms:?}"
        );
    }
    let tone: Vec<&[i16]> = (2..windows.len() - 1)
        .filter(|&i| !quiet[i - 2..=i + 1].contains(&true))
        .map(|i| windows[i])
        .collect();
    assert!(
        tone.len() >= windows.len() / 2,
        "{} of {} windows hold tone",
        tone.len(),
        windows.len()
    );
    let share = tone_share(&tone.concat(), 1000.0, 8000.0);
    let levels: Vec<f64> = tone.iter().map(|w| tone_level_db(w)).collect();
    let worst = levels.iter().copied().fold(f64::INFINITY, f64::min);
    let median = median(&levels);
    eprintln!(
        "echo: {} windows of tone, 1 kHz share {share:.3}, median {median:.1} dB, worst {worst:.1} dB",
        tone.len()
    );
    assert!(share >= 0.9, "1 kHz share {share:.3}");
    assert!(
        worst >= median - 6.0,
        "a dropout: {worst:.1} dB against a median of {median:.1} dB"
    );

    hang_up(&mut w, &mut uac).await;
    server.stop().await;
}
