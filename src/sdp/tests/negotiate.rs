use std::net::SocketAddr;

use super::{crlf, ASTERISK, FREESWITCH, LINPHONE};
use crate::sdp::{
    parse, Codec, Direction, LocalSession, MediaKind, NegotiationError, PayloadType,
    SessionDescription,
};

fn local() -> LocalSession {
    LocalSession::new(42, "192.0.2.10:40000".parse().unwrap())
}

fn sdp(text: &str) -> SessionDescription {
    parse(text.as_bytes()).unwrap()
}

fn pt(n: u8) -> PayloadType {
    PayloadType::new(n).unwrap()
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

/// A plain offer whose audio m-line and attributes are given.
fn offer_with(m_line: &str, attrs: &str) -> SessionDescription {
    sdp(&format!(
        "v=0\no=- 9 9 IN IP4 198.51.100.1\ns=-\nc=IN IP4 198.51.100.1\nt=0 0\n{m_line}\n{attrs}"
    ))
}

fn audio_offer(attrs: &str) -> SessionDescription {
    offer_with(
        "m=audio 20000 RTP/AVP 0 8 101",
        &format!("a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\n{attrs}"),
    )
}

#[test]
fn answers_freeswitch_offer() {
    let answer = local().answer(&sdp(FREESWITCH)).unwrap();
    assert_eq!(
        answer.sdp.to_string(),
        crlf(
            "v=0
o=- 42 0 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 40000 RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
"
        )
    );
    let m = answer.media;
    assert_eq!(m.codec, Codec::Pcma);
    assert_eq!(m.payload_type, pt(8));
    assert_eq!(m.clock_rate, 8000);
    assert_eq!(m.telephone_event_pt, Some(pt(101)));
    assert_eq!(m.ptime_ms, 20);
    assert_eq!(m.remote_rtp, addr("10.0.0.5:16384"));
    assert_eq!(m.remote_rtcp, addr("10.0.0.5:16385"));
    assert_eq!(m.direction, Direction::SendRecv);
    assert!(!m.rtcp_mux);
}

#[test]
fn answers_asterisk_offer() {
    let answer = local().answer(&sdp(ASTERISK)).unwrap();
    let m = answer.media;
    assert_eq!((m.codec, m.payload_type), (Codec::Pcmu, pt(0)));
    assert_eq!(m.telephone_event_pt, Some(pt(101)));
    assert_eq!(m.remote_rtp, addr("203.0.113.7:10000"));
    assert_eq!(m.remote_rtcp, addr("203.0.113.7:10001"));
    assert_eq!(m.ptime_ms, 20);
    assert_eq!(answer.sdp.media[0].formats, vec!["0", "101"]);
}

#[test]
fn answers_linphone_offer_rejecting_video() {
    let answer = local().answer(&sdp(LINPHONE)).unwrap();
    assert_eq!(answer.sdp.media.len(), 2);
    let audio = &answer.sdp.media[0];
    // Opus and Speex come first in the offer but are unsupported; PCMU is the first we know.
    assert_eq!(answer.media.codec, Codec::Pcmu);
    // Only the 8000 Hz telephone-event matches PCMU's clock.
    assert_eq!(answer.media.telephone_event_pt, Some(pt(100)));
    assert_eq!(audio.formats, vec!["0", "100"]);
    assert_eq!(audio.attributes.fmtp(pt(100)), Some("0-16"));
    let video = &answer.sdp.media[1];
    assert_eq!(video.kind, MediaKind::Video);
    assert_eq!(video.port, 0);
    assert_eq!(video.proto, "RTP/AVP");
    assert_eq!(video.formats, vec!["96", "97"]);
    assert!(video.attributes.is_empty());
    assert_eq!(
        parse(answer.sdp.to_string().as_bytes()).unwrap(),
        answer.sdp
    );
}

#[test]
fn video_first_then_audio_keeps_order() {
    let offer = sdp("v=0
o=- 1 1 IN IP4 198.51.100.1
s=-
c=IN IP4 198.51.100.1
t=0 0
m=video 30000 RTP/AVP 96
a=rtpmap:96 H264/90000
m=audio 20000 RTP/AVP 8
m=audio 20002 RTP/AVP 0
");
    let answer = local().answer(&offer).unwrap();
    let ports: Vec<u16> = answer.sdp.media.iter().map(|m| m.port).collect();
    assert_eq!(ports, vec![0, 40000, 0]);
    assert_eq!(answer.sdp.media[2].formats, vec!["0"]);
    assert_eq!(answer.media.codec, Codec::Pcma);
    assert_eq!(answer.media.remote_rtp, addr("198.51.100.1:20000"));
}

#[test]
fn offerer_order_decides_the_codec() {
    let a = local()
        .answer(&offer_with("m=audio 20000 RTP/AVP 8 0", ""))
        .unwrap();
    assert_eq!(a.media.codec, Codec::Pcma);
    let a = local()
        .answer(&offer_with("m=audio 20000 RTP/AVP 0 8", ""))
        .unwrap();
    assert_eq!(a.media.codec, Codec::Pcmu);
    assert_eq!(a.media.telephone_event_pt, None);
    assert_eq!(a.sdp.media[0].formats, vec!["0"]);
    assert!(a.sdp.media[0].attributes.fmtp(pt(101)).is_none());
}

#[test]
fn pcma_only_local_session() {
    let mut l = local().with_codecs(vec![Codec::Pcma]);
    let a = l
        .answer(&offer_with("m=audio 20000 RTP/AVP 0 8", ""))
        .unwrap();
    assert_eq!(a.media.codec, Codec::Pcma);
}

#[test]
fn rtpmap_overrides_static_payload_type() {
    // PT 0 remapped to G729 must not be taken for PCMU; a dynamic PT named PCMU is fine.
    let offer = offer_with(
        "m=audio 20000 RTP/AVP 0 110",
        "a=rtpmap:0 G729/8000\na=rtpmap:110 pcmu/8000\n",
    );
    let a = local().answer(&offer).unwrap();
    assert_eq!(
        (a.media.codec, a.media.payload_type),
        (Codec::Pcmu, pt(110))
    );
    assert_eq!(a.sdp.media[0].formats, vec!["110"]);
}

#[test]
fn telephone_event_echoes_the_offered_pt() {
    for n in [96, 101, 127] {
        let offer = offer_with(
            &format!("m=audio 20000 RTP/AVP 0 {n}"),
            &format!("a=rtpmap:{n} telephone-event/8000\n"),
        );
        let a = local().answer(&offer).unwrap();
        assert_eq!(a.media.telephone_event_pt, Some(pt(n)), "PT {n}");
        let m = &a.sdp.media[0];
        assert_eq!(m.formats, vec!["0".to_string(), n.to_string()]);
        assert_eq!(
            m.attributes.rtpmap(pt(n)).map(|r| r.encoding),
            Some("telephone-event".to_string())
        );
        assert_eq!(m.attributes.fmtp(pt(n)), Some("0-16"));
    }
}

#[test]
fn telephone_event_echoes_the_offered_range() {
    let a = local().answer(&audio_offer("")).unwrap();
    assert_eq!(a.sdp.media[0].attributes.fmtp(pt(101)), Some("0-15"));
}

#[test]
fn telephone_event_at_another_rate_is_not_taken() {
    let offer = offer_with(
        "m=audio 20000 RTP/AVP 0 101",
        "a=rtpmap:101 telephone-event/48000\n",
    );
    let a = local().answer(&offer).unwrap();
    assert_eq!(a.media.telephone_event_pt, None);
    assert_eq!(a.sdp.media[0].formats, vec!["0"]);
}

#[test]
fn a_wideband_codec_takes_the_8_khz_telephone_event_when_it_is_the_only_one() {
    let wide = || {
        LocalSession::new(42, "192.0.2.10:40000".parse().unwrap()).with_codecs(vec![Codec::L16Wide])
    };
    // baresip offers Opus or L16/16000 beside telephone-event/8000 alone.
    let offer = offer_with(
        "m=audio 20000 RTP/AVP 96 101",
        "a=rtpmap:96 L16/16000\na=rtpmap:101 telephone-event/8000\n",
    );
    let a = wide().answer(&offer).unwrap();
    assert_eq!(a.media.telephone_event_pt, Some(pt(101)));
    assert_eq!(a.media.telephone_event_rate, 8000);
    assert_eq!(a.media.clock_rate, 16000);
    assert!(
        a.sdp
            .to_string()
            .contains("a=rtpmap:101 telephone-event/8000"),
        "{}",
        a.sdp
    );
    // One at the codec's own clock is preferred.
    let offer = offer_with(
        "m=audio 20000 RTP/AVP 96 101 102",
        "a=rtpmap:96 L16/16000\na=rtpmap:101 telephone-event/8000\na=rtpmap:102 telephone-event/16000\n",
    );
    let a = wide().answer(&offer).unwrap();
    assert_eq!(a.media.telephone_event_pt, Some(pt(102)));
    assert_eq!(a.media.telephone_event_rate, 16000);
}

#[test]
fn directions_are_mirrored() {
    for (offered, ours) in [
        ("sendrecv", Direction::SendRecv),
        ("sendonly", Direction::RecvOnly),
        ("recvonly", Direction::SendOnly),
        ("inactive", Direction::Inactive),
    ] {
        let a = local()
            .answer(&audio_offer(&format!("a={offered}\n")))
            .unwrap();
        assert_eq!(a.media.direction, ours, "offer {offered}");
        assert_eq!(a.sdp.media[0].attributes.direction(), Some(ours));
        assert!(a.media.remote_rtp.is_some());
    }
    let a = local().answer(&audio_offer("")).unwrap();
    assert_eq!(a.media.direction, Direction::SendRecv);
}

#[test]
fn session_level_direction_applies() {
    let offer = sdp("v=0
o=- 1 1 IN IP4 198.51.100.1
s=-
c=IN IP4 198.51.100.1
t=0 0
a=sendonly
m=audio 20000 RTP/AVP 0
");
    assert_eq!(
        local().answer(&offer).unwrap().media.direction,
        Direction::RecvOnly
    );
}

#[test]
fn old_style_hold_is_sendonly_from_the_peer() {
    let offer = sdp(&crlf(ASTERISK).replace("c=IN IP4 203.0.113.7", "c=IN IP4 0.0.0.0"));
    let a = local().answer(&offer).unwrap();
    assert_eq!(a.media.direction, Direction::RecvOnly);
    assert_eq!(a.media.remote_rtp, None);
    assert_eq!(a.media.remote_rtcp, None);
    // Our answer still carries our real address.
    assert_eq!(a.sdp.connection.as_ref().unwrap().address, "192.0.2.10");

    let offer = sdp(&crlf(ASTERISK)
        .replace("c=IN IP4 203.0.113.7", "c=IN IP4 0.0.0.0")
        .replace("a=sendrecv", "a=recvonly"));
    assert_eq!(
        local().answer(&offer).unwrap().media.direction,
        Direction::Inactive
    );
}

#[test]
fn media_level_hold_address() {
    let offer = offer_with("m=audio 20000 RTP/AVP 0", "c=IN IP4 0.0.0.0\n");
    let a = local().answer(&offer).unwrap();
    assert_eq!(a.media.direction, Direction::RecvOnly);
    assert_eq!(a.media.remote_rtp, None);
}

#[test]
fn ptime_rules() {
    for (attrs, want) in [
        ("", 20),
        ("a=ptime:10\n", 10),
        ("a=ptime:30\n", 30),
        ("a=ptime:60\n", 60),
        ("a=ptime:25\n", 20),
        ("a=ptime:5\n", 20),
        ("a=ptime:80\n", 20),
        ("a=ptime:abc\n", 20),
        ("a=ptime:30\na=maxptime:20\n", 20),
        ("a=maxptime:10\n", 10),
        ("a=maxptime:5\n", 20),
    ] {
        let a = local().answer(&audio_offer(attrs)).unwrap();
        assert_eq!(a.media.ptime_ms, want, "{attrs:?}");
        assert_eq!(a.sdp.media[0].attributes.ptime(), Some(want));
    }
    let a = local().with_ptime(30).answer(&audio_offer("")).unwrap();
    assert_eq!(a.media.ptime_ms, 30);
}

#[test]
fn rtcp_mux_is_echoed() {
    let a = local().answer(&audio_offer("a=rtcp-mux\n")).unwrap();
    assert!(a.media.rtcp_mux);
    assert!(a.sdp.media[0].attributes.rtcp_mux());
    assert_eq!(a.media.remote_rtcp, addr("198.51.100.1:20000"));
    let a = local().answer(&audio_offer("")).unwrap();
    assert!(!a.sdp.media[0].attributes.rtcp_mux());
}

#[test]
fn rtcp_attribute_sets_the_rtcp_address() {
    let a = local().answer(&audio_offer("a=rtcp:20005\n")).unwrap();
    assert_eq!(a.media.remote_rtcp, addr("198.51.100.1:20005"));
    let a = local()
        .answer(&audio_offer("a=rtcp:9 IN IP4 198.51.100.99\n"))
        .unwrap();
    assert_eq!(a.media.remote_rtcp, addr("198.51.100.99:9"));
}

#[test]
fn avpf_is_accepted_and_echoed() {
    let a = local()
        .answer(&offer_with("m=audio 20000 RTP/AVPF 0", ""))
        .unwrap();
    assert_eq!(a.sdp.media[0].proto, "RTP/AVPF");
}

#[test]
fn ipv6_offer_and_ipv6_local_session() {
    let offer = sdp("v=0
o=- 1 1 IN IP6 2001:db8::5
s=-
c=IN IP6 2001:db8::5
t=0 0
m=audio 20000 RTP/AVP 0
");
    let mut l = LocalSession::new(1, "[2001:db8::10]:40000".parse().unwrap());
    let a = l.answer(&offer).unwrap();
    assert_eq!(a.media.remote_rtp, addr("[2001:db8::5]:20000"));
    let text = a.sdp.to_string();
    assert!(text.contains("o=- 1 0 IN IP6 2001:db8::10\r\n"), "{text}");
    assert!(text.contains("c=IN IP6 2001:db8::10\r\n"), "{text}");
}

#[test]
fn no_common_codec() {
    let offer = offer_with(
        "m=audio 20000 RTP/AVP 18 96 101",
        "a=rtpmap:96 opus/48000/2\na=rtpmap:101 telephone-event/8000\n",
    );
    let e = local().answer(&offer).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no common audio codec (offered: G729, opus, telephone-event; supported: PCMU, PCMA)"
    );
}

#[test]
fn pcmu_at_wrong_rate_is_not_common() {
    let offer = offer_with("m=audio 20000 RTP/AVP 96", "a=rtpmap:96 PCMU/16000\n");
    assert!(matches!(
        local().answer(&offer),
        Err(NegotiationError::NoCommonCodec { .. })
    ));
}

#[test]
fn no_audio_stream() {
    let video_only = sdp("v=0
o=- 1 1 IN IP4 198.51.100.1
s=-
c=IN IP4 198.51.100.1
t=0 0
m=video 30000 RTP/AVP 96
a=rtpmap:96 H264/90000
");
    assert_eq!(
        local().answer(&video_only).unwrap_err(),
        NegotiationError::NoAudioStream
    );
    let disabled = offer_with("m=audio 0 RTP/AVP 0", "");
    assert_eq!(
        local().answer(&disabled).unwrap_err().to_string(),
        "no audio stream"
    );
    let no_media = sdp("v=0\no=- 1 1 IN IP4 198.51.100.1\ns=-\nt=0 0\n");
    assert_eq!(
        local().answer(&no_media).unwrap_err(),
        NegotiationError::NoAudioStream
    );
}

#[test]
fn unsupported_transport() {
    let offer = offer_with("m=audio 20000 UDP/TLS/RTP/SAVPF 0", "");
    assert_eq!(
        local().answer(&offer).unwrap_err().to_string(),
        "unsupported transport UDP/TLS/RTP/SAVPF"
    );
}

#[test]
fn srtp_first_then_plain_audio_picks_the_plain_one() {
    let offer = sdp("v=0
o=- 1 1 IN IP4 198.51.100.1
s=-
c=IN IP4 198.51.100.1
t=0 0
m=audio 20000 RTP/SAVP 0
m=audio 20002 RTP/AVP 0
");
    let a = local().answer(&offer).unwrap();
    assert_eq!(a.sdp.media[0].port, 0);
    assert_eq!(a.sdp.media[1].port, 40000);
    assert_eq!(a.media.remote_rtp, addr("198.51.100.1:20002"));
}

#[test]
fn missing_connection_address() {
    let offer = sdp("v=0\no=- 1 1 IN IP4 198.51.100.1\ns=-\nt=0 0\nm=audio 20000 RTP/AVP 0\n");
    assert_eq!(
        local().answer(&offer).unwrap_err(),
        NegotiationError::NoConnectionAddress
    );
}

#[test]
fn version_is_stable_for_the_same_answer_and_bumps_on_change() {
    let mut l = local();
    let first = l.answer(&audio_offer("a=sendrecv\n")).unwrap().sdp;
    assert_eq!(first.origin.session_version, 0);
    // A refresh re-INVITE with the same media.
    let again = l.answer(&audio_offer("a=sendrecv\n")).unwrap().sdp;
    assert_eq!(again, first);
    // Hold: our answer changes to recvonly.
    let hold = l.answer(&audio_offer("a=sendonly\n")).unwrap().sdp;
    assert_eq!(hold.origin.session_version, 1);
    assert_eq!(hold.origin.session_id, 42);
    let hold_again = l.answer(&audio_offer("a=sendonly\n")).unwrap().sdp;
    assert_eq!(hold_again.origin.session_version, 1);
    // Resume.
    let resume = l.answer(&audio_offer("a=sendrecv\n")).unwrap().sdp;
    assert_eq!(resume.origin.session_version, 2);
    assert_eq!(l.session_version(), 2);
    // A failed negotiation changes nothing.
    assert!(l
        .answer(&offer_with("m=audio 20000 RTP/AVP 18", ""))
        .is_err());
    assert_eq!(l.session_version(), 2);
    // Moving our media is a change.
    l.set_media_addr("192.0.2.10:40002".parse().unwrap());
    let moved = l.answer(&audio_offer("a=sendrecv\n")).unwrap().sdp;
    assert_eq!(moved.origin.session_version, 3);
    assert_eq!(l.last_sdp(), Some(&moved));
}

#[test]
fn our_offer() {
    let mut l = local();
    let offer = l.offer();
    assert_eq!(
        offer.to_string(),
        crlf(
            "v=0
o=- 42 0 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 40000 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
a=extmap:1/recvonly urn:ietf:params:rtp-hdrext:ssrc-audio-level
"
        )
    );
    // Offering the same thing again keeps the version.
    assert_eq!(l.offer().origin.session_version, 0);
}

fn answer_to_ours(m_line: &str, attrs: &str) -> SessionDescription {
    sdp(&format!(
        "v=0\no=peer 5 5 IN IP4 198.51.100.7\ns=-\nc=IN IP4 198.51.100.7\nt=0 0\n{m_line}\n{attrs}"
    ))
}

#[test]
fn accept_answer_takes_the_peers_choice() {
    let mut l = local();
    l.offer();
    let m = l
        .accept_answer(&answer_to_ours(
            "m=audio 30000 RTP/AVP 8 101",
            "a=rtpmap:8 PCMA/8000\na=rtpmap:101 telephone-event/8000\na=ptime:30\n",
        ))
        .unwrap();
    assert_eq!((m.codec, m.payload_type), (Codec::Pcma, pt(8)));
    assert_eq!(m.telephone_event_pt, Some(pt(101)));
    assert_eq!(m.ptime_ms, 30);
    assert_eq!(m.remote_rtp, addr("198.51.100.7:30000"));
    assert_eq!(m.remote_rtcp, addr("198.51.100.7:30001"));
    assert_eq!(m.direction, Direction::SendRecv);
    assert!(!m.rtcp_mux);
}

#[test]
fn accept_answer_uses_our_rtpmap_when_the_answer_omits_it() {
    let mut l = local();
    l.offer();
    let m = l
        .accept_answer(&answer_to_ours("m=audio 30000 RTP/AVP 0 101", ""))
        .unwrap();
    assert_eq!(m.codec, Codec::Pcmu);
    assert_eq!(m.telephone_event_pt, Some(pt(101)));
}

#[test]
fn accept_answer_directions() {
    for (answered, ours) in [
        ("a=sendrecv\n", Direction::SendRecv),
        ("a=recvonly\n", Direction::SendOnly),
        ("a=sendonly\n", Direction::RecvOnly),
        ("a=inactive\n", Direction::Inactive),
        ("c=IN IP4 0.0.0.0\n", Direction::RecvOnly),
    ] {
        let mut l = local();
        l.offer();
        let m = l
            .accept_answer(&answer_to_ours("m=audio 30000 RTP/AVP 0", answered))
            .unwrap();
        assert_eq!(m.direction, ours, "{answered:?}");
    }
}

#[test]
fn accept_answer_errors() {
    let mut l = local();
    assert_eq!(
        l.accept_answer(&answer_to_ours("m=audio 30000 RTP/AVP 0", "")),
        Err(NegotiationError::NoPendingOffer)
    );
    l.offer();
    assert_eq!(
        l.accept_answer(&answer_to_ours("m=audio 0 RTP/AVP 0", "")),
        Err(NegotiationError::AudioRejected)
    );
    l.offer();
    let two = answer_to_ours("m=audio 30000 RTP/AVP 0", "m=video 0 RTP/AVP 96\n");
    assert_eq!(
        l.accept_answer(&two),
        Err(NegotiationError::MediaCountMismatch {
            offer: 1,
            answer: 2
        })
    );
    l.offer();
    let e = l
        .accept_answer(&answer_to_ours("m=audio 30000 RTP/AVP 18", ""))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no common audio codec (offered: G729; supported: PCMU, PCMA)"
    );
}

#[test]
fn offer_and_answer_between_two_local_sessions() {
    let mut caller = LocalSession::new(1, "192.0.2.1:10000".parse().unwrap());
    let mut callee = LocalSession::new(2, "192.0.2.2:20000".parse().unwrap());
    let offer = parse(caller.offer().to_string().as_bytes()).unwrap();
    let answer = callee.answer(&offer).unwrap();
    let wire = parse(answer.sdp.to_string().as_bytes()).unwrap();
    let ours = caller.accept_answer(&wire).unwrap();
    assert_eq!(ours.codec, answer.media.codec);
    assert_eq!(ours.payload_type, answer.media.payload_type);
    assert_eq!(ours.telephone_event_pt, Some(pt(101)));
    assert_eq!(ours.remote_rtp, addr("192.0.2.2:20000"));
    assert_eq!(answer.media.remote_rtp, addr("192.0.2.1:10000"));
}
