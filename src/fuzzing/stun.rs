//! STUN and a WebRTC leg's intake: the STUN parser, the ICE-lite agent and the transport
//! that sorts datagrams and hands DTLS records to the handshake.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::webrtc::ice::{Credentials, IceLite};
use crate::webrtc::stun::{Builder, Class, Message, ATTR_MESSAGE_INTEGRITY, BINDING};
use crate::webrtc::{Certificate, DtlsRole, TransportConfig, WebRtcTransport};

const PASSWORD: &str = "fuzz-password-0123456789";

fn creds(ufrag: &str, pwd: &str) -> Credentials {
    Credentials {
        ufrag: ufrag.into(),
        pwd: pwd.into(),
    }
}

/// The agent's answer to `request`: a Binding response with the request's transaction id,
/// a success only for a request that carries our password's MESSAGE-INTEGRITY.
fn check_answer(request: &[u8], answer: Option<Vec<u8>>) {
    let Some(answer) = answer else {
        return;
    };
    let req = Message::parse(request).unwrap_or_else(|e| panic!("answered a non-message: {e}"));
    let resp = Message::parse(&answer).unwrap_or_else(|e| panic!("our answer is not STUN: {e}"));
    assert_eq!(resp.method(), BINDING);
    assert_eq!(resp.transaction_id(), req.transaction_id());
    assert!(resp.check_fingerprint());
    match resp.class() {
        Class::Success => {
            assert!(req.check_integrity(PASSWORD.as_bytes()));
            assert!(resp.check_integrity(PASSWORD.as_bytes()));
        }
        Class::Error => assert!(resp.error_code().is_some()),
        other => panic!("answered with {other:?}"),
    }
}

/// The first byte picks the mode:
/// - even: the rest is one datagram: parsed (accessors never panic, an address decoded is
///   the one a rebuild encodes), handed to an ICE-lite agent (whose answer is checked as
///   above) and then to a transport from an address that passed a check;
/// - odd: the rest is a USERNAME, signed with our password: the agent answers 401 unless it
///   is exactly `ours:them`.
pub fn stun(data: &[u8]) {
    let [select, rest @ ..] = data else {
        return;
    };
    let now = Instant::now();
    let from: SocketAddr = SocketAddr::from(([192, 0, 2, 1], 5000));
    let mut agent = IceLite::new(
        creds("ours", PASSWORD),
        creds("them", "them-password-0123456789"),
        now,
        Duration::from_secs(30),
    );
    if select % 2 == 1 {
        let request = Builder::new(Class::Request, BINDING, &[1; 12])
            .username(rest)
            .integrity(PASSWORD.as_bytes())
            .fingerprint()
            .finish();
        let answer = agent.handle_stun(now, from, &request);
        let resp = answer.as_deref().map(Message::parse);
        let Some(Ok(resp)) = resp else {
            panic!("a signed check went unanswered");
        };
        let ok = rest == b"ours:them";
        assert_eq!(resp.class() == Class::Success, ok);
        if !ok {
            assert_eq!(resp.error_code().map(|e| e.0), Some(401));
            assert!(resp.get(ATTR_MESSAGE_INTEGRITY).is_none());
        }
        return;
    }

    if let Ok(m) = Message::parse(rest) {
        let _ = (m.username(), m.priority(), m.software(), m.use_candidate());
        let _ = (m.ice_controlling(), m.ice_controlled(), m.error_code());
        let _ = (
            m.check_integrity(PASSWORD.as_bytes()),
            m.check_fingerprint(),
        );
        if let Some(addr) = m.xor_mapped_address() {
            let again = Builder::new(m.class(), m.method(), &m.transaction_id())
                .xor_mapped_address(addr)
                .finish();
            assert_eq!(
                Message::parse(&again)
                    .ok()
                    .and_then(|a| a.xor_mapped_address()),
                Some(addr)
            );
        }
    }
    let answer = agent.handle_stun(now, from, rest);
    check_answer(rest, answer);

    static CERT: OnceLock<Option<std::sync::Arc<Certificate>>> = OnceLock::new();
    let Some(cert) = CERT.get_or_init(|| Certificate::process().ok()).clone() else {
        return;
    };
    let config = TransportConfig::new(
        creds("ours", PASSWORD),
        creds("them", "them-password-0123456789"),
        DtlsRole::Server,
        cert.fingerprint(),
        cert,
    );
    let Ok(mut transport) = WebRtcTransport::new(config, now) else {
        return;
    };
    let check = Builder::new(Class::Request, BINDING, &[2; 12])
        .username(b"ours:them")
        .use_candidate()
        .integrity(PASSWORD.as_bytes())
        .fingerprint()
        .finish();
    transport.handle_datagram(now, from, &check);
    transport.handle_datagram(now, from, rest);
    transport.handle_timeout(now + Duration::from_secs(1));
    for _ in 0..64 {
        let Some(t) = transport.poll_transmit() else {
            break;
        };
        assert_eq!(
            t.to, from,
            "everything goes back to the one checked address"
        );
    }
    let c = transport.counters();
    let sorted = c.ice.checks_ok
        + c.ice.bad_request
        + c.ice.unauthorized
        + c.ice.role_conflict
        + c.ice.dropped
        + c.dtls_accepted
        + c.dtls_unvalidated
        + c.dtls_malformed
        + c.not_ours
        + c.after_end;
    assert_eq!(sorted, 2, "every datagram is counted once: {c:?}");
}
