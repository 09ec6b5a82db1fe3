//! The WebRTC transport core against a DTLS implementation we did not write: `openssl
//! s_client` and `s_server` do a DTLS 1.2 handshake with use_srtp over loopback UDP with a
//! small driver of [`WebRtcTransport`], and the SRTP keys openssl exports must be the ones our
//! transport derived.
//!
//! openssl speaks no ICE, so the driver feeds the transport one nominated check on openssl's
//! behalf from openssl's address, as a browser's check would come.
//!
//! Then aiortc (`tests/fixtures/webrtc_peer.py`; PyPI, which `.ci/run` installs; skipped
//! without it except under `CI=true`) calls as a browser does, with its own full ICE agent,
//! OpenSSL's DTLS and libsrtp, and a tone crosses each way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use switchboard::rtp::srtp::{SrtpSession, Suite};
use switchboard::webrtc::stun::{Builder, Class, BINDING};
use switchboard::webrtc::{
    demux, Certificate, Credentials, Demux, DtlsRole, Event, SrtpKeys, TransportConfig,
    WebRtcTransport,
};

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Kills the child however the test ends.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn openssl_s_client_handshake_exports_the_keys_we_derived() {
    against_openssl(DtlsRole::Server);
}

#[test]
fn openssl_s_server_handshake_exports_the_keys_we_derived() {
    against_openssl(DtlsRole::Client);
}

/// Our transport in `role`, openssl in the other, over loopback UDP; openssl's exported
/// keying material must split into our keys, mirrored.
fn against_openssl(role: DtlsRole) {
    assert!(
        Command::new("openssl").arg("version").output().is_ok(),
        "openssl is not installed (Debian package openssl; .ci/run installs it)"
    );
    let dir = std::env::temp_dir().join(format!("webrtc-openssl-{}-{role:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let peer_cert = Certificate::generate().unwrap();
    let cert_path = dir.join("peer.pem");
    let key_path = dir.join("peer.key");
    std::fs::write(&cert_path, pem("CERTIFICATE", peer_cert.der())).unwrap();
    std::fs::write(&key_path, pem("PRIVATE KEY", peer_cert.private_key_der())).unwrap();

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();

    let ours = Credentials {
        ufrag: "lite".into(),
        pwd: "lite-password-0123456789".into(),
    };
    let theirs = Credentials {
        ufrag: "ossl".into(),
        pwd: "ossl-password-0123456789".into(),
    };
    let config = TransportConfig::new(
        ours.clone(),
        theirs,
        role,
        peer_cert.fingerprint(),
        Certificate::process().unwrap(),
    );
    let mut transport = WebRtcTransport::new(config, Instant::now()).unwrap();

    let mut cmd = Command::new("openssl");
    let mut peer: Option<SocketAddr> = None;
    match role {
        DtlsRole::Server => {
            cmd.arg("s_client")
                .args(["-connect", &format!("127.0.0.1:{port}")]);
        }
        DtlsRole::Client => {
            // A port that was free a moment ago; s_server binds it.
            let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
            let server = probe.local_addr().unwrap();
            drop(probe);
            peer = Some(server);
            // -verify asks for our certificate, as a browser's DTLS server does.
            cmd.arg("s_server")
                .args(["-accept", &server.to_string(), "-verify", "1"]);
        }
    }
    let mut child = Reaper(
        cmd.args(["-dtls1_2", "-use_srtp", "SRTP_AES128_CM_SHA1_80"])
            .args(["-keymatexport", "EXTRACTOR-dtls_srtp"])
            .args(["-keymatexportlen", "60"])
            .arg("-cert")
            .arg(&cert_path)
            .arg("-key")
            .arg(&key_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let check = Builder::new(Class::Request, BINDING, &[3; 12])
        .username(b"lite:ossl")
        .ice_controlling(1)
        .use_candidate()
        .integrity(ours.pwd.as_bytes())
        .fingerprint()
        .finish();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut our_keys: Option<SrtpKeys> = None;
    let mut exported: Option<Vec<u8>> = None;
    let mut profile_line = None;
    if role == DtlsRole::Client {
        // s_server says ACCEPT once it listens.
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("s_server listening");
            if line.trim() == "ACCEPT" {
                break;
            }
        }
    }
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && (our_keys.is_none() || exported.is_none()) {
        while let Ok(line) = rx.try_recv() {
            let line = line.trim().to_string();
            if line.starts_with("SRTP Extension negotiated") {
                profile_line = Some(line.clone());
            }
            if let Some(hex) = line.strip_prefix("Keying material: ") {
                exported = Some(hex_bytes(hex.trim()));
            }
        }
        if role == DtlsRole::Client && transport.selected().is_none() {
            // s_server is up: the check that tells the transport where it is.
            transport.handle_datagram(Instant::now(), peer.unwrap(), &check);
        }
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let now = Instant::now();
            if peer.is_none() {
                peer = Some(from);
                transport.handle_datagram(now, from, &check);
            }
            transport.handle_datagram(now, from, &buf[..n]);
        }
        let now = Instant::now();
        if transport.poll_timeout().is_some_and(|t| t <= now) {
            transport.handle_timeout(now);
        }
        while let Some(t) = transport.poll_transmit() {
            assert_eq!(Some(t.to), peer);
            // The answer to the check made on openssl's behalf stays here.
            if demux(&t.bytes) == Demux::Dtls {
                socket.send_to(&t.bytes, t.to).unwrap();
            }
        }
        while let Some(e) = transport.poll_event() {
            match e {
                Event::Connected(k) => our_keys = Some(k),
                Event::Failed(why) => panic!("transport failed: {why}"),
                _ => {}
            }
        }
    }
    // Closing stdin ends s_client; the reaper kills either should it linger.
    drop(child.0.stdin.take());
    let _ = std::fs::remove_dir_all(&dir);

    let ours = our_keys.expect("our transport connected");
    let exported = exported.expect("openssl printed its keying material");
    assert_eq!(
        profile_line.as_deref(),
        Some("SRTP Extension negotiated, profile=SRTP_AES128_CM_SHA1_80")
    );
    assert_eq!(ours.suite, Suite::AesCm128HmacSha1_80);
    assert_eq!(exported.len(), 60);
    let openssl_role = match role {
        DtlsRole::Server => DtlsRole::Client,
        DtlsRole::Client => DtlsRole::Server,
    };
    let theirs = SrtpKeys::from_exported(ours.suite, &exported, openssl_role).unwrap();
    assert!(
        ours.local == theirs.remote,
        "our sending key is openssl's receiving key"
    );
    assert!(
        ours.remote == theirs.local,
        "openssl's sending key is our receiving key"
    );

    // And the keys work: one RTP packet each way through two SRTP sessions.
    let (mut a, mut b) = (ours.session().unwrap(), theirs.session().unwrap());
    crosses(&mut a, &mut b);
    crosses(&mut b, &mut a);
}

/// One RTP packet protected by `from` comes out of `to` as it went in.
fn crosses(from: &mut SrtpSession, to: &mut SrtpSession) {
    let mut pkt = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4];
    pkt.extend((0..160u8).map(|i| i.wrapping_mul(3)));
    let plain = pkt.clone();
    pkt.resize(plain.len() + 10, 0);
    let n = from.protect_rtp(&mut pkt, plain.len()).unwrap();
    assert_ne!(&pkt[12..plain.len()], &plain[12..]);
    let m = to.unprotect_rtp(&mut pkt[..n]).unwrap();
    assert_eq!(&pkt[..m], &plain[..]);
}

/// The value of the first `a=NAME:` line of `sdp`.
fn sdp_attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
}

/// Whether python3 has aiortc; a missing one skips the test, except under `CI=true`.
fn have_aiortc() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import aiortc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "python3 with aiortc is needed under CI=true (.ci/run installs it)"
        );
        eprintln!("skipped: python3 with aiortc (pip install aiortc) is not installed");
    }
    ok
}

/// aiortc (aioice's full ICE agent, OpenSSL's DTLS through pyOpenSSL, libsrtp) calls as a
/// browser does: its checks must select its address, the DTLS handshake give keys, its 1 kHz
/// tone must decrypt and decode on our side, and our 440 Hz tone on its side, both at about
/// the -13.5 dBFS sent (the range of the phone tests, for late ticks on a loaded machine).
#[test]
fn aiortc_calls_in_and_audio_crosses_both_ways() {
    if !have_aiortc() {
        return;
    }
    let mut child = Reaper(
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/webrtc_peer.py"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str(&line) else {
                continue;
            };
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("aiortc made an offer");
    let offer = first["offer"].as_str().expect("an offer first").to_string();
    // What browsers offer: SAVPF over DTLS, ICE, rtcp-mux, BUNDLE.
    assert!(offer.contains("UDP/TLS/RTP/SAVPF"), "{offer}");
    assert!(offer.contains("a=rtcp-mux") && offer.contains("a=group:BUNDLE"));
    let remote = Credentials {
        ufrag: sdp_attr(&offer, "ice-ufrag").unwrap().into(),
        pwd: sdp_attr(&offer, "ice-pwd").unwrap().into(),
    };
    let fingerprint: switchboard::webrtc::Fingerprint =
        sdp_attr(&offer, "fingerprint").unwrap().parse().unwrap();
    let (role, setup) = DtlsRole::answering(sdp_attr(&offer, "setup").unwrap()).unwrap();
    let mid = sdp_attr(&offer, "mid").unwrap_or("0");

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    let local = Credentials::random().unwrap();
    let cert = Certificate::process().unwrap();
    let answer = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {mid}\r\n\
         a=ice-lite\r\nm=audio {port} UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.1\r\n\
         a=mid:{mid}\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:{}\r\na=setup:{setup}\r\n\
         a=rtcp-mux\r\na=sendrecv\r\na=rtpmap:0 PCMU/8000\r\na=ssrc:4660 cname:switchboard\r\n\
         a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host\r\na=end-of-candidates\r\n",
        local.ufrag,
        local.pwd,
        cert.fingerprint()
    );
    let config = TransportConfig::new(local, remote, role, fingerprint, cert);
    let mut transport = WebRtcTransport::new(config, Instant::now()).unwrap();
    {
        use std::io::Write;
        let stdin = child.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", serde_json::json!({ "answer": answer })).unwrap();
    }

    let mut selected = None;
    let mut session: Option<SrtpSession> = None;
    let mut suite = None;
    let mut heard_here: Vec<i16> = Vec::new();
    let mut heard_there = None;
    let mut sent_at: Option<Instant> = None;
    let mut sent: u32 = 0;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && (heard_here.len() < 16_000 || heard_there.is_none()) {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            assert!(from.ip().is_loopback());
            let now = Instant::now();
            match demux(&buf[..n]) {
                Demux::Stun | Demux::Dtls => transport.handle_datagram(now, from, &buf[..n]),
                Demux::Rtp => {
                    if let Some(s) = session.as_mut() {
                        let kind = switchboard::rtp::packet::classify(&buf[..n]);
                        if kind == switchboard::rtp::packet::PacketKind::Rtp {
                            let len = s.unprotect_rtp(&mut buf[..n]).expect("aiortc's SRTP");
                            if buf[1] & 0x7F == 0 {
                                heard_here.extend(
                                    buf[12..len]
                                        .iter()
                                        .map(|&b| switchboard::media::codec::g711::ulaw_decode(b)),
                                );
                            }
                        } else {
                            s.unprotect_rtcp(&mut buf[..n]).expect("aiortc's SRTCP");
                        }
                    }
                }
                Demux::Other => panic!("aiortc sent a datagram RFC 7983 does not place"),
            }
        }
        let now = Instant::now();
        if transport.poll_timeout().is_some_and(|t| t <= now) {
            transport.handle_timeout(now);
        }
        while let Some(t) = transport.poll_transmit() {
            assert!(t.to.ip().is_loopback());
            socket.send_to(&t.bytes, t.to).unwrap();
        }
        while let Some(e) = transport.poll_event() {
            match e {
                Event::Selected(a) => selected = Some(a),
                Event::Connected(keys) => {
                    suite = Some(keys.suite);
                    session = Some(keys.session().unwrap());
                    sent_at = Some(Instant::now());
                }
                Event::Failed(why) => panic!("transport failed: {why}"),
                Event::ConsentLost => panic!("consent lost"),
            }
        }
        // Our 440 Hz tone, one 20 ms PCMU packet per 20 ms since the keys came.
        if let (Some(s), Some(start), Some(to)) = (session.as_mut(), sent_at, selected) {
            while start + Duration::from_millis(20 * u64::from(sent)) <= now {
                let mut pkt = vec![0x80, 0];
                pkt.extend_from_slice(&(sent as u16).to_be_bytes());
                pkt.extend_from_slice(&(sent * 160).to_be_bytes());
                pkt.extend_from_slice(&4660u32.to_be_bytes());
                pkt.extend((0..160).map(|i| {
                    let t = f64::from(sent * 160 + i) / 8000.0;
                    let x = 0.3 * 32767.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin();
                    switchboard::media::codec::g711::ulaw_encode(x as i16)
                }));
                let len = pkt.len();
                pkt.resize(len + 16, 0);
                let n = s.protect_rtp(&mut pkt, len).unwrap();
                socket.send_to(&pkt[..n], to).unwrap();
                sent += 1;
            }
        }
        while let Ok(v) = rx.try_recv() {
            if v["heard"]["samples"].as_u64().is_some_and(|n| n >= 16_000) {
                heard_there = Some(v["heard"].clone());
            }
        }
    }
    drop(child.0.stdin.take());

    let selected = selected.expect("aiortc's checks selected an address");
    assert!(selected.ip().is_loopback());
    let suite = suite.expect("DTLS gave keys");
    eprintln!("negotiated {suite:?}");
    assert!(
        heard_here.len() >= 16_000,
        "heard {} samples",
        heard_here.len()
    );
    let last_second = &heard_here[heard_here.len() - 8000..];
    let share = switchboard::media::level::tone_share(last_second, 1000.0, 8000.0);
    let dbfs = switchboard::media::level::rms_dbfs(last_second);
    assert!(share > 0.8, "1 kHz share {share}");
    assert!((-20.0..-9.0).contains(&dbfs), "level {dbfs} dBFS");
    let there = heard_there.expect("aiortc reported what it heard");
    let share = there["share_440"].as_f64().unwrap();
    let dbfs = there["dbfs"].as_f64().unwrap();
    assert!(share > 0.8, "aiortc heard 440 Hz at share {share}");
    assert!((-20.0..-9.0).contains(&dbfs), "aiortc heard {dbfs} dBFS");
}
