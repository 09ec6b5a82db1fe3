#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;

/// RFC 5769 §2.1: a Binding request with short-term credentials.
const REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

/// RFC 5769 §2.2: the IPv4 success response.
const RESPONSE_V4: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

/// RFC 5769 §2.3: the IPv6 success response.
const RESPONSE_V6: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
    0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14,
    0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75,
    0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
];

const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const TXID: TransactionId = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

#[test]
fn rfc5769_request_parses_and_verifies() {
    let m = Message::parse(&REQUEST).unwrap();
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.method(), BINDING);
    assert_eq!(m.transaction_id(), TXID);
    assert_eq!(m.software(), Some("STUN test client"));
    assert_eq!(m.username(), Some(&b"evtj:h6vY"[..]));
    assert_eq!(m.priority(), Some(0x6e00_01ff));
    assert_eq!(m.ice_controlled(), Some(0x932f_f9b1_5126_3b36));
    assert_eq!(m.ice_controlling(), None);
    assert!(!m.use_candidate());
    assert!(m.check_integrity(PASSWORD));
    assert!(!m.check_integrity(b"VOkJxbRl1RmTxUk/WvJxBu"));
    assert!(m.check_fingerprint());
}

#[test]
fn rfc5769_request_is_rebuilt_byte_for_byte() {
    // The vector pads USERNAME with spaces; the padding is not covered by anything but the
    // HMAC and CRC, so rebuild with the same padding bytes in a raw attribute.
    let built = Builder::new(Class::Request, BINDING, &TXID)
        .software("STUN test client")
        .priority(0x6e00_01ff)
        .ice_controlled(0x932f_f9b1_5126_3b36)
        .attribute(ATTR_USERNAME, b"evtj:h6vY")
        .finish();
    let mut with_spaces = built.clone();
    let n = with_spaces.len();
    with_spaces[n - 3..].copy_from_slice(b"   ");
    let done = Builder { buf: with_spaces }
        .integrity(PASSWORD)
        .fingerprint()
        .finish();
    assert_eq!(done, REQUEST);
}

#[test]
fn rfc5769_responses_decode_both_families() {
    let v4 = Message::parse(&RESPONSE_V4).unwrap();
    assert_eq!(v4.class(), Class::Success);
    assert_eq!(v4.method(), BINDING);
    assert_eq!(v4.software(), Some("test vector"));
    assert_eq!(
        v4.xor_mapped_address(),
        Some("192.0.2.1:32853".parse().unwrap())
    );
    assert!(v4.check_integrity(PASSWORD));
    assert!(v4.check_fingerprint());

    let v6 = Message::parse(&RESPONSE_V6).unwrap();
    assert_eq!(
        v6.xor_mapped_address(),
        Some(
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap()
        )
    );
    assert!(v6.check_integrity(PASSWORD));
    assert!(v6.check_fingerprint());
}

#[test]
fn rfc5769_responses_are_rebuilt_byte_for_byte() {
    for (vector, addr) in [
        (&RESPONSE_V4[..], "192.0.2.1:32853"),
        (
            &RESPONSE_V6[..],
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
        ),
    ] {
        let mut b = Builder::new(Class::Success, BINDING, &TXID).software("test vector");
        // The vector pads SOFTWARE with a space.
        let n = b.buf.len();
        b.buf[n - 1] = b' ';
        let built = b
            .xor_mapped_address(addr.parse().unwrap())
            .integrity(PASSWORD)
            .fingerprint()
            .finish();
        assert_eq!(built, vector, "{addr}");
    }
}

#[test]
fn one_flipped_bit_fails_integrity_or_fingerprint() {
    for i in HEADER_LEN..REQUEST.len() {
        let mut b = REQUEST;
        b[i] ^= 0x01;
        if let Ok(m) = Message::parse(&b) {
            let integrity = m.check_integrity(PASSWORD);
            let fingerprint = m.check_fingerprint();
            // Padding of the USERNAME is covered by both; nothing passes both checks.
            assert!(!(integrity && fingerprint), "byte {i} flipped passes");
        }
    }
}

#[test]
fn attributes_after_integrity_are_ignored_but_fingerprint_is_read() {
    let b = Builder::new(Class::Request, BINDING, &TXID)
        .username(b"a:b")
        .integrity(b"pw")
        .use_candidate()
        .fingerprint()
        .finish();
    let m = Message::parse(&b).unwrap();
    assert!(!m.use_candidate());
    assert!(m.check_integrity(b"pw"));
    assert!(m.check_fingerprint());
}

#[test]
fn error_response_round_trips() {
    let b = Builder::new(Class::Error, BINDING, &TXID)
        .error_code(401, "Unauthorized")
        .fingerprint()
        .finish();
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.class(), Class::Error);
    assert_eq!(m.method(), BINDING);
    assert_eq!(m.error_code(), Some((401, "Unauthorized")));
    assert!(m.check_fingerprint());
}

#[test]
fn framing_errors_are_refused() {
    assert_eq!(Message::parse(&REQUEST[..19]), Err(StunError::Truncated));
    assert_eq!(Message::parse(&REQUEST[..104]), Err(StunError::Truncated));
    let mut long = REQUEST.to_vec();
    long.extend_from_slice(&[0; 4]);
    assert_eq!(Message::parse(&long), Err(StunError::Truncated));
    let mut cookie = REQUEST;
    cookie[4] ^= 1;
    assert_eq!(Message::parse(&cookie), Err(StunError::NotStun));
    let mut top = REQUEST;
    top[0] |= 0x40;
    assert_eq!(Message::parse(&top), Err(StunError::NotStun));
    // The last attribute claims one byte more than the message holds.
    let mut attr = REQUEST;
    attr[103] = 0x05;
    assert_eq!(Message::parse(&attr), Err(StunError::BadAttribute));
    // An empty Binding request (header only) is a message.
    let empty = Builder::new(Class::Request, BINDING, &TXID).finish();
    assert_eq!(
        Message::parse(&empty).map(|m| m.class()),
        Ok(Class::Request)
    );
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn message_type_interleaves_class_and_method() {
    assert_eq!(message_type(Class::Request, BINDING), 0x0001);
    assert_eq!(message_type(Class::Success, BINDING), 0x0101);
    assert_eq!(message_type(Class::Error, BINDING), 0x0111);
    assert_eq!(message_type(Class::Indication, BINDING), 0x0011);
    for m in [0u16, 1, 0x0FFF, 0x0ABC] {
        assert_eq!(method_of(message_type(Class::Error, m)), m);
    }
}

proptest! {
    #[test]
    fn built_messages_parse_back(
        txid in any::<[u8; 12]>(),
        username in proptest::collection::vec(any::<u8>(), 0..80),
        priority in any::<u32>(),
        tie in any::<u64>(),
        controlling in any::<bool>(),
        use_candidate in any::<bool>(),
        v4 in any::<[u8; 4]>(),
        v6 in any::<[u8; 16]>(),
        port in any::<u16>(),
        ipv6 in any::<bool>(),
        key in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let addr = if ipv6 {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(v6)), port)
        } else {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::from(v4)), port)
        };
        let mut b = Builder::new(Class::Request, BINDING, &txid)
            .username(&username)
            .priority(priority)
            .xor_mapped_address(addr);
        b = if controlling { b.ice_controlling(tie) } else { b.ice_controlled(tie) };
        if use_candidate {
            b = b.use_candidate();
        }
        let bytes = b.integrity(&key).fingerprint().finish();
        prop_assert!(is_stun(&bytes));
        let m = Message::parse(&bytes).unwrap();
        prop_assert_eq!(m.transaction_id(), txid);
        prop_assert_eq!(m.username(), Some(&username[..]));
        prop_assert_eq!(m.priority(), Some(priority));
        prop_assert_eq!(m.xor_mapped_address(), Some(addr));
        prop_assert_eq!(m.ice_controlling(), controlling.then_some(tie));
        prop_assert_eq!(m.ice_controlled(), (!controlling).then_some(tie));
        prop_assert_eq!(m.use_candidate(), use_candidate);
        prop_assert!(m.check_integrity(&key));
        prop_assert!(m.check_fingerprint());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(m) = Message::parse(&bytes) {
            let _ = (m.username(), m.priority(), m.xor_mapped_address(), m.error_code());
            let _ = (m.check_integrity(b"k"), m.check_fingerprint());
        }
    }
}
