//! RFC 3264 offer/answer for one audio stream: our codec capabilities ([`Codec`]), our side of
//! the session ([`LocalSession`]: origin, version counter, media address), the answer to a
//! peer's offer, our own offer and the acceptance of the peer's answer, and the reasons for a
//! 488 ([`NegotiationError`]).
//!
//! Codec choice when answering follows [`CodecChoice`]: by default (generous) the first format
//! in the *offer's* order that we allow. The offerer lists its formats by preference (RFC 3264
//! §5.1) and the answerer picks among them, so honouring that order gives the caller the codec
//! it asked for whenever we can decode it; greedy takes our own first choice the offer has.
//! Our offers list our codecs in our order.
//!
//! RFC 4733 events are negotiated per RTP clock: an answer takes the offered
//! `telephone-event` whose rate is the chosen codec's RTP clock (8000 for G.722, whose audio
//! is 16 kHz, RFC 3551 §4.5.2), and our offers carry one per clock rate among our codecs.
//!
//! SRTP keys travel in the SDP (SDES, RFC 4568) under [`SrtpPolicy`]: an `RTP/SAVP` offer is
//! answered in kind with the first `a=crypto` we can use and a key of ours for the same suite;
//! an `RTP/AVP` offer that carries `a=crypto` (best-effort SRTP, as FreeSWITCH and baresip
//! offer it) gets SRTP too; an offer without keys never does. Our key is made once per call
//! and kept across re-answers, so a re-INVITE that changes nothing changes no key.
//!
//! Header extensions (RFC 8285 `a=extmap`): only the RFC 6464 client-to-mixer audio level is
//! taken. An offer that maps it on a one-byte id (1..=14) and sends it is answered with the
//! same id, `recvonly`; our offers map it on id 1, `recvonly`. Other mappings are never
//! answered. The agreed id reaches the leg in [`CodecParams::audio_level_id`], so a re-INVITE
//! adds or removes it like any other parameter.

use std::net::{IpAddr, SocketAddr};

use super::model::{
    Attribute, Connection, Direction, ExtMap, MediaDescription, MediaKind, Origin, PayloadType,
    RtpMap, SessionDescription, AUDIO_LEVEL_URI,
};
use super::webrtc::{self, WebRtcLocal, WebRtcRemote};
use crate::rtp::srtp::{CryptoAttr, MasterKey, SrtpSession, Suite};

const TELEPHONE_EVENT: &str = "telephone-event";
/// The DTMF events we answer with when the offer does not say (RFC 4733 §2.4.1).
const DEFAULT_EVENTS: &str = "0-16";
const DEFAULT_PTIME_MS: u32 = 20;
/// Dynamic payload types we hand out in our offers to codecs without a static one.
const FIRST_DYNAMIC_PT: u8 = 96;

pub use crate::media::codec::CodecKind as Codec;
use crate::media::codec::{CodecParams, OpusParams};

/// The parameters we ask of an Opus sender (RFC 7587 §6.1): we decode in-band FEC.
const OPUS_FMTP: &str = "useinbandfec=1";

/// What offer/answer needs to know of a codec beyond its identity.
impl Codec {
    /// The `a=fmtp` parameters we put in an answer, given the offer's.
    pub fn answer_fmtp(self, _offered: Option<&str>) -> Option<String> {
        self.offer_fmtp()
    }

    /// The `a=fmtp` parameters we put in an offer: what we want to receive.
    pub fn offer_fmtp(self) -> Option<String> {
        self.is_opus().then(|| OPUS_FMTP.to_owned())
    }

    /// What the peer's `a=fmtp` for this codec asks of our encoder.
    pub fn params_from_fmtp(self, fmtp: Option<&str>) -> CodecParams {
        CodecParams {
            opus: match fmtp {
                Some(f) if self.is_opus() => OpusParams::parse(f),
                _ => OpusParams::default(),
            },
            audio_level_id: None,
        }
    }

    fn is_opus(self) -> bool {
        self.name() == "opus"
    }

    /// Whether an offered format is this codec: by its `a=rtpmap` when present, else by the
    /// static payload type (RFC 3551 formats may be offered without `a=rtpmap`).
    pub fn matches(self, pt: PayloadType, rtpmap: Option<&RtpMap>) -> bool {
        match rtpmap {
            Some(m) => {
                let channels = m.channels.unwrap_or(1);
                m.encoding.eq_ignore_ascii_case(self.name())
                    && m.clock_rate == self.clock_rate()
                    // RFC 7587 says opus/48000/2; a lone "opus/48000" means the same codec.
                    && (channels == self.channels() || (self.is_opus() && channels == 1))
            }
            None => self.static_payload_type() == Some(pt),
        }
    }

    /// The `a=rtpmap` for this codec on `pt`.
    pub fn rtpmap(self, pt: PayloadType) -> RtpMap {
        RtpMap {
            payload_type: pt,
            encoding: self.name().to_owned(),
            clock_rate: self.clock_rate(),
            channels: (self.channels() != 1).then_some(self.channels()),
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an offer or answer cannot be used; the message suits a SIP `Warning: 399` header on a
/// 488 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// No usable `m=audio` line (none, or all with port 0).
    #[error("no audio stream")]
    NoAudioStream,
    /// Audio is offered only over a profile we do not speak (SRTP when it is off).
    #[error("unsupported transport {0}")]
    UnsupportedTransport(String),
    /// SRTP is required and the offer (or the answer to ours) has no key we can use.
    #[error("SRTP required: no usable a=crypto")]
    SrtpRequired,
    /// The audio is offered over SRTP, but with no `a=crypto` we can use.
    #[error("no usable a=crypto (offered: {0})")]
    NoUsableCrypto(String),
    /// Audio is offered, but in no codec we support.
    #[error("no common audio codec (offered: {offered}; supported: {supported})")]
    NoCommonCodec {
        /// The offered encodings, comma-separated.
        offered: String,
        /// Our encodings, comma-separated.
        supported: String,
    },
    /// The audio stream has no `c=` with an IP address, so we would not know where to send.
    #[error("no connection address for the audio stream")]
    NoConnectionAddress,
    /// The answer refused our audio stream (port 0).
    #[error("audio stream rejected by the peer")]
    AudioRejected,
    /// The answer does not have one `m=` per offered `m=` (RFC 3264 §6).
    #[error("answer has {answer} media streams, the offer had {offer}")]
    MediaCountMismatch {
        /// m-lines in our offer.
        offer: usize,
        /// m-lines in the answer.
        answer: usize,
    },
    /// An answer arrived although we have no offer outstanding.
    #[error("answer received without an outstanding offer")]
    NoPendingOffer,
    /// A DTLS-SRTP stream without a certificate fingerprint its handshake can be checked by.
    #[error("no usable DTLS fingerprint (a=fingerprint with sha-256)")]
    NoFingerprint,
    /// A DTLS-SRTP stream without ICE credentials (`a=ice-ufrag`, `a=ice-pwd`).
    #[error("no ICE credentials (a=ice-ufrag, a=ice-pwd)")]
    NoIceCredentials,
    /// A DTLS-SRTP stream whose `a=setup` leaves us no role (`holdconn`, or unknown).
    #[error("no DTLS role left to us (a=setup)")]
    NoDtlsRole,
}

/// How an answer picks the codec among those both sides support (`[media] codec_choice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecChoice {
    /// The offerer's first format that we allow (RFC 3264 §5.1's preference order).
    #[default]
    Generous,
    /// Our first codec that the offer has, wherever the offer lists it.
    Greedy,
}

/// When a call's media is SRTP (`[rtp] srtp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpPolicy {
    /// Offers with keys get SRTP, offers without get plain RTP; our own offers are plain.
    #[default]
    Optional,
    /// SRTP only: an offer without usable keys gets 488; our own offers are `RTP/SAVP`.
    Required,
    /// Plain RTP only: SRTP-only offers get 488, keys on plain offers are ignored.
    Off,
}

/// The SDES keys of an SRTP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// Ours, to protect what we send.
    pub ours: MasterKey,
    /// The peer's (with its tag, MKI and parameters), to check and decrypt what it sends.
    pub theirs: CryptoAttr,
}

/// The suites we offer, in our order of preference (the most widely implemented first).
const OFFERED_SUITES: [Suite; 3] = [
    Suite::AesCm128HmacSha1_80,
    Suite::AesCm128HmacSha1_32,
    Suite::AeadAes128Gcm,
];

/// The audio stream both sides agreed on, from our point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedAudio {
    /// The codec to send and expect.
    pub codec: Codec,
    /// Its payload type on this call.
    pub payload_type: PayloadType,
    /// Its RTP clock rate in Hz.
    pub clock_rate: u32,
    /// The RFC 4733 telephone-event payload type, if both sides use it: the one at the
    /// codec's RTP clock rate, else one at 8000.
    pub telephone_event_pt: Option<PayloadType>,
    /// Its clock rate (event durations count in it).
    pub telephone_event_rate: u32,
    /// What the peer's `a=fmtp` for the codec asks of our encoder (Opus: bandwidth, FEC, DTX).
    pub params: CodecParams,
    /// Packetisation time in milliseconds.
    pub ptime_ms: u32,
    /// Where to send RTP; `None` while the peer holds the call with `c=0.0.0.0`.
    pub remote_rtp: Option<SocketAddr>,
    /// Where to send RTCP: the `a=rtcp` port, the RTP port under rtcp-mux, else RTP port + 1.
    pub remote_rtcp: Option<SocketAddr>,
    /// Our direction: whether we send and/or receive.
    pub direction: Direction,
    /// Whether RTP and RTCP share one port (RFC 5761).
    pub rtcp_mux: bool,
    /// The SRTP keys, when the stream is SRTP with keys in the SDP.
    pub srtp: Option<Box<SrtpKeys>>,
    /// What the peer's DTLS-SRTP offer asked (its keys come from the handshake).
    pub webrtc: Option<Box<WebRtcRemote>>,
}

impl NegotiatedAudio {
    /// The header extension id of the RFC 6464 audio level the peer sends, when agreed
    /// (carried to the leg in [`NegotiatedAudio::params`]).
    pub fn audio_level_id(&self) -> Option<u8> {
        self.params.audio_level_id
    }
}

/// Our answer to an offer: the SDP to send and the negotiated stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The answer SDP.
    pub sdp: SessionDescription,
    /// What was agreed for the audio stream.
    pub media: NegotiatedAudio,
}

/// Our side of one call's offer/answer exchanges.
#[derive(Debug, Clone)]
pub struct LocalSession {
    session_id: u64,
    version: u64,
    media_addr: SocketAddr,
    ptime_ms: u32,
    codecs: Vec<Codec>,
    choice: CodecChoice,
    srtp: SrtpPolicy,
    /// Our SRTP key once one was sent, reused by later answers of the same suite.
    srtp_key: Option<MasterKey>,
    /// The keys of our SRTP offers, by tag, kept for re-offers and for the answer.
    offered_keys: Vec<CryptoAttr>,
    /// Our DTLS-SRTP transport, when the call may take WebRTC offers.
    webrtc: Option<WebRtcLocal>,
    last_sent: Option<SessionDescription>,
    pending_offer: Option<SessionDescription>,
}

impl LocalSession {
    /// A session with origin id `session_id` (pick it at random per call) whose media lives at
    /// `media_addr` (IP and RTP port); supports PCMU then PCMA, ptime 20 ms.
    pub fn new(session_id: u64, media_addr: SocketAddr) -> Self {
        LocalSession {
            session_id,
            version: 0,
            media_addr,
            ptime_ms: DEFAULT_PTIME_MS,
            codecs: Codec::ALL.to_vec(),
            choice: CodecChoice::default(),
            srtp: SrtpPolicy::default(),
            srtp_key: None,
            offered_keys: Vec::new(),
            webrtc: None,
            last_sent: None,
            pending_offer: None,
        }
    }

    /// Replaces the supported codecs (in our preference order, used for our offers).
    pub fn with_codecs(mut self, codecs: Vec<Codec>) -> Self {
        self.codecs = codecs;
        self
    }

    /// Sets how an answer picks among the codecs both sides support.
    pub fn with_choice(mut self, choice: CodecChoice) -> Self {
        self.choice = choice;
        self
    }

    /// Sets when the media is SRTP.
    pub fn with_srtp(mut self, policy: SrtpPolicy) -> Self {
        self.srtp = policy;
        self
    }

    /// Takes DTLS-SRTP (`UDP/TLS/RTP/SAVPF`) offers, answered with this transport of ours.
    pub fn with_webrtc(mut self, local: WebRtcLocal) -> Self {
        self.webrtc = Some(local);
        self
    }

    /// Our DTLS-SRTP transport, when we take WebRTC offers.
    pub fn webrtc(&self) -> Option<&WebRtcLocal> {
        self.webrtc.as_ref()
    }

    /// Sets the ptime used when the offer has no acceptable one.
    pub fn with_ptime(mut self, ptime_ms: u32) -> Self {
        self.ptime_ms = ptime_ms;
        self
    }

    /// Our RTP address.
    pub fn media_addr(&self) -> SocketAddr {
        self.media_addr
    }

    /// Moves our media (the next SDP will differ, so its version will increase).
    pub fn set_media_addr(&mut self, media_addr: SocketAddr) {
        self.media_addr = media_addr;
    }

    /// The `o=` session version of the last SDP we produced.
    pub fn session_version(&self) -> u64 {
        self.version
    }

    /// The last SDP we produced (offer or answer).
    pub fn last_sdp(&self) -> Option<&SessionDescription> {
        self.last_sent.as_ref()
    }

    /// Answers `offer` (RFC 3264 §6): one m-line per offered m-line in the same order; the
    /// first usable audio RTP stream is accepted, every other stream is rejected with port 0.
    pub fn answer(&mut self, offer: &SessionDescription) -> Result<Answer, NegotiationError> {
        let (index, chosen, crypto, dtls) = self.choose_stream(offer)?;
        let offered = &offer.media[index];

        let telephone_event = pick_telephone_event(
            offered,
            |pt| offered.attributes.rtpmap(pt),
            chosen.codec.clock_rate(),
        )
        .map(|(pt, rate)| {
            let events = offered
                .attributes
                .fmtp(pt)
                .filter(|v| !v.is_empty())
                .unwrap_or(DEFAULT_EVENTS);
            (pt, events.to_owned(), rate)
        });
        let ptime_ms = choose_ptime(
            offered
                .attributes
                .ptime()
                .or_else(|| offer.attributes.ptime()),
            offered
                .attributes
                .maxptime()
                .or_else(|| offer.attributes.maxptime()),
            self.ptime_ms,
        );
        // An ICE offer's c= line is a placeholder: media goes where its checks come from.
        let peer = match dtls {
            Some(_) => offer.direction_for(offered),
            None => peer_direction(offer, offered),
        };
        let direction = peer.reversed();
        let rtcp_mux = offered.attributes.rtcp_mux() || dtls.is_some();
        let (remote_rtp, remote_rtcp) = match dtls {
            Some(_) => (None, None),
            None => remote_addresses(offer, offered, rtcp_mux)?,
        };

        let mut formats = vec![chosen.pt.to_string()];
        let mut audio = MediaDescription::new(
            MediaKind::Audio,
            self.media_addr.port(),
            offered.proto.clone(),
            Vec::new(),
        );
        audio
            .attributes
            .push((&chosen.codec.rtpmap(chosen.pt)).into());
        let offered_fmtp = offered.attributes.fmtp(chosen.pt);
        let mut params = chosen.codec.params_from_fmtp(offered_fmtp);
        let level = offered_audio_level(offered);
        params.audio_level_id = level.as_ref().and_then(|m| u8::try_from(m.id).ok());
        if let Some(params) = chosen.codec.answer_fmtp(offered_fmtp) {
            audio.attributes.push(Attribute::with_value(
                "fmtp",
                format!("{} {params}", chosen.pt),
            ));
        }
        if let Some((pt, events, rate)) = &telephone_event {
            formats.push(pt.to_string());
            audio
                .attributes
                .push((&telephone_event_rtpmap(*pt, *rate)).into());
            audio
                .attributes
                .push(Attribute::with_value("fmtp", format!("{pt} {events}")));
        }
        audio.formats = formats;
        audio
            .attributes
            .push(Attribute::with_value("ptime", ptime_ms.to_string()));
        audio.attributes.push(direction.into());
        if let Some(m) = &level {
            audio.attributes.push(m.into());
        }
        if rtcp_mux {
            audio.attributes.push(Attribute::flag("rtcp-mux"));
        }
        let srtp = crypto.map(|(theirs, ours)| {
            audio.attributes.push(Attribute::with_value(
                "crypto",
                CryptoAttr::new(theirs.tag, ours.clone()).to_string(),
            ));
            self.srtp_key = Some(ours.clone());
            Box::new(SrtpKeys { ours, theirs })
        });

        let mut sdp = self.skeleton();
        if let (Some(remote), Some(local)) = (&dtls, &self.webrtc) {
            webrtc::answer_attributes(local, remote, &mut sdp, &mut audio);
        }
        sdp.media = offer
            .media
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if i == index {
                    audio.clone()
                } else {
                    MediaDescription::new(m.kind.clone(), 0, m.proto.clone(), m.formats.clone())
                }
            })
            .collect();
        let sdp = self.stamp(sdp);
        self.pending_offer = None;

        Ok(Answer {
            sdp,
            media: NegotiatedAudio {
                codec: chosen.codec,
                payload_type: chosen.pt,
                clock_rate: chosen.codec.clock_rate(),
                telephone_event_pt: telephone_event.as_ref().map(|(pt, _, _)| *pt),
                telephone_event_rate: telephone_event
                    .as_ref()
                    .map_or(chosen.codec.clock_rate(), |(_, _, rate)| *rate),
                params,
                ptime_ms,
                remote_rtp,
                remote_rtcp,
                direction,
                rtcp_mux,
                srtp,
                webrtc: dtls,
            },
        })
    }

    /// Our offer, for an INVITE that came without one: every supported codec in our order,
    /// then a telephone-event for each RTP clock rate among them (8000 on PT 101), sendrecv.
    pub fn offer(&mut self) -> SessionDescription {
        let secure = self.srtp == SrtpPolicy::Required;
        let mut audio = MediaDescription::new(
            MediaKind::Audio,
            self.media_addr.port(),
            if secure { "RTP/SAVP" } else { "RTP/AVP" },
            Vec::new(),
        );
        // PT 101 stays for telephone-event/8000, as every offer of ours has always had it.
        let mut dynamic = (FIRST_DYNAMIC_PT..=127)
            .filter(|&n| n != PayloadType::DEFAULT_TELEPHONE_EVENT.get())
            .filter_map(|n| PayloadType::new(n).ok());
        let mut te_rates = Vec::new();
        for &codec in &self.codecs {
            let Some(pt) = codec.static_payload_type().or_else(|| dynamic.next()) else {
                continue;
            };
            audio.formats.push(pt.to_string());
            audio.attributes.push((&codec.rtpmap(pt)).into());
            if let Some(params) = codec.offer_fmtp() {
                audio
                    .attributes
                    .push(Attribute::with_value("fmtp", format!("{pt} {params}")));
            }
            if !te_rates.contains(&codec.clock_rate()) {
                te_rates.push(codec.clock_rate());
            }
        }
        for te_rate in te_rates {
            let pt = if te_rate == 8000 {
                PayloadType::DEFAULT_TELEPHONE_EVENT
            } else {
                let Some(pt) = dynamic.next() else {
                    continue;
                };
                pt
            };
            audio.formats.push(pt.to_string());
            audio
                .attributes
                .push((&telephone_event_rtpmap(pt, te_rate)).into());
            audio.attributes.push(Attribute::with_value(
                "fmtp",
                format!("{pt} {DEFAULT_EVENTS}"),
            ));
        }
        audio
            .attributes
            .push(Attribute::with_value("ptime", self.ptime_ms.to_string()));
        audio.attributes.push(Direction::SendRecv.into());
        // The only extension we offer, so the first id is free.
        audio.attributes.push(
            (&ExtMap {
                id: 1,
                direction: Some(Direction::RecvOnly),
                uri: AUDIO_LEVEL_URI.to_owned(),
                attributes: None,
            })
                .into(),
        );
        if secure {
            if self.offered_keys.is_empty() {
                self.offered_keys = (1..)
                    .zip(OFFERED_SUITES)
                    .filter_map(|(tag, suite)| {
                        let key = self.key_for(suite)?;
                        Some(CryptoAttr::new(tag, key))
                    })
                    .collect();
            }
            for key in &self.offered_keys {
                audio
                    .attributes
                    .push(Attribute::with_value("crypto", key.to_string()));
            }
        }

        let mut sdp = self.skeleton();
        sdp.media.push(audio);
        let sdp = self.stamp(sdp);
        self.pending_offer = Some(sdp.clone());
        sdp
    }

    /// Accepts the peer's answer to our last [`offer`](Self::offer).
    pub fn accept_answer(
        &mut self,
        answer: &SessionDescription,
    ) -> Result<NegotiatedAudio, NegotiationError> {
        let offer = self
            .pending_offer
            .take()
            .ok_or(NegotiationError::NoPendingOffer)?;
        if answer.media.len() != offer.media.len() {
            return Err(NegotiationError::MediaCountMismatch {
                offer: offer.media.len(),
                answer: answer.media.len(),
            });
        }
        // Our offers carry exactly one audio stream, first.
        let (Some(ours), Some(theirs)) = (offer.media.first(), answer.media.first()) else {
            return Err(NegotiationError::NoAudioStream);
        };
        if theirs.port == 0 {
            return Err(NegotiationError::AudioRejected);
        }
        // An answerer may omit rtpmap for a PT it echoes; the offer's mapping then applies.
        let rtpmap = |pt| {
            theirs
                .attributes
                .rtpmap(pt)
                .or_else(|| ours.attributes.rtpmap(pt))
        };
        // The answerer has chosen: its first format that we offered.
        let chosen = theirs.payload_types().find_map(|pt| {
            let map = rtpmap(pt);
            self.codecs
                .iter()
                .find(|c| c.matches(pt, map.as_ref()))
                .map(|&codec| (codec, pt))
        });
        let Some((codec, pt)) = chosen else {
            return Err(NegotiationError::NoCommonCodec {
                offered: format_names(std::iter::once(theirs)),
                supported: names(&self.codecs),
            });
        };
        let telephone_event = pick_telephone_event(theirs, rtpmap, codec.clock_rate());
        let ptime_ms = choose_ptime(
            theirs
                .attributes
                .ptime()
                .or_else(|| answer.attributes.ptime()),
            None,
            self.ptime_ms,
        );
        let offered_dir = offer.direction_for(ours);
        let peer = peer_direction(answer, theirs);
        let direction = Direction::from_flags(
            offered_dir.sends() && peer.receives(),
            offered_dir.receives() && peer.sends(),
        );
        let rtcp_mux = theirs.attributes.rtcp_mux() && ours.attributes.rtcp_mux();
        let (remote_rtp, remote_rtcp) = remote_addresses(answer, theirs, rtcp_mux)?;
        let mut params = codec.params_from_fmtp(theirs.attributes.fmtp(pt));
        params.audio_level_id = answered_audio_level(ours, theirs);
        let srtp = self.answered_keys(&ours.proto, theirs)?;
        Ok(NegotiatedAudio {
            codec,
            payload_type: pt,
            clock_rate: codec.clock_rate(),
            telephone_event_pt: telephone_event.map(|(pt, _)| pt),
            telephone_event_rate: telephone_event.map_or(codec.clock_rate(), |(_, r)| r),
            params,
            ptime_ms,
            remote_rtp,
            remote_rtcp,
            direction,
            rtcp_mux,
            srtp,
            webrtc: None,
        })
    }

    /// The keys an answer to our offer (whose profile was `offered_proto`) agreed: the
    /// answer's `a=crypto` with the tag and suite of one of ours.
    fn answered_keys(
        &mut self,
        offered_proto: &str,
        theirs: &MediaDescription,
    ) -> Result<Option<Box<SrtpKeys>>, NegotiationError> {
        if self.offered_keys.is_empty() {
            return Ok(None);
        }
        let agreed = theirs
            .attributes
            .values("crypto")
            .filter_map(|v| CryptoAttr::parse(v).ok())
            .find_map(|attr| {
                let ours = self
                    .offered_keys
                    .iter()
                    .find(|o| o.tag == attr.tag && o.key.suite() == attr.key.suite())?;
                SrtpSession::new(&ours.key, &attr).ok()?;
                Some(Box::new(SrtpKeys {
                    ours: ours.key.clone(),
                    theirs: attr,
                }))
            });
        match agreed {
            Some(keys) => {
                self.srtp_key = Some(keys.ours.clone());
                Ok(Some(keys))
            }
            None if is_savp(offered_proto) => Err(NegotiationError::SrtpRequired),
            None => Ok(None),
        }
    }

    /// Our key for `suite`: the one already in use when it is that suite, else a new one.
    fn key_for(&self, suite: Suite) -> Option<MasterKey> {
        match &self.srtp_key {
            Some(k) if k.suite() == suite => Some(k.clone()),
            _ => MasterKey::random(suite).ok(),
        }
    }

    /// The first `a=crypto` of `m` we can use, with our key for its suite.
    fn choose_crypto(&self, m: &MediaDescription) -> Option<(CryptoAttr, MasterKey)> {
        m.attributes.values("crypto").find_map(|v| {
            let theirs = CryptoAttr::parse(v).ok()?;
            let ours = self.key_for(theirs.key.suite())?;
            // Parameters we do not implement make the session refuse the attribute.
            SrtpSession::new(&ours, &theirs).ok()?;
            Some((theirs, ours))
        })
    }

    fn skeleton(&self) -> SessionDescription {
        let ip = self.media_addr.ip();
        let mut sdp = SessionDescription::new(Origin::new("-", self.session_id, 0, ip), "-");
        sdp.connection = Some(Connection::new(ip));
        sdp
    }

    /// Sets the session version: unchanged if the SDP equals the last one we sent, else one more
    /// (RFC 3264 §8: a re-offer or re-answer with the same media keeps the version).
    fn stamp(&mut self, mut sdp: SessionDescription) -> SessionDescription {
        sdp.origin.session_version = self.version;
        if let Some(last) = &self.last_sent {
            if *last != sdp {
                self.version = self.version.wrapping_add(1);
                sdp.origin.session_version = self.version;
            }
        }
        self.last_sent = Some(sdp.clone());
        sdp
    }

    /// The first offered stream we can accept (with its SRTP keys when it is SRTP), or why
    /// there is none: a codec miss first, then missing keys, then the transport.
    fn choose_stream(&self, offer: &SessionDescription) -> Result<Stream, NegotiationError> {
        let live_audio = || {
            offer
                .media
                .iter()
                .enumerate()
                .filter(|(_, m)| m.kind == MediaKind::Audio && m.port != 0)
        };
        let dtls_ok =
            |m: &MediaDescription| webrtc::is_dtls_proto(&m.proto) && self.webrtc.is_some();
        let speakable = |m: &MediaDescription| {
            is_avp(&m.proto) || (is_savp(&m.proto) && self.srtp != SrtpPolicy::Off) || dtls_ok(m)
        };
        let mut keyless = None;
        let mut codec_misses = Vec::new();
        // What the first stream without a common codec was matched against, for the 488.
        let mut missed_against: Option<&[Codec]> = None;
        let mut dtls_error = None;
        for (i, m) in live_audio().filter(|(_, m)| speakable(m)) {
            if dtls_ok(m) {
                // The keys come from the handshake: no a=crypto is wanted or used.
                let remote = match webrtc::read_offer(offer, m) {
                    Ok(r) => r,
                    Err(e) => {
                        dtls_error.get_or_insert(e);
                        continue;
                    }
                };
                let codecs = self.webrtc.as_ref().map_or(&self.codecs, |w| &w.codecs);
                match self.choose_codec(m, codecs) {
                    Some(chosen) => return Ok((i, chosen, None, Some(Box::new(remote)))),
                    None => {
                        missed_against.get_or_insert(codecs);
                        codec_misses.push(m);
                    }
                }
                continue;
            }
            let crypto = match self.srtp {
                SrtpPolicy::Off => None,
                _ => self.choose_crypto(m),
            };
            let needs_keys = is_savp(&m.proto) || self.srtp == SrtpPolicy::Required;
            if needs_keys && crypto.is_none() {
                keyless.get_or_insert(m);
                continue;
            }
            match self.choose_codec(m, &self.codecs) {
                Some(chosen) => return Ok((i, chosen, crypto, None)),
                None => {
                    missed_against.get_or_insert(&self.codecs);
                    codec_misses.push(m);
                }
            }
        }
        if let Some(e) = dtls_error {
            return Err(e);
        }
        if !codec_misses.is_empty() {
            return Err(NegotiationError::NoCommonCodec {
                offered: format_names(codec_misses.into_iter()),
                supported: names(missed_against.unwrap_or(&self.codecs)),
            });
        }
        if let Some(m) = keyless {
            let suites: Vec<&str> = m
                .attributes
                .values("crypto")
                .filter_map(|v| v.split_whitespace().nth(1))
                .collect();
            return Err(if suites.is_empty() {
                NegotiationError::SrtpRequired
            } else {
                NegotiationError::NoUsableCrypto(suites.join(", "))
            });
        }
        match live_audio().next() {
            Some((_, m)) => Err(NegotiationError::UnsupportedTransport(m.proto.clone())),
            None => Err(NegotiationError::NoAudioStream),
        }
    }
}

impl LocalSession {
    /// The codec and payload type to answer `m` with from `codecs`, by our [`CodecChoice`].
    fn choose_codec(&self, m: &MediaDescription, codecs: &[Codec]) -> Option<Chosen> {
        let is =
            |codec: Codec, pt: PayloadType| codec.matches(pt, m.attributes.rtpmap(pt).as_ref());
        match self.choice {
            CodecChoice::Generous => m.payload_types().find_map(|pt| {
                let codec = codecs.iter().copied().find(|&c| is(c, pt))?;
                Some(Chosen { codec, pt })
            }),
            CodecChoice::Greedy => codecs.iter().find_map(|&codec| {
                let pt = m.payload_types().find(|&pt| is(codec, pt))?;
                Some(Chosen { codec, pt })
            }),
        }
    }
}

struct Chosen {
    codec: Codec,
    pt: PayloadType,
}

/// The stream an answer takes: its index, codec, the peer's key with ours when SDES-SRTP,
/// and what its offer asked when DTLS-SRTP.
type Stream = (
    usize,
    Chosen,
    Option<(CryptoAttr, MasterKey)>,
    Option<Box<WebRtcRemote>>,
);

/// The names of `codecs`, comma-separated.
fn names(codecs: &[Codec]) -> String {
    let names: Vec<&str> = codecs.iter().map(|c| c.name()).collect();
    names.join(", ")
}

/// The plain RTP profiles.
fn is_avp(proto: &str) -> bool {
    proto.eq_ignore_ascii_case("RTP/AVP") || proto.eq_ignore_ascii_case("RTP/AVPF")
}

/// The SRTP profiles (RFC 3711 §12, RFC 5124).
fn is_savp(proto: &str) -> bool {
    proto.eq_ignore_ascii_case("RTP/SAVP") || proto.eq_ignore_ascii_case("RTP/SAVPF")
}

/// The telephone-event among `m`'s formats to use with a codec on `codec_rate`, and its clock: the one
/// at the codec's clock (RFC 4733 §2.1), else an 8 kHz one, which phones offer beside Opus or
/// L16 whatever the codec (baresip does), so that their keys still work.
fn pick_telephone_event(
    m: &MediaDescription,
    rtpmap: impl Fn(PayloadType) -> Option<RtpMap>,
    codec_rate: u32,
) -> Option<(PayloadType, u32)> {
    let at = |rate: u32| {
        m.payload_types()
            .find(|&pt| rtpmap(pt).is_some_and(|m| is_telephone_event(&m, rate)))
            .map(|pt| (pt, rate))
    };
    at(codec_rate).or_else(|| at(8000))
}

fn is_telephone_event(map: &RtpMap, clock_rate: u32) -> bool {
    map.encoding.eq_ignore_ascii_case(TELEPHONE_EVENT) && map.clock_rate == clock_rate
}

fn telephone_event_rtpmap(pt: PayloadType, clock_rate: u32) -> RtpMap {
    RtpMap {
        payload_type: pt,
        encoding: TELEPHONE_EVENT.to_owned(),
        clock_rate,
        channels: None,
    }
}

/// The offer's RFC 6464 audio level mapping that we take, as we answer it: the first one the
/// offerer sends (sendrecv or sendonly) on a one-byte id, since ids 15 and above cannot be
/// read from the one-byte form every sender of this extension uses (RFC 8285 §4.2). Our
/// answer receives it; its attributes (`vad=on`) are kept.
fn offered_audio_level(m: &MediaDescription) -> Option<ExtMap> {
    let offered = m
        .attributes
        .extmaps()
        .find(|e| e.is_audio_level() && e.is_one_byte() && e.flow().sends())?;
    Some(ExtMap {
        direction: Some(Direction::RecvOnly),
        ..offered
    })
}

/// The id the peer sends the audio level with, when its answer to `ours` (which offered to
/// receive it) agreed: the answer's mapping of the same URI, sending, on a one-byte id.
fn answered_audio_level(ours: &MediaDescription, theirs: &MediaDescription) -> Option<u8> {
    ours.attributes.extmaps().find(ExtMap::is_audio_level)?;
    let m = theirs
        .attributes
        .extmaps()
        .find(|e| e.is_audio_level() && e.is_one_byte() && e.flow().sends())?;
    u8::try_from(m.id).ok()
}

/// The offer's ptime if it is a sane multiple of 10 ms (what G.711 framing and our 20 ms mixer
/// tick handle), capped by maxptime, else our default.
fn choose_ptime(ptime: Option<u32>, maxptime: Option<u32>, default: u32) -> u32 {
    let acceptable = |p: u32| (10..=60).contains(&p) && p.is_multiple_of(10);
    let mut chosen = ptime.filter(|&p| acceptable(p)).unwrap_or(default);
    if let Some(max) = maxptime {
        if chosen > max {
            let capped = max - max % 10;
            if acceptable(capped) {
                chosen = capped;
            }
        }
    }
    chosen
}

/// The peer's direction for `media`, counting `c=0.0.0.0` (RFC 2543 hold, RFC 3264 §8.4) as
/// the peer not wanting to receive.
fn peer_direction(sdp: &SessionDescription, media: &MediaDescription) -> Direction {
    let d = sdp.direction_for(media);
    if sdp
        .connection_for(media)
        .is_some_and(Connection::is_unspecified)
    {
        Direction::from_flags(d.sends(), false)
    } else {
        d
    }
}

fn remote_addresses(
    sdp: &SessionDescription,
    media: &MediaDescription,
    rtcp_mux: bool,
) -> Result<(Option<SocketAddr>, Option<SocketAddr>), NegotiationError> {
    let ip = sdp
        .connection_for(media)
        .and_then(Connection::ip)
        .ok_or(NegotiationError::NoConnectionAddress)?;
    if ip.is_unspecified() || media.port == 0 {
        return Ok((None, None));
    }
    let rtp = SocketAddr::new(ip, media.port);
    let rtcp = if rtcp_mux {
        Some(rtp)
    } else if let Some(attr) = media.attributes.rtcp() {
        let rtcp_ip: IpAddr = attr
            .connection
            .as_ref()
            .and_then(Connection::ip)
            .unwrap_or(ip);
        Some(SocketAddr::new(rtcp_ip, attr.port))
    } else {
        media.port.checked_add(1).map(|p| SocketAddr::new(ip, p))
    };
    Ok((Some(rtp), rtcp))
}

/// Names of the offered formats for a 488 reason: rtpmap encodings, or the RFC 3551 names of
/// static payload types.
fn format_names<'a>(media: impl Iterator<Item = &'a MediaDescription>) -> String {
    let mut names: Vec<String> = Vec::new();
    for m in media {
        for f in &m.formats {
            let name = match f.parse::<PayloadType>() {
                Ok(pt) => match m.attributes.rtpmap(pt) {
                    Some(map) => map.encoding,
                    None => static_name(pt).map_or_else(|| f.clone(), str::to_owned),
                },
                Err(_) => f.clone(),
            };
            if !names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
                names.push(name);
            }
        }
    }
    names.join(", ")
}

fn static_name(pt: PayloadType) -> Option<&'static str> {
    Some(match pt.get() {
        0 => "PCMU",
        3 => "GSM",
        4 => "G723",
        5 | 6 => "DVI4",
        7 => "LPC",
        8 => "PCMA",
        9 => "G722",
        10 | 11 => "L16",
        12 => "QCELP",
        13 => "CN",
        14 => "MPA",
        15 => "G728",
        16 | 17 => "DVI4",
        18 => "G729",
        25 => "CelB",
        26 => "JPEG",
        28 => "nv",
        31 => "H261",
        32 => "MPV",
        33 => "MP2T",
        34 => "H263",
        _ => return None,
    })
}
