//! A WebRTC caller written for the tests, on loopback: it offers DTLS-SRTP with ICE as a
//! browser does, sends the connectivity check a browser's ICE agent would (or a wrong one),
//! runs the DTLS client side of the handshake with the crate's DTLS endpoint (over dimpl,
//! so the server's handshake is checked against another instance, not against itself only),
//! and protects and opens SRTP with the keys it exported.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use switchboard::rtp::srtp::{CryptoAttr, SrtpSession};
use switchboard::webrtc::dtls::{DtlsEndpoint, DtlsEvent};
use switchboard::webrtc::stun::{Builder, Class, Message, BINDING};
use switchboard::webrtc::{demux, Certificate, Demux, DtlsRole, Fingerprint, SrtpKeys};

pub struct WebRtcPeer {
    pub sock: UdpSocket,
    cert: Certificate,
    ufrag: String,
    pwd: String,
    /// The server's, from its answer.
    remote_ufrag: String,
    remote_pwd: String,
    remote_fp: Option<Fingerprint>,
    /// The server's media address, from its answer's candidate.
    pub server: Option<SocketAddr>,
    pub keys: Option<SrtpKeys>,
    tid: u8,
}

impl WebRtcPeer {
    pub fn new() -> WebRtcPeer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        WebRtcPeer {
            sock,
            cert: Certificate::generate().unwrap(),
            ufrag: "peer".into(),
            pwd: "peerpasswordpeerpassword".into(),
            remote_ufrag: String::new(),
            remote_pwd: String::new(),
            remote_fp: None,
            server: None,
            keys: None,
            tid: 0,
        }
    }

    /// A browser's audio offer with our credentials; `fingerprint` stands in for ours when
    /// given (to offer one the handshake will not match).
    pub fn offer(&self, fingerprint: Option<&str>) -> String {
        let fp = fingerprint.map_or_else(|| self.cert.fingerprint().to_string(), str::to_owned);
        let port = self.sock.local_addr().unwrap().port();
        [
            "v=0".to_string(),
            "o=- 1 2 IN IP4 127.0.0.1".into(),
            "s=-".into(),
            "t=0 0".into(),
            "a=group:BUNDLE 0".into(),
            "m=audio 9 UDP/TLS/RTP/SAVPF 0 126".into(),
            "c=IN IP4 0.0.0.0".into(),
            format!("a=candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host"),
            format!("a=ice-ufrag:{}", self.ufrag),
            format!("a=ice-pwd:{}", self.pwd),
            format!("a=fingerprint:{fp}"),
            "a=setup:actpass".into(),
            "a=mid:0".into(),
            "a=sendrecv".into(),
            "a=rtcp-mux".into(),
            "a=rtpmap:0 PCMU/8000".into(),
            "a=rtpmap:126 telephone-event/8000".into(),
        ]
        .iter()
        .map(|l| format!("{l}\r\n"))
        .collect()
    }

    /// Reads the server's credentials, fingerprint and candidate from its answer.
    pub fn accept(&mut self, answer: &str) {
        for line in answer.lines() {
            if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                self.remote_ufrag = v.trim().into();
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                self.remote_pwd = v.trim().into();
            } else if let Some(v) = line.strip_prefix("a=fingerprint:") {
                self.remote_fp = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("a=candidate:") {
                let f: Vec<&str> = v.split_whitespace().collect();
                self.server = Some(format!("{}:{}", f[4], f[5]).parse().unwrap());
            }
        }
        assert!(
            self.server.is_some() && self.remote_fp.is_some(),
            "{answer}"
        );
    }

    /// Sends a nominating connectivity check, with the right password or a wrong one; the
    /// answer's class and error code, or None when nothing came back in time.
    pub fn check(&mut self, right: bool) -> Option<(Class, Option<u16>)> {
        self.tid += 1;
        let username = format!("{}:{}", self.remote_ufrag, self.ufrag);
        let key = if right {
            self.remote_pwd.clone()
        } else {
            "not-the-password-at-all".into()
        };
        let req = Builder::new(Class::Request, BINDING, &[self.tid; 12])
            .username(username.as_bytes())
            .priority(2130706431)
            .ice_controlling(7)
            .use_candidate()
            .integrity(key.as_bytes())
            .fingerprint()
            .finish();
        let server = self.server.unwrap();
        self.sock.send_to(&req, server).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            if let Ok(m) = Message::parse(&buf[..n]) {
                if m.transaction_id() == [self.tid; 12] {
                    return Some((m.class(), m.error_code().map(|(c, _)| c)));
                }
            }
        }
        None
    }

    /// Runs the DTLS client handshake with the server; its keys, or why there are none.
    pub fn handshake(&mut self, within: Duration) -> Result<SrtpKeys, String> {
        let server = self.server.unwrap();
        let mut dtls = DtlsEndpoint::new(
            &self.cert,
            DtlsRole::Client,
            self.remote_fp.unwrap(),
            within,
            Instant::now(),
        )
        .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            dtls.handle_timeout(Instant::now());
            while let Some(out) = dtls.poll_transmit() {
                self.sock.send_to(&out, server).unwrap();
            }
            if let Some(e) = dtls.poll_event() {
                match e {
                    DtlsEvent::Connected(keys) => {
                        self.keys = Some(keys.clone());
                        return Ok(keys);
                    }
                    DtlsEvent::Failed(why) => return Err(why.to_string()),
                }
            }
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                if demux(&buf[..n]) == Demux::Dtls {
                    dtls.handle_packet(Instant::now(), &buf[..n]);
                }
            }
        }
        Err("the handshake did not finish in time".into())
    }

    /// The SRTP session for the exported keys.
    pub fn srtp(&self) -> SrtpSession {
        let k = self.keys.as_ref().expect("keys from the handshake");
        SrtpSession::new(&k.local, &CryptoAttr::new(1, k.remote.clone())).unwrap()
    }
}
