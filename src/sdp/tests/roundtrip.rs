//! Property tests: every valid description survives print → parse, and no input panics the
//! parser (whatever parses also round-trips).

use std::net::IpAddr;

use proptest::collection::vec;
use proptest::prelude::*;

use crate::sdp::{
    parse, Attribute, Attributes, Bandwidth, Connection, Direction, ExtraLine, MediaDescription,
    MediaKind, Origin, PayloadType, RtpMap, SessionDescription, Timing,
};

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+._~!*'#$%&^`|-]{1,12}"
}

/// Free text as the parser hands it back: no CR/LF, no trailing whitespace.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[ -~é€]{0,24}[!-~é]".prop_map(|s| s),]
}

fn connection() -> impl Strategy<Value = Connection> {
    prop_oneof![
        any::<IpAddr>().prop_map(Connection::new),
        (224u8..240, any::<[u8; 3]>(), 1u8..=255).prop_map(|(a, [b, c, d], ttl)| Connection {
            nettype: "IN".into(),
            addrtype: "IP4".into(),
            address: format!("{a}.{b}.{c}.{d}/{ttl}"),
        }),
        (token(), token(), token()).prop_map(|(n, a, addr)| Connection {
            nettype: format!("X{n}"),
            addrtype: a,
            address: addr,
        }),
    ]
}

fn bandwidth() -> impl Strategy<Value = Bandwidth> {
    ("[A-Z][A-Za-z0-9-]{0,5}", any::<u64>())
        .prop_map(|(bwtype, bandwidth)| Bandwidth { bwtype, bandwidth })
}

fn payload_type() -> impl Strategy<Value = PayloadType> {
    (0u8..=127).prop_map(|n| PayloadType::new(n).unwrap_or(PayloadType::PCMU))
}

fn attribute() -> impl Strategy<Value = Attribute> {
    let name = "[a-z][a-z0-9-]{0,10}".prop_filter("typed names are generated apart", |n| {
        n != "rtpmap" && n != "fmtp"
    });
    prop_oneof![
        name.clone().prop_map(Attribute::flag),
        (name, text()).prop_map(|(n, v)| Attribute::with_value(n, v)),
        (
            payload_type(),
            "[A-Za-z][A-Za-z0-9-]{0,10}",
            any::<u32>(),
            proptest::option::of(any::<u16>())
        )
            .prop_map(|(payload_type, encoding, clock_rate, channels)| {
                Attribute::from(&RtpMap {
                    payload_type,
                    encoding,
                    clock_rate,
                    channels,
                })
            }),
        (payload_type(), text()).prop_map(|(pt, v)| {
            let value = if v.is_empty() {
                pt.to_string()
            } else {
                format!("{pt} {v}")
            };
            Attribute::with_value("fmtp", value)
        }),
        prop_oneof![
            Just(Direction::SendRecv),
            Just(Direction::SendOnly),
            Just(Direction::RecvOnly),
            Just(Direction::Inactive)
        ]
        .prop_map(Attribute::from),
    ]
}

fn attributes() -> impl Strategy<Value = Attributes> {
    vec(attribute(), 0..6).prop_map(Attributes)
}

/// Extra lines grouped the way the parser groups them: position 0 kinds first.
fn extras(
    first: &'static [char],
    second: &'static [char],
) -> impl Strategy<Value = Vec<ExtraLine>> {
    let line = |kinds: &'static [char]| {
        (proptest::sample::select(kinds), text())
            .prop_map(|(kind, value)| ExtraLine { kind, value })
    };
    (vec(line(first), 0..3), vec(line(second), 0..3)).prop_map(|(mut a, b)| {
        a.extend(b);
        a
    })
}

fn media() -> impl Strategy<Value = MediaDescription> {
    let kind = prop_oneof![
        Just(MediaKind::Audio),
        Just(MediaKind::Video),
        "[a-z]{1,8}".prop_map(|s| MediaKind::from(s.as_str())),
    ];
    let proto_formats = prop_oneof![
        (
            proptest::sample::select(vec!["RTP/AVP", "RTP/AVPF", "RTP/SAVP", "UDP/TLS/RTP/SAVPF"]),
            vec(0u8..=127, 0..8),
        )
            .prop_map(|(p, f)| (p.to_string(), f.iter().map(u8::to_string).collect())),
        (
            token().prop_filter("RTP protos need numeric formats", |p| !p
                .eq_ignore_ascii_case("rtp")),
            vec(token(), 0..4)
        ),
    ];
    (
        kind,
        any::<u16>(),
        proptest::option::of(any::<u16>()),
        proto_formats,
        proptest::option::of(connection()),
        vec(bandwidth(), 0..2),
        attributes(),
        extras(&['i'], &['k', 't', 'r', 'z', 'x']),
    )
        .prop_map(
            |(
                kind,
                port,
                port_count,
                (proto, formats),
                connection,
                bandwidths,
                attributes,
                extra_lines,
            )| {
                MediaDescription {
                    kind,
                    port,
                    port_count,
                    proto,
                    formats,
                    connection,
                    bandwidths,
                    attributes,
                    extra_lines,
                }
            },
        )
}

fn origin() -> impl Strategy<Value = Origin> {
    (
        token(),
        any::<u64>(),
        any::<u64>(),
        token(),
        token(),
        token(),
    )
        .prop_map(
            |(username, session_id, session_version, nettype, addrtype, address)| Origin {
                username,
                session_id,
                session_version,
                nettype,
                addrtype,
                address,
            },
        )
}

fn timing() -> impl Strategy<Value = Timing> {
    (any::<u64>(), any::<u64>(), vec(text(), 0..2)).prop_map(|(start, stop, repeats)| Timing {
        start,
        stop,
        repeats,
    })
}

fn session() -> impl Strategy<Value = SessionDescription> {
    (
        origin(),
        text(),
        proptest::option::of(connection()),
        vec(bandwidth(), 0..2),
        vec(timing(), 0..3),
        attributes(),
        extras(&['i', 'u', 'e', 'p'], &['z', 'k', 'x', 'Q']),
        vec(media(), 0..4),
    )
        .prop_map(
            |(
                origin,
                session_name,
                connection,
                bandwidths,
                timing,
                attributes,
                extra_lines,
                media,
            )| {
                SessionDescription {
                    origin,
                    session_name,
                    connection,
                    bandwidths,
                    timing,
                    attributes,
                    extra_lines,
                    media,
                }
            },
        )
}

fn assert_round_trip(sdp: &SessionDescription) -> Result<(), TestCaseError> {
    let printed = sdp.to_string();
    match parse(printed.as_bytes()) {
        Ok(reparsed) => prop_assert_eq!(&reparsed, sdp, "{}", printed),
        Err(e) => prop_assert!(false, "{e}\n{printed}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn printed_descriptions_parse_back(sdp in session()) {
        assert_round_trip(&sdp)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        if let Ok(sdp) = parse(&bytes) {
            assert_round_trip(&sdp)?;
        }
    }

    #[test]
    fn mutated_descriptions_never_panic(
        sdp in session(),
        edits in vec((any::<proptest::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = sdp.to_string().into_bytes();
        for (at, byte, op) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
        }
        if let Ok(parsed) = parse(&bytes) {
            assert_round_trip(&parsed)?;
        }
    }

    #[test]
    fn negotiation_never_panics(sdp in session(), port in any::<u16>()) {
        let mut local = crate::sdp::LocalSession::new(1, std::net::SocketAddr::from(([192, 0, 2, 1], port)));
        if let Ok(answer) = local.answer(&sdp) {
            prop_assert_eq!(answer.sdp.media.len(), sdp.media.len());
            assert_round_trip(&answer.sdp)?;
        }
        local.offer();
        let _ = local.accept_answer(&sdp);
    }
}
