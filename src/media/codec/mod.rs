//! Audio codecs behind one trait, so a leg holds a `Box<dyn AudioCodec>` whatever was negotiated.
//!
//! A codec states two rates that need not agree: the RTP clock its timestamps count
//! ([`CodecKind::rtp_clock`]: G.722 keeps 8 kHz although it samples at 16 kHz, RFC 3551
//! §4.5.2; Opus always counts 48 kHz, RFC 7587 §4.1) and the rate of the PCM it consumes
//! and produces ([`CodecKind::sample_rate`]), which is the rate its leg runs at. Audio on
//! the PCM side is mono.
//!
//! One codec value is one stream's encoder and decoder state: G.722 and Opus predict from
//! earlier samples, so a value must never be shared between two streams. Calls return
//! lengths rather than allocating and report the failures stateful codecs can have
//! (corrupt payload, short output buffer). [`AudioCodec::conceal`] fills a lost frame with
//! the codec's own concealment, which a leg uses where [`AudioCodec::has_own_concealment`]
//! says it beats G.711 Appendix I on decoded audio.

pub mod g711;
pub mod g722;
pub mod l16;
#[cfg(feature = "opus")]
pub mod opus;
#[cfg(test)]
pub(crate) mod test_util;

pub use g711::{Law, G711};
pub use g722::G722;
pub use l16::L16;

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
    /// The input is not a frame size the codec can encode.
    #[error("{codec} cannot encode {samples} samples at once")]
    FrameSize {
        /// Codec name as in SDP.
        codec: &'static str,
        /// Samples given.
        samples: usize,
    },
    /// The codec library could not be set up (its message).
    #[error("{codec} unavailable: {reason}")]
    Unavailable {
        /// Codec name as in SDP.
        codec: &'static str,
        /// What the library said.
        reason: String,
    },
}

/// A mono audio encoder/decoder pair for one RTP stream in each direction.
pub trait AudioCodec: Send {
    /// Which codec this is.
    fn kind(&self) -> CodecKind;

    /// Encoding name as written in an SDP `a=rtpmap` line.
    fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The RTP timestamp clock.
    fn clock_rate(&self) -> ClockRate {
        self.kind().rtp_clock()
    }

    /// Sample rate of the PCM this codec consumes and produces.
    fn sample_rate(&self) -> ClockRate {
        self.kind().sample_rate()
    }

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

    /// Whether [`conceal`](Self::conceal) models the signal (Opus's PLC) well enough that a
    /// leg should conceal through it rather than by repeating decoded waveform.
    fn has_own_concealment(&self) -> bool {
        false
    }

    /// Recovers a lost frame from the packet after it, when the codec carries redundancy
    /// (Opus in-band FEC, RFC 7587 §3.2); `out` is the lost frame's length. Codecs without
    /// it conceal.
    fn recover(&mut self, _next_payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        self.conceal(out)
    }

    /// Forgets any inter-frame state, e.g. after an SSRC change.
    fn reset(&mut self) {}

    /// Forgets the decoder's state alone, for a stream taken up again after packets that were
    /// not decoded: what it last decoded must not sound into the next frame, and the encoder
    /// carries on undisturbed (its peer's decoder follows it).
    fn reset_decoder(&mut self) {}
}

/// The codecs the media engine knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CodecKind {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// G.722 at 64 kbit/s: 16 kHz audio on an 8 kHz RTP clock.
    G722,
    /// 16-bit linear PCM, big-endian, at 8 kHz (RFC 3551 §4.5.11).
    L16Narrow,
    /// 16-bit linear PCM, big-endian, at 16 kHz.
    L16Wide,
    /// Opus (RFC 7587), decoded and encoded mono at 48 kHz.
    #[cfg(feature = "opus")]
    Opus,
}

/// Packet durations, in ms, of codecs that frame by sample count: any 10 ms multiple the
/// leg plays out.
const SAMPLE_FRAMES_MS: &[u32] = &[10, 20, 30, 40, 50, 60];
/// Opus frame durations we use (RFC 6716 also has 2.5 and 5 ms, which phones do not send).
#[cfg(feature = "opus")]
const OPUS_FRAMES_MS: &[u32] = &[10, 20, 40, 60];

impl CodecKind {
    /// The codecs that run at the media engine's internal rate, in default preference order:
    /// what every leg and room can carry without resampling, and the default offer.
    pub const ALL: [CodecKind; 2] = [CodecKind::Pcmu, CodecKind::Pcma];

    /// Every codec this build supports, narrowband first.
    pub const SUPPORTED: &'static [CodecKind] = &[
        CodecKind::Pcmu,
        CodecKind::Pcma,
        CodecKind::G722,
        CodecKind::L16Narrow,
        CodecKind::L16Wide,
        #[cfg(feature = "opus")]
        CodecKind::Opus,
    ];

    /// Encoding name as written in SDP.
    pub const fn name(self) -> &'static str {
        match self {
            CodecKind::Pcmu => "PCMU",
            CodecKind::Pcma => "PCMA",
            CodecKind::G722 => "G722",
            CodecKind::L16Narrow | CodecKind::L16Wide => "L16",
            #[cfg(feature = "opus")]
            CodecKind::Opus => "opus",
        }
    }

    /// The RTP clock of the codec's payloads (not the rate audio is processed at).
    pub const fn rtp_clock(self) -> ClockRate {
        match self {
            // RFC 3551 §4.5.2: G.722's clock stays at 8 kHz for historical reasons.
            CodecKind::Pcmu | CodecKind::Pcma | CodecKind::G722 | CodecKind::L16Narrow => {
                ClockRate::HZ_8000
            }
            CodecKind::L16Wide => ClockRate::HZ_16000,
            #[cfg(feature = "opus")]
            CodecKind::Opus => ClockRate::HZ_48000,
        }
    }

    /// The rate of the PCM the codec consumes and produces.
    pub const fn sample_rate(self) -> ClockRate {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma | CodecKind::L16Narrow => ClockRate::HZ_8000,
            CodecKind::G722 | CodecKind::L16Wide => ClockRate::HZ_16000,
            #[cfg(feature = "opus")]
            CodecKind::Opus => ClockRate::HZ_48000,
        }
    }

    /// RTP clock rate in Hz, as SDP writes it.
    pub const fn clock_rate(self) -> u32 {
        self.rtp_clock().hz()
    }

    /// Samples (at the codec's sample rate) carried by a payload of `bytes` bytes; 0 for
    /// codecs whose payload size does not say (Opus: read the packet's TOC instead).
    pub const fn samples_in(self, bytes: usize) -> usize {
        match self {
            // One byte per sample.
            CodecKind::Pcmu | CodecKind::Pcma => bytes,
            // Each byte codes one pair of 16 kHz samples: 6 bits low band, 2 bits high band.
            CodecKind::G722 => 2 * bytes,
            CodecKind::L16Narrow | CodecKind::L16Wide => bytes / 2,
            #[cfg(feature = "opus")]
            CodecKind::Opus => 0,
        }
    }

    /// Channel count as written in `a=rtpmap` (absent means 1). Opus always says 2 there
    /// (RFC 7587 §7), whatever it carries.
    pub const fn channels(self) -> u16 {
        match self {
            #[cfg(feature = "opus")]
            CodecKind::Opus => 2,
            _ => 1,
        }
    }

    /// The packet durations, in ms, the codec can send and receive.
    pub const fn frame_durations_ms(self) -> &'static [u32] {
        match self {
            #[cfg(feature = "opus")]
            CodecKind::Opus => OPUS_FRAMES_MS,
            _ => SAMPLE_FRAMES_MS,
        }
    }

    /// PCM samples (at [`sample_rate`](Self::sample_rate)) in a frame of `ms` milliseconds,
    /// if the codec can frame that duration.
    pub fn frame_samples(self, ms: u32) -> Option<usize> {
        self.frame_durations_ms()
            .contains(&ms)
            .then(|| (self.sample_rate().hz() / 1000 * ms) as usize)
    }

    /// Static RTP payload type from RFC 3551, if the codec has one (L16's 10 and 11 are
    /// 44.1 kHz, not ours).
    pub const fn static_payload_type(self) -> Option<PayloadType> {
        match self {
            CodecKind::Pcmu => Some(PayloadType::PCMU),
            CodecKind::Pcma => Some(PayloadType::PCMA),
            CodecKind::G722 => Some(PayloadType::G722),
            _ => None,
        }
    }

    /// Looks a codec up by its SDP encoding name (case-insensitive) and clock rate.
    pub fn from_rtpmap(name: &str, clock_rate: u32) -> Option<CodecKind> {
        Self::SUPPORTED
            .iter()
            .copied()
            .find(|k| k.name().eq_ignore_ascii_case(name) && k.clock_rate() == clock_rate)
    }

    /// Looks a codec up by the name a configuration uses: the SDP name, case-insensitive,
    /// with `L16` meaning 16 kHz and `L16/8000` the narrowband form.
    pub fn from_config_name(name: &str) -> Option<CodecKind> {
        let (encoding, rate) = match name.split_once('/') {
            Some((e, r)) => (e, r.parse::<u32>().ok()?),
            None if name.eq_ignore_ascii_case("L16") => (name, 16000),
            None => {
                return Self::SUPPORTED
                    .iter()
                    .copied()
                    .find(|k| k.name().eq_ignore_ascii_case(name));
            }
        };
        Self::from_rtpmap(encoding, rate)
    }

    /// RTP timestamp ticks that `samples` samples at the codec's rate last: as many for
    /// most codecs, half as many for G.722 (16 kHz audio on an 8 kHz clock).
    pub const fn rtp_ticks(self, samples: u64) -> u64 {
        samples * self.rtp_clock().hz() as u64 / self.sample_rate().hz() as u64
    }

    /// Whether a packet can carry the frame before it again, at a lower rate (Opus in-band
    /// FEC, RFC 7587 §3.2), so that a receiver holding the next packet can rebuild a lost one.
    pub const fn inband_fec(self) -> bool {
        match self {
            #[cfg(feature = "opus")]
            CodecKind::Opus => true,
            _ => false,
        }
    }

    /// Whether the codec's payloads come in one size per duration, so that audio for a
    /// packet can be gathered byte by byte; Opus frames vary and each goes out on its own.
    pub const fn fixed_size(self) -> bool {
        self.samples_in(2) > 0
    }

    /// The largest payload lasting `samples` samples at the codec's rate (Opus: what fits
    /// one datagram).
    pub const fn max_payload_bytes(self, samples: usize) -> usize {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => samples,
            CodecKind::G722 => samples.div_ceil(2),
            CodecKind::L16Narrow | CodecKind::L16Wide => 2 * samples,
            #[cfg(feature = "opus")]
            CodecKind::Opus => 1500,
        }
    }

    /// The size a payload of `samples` samples usually has: exact for the fixed-rate
    /// codecs, and for Opus what 64 kbit/s (a generous bitrate for speech) takes.
    pub const fn expected_payload_bytes(self, samples: usize) -> usize {
        match self {
            #[cfg(feature = "opus")]
            CodecKind::Opus => samples / 6,
            _ => self.max_payload_bytes(samples),
        }
    }

    /// Samples at the codec's rate that one payload lasts; 0 when it cannot be told.
    pub fn payload_samples(self, payload: &[u8]) -> usize {
        match self {
            #[cfg(feature = "opus")]
            CodecKind::Opus => opus_packet_samples(payload).unwrap_or(0),
            _ => self.samples_in(payload.len()),
        }
    }

    /// A fresh codec instance with default parameters; called once per leg, not per frame.
    pub fn new_codec(self) -> Box<dyn AudioCodec> {
        self.new_codec_with(&CodecParams::default())
    }

    /// A fresh codec instance with the parameters negotiated for the call.
    pub fn new_codec_with(self, params: &CodecParams) -> Box<dyn AudioCodec> {
        let _ = params;
        match self {
            CodecKind::Pcmu => Box::new(G711::new(Law::Mu)),
            CodecKind::Pcma => Box::new(G711::new(Law::A)),
            CodecKind::G722 => Box::new(G722::new()),
            CodecKind::L16Narrow => Box::new(L16::new(CodecKind::L16Narrow)),
            CodecKind::L16Wide => Box::new(L16::new(CodecKind::L16Wide)),
            #[cfg(feature = "opus")]
            CodecKind::Opus => Box::new(opus::Opus::new(&params.opus)),
        }
    }
}

/// Samples at 48 kHz in an Opus packet, from its TOC byte and frame count (RFC 6716 §3.1);
/// `None` for a packet too short to say or longer than RFC 6716 allows (120 ms).
#[cfg(feature = "opus")]
pub fn opus_packet_samples(packet: &[u8]) -> Option<usize> {
    let toc = *packet.first()?;
    let config = usize::from(toc >> 3);
    // Frame durations in 48 kHz samples per configuration (RFC 6716 Table 2).
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][config % 4],
        12..=15 => [480, 960][config % 2],
        _ => [120, 240, 480, 960][config % 4],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => usize::from(*packet.get(1)? & 0x3F),
    };
    let total = frame * frames;
    (frames > 0 && total <= 5760).then_some(total)
}

/// Negotiated parameters a codec and its leg work with (from the SDP's `a=fmtp` and
/// `a=extmap`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodecParams {
    /// Opus parameters (RFC 7587 §6.1); ignored by other codecs.
    pub opus: OpusParams,
    /// The one-byte header extension id (1..=14) of the RFC 6464 audio level the peer sends,
    /// when agreed: its leg may then skip decoding packets that say they are quiet.
    pub audio_level_id: Option<u8>,
}

/// The Opus `a=fmtp` parameters that change what we send (RFC 7587 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusParams {
    /// The highest audio rate the receiver will play out: our encoder's bandwidth follows it.
    pub max_playback_rate: u32,
    /// The receiver decodes in-band FEC: our encoder adds it.
    pub use_inband_fec: bool,
    /// The receiver accepts discontinuous transmission.
    pub use_dtx: bool,
    /// The receiver wants stereo; we send mono all the same (RFC 7587 lets us).
    pub stereo: bool,
}

impl Default for OpusParams {
    /// RFC 7587 §6.1's defaults: full band, no FEC, no DTX, mono.
    fn default() -> Self {
        OpusParams {
            max_playback_rate: 48000,
            use_inband_fec: false,
            use_dtx: false,
            stereo: false,
        }
    }
}

impl OpusParams {
    /// Reads an Opus `a=fmtp` value (`key=value;key=value`); unknown or malformed keys keep
    /// their defaults, as RFC 7587 §6.1 asks of a receiver.
    pub fn parse(fmtp: &str) -> Self {
        let mut p = OpusParams::default();
        for pair in fmtp.split(';') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            let flag = match value {
                "1" => Some(true),
                "0" => Some(false),
                _ => None,
            };
            if key.eq_ignore_ascii_case("maxplaybackrate") {
                if let Ok(rate) = value.parse::<u32>() {
                    // RFC 7587 §6.1: 8000 to 48000.
                    p.max_playback_rate = rate.clamp(8000, 48000);
                }
            } else if key.eq_ignore_ascii_case("useinbandfec") {
                p.use_inband_fec = flag.unwrap_or(p.use_inband_fec);
            } else if key.eq_ignore_ascii_case("usedtx") {
                p.use_dtx = flag.unwrap_or(p.use_dtx);
            } else if key.eq_ignore_ascii_case("stereo") {
                p.stereo = flag.unwrap_or(p.stereo);
            }
        }
        p
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
        assert_eq!(CodecKind::from_rtpmap("g722", 8000), Some(CodecKind::G722));
        assert_eq!(CodecKind::from_rtpmap("G722", 16000), None);
        assert_eq!(
            CodecKind::from_rtpmap("L16", 8000),
            Some(CodecKind::L16Narrow)
        );
        assert_eq!(
            CodecKind::from_rtpmap("l16", 16000),
            Some(CodecKind::L16Wide)
        );
        assert_eq!(CodecKind::from_rtpmap("L16", 44100), None);
        for kind in CodecKind::ALL {
            let c = kind.new_codec();
            assert_eq!(c.kind(), kind);
            assert_eq!(c.name(), kind.name());
            assert_eq!(c.clock_rate(), ClockRate::HZ_8000);
            assert_eq!(c.sample_rate(), ClockRate::HZ_8000);
            assert_eq!(c.max_encoded_len(160), 160);
        }
        for &kind in CodecKind::SUPPORTED {
            let c = kind.new_codec();
            assert_eq!(c.kind(), kind);
            assert_eq!(c.clock_rate(), kind.rtp_clock());
            assert_eq!(c.sample_rate(), kind.sample_rate());
        }
        assert_eq!(
            CodecKind::Pcma.static_payload_type(),
            Some(PayloadType::PCMA)
        );
        assert_eq!(
            CodecKind::G722.static_payload_type(),
            Some(PayloadType::G722)
        );
        assert_eq!(CodecKind::L16Wide.static_payload_type(), None);
    }

    #[test]
    fn rtp_clock_and_sample_rate_part_where_the_rfcs_say() {
        // RFC 3551 §4.5.2: G.722 samples at 16 kHz, its RTP clock runs at 8 kHz.
        assert_eq!(CodecKind::G722.sample_rate(), ClockRate::HZ_16000);
        assert_eq!(CodecKind::G722.rtp_clock(), ClockRate::HZ_8000);
        assert_eq!(CodecKind::G722.frame_samples(20), Some(320));
        assert_eq!(CodecKind::Pcmu.frame_samples(20), Some(160));
        assert_eq!(CodecKind::Pcmu.frame_samples(60), Some(480));
        assert_eq!(CodecKind::Pcmu.frame_samples(70), None);
        assert_eq!(CodecKind::Pcmu.frame_samples(15), None);
        assert_eq!(CodecKind::L16Narrow.channels(), 1);
    }

    #[test]
    fn configuration_names() {
        assert_eq!(CodecKind::from_config_name("pcmu"), Some(CodecKind::Pcmu));
        assert_eq!(CodecKind::from_config_name("g722"), Some(CodecKind::G722));
        assert_eq!(CodecKind::from_config_name("L16"), Some(CodecKind::L16Wide));
        assert_eq!(
            CodecKind::from_config_name("l16/8000"),
            Some(CodecKind::L16Narrow)
        );
        assert_eq!(CodecKind::from_config_name("L16/44100"), None);
        assert_eq!(CodecKind::from_config_name("G729"), None);
        assert_eq!(CodecKind::from_config_name("L16/x"), None);
    }

    #[test]
    fn default_concealment_is_silence() {
        let mut c = CodecKind::Pcmu.new_codec();
        let mut out = [7i16; 160];
        assert_eq!(c.conceal(&mut out).unwrap(), 160);
        assert!(out.iter().all(|&s| s == 0));
        let mut next = [7i16; 160];
        assert_eq!(c.recover(&[0xFF; 160], &mut next).unwrap(), 160);
        assert!(next.iter().all(|&s| s == 0));
        for kind in [CodecKind::Pcmu, CodecKind::G722, CodecKind::L16Wide] {
            let c = kind.new_codec();
            assert!(!c.has_own_concealment(), "{kind:?}");
        }
    }

    #[test]
    fn opus_fmtp_parameters() {
        let p = OpusParams::parse("maxplaybackrate=16000; useinbandfec=1;usedtx=1;stereo=0");
        assert_eq!(
            p,
            OpusParams {
                max_playback_rate: 16000,
                use_inband_fec: true,
                use_dtx: true,
                stereo: false,
            }
        );
        assert_eq!(OpusParams::parse(""), OpusParams::default());
        // Out of range and malformed values: clamped or ignored, never an error.
        assert_eq!(
            OpusParams::parse("maxplaybackrate=96000").max_playback_rate,
            48000
        );
        assert_eq!(
            OpusParams::parse("maxplaybackrate=4000").max_playback_rate,
            8000
        );
        assert!(!OpusParams::parse("useinbandfec=yes;x").use_inband_fec);
    }
}
