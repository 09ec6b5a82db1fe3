#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The transport against a peer made of a dimpl endpoint and hand-built ICE checks, in
//! virtual time.

use std::sync::Arc;

use dimpl::{Dtls, DtlsCertificate, Output, SrtpProfile};

use super::*;
use crate::rtp::srtp::SrtpSession;
use crate::webrtc::dtls::suite_of;
use crate::webrtc::ice::CONSENT_TIMEOUT;
use crate::webrtc::stun::{Builder, Class, Message, BINDING};

const PEER: &str = "192.0.2.50:40000";
const STRANGER: &str = "203.0.113.9:40000";
const STEP: Duration = Duration::from_millis(10);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ours() -> Credentials {
    Credentials {
        ufrag: "lite".into(),
        pwd: "lite-password-0123456789".into(),
    }
}

fn theirs() -> Credentials {
    Credentials {
        ufrag: "full".into(),
        pwd: "full-password-0123456789".into(),
    }
}

/// The browser side: a dimpl endpoint in the other role and the ICE checks it sends.
struct Peer {
    dtls: Dtls,
    addr: SocketAddr,
    role: DtlsRole,
    connected: bool,
    peer_cert: Option<Vec<u8>>,
    keying: Option<(Vec<u8>, SrtpProfile)>,
    next_txid: u8,
}

impl Peer {
    fn new(role: DtlsRole, cert: &Certificate, now: Instant) -> Peer {
        let config = dimpl::Config::builder()
            .with_crypto_provider(dimpl::crypto::rust_crypto::default_provider())
            .build()
            .unwrap();
        let dc = DtlsCertificate {
            certificate: cert.der().to_vec(),
            private_key: cert.private_key_der().to_vec(),
        };
        let mut dtls = Dtls::new_12(Arc::new(config), dc, now);
        dtls.set_active(role == DtlsRole::Client);
        Peer {
            dtls,
            addr: addr(PEER),
            role,
            connected: false,
            peer_cert: None,
            keying: None,
            next_txid: 0,
        }
    }

    fn check(&mut self, nominate: bool) -> Vec<u8> {
        self.next_txid += 1;
        let mut b = Builder::new(Class::Request, BINDING, &[self.next_txid; 12])
            .username(b"lite:full")
            .priority(1_853_824_767)
            .ice_controlling(0x1234);
        if nominate {
            b = b.use_candidate();
        }
        b.integrity(ours().pwd.as_bytes()).fingerprint().finish()
    }

    /// Advances the peer's clock and collects what it sends.
    fn step(&mut self, now: Instant) -> Vec<Vec<u8>> {
        self.dtls.handle_timeout(now).unwrap();
        self.drain()
    }

    fn receive(&mut self, now: Instant, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.dtls.handle_timeout(now).unwrap();
        // A fatal error is a finding for the test that drives it; the drain shows what.
        let _ = self.dtls.handle_packet(bytes);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 2048];
        for _ in 0..1000 {
            match self.dtls.poll_output(&mut buf) {
                Output::Packet(p) => out.push(p.to_vec()),
                Output::Connected => self.connected = true,
                Output::PeerCert(c) => self.peer_cert = Some(c.to_vec()),
                Output::KeyingMaterial(k, p) => self.keying = Some((k.to_vec(), p)),
                Output::Timeout(_) => break,
                _ => {}
            }
        }
        out
    }

    fn keys(&self) -> SrtpKeys {
        let (material, profile) = self.keying.as_ref().unwrap();
        SrtpKeys::from_exported(suite_of(*profile).unwrap(), material, self.role).unwrap()
    }
}

struct Rig {
    transport: WebRtcTransport,
    peer: Peer,
    now: Instant,
    events: Vec<Event>,
}

impl Rig {
    /// Our transport in `role`, the peer in the other; `peer_fp_in_sdp` is what the peer's
    /// SDP claims (normally its own certificate's).
    fn new(role: DtlsRole, peer_cert_differs: bool) -> Rig {
        let now = Instant::now();
        let our_cert = Certificate::process().unwrap();
        let peer_cert = Certificate::generate().unwrap();
        let claimed = if peer_cert_differs {
            Certificate::generate().unwrap().fingerprint()
        } else {
            peer_cert.fingerprint()
        };
        let config = TransportConfig::new(ours(), theirs(), role, claimed, our_cert);
        let peer_role = match role {
            DtlsRole::Client => DtlsRole::Server,
            DtlsRole::Server => DtlsRole::Client,
        };
        Rig {
            transport: WebRtcTransport::new(config, now).unwrap(),
            peer: Peer::new(peer_role, &peer_cert, now),
            now,
            events: Vec::new(),
        }
    }

    fn feed(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.transport.handle_datagram(self.now, from, bytes);
    }

    /// Delivers what the transport sends: STUN answers are checked, DTLS goes to the peer.
    fn deliver(&mut self) -> usize {
        let mut n = 0;
        while let Some(t) = self.transport.poll_transmit() {
            n += 1;
            assert_eq!(
                t.to, self.peer.addr,
                "everything goes to the checked address"
            );
            match demux(&t.bytes) {
                Demux::Stun => {
                    let m = Message::parse(&t.bytes).unwrap();
                    assert_eq!(m.class(), Class::Success);
                    assert!(m.check_integrity(ours().pwd.as_bytes()));
                }
                Demux::Dtls => {
                    let back = self.peer.receive(self.now, &t.bytes);
                    for b in back {
                        self.feed(self.peer.addr, &b);
                    }
                }
                other => panic!("transport sent {other:?}"),
            }
        }
        while let Some(e) = self.transport.poll_event() {
            self.events.push(e);
        }
        n
    }

    /// One round: the peer's clock and records, then the transport's timers.
    fn round(&mut self) {
        let out = self.peer.step(self.now);
        for b in out {
            self.feed(self.peer.addr, &b);
        }
        self.deliver();
        self.now += STEP;
        if self.transport.poll_timeout().is_some_and(|t| t <= self.now) {
            self.transport.handle_timeout(self.now);
        }
        self.deliver();
    }

    fn nominate(&mut self) {
        let check = self.peer.check(true);
        self.feed(self.peer.addr, &check);
        self.deliver();
    }

    fn connected_keys(&self) -> Option<SrtpKeys> {
        self.events.iter().find_map(|e| match e {
            Event::Connected(k) => Some(k.clone()),
            _ => None,
        })
    }

    /// Rounds until both sides have keys or the transport ended; at most 3 virtual seconds.
    fn handshake(&mut self) {
        for _ in 0..300 {
            if (self.connected_keys().is_some() && self.peer.connected) || self.transport.is_ended()
            {
                return;
            }
            self.round();
        }
    }
}

/// One RTP packet: protected with `a`, unprotected with `b`, the payload back intact.
fn rtp_crosses(a: &mut SrtpSession, b: &mut SrtpSession, seq: u16) {
    let payload: Vec<u8> = (0..160u32)
        .map(|i| (i * 7 + u32::from(seq)) as u8)
        .collect();
    let mut buf = vec![0u8; 12 + payload.len() + 16];
    buf[0] = 0x80;
    buf[1] = 0;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&160u32.to_be_bytes());
    buf[8..12].copy_from_slice(&0xCAFE_F00Du32.to_be_bytes());
    buf[12..12 + payload.len()].copy_from_slice(&payload);
    let n = a.protect_rtp(&mut buf, 12 + payload.len()).unwrap();
    assert_ne!(
        &buf[12..12 + payload.len()],
        &payload[..],
        "payload is encrypted"
    );
    let m = b.unprotect_rtp(&mut buf[..n]).unwrap();
    assert_eq!(m, 12 + payload.len());
    assert_eq!(&buf[12..m], &payload[..]);
}

fn handshake_and_exchange(role: DtlsRole) {
    let mut rig = Rig::new(role, false);
    rig.nominate();
    assert_eq!(rig.events.first(), Some(&Event::Selected(addr(PEER))));
    rig.handshake();
    let Some(ours) = rig.connected_keys() else {
        panic!("transport did not connect: {:?}", rig.events);
    };
    assert!(rig.peer.connected, "peer connected");
    // The peer saw our certificate, the one our SDP fingerprint names.
    let our_fp = Certificate::process().unwrap().fingerprint();
    assert_eq!(
        Fingerprint::of_der(rig.peer.peer_cert.as_deref().unwrap()),
        our_fp
    );
    let theirs = rig.peer.keys();
    assert_eq!(ours.suite, theirs.suite);
    assert!(ours.local == theirs.remote && ours.remote == theirs.local);
    assert!(ours.local != ours.remote);
    let (mut a, mut b) = (ours.session().unwrap(), theirs.session().unwrap());
    rtp_crosses(&mut a, &mut b, 1);
    rtp_crosses(&mut b, &mut a, 1);
    assert!(!rig.transport.is_ended());
    assert_eq!(rig.transport.counters().dtls_malformed, 0);
    assert!(rig.transport.counters().dtls_accepted >= 2);
}

#[test]
fn handshake_as_dtls_server_with_a_dimpl_client_gives_agreeing_keys() {
    handshake_and_exchange(DtlsRole::Server);
}

#[test]
fn handshake_as_dtls_client_with_a_dimpl_server_gives_agreeing_keys() {
    handshake_and_exchange(DtlsRole::Client);
}

#[test]
fn as_client_nothing_is_sent_before_a_nomination() {
    let mut rig = Rig::new(DtlsRole::Client, false);
    let check = rig.peer.check(false);
    rig.feed(rig.peer.addr, &check);
    // Only the STUN answer.
    assert_eq!(rig.deliver(), 1);
    rig.transport
        .handle_timeout(rig.now + Duration::from_secs(2));
    assert!(rig.transport.poll_transmit().is_none());
}

#[test]
fn fingerprint_mismatch_fails_without_keys() {
    for role in [DtlsRole::Server, DtlsRole::Client] {
        let mut rig = Rig::new(role, true);
        rig.nominate();
        rig.handshake();
        assert!(rig.transport.is_ended(), "{role:?}");
        assert!(rig.connected_keys().is_none());
        assert!(
            rig.events.contains(&Event::Failed(FailReason::Handshake(
                HandshakeFailure::FingerprintMismatch
            ))),
            "{role:?}: {:?}",
            rig.events
        );
        assert!(rig.transport.poll_timeout().is_none());
    }
}

#[test]
fn a_handshake_that_never_comes_times_out_at_the_connect_deadline() {
    let mut rig = Rig::new(DtlsRole::Server, false);
    let t0 = rig.now;
    rig.nominate();
    // A later check keeps consent alive past the deadline, so only the handshake can end
    // the leg.
    rig.now = t0 + Duration::from_secs(10);
    let check = rig.peer.check(false);
    rig.feed(rig.peer.addr, &check);
    rig.deliver();
    assert_eq!(
        rig.transport.poll_timeout(),
        Some(t0 + DEFAULT_CONNECT_TIMEOUT)
    );
    rig.transport
        .handle_timeout(t0 + DEFAULT_CONNECT_TIMEOUT - Duration::from_millis(1));
    rig.deliver();
    assert_eq!(rig.events, vec![Event::Selected(addr(PEER))]);
    rig.transport.handle_timeout(t0 + DEFAULT_CONNECT_TIMEOUT);
    rig.deliver();
    assert_eq!(
        rig.events.last(),
        Some(&Event::Failed(FailReason::HandshakeTimeout))
    );
    assert!(rig.transport.is_ended());
    // The leg is over: a late ClientHello is not answered.
    let hello = rig.peer.step(rig.now);
    rig.feed(rig.peer.addr, &hello[0]);
    assert!(rig.transport.poll_transmit().is_none());
    assert_eq!(rig.transport.counters().after_end, 1);
}

#[test]
fn ice_that_never_completes_fails_at_the_check_deadline() {
    let mut rig = Rig::new(DtlsRole::Server, false);
    let t0 = rig.now;
    // A check with the wrong password is answered 401 and does not count.
    let bad = Builder::new(Class::Request, BINDING, &[9; 12])
        .username(b"lite:full")
        .use_candidate()
        .integrity(b"guessed-password-xxxxxxx")
        .fingerprint()
        .finish();
    rig.feed(addr(STRANGER), &bad);
    let t = rig.transport.poll_transmit().unwrap();
    assert_eq!(t.to, addr(STRANGER));
    assert_eq!(
        Message::parse(&t.bytes).unwrap().error_code().map(|e| e.0),
        Some(401)
    );
    assert_eq!(rig.transport.selected(), None);
    assert_eq!(
        rig.transport.poll_timeout(),
        Some(t0 + DEFAULT_CHECK_TIMEOUT)
    );
    rig.transport
        .handle_timeout(t0 + DEFAULT_CHECK_TIMEOUT - Duration::from_millis(1));
    assert_eq!(rig.transport.poll_event(), None);
    rig.transport.handle_timeout(t0 + DEFAULT_CHECK_TIMEOUT);
    assert_eq!(
        rig.transport.poll_event(),
        Some(Event::Failed(FailReason::IceTimeout))
    );
    assert_eq!(rig.transport.counters().ice.unauthorized, 1);
}

#[test]
fn garbage_and_strangers_are_dropped_and_counted_and_the_handshake_still_completes() {
    let mut rig = Rig::new(DtlsRole::Server, false);
    let hello = rig.peer.step(rig.now);
    // A ClientHello from an address that never passed a check.
    rig.feed(addr(STRANGER), &hello[0]);
    rig.nominate();
    // Records that do not frame: a length past the end, a bad version, a bad type.
    let mut long = hello[0].clone();
    long[12] = long[12].wrapping_add(1);
    let mut version = hello[0].clone();
    version[1] = 0x03;
    let mut kind = hello[0].clone();
    kind[0] = 30;
    for g in [long, version, kind, vec![22, 0xFE]] {
        rig.feed(rig.peer.addr, &g);
    }
    // Not STUN, not DTLS: RTP (the tick's business) and an unassigned first byte.
    rig.feed(rig.peer.addr, &[0x80; 20]);
    rig.feed(rig.peer.addr, &[70; 20]);
    assert!(rig.transport.poll_transmit().is_none());
    let c = rig.transport.counters();
    assert_eq!(c.dtls_unvalidated, 1);
    assert_eq!(c.dtls_malformed, 4);
    assert_eq!(c.not_ours, 2);
    assert_eq!(c.dtls_accepted, 0);
    rig.handshake();
    assert!(rig.connected_keys().is_some());
}

#[test]
fn consent_lost_after_connecting_ends_the_transport() {
    let mut rig = Rig::new(DtlsRole::Server, false);
    rig.nominate();
    rig.handshake();
    assert!(rig.connected_keys().is_some());
    // A check 10 s later refreshes consent; then silence.
    rig.now += Duration::from_secs(10);
    let refresh = rig.now;
    let check = rig.peer.check(false);
    rig.feed(rig.peer.addr, &check);
    rig.deliver();
    assert_eq!(
        rig.transport.poll_timeout(),
        Some(refresh + CONSENT_TIMEOUT)
    );
    rig.transport
        .handle_timeout(refresh + CONSENT_TIMEOUT - Duration::from_millis(1));
    assert_eq!(rig.transport.poll_event(), None);
    rig.transport.handle_timeout(refresh + CONSENT_TIMEOUT);
    assert_eq!(rig.transport.poll_event(), Some(Event::ConsentLost));
    assert!(rig.transport.is_ended());
}

#[test]
fn renomination_moves_media_after_connecting() {
    let mut rig = Rig::new(DtlsRole::Server, false);
    rig.nominate();
    rig.handshake();
    assert!(rig.connected_keys().is_some());
    let moved = addr("192.0.2.51:40002");
    let check = rig.peer.check(true);
    rig.feed(moved, &check);
    assert_eq!(rig.transport.poll_transmit().map(|t| t.to), Some(moved));
    assert_eq!(rig.transport.poll_event(), Some(Event::Selected(moved)));
    assert_eq!(rig.transport.selected(), Some(moved));
}

#[test]
fn records_frame_accepts_whole_records_only() {
    let record = |t: u8, len: u16| {
        let mut r = vec![t, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 1];
        r.extend_from_slice(&len.to_be_bytes());
        r.extend(std::iter::repeat_n(0u8, usize::from(len)));
        r
    };
    assert!(records_frame(&record(22, 10)));
    let mut two = record(20, 1);
    two.extend(record(22, 0));
    assert!(records_frame(&two));
    assert!(!records_frame(&[]));
    assert!(!records_frame(&record(24, 1)));
    assert!(!records_frame(&record(19, 1)));
    let r = record(22, 10);
    assert!(!records_frame(&r[..r.len() - 1]));
    assert!(!records_frame(&r[..12]));
}

#[test]
fn a_lost_client_hello_is_sent_again_when_its_timer_fires() {
    let mut rig = Rig::new(DtlsRole::Client, false);
    let check = rig.peer.check(true);
    rig.feed(rig.peer.addr, &check);
    let mut hellos = 0;
    while let Some(t) = rig.transport.poll_transmit() {
        if demux(&t.bytes) == Demux::Dtls {
            // Handshake record, ClientHello.
            assert_eq!((t.bytes[0], t.bytes[13]), (22, 1));
            hellos += 1;
        }
    }
    // That one is lost.
    assert_eq!(hellos, 1);
    let resend = rig.transport.poll_timeout().unwrap();
    assert!(resend > rig.now && resend <= rig.now + Duration::from_secs(3));
    rig.transport
        .handle_timeout(resend - Duration::from_millis(1));
    assert!(rig.transport.poll_transmit().is_none());
    rig.now = resend;
    rig.transport.handle_timeout(resend);
    let again = rig.transport.poll_transmit().unwrap();
    assert_eq!((again.bytes[0], again.bytes[13]), (22, 1));
    let back = rig.peer.receive(rig.now, &again.bytes);
    for b in back {
        rig.feed(rig.peer.addr, &b);
    }
    rig.deliver();
    rig.handshake();
    assert!(rig.connected_keys().is_some(), "{:?}", rig.events);
}

#[test]
fn a_transport_can_move_to_another_thread() {
    fn send<T: Send + 'static>(_: &T) {}
    let rig = Rig::new(DtlsRole::Server, false);
    send(&rig.transport);
    let moved = std::thread::spawn(move || rig.transport.counters())
        .join()
        .unwrap();
    assert_eq!(moved, Counters::default());
}
