//! The WebRTC transport core of one browser leg: ICE-lite ([`ice`]) over STUN ([`stun`]) and
//! DTLS-SRTP keying ([`dtls`]), combined per leg in [`WebRtcTransport`].
//!
//! Sans-IO throughout: datagrams and `now` go in, datagrams to send, events and the next
//! deadline come out. The media tick hands a WebRTC leg's non-RTP datagrams (sorted by
//! [`demux`]) to the leg's transport, which runs off the media thread since DTLS does public
//! key crypto; the transport only produces SRTP keys, and [`crate::rtp::srtp`] protects the
//! media with them.
//!
//! A leg's life: the answer carries [`Credentials::random`], `a=ice-lite`, the
//! [`Certificate::process`] fingerprint and the `a=setup` of [`DtlsRole::answering`]; a
//! [`WebRtcTransport`] made from the offer's ufrag, pwd and fingerprint then takes the leg's
//! STUN and DTLS datagrams ([`ice::addressed_ufrag`] tells legs on one port apart), and its
//! events say where RTP goes ([`Event::Selected`]), with which keys ([`Event::Connected`],
//! [`SrtpKeys::session`]) and when the leg is over ([`Event::Failed`], [`Event::ConsentLost`]).

pub mod dtls;
pub mod ice;
pub mod stun;
mod transport;

pub use dtls::{Certificate, DtlsRole, Fingerprint, HandshakeFailure, SrtpKeys};
pub use ice::Credentials;
pub use transport::{Counters, Event, FailReason, Transmit, TransportConfig, WebRtcTransport};

/// What a datagram on a WebRTC leg's port is, by its first byte (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demux {
    /// 0..=3: STUN.
    Stun,
    /// 20..=63: DTLS.
    Dtls,
    /// 128..=191: RTP or RTCP (tell them apart with [`crate::rtp::packet::classify`]).
    Rtp,
    /// Anything else (ZRTP, TURN channels, empty datagrams, garbage).
    Other,
}

/// Sorts a datagram by its first byte (RFC 7983 §7).
pub fn demux(bytes: &[u8]) -> Demux {
    match bytes.first() {
        Some(0..=3) => Demux::Stun,
        Some(20..=63) => Demux::Dtls,
        Some(128..=191) => Demux::Rtp,
        _ => Demux::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demux_follows_rfc7983_boundaries() {
        let cases = [
            (0u8, Demux::Stun),
            (3, Demux::Stun),
            (4, Demux::Other),
            (16, Demux::Other),
            (19, Demux::Other),
            (20, Demux::Dtls),
            (63, Demux::Dtls),
            (64, Demux::Other),
            (127, Demux::Other),
            (128, Demux::Rtp),
            (191, Demux::Rtp),
            (192, Demux::Other),
            (255, Demux::Other),
        ];
        for (first, want) in cases {
            assert_eq!(demux(&[first, 0, 0, 0]), want, "first byte {first}");
        }
        assert_eq!(demux(&[]), Demux::Other);
    }
}
