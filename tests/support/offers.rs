//! Codecs an in-process caller offers alone, for the wideband and audio level tests.

use switchboard::media::codec::CodecKind;

/// One codec a caller offers alone: its kind, payload type and SDP rtpmap.
pub struct Offer {
    /// The codec.
    pub kind: CodecKind,
    /// Its payload type in the offer.
    pub pt: u8,
    /// Its `a=rtpmap` value.
    pub rtpmap: &'static str,
}

pub const PCMU: Offer = Offer {
    kind: CodecKind::Pcmu,
    pt: 0,
    rtpmap: "PCMU/8000",
};
pub const G722: Offer = Offer {
    kind: CodecKind::G722,
    pt: 9,
    rtpmap: "G722/8000",
};
pub const L16_WIDE: Offer = Offer {
    kind: CodecKind::L16Wide,
    pt: 97,
    rtpmap: "L16/16000",
};
#[cfg(feature = "opus")]
pub const OPUS: Offer = Offer {
    kind: CodecKind::Opus,
    pt: 111,
    rtpmap: "opus/48000/2",
};
