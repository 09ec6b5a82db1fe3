//! SDES keys in offer/answer (RFC 4568) under each `[rtp] srtp` policy.

use super::crlf;
use crate::rtp::srtp::{CryptoAttr, MasterKey, Suite};
use crate::sdp::{parse, LocalSession, NegotiationError, SessionDescription, SrtpPolicy};

fn local(policy: SrtpPolicy) -> LocalSession {
    LocalSession::new(42, "192.0.2.10:40000".parse().unwrap()).with_srtp(policy)
}

/// A peer's `a=crypto` value with a fresh key of `suite`.
fn crypto(tag: u32, suite: Suite) -> String {
    CryptoAttr::new(tag, MasterKey::random(suite).unwrap()).to_string()
}

fn offer(proto: &str, attrs: &str) -> SessionDescription {
    let text = format!(
        "v=0\no=- 9 9 IN IP4 198.51.100.1\ns=-\nc=IN IP4 198.51.100.1\nt=0 0\n\
         m=audio 20000 {proto} 0 101\na=rtpmap:101 telephone-event/8000\n{attrs}"
    );
    parse(crlf(&text).as_bytes()).unwrap()
}

fn answer_cryptos(sdp: &SessionDescription) -> Vec<CryptoAttr> {
    sdp.media[0]
        .attributes
        .values("crypto")
        .map(|v| CryptoAttr::parse(v).unwrap())
        .collect()
}

#[test]
fn a_savp_offer_is_answered_in_kind_with_our_key_for_its_suite() {
    for suite in [
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::AeadAes128Gcm,
    ] {
        let theirs = crypto(7, suite);
        let a = local(SrtpPolicy::Optional)
            .answer(&offer("RTP/SAVP", &format!("a=crypto:{theirs}\n")))
            .unwrap();
        assert_eq!(a.sdp.media[0].proto, "RTP/SAVP");
        let ours = answer_cryptos(&a.sdp);
        assert_eq!(ours.len(), 1, "{}", a.sdp);
        assert_eq!(ours[0].tag, 7);
        assert_eq!(ours[0].key.suite(), suite);
        let keys = a.media.srtp.expect("SRTP agreed");
        assert_eq!(keys.theirs, CryptoAttr::parse(&theirs).unwrap());
        assert_eq!(keys.ours, ours[0].key);
        assert_ne!(keys.ours, keys.theirs.key, "our key is our own");
    }
}

#[test]
fn the_first_usable_crypto_line_wins() {
    let attrs = format!(
        "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{}\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!\na=crypto:{}\na=crypto:{}\n",
        "A".repeat(62) + "==",
        crypto(3, Suite::AesCm128HmacSha1_32),
        crypto(4, Suite::AesCm128HmacSha1_80),
    );
    let a = local(SrtpPolicy::Optional)
        .answer(&offer("RTP/SAVP", &attrs))
        .unwrap();
    let ours = answer_cryptos(&a.sdp);
    assert_eq!(
        (ours[0].tag, ours[0].key.suite()),
        (3, Suite::AesCm128HmacSha1_32)
    );
}

#[test]
fn a_savp_offer_without_a_usable_key_gets_488_naming_the_suites() {
    let attrs = format!(
        "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{}\na=crypto:2 F8_128_HMAC_SHA1_80 inline:{}\n",
        "A".repeat(62) + "==",
        "A".repeat(40),
    );
    let err = local(SrtpPolicy::Optional)
        .answer(&offer("RTP/SAVP", &attrs))
        .unwrap_err();
    assert_eq!(
        err,
        NegotiationError::NoUsableCrypto("AES_256_CM_HMAC_SHA1_80, F8_128_HMAC_SHA1_80".into())
    );
    let err = local(SrtpPolicy::Optional)
        .answer(&offer("RTP/SAVP", ""))
        .unwrap_err();
    assert_eq!(err, NegotiationError::SrtpRequired);
}

#[test]
fn a_plain_offer_never_gets_srtp() {
    for policy in [SrtpPolicy::Optional, SrtpPolicy::Off] {
        let a = local(policy).answer(&offer("RTP/AVP", "")).unwrap();
        assert_eq!(a.sdp.media[0].proto, "RTP/AVP");
        assert!(a.media.srtp.is_none());
        assert!(answer_cryptos(&a.sdp).is_empty());
    }
}

#[test]
fn keys_on_a_plain_profile_are_best_effort_srtp_unless_off() {
    let attrs = format!("a=crypto:{}\n", crypto(1, Suite::AesCm128HmacSha1_80));
    let a = local(SrtpPolicy::Optional)
        .answer(&offer("RTP/AVP", &attrs))
        .unwrap();
    assert_eq!(a.sdp.media[0].proto, "RTP/AVP");
    assert!(a.media.srtp.is_some());
    assert_eq!(answer_cryptos(&a.sdp).len(), 1);

    let a = local(SrtpPolicy::Off)
        .answer(&offer("RTP/AVP", &attrs))
        .unwrap();
    assert!(a.media.srtp.is_none());
    assert!(answer_cryptos(&a.sdp).is_empty());
}

#[test]
fn required_refuses_a_plain_offer() {
    let err = local(SrtpPolicy::Required)
        .answer(&offer("RTP/AVP", ""))
        .unwrap_err();
    assert_eq!(err, NegotiationError::SrtpRequired);
    // Best-effort keys on a plain profile satisfy it.
    let attrs = format!("a=crypto:{}\n", crypto(1, Suite::AeadAes128Gcm));
    let a = local(SrtpPolicy::Required)
        .answer(&offer("RTP/AVP", &attrs))
        .unwrap();
    assert!(a.media.srtp.is_some());
}

#[test]
fn off_refuses_an_srtp_only_offer_and_takes_a_plain_stream_beside_it() {
    let attrs = format!("a=crypto:{}\n", crypto(1, Suite::AesCm128HmacSha1_80));
    let err = local(SrtpPolicy::Off)
        .answer(&offer("RTP/SAVP", &attrs))
        .unwrap_err();
    assert_eq!(
        err,
        NegotiationError::UnsupportedTransport("RTP/SAVP".into())
    );

    // Two streams, SRTP first: a session that cannot use the first answers the second.
    let text = format!(
        "v=0\no=- 1 1 IN IP4 198.51.100.1\ns=-\nc=IN IP4 198.51.100.1\nt=0 0\n\
         m=audio 20000 RTP/SAVP 0\n{attrs}m=audio 20002 RTP/AVP 0\n"
    );
    let two = parse(crlf(&text).as_bytes()).unwrap();
    let a = local(SrtpPolicy::Off).answer(&two).unwrap();
    assert_eq!((a.sdp.media[0].port, a.sdp.media[1].port), (0, 40000));
    assert!(a.media.srtp.is_none());
    let a = local(SrtpPolicy::Optional).answer(&two).unwrap();
    assert_eq!((a.sdp.media[0].port, a.sdp.media[1].port), (40000, 0));
    assert!(a.media.srtp.is_some());
}

#[test]
fn a_repeated_offer_keeps_our_key_and_the_session_version() {
    let o = offer(
        "RTP/SAVP",
        &format!("a=crypto:{}\n", crypto(1, Suite::AesCm128HmacSha1_80)),
    );
    let mut session = local(SrtpPolicy::Optional);
    let first = session.answer(&o).unwrap();
    let again = session.answer(&o).unwrap();
    assert_eq!(first.sdp, again.sdp);
    assert_eq!(first.media.srtp, again.media.srtp);
    // A re-offer with a new key of the same suite: ours stays, theirs changes.
    let o2 = offer(
        "RTP/SAVP",
        &format!("a=crypto:{}\n", crypto(1, Suite::AesCm128HmacSha1_80)),
    );
    let third = session.answer(&o2).unwrap();
    let (k1, k3) = (first.media.srtp.unwrap(), third.media.srtp.unwrap());
    assert_eq!(k1.ours, k3.ours);
    assert_ne!(k1.theirs, k3.theirs);
}

#[test]
fn required_offers_savp_with_every_suite_and_takes_the_answered_tag() {
    let mut caller = local(SrtpPolicy::Required);
    let o = caller.offer();
    assert_eq!(o.media[0].proto, "RTP/SAVP");
    let offered = answer_cryptos(&o);
    let suites: Vec<Suite> = offered.iter().map(|c| c.key.suite()).collect();
    assert_eq!(
        suites,
        [
            Suite::AesCm128HmacSha1_80,
            Suite::AesCm128HmacSha1_32,
            Suite::AeadAes128Gcm
        ]
    );
    assert_eq!(offered.iter().map(|c| c.tag).collect::<Vec<_>>(), [1, 2, 3]);

    // A callee that speaks SRTP answers one of them.
    let mut callee = LocalSession::new(2, "192.0.2.2:20000".parse().unwrap());
    let wire = parse(o.to_string().as_bytes()).unwrap();
    let answer = callee.answer(&wire).unwrap();
    let callee_keys = answer.media.srtp.clone().expect("callee agreed SRTP");
    assert_eq!(callee_keys.theirs, offered[0]);
    let ours = caller
        .accept_answer(&parse(answer.sdp.to_string().as_bytes()).unwrap())
        .unwrap()
        .srtp
        .expect("caller agreed SRTP");
    assert_eq!(ours.ours, offered[0].key);
    assert_eq!(ours.theirs.key, callee_keys.ours);

    // An answer without keys to an SRTP offer is refused.
    let mut caller = local(SrtpPolicy::Required);
    caller.offer();
    let plain = crlf(
        "v=0\no=- 3 3 IN IP4 192.0.2.3\ns=-\nc=IN IP4 192.0.2.3\nt=0 0\nm=audio 30000 RTP/SAVP 0\n",
    );
    assert_eq!(
        caller
            .accept_answer(&parse(plain.as_bytes()).unwrap())
            .unwrap_err(),
        NegotiationError::SrtpRequired
    );
}

#[test]
fn optional_offers_plain_rtp() {
    let o = local(SrtpPolicy::Optional).offer();
    assert_eq!(o.media[0].proto, "RTP/AVP");
    assert!(answer_cryptos(&o).is_empty());
}
