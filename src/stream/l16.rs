//! The L16 stream format: a JSON start frame (call id, from, to, sample rate, tracks,
//! parameters), then binary frames of little-endian 16-bit PCM, 20 ms each; with both
//! tracks the frame is two channels interleaved, inbound first. Control messages (`mark`,
//! `clear`, `dtmf`, `stop`) are JSON text frames.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{to_json, AppCommand, StartInfo, StreamError, Track};

/// The sample rates the format carries.
pub const RATES: [u32; 2] = [8000, 16000];

/// Every text frame of the format, in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "event",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum Control {
    /// First frame: what the binary frames that follow hold.
    Start {
        /// The call's id.
        call_id: String,
        /// The caller.
        from: String,
        /// The called party.
        to: String,
        /// 8000 or 16000.
        sample_rate: u32,
        /// 1, or 2 when both tracks are sent.
        channels: u32,
        /// `inbound`, `outbound` or both, in channel order.
        tracks: Vec<String>,
        /// Parameters given when the stream was started.
        parameters: BTreeMap<String, String>,
    },
    /// A named point in the audio (from the application); echoed once played or cleared.
    Mark {
        /// The name.
        name: String,
    },
    /// From the application: drop the audio queued for playing.
    Clear,
    /// A key the caller pressed.
    Dtmf {
        /// The key.
        digit: String,
    },
    /// The stream has ended.
    Stop,
}

/// The start frame for `info` at `sample_rate` (8000 or 16000; anything else is taken as
/// 8000).
pub fn start(info: &StartInfo, sample_rate: u32) -> String {
    let sample_rate = if RATES.contains(&sample_rate) {
        sample_rate
    } else {
        8000
    };
    let tracks = info.tracks.names();
    to_json(&Control::Start {
        call_id: info.call_id.clone(),
        from: info.from.clone(),
        to: info.to.clone(),
        sample_rate,
        channels: tracks.len() as u32,
        tracks: tracks.iter().map(|s| s.to_string()).collect(),
        parameters: info.parameters.clone(),
    })
}

/// A control frame.
pub fn control(msg: &Control) -> String {
    to_json(msg)
}

/// Appends one binary frame to `out`: `first` alone, or interleaved with `second` (both
/// tracks; the shorter is padded with silence).
pub fn encode_pcm(first: &[i16], second: Option<&[i16]>, out: &mut Vec<u8>) {
    out.clear();
    // Sized once and written in place, sample by sample: the loops compile to plain stores.
    match second {
        None => {
            out.resize(2 * first.len(), 0);
            for (o, s) in out.chunks_exact_mut(2).zip(first) {
                o.copy_from_slice(&s.to_le_bytes());
            }
        }
        Some(second) => {
            let n = first.len().max(second.len());
            out.resize(4 * n, 0);
            for (i, o) in out.chunks_exact_mut(4).enumerate() {
                let a = first.get(i).copied().unwrap_or(0);
                let b = second.get(i).copied().unwrap_or(0);
                o[..2].copy_from_slice(&a.to_le_bytes());
                o[2..].copy_from_slice(&b.to_le_bytes());
            }
        }
    }
}

/// Decodes a binary frame from the application (mono) to linear PCM.
pub fn decode_pcm(bytes: &[u8]) -> Result<Vec<i16>, StreamError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(StreamError::OddLength(bytes.len()));
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// Decodes a text frame from the application: `mark` or `clear`.
pub fn parse_app(text: &str) -> Result<AppCommand, StreamError> {
    let msg: Control =
        serde_json::from_str(text).map_err(|e| StreamError::Malformed(e.to_string()))?;
    match msg {
        Control::Mark { name } => Ok(AppCommand::Mark(name)),
        Control::Clear => Ok(AppCommand::Clear),
        Control::Start { .. } => Err(StreamError::UnexpectedEvent("start".into())),
        Control::Dtmf { .. } => Err(StreamError::UnexpectedEvent("dtmf".into())),
        Control::Stop => Err(StreamError::UnexpectedEvent("stop".into())),
    }
}

/// Whether `tracks` goes out as two interleaved channels.
pub fn is_stereo(tracks: Track) -> bool {
    tracks == Track::Both
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info(tracks: Track) -> StartInfo {
        StartInfo {
            call_id: "c1".into(),
            from: "alice".into(),
            to: "bot".into(),
            tracks,
            parameters: BTreeMap::from([("k".to_string(), "v".to_string())]),
        }
    }

    #[test]
    fn golden_start_and_controls() {
        assert_eq!(
            start(&info(Track::Inbound), 16000),
            r#"{"event":"start","callId":"c1","from":"alice","to":"bot","sampleRate":16000,"channels":1,"tracks":["inbound"],"parameters":{"k":"v"}}"#
        );
        assert_eq!(
            start(&info(Track::Both), 8000),
            r#"{"event":"start","callId":"c1","from":"alice","to":"bot","sampleRate":8000,"channels":2,"tracks":["inbound","outbound"],"parameters":{"k":"v"}}"#
        );
        // Just outside the two rates: 8 kHz.
        assert!(start(&info(Track::Inbound), 44100).contains(r#""sampleRate":8000"#));
        assert_eq!(
            control(&Control::Mark { name: "m".into() }),
            r#"{"event":"mark","name":"m"}"#
        );
        assert_eq!(control(&Control::Clear), r#"{"event":"clear"}"#);
        assert_eq!(
            control(&Control::Dtmf { digit: "#".into() }),
            r##"{"event":"dtmf","digit":"#"}"##
        );
        assert_eq!(control(&Control::Stop), r#"{"event":"stop"}"#);
    }

    #[test]
    fn byte_order_is_little_endian() {
        let mut out = Vec::new();
        encode_pcm(&[0x0102, -2], None, &mut out);
        assert_eq!(out, [0x02, 0x01, 0xfe, 0xff]);
        encode_pcm(&[0x0102], Some(&[0x0304, 0x0506]), &mut out);
        // Interleaved inbound, outbound; the short track padded with silence.
        assert_eq!(out, [0x02, 0x01, 0x04, 0x03, 0x00, 0x00, 0x06, 0x05]);
        assert_eq!(decode_pcm(&[0x02, 0x01, 0xfe, 0xff]), Ok(vec![0x0102, -2]));
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(decode_pcm(&[1, 2, 3]), Err(StreamError::OddLength(3)));
        assert_eq!(decode_pcm(&[]), Ok(vec![]));
        assert_eq!(parse_app(r#"{"event":"clear"}"#), Ok(AppCommand::Clear));
        assert_eq!(
            parse_app(r#"{"event":"mark","name":"x"}"#),
            Ok(AppCommand::Mark("x".into()))
        );
        for bad in ["", "{", r#"{"event":"mark"}"#, r#"{"event":"play"}"#, "3"] {
            assert!(
                matches!(parse_app(bad), Err(StreamError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_app(r#"{"event":"stop"}"#),
            Err(StreamError::UnexpectedEvent("stop".into()))
        );
    }

    proptest! {
        #[test]
        fn any_pcm_round_trips(pcm in proptest::collection::vec(any::<i16>(), 0..640)) {
            let mut out = Vec::new();
            encode_pcm(&pcm, None, &mut out);
            prop_assert_eq!(decode_pcm(&out), Ok(pcm));
        }
    }
}
