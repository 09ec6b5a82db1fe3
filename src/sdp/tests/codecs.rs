//! Codec negotiation by preference: the configured list, generous and greedy choice,
//! telephone-event at the codec's RTP clock, wideband codecs in our offers and answers.

use super::{crlf, LINPHONE};
use crate::error::SipStatus;
use crate::sdp::{parse, Codec, CodecChoice, LocalSession, PayloadType, SessionDescription};

fn local(codecs: &[Codec], choice: CodecChoice) -> LocalSession {
    LocalSession::new(42, "192.0.2.10:40000".parse().unwrap())
        .with_codecs(codecs.to_vec())
        .with_choice(choice)
}

fn sdp(text: &str) -> SessionDescription {
    parse(crlf(text).as_bytes()).unwrap()
}

fn pt(n: u8) -> PayloadType {
    PayloadType::new(n).unwrap()
}

const DEFAULT: &[Codec] = &[Codec::Pcmu, Codec::Pcma];
const BOTH: [CodecChoice; 2] = [CodecChoice::Generous, CodecChoice::Greedy];

/// baresip's default offer: PCMU, PCMA, G.722, opus/48000/2, telephone-event/8000.
const BARESIP: &str = "v=0
o=- 1 2 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 10000 RTP/AVP 0 8 9 96 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:9 G722/8000
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
";

fn offer(m_line: &str, attrs: &str) -> SessionDescription {
    sdp(&format!(
        "v=0\no=- 9 9 IN IP4 198.51.100.1\ns=-\nc=IN IP4 198.51.100.1\nt=0 0\n{m_line}\n{attrs}"
    ))
}

#[test]
fn default_list_answers_baresip_with_pcmu_either_way() {
    for choice in BOTH {
        let a = local(DEFAULT, choice).answer(&sdp(BARESIP)).unwrap();
        assert_eq!((a.media.codec, a.media.payload_type), (Codec::Pcmu, pt(0)));
        assert_eq!(a.media.telephone_event_pt, Some(pt(101)), "{choice:?}");
        assert_eq!(a.sdp.media[0].formats, vec!["0", "101"]);
    }
}

#[test]
fn wideband_list_answers_baresip_by_choice() {
    let ours = [Codec::G722, Codec::Pcma, Codec::Pcmu];
    // Generous: baresip's first format we allow is PCMU.
    let a = local(&ours, CodecChoice::Generous)
        .answer(&sdp(BARESIP))
        .unwrap();
    assert_eq!((a.media.codec, a.media.payload_type), (Codec::Pcmu, pt(0)));
    // Greedy: our G.722, offered third; its events run on the 8000 Hz clock too.
    let a = local(&ours, CodecChoice::Greedy)
        .answer(&sdp(BARESIP))
        .unwrap();
    assert_eq!((a.media.codec, a.media.payload_type), (Codec::G722, pt(9)));
    assert_eq!(a.media.clock_rate, 8000);
    assert_eq!(a.media.telephone_event_pt, Some(pt(101)));
    let m = &a.sdp.media[0];
    assert_eq!(m.formats, vec!["9", "101"]);
    assert_eq!(
        m.attributes.rtpmap(pt(9)).map(|r| r.to_string()),
        Some("9 G722/8000".to_string())
    );
}

#[test]
fn default_list_answers_linphone_with_pcmu_either_way() {
    for choice in BOTH {
        let a = local(DEFAULT, choice).answer(&sdp(LINPHONE)).unwrap();
        assert_eq!((a.media.codec, a.media.payload_type), (Codec::Pcmu, pt(0)));
        // Linphone offers events at 48000 (101), 16000 (99) and 8000 (100): PCMU takes 8000.
        assert_eq!(a.media.telephone_event_pt, Some(pt(100)), "{choice:?}");
    }
}

#[test]
fn wideband_list_answers_linphone_by_choice() {
    // Linphone offers no G.722: greedy falls through our list to the first one it has.
    let ours = [Codec::G722, Codec::Pcma, Codec::Pcmu];
    let a = local(&ours, CodecChoice::Greedy)
        .answer(&sdp(LINPHONE))
        .unwrap();
    assert_eq!((a.media.codec, a.media.payload_type), (Codec::Pcma, pt(8)));
    assert_eq!(a.media.telephone_event_pt, Some(pt(100)));
    let a = local(&ours, CodecChoice::Generous)
        .answer(&sdp(LINPHONE))
        .unwrap();
    assert_eq!((a.media.codec, a.media.payload_type), (Codec::Pcmu, pt(0)));
}

#[test]
fn g722_events_use_the_8000_hz_clock_not_its_sample_rate() {
    let o = offer(
        "m=audio 20000 RTP/AVP 9 100 101",
        "a=rtpmap:9 G722/8000\na=rtpmap:100 telephone-event/16000\na=rtpmap:101 telephone-event/8000\n",
    );
    let a = local(&[Codec::G722], CodecChoice::Generous)
        .answer(&o)
        .unwrap();
    assert_eq!(a.media.codec, Codec::G722);
    assert_eq!(a.media.telephone_event_pt, Some(pt(101)));
    let m = &a.sdp.media[0];
    assert_eq!(
        m.attributes.rtpmap(pt(101)).map(|r| r.clock_rate),
        Some(8000)
    );
    assert!(m.attributes.rtpmap(pt(100)).is_none());
    // Events offered only at 16000 do not fit G.722: none are negotiated.
    let o = offer(
        "m=audio 20000 RTP/AVP 9 100",
        "a=rtpmap:100 telephone-event/16000\n",
    );
    let a = local(&[Codec::G722], CodecChoice::Generous)
        .answer(&o)
        .unwrap();
    assert_eq!(a.media.telephone_event_pt, None);
    assert_eq!(a.sdp.media[0].formats, vec!["9"]);
}

#[test]
fn l16_at_16_khz_takes_the_16000_hz_events() {
    let o = offer(
        "m=audio 20000 RTP/AVP 110 111 100 101",
        "a=rtpmap:110 L16/8000\na=rtpmap:111 L16/16000\na=rtpmap:100 telephone-event/16000\na=rtpmap:101 telephone-event/8000\n",
    );
    let a = local(&[Codec::L16Wide, Codec::L16Narrow], CodecChoice::Greedy)
        .answer(&o)
        .unwrap();
    assert_eq!(
        (a.media.codec, a.media.payload_type),
        (Codec::L16Wide, pt(111))
    );
    assert_eq!(a.media.clock_rate, 16000);
    assert_eq!(a.media.telephone_event_pt, Some(pt(100)));
    // Generous takes the offer's first, the 8 kHz form, and the 8000 Hz events.
    let a = local(&[Codec::L16Wide, Codec::L16Narrow], CodecChoice::Generous)
        .answer(&o)
        .unwrap();
    assert_eq!(
        (a.media.codec, a.media.payload_type),
        (Codec::L16Narrow, pt(110))
    );
    assert_eq!(a.media.telephone_event_pt, Some(pt(101)));
}

#[test]
fn only_g722_offered_to_the_default_list_is_refused_with_488() {
    let o = offer(
        "m=audio 20000 RTP/AVP 9 101",
        "a=rtpmap:101 telephone-event/8000\n",
    );
    let err = local(DEFAULT, CodecChoice::Generous)
        .answer(&o)
        .unwrap_err();
    assert_eq!(err.code(), 488);
    assert!(err.to_string().contains("G722"), "{err}");
    // Allowed, the same offer is answered.
    let a = local(&[Codec::Pcmu, Codec::G722], CodecChoice::Generous)
        .answer(&o)
        .unwrap();
    assert_eq!(a.media.codec, Codec::G722);
}

#[test]
fn default_offer_is_unchanged() {
    let mut l = local(DEFAULT, CodecChoice::Generous);
    let m = &l.offer().media[0];
    assert_eq!(m.formats, vec!["0", "8", "101"]);
    assert_eq!(
        m.attributes.rtpmap(pt(101)).map(|r| r.to_string()),
        Some("101 telephone-event/8000".to_string())
    );
}

#[test]
fn wideband_offer_lists_our_order_and_events_per_clock_rate() {
    let ours = [Codec::G722, Codec::L16Wide, Codec::Pcmu, Codec::L16Narrow];
    let mut l = local(&ours, CodecChoice::Generous);
    let ours_sdp = l.offer();
    let m = &ours_sdp.media[0];
    assert_eq!(m.formats, vec!["9", "96", "0", "97", "101", "98"]);
    let map = |n: u8| m.attributes.rtpmap(pt(n)).map(|r| r.to_string());
    assert_eq!(map(9), Some("9 G722/8000".into()));
    assert_eq!(map(96), Some("96 L16/16000".into()));
    assert_eq!(map(97), Some("97 L16/8000".into()));
    assert_eq!(map(101), Some("101 telephone-event/8000".into()));
    assert_eq!(map(98), Some("98 telephone-event/16000".into()));
    assert_eq!(m.attributes.fmtp(pt(98)), Some("0-16"));

    // The peer answers G.722 with our 8000 Hz events.
    let answer = offer(
        "m=audio 30000 RTP/AVP 9 101",
        "a=rtpmap:101 telephone-event/8000\n",
    );
    let n = l.accept_answer(&answer).unwrap();
    assert_eq!((n.codec, n.payload_type), (Codec::G722, pt(9)));
    assert_eq!(n.telephone_event_pt, Some(pt(101)));
}

#[cfg(feature = "opus")]
mod opus {
    use super::*;
    use crate::media::codec::OpusParams;

    const WIDE: &[Codec] = &[Codec::Opus, Codec::G722, Codec::Pcmu, Codec::Pcma];

    #[test]
    fn greedy_takes_opus_from_baresip_with_its_8_khz_events() {
        let a = local(WIDE, CodecChoice::Greedy)
            .answer(&sdp(BARESIP))
            .unwrap();
        assert_eq!((a.media.codec, a.media.payload_type), (Codec::Opus, pt(96)));
        assert_eq!(a.media.clock_rate, 48000);
        // baresip offers telephone-event/8000 only: with none at Opus's clock, it is taken.
        assert_eq!(a.media.telephone_event_pt, Some(pt(101)));
        assert_eq!(a.media.telephone_event_rate, 8000);
        let m = &a.sdp.media[0];
        assert_eq!(m.formats, vec!["96", "101"]);
        assert_eq!(
            m.attributes.rtpmap(pt(96)).map(|r| r.to_string()),
            Some("96 opus/48000/2".to_string())
        );
        assert_eq!(m.attributes.fmtp(pt(96)), Some("useinbandfec=1"));
        assert!(a.media.params.opus.stereo);
        // Generous keeps to baresip's own first choice.
        let a = local(WIDE, CodecChoice::Generous)
            .answer(&sdp(BARESIP))
            .unwrap();
        assert_eq!(a.media.codec, Codec::Pcmu);
    }

    #[test]
    fn linphone_gets_opus_with_its_48000_hz_events_and_fec() {
        for choice in BOTH {
            let a = local(WIDE, choice).answer(&sdp(LINPHONE)).unwrap();
            assert_eq!((a.media.codec, a.media.payload_type), (Codec::Opus, pt(96)));
            assert_eq!(a.media.telephone_event_pt, Some(pt(101)), "{choice:?}");
            assert!(a.media.params.opus.use_inband_fec);
            assert_eq!(a.sdp.media[0].formats, vec!["96", "101"]);
        }
    }

    #[test]
    fn our_offer_carries_opus_with_fec_and_events_at_48000() {
        let mut l = local(WIDE, CodecChoice::Generous);
        let ours_sdp = l.offer();
        let m = &ours_sdp.media[0];
        assert_eq!(m.formats, vec!["96", "9", "0", "8", "97", "101"]);
        assert_eq!(
            m.attributes.rtpmap(pt(96)).map(|r| r.to_string()),
            Some("96 opus/48000/2".to_string())
        );
        assert_eq!(m.attributes.fmtp(pt(96)), Some("useinbandfec=1"));
        assert_eq!(
            m.attributes.rtpmap(pt(97)).map(|r| r.to_string()),
            Some("97 telephone-event/48000".to_string())
        );
        // The answer's fmtp is what the peer will play: our encoder follows it.
        let answer = offer(
            "m=audio 30000 RTP/AVP 96 97",
            "a=rtpmap:96 opus/48000/2\na=fmtp:96 maxplaybackrate=16000;usedtx=1\na=rtpmap:97 telephone-event/48000\n",
        );
        let n = l.accept_answer(&answer).unwrap();
        assert_eq!(n.codec, Codec::Opus);
        assert_eq!(n.telephone_event_pt, Some(pt(97)));
        assert_eq!(
            n.params.opus,
            OpusParams {
                max_playback_rate: 16000,
                use_inband_fec: false,
                use_dtx: true,
                stereo: false,
            }
        );
    }

    #[test]
    fn opus_without_channel_count_is_still_opus() {
        let o = offer("m=audio 20000 RTP/AVP 111", "a=rtpmap:111 OPUS/48000\n");
        let a = local(WIDE, CodecChoice::Generous).answer(&o).unwrap();
        assert_eq!(
            (a.media.codec, a.media.payload_type),
            (Codec::Opus, pt(111))
        );
    }
}
