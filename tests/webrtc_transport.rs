//! The WebRTC transport core against a DTLS implementation we did not write: `openssl
//! s_client` and `s_server` do a DTLS 1.2 handshake with use_srtp over loopback UDP with a
//! small driver of [`WebRtcTransport`], and the SRTP keys openssl exports must be the ones our
//! transport derived.
//!
//! openssl speaks no ICE, so the driver feeds the transport one nominated check on openssl's
//! behalf from openssl's address, as a browser's check would come.
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
