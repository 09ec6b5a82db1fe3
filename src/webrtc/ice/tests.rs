#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::webrtc::stun::Builder;

fn creds(ufrag: &str, pwd: &str) -> Credentials {
    Credentials {
        ufrag: ufrag.into(),
        pwd: pwd.into(),
    }
}

fn agent(now: Instant) -> IceLite {
    IceLite::new(
        creds("ours", "our-password-of-22-chars"),
        creds("them", "their-password-22-chars"),
        now,
        DEFAULT_CHECK_TIMEOUT,
    )
}

/// A check as a full controlling agent sends it (RFC 8445 §7.2.2).
fn check(username: &str, pwd: &str, nominate: bool) -> Vec<u8> {
    let mut b = Builder::new(Class::Request, BINDING, &[7; 12])
        .username(username.as_bytes())
        .priority(0x6e00_01ff)
        .ice_controlling(42);
    if nominate {
        b = b.use_candidate();
    }
    b.integrity(pwd.as_bytes()).fingerprint().finish()
}

fn good(nominate: bool) -> Vec<u8> {
    check("ours:them", "our-password-of-22-chars", nominate)
}

const A: &str = "192.0.2.10:5000";
const B: &str = "198.51.100.7:6000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn credentials_have_rfc8445_lengths_and_alphabet() {
    let c = Credentials::random().unwrap();
    assert_eq!(c.ufrag.len(), UFRAG_LEN);
    assert_eq!(c.pwd.len(), PWD_LEN);
    assert!(c.ufrag.len() >= 4 && c.pwd.len() >= 22);
    for ch in c.ufrag.bytes().chain(c.pwd.bytes()) {
        assert!(ICE_CHARS.contains(&ch), "{ch}");
    }
    assert_ne!(Credentials::random().unwrap(), c);
}

#[test]
fn valid_check_gets_an_authenticated_success_with_the_source_address() {
    let now = Instant::now();
    let mut ice = agent(now);
    let resp = ice.handle_stun(now, addr(A), &good(false)).unwrap();
    let m = Message::parse(&resp).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(m.transaction_id(), [7; 12]);
    assert_eq!(m.xor_mapped_address(), Some(addr(A)));
    assert!(m.check_integrity(b"our-password-of-22-chars"));
    assert!(m.check_fingerprint());
    assert_eq!(ice.counters().checks_ok, 1);
    // Validated but not nominated: no selection yet.
    assert!(ice.is_validated(addr(A)));
    assert_eq!(ice.selected(), None);
    assert_eq!(ice.poll_event(), None);
}

#[test]
fn latest_nominated_address_wins() {
    let now = Instant::now();
    let mut ice = agent(now);
    ice.handle_stun(now, addr(A), &good(true)).unwrap();
    assert_eq!(ice.poll_event(), Some(IceEvent::Selected(addr(A))));
    // The same nomination again is no news.
    ice.handle_stun(now, addr(A), &good(true)).unwrap();
    assert_eq!(ice.poll_event(), None);
    ice.handle_stun(now, addr(B), &good(true)).unwrap();
    assert_eq!(ice.poll_event(), Some(IceEvent::Selected(addr(B))));
    assert_eq!(ice.selected(), Some(addr(B)));
}

#[test]
fn wrong_username_or_password_is_answered_401_without_integrity() {
    let now = Instant::now();
    let mut ice = agent(now);
    for bad in [
        check("ours:them", "not-the-password-at-all", true),
        check("other:them", "our-password-of-22-chars", true),
        check("ours:other", "our-password-of-22-chars", true),
        check("ours", "our-password-of-22-chars", true),
    ] {
        let resp = ice.handle_stun(now, addr(A), &bad).unwrap();
        let m = Message::parse(&resp).unwrap();
        assert_eq!(m.class(), Class::Error);
        assert_eq!(m.error_code().map(|e| e.0), Some(401));
        assert!(m.get(crate::webrtc::stun::ATTR_MESSAGE_INTEGRITY).is_none());
    }
    assert_eq!(ice.counters().unauthorized, 4);
    assert_eq!(ice.counters().checks_ok, 0);
    assert!(!ice.is_validated(addr(A)));
    assert_eq!(ice.poll_event(), None);
}

#[test]
fn missing_username_or_integrity_is_400() {
    let now = Instant::now();
    let mut ice = agent(now);
    let no_user = Builder::new(Class::Request, BINDING, &[1; 12])
        .integrity(b"our-password-of-22-chars")
        .finish();
    let no_mi = Builder::new(Class::Request, BINDING, &[1; 12])
        .username(b"ours:them")
        .finish();
    for b in [no_user, no_mi] {
        let m_bytes = ice.handle_stun(now, addr(A), &b).unwrap();
        let m = Message::parse(&m_bytes).unwrap();
        assert_eq!(m.error_code().map(|e| e.0), Some(400));
    }
    assert_eq!(ice.counters().bad_request, 2);
}

#[test]
fn bad_fingerprint_responses_and_indications_are_dropped() {
    let now = Instant::now();
    let mut ice = agent(now);
    let mut bad_fp = good(true);
    let n = bad_fp.len();
    bad_fp[n - 1] ^= 1;
    let response = Builder::new(Class::Success, BINDING, &[1; 12]).finish();
    let indication = Builder::new(Class::Indication, BINDING, &[1; 12]).finish();
    for b in [bad_fp, response, indication, vec![0, 1, 2]] {
        assert_eq!(ice.handle_stun(now, addr(A), &b), None);
    }
    assert_eq!(ice.counters().dropped, 4);
    assert_eq!(ice.selected(), None);
}

#[test]
fn a_peer_claiming_controlled_gets_487() {
    let now = Instant::now();
    let mut ice = agent(now);
    let b = Builder::new(Class::Request, BINDING, &[1; 12])
        .username(b"ours:them")
        .ice_controlled(1)
        .use_candidate()
        .integrity(b"our-password-of-22-chars")
        .fingerprint()
        .finish();
    let resp = ice.handle_stun(now, addr(A), &b).unwrap();
    assert_eq!(
        Message::parse(&resp).unwrap().error_code().map(|e| e.0),
        Some(487)
    );
    assert_eq!(ice.selected(), None);
}

#[test]
fn no_valid_check_before_the_deadline_fails() {
    let now = Instant::now();
    let mut ice = agent(now);
    assert_eq!(ice.poll_timeout(), Some(now + DEFAULT_CHECK_TIMEOUT));
    // A wrong check does not count as one.
    ice.handle_stun(
        now,
        addr(A),
        &check("ours:them", "wrong-password-xxxxxxxx", true),
    );
    ice.handle_timeout(now + DEFAULT_CHECK_TIMEOUT - Duration::from_millis(1));
    assert_eq!(ice.poll_event(), None);
    ice.handle_timeout(now + DEFAULT_CHECK_TIMEOUT);
    assert_eq!(ice.poll_event(), Some(IceEvent::Failed));
    assert!(ice.is_stopped());
    // After failing, even a good check is not answered.
    assert_eq!(
        ice.handle_stun(now + DEFAULT_CHECK_TIMEOUT, addr(A), &good(true)),
        None
    );
    assert_eq!(ice.poll_timeout(), None);
}

#[test]
fn consent_is_lost_30_s_after_the_last_check_from_the_selected_address() {
    let t0 = Instant::now();
    let mut ice = agent(t0);
    ice.handle_stun(t0, addr(A), &good(true)).unwrap();
    assert_eq!(ice.poll_event(), Some(IceEvent::Selected(addr(A))));
    // Consent refreshed at 10 s by a plain (unnominated) check.
    let t1 = t0 + Duration::from_secs(10);
    ice.handle_stun(t1, addr(A), &good(false)).unwrap();
    // Checks from another address do not refresh the selected one's consent.
    ice.handle_stun(t1 + Duration::from_secs(5), addr(B), &good(false))
        .unwrap();
    assert_eq!(ice.poll_timeout(), Some(t1 + CONSENT_TIMEOUT));
    ice.handle_timeout(t1 + CONSENT_TIMEOUT - Duration::from_millis(1));
    assert_eq!(ice.poll_event(), None);
    ice.handle_timeout(t1 + CONSENT_TIMEOUT);
    assert_eq!(ice.poll_event(), Some(IceEvent::ConsentLost));
    assert!(ice.is_stopped());
}

#[test]
fn a_check_arriving_after_consent_expired_does_not_revive_it() {
    let t0 = Instant::now();
    let mut ice = agent(t0);
    ice.handle_stun(t0, addr(A), &good(true)).unwrap();
    ice.poll_event();
    assert_eq!(
        ice.handle_stun(t0 + CONSENT_TIMEOUT, addr(A), &good(true)),
        None
    );
    assert_eq!(ice.poll_event(), Some(IceEvent::ConsentLost));
}

#[test]
fn addressed_ufrag_is_the_part_before_the_colon_of_a_request() {
    assert_eq!(addressed_ufrag(&good(true)), Some(&b"ours"[..]));
    let no_colon = Builder::new(Class::Request, BINDING, &[1; 12])
        .username(b"ours")
        .finish();
    assert_eq!(addressed_ufrag(&no_colon), None);
    let response = Builder::new(Class::Success, BINDING, &[1; 12])
        .username(b"ours:them")
        .finish();
    assert_eq!(addressed_ufrag(&response), None);
    let no_username = Builder::new(Class::Request, BINDING, &[1; 12]).finish();
    assert_eq!(addressed_ufrag(&no_username), None);
    assert_eq!(addressed_ufrag(&[0, 1, 0]), None);
}
