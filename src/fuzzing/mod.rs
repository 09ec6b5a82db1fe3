//! The bodies of the cargo-fuzz targets in `fuzz/`, one function per target, so that
//! `tests/fuzz_corpus.rs` replays every corpus and crash file through the same code on the
//! stable toolchain. Each function only feeds its input to the real parser or state machine
//! and asserts the invariant its target documents; a panic is a finding.

use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::media::codec::{AudioCodec, CodecKind, CodecParams};
use crate::media::dtmf::info::{format_dtmf_relay, parse_info, MAX_DURATION};
use crate::media::dtmf::rfc4733::EventReceiver;
use crate::rtp::packet::{classify as classify_rtp, PacketKind, RtpPacket};
use crate::rtp::rtcp::{RtcpSession, MAX_COMPOUND_LEN};
use crate::rtp::types::{ClockRate, PayloadType, RtpTimestamp, Ssrc};
use crate::sip::digest::{parse_authorization, parse_challenges};
use crate::sip::framing::{FramingError, StreamFramer};
use crate::sip::guard::peek::{peek, Patterns, Peek};
use crate::sip::message::{classify, Inbound};

mod endpoint;
mod srtp;
mod stun;

pub use endpoint::endpoint;
pub use srtp::srtp;
pub use stun::stun;

/// SIP messages in datagram and stream mode: a reject we produce is itself a response.
pub fn sip_parse(data: &[u8]) {
    for stream in [false, true] {
        if let Inbound::Reject { response, .. } = classify(data, stream) {
            assert!(response.starts_with(b"SIP/2.0 "));
            let _ = classify(&response, stream);
        }
    }
}

/// SDP: whatever parses survives print → parse unchanged, and so does every `a=extmap`.
pub fn sdp_parse(data: &[u8]) {
    if let Ok(parsed) = crate::sdp::parse(data) {
        for m in &parsed.media {
            for e in m.attributes.extmaps() {
                let again = e.to_string().parse::<crate::sdp::ExtMap>();
                assert_eq!(again.as_ref(), Ok(&e), "extmap round trip changed");
            }
        }
        let printed = parsed.to_string();
        match crate::sdp::parse(printed.as_bytes()) {
            Ok(reparsed) => assert_eq!(reparsed, parsed, "round trip changed:\n{printed}"),
            Err(e) => panic!("printed SDP does not parse ({e}):\n{printed}"),
        }
    }
}

/// Digest challenges and credentials: whatever parses survives print → parse unchanged.
pub fn digest_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(challenges) = parse_challenges(text) {
        for c in challenges {
            let printed = c.to_string();
            match parse_challenges(&printed) {
                Ok(again) => assert_eq!(again, vec![c], "round trip changed:\n{printed}"),
                Err(e) => panic!("printed challenge does not parse ({e}):\n{printed}"),
            }
        }
    }
    if let Ok(a) = parse_authorization(text) {
        let printed = a.to_string();
        match parse_authorization(&printed) {
            Ok(again) => assert_eq!(again, a, "round trip changed:\n{printed}"),
            Err(e) => panic!("printed credentials do not parse ({e}):\n{printed}"),
        }
    }
}

/// RTP packets: a parsed packet is classified as RTP, its header extension elements lie
/// within its extension block, and write → parse gives it back (without its padding, which
/// the writer never adds).
pub fn rtp_packet(data: &[u8]) {
    let kind = classify_rtp(data);
    let Ok(packet) = RtpPacket::parse(data) else {
        return;
    };
    assert_eq!(kind, PacketKind::Rtp);
    if let Some(ext) = packet.extension {
        // RFC 8285 elements stay inside the extension block, whatever it holds.
        let block = ext.data.as_ptr_range();
        for (_, data) in crate::rtp::hdrext::Elements::new(ext) {
            let inside = data.as_ptr_range();
            assert!(data.is_empty() || (inside.start >= block.start && inside.end <= block.end));
        }
    }
    let mut out = vec![0u8; packet.wire_len()];
    let written = match packet.write(&mut out) {
        Ok(n) => n,
        Err(e) => panic!("a parsed packet cannot be written: {e}"),
    };
    assert_eq!(written, packet.wire_len());
    match RtpPacket::parse(&out[..written]) {
        Ok(again) => {
            let unpadded = RtpPacket {
                padding: 0,
                ..packet
            };
            assert_eq!(again, unpadded);
        }
        Err(e) => panic!("a written packet does not parse: {e}"),
    }
}

/// The SSRC the RTCP target's session reports as; seeds carry report blocks about it.
pub const RTCP_LOCAL_SSRC: u32 = 0x5357_4244;

/// RTCP compound packets: the session digests or refuses any datagram, and the reports it
/// writes afterwards fit [`MAX_COMPOUND_LEN`] and are accepted by a peer session.
pub fn rtcp_compound(data: &[u8]) {
    let start = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut ours = RtcpSession::with_seed(
        Ssrc::new(RTCP_LOCAL_SSRC),
        "fuzz@127.0.0.1",
        ClockRate::HZ_8000,
        start,
        1,
    );
    let before = ours.stats();
    let accepted = ours.handle_packet(start, wall, data).is_ok();
    let after = ours.stats();
    if !accepted {
        assert_eq!(after.parse_errors, before.parse_errors + 1);
    }
    let later = start + Duration::from_secs(10);
    let mut out = [0u8; MAX_COMPOUND_LEN];
    let mut peer = RtcpSession::with_seed(Ssrc::new(1), "peer", ClockRate::HZ_8000, start, 2);
    if let Some(n) = ours.handle_timeout(later, None, None, wall, &mut out) {
        assert!(n <= MAX_COMPOUND_LEN);
        let reply = peer.handle_packet(later, wall + Duration::from_secs(10), &out[..n]);
        assert!(reply.is_ok(), "our report is refused: {reply:?}");
    }
    if let Ok(n) = ours.bye(&mut out) {
        let reply = peer.handle_packet(later, wall, &out[..n]);
        assert!(reply.is_ok(), "our BYE is refused: {reply:?}");
        assert!(peer.stats().peer_bye);
    }
}

/// RFC 4733 payloads: records of `[advance ms, flags, timestamp (4, BE), length, payload]`
/// pushed into one receiver; each push reports at most a few events and every payload is
/// counted as accepted or malformed.
pub fn rfc4733_events(data: &[u8]) {
    let start = Instant::now();
    let mut now = start;
    let mut rx = EventReceiver::new(PayloadType::DEFAULT_TELEPHONE_EVENT, ClockRate::HZ_8000);
    let mut rest = data;
    let mut pushes = 0u64;
    while let [advance, flags, t0, t1, t2, t3, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        now += Duration::from_millis(u64::from(*advance) * 4);
        if flags & 2 != 0 {
            let _ = rx.handle_timeout(now);
        }
        let ts = RtpTimestamp::new(u32::from_be_bytes([*t0, *t1, *t2, *t3]));
        let mut events = usize::from(rx.push(now, ts, flags & 1 != 0, payload).is_some());
        while rx.poll_event().is_some() {
            events += 1;
            assert!(events <= 64, "one payload produced more than 64 events");
        }
        pushes += 1;
        let stats = rx.stats();
        assert_eq!(stats.packets + stats.malformed, pushes);
        if let Some(at) = rx.poll_timeout() {
            assert!(at >= start);
        }
    }
}

/// TCP framing: the first two bytes pick the size limit and the chunking of the rest; the
/// messages, and whether an error ends the stream, are the same however the stream is cut,
/// and none is longer than the limit.
pub fn sip_framing(data: &[u8]) {
    let [limit, chunking, stream @ ..] = data else {
        return;
    };
    let max = 256 * (1 + usize::from(limit % 16));
    let whole = {
        let mut f = StreamFramer::new(max);
        f.push(stream);
        drain(&mut f, stream.len())
    };
    let mut cut = Vec::new();
    let mut f = StreamFramer::new(max);
    let mut state = u32::from(*chunking) | 0x100;
    let mut rest = stream;
    let mut failed = false;
    while !rest.is_empty() && !failed {
        // xorshift: cheap, deterministic chunk lengths of 1..=64 bytes.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (1 + (state % 64) as usize).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        f.push(chunk);
        let got = drain(&mut f, stream.len());
        failed = got.last().is_some_and(Result::is_err);
        cut.extend(got);
    }
    // Which error ends an unframeable stream may differ: a header block past the limit
    // whose Content-Length is bad is TooLarge while it arrives and BadContentLength once
    // whole. Either way the connection closes after the same messages.
    let messages = |r: &[Result<Vec<u8>, FramingError>]| -> (Vec<Vec<u8>>, bool) {
        (
            r.iter().flatten().cloned().collect(),
            r.iter().any(Result::is_err),
        )
    };
    assert_eq!(
        messages(&whole),
        messages(&cut),
        "chunking changed the framing"
    );
    for m in whole.iter().flatten() {
        assert!(
            m.len() <= max,
            "a {}-byte message passed a {max}-byte limit",
            m.len()
        );
    }
}

/// Every message the framer holds, then the error if one stops it.
fn drain(f: &mut StreamFramer, bound: usize) -> Vec<Result<Vec<u8>, FramingError>> {
    let mut out = Vec::new();
    // A message takes at least one byte, so more than `bound` of them is a bug.
    for _ in 0..=bound {
        match f.next_message() {
            Ok(Some(m)) => out.push(Ok(m)),
            Ok(None) => return out,
            Err(e) => {
                out.push(Err(e));
                return out;
            }
        }
    }
    panic!("the framer yields more messages than bytes pushed");
}

/// SIP INFO bodies: the content type is the first line, the body the rest. A digit read is
/// within the duration bounds and survives format → parse.
pub fn info_body(data: &[u8]) {
    let (ct, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(content_type) = std::str::from_utf8(ct) else {
        return;
    };
    let Ok(d) = parse_info(content_type, body) else {
        return;
    };
    assert!(!d.duration.is_zero() && d.duration <= MAX_DURATION);
    let printed = format_dtmf_relay(d.digit, d.duration);
    match parse_info("application/dtmf-relay", printed.as_bytes()) {
        Ok(again) => assert_eq!(again, d, "round trip changed:\n{printed}"),
        Err(e) => panic!("formatted relay body does not parse ({e}):\n{printed}"),
    }
}

/// The guard's raw peek: the User-Agent it reads lies inside the input, trimmed, and the
/// pattern matcher agrees with a plain lowercase search on both its paths.
pub fn guard_peek(data: &[u8]) {
    match peek(data) {
        Peek::KeepAlive => assert!(data.iter().all(u8::is_ascii_whitespace)),
        Peek::Response => assert!(data.starts_with(b"SIP/2.0 ")),
        Peek::Request { user_agent, .. } => {
            if let Some(ua) = user_agent {
                let range = data.as_ptr_range();
                assert!(range.contains(&ua.as_ptr()) || ua.is_empty());
                assert!(ua.first().is_none_or(|b| !b.is_ascii_whitespace()));
                assert!(ua.last().is_none_or(|b| !b.is_ascii_whitespace()));
                let patterns = ["friendly-scanner".to_string(), "SIPVicious".to_string()];
                let lowered = ua.to_ascii_lowercase();
                let naive = patterns.iter().any(|p| {
                    let p = p.to_ascii_lowercase();
                    lowered.windows(p.len()).any(|w| w == p.as_bytes())
                });
                assert_eq!(Patterns::new(&patterns).any_in(ua), naive);
            }
        }
    }
}

/// G.722 and L16 decoders: the first byte picks the codec, then records of `[length, payload]` (length 0: a lost frame). Decoding
/// writes at most the buffer, exactly what the payload holds, and L16 re-encodes to the
/// same bytes.
pub fn codec_decode(data: &[u8]) {
    let [select, payloads @ ..] = data else {
        return;
    };
    let mut rest = payloads;
    let kind = match select % 3 {
        0 => CodecKind::G722,
        1 => CodecKind::L16Narrow,
        _ => CodecKind::L16Wide,
    };
    let mut codec: Box<dyn AudioCodec> = kind.new_codec_with(&CodecParams::default());
    let mut pcm = [0i16; 2048];
    let mut back = [0u8; 1024];
    while let [len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        if payload.is_empty() {
            let n = codec.conceal(&mut pcm[..320]);
            assert!(n.is_ok_and(|n| n <= 320));
            continue;
        }
        let Ok(n) = codec.decode(payload, &mut pcm) else {
            assert!(kind != CodecKind::G722 && payload.len() % 2 == 1);
            continue;
        };
        assert!(n <= pcm.len());
        if kind == CodecKind::G722 {
            assert_eq!(n, 2 * payload.len());
        } else {
            assert_eq!(n, payload.len() / 2);
            let m = codec.encode(&pcm[..n], &mut back);
            assert!(
                m.is_ok_and(|m| back[..m] == *payload),
                "L16 round trip changed"
            );
        }
    }
}
