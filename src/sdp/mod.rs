//! SDP (RFC 8866) model, parser, printer and RFC 3264 offer/answer negotiation.

pub mod model;
pub mod negotiate;
pub mod parse;
pub mod webrtc;

pub use model::{
    Attribute, Attributes, Bandwidth, Connection, Direction, ExtMap, ExtMapError, ExtraLine,
    MediaDescription, MediaKind, Origin, PayloadType, Rtcp, RtpMap, SessionDescription, Timing,
    AUDIO_LEVEL_URI,
};
pub use negotiate::{
    Answer, Codec, CodecChoice, LocalSession, NegotiatedAudio, NegotiationError, SrtpKeys,
    SrtpPolicy,
};
pub use parse::{parse, SdpError, SdpErrorKind};
pub use webrtc::{DtlsRole, WebRtcLocal, WebRtcRemote};

#[cfg(test)]
mod tests;
