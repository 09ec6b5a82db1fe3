//! RTP media transport: port allocation (the one part that binds sockets) and, sans-IO,
//! packet parsing and writing, RTP/RTCP demultiplexing, per-leg receive and send state (source
//! latching, sequence and timestamp extension, jitter and loss statistics), the adaptive jitter
//! buffer, G.711 loss concealment and RFC 8285 header extension elements.
//!
//! Apart from `ports`, nothing here reads a clock or touches a socket: callers pass `now` and
//! the bytes they received, and get back verdicts, frames and counts. Raw protocol numbers are
//! wrapped in the newtypes of [`types`] before they leave this module.

pub mod hdrext;
pub mod jitter;
pub mod packet;
pub mod plc;
pub mod ports;
pub mod rtcp;
pub mod session;
pub mod srtp;
pub mod types;

pub use jitter::{Frame, JitterBuffer, JitterConfig, JitterStats, Pop, PushOutcome};
pub use packet::{classify, PacketError, PacketKind, RtpHeader, RtpPacket};
pub use plc::G711Plc;
pub use rtcp::{
    NtpTime, PeerSenderReport, RtcpError, RtcpSession, RtcpStats, MAX_COMPOUND_LEN, REPORT_INTERVAL,
};
pub use session::{
    Accepted, Received, RecvConfig, RecvSession, RecvStats, Rejection, ReportBlock, SendSession,
};
pub use types::{
    ClockRate, InvalidPayloadType, MediaTime, NtpShort, PayloadType, PayloadTypeSet, RtpTimestamp,
    SeqNo, Ssrc, WireSeq,
};
