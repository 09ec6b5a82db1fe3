//! Twilio Media Streams messages: what this side sends (`connected`, `start`, `media`,
//! `dtmf`, `mark`, `stop`) and what the application may send back (`media`, `mark`,
//! `clear`). Audio is µ-law at 8 kHz, mono, base64 in `media.payload`; sequence numbers,
//! chunks and timestamps are decimal strings, as Twilio sends them.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{to_json, AppCommand, StartInfo, StreamError};
use crate::media::codec::g711::{ulaw_decode, ulaw_encode_slice};

/// Every message of the format, in either direction; fields one direction leaves out are
/// optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "event",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum Message {
    /// First message: names the protocol.
    Connected {
        /// Always `Call`.
        protocol: String,
        /// Protocol version, `1.0.0`.
        version: String,
    },
    /// The stream's metadata, once, after `connected`.
    Start {
        /// Message counter, from `1`.
        sequence_number: String,
        /// The metadata.
        start: Start,
        /// The stream's id.
        stream_sid: String,
    },
    /// One chunk of audio.
    Media {
        /// Message counter (absent from the application).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        /// The audio.
        media: Media,
        /// The stream's id (the application may leave it out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_sid: Option<String>,
    },
    /// A key the caller pressed.
    Dtmf {
        /// Message counter.
        sequence_number: String,
        /// The stream's id.
        stream_sid: String,
        /// The key.
        dtmf: Dtmf,
    },
    /// A named point in the application's audio; echoed once played or cleared.
    Mark {
        /// Message counter (absent from the application).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        /// The stream's id (the application may leave it out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_sid: Option<String>,
        /// The mark's name.
        mark: Mark,
    },
    /// From the application: drop the audio queued for playing.
    Clear {
        /// The stream's id (may be left out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_sid: Option<String>,
    },
    /// Last message: the stream has ended.
    Stop {
        /// Message counter.
        sequence_number: String,
        /// The stream's id.
        stream_sid: String,
        /// Which call.
        stop: Stop,
    },
}

/// The body of `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    /// The stream's id.
    pub stream_sid: String,
    /// Twilio's account; empty here, but present for parsers that require it.
    #[serde(default)]
    pub account_sid: String,
    /// The call's id.
    pub call_sid: String,
    /// The caller.
    pub from: String,
    /// The called party.
    pub to: String,
    /// `inbound`, `outbound` or both.
    pub tracks: Vec<String>,
    /// Parameters given when the stream was started.
    pub custom_parameters: BTreeMap<String, String>,
    /// Encoding of every `media` payload.
    pub media_format: MediaFormat,
}

/// `start.mediaFormat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    /// `audio/x-mulaw`.
    pub encoding: String,
    /// 8000.
    pub sample_rate: u32,
    /// 1.
    pub channels: u32,
}

/// The body of `media`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// `inbound` or `outbound` (absent from the application).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// Chunk counter per track, from `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<String>,
    /// Milliseconds since the stream started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Base64 µ-law.
    pub payload: String,
}

/// The body of `dtmf`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dtmf {
    /// Always `inbound_track`.
    pub track: String,
    /// The key: `0`-`9`, `*`, `#`, `A`-`D`.
    pub digit: String,
}

/// The body of `mark`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The name the application gave.
    pub name: String,
}

/// The body of `stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stop {
    /// Empty, as in `start`.
    #[serde(default)]
    pub account_sid: String,
    /// The call's id.
    pub call_sid: String,
}

/// The bytes of a `media` message besides its stream id and payload, at most (three
/// 20-digit counters).
const MEDIA_OVERHEAD: usize = 192;

/// Builds the messages of one stream: keeps the stream id, the message counter and one
/// chunk counter per track.
#[derive(Debug)]
pub struct Encoder {
    stream_sid: String,
    /// The stream id as a JSON string (quoted, escaped), for the hand-written `media`.
    sid_json: String,
    call_sid: String,
    sequence: u64,
    chunks: [u64; 2],
    ulaw: Vec<u8>,
}

impl Encoder {
    /// An encoder for a stream with id `stream_sid` on call `call_sid`.
    pub fn new(stream_sid: &str, call_sid: &str) -> Self {
        Encoder {
            stream_sid: stream_sid.to_string(),
            sid_json: to_json(&stream_sid),
            call_sid: call_sid.to_string(),
            sequence: 0,
            chunks: [0; 2],
            ulaw: Vec::new(),
        }
    }

    fn next_sequence(&mut self) -> String {
        self.sequence += 1;
        self.sequence.to_string()
    }

    /// The `connected` message.
    pub fn connected(&self) -> String {
        to_json(&Message::Connected {
            protocol: "Call".into(),
            version: "1.0.0".into(),
        })
    }

    /// The `start` message.
    pub fn start(&mut self, info: &StartInfo) -> String {
        let msg = Message::Start {
            sequence_number: self.next_sequence(),
            start: Start {
                stream_sid: self.stream_sid.clone(),
                account_sid: String::new(),
                call_sid: self.call_sid.clone(),
                from: info.from.clone(),
                to: info.to.clone(),
                tracks: info.tracks.names().iter().map(|s| s.to_string()).collect(),
                custom_parameters: info.parameters.clone(),
                media_format: MediaFormat {
                    encoding: "audio/x-mulaw".into(),
                    sample_rate: 8000,
                    channels: 1,
                },
            },
            stream_sid: self.stream_sid.clone(),
        };
        to_json(&msg)
    }

    /// A `media` message for 8 kHz `pcm` on `track` (`inbound` or `outbound`), taken
    /// `timestamp_ms` after the stream started.
    pub fn media(&mut self, outbound: bool, timestamp_ms: u64, pcm: &[i16]) -> String {
        use std::fmt::Write as _;
        let counter = &mut self.chunks[usize::from(outbound)];
        *counter += 1;
        let chunk = *counter;
        self.sequence += 1;
        self.ulaw.resize(pcm.len(), 0);
        ulaw_encode_slice(pcm, &mut self.ulaw);
        // Written by hand into one buffer sized up front: a frame is due every 20 ms per
        // stream, and serde through `Message` costs a string per field. Same text as
        // `to_json(&Message::Media { .. })`, which the tests hold it to.
        let track = if outbound { "outbound" } else { "inbound" };
        let payload = 4 * pcm.len().div_ceil(3);
        let mut s = String::with_capacity(MEDIA_OVERHEAD + self.sid_json.len() + payload);
        let _ = write!(
            s,
            r#"{{"event":"media","sequenceNumber":"{}","media":{{"track":"{track}","chunk":"{chunk}","timestamp":"{timestamp_ms}","payload":""#,
            self.sequence
        );
        STANDARD.encode_string(&self.ulaw, &mut s);
        let _ = write!(s, r#""}},"streamSid":{}}}"#, self.sid_json);
        s
    }

    /// A `dtmf` message for the caller's key `digit`.
    pub fn dtmf(&mut self, digit: char) -> String {
        let msg = Message::Dtmf {
            sequence_number: self.next_sequence(),
            stream_sid: self.stream_sid.clone(),
            dtmf: Dtmf {
                track: "inbound_track".into(),
                digit: digit.to_string(),
            },
        };
        to_json(&msg)
    }

    /// The echo of the application's mark `name`.
    pub fn mark(&mut self, name: &str) -> String {
        let msg = Message::Mark {
            sequence_number: Some(self.next_sequence()),
            stream_sid: Some(self.stream_sid.clone()),
            mark: Mark {
                name: name.to_string(),
            },
        };
        to_json(&msg)
    }

    /// The `stop` message.
    pub fn stop(&mut self) -> String {
        let msg = Message::Stop {
            sequence_number: self.next_sequence(),
            stream_sid: self.stream_sid.clone(),
            stop: Stop {
                account_sid: String::new(),
                call_sid: self.call_sid.clone(),
            },
        };
        to_json(&msg)
    }
}

/// Decodes a text message from the application: `media` (µ-law decoded to linear PCM),
/// `mark` or `clear`; anything else is an error.
pub fn parse_app(text: &str) -> Result<AppCommand, StreamError> {
    let msg: Message =
        serde_json::from_str(text).map_err(|e| StreamError::Malformed(e.to_string()))?;
    match msg {
        Message::Media { media, .. } => {
            let ulaw = STANDARD
                .decode(media.payload.as_bytes())
                .map_err(|e| StreamError::Base64(e.to_string()))?;
            Ok(AppCommand::Audio(
                ulaw.iter().map(|&b| ulaw_decode(b)).collect(),
            ))
        }
        Message::Mark { mark, .. } => Ok(AppCommand::Mark(mark.name)),
        Message::Clear { .. } => Ok(AppCommand::Clear),
        Message::Connected { .. } => Err(StreamError::UnexpectedEvent("connected".into())),
        Message::Start { .. } => Err(StreamError::UnexpectedEvent("start".into())),
        Message::Dtmf { .. } => Err(StreamError::UnexpectedEvent("dtmf".into())),
        Message::Stop { .. } => Err(StreamError::UnexpectedEvent("stop".into())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::stream::Track;
    use proptest::prelude::*;

    fn info() -> StartInfo {
        StartInfo {
            call_id: "c1".into(),
            from: "alice".into(),
            to: "bot".into(),
            tracks: Track::Both,
            parameters: BTreeMap::from([("lang".to_string(), "en".to_string())]),
        }
    }

    #[test]
    fn golden_sequence() {
        let mut e = Encoder::new("MZ1", "c1");
        assert_eq!(
            e.connected(),
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#
        );
        assert_eq!(
            e.start(&info()),
            concat!(
                r#"{"event":"start","sequenceNumber":"1","start":{"streamSid":"MZ1","accountSid":"","callSid":"c1","#,
                r#""from":"alice","to":"bot","tracks":["inbound","outbound"],"#,
                r#""customParameters":{"lang":"en"},"#,
                r#""mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"#,
                r#""streamSid":"MZ1"}"#
            )
        );
        // Two zero samples are µ-law 0xFF 0xFF.
        assert_eq!(
            e.media(false, 0, &[0, 0]),
            r#"{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"//8="},"streamSid":"MZ1"}"#
        );
        assert_eq!(
            e.media(true, 20, &[0, 0]),
            r#"{"event":"media","sequenceNumber":"3","media":{"track":"outbound","chunk":"1","timestamp":"20","payload":"//8="},"streamSid":"MZ1"}"#
        );
        assert_eq!(
            e.media(false, 20, &[0]),
            r#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"20","payload":"/w=="},"streamSid":"MZ1"}"#
        );
        assert_eq!(
            e.dtmf('5'),
            r#"{"event":"dtmf","sequenceNumber":"5","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"5"}}"#
        );
        assert_eq!(
            e.mark("greeting"),
            r#"{"event":"mark","sequenceNumber":"6","streamSid":"MZ1","mark":{"name":"greeting"}}"#
        );
        assert_eq!(
            e.stop(),
            r#"{"event":"stop","sequenceNumber":"7","streamSid":"MZ1","stop":{"accountSid":"","callSid":"c1"}}"#
        );
    }

    #[test]
    fn hand_written_media_is_what_serde_writes() {
        // A stream id needing escapes, and counters past a digit boundary.
        let sid = "MZ \"quoted\" \\ é\n";
        let mut e = Encoder::new(sid, "c1");
        let pcm = [0i16, 1000, -1000, 32767, -32768];
        for n in 1..=10u64 {
            let outbound = n % 2 == 0;
            let text = e.media(outbound, 20 * (n - 1), &pcm);
            let mut ulaw = vec![0u8; pcm.len()];
            ulaw_encode_slice(&pcm, &mut ulaw);
            let want = to_json(&Message::Media {
                sequence_number: Some(n.to_string()),
                media: Media {
                    track: Some(if outbound { "outbound" } else { "inbound" }.into()),
                    chunk: Some(n.div_ceil(2).to_string()),
                    timestamp: Some((20 * (n - 1)).to_string()),
                    payload: STANDARD.encode(&ulaw),
                },
                stream_sid: Some(sid.to_string()),
            });
            assert_eq!(text, want);
        }
    }

    #[test]
    fn accepts_what_applications_send() {
        let media = r#"{"event":"media","streamSid":"MZ1","media":{"payload":"//9/"}}"#;
        assert_eq!(
            parse_app(media),
            Ok(AppCommand::Audio(vec![0, 0, ulaw_decode(0x7f)]))
        );
        let mark = r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m 1"}}"#;
        assert_eq!(parse_app(mark), Ok(AppCommand::Mark("m 1".into())));
        assert_eq!(
            parse_app(r#"{"event":"clear","streamSid":"MZ1"}"#),
            Ok(AppCommand::Clear)
        );
        // The stream id may be left out, and unknown fields are ignored.
        assert_eq!(
            parse_app(r#"{"event":"clear","extra":1}"#),
            Ok(AppCommand::Clear)
        );
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "not json",
            "{}",
            "[1,2]",
            r#"{"event":"nope"}"#,
            r#"{"event":"media"}"#,
            r#"{"event":"media","media":{}}"#,
            r#"{"event":"media","media":{"payload":7}}"#,
            r#"{"event":"mark","mark":{}}"#,
            r#"{"event":"mark"}"#,
        ] {
            assert!(
                matches!(parse_app(bad), Err(StreamError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_app(r#"{"event":"media","media":{"payload":"**not base64**"}}"#),
            Err(StreamError::Base64(_))
        ));
        assert_eq!(
            parse_app(
                r#"{"event":"stop","sequenceNumber":"1","streamSid":"a","stop":{"callSid":"c"}}"#
            ),
            Err(StreamError::UnexpectedEvent("stop".into()))
        );
    }

    proptest! {
        #[test]
        fn any_payload_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            // A µ-law byte decoded and re-encoded is itself, so the PCM we send is the PCM
            // the application decodes.
            let pcm: Vec<i16> = bytes.iter().map(|&b| ulaw_decode(b)).collect();
            let mut e = Encoder::new("MZ", "c");
            let text = e.media(false, 40, &pcm);
            let Message::Media { media, .. } = serde_json::from_str(&text).unwrap() else {
                panic!("not media: {text}");
            };
            let back: Vec<i16> = STANDARD.decode(media.payload).unwrap().iter().map(|&b| ulaw_decode(b)).collect();
            prop_assert_eq!(&back, &pcm);
            // What an application sends with the same payload decodes to the same PCM.
            let app = format!(r#"{{"event":"media","media":{{"payload":"{}"}}}}"#, STANDARD.encode(&bytes));
            prop_assert_eq!(parse_app(&app), Ok(AppCommand::Audio(pcm)));
        }

        #[test]
        fn any_mark_name_round_trips(name in ".{0,40}") {
            let mut e = Encoder::new("MZ", "c");
            let echoed = e.mark(&name);
            prop_assert_eq!(parse_app(&echoed), Ok(AppCommand::Mark(name)));
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(text in ".{0,200}") {
            let _ = parse_app(&text);
        }
    }
}
