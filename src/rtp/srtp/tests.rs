#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    hex(s).try_into().unwrap()
}

/// An RTP packet of `payload_len` bytes with the given sequence number and SSRC.
fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seq as u8)));
    p
}

/// An RTCP receiver report with one report block.
fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x11; 24]);
    p
}

fn key(suite: Suite, seed: u8) -> MasterKey {
    let n = suite.master_key_len() + suite.master_salt_len();
    let bytes: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(7) ^ seed).collect();
    MasterKey::from_bytes(suite, &bytes).unwrap()
}

/// A sender and a receiver that share keys the way an SDES offer and answer set them up.
fn pair(suite: Suite) -> (SrtpSession, SrtpSession) {
    let a = key(suite, 0x5a);
    let b = key(suite, 0xa5);
    let alice = SrtpSession::new(&a, &CryptoAttr::new(1, b.clone())).unwrap();
    let bob = SrtpSession::new(&b, &CryptoAttr::new(1, a)).unwrap();
    (alice, bob)
}

fn protect(s: &mut SrtpSession, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + 64, 0);
    let n = s.protect_rtp(&mut buf, plain.len()).unwrap();
    buf.truncate(n);
    buf
}

fn protect_rtcp(s: &mut SrtpSession, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + 64, 0);
    let n = s.protect_rtcp(&mut buf, plain.len()).unwrap();
    buf.truncate(n);
    buf
}

fn unprotect(s: &mut SrtpSession, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    let n = s.unprotect_rtp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn unprotect_rtcp(s: &mut SrtpSession, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    let n = s.unprotect_rtcp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

// ---- RFC test vectors ----

#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let cipher = Aes128Enc::new(&arr::<16>("2B7E151628AED2A6ABF7158809CF4F3C").into());
    let salt = arr::<14>("F0F1F2F3F4F5F6F7F8F9FAFBFCFD");
    let iv = cm_iv(&salt, 0, 0);
    assert_eq!(iv, arr::<16>("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
    let mut stream = vec![0u8; 16 * 0xff02];
    aes_cm_xor(&cipher, &iv, &mut stream);
    assert_eq!(
        stream[..48],
        hex("E03EAD0935C95E80E166B16DD92B4EB4
             D23513162B02D0F72A43A2FE4A5F97AB
             41E95B3BB0A2E8DD477901E4FCA894C0")
    );
    assert_eq!(
        stream[16 * 0xfeff..],
        hex("EC8CDF7398607CB0F2D21675EA9EA1E4
             362B7C3C6773516318A077D7FC5073AE
             6A2CC3787889374FBEB4C81B17BA6C44")
    );
}

#[test]
fn rfc6188_aes_256_cm_prf_key_derivation() {
    let master = Aes256Enc::new(
        &arr::<32>("F0F04914B513F2763A1B1FA130F10E2998F6F6E43E4309D1E622A0E332B9F1B6").into(),
    );
    let salt = arr::<14>("3B04803DE51EE7C96423AB5B78D2");
    let mut enc = [0u8; 32];
    derive(&master, &salt, LABEL_ENCRYPTION, &mut enc);
    assert_eq!(
        enc,
        arr::<32>("5BA1064E30EC51613CAD926C5A28EF731EC7FB397F70A960653CAF06554CD8C4")
    );
    let mut s = [0u8; 14];
    derive(&master, &salt, LABEL_SALT, &mut s);
    assert_eq!(s, arr::<14>("FA31791685CA444A9E07C6C64E93"));
}

#[test]
fn aead_aes_256_gcm_round_trips_rtp_and_rtcp_and_stays_out_of_sdes() {
    let suite = Suite::AeadAes256Gcm;
    assert_eq!(suite.master_key_len(), 32);
    assert_eq!(suite.master_salt_len(), 12);
    assert_eq!(suite.rtp_overhead(), 16);
    assert!(!Suite::ALL.contains(&suite));
    assert_eq!(Suite::from_sdp_name("AEAD_AES_256_GCM"), None);
    assert!(MasterKey::from_bytes(suite, &[0; 44]).is_ok());
    assert_eq!(
        MasterKey::from_bytes(suite, &[0; 28]),
        Err(SrtpError::BadKey)
    );
    let (mut alice, mut bob) = pair(suite);
    let plain = rtp(7, 0x1234, 160);
    let mut wire = protect(&mut alice, &plain);
    assert_eq!(wire.len(), plain.len() + 16);
    assert_ne!(wire[12..plain.len()], plain[12..]);
    let n = bob.unprotect_rtp(&mut wire).unwrap();
    assert_eq!(&wire[..n], &plain[..]);
    // A 128-bit session with the same first key bytes does not read it.
    let (mut alice128, _) = pair(Suite::AeadAes128Gcm);
    let mut other = protect(&mut alice128, &rtp(8, 0x1234, 160));
    assert_eq!(bob.unprotect_rtp(&mut other), Err(SrtpError::AuthFailed));
    let plain = rtcp(0x1234);
    let mut wire = protect_rtcp(&mut alice, &plain);
    let n = bob.unprotect_rtcp(&mut wire).unwrap();
    assert_eq!(&wire[..n], &plain[..]);
}

#[test]
fn rfc3711_b3_key_derivation() {
    let master = Aes128Enc::new(&arr::<16>("E1F97A0D3E018BE0D64FA32C06DE4139").into());
    let salt = arr::<14>("0EC675AD498AFEEBB6960B3AABE6");
    let mut enc = [0u8; 16];
    derive(&master, &salt, LABEL_ENCRYPTION, &mut enc);
    assert_eq!(enc, arr::<16>("C61E7A93744F39EE10734AFE3FF7A087"));
    let mut s = [0u8; 14];
    derive(&master, &salt, LABEL_SALT, &mut s);
    assert_eq!(s, arr::<14>("30CBBC08863D8C85D49DB34A9AE1"));
    let mut auth = [0u8; 94];
    derive(&master, &salt, LABEL_AUTH, &mut auth);
    assert_eq!(
        auth.to_vec(),
        hex(
            "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2"
        )
    );
}

fn rfc7714_session() -> SrtpSession {
    SrtpSession::with_session_keys(
        Suite::AeadAes128Gcm,
        arr("000102030405060708090a0b0c0d0e0f"),
        &hex("517569642070726f2071756f"),
        [0; AUTH_KEY_LEN],
    )
}

const RFC7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
    20646976 69736120 696e2070 61727465 73207472 6573";

#[test]
fn rfc7714_16_srtp_aead_aes_128_gcm() {
    let plain = hex(RFC7714_RTP);
    let expected = hex(
        "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca
        be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
    );
    let mut tx = rfc7714_session();
    assert_eq!(protect(&mut tx, &plain), expected);
    let mut rx = rfc7714_session();
    assert_eq!(unprotect(&mut rx, &expected).unwrap(), plain);
}

const RFC7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
    4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";

#[test]
fn rfc7714_17_srtcp_aead_aes_128_gcm() {
    let plain = hex(RFC7714_RTCP);
    let expected = hex(
        "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7
        6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872
        45d9eade 800005d4",
    );
    let mut tx = rfc7714_session();
    tx.set_rtcp_next(0x4d61_7273, 0x5d4);
    assert_eq!(protect_rtcp(&mut tx, &plain), expected);
    let mut rx = rfc7714_session();
    assert_eq!(unprotect_rtcp(&mut rx, &expected).unwrap(), plain);
}

#[test]
fn rfc7714_17_srtcp_authenticated_only_is_accepted() {
    let plain = hex(RFC7714_RTCP);
    let authenticated = hex(&format!(
        "{RFC7714_RTCP} 841dd968 3dd78ec9 2ae58790 125f62b3 000005d4"
    ));
    let mut rx = rfc7714_session();
    assert_eq!(unprotect_rtcp(&mut rx, &authenticated).unwrap(), plain);
    // One flipped payload bit in the clear part fails, and the buffer is put back.
    let mut forged = authenticated.clone();
    forged[20] ^= 1;
    let mut rx = rfc7714_session();
    let mut buf = forged.clone();
    assert_eq!(rx.unprotect_rtcp(&mut buf), Err(SrtpError::AuthFailed));
    assert_eq!(buf, forged);
}

// ---- libsrtp golden packets (tests/fixtures/srtp/gen.py) ----

#[test]
fn libsrtp_golden_packets_match_both_ways() {
    let text = include_str!("../../../tests/fixtures/srtp/libsrtp.txt");
    let mut sessions: Vec<(String, String, SrtpSession, SrtpSession)> = Vec::new();
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [kind, suite, key_hex, plain, protected] = f[..] else {
            panic!("bad fixture line {line}");
        };
        let suite_v = Suite::from_sdp_name(suite).unwrap();
        let (plain, protected) = (hex(plain), hex(protected));
        let id = (kind.to_owned(), suite.to_owned());
        if !sessions.iter().any(|s| (s.0.clone(), s.1.clone()) == id) {
            let k = MasterKey::from_bytes(suite_v, &hex(key_hex)).unwrap();
            let mut tx = SrtpSession::new(&k, &CryptoAttr::new(1, k.clone())).unwrap();
            // libsrtp numbers SRTCP packets from 1.
            tx.set_rtcp_next(0xcafe_babe, 1);
            let rx = SrtpSession::new(&k, &CryptoAttr::new(1, k.clone())).unwrap();
            sessions.push((id.0.clone(), id.1.clone(), tx, rx));
        }
        let (_, _, tx, rx) = sessions
            .iter_mut()
            .find(|s| s.0 == id.0 && s.1 == id.1)
            .unwrap();
        if kind == "rtp" {
            assert_eq!(protect(tx, &plain), protected, "{line}");
            assert_eq!(unprotect(rx, &protected).unwrap(), plain, "{line}");
        } else {
            assert_eq!(protect_rtcp(tx, &plain), protected, "{line}");
            assert_eq!(unprotect_rtcp(rx, &protected).unwrap(), plain, "{line}");
        }
        checked += 1;
    }
    assert_eq!(checked, 3 * (8 + 3));
}

// ---- sequence numbers, replay, tampering ----

#[test]
fn round_trip_across_a_sequence_wrap_increments_the_roc() {
    for suite in Suite::ALL {
        let (mut alice, mut bob) = pair(suite);
        for i in 0..12u16 {
            let seq = 65530u16.wrapping_add(i);
            let plain = rtp(seq, 7, 160);
            let packet = protect(&mut alice, &plain);
            assert_eq!(
                unprotect(&mut bob, &packet).unwrap(),
                plain,
                "{suite} {seq}"
            );
        }
        let (rtp_window, _) = bob.peer_state(7);
        assert_eq!(rtp_window.unwrap().top, (1 << 16) | 5);
    }
}

#[test]
fn reordering_across_the_wrap_is_decrypted_with_the_right_roc() {
    for suite in Suite::ALL {
        let (mut alice, mut bob) = pair(suite);
        let seqs = [0xfffd, 0xfffe, 0xffff, 0x0000, 0x0001];
        let plains: Vec<_> = seqs.iter().map(|&s| rtp(s, 9, 80)).collect();
        let packets: Vec<_> = plains.iter().map(|p| protect(&mut alice, p)).collect();
        for i in [0, 1, 3, 2, 4] {
            assert_eq!(
                unprotect(&mut bob, &packets[i]).unwrap(),
                plains[i],
                "{suite} {:#x}",
                seqs[i]
            );
        }
        assert_eq!(bob.peer_state(9).0.unwrap().top, (1 << 16) | 1);
        // The late 0xffff is now a replay of ROC 0, not a packet of ROC 1.
        assert_eq!(unprotect(&mut bob, &packets[2]), Err(SrtpError::Replayed));
    }
}

#[test]
fn a_replayed_packet_is_rejected() {
    for suite in Suite::ALL {
        let (mut alice, mut bob) = pair(suite);
        let packet = protect(&mut alice, &rtp(100, 1, 160));
        assert!(unprotect(&mut bob, &packet).is_ok());
        assert_eq!(unprotect(&mut bob, &packet), Err(SrtpError::Replayed));
        let report = protect_rtcp(&mut alice, &rtcp(1));
        assert!(unprotect_rtcp(&mut bob, &report).is_ok());
        assert_eq!(unprotect_rtcp(&mut bob, &report), Err(SrtpError::Replayed));
    }
}

#[test]
fn the_window_holds_128_packets_and_no_more() {
    let (mut alice, mut bob) = pair(Suite::AesCm128HmacSha1_80);
    let packets: Vec<_> = (0..=1000u16)
        .map(|s| protect(&mut alice, &rtp(s, 3, 20)))
        .collect();
    assert!(unprotect(&mut bob, &packets[0]).is_ok());
    assert!(unprotect(&mut bob, &packets[1000]).is_ok());
    // 1000 - 128 is just outside the window, 1000 - 127 just inside.
    assert_eq!(
        unprotect(&mut bob, &packets[1000 - 128]),
        Err(SrtpError::Replayed)
    );
    assert!(unprotect(&mut bob, &packets[1000 - 127]).is_ok());
    assert!(unprotect(&mut bob, &packets[999]).is_ok());
}

#[test]
fn srtcp_window_rejects_an_index_older_than_the_window() {
    let (mut alice, mut bob) = pair(Suite::AeadAes128Gcm);
    let reports: Vec<_> = (0..200)
        .map(|_| protect_rtcp(&mut alice, &rtcp(5)))
        .collect();
    assert!(unprotect_rtcp(&mut bob, &reports[199]).is_ok());
    assert_eq!(
        unprotect_rtcp(&mut bob, &reports[199 - 128]),
        Err(SrtpError::Replayed)
    );
    assert!(unprotect_rtcp(&mut bob, &reports[199 - 127]).is_ok());
}

#[test]
fn one_flipped_bit_fails_authentication_and_changes_nothing() {
    for suite in Suite::ALL {
        let (mut alice, mut bob) = pair(suite);
        assert!(unprotect(&mut bob, &protect(&mut alice, &rtp(10, 4, 160))).is_ok());
        let genuine = protect(&mut alice, &rtp(11, 4, 160));
        let before = bob.peer_state(4);
        let tag_byte = genuine.len() - 1;
        for (what, at) in [("payload", 40), ("header", 1), ("tag", tag_byte)] {
            let mut forged = genuine.clone();
            forged[at] ^= 0x04;
            assert_eq!(
                unprotect(&mut bob, &forged),
                Err(SrtpError::AuthFailed),
                "{suite} {what}"
            );
            assert_eq!(bob.peer_state(4), before, "{suite} {what}");
        }
        // The sequence number bit: a forged index must not move the ROC or window either.
        let mut forged = genuine.clone();
        forged[2] ^= 0x80;
        assert_eq!(unprotect(&mut bob, &forged), Err(SrtpError::AuthFailed));
        assert_eq!(bob.peer_state(4), before);
        assert_eq!(unprotect(&mut bob, &genuine).unwrap(), rtp(11, 4, 160));

        let report = protect_rtcp(&mut alice, &rtcp(4));
        for at in [2, 12, report.len() - 1] {
            let mut forged = report.clone();
            forged[at] ^= 0x10;
            assert_eq!(
                unprotect_rtcp(&mut bob, &forged),
                Err(SrtpError::AuthFailed),
                "{suite} rtcp byte {at}"
            );
        }
        assert_eq!(bob.peer_state(4), before_rtcp(&before));
        assert_eq!(unprotect_rtcp(&mut bob, &report).unwrap(), rtcp(4));
    }
}

/// The state after the genuine RTP packet 11 was accepted but before any SRTCP.
fn before_rtcp(before: &(Option<Window>, Option<Window>)) -> (Option<Window>, Option<Window>) {
    let mut w = before.0.unwrap();
    w.accept(11);
    (Some(w), None)
}

#[test]
fn a_forged_packet_from_a_new_ssrc_evicts_no_stream() {
    let (mut alice, mut bob) = pair(Suite::AesCm128HmacSha1_80);
    let first = protect(&mut alice, &rtp(1, 1, 20));
    assert!(unprotect(&mut bob, &first).is_ok());
    for ssrc in 100..110 {
        let mut forged = protect(&mut alice, &rtp(1, ssrc, 20));
        forged[25] ^= 1;
        assert_eq!(unprotect(&mut bob, &forged), Err(SrtpError::AuthFailed));
    }
    assert_eq!(unprotect(&mut bob, &first), Err(SrtpError::Replayed));
}

#[test]
fn four_peer_streams_are_kept_and_the_least_recent_is_replaced() {
    let (mut alice, mut bob) = pair(Suite::AesCm128HmacSha1_80);
    let firsts: Vec<_> = (1..=5u32)
        .map(|ssrc| protect(&mut alice, &rtp(50, ssrc, 20)))
        .collect();
    for p in &firsts[..4] {
        assert!(unprotect(&mut bob, p).is_ok());
    }
    // Stream 1 is used again, so stream 2 is the least recent when stream 5 arrives.
    assert!(unprotect(&mut bob, &protect(&mut alice, &rtp(51, 1, 20))).is_ok());
    assert!(unprotect(&mut bob, &firsts[4]).is_ok());
    assert!(bob.peer_state(2).0.is_none());
    for i in [0, 2, 3, 4] {
        assert_eq!(unprotect(&mut bob, &firsts[i]), Err(SrtpError::Replayed));
    }
}

// ---- suites, MKI, headers, SRTCP trailer ----

#[test]
fn the_32_bit_suite_tags_rtp_with_4_bytes_and_rtcp_with_10() {
    let (mut alice, mut bob) = pair(Suite::AesCm128HmacSha1_32);
    let plain = rtp(1, 2, 160);
    let packet = protect(&mut alice, &plain);
    assert_eq!(packet.len(), plain.len() + 4);
    assert_eq!(unprotect(&mut bob, &packet).unwrap(), plain);
    let report = protect_rtcp(&mut alice, &rtcp(2));
    assert_eq!(report.len(), rtcp(2).len() + 4 + 10);
    assert_eq!(unprotect_rtcp(&mut bob, &report).unwrap(), rtcp(2));
}

/// `packet` as the peer would send it with `mki` on the wire (RFC 3711 §3.1, RFC 7714 §8).
fn with_mki(suite: Suite, rtcp: bool, packet: &[u8], mki: &[u8]) -> Vec<u8> {
    let at = match (suite, rtcp) {
        (Suite::AeadAes128Gcm, _) => packet.len(),
        (_, false) => packet.len() - suite.rtp_overhead(),
        (_, true) => packet.len() - 10,
    };
    [&packet[..at], mki, &packet[at..]].concat()
}

#[test]
fn a_peer_key_with_an_mki_accepts_only_that_mki() {
    for suite in Suite::ALL {
        let a = key(suite, 1);
        let b = key(suite, 2);
        let mut alice = SrtpSession::new(&a, &CryptoAttr::new(1, b.clone())).unwrap();
        let mut attr = CryptoAttr::new(1, a.clone());
        attr.mki = Mki::new(0x0102_0304, 4);
        let mut bob = SrtpSession::new(&b, &attr).unwrap();

        let plain = rtp(1, 6, 160);
        let packet = protect(&mut alice, &plain);
        let good = with_mki(suite, false, &packet, &[1, 2, 3, 4]);
        let bad = with_mki(suite, false, &packet, &[1, 2, 3, 5]);
        assert_eq!(unprotect(&mut bob, &bad), Err(SrtpError::UnknownMki));
        assert_eq!(unprotect(&mut bob, &good).unwrap(), plain, "{suite}");

        let report = protect_rtcp(&mut alice, &rtcp(6));
        let bad = with_mki(suite, true, &report, &[9, 2, 3, 4]);
        assert_eq!(unprotect_rtcp(&mut bob, &bad), Err(SrtpError::UnknownMki));
        let good = with_mki(suite, true, &report, &[1, 2, 3, 4]);
        assert_eq!(unprotect_rtcp(&mut bob, &good).unwrap(), rtcp(6), "{suite}");
    }
}

#[test]
fn csrcs_and_header_extension_stay_in_the_clear() {
    for suite in Suite::ALL {
        let (mut alice, mut bob) = pair(suite);
        let mut plain = rtp(77, 8, 0);
        plain[0] = 0x80 | 0x10 | 2;
        plain.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        plain.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x10, 0xaa, 0x21, 0xbb, 0xcc, 0, 0, 0]);
        let header = plain.len();
        plain.extend_from_slice(&[0x55; 160]);
        let packet = protect(&mut alice, &plain);
        assert_eq!(packet[..header], plain[..header], "{suite}");
        assert_ne!(packet[header..header + 160], plain[header..], "{suite}");
        assert_eq!(unprotect(&mut bob, &packet).unwrap(), plain);

        // An extension running past the packet is refused before any crypto.
        let mut overlong = packet.clone();
        overlong[12 + 8 + 3] = 0xff;
        assert_eq!(unprotect(&mut bob, &overlong), Err(SrtpError::TooShort));
        let mut buf = plain.clone();
        buf[12 + 8 + 3] = 0xff;
        buf.resize(plain.len() + 64, 0);
        assert_eq!(
            alice.protect_rtp(&mut buf, plain.len()),
            Err(SrtpError::TooShort)
        );
    }
}

#[test]
fn srtcp_trailer_carries_the_e_flag_and_a_counting_index() {
    for suite in Suite::ALL {
        let (mut alice, mut bob) = pair(suite);
        let plain = rtcp(0x0a0b_0c0d);
        for index in 0..3u32 {
            let report = protect_rtcp(&mut alice, &plain);
            let at = match suite {
                Suite::AeadAes128Gcm => report.len() - 4,
                _ => report.len() - 10 - 4,
            };
            assert_eq!(report[at..at + 4], (0x8000_0000 | index).to_be_bytes());
            assert_ne!(report[8..plain.len()], plain[8..], "{suite} not encrypted");
            assert_eq!(unprotect_rtcp(&mut bob, &report).unwrap(), plain);
        }
        assert_eq!(bob.peer_state(0x0a0b_0c0d).1.unwrap().top, 2);
    }
}

#[test]
fn an_unencrypted_srtcp_packet_is_authenticated_and_left_as_is() {
    let (alice, mut bob) = pair(Suite::AesCm128HmacSha1_80);
    let plain = rtcp(12);
    let mut packet = plain.clone();
    packet.extend_from_slice(&7u32.to_be_bytes());
    let Cipher::Cm { auth, .. } = &alice.ours.rtcp else {
        panic!("not AES-CM");
    };
    let mut tag = [0u8; 10];
    hmac_tag(auth, [&packet, &[]], &mut tag);
    packet.extend_from_slice(&tag);
    assert_eq!(unprotect_rtcp(&mut bob, &packet).unwrap(), plain);
    assert_eq!(unprotect_rtcp(&mut bob, &packet), Err(SrtpError::Replayed));
}

#[test]
fn short_packets_and_small_buffers_are_refused() {
    for suite in Suite::ALL {
        let (mut alice, mut bob) = pair(suite);
        let plain = rtp(1, 1, 20);
        let mut exact = plain.clone();
        exact.resize(plain.len() + suite.rtp_overhead() - 1, 0);
        assert_eq!(
            alice.protect_rtp(&mut exact, plain.len()),
            Err(SrtpError::BufferTooSmall)
        );
        exact.push(0);
        assert_eq!(
            alice.protect_rtp(&mut exact, plain.len()),
            Ok(plain.len() + suite.rtp_overhead())
        );
        assert_eq!(
            alice.protect_rtp(&mut [0u8; 8], 10),
            Err(SrtpError::BufferTooSmall)
        );
        assert_eq!(
            alice.protect_rtcp(&mut [0x80u8; 40], 7),
            Err(SrtpError::TooShort)
        );
        let header_only = &exact[..12 + suite.rtp_overhead() - 1];
        assert_eq!(unprotect(&mut bob, header_only), Err(SrtpError::TooShort));
        assert_eq!(
            unprotect_rtcp(&mut bob, &[0x80; 8 + 4]),
            Err(SrtpError::TooShort)
        );
    }
}

// ---- session set-up ----

#[test]
fn session_parameters_we_do_not_implement_are_refused() {
    let ours = key(Suite::AesCm128HmacSha1_80, 1);
    let theirs = key(Suite::AesCm128HmacSha1_80, 2);
    for (param, ok) in [
        ("WSH=128", true),
        ("KDR=0", true),
        ("KDR=1", false),
        ("UNENCRYPTED_SRTP", false),
        ("UNENCRYPTED_SRTCP", false),
        ("UNAUTHENTICATED_SRTP", false),
        ("FEC_ORDER=FEC_SRTP", false),
    ] {
        let mut attr = CryptoAttr::new(1, theirs.clone());
        attr.params.push(SessionParam::parse(param).unwrap());
        let result = SrtpSession::new(&ours, &attr);
        assert_eq!(result.is_ok(), ok, "{param}");
        if !ok {
            assert!(matches!(result, Err(SrtpError::Unsupported(p)) if p == param));
        }
    }
    let gcm = key(Suite::AeadAes128Gcm, 3);
    assert!(matches!(
        SrtpSession::new(&gcm, &CryptoAttr::new(1, theirs)),
        Err(SrtpError::SuiteMismatch { .. })
    ));
}

#[test]
fn master_keys_have_the_suite_lengths_and_debug_hides_them() {
    for suite in Suite::ALL {
        let k = MasterKey::random(suite).unwrap();
        assert_ne!(k, MasterKey::random(suite).unwrap());
        let n = suite.master_key_len() + suite.master_salt_len();
        assert_eq!(
            MasterKey::from_bytes(suite, &[0; 31]),
            Err(SrtpError::BadKey)
        );
        assert_eq!(
            MasterKey::from_bytes(suite, &vec![0; n - 1]),
            Err(SrtpError::BadKey)
        );
        let printed = format!("{k:?} {:?}", CryptoAttr::new(1, k.clone()));
        let mut raw = [0u8; MAX_KEY_SALT_LEN];
        let bytes = k.write_bytes(&mut raw);
        assert_eq!(bytes.len(), n);
        let b64 = BASE64_FOR_TESTS.encode(bytes);
        assert!(!printed.contains(&b64[..8]), "{printed}");
        assert!(
            !printed.contains(&format!("{:?}", &bytes[..3])),
            "{printed}"
        );
        assert!(printed.contains(&format!("{suite:?}")), "{printed}");
    }
    assert_eq!(Suite::AeadAes128Gcm.master_salt_len(), 12);
    assert_eq!(Suite::AesCm128HmacSha1_32.master_salt_len(), 14);
    assert_eq!(Suite::AesCm128HmacSha1_80.rtp_overhead(), 10);
}

use base64::Engine as _;
const BASE64_FOR_TESTS: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[test]
fn suite_names_are_case_sensitive() {
    for suite in Suite::ALL {
        assert_eq!(Suite::from_sdp_name(suite.sdp_name()), Some(suite));
        assert_eq!(
            Suite::from_sdp_name(&suite.sdp_name().to_ascii_lowercase()),
            None
        );
    }
    assert_eq!(Suite::from_sdp_name("AES_256_CM_HMAC_SHA1_80"), None);
}

// ---- SDES attribute ----

#[test]
fn rfc4568_examples_parse() {
    let a = CryptoAttr::parse(
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32",
    )
    .unwrap();
    assert_eq!(a.tag, 1);
    assert_eq!(a.suite(), Suite::AesCm128HmacSha1_80);
    assert_eq!(a.lifetime, Some(1 << 20));
    assert_eq!(a.mki, Mki::new(1, 32));
    let b = CryptoAttr::parse(
        "1 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32",
    )
    .unwrap();
    assert_eq!(b.suite(), Suite::AesCm128HmacSha1_32);
    let answer = CryptoAttr::parse(
        "1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^20|1:32",
    )
    .unwrap();
    assert!(SrtpSession::new(&a.key, &answer).is_ok());
    assert_eq!(
        CryptoAttr::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4;\
             inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4 FEC_ORDER=FEC_SRTP"
        ),
        Err(SdesError::MultipleKeys)
    );
}

#[test]
fn lifetimes_mki_and_params_parse_and_print_back() {
    for text in [
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^31",
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^48|7:2",
        "9 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1000000|1:128",
        "999999999 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|255:1 \
         KDR=0 WSH=64 UNENCRYPTED_SRTCP UNENCRYPTED_SRTP UNAUTHENTICATED_SRTP FEC_KEY=x",
        "3 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==",
    ] {
        let a = CryptoAttr::parse(text).unwrap();
        assert_eq!(a.to_string(), text);
        assert_eq!(CryptoAttr::parse(&a.to_string()).unwrap(), a);
    }
    let a = CryptoAttr::parse(
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^31",
    )
    .unwrap();
    assert_eq!(a.lifetime, Some(1 << 31));
    // Unpadded base64, as some clients send it, is accepted and printed padded.
    let gcm = CryptoAttr::parse("3 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw")
        .unwrap();
    assert!(gcm.to_string().ends_with("Gw=="));
}

#[test]
fn generated_keys_print_and_parse_back() {
    for suite in Suite::ALL {
        let attr = CryptoAttr::new(5, MasterKey::random(suite).unwrap());
        assert_eq!(CryptoAttr::parse(&attr.to_string()).unwrap(), attr);
    }
}

/// An attribute and whether its error is the expected one.
type Case = (String, fn(&SdesError) -> bool);

#[test]
fn malformed_attributes_say_what_is_wrong() {
    let key = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
    let cases: Vec<Case> = vec![
        ("".into(), |e| matches!(e, SdesError::Missing(_))),
        ("1".into(), |e| matches!(e, SdesError::Missing(_))),
        ("1 AES_CM_128_HMAC_SHA1_80".into(), |e| {
            matches!(e, SdesError::Missing(_))
        }),
        (
            format!("1234567890 AES_CM_128_HMAC_SHA1_80 inline:{key}"),
            |e| matches!(e, SdesError::BadTag(_)),
        ),
        (format!("x AES_CM_128_HMAC_SHA1_80 inline:{key}"), |e| {
            matches!(e, SdesError::BadTag(_))
        }),
        (format!("1 AES_CM_128_HMAC_SHA1_81 inline:{key}"), |e| {
            matches!(e, SdesError::UnknownSuite(_))
        }),
        (format!("1 aes_cm_128_hmac_sha1_80 inline:{key}"), |e| {
            matches!(e, SdesError::UnknownSuite(_))
        }),
        (format!("1 AES_CM_128_HMAC_SHA1_80 outline:{key}"), |e| {
            matches!(e, SdesError::NotInline)
        }),
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCan!mcjkpPywjNWhcYD0mXXtxaVBR".into(),
            |e| matches!(e, SdesError::BadBase64),
        ),
        (format!("1 AEAD_AES_128_GCM inline:{key}"), |e| {
            matches!(
                e,
                SdesError::BadKeyLength {
                    expected: 28,
                    got: 30,
                    ..
                }
            )
        }),
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==".into(),
            |e| {
                matches!(
                    e,
                    SdesError::BadKeyLength {
                        expected: 30,
                        got: 28,
                        ..
                    }
                )
            },
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}{key}"),
            |e| matches!(e, SdesError::BadKeyLength { got: 60, .. }),
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^64"),
            |e| matches!(e, SdesError::BadLifetime(_)),
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|forever"),
            |e| matches!(e, SdesError::BadLifetime(_)),
        ),
        (format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|1:0"), |e| {
            matches!(e, SdesError::BadMki(_))
        }),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|1:129"),
            |e| matches!(e, SdesError::BadMki(_)),
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|256:1"),
            |e| matches!(e, SdesError::BadMki(_)),
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|1:4|2^20"),
            |e| matches!(e, SdesError::BadKeyParam(_)),
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} KDR=25"),
            |e| matches!(e, SdesError::BadSessionParam(_)),
        ),
        (
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} WSH=63"),
            |e| matches!(e, SdesError::BadSessionParam(_)),
        ),
    ];
    for (text, is_expected) in &cases {
        match CryptoAttr::parse(text) {
            Err(e) => assert!(is_expected(&e), "{text}: {e:?}"),
            Ok(a) => panic!("{text} parsed as {a:?}"),
        }
    }
}

// ---- properties ----

prop_compose! {
    fn any_rtp()(
        csrcs in 0u8..=15,
        ext_words in proptest::option::of(0u16..4),
        seq: u16,
        ssrc: u32,
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) -> Vec<u8> {
        let mut p = vec![0x80 | csrcs | if ext_words.is_some() { 0x10 } else { 0 }, 8];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[1, 2, 3, 4]);
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..u32::from(csrcs) * 4).map(|i| i as u8));
        if let Some(w) = ext_words {
            p.extend_from_slice(&[0xbe, 0xde]);
            p.extend_from_slice(&w.to_be_bytes());
            p.extend((0..w * 4).map(|i| i as u8));
        }
        p.extend_from_slice(&payload);
        p
    }
}

proptest! {
    #[test]
    fn protect_then_unprotect_is_the_identity(packet in any_rtp(), suite_i in 0usize..3) {
        let suite = Suite::ALL[suite_i];
        let (mut alice, mut bob) = pair(suite);
        let protected = protect(&mut alice, &packet);
        prop_assert_eq!(protected.len(), packet.len() + suite.rtp_overhead());
        prop_assert_eq!(unprotect(&mut bob, &protected).unwrap(), packet.clone());
        let protected = protect_rtcp(&mut alice, &packet);
        prop_assert_eq!(protected.len(), packet.len() + suite.rtcp_overhead());
        prop_assert_eq!(unprotect_rtcp(&mut bob, &protected).unwrap(), packet);
    }

    #[test]
    fn unprotect_of_arbitrary_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        suite_i in 0usize..3,
    ) {
        let suite = Suite::ALL[suite_i];
        let (_, mut bob) = pair(suite);
        let mut buf = bytes.clone();
        prop_assert!(bob.unprotect_rtp(&mut buf).is_err());
        let mut buf = bytes;
        prop_assert!(bob.unprotect_rtcp(&mut buf).is_err());
    }
}

#[test]
fn protecting_one_sequence_number_twice_is_refused() {
    for suite in Suite::ALL {
        let (mut alice, mut bob) = pair(suite);
        let first = protect(&mut alice, &rtp(500, 2, 160));
        let mut again = rtp(500, 2, 160);
        again.resize(again.len() + 64, 0);
        assert_eq!(
            alice.protect_rtp(&mut again, 172),
            Err(SrtpError::Replayed),
            "{suite}"
        );
        // The refusal changed nothing: the next packet and the first still go through.
        let next = protect(&mut alice, &rtp(501, 2, 160));
        assert_eq!(unprotect(&mut bob, &next).unwrap(), rtp(501, 2, 160));
        assert_eq!(unprotect(&mut bob, &first).unwrap(), rtp(500, 2, 160));
    }
}

prop_compose! {
    fn any_attr()(
        tag in 0u32..1_000_000_000,
        suite_i in 0usize..3,
        bytes in proptest::array::uniform30(any::<u8>()),
        lifetime in proptest::option::of(any::<u64>()),
        mki in proptest::option::of((any::<u64>(), 1usize..=128)),
        wsh in proptest::option::of(64u32..1_000_000),
        flags in proptest::collection::vec(0usize..4, 0..3),
    ) -> CryptoAttr {
        let suite = Suite::ALL[suite_i];
        let n = suite.master_key_len() + suite.master_salt_len();
        let mut attr = CryptoAttr::new(tag, MasterKey::from_bytes(suite, &bytes[..n]).unwrap());
        attr.lifetime = lifetime;
        attr.mki = mki.and_then(|(v, l)| Mki::new(v, l).or(Mki::new(v & 0xff, l)));
        attr.params.extend(wsh.map(SessionParam::Wsh));
        attr.params.extend(flags.into_iter().map(|f| match f {
            0 => SessionParam::UnencryptedSrtp,
            1 => SessionParam::UnencryptedSrtcp,
            2 => SessionParam::Kdr(0),
            _ => SessionParam::Other("FEC_ORDER=SRTP_FEC".into()),
        }));
        attr
    }
}

proptest! {
    #[test]
    fn any_attribute_prints_and_parses_back(attr in any_attr()) {
        let printed = attr.to_string();
        prop_assert_eq!(CryptoAttr::parse(&printed).unwrap(), attr, "{}", printed);
    }
}
