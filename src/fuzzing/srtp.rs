//! SRTP and SDES: the `a=crypto` parser, unprotect of arbitrary bytes, and a sender and a
//! receiver that must agree on every packet the sender protects.

use crate::rtp::srtp::{CryptoAttr, MasterKey, SrtpError, SrtpSession, Suite};

/// Records one input may hold; longer inputs are cut here so one run stays short.
const MAX_RECORDS: usize = 64;

fn fixed_key(suite: Suite, seed: u8) -> Option<MasterKey> {
    let mut bytes = [0u8; 30];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(29) ^ seed;
    }
    MasterKey::from_bytes(
        suite,
        &bytes[..suite.master_key_len() + suite.master_salt_len()],
    )
    .ok()
}

/// A sender and a receiver of `suite` keyed as an SDES offer and answer would key them.
fn pair(suite: Suite) -> Option<(SrtpSession, SrtpSession)> {
    let a = fixed_key(suite, 0x31)?;
    let b = fixed_key(suite, 0x97)?;
    let alice = SrtpSession::new(&a, &CryptoAttr::new(1, b.clone())).ok()?;
    let bob = SrtpSession::new(&b, &CryptoAttr::new(1, a)).ok()?;
    Some((alice, bob))
}

/// The first byte picks the suite (mod 3) and the mode (/ 3 mod 3):
/// - 0: the rest is an `a=crypto` value; whatever parses survives print → parse unchanged,
///   and a session accepts it unless it names a parameter we refuse;
/// - 1: the rest is an SRTP and an SRTCP packet from the peer: refused, never a panic;
/// - 2: records of `[flags, length, packet]`: the sender protects each packet (bit 0: as
///   RTCP); bit 1 delivers a copy with one bit flipped first (bits 3..: which), which is
///   refused; the genuine packet is then accepted and decrypts to what was sent, and bit 2
///   delivers it again, which is `Replayed`.
pub fn srtp(data: &[u8]) {
    let [select, rest @ ..] = data else {
        return;
    };
    let suite = Suite::ALL[usize::from(select % 3)];
    match (select / 3) % 3 {
        0 => attribute(rest),
        1 => arbitrary(suite, rest),
        _ => records(suite, rest),
    }
}

fn attribute(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(attr) = CryptoAttr::parse(text) else {
        return;
    };
    let printed = attr.to_string();
    match CryptoAttr::parse(&printed) {
        Ok(again) => assert_eq!(again, attr, "round trip changed:\n{printed}"),
        Err(e) => panic!("printed attribute does not parse ({e}):\n{printed}"),
    }
    let Some(ours) = fixed_key(attr.suite(), 0) else {
        panic!("no key for {}", attr.suite());
    };
    match SrtpSession::new(&ours, &attr) {
        Ok(_) => assert!(attr.unsupported_param().is_none()),
        Err(SrtpError::Unsupported(_)) => assert!(attr.unsupported_param().is_some()),
        Err(e) => panic!("session refuses {printed}: {e}"),
    }
}

fn arbitrary(suite: Suite, data: &[u8]) {
    let Some((_, mut bob)) = pair(suite) else {
        panic!("no session for {suite}");
    };
    let mut buf = data.to_vec();
    assert!(bob.unprotect_rtp(&mut buf).is_err());
    let mut buf = data.to_vec();
    assert!(bob.unprotect_rtcp(&mut buf).is_err());
}

fn records(suite: Suite, data: &[u8]) {
    let Some((mut alice, mut bob)) = pair(suite) else {
        panic!("no session for {suite}");
    };
    let mut rest = data;
    let mut buf = [0u8; 512];
    for _ in 0..MAX_RECORDS {
        let [flags, len, tail @ ..] = rest else {
            return;
        };
        let len = usize::from(*len).min(tail.len());
        let (plain, tail) = tail.split_at(len);
        rest = tail;
        let rtcp = flags & 1 != 0;
        buf[..len].copy_from_slice(plain);
        let protected = if rtcp {
            alice.protect_rtcp(&mut buf, len)
        } else {
            alice.protect_rtp(&mut buf, len)
        };
        let Ok(n) = protected else {
            continue;
        };
        let unprotect = |s: &mut SrtpSession, p: &mut [u8]| {
            if rtcp {
                s.unprotect_rtcp(p)
            } else {
                s.unprotect_rtp(p)
            }
        };
        if flags & 2 != 0 {
            let mut forged = buf;
            let bit = usize::from(flags >> 3) * 8 % (n * 8);
            forged[bit / 8] ^= 1 << (bit % 8);
            let result = unprotect(&mut bob, &mut forged[..n]);
            assert!(result.is_err(), "a flipped bit {bit} was accepted");
        }
        let mut copy = buf;
        let got = unprotect(&mut bob, &mut copy[..n]);
        assert_eq!(
            got,
            Ok(len),
            "the receiver refuses what the sender protected"
        );
        assert_eq!(&copy[..len], plain, "decrypted packet differs");
        if flags & 4 != 0 {
            let mut again = buf;
            let result = unprotect(&mut bob, &mut again[..n]);
            assert_eq!(result, Err(SrtpError::Replayed));
        }
    }
}
