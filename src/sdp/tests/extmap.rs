//! RFC 8285 `a=extmap` parsing and the RFC 6464 audio level in offer/answer.

use proptest::prelude::*;

use crate::sdp::{
    parse, Direction, ExtMap, ExtMapError, LocalSession, SessionDescription, AUDIO_LEVEL_URI,
};

fn local() -> LocalSession {
    LocalSession::new(42, "192.0.2.10:40000".parse().unwrap())
}

fn sdp(text: &str) -> SessionDescription {
    parse(text.as_bytes()).unwrap()
}

fn offer(extmaps: &str) -> SessionDescription {
    sdp(&format!(
        "v=0\no=- 9 9 IN IP4 198.51.100.1\ns=-\nc=IN IP4 198.51.100.1\nt=0 0\n\
         m=audio 20000 RTP/AVP 0\n{extmaps}"
    ))
}

fn answered_extmaps(offer_sdp: &SessionDescription) -> (Vec<String>, Option<u8>) {
    let a = local().answer(offer_sdp).unwrap();
    let lines = a.sdp.media[0]
        .attributes
        .values("extmap")
        .map(str::to_owned)
        .collect();
    (lines, a.media.audio_level_id())
}

#[test]
fn parses_the_rfc_8285_forms() {
    let e: ExtMap = "1 urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on"
        .parse()
        .unwrap();
    assert_eq!(e.id, 1);
    assert_eq!(e.direction, None);
    assert!(e.is_audio_level());
    assert_eq!(e.attributes.as_deref(), Some("vad=on"));
    let e: ExtMap = "14/sendonly urn:x".parse().unwrap();
    assert_eq!((e.id, e.direction), (14, Some(Direction::SendOnly)));
    assert!(e.is_one_byte());
    let e: ExtMap = "15 urn:x".parse().unwrap();
    assert!(!e.is_one_byte());
    assert_eq!("255 urn:x".parse::<ExtMap>().map(|e| e.id), Ok(255));
    assert_eq!("4096 urn:x".parse::<ExtMap>().map(|e| e.id), Ok(4096));
    assert_eq!("4351 urn:x".parse::<ExtMap>().map(|e| e.id), Ok(4351));
    assert_eq!("0 urn:x".parse::<ExtMap>(), Err(ExtMapError::Id));
    assert_eq!("256 urn:x".parse::<ExtMap>(), Err(ExtMapError::Id));
    assert_eq!("4352 urn:x".parse::<ExtMap>(), Err(ExtMapError::Id));
    assert_eq!("x urn:x".parse::<ExtMap>(), Err(ExtMapError::Id));
    assert_eq!("1/up urn:x".parse::<ExtMap>(), Err(ExtMapError::Direction));
    assert_eq!("1".parse::<ExtMap>(), Err(ExtMapError::Uri));
    assert_eq!("1 ".parse::<ExtMap>(), Err(ExtMapError::Uri));
}

#[test]
fn an_offered_audio_level_is_answered_with_its_id_receiving() {
    let (lines, id) = answered_extmaps(&offer(
        "a=extmap:3 urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on\n",
    ));
    assert_eq!(lines, vec![format!("3/recvonly {AUDIO_LEVEL_URI} vad=on")]);
    assert_eq!(id, Some(3));
    // The URI is compared without regard to case; a sendonly offer is taken too.
    let (lines, id) = answered_extmaps(&offer(
        "a=extmap:14/sendonly URN:IETF:PARAMS:RTP-HDREXT:SSRC-AUDIO-LEVEL\n",
    ));
    assert_eq!(lines.len(), 1);
    assert_eq!(id, Some(14));
}

#[test]
fn unusable_or_unknown_mappings_are_never_answered() {
    for extmaps in [
        // Outside the one-byte range, or not parseable at all.
        "a=extmap:15 urn:ietf:params:rtp-hdrext:ssrc-audio-level\n",
        "a=extmap:16 urn:ietf:params:rtp-hdrext:ssrc-audio-level\n",
        "a=extmap:0 urn:ietf:params:rtp-hdrext:ssrc-audio-level\n",
        // The offerer would not send it.
        "a=extmap:1/recvonly urn:ietf:params:rtp-hdrext:ssrc-audio-level\n",
        "a=extmap:1/inactive urn:ietf:params:rtp-hdrext:ssrc-audio-level\n",
        // Extensions we do not read.
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\n\
         a=extmap:2 urn:ietf:params:rtp-hdrext:csrc-audio-level\n",
        "",
    ] {
        let (lines, id) = answered_extmaps(&offer(extmaps));
        assert!(lines.is_empty(), "{extmaps}: {lines:?}");
        assert_eq!(id, None, "{extmaps}");
    }
    // Beside an unknown one, the audio level alone is answered.
    let (lines, id) = answered_extmaps(&offer(
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\n\
         a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level\n",
    ));
    assert_eq!(lines, vec![format!("2/recvonly {AUDIO_LEVEL_URI}")]);
    assert_eq!(id, Some(2));
}

#[test]
fn a_reinvite_adds_and_removes_the_audio_level() {
    let mut l = local();
    let with = offer("a=extmap:5 urn:ietf:params:rtp-hdrext:ssrc-audio-level\n");
    let without = offer("");
    assert_eq!(l.answer(&without).unwrap().media.audio_level_id(), None);
    let added = l.answer(&with).unwrap();
    assert_eq!(added.media.audio_level_id(), Some(5));
    assert_eq!(added.sdp.origin.session_version, 1);
    let removed = l.answer(&without).unwrap();
    assert_eq!(removed.media.audio_level_id(), None);
    assert!(!removed.sdp.media[0].attributes.has("extmap"));
}

#[test]
fn our_offer_asks_for_the_audio_level_and_takes_the_answers_id() {
    let mut l = local();
    let ours = l.offer();
    let maps: Vec<ExtMap> = ours.media[0].attributes.extmaps().collect();
    assert_eq!(maps.len(), 1);
    assert!(maps[0].is_audio_level() && maps[0].is_one_byte());
    assert_eq!(maps[0].direction, Some(Direction::RecvOnly));
    let answer = |extmap: &str| {
        sdp(&format!(
            "v=0\no=- 1 1 IN IP4 198.51.100.2\ns=-\nc=IN IP4 198.51.100.2\nt=0 0\n\
             m=audio 30000 RTP/AVP 0\n{extmap}"
        ))
    };
    let agreed = l
        .accept_answer(&answer(
            "a=extmap:1/sendonly urn:ietf:params:rtp-hdrext:ssrc-audio-level\n",
        ))
        .unwrap();
    assert_eq!(agreed.audio_level_id(), Some(1));
    l.offer();
    let refused = l.accept_answer(&answer("")).unwrap();
    assert_eq!(refused.audio_level_id(), None);
    l.offer();
    let not_sent = l
        .accept_answer(&answer(
            "a=extmap:1/recvonly urn:ietf:params:rtp-hdrext:ssrc-audio-level\n",
        ))
        .unwrap();
    assert_eq!(not_sent.audio_level_id(), None);
}

proptest! {
    #[test]
    fn extmap_values_never_panic_and_round_trip(value in "[ -~]{0,40}") {
        if let Ok(e) = value.parse::<ExtMap>() {
            prop_assert_eq!(e.to_string().parse::<ExtMap>(), Ok(e));
        }
    }

    #[test]
    fn written_extmaps_parse_back(
        id in prop_oneof![1u16..=255, 4096u16..=4351],
        direction in proptest::option::of(prop_oneof![
            Just(Direction::SendRecv),
            Just(Direction::SendOnly),
            Just(Direction::RecvOnly),
            Just(Direction::Inactive),
        ]),
        uri in "[!-~]{1,30}",
        attributes in proptest::option::of("[!-~]{1,8}( [!-~]{1,8})?"),
    ) {
        let e = ExtMap { id, direction, uri, attributes };
        prop_assert_eq!(e.to_string().parse::<ExtMap>(), Ok(e));
    }
}
