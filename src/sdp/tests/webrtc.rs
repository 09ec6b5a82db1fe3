//! DTLS-SRTP offers as browsers and aiortc make them, and the ICE-lite answers we give.

use super::crlf;
use crate::sdp::{
    parse, Codec, Direction, DtlsRole, LocalSession, NegotiationError, SessionDescription,
    WebRtcLocal,
};

/// An audio-only offer from Chromium: placeholder `c=`/port 9, trickle, RED and CN beside
/// Opus, telephone-event at two clocks.
const CHROMIUM: &str = "v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=extmap-allow-mixed
a=msid-semantic: WMS
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1 1 udp 2113937151 127.0.0.1 50000 typ host generation 0 network-cost 999
a=ice-ufrag:EsAw
a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y
a=ice-options:trickle
a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=sendrecv
a=msid:- 75b9fb6b-1d40-4ddb-a3a0-1fa5a3d8c9c0
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:1234 cname:abc
";

/// Firefox's habit: the fingerprint and ICE credentials at session level.
const FIREFOX: &str = "v=0
o=mozilla...THIS_IS_SDPARTA-99.0 5089 0 IN IP4 0.0.0.0
s=-
t=0 0
a=fingerprint:sha-256 0A:39:48:6A:72:6B:6D:04:8B:8F:04:C6:C1:94:46:0B:2F:54:31:1C:8C:7C:07:9B:E0:BE:48:BA:1D:27:44:1D
a=group:BUNDLE 0
a=ice-options:trickle
a=msid-semantic:WMS *
m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101
c=IN IP4 0.0.0.0
a=sendrecv
a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1
a=fmtp:101 0-15
a=ice-pwd:9a3c1e8d0bbfbbf1f1b8ce2f8d0c0a7e
a=ice-ufrag:5c1ed2a4
a=mid:0
a=rtcp-mux
a=rtpmap:109 opus/48000/2
a=rtpmap:9 G722/8000/1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=setup:actpass
";

const LOCAL_FP: &str = "sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF";

fn local_webrtc() -> LocalSession {
    LocalSession::new(7, "127.0.0.1:40000".parse().unwrap())
        .with_codecs(vec![Codec::Pcmu, Codec::Pcma])
        .with_webrtc(WebRtcLocal {
            ufrag: "Ab12".into(),
            pwd: "0123456789abcdefghijkl".into(),
            fingerprint: LOCAL_FP.parse().unwrap(),
            candidate: "127.0.0.1:40000".parse().unwrap(),
            codecs: vec![Codec::Pcmu, Codec::Pcma],
        })
}

fn sdp(text: &str) -> SessionDescription {
    parse(crlf(text).as_bytes()).unwrap()
}

/// `text` with every line for which `drop` holds removed.
fn without(text: &str, drop: impl Fn(&str) -> bool) -> String {
    text.lines()
        .filter(|l| !drop(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn a_chromium_offer_gets_an_ice_lite_passive_answer_in_its_bundle() {
    let answer = local_webrtc().answer(&sdp(CHROMIUM)).unwrap();
    assert_eq!(
        answer.sdp.to_string(),
        crlf(
            "v=0
o=- 7 0 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
a=ice-lite
a=group:BUNDLE 0
m=audio 40000 UDP/TLS/RTP/SAVPF 0 126
a=rtpmap:0 PCMU/8000
a=rtpmap:126 telephone-event/8000
a=fmtp:126 0-16
a=ptime:20
a=sendrecv
a=extmap:1/recvonly urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=rtcp-mux
a=mid:0
a=ice-ufrag:Ab12
a=ice-pwd:0123456789abcdefghijkl
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF
a=setup:passive
a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host
a=end-of-candidates
"
        )
    );
    let m = answer.media;
    // The placeholder c=0.0.0.0 is no hold, and no address to send to: ICE decides.
    assert_eq!(m.direction, Direction::SendRecv);
    assert_eq!((m.remote_rtp, m.remote_rtcp), (None, None));
    assert!(m.rtcp_mux);
    assert!(m.srtp.is_none());
    let w = m.webrtc.expect("a DTLS-SRTP stream");
    assert_eq!(
        (w.ufrag.as_str(), w.pwd.as_str()),
        ("EsAw", "bP+XJMM09aR8AiX1jdukzR6Y")
    );
    assert_eq!(w.role, DtlsRole::Server);
    assert_eq!(w.mid.as_deref(), Some("0"));
    assert!(w.fingerprint.to_string().starts_with("sha-256 D2:FA:"));
}

#[test]
fn session_level_credentials_and_fingerprint_are_read() {
    let m = local_webrtc().answer(&sdp(FIREFOX)).unwrap().media;
    let w = m.webrtc.unwrap();
    assert_eq!(w.ufrag, "5c1ed2a4");
    assert!(w.fingerprint.to_string().starts_with("sha-256 0A:39"));
    assert_eq!(m.telephone_event_rate, 8000);
}

#[test]
fn the_dtls_role_follows_the_offers_setup() {
    for (setup, role, answered) in [
        ("actpass", DtlsRole::Server, "passive"),
        ("active", DtlsRole::Server, "passive"),
        ("passive", DtlsRole::Client, "active"),
    ] {
        let text = CHROMIUM.replace("a=setup:actpass", &format!("a=setup:{setup}"));
        let answer = local_webrtc().answer(&sdp(&text)).unwrap();
        assert_eq!(answer.media.webrtc.unwrap().role, role, "{setup}");
        assert!(answer
            .sdp
            .to_string()
            .contains(&format!("a=setup:{answered}\r\n")));
    }
    let text = CHROMIUM.replace("a=setup:actpass", "a=setup:holdconn");
    assert_eq!(
        local_webrtc().answer(&sdp(&text)).unwrap_err(),
        NegotiationError::NoDtlsRole
    );
}

#[test]
fn an_offer_without_fingerprint_or_ice_credentials_is_refused_with_its_reason() {
    let bare = without(CHROMIUM, |l| l.starts_with("a=fingerprint"));
    assert_eq!(
        local_webrtc().answer(&sdp(&bare)).unwrap_err(),
        NegotiationError::NoFingerprint
    );
    let malformed = CHROMIUM.replace("a=fingerprint:sha-256 D2", "a=fingerprint:sha-256D2");
    assert_eq!(
        local_webrtc().answer(&sdp(&malformed)).unwrap_err(),
        NegotiationError::NoFingerprint
    );
    // Only SHA-256 can be checked; a peer listing several hashes is held to that one.
    let sha1 = CHROMIUM.replace(
        "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F",
        "a=fingerprint:sha-1 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0",
    );
    assert_eq!(
        local_webrtc().answer(&sdp(&sha1)).unwrap_err(),
        NegotiationError::NoFingerprint
    );
    let both = CHROMIUM.replace(
        "a=fingerprint:sha-256",
        "a=fingerprint:sha-1 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0\na=fingerprint:sha-256",
    );
    let w = local_webrtc()
        .answer(&sdp(&both))
        .unwrap()
        .media
        .webrtc
        .unwrap();
    assert!(w.fingerprint.to_string().starts_with("sha-256 D2:FA:"));
    let no_ice = without(CHROMIUM, |l| l.starts_with("a=ice-pwd"));
    assert_eq!(
        local_webrtc().answer(&sdp(&no_ice)).unwrap_err(),
        NegotiationError::NoIceCredentials
    );
}

#[test]
fn no_common_codec_names_what_was_offered() {
    let session = local_webrtc().with_codecs(vec![Codec::Pcma]);
    let only_opus = CHROMIUM.replace(
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    );
    match session.clone().answer(&sdp(&only_opus)) {
        Err(NegotiationError::NoCommonCodec { offered, supported }) => {
            assert_eq!(offered, "opus");
            // The codecs a WebRTC offer is matched against, not the SIP ones.
            assert_eq!(supported, "PCMU, PCMA");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_webrtc_the_profile_stays_unsupported() {
    let plain = LocalSession::new(7, "127.0.0.1:40000".parse().unwrap());
    assert_eq!(
        plain.clone().answer(&sdp(CHROMIUM)).unwrap_err(),
        NegotiationError::UnsupportedTransport("UDP/TLS/RTP/SAVPF".into())
    );
}

#[test]
fn a_re_answer_keeps_our_credentials_and_version() {
    let mut session = local_webrtc();
    let first = session.answer(&sdp(CHROMIUM)).unwrap().sdp;
    let again = session.answer(&sdp(CHROMIUM)).unwrap().sdp;
    assert_eq!(first, again);
}
