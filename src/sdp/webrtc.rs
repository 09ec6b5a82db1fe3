//! DTLS-SRTP and ICE in offer/answer, as browsers and WebRTC clients use them: what a
//! `UDP/TLS/RTP/SAVPF` stream of an offer asks for (the peer's ICE credentials and certificate
//! fingerprint, the DTLS role left to us, its `a=mid`), and the attributes our answer carries:
//! `a=ice-lite`, our credentials and fingerprint, our host candidate, the DTLS role we take
//! (RFC 8842), the stream's mid in a BUNDLE group (RFC 8843) and `a=rtcp-mux`.
//!
//! We are an ICE-lite server (RFC 8445 §2.5): the offerer runs the checks, so the candidates
//! it lists are not needed and the address media flows to is the one its checks come from.
//! The `c=` address of such an offer (usually `0.0.0.0` with port 9, RFC 8839 §5.1) therefore
//! says nothing about hold or about where to send.

use std::net::SocketAddr;

use super::model::{Attribute, MediaDescription, SessionDescription};
use super::negotiate::NegotiationError;
pub use crate::webrtc::{DtlsRole, Fingerprint};

/// The profiles of DTLS-SRTP media (RFC 5764 §8, RFC 5124).
pub fn is_dtls_proto(proto: &str) -> bool {
    proto.eq_ignore_ascii_case("UDP/TLS/RTP/SAVPF")
        || proto.eq_ignore_ascii_case("UDP/TLS/RTP/SAVP")
}

/// Our side of a call's DTLS-SRTP transport, fixed for the call: re-answers repeat it, so a
/// re-INVITE does not restart ICE or DTLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebRtcLocal {
    /// Our ICE username fragment.
    pub ufrag: String,
    /// Our ICE password.
    pub pwd: String,
    /// Our certificate's fingerprint.
    pub fingerprint: Fingerprint,
    /// Our one host candidate: the address media reaches us on (the public one behind NAT).
    pub candidate: SocketAddr,
    /// The codecs such a call may use, in our order (`[webrtc] codecs`).
    pub codecs: Vec<super::Codec>,
}

/// What a DTLS-SRTP offer asked, and the role we took: what the call's transport needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebRtcRemote {
    /// The peer's ICE username fragment.
    pub ufrag: String,
    /// The peer's ICE password.
    pub pwd: String,
    /// Its certificate's SHA-256 fingerprint, which the handshake checks.
    pub fingerprint: Fingerprint,
    /// Our role in the handshake.
    pub role: DtlsRole,
    /// Our answer's `a=setup` for that role.
    pub setup: &'static str,
    /// The stream's `a=mid`, echoed in the answer.
    pub mid: Option<String>,
}

/// Reads what a DTLS-SRTP stream `m` of `offer` asks: ICE credentials and fingerprints from
/// the media section or, failing that, the session (where Firefox puts its fingerprint).
pub fn read_offer(
    offer: &SessionDescription,
    m: &MediaDescription,
) -> Result<WebRtcRemote, NegotiationError> {
    let value = |name: &'static str| {
        m.attributes
            .values(name)
            .next()
            .or_else(|| offer.attributes.values(name).next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    // A peer may list several hashes (aiortc gives three); the handshake checks SHA-256.
    let fingerprint = m
        .attributes
        .values("fingerprint")
        .chain(offer.attributes.values("fingerprint"))
        .find_map(|v| v.parse::<Fingerprint>().ok())
        .ok_or(NegotiationError::NoFingerprint)?;
    let (Some(ufrag), Some(pwd)) = (value("ice-ufrag"), value("ice-pwd")) else {
        return Err(NegotiationError::NoIceCredentials);
    };
    // RFC 4145 §4: an offer without a=setup is taken as active, which leaves us passive.
    let (role, setup) = DtlsRole::answering(value("setup").unwrap_or("active"))
        .ok_or(NegotiationError::NoDtlsRole)?;
    Ok(WebRtcRemote {
        ufrag: ufrag.to_owned(),
        pwd: pwd.to_owned(),
        fingerprint,
        role,
        setup,
        mid: m
            .attributes
            .values("mid")
            .next()
            .map(|v| v.trim().to_owned()),
    })
}

/// Adds our transport's attributes to the answer's stream `audio` and to the answer `sdp`.
pub fn answer_attributes(
    local: &WebRtcLocal,
    remote: &WebRtcRemote,
    sdp: &mut SessionDescription,
    audio: &mut MediaDescription,
) {
    sdp.attributes.push(Attribute::flag("ice-lite"));
    if let Some(mid) = &remote.mid {
        sdp.attributes
            .push(Attribute::with_value("group", format!("BUNDLE {mid}")));
        audio
            .attributes
            .push(Attribute::with_value("mid", mid.clone()));
    }
    let a = &mut audio.attributes;
    a.push(Attribute::with_value("ice-ufrag", local.ufrag.clone()));
    a.push(Attribute::with_value("ice-pwd", local.pwd.clone()));
    a.push(Attribute::with_value(
        "fingerprint",
        local.fingerprint.to_string(),
    ));
    a.push(Attribute::with_value("setup", remote.setup));
    // RFC 8445 §5.1.2: a host candidate's priority, type preference 126, one component.
    let c = local.candidate;
    a.push(Attribute::with_value(
        "candidate",
        format!("1 1 udp 2130706431 {} {} typ host", c.ip(), c.port()),
    ));
    a.push(Attribute::flag("end-of-candidates"));
    if !a.rtcp_mux() {
        a.push(Attribute::flag("rtcp-mux"));
    }
}
