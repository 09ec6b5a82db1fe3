//! What a browser caller costs, sans-IO (packets in from memory, datagrams out to a no-op
//! sink), in one run so the ratios compare like with like:
//!
//! - one echo leg's 20 ms tick: PCMU over plain RTP (the G.711 reference), PCMU over SRTP
//!   (`AES_CM_128_HMAC_SHA1_80` keyed by SDES, as an SRTP phone's), and the WebRTC leg of a
//!   Chromium offer (Opus at 48 kHz, rtcp-mux, FEC, RFC 6464 levels) made the way a call
//!   makes it, `LegConfig { dtls: Some(..) }` and then `LegCommand::Secured`, under each
//!   suite a browser may pick; the same Opus leg over plain RTP separates SRTP's share. The
//!   browser's stream is protected by the benchmark outside the timed part, and its echo is
//!   checked: every packet back opens with the browser's keys and decodes to speech;
//! - the parts of an Opus leg's tick on their own: one Opus encode, one decode, one SRTP
//!   protect and unprotect of an Opus packet;
//! - a whole DTLS 1.2 handshake in memory: our server side (`WebRtcTransport`, the browser's
//!   nominating ICE check fed first) against a client `DtlsEndpoint` with its own
//!   certificate, as handshakes per second of one core, the server's share timed apart.
//!
//! Prints medians as shares of one core (a tick is due every 20 ms), the ratios of each Opus
//! WebRTC leg to the PCMU leg, and asserts that no leg's steady state allocates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use switchboard::media::codec::CodecKind;
use switchboard::media::frame::FRAME;
use switchboard::media::leg::{DtlsLink, Leg, LegCommand, LegConfig};
use switchboard::rtp::packet::{classify, PacketKind, RtpPacket};
use switchboard::rtp::srtp::{CryptoAttr, MasterKey, SrtpSession, Suite};
use switchboard::rtp::types::{ClockRate, Ssrc};
use switchboard::sdp::{self, LocalSession, NegotiatedAudio, SrtpKeys, WebRtcLocal};
use switchboard::webrtc::dtls::{DtlsEndpoint, DtlsEvent};
use switchboard::webrtc::stun::{Builder, Class, BINDING};
use switchboard::webrtc::{
    Certificate, Credentials, DtlsRole, Event, TransportConfig, WebRtcTransport,
};

#[path = "support/alloc.rs"]
mod alloc;
#[path = "support/leg.rs"]
mod leg;
#[path = "support/measure.rs"]
mod measure;
#[path = "support/stream.rs"]
mod stream;

use leg::{pcmu_leg, PEER};
use measure::{allocations_in, core_percent, median_of, median_of_timed, runs};
use stream::{speech, Stream};

#[global_allocator]
static A: alloc::Counting = alloc::Counting;

/// Our ICE credentials in the answer.
const OUR_UFRAG: &str = "Ab12";
const OUR_PWD: &str = "0123456789abcdefghijkl";
/// The browser's, in its offer.
const BROWSER_UFRAG: &str = "EsAw";
const BROWSER_PWD: &str = "bP+XJMM09aR8AiX1jdukzR6Y";

/// Chromium's audio offer (Opus first, RED, G.722, G.711, CN, telephone-event at two clocks,
/// `ssrc-audio-level`), with `fingerprint` as its certificate's.
fn chromium_offer(fingerprint: &str) -> String {
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=candidate:1 1 udp 2113937151 127.0.0.1 40000 typ host generation 0",
        &format!("a=ice-ufrag:{BROWSER_UFRAG}"),
        &format!("a=ice-pwd:{BROWSER_PWD}"),
        "a=ice-options:trickle",
        &format!("a=fingerprint:{fingerprint}"),
        "a=setup:actpass",
        "a=mid:0",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:63 red/48000/2",
        "a=fmtp:63 111/111",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:13 CN/8000",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:126 telephone-event/8000",
        "a=ssrc:1234 cname:abc",
    ]
    .iter()
    .map(|l| format!("{l}\r\n"))
    .collect()
}

/// What our answer to a Chromium offer agrees, with Opus first in `[webrtc] codecs` as by
/// default.
fn negotiated_webrtc() -> NegotiatedAudio {
    let browser = Certificate::generate().unwrap();
    let offer = chromium_offer(&browser.fingerprint().to_string());
    let mut local = LocalSession::new(7, PEER).with_webrtc(WebRtcLocal {
        ufrag: OUR_UFRAG.into(),
        pwd: OUR_PWD.into(),
        fingerprint: Certificate::process().unwrap().fingerprint(),
        candidate: PEER,
        codecs: vec![CodecKind::Opus, CodecKind::Pcmu, CodecKind::Pcma],
    });
    let m = local
        .answer(&sdp::parse(offer.as_bytes()).unwrap())
        .unwrap()
        .media;
    assert_eq!(m.codec, CodecKind::Opus);
    assert!(m.webrtc.is_some() && m.rtcp_mux);
    m
}

/// The SRTP keys of a leg and of its browser, mirrored.
fn key_pair(suite: Suite) -> (SrtpKeys, SrtpSession) {
    let ours = MasterKey::random(suite).unwrap();
    let theirs = MasterKey::random(suite).unwrap();
    let browser = SrtpSession::new(&theirs, &CryptoAttr::new(1, ours.clone())).unwrap();
    let keys = SrtpKeys {
        ours,
        theirs: CryptoAttr::new(1, theirs),
    };
    (keys, browser)
}

/// The WebRTC leg a call makes for `m` (as `src/call/task.rs` does), keyed as its transport
/// keys it once the handshake ran; the queue its STUN and DTLS datagrams would go to comes
/// back with it.
fn webrtc_leg(
    m: &NegotiatedAudio,
    keys: SrtpKeys,
    now: Instant,
) -> (
    Leg,
    tokio::sync::mpsc::Receiver<switchboard::media::leg::ControlDatagram>,
) {
    let (link, datagrams) = tokio::sync::mpsc::channel(64);
    let cfg = LegConfig {
        codec: m.codec,
        payload_type: m.payload_type,
        telephone_event: m.telephone_event_pt,
        telephone_event_rate: (m.telephone_event_rate != m.clock_rate)
            .then(|| ClockRate::new(m.telephone_event_rate))
            .flatten(),
        params: m.params.clone(),
        remote: m.remote_rtp,
        remote_rtcp: m.remote_rtcp,
        rtcp_mux: m.rtcp_mux,
        direction: m.direction,
        ptime: Duration::from_millis(u64::from(m.ptime_ms)),
        dtls: Some(DtlsLink(link)),
        ..LegConfig::pcmu(PEER, Ssrc::new(3))
    };
    let mut leg = Leg::new(cfg, now).unwrap();
    leg.apply(
        now,
        LegCommand::Secured {
            keys: Box::new(keys),
            remote: PEER,
        },
    );
    (leg, datagrams)
}

/// A leg under measurement, echoing what its phone sends.
struct Case {
    name: String,
    leg: Leg,
    stream: Stream,
    /// The phone's SRTP session when the leg is SRTP: protects what it sends, opens the echo.
    phone: Option<SrtpSession>,
    t0: Instant,
    buf: [u8; 1500],
    sent: usize,
}

impl Case {
    fn new(name: String, mut leg: Leg, stream: Stream, phone: Option<SrtpSession>) -> Case {
        let t0 = Instant::now();
        leg.apply(t0, LegCommand::Echo(true));
        Case {
            name,
            leg,
            stream,
            phone,
            t0,
            buf: [0; 1500],
            sent: 0,
        }
    }

    /// Tick `n`: the phone's packet made and protected (not timed), then the leg's whole
    /// tick (timed): SRTP open, jitter buffer, decode, DTMF detection, the echo encoded,
    /// protected and sent, RTCP checked. `out` sees what the leg sends.
    fn tick_to(&mut self, n: u64, out: &mut dyn FnMut(&[u8])) -> Duration {
        let mut len = self.stream.packet(n, &mut self.buf);
        if let Some(phone) = &mut self.phone {
            len = phone.protect_rtp(&mut self.buf, len).unwrap();
        }
        let now = self.t0 + FRAME * n as u32;
        let wallclock = SystemTime::UNIX_EPOCH + FRAME * n as u32;
        let start = Instant::now();
        self.leg
            .handle_packet(now, wallclock, PEER, &self.buf[..len]);
        self.leg.tick(now, wallclock, n, &mut |_, _, b| out(b));
        while self.leg.poll_event().is_some() {}
        start.elapsed()
    }

    fn tick(&mut self, n: u64) -> Duration {
        let mut sent = 0;
        let d = self.tick_to(n, &mut |b| sent += b.len());
        self.sent += sent;
        d
    }

    /// Checks the echo of ticks from `n` on: every RTP packet the leg sends opens with the
    /// phone's keys and decodes to audio at a speech level. Returns its RMS.
    fn check_echo(&mut self, count: usize, n: &mut u64) -> f64 {
        let mut packets: Vec<Vec<u8>> = Vec::new();
        runs(count, n, |n| {
            self.tick_to(n, &mut |b| packets.push(b.to_vec()));
        });
        let kind = self.leg.codec();
        let mut dec = kind.new_codec_with(&Default::default());
        let mut pcm = vec![0i16; kind.frame_samples(20).unwrap()];
        let (mut squares, mut samples) = (0f64, 0usize);
        let mut rtp = 0;
        for mut p in packets {
            let len = match &mut self.phone {
                Some(phone) if classify(&p) == PacketKind::Rtp => phone
                    .unprotect_rtp(&mut p)
                    .unwrap_or_else(|e| panic!("{}: the echo does not open: {e}", self.name)),
                Some(phone) => phone.unprotect_rtcp(&mut p).unwrap(),
                None => p.len(),
            };
            if classify(&p[..len]) != PacketKind::Rtp {
                continue;
            }
            rtp += 1;
            let packet = RtpPacket::parse(&p[..len]).unwrap();
            let got = dec.decode(packet.payload, &mut pcm).unwrap();
            squares += pcm[..got]
                .iter()
                .map(|&x| f64::from(x).powi(2))
                .sum::<f64>();
            samples += got;
        }
        assert!(rtp >= count - 5, "{}: {rtp} RTP packets echoed", self.name);
        (squares / samples.max(1) as f64).sqrt()
    }
}

/// What one case measured.
struct Measured {
    name: String,
    median: Duration,
    allocations: usize,
}

fn measure_case(c: &mut Criterion, mut case: Case) -> Measured {
    let mut n = 0u64;
    runs(200, &mut n, |n| {
        case.tick(n);
    });
    let rms = case.check_echo(150, &mut n);
    assert!(rms > 300.0, "{}: the echo's RMS is {rms:.0}", case.name);
    let mut g = c.benchmark_group("webrtc leg tick");
    let name = case.name.clone();
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += case.tick(n);
                n += 1;
            }
            total
        })
    });
    g.finish();
    let median = median_of_timed(2000, &mut n, |n| case.tick(n));
    let allocations = allocations_in(500, &mut n, |n| {
        case.tick(n);
    });
    let stats = case.leg.stats();
    println!(
        "{}: median tick {median:?}, {:.4}% of a core; echo RMS {rms:.0}; {allocations} \
         allocations in 500 ticks; {} packets in, {} out, {} decoded, {} concealed, \
         {} dropped, {} SRTP failures",
        case.name,
        core_percent(median),
        stats.packets_in,
        stats.packets_out,
        stats.frames_decoded,
        stats.frames_concealed,
        stats.dropped,
        stats.srtp_auth_failures + stats.srtp_replays + stats.srtp_malformed,
    );
    assert_eq!(stats.dropped, 0, "{}", case.name);
    assert_eq!(stats.srtp_auth_failures, 0, "{}", case.name);
    assert!(case.sent > 0);
    Measured {
        name: case.name,
        median,
        allocations,
    }
}

/// The G.711 reference, the SRTP PCMU leg, the Opus WebRTC leg under both suites and over
/// plain RTP; then the ratios.
fn legs(c: &mut Criterion) {
    let m = negotiated_webrtc();
    let speech8 = speech(ClockRate::HZ_8000);
    let speech48 = speech(ClockRate::HZ_48000);
    // The browser encodes as it was answered: in-band FEC, levels on the agreed id.
    let browser_stream = || Stream::with(m.codec, m.payload_type.get(), &speech48, 2, &m.params);
    let pcmu_stream = || Stream::new(CodecKind::Pcmu, 0, &speech8, 2);
    let mut cases = Vec::new();
    // The queues keyed legs no longer use, kept open as their transports keep them.
    let mut links = Vec::new();
    let now = Instant::now();

    cases.push(Case::new(
        "PCMU echo leg, RTP".into(),
        pcmu_leg(1, now),
        pcmu_stream(),
        None,
    ));
    let (keys, phone) = key_pair(Suite::AesCm128HmacSha1_80);
    let sdes = LegConfig {
        srtp: Some(Box::new(keys)),
        ..LegConfig::pcmu(PEER, Ssrc::new(1))
    };
    cases.push(Case::new(
        "PCMU echo leg, SRTP AES_CM_128_HMAC_SHA1_80".into(),
        Leg::new(sdes, now).unwrap(),
        pcmu_stream(),
        Some(phone),
    ));
    for suite in [Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm] {
        let (keys, phone) = key_pair(suite);
        let (leg, datagrams) = webrtc_leg(&m, keys, now);
        links.push(datagrams);
        cases.push(Case::new(
            format!("Opus WebRTC echo leg, SRTP {suite}"),
            leg,
            browser_stream(),
            Some(phone),
        ));
    }
    let plain = LegConfig {
        codec: m.codec,
        payload_type: m.payload_type,
        params: m.params.clone(),
        rtcp_mux: true,
        ..LegConfig::pcmu(PEER, Ssrc::new(4))
    };
    cases.push(Case::new(
        "Opus echo leg, RTP (no SRTP)".into(),
        Leg::new(plain, now).unwrap(),
        browser_stream(),
        None,
    ));

    let measured: Vec<Measured> = cases.into_iter().map(|k| measure_case(c, k)).collect();
    parts(&m, &speech48);

    let reference = measured[0].median;
    println!("summary (median ticks of one run, PCMU echo leg over RTP = 1):");
    for k in &measured {
        let ratio = k.median.as_secs_f64() / reference.as_secs_f64();
        let verdict = if k.name.starts_with("Opus WebRTC") {
            if ratio <= 2.5 {
                " (target <= 2.5x: met)"
            } else {
                " (target <= 2.5x: not met)"
            }
        } else {
            ""
        };
        println!(
            "  {}: {:?}, {:.4}% of a core, {ratio:.1}x{verdict}, {} allocations in 500 ticks",
            k.name,
            k.median,
            core_percent(k.median),
            k.allocations
        );
    }
    for k in &measured {
        assert_eq!(k.allocations, 0, "{} allocated", k.name);
    }
    drop(links);
}

/// An Opus leg's tick in parts: one encode of a 20 ms frame, one decode of a browser's
/// packet, one SRTP protect and unprotect of such a packet under each suite.
fn parts(m: &NegotiatedAudio, speech48: &[i16]) {
    let frame = m.codec.frame_samples(20).unwrap();
    let frames: Vec<&[i16]> = speech48.chunks_exact(frame).collect();
    let mut enc = m.codec.new_codec_with(&m.params);
    let mut out = vec![0u8; 1500];
    let mut n = 0;
    runs(100, &mut n, |n| {
        enc.encode(frames[n as usize % frames.len()], &mut out)
            .unwrap();
    });
    let encode = median_of(2000, &mut n, |n| {
        enc.encode(frames[n as usize % frames.len()], &mut out)
            .unwrap();
    });

    let browser = Stream::with(m.codec, m.payload_type.get(), speech48, 2, &m.params);
    let mut dec = m.codec.new_codec_with(&m.params);
    let mut pcm = vec![0i16; frame];
    let payloads = &browser.payloads;
    let mut n = 0;
    runs(100, &mut n, |n| {
        dec.decode(&payloads[n as usize % payloads.len()], &mut pcm)
            .unwrap();
    });
    let decode = median_of(2000, &mut n, |n| {
        dec.decode(&payloads[n as usize % payloads.len()], &mut pcm)
            .unwrap();
    });
    let mean_payload = payloads.iter().map(Vec::len).sum::<usize>() / payloads.len();
    println!(
        "Opus parts: encode {encode:?}, decode {decode:?} (median of 2,000 single calls; \
         the browser's payloads average {mean_payload} bytes)"
    );

    for suite in [Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm] {
        let (keys, mut browser_srtp) = key_pair(suite);
        let mut leg_srtp = SrtpSession::new(&keys.ours, &keys.theirs).unwrap();
        let mut buf = [0u8; 1500];
        let mut n = 0;
        let time = median_of_timed(2000, &mut n, |n| {
            let len = browser.packet(n, &mut buf);
            let sealed = browser_srtp.protect_rtp(&mut buf, len).unwrap();
            let start = Instant::now();
            let opened = leg_srtp.unprotect_rtp(&mut buf[..sealed]).unwrap();
            leg_srtp.protect_rtp(&mut buf, opened).unwrap();
            start.elapsed()
        });
        println!("SRTP {suite}: unprotect + protect of one Opus packet {time:?}");
    }
}

/// The server's and the client's time in one whole handshake, and the keys each got.
struct Handshake {
    server: Duration,
    client: Duration,
    keys: (switchboard::webrtc::SrtpKeys, switchboard::webrtc::SrtpKeys),
}

/// Runs `f`, adding its time to `total`.
fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = f();
    *total += start.elapsed();
    r
}

/// Where the browser's checks and records come from.
const BROWSER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50000);

/// The two ends of the handshake: the process's certificate on our side, the browser's own.
struct Ends {
    ours: Arc<Certificate>,
    browser: Certificate,
    /// The browser's nominating check, as its ICE agent sends it before DTLS.
    check: Vec<u8>,
}

impl Ends {
    fn new() -> Ends {
        let check = Builder::new(Class::Request, BINDING, &[7; 12])
            .username(format!("{OUR_UFRAG}:{BROWSER_UFRAG}").as_bytes())
            .priority(2_113_937_151)
            .ice_controlling(0x1234)
            .use_candidate()
            .integrity(OUR_PWD.as_bytes())
            .fingerprint()
            .finish();
        Ends {
            ours: Certificate::process().unwrap(),
            browser: Certificate::generate().unwrap(),
            check,
        }
    }

    /// One handshake from nothing: our transport made and checked, the browser's endpoint
    /// made, flights exchanged until both have keys.
    fn handshake(&self) -> Handshake {
        let t0 = Instant::now();
        let mut server_time = Duration::ZERO;
        let mut client_time = Duration::ZERO;
        let mut server = timed(&mut server_time, || {
            let config = TransportConfig::new(
                Credentials {
                    ufrag: OUR_UFRAG.into(),
                    pwd: OUR_PWD.into(),
                },
                Credentials {
                    ufrag: BROWSER_UFRAG.into(),
                    pwd: BROWSER_PWD.into(),
                },
                DtlsRole::Server,
                self.browser.fingerprint(),
                self.ours.clone(),
            );
            let mut t = WebRtcTransport::new(config, t0).unwrap();
            t.handle_datagram(t0, BROWSER, &self.check);
            t
        });
        let mut client = timed(&mut client_time, || {
            let mut e = DtlsEndpoint::new(
                &self.browser,
                DtlsRole::Client,
                self.ours.fingerprint(),
                Duration::from_secs(30),
                t0,
            )
            .unwrap();
            e.handle_timeout(t0);
            e
        });
        let (mut server_keys, mut client_keys) = (None, None);
        // A handshake is four flights each way at most; the bound only stops a stuck one.
        for round in 1..=20u32 {
            let now = t0 + Duration::from_millis(u64::from(round));
            while let Some(record) = client.poll_transmit() {
                timed(&mut server_time, || {
                    server.handle_datagram(now, BROWSER, &record)
                });
            }
            while let Some(t) = server.poll_transmit() {
                if switchboard::webrtc::demux(&t.bytes) == switchboard::webrtc::Demux::Dtls {
                    assert_eq!(t.to, BROWSER);
                    timed(&mut client_time, || client.handle_packet(now, &t.bytes));
                }
            }
            while let Some(e) = server.poll_event() {
                match e {
                    Event::Connected(k) => server_keys = Some(k),
                    Event::Failed(why) => panic!("our side failed: {why}"),
                    _ => {}
                }
            }
            while let Some(e) = client.poll_event() {
                match e {
                    DtlsEvent::Connected(k) => client_keys = Some(k),
                    DtlsEvent::Failed(why) => panic!("the browser's side failed: {why}"),
                }
            }
            if server_keys.is_some() && client_keys.is_some() {
                break;
            }
        }
        Handshake {
            server: server_time,
            client: client_time,
            keys: (
                server_keys.expect("our side has keys"),
                client_keys.expect("the browser has keys"),
            ),
        }
    }
}

fn dtls(c: &mut Criterion) {
    let ends = Ends::new();
    let first = ends.handshake();
    let (ours, theirs) = &first.keys;
    assert_eq!((&ours.local, &ours.remote), (&theirs.remote, &theirs.local));
    let mut g = c.benchmark_group("webrtc dtls");
    g.sample_size(20);
    g.bench_function("whole handshake, both ends", |b| {
        b.iter(|| ends.handshake())
    });
    g.finish();

    let mut total = Vec::new();
    let mut server = Vec::new();
    for _ in 0..200 {
        let h = ends.handshake();
        total.push(h.server + h.client);
        server.push(h.server);
    }
    total.sort();
    server.sort();
    let (total, server) = (total[total.len() / 2], server[server.len() / 2]);
    println!(
        "DTLS handshake ({}): median {total:?} both ends ({:.0} handshakes/s on one core), \
         our server side {server:?} ({:.0} handshakes/s on one core)",
        ours.suite,
        1.0 / total.as_secs_f64(),
        1.0 / server.as_secs_f64(),
    );
}

criterion_group!(benches, legs, dtls);
criterion_main!(benches);
