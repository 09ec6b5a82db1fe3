//! Audio codecs behind one trait, so a leg holds a `Box<dyn AudioCodec>` whatever was negotiated.
//!
//! The trait separates the RTP clock rate from the PCM sample rate (G.722 runs a 8 kHz RTP
//! clock over 16 kHz audio, Opus a 48 kHz clock over whatever rate it decodes to), returns
//! lengths rather than allocating, and reports failures that stateful codecs can have
//! (corrupt payload, short output buffer). Audio is mono.

pub mod g711;

pub use g711::{Law, G711};

use crate::rtp::types::{ClockRate, PayloadType};

/// Why an encode or decode call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The output buffer cannot hold the result.
    #[error("output buffer too small: need {needed}, have {available}")]
    BufferTooSmall {
        /// Elements the call needed to write.
        needed: usize,
        /// Elements the caller provided.
        available: usize,
    },
    /// The payload is not a valid frame for this codec.
    #[error("invalid {codec} payload")]
    InvalidPayload {
        /// Codec name as in SDP.
        codec: &'static str,
    },
}

/// A mono audio encoder/decoder pair for one RTP stream direction pair.
pub trait AudioCodec: Send {
    /// Which codec this is.
    fn kind(&self) -> CodecKind;

    /// Encoding name as written in an SDP `a=rtpmap` line.
    fn name(&self) -> &'static str;

    /// RTP timestamp clock rate in Hz.
    fn clock_rate(&self) -> u32;

    /// Sample rate of the PCM this codec consumes and produces, in Hz.
    fn sample_rate(&self) -> u32;

    /// Upper bound on the payload size for `samples` PCM samples, to size output buffers once.
    fn max_encoded_len(&self, samples: usize) -> usize;

    /// Encodes `pcm` into `out`, returning the payload length in bytes.
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError>;

    /// Decodes one payload into `out`, returning the number of samples written.
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError>;

    /// Fills `out` for a lost frame and returns the number of samples written.
    ///
    /// Stateless codecs have nothing better than silence; codecs with built-in concealment
    /// override this.
    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        out.fill(0);
        Ok(out.len())
    }

    /// Forgets any inter-frame state, e.g. after an SSRC change.
    fn reset(&mut self) {}
}

/// The codecs the media engine knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CodecKind {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
}

impl CodecKind {
    /// Every supported codec, in default preference order.
    pub const ALL: [CodecKind; 2] = [CodecKind::Pcmu, CodecKind::Pcma];

    /// Encoding name as written in SDP.
    pub const fn name(self) -> &'static str {
        match self {
            CodecKind::Pcmu => "PCMU",
            CodecKind::Pcma => "PCMA",
        }
    }

    /// The RTP clock of the codec's payloads (not the rate audio is processed at).
    pub const fn rtp_clock(self) -> ClockRate {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => ClockRate::HZ_8000,
        }
    }

    /// RTP clock rate in Hz, as SDP writes it.
    pub const fn clock_rate(self) -> u32 {
        self.rtp_clock().hz()
    }

    /// Samples (at the codec's sample rate) carried by a payload of `bytes` bytes.
    pub const fn samples_in(self, bytes: usize) -> usize {
        match self {
            // One byte per sample.
            CodecKind::Pcmu | CodecKind::Pcma => bytes,
        }
    }

    /// Channel count as written in `a=rtpmap` (absent means 1).
    pub const fn channels(self) -> u16 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => 1,
        }
    }

    /// Static RTP payload type from RFC 3551, if the codec has one.
    pub const fn static_payload_type(self) -> Option<PayloadType> {
        match self {
            CodecKind::Pcmu => Some(PayloadType::PCMU),
            CodecKind::Pcma => Some(PayloadType::PCMA),
        }
    }

    /// Looks a codec up by its SDP encoding name (case-insensitive) and clock rate.
    pub fn from_rtpmap(name: &str, clock_rate: u32) -> Option<CodecKind> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name) && k.clock_rate() == clock_rate)
    }

    /// A fresh codec instance; called once per leg, not per frame.
    pub fn new_codec(self) -> Box<dyn AudioCodec> {
        match self {
            CodecKind::Pcmu => Box::new(G711::new(Law::Mu)),
            CodecKind::Pcma => Box::new(G711::new(Law::A)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_describe_themselves() {
        assert_eq!(CodecKind::from_rtpmap("pcmu", 8000), Some(CodecKind::Pcmu));
        assert_eq!(CodecKind::from_rtpmap("PCMA", 8000), Some(CodecKind::Pcma));
        assert_eq!(CodecKind::from_rtpmap("PCMA", 16000), None);
        assert_eq!(CodecKind::from_rtpmap("opus", 48000), None);
        for kind in CodecKind::ALL {
            let c = kind.new_codec();
            assert_eq!(c.kind(), kind);
            assert_eq!(c.name(), kind.name());
            assert_eq!(c.clock_rate(), 8000);
            assert_eq!(c.sample_rate(), 8000);
            assert_eq!(c.max_encoded_len(160), 160);
        }
        assert_eq!(
            CodecKind::Pcma.static_payload_type(),
            Some(PayloadType::PCMA)
        );
    }

    #[test]
    fn default_concealment_is_silence() {
        let mut c = CodecKind::Pcmu.new_codec();
        let mut out = [7i16; 160];
        assert_eq!(c.conceal(&mut out).unwrap(), 160);
        assert!(out.iter().all(|&s| s == 0));
    }
}
