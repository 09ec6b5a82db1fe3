use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{crlf, ASTERISK, FREESWITCH, LINPHONE};
use crate::sdp::{
    parse, Connection, Direction, ExtraLine, MediaKind, PayloadType, Rtcp, RtpMap, SdpError,
    SdpErrorKind,
};

const MINIMAL: &str = "v=0
o=- 1 2 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 5004 RTP/AVP 0
";

fn err(text: &str) -> SdpError {
    match parse(text.as_bytes()) {
        Ok(sdp) => panic!("expected an error, parsed {sdp:?}"),
        Err(e) => e,
    }
}

fn pt(n: u8) -> PayloadType {
    PayloadType::new(n).unwrap()
}

#[test]
fn minimal_parses() {
    let sdp = parse(MINIMAL.as_bytes()).unwrap();
    assert_eq!(sdp.origin.username, "-");
    assert_eq!(sdp.origin.session_id, 1);
    assert_eq!(sdp.origin.session_version, 2);
    assert_eq!(sdp.origin.address, "192.0.2.1");
    assert_eq!(sdp.session_name, "-");
    assert_eq!(sdp.timing.len(), 1);
    assert_eq!(sdp.media.len(), 1);
    let m = &sdp.media[0];
    assert_eq!(m.kind, MediaKind::Audio);
    assert_eq!(m.port, 5004);
    assert_eq!(m.port_count, None);
    assert_eq!(m.proto, "RTP/AVP");
    assert_eq!(m.formats, vec!["0"]);
    assert_eq!(
        sdp.connection.as_ref().and_then(Connection::ip),
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
    );
}

#[test]
fn crlf_and_lf_parse_the_same() {
    let lf = parse(MINIMAL.as_bytes()).unwrap();
    let crlf = parse(crlf(MINIMAL).as_bytes()).unwrap();
    assert_eq!(lf, crlf);
}

#[test]
fn trailing_whitespace_and_blank_lines_are_tolerated() {
    let sloppy = MINIMAL.replace('\n', "  \t\r\n") + "\r\n\r\n   \n";
    assert_eq!(
        parse(sloppy.as_bytes()).unwrap(),
        parse(MINIMAL.as_bytes()).unwrap()
    );
}

#[test]
fn printer_is_canonical_crlf() {
    let text = "v=0
o=- 1 2 IN IP4 192.0.2.1
s=-
t=0 0
c=IN IP4 192.0.2.1
a=tool:x
i=info
m=audio 5004/2 RTP/AVP 0 101
a=rtpmap:101 telephone-event/8000
b=AS:64
c=IN IP4 192.0.2.2
";
    let sdp = parse(text.as_bytes()).unwrap();
    assert_eq!(
        sdp.to_string(),
        "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\ni=info\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         a=tool:x\r\nm=audio 5004/2 RTP/AVP 0 101\r\nc=IN IP4 192.0.2.2\r\nb=AS:64\r\n\
         a=rtpmap:101 telephone-event/8000\r\n"
    );
    assert_eq!(parse(sdp.to_string().as_bytes()).unwrap(), sdp);
}

#[test]
fn unknown_lines_and_attributes_survive_a_round_trip() {
    let text = "v=0
o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5
s=SDP Seminar
i=A Seminar on the session description protocol
u=http://www.example.com/seminars/sdp.pdf
e=j.doe@example.com (Jane Doe)
p=+1 617 555-6011
c=IN IP4 224.2.17.12/127
b=CT:128
t=2873397496 2873404696
r=7d 1h 0 25h
z=2882844526 -1h 2898848070 0
k=clear:secret
a=recvonly
a=x-custom:some value: with colons
a=flag-only
m=audio 49170 RTP/AVP 0
i=the audio
k=prompt
a=x-unknown
m=application 5000 udp wb
a=orient:portrait
y=some future line type
";
    let sdp = parse(text.as_bytes()).unwrap();
    assert_eq!(sdp.timing[0].repeats, vec!["7d 1h 0 25h"]);
    assert_eq!(sdp.attributes.direction(), Some(Direction::RecvOnly));
    assert_eq!(
        sdp.attributes.get("x-custom"),
        Some(Some("some value: with colons"))
    );
    assert_eq!(sdp.attributes.get("flag-only"), Some(None));
    let kinds: Vec<char> = sdp.extra_lines.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec!['i', 'u', 'e', 'p', 'z', 'k']);
    assert_eq!(
        sdp.media[0].extra_lines,
        vec![
            ExtraLine {
                kind: 'i',
                value: "the audio".into()
            },
            ExtraLine {
                kind: 'k',
                value: "prompt".into()
            }
        ]
    );
    assert_eq!(sdp.media[1].kind, MediaKind::Application);
    assert_eq!(sdp.media[1].formats, vec!["wb"]);
    assert_eq!(sdp.media[1].extra_lines[0].kind, 'y');

    let printed = sdp.to_string();
    for line in text.lines() {
        assert!(printed.contains(&format!("{line}\r\n")), "lost {line:?}");
    }
    assert_eq!(parse(printed.as_bytes()).unwrap(), sdp);
}

#[test]
fn typed_attribute_helpers() {
    let sdp = parse(FREESWITCH.as_bytes()).unwrap();
    let a = &sdp.media[0].attributes;
    assert_eq!(
        a.rtpmap(pt(8)),
        Some(RtpMap {
            payload_type: pt(8),
            encoding: "PCMA".into(),
            clock_rate: 8000,
            channels: None
        })
    );
    assert_eq!(a.rtpmaps().count(), 4);
    assert_eq!(a.fmtp(pt(101)), Some("0-16"));
    assert_eq!(a.fmtp(pt(8)), None);
    assert_eq!(a.ptime(), Some(20));
    assert_eq!(a.maxptime(), None);
    assert_eq!(a.direction(), Some(Direction::SendRecv));
    assert!(!a.rtcp_mux());
    assert_eq!(
        a.rtcp(),
        Some(Rtcp {
            port: 16385,
            connection: Some(Connection::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))))
        })
    );

    let linphone = parse(LINPHONE.as_bytes()).unwrap();
    let opus = linphone.media[0].attributes.rtpmap(pt(96)).unwrap();
    assert_eq!(opus.channels, Some(2));
    assert_eq!(opus.clock_rate, 48000);
    assert_eq!(linphone.media[1].kind, MediaKind::Video);

    let asterisk = parse(ASTERISK.as_bytes()).unwrap();
    assert_eq!(asterisk.media[0].attributes.maxptime(), Some(150));
    assert_eq!(asterisk.media[0].attributes.ptime(), None);
}

#[test]
fn ipv6_and_media_level_connection() {
    let text = "v=0
o=- 7 7 IN IP6 2001:db8::1
s=-
c=IN IP6 2001:db8::1
t=0 0
m=audio 5004 RTP/AVP 0
m=audio 6004 RTP/AVP 8
c=IN IP6 2001:db8::2
";
    let sdp = parse(text.as_bytes()).unwrap();
    let v6 = |s: &str| Some(IpAddr::V6(s.parse::<Ipv6Addr>().unwrap()));
    assert_eq!(
        sdp.connection_for(&sdp.media[0]).unwrap().ip(),
        v6("2001:db8::1")
    );
    assert_eq!(
        sdp.connection_for(&sdp.media[1]).unwrap().ip(),
        v6("2001:db8::2")
    );
    assert!(sdp.media[0].connection.is_none());
}

#[test]
fn hold_address_is_recognised() {
    let text = MINIMAL.replace("c=IN IP4 192.0.2.1", "c=IN IP4 0.0.0.0");
    let sdp = parse(text.as_bytes()).unwrap();
    assert!(sdp.connection.unwrap().is_unspecified());
}

#[test]
fn direction_falls_back_to_session_then_sendrecv() {
    let text = "v=0
o=- 1 1 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
a=sendonly
m=audio 5004 RTP/AVP 0
m=audio 5006 RTP/AVP 0
a=inactive
";
    let sdp = parse(text.as_bytes()).unwrap();
    assert_eq!(sdp.direction_for(&sdp.media[0]), Direction::SendOnly);
    assert_eq!(sdp.direction_for(&sdp.media[1]), Direction::Inactive);
    let plain = parse(MINIMAL.as_bytes()).unwrap();
    assert_eq!(plain.direction_for(&plain.media[0]), Direction::SendRecv);
}

#[test]
fn rejects_missing_version() {
    let e = err("");
    assert_eq!((e.line, e.kind), (1, SdpErrorKind::MissingVersion));
    let e = err(&MINIMAL.replace("v=0\n", ""));
    assert_eq!((e.line, e.kind), (1, SdpErrorKind::MissingVersion));
    let e = err(&format!("\n\n{}", MINIMAL.replace("v=0\n", "hello\n")));
    assert_eq!((e.line, e.kind), (3, SdpErrorKind::MissingVersion));
}

#[test]
fn rejects_other_versions() {
    let e = err(&MINIMAL.replace("v=0", "v=1"));
    assert_eq!(e.line, 1);
    assert_eq!(e.kind, SdpErrorKind::UnsupportedVersion("1".into()));
}

#[test]
fn rejects_missing_origin() {
    let e = err(&MINIMAL.replace("o=- 1 2 IN IP4 192.0.2.1\n", ""));
    assert_eq!((e.line, e.kind), (5, SdpErrorKind::MissingOrigin));
}

#[test]
fn rejects_missing_session_name() {
    let e = err(&MINIMAL.replace("s=-\n", ""));
    assert_eq!((e.line, e.kind), (5, SdpErrorKind::MissingSessionName));
}

#[test]
fn rejects_malformed_origin() {
    let e = err(&MINIMAL.replace("o=- 1 2", "o=- x 2"));
    assert_eq!(e.line, 2);
    assert!(matches!(e.kind, SdpErrorKind::MalformedOrigin(_)));
    let e = err(&MINIMAL.replace("o=- 1 2 IN IP4 192.0.2.1", "o=- 1 2 IN IP4"));
    assert!(matches!(e.kind, SdpErrorKind::MalformedOrigin(_)));
}

#[test]
fn rejects_malformed_media_line() {
    let e = err(&MINIMAL.replace("m=audio 5004 RTP/AVP 0", "m=audio 5004"));
    assert_eq!(e.line, 6);
    assert!(matches!(e.kind, SdpErrorKind::MalformedMedia(_)));
}

#[test]
fn rejects_non_numeric_ports() {
    for bad in ["abc", "-1", "65536", "5004/x", "+5004", ""] {
        let text = MINIMAL.replace(
            "m=audio 5004 RTP/AVP 0",
            &format!("m=audio {bad} RTP/AVP 0"),
        );
        let e = err(&text);
        assert_eq!(e.line, 6, "{bad:?}");
        assert!(
            matches!(
                e.kind,
                SdpErrorKind::InvalidPort(_) | SdpErrorKind::MalformedMedia(_)
            ),
            "{bad:?}: {e}"
        );
    }
    let e = err(&MINIMAL.replace("5004 RTP/AVP", "abc RTP/AVP"));
    assert_eq!(e.kind, SdpErrorKind::InvalidPort("abc".into()));
}

#[test]
fn rejects_bad_payload_types() {
    for bad in ["PCMU", "128", "-1", "0x1"] {
        let e = err(&MINIMAL.replace("RTP/AVP 0", &format!("RTP/AVP 0 {bad}")));
        assert_eq!(e.line, 6);
        assert_eq!(e.kind, SdpErrorKind::InvalidPayloadType(bad.into()));
    }
    let e = err(&format!("{MINIMAL}a=rtpmap:x PCMU/8000\n"));
    assert_eq!(
        (e.line, e.kind),
        (7, SdpErrorKind::InvalidPayloadType("x".into()))
    );
    let e = err(&format!("{MINIMAL}a=fmtp:200 0-16\n"));
    assert_eq!(
        (e.line, e.kind),
        (7, SdpErrorKind::InvalidPayloadType("200".into()))
    );
    let e = err(&format!("{MINIMAL}a=rtpmap:0 PCMU\n"));
    assert!(matches!(e.kind, SdpErrorKind::MalformedAttribute(_)));
}

#[test]
fn non_rtp_formats_need_not_be_numeric() {
    let text = MINIMAL.replace("m=audio 5004 RTP/AVP 0", "m=message 2855 TCP/MSRP *");
    assert_eq!(parse(text.as_bytes()).unwrap().media[0].formats, vec!["*"]);
}

#[test]
fn rejects_malformed_connection() {
    for bad in [
        "c=IN IP4",
        "c=IN IP4 not-an-ip",
        "c=IN IP4 999.0.0.1",
        "c=IN IP6 192.0.2.1",
        "c=IN IP4 192.0.2.1 extra",
        "c=IN IP4 224.2.1.1/ttl",
    ] {
        let e = err(&MINIMAL.replace("c=IN IP4 192.0.2.1", bad));
        assert_eq!(e.line, 4, "{bad}");
        assert!(
            matches!(e.kind, SdpErrorKind::MalformedConnection(_)),
            "{bad}: {e}"
        );
    }
    let e = err(&format!("{MINIMAL}c=IN IP4 x\n"));
    assert_eq!(e.line, 7);
}

#[test]
fn rejects_duplicates_and_misplaced_lines() {
    let e = err(&MINIMAL.replace(
        "c=IN IP4 192.0.2.1\n",
        "c=IN IP4 192.0.2.1\nc=IN IP4 192.0.2.1\n",
    ));
    assert_eq!((e.line, e.kind), (5, SdpErrorKind::Duplicate('c')));
    let e = err(&format!("{MINIMAL}o=- 1 2 IN IP4 192.0.2.1\n"));
    assert_eq!((e.line, e.kind), (7, SdpErrorKind::NotInMedia('o')));
    let e = err(&MINIMAL.replace("t=0 0", "r=1 1 1"));
    assert_eq!((e.line, e.kind), (5, SdpErrorKind::RepeatWithoutTiming));
    let e = err(&MINIMAL.replace("t=0 0", "t=now"));
    assert_eq!((e.line, e.kind), (5, SdpErrorKind::MalformedTiming));
    let e = err(&MINIMAL.replace("t=0 0", "b=AS"));
    assert_eq!((e.line, e.kind), (5, SdpErrorKind::MalformedBandwidth));
    let e = err(&format!("{MINIMAL}a=\n"));
    assert!(matches!(e.kind, SdpErrorKind::MalformedAttribute(_)));
    let e = err(&format!("{MINIMAL}garbage\n"));
    assert_eq!((e.line, e.kind), (7, SdpErrorKind::NotATypeValueLine));
}

#[test]
fn rejects_non_utf8_with_its_line() {
    let mut bytes = MINIMAL.as_bytes().to_vec();
    bytes.extend_from_slice(b"a=x-name:\xff\xfe\n");
    let e = parse(&bytes).unwrap_err();
    assert_eq!((e.line, e.kind), (7, SdpErrorKind::NotUtf8));
}

#[test]
fn errors_name_the_line() {
    let e = err(&MINIMAL.replace("5004 RTP/AVP", "abc RTP/AVP"));
    assert_eq!(e.to_string(), "SDP line 6: invalid port \"abc\"");
}

#[test]
fn real_world_offers_round_trip() {
    for text in [LINPHONE, FREESWITCH, ASTERISK] {
        let sdp = parse(text.as_bytes()).unwrap();
        assert_eq!(sdp.to_string(), crlf(text));
        assert_eq!(parse(sdp.to_string().as_bytes()).unwrap(), sdp);
    }
}

#[test]
fn out_of_order_unknown_lines_are_placed_canonically() {
    let text = "v=0
o=- 1 2 IN IP4 192.0.2.1
s=-
k=prompt
c=IN IP4 192.0.2.1
x=later
i=late info
t=0 0
m=audio 5004 RTP/AVP 0
k=clear:x
i=media info
";
    let sdp = parse(text.as_bytes()).unwrap();
    let kinds: Vec<char> = sdp.extra_lines.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec!['i', 'k', 'x']);
    let media_kinds: Vec<char> = sdp.media[0].extra_lines.iter().map(|e| e.kind).collect();
    assert_eq!(media_kinds, vec!['i', 'k']);
    assert_eq!(parse(sdp.to_string().as_bytes()).unwrap(), sdp);
}
