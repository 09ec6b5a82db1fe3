//! RTP packet parsing and writing, and RTP/RTCP demultiplexing on one port.
//!
//! Parsing borrows from the datagram and writing fills a caller-provided buffer, so neither
//! allocates. Malformed input of any shape yields an error, never a panic.

use rtp_rs::{RtpPacketBuilder, RtpReader, RtpReaderError, Seq};

use super::types::{PayloadType, RtpTimestamp, Ssrc, WireSeq};

/// What a datagram arriving on an RTP port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// An RTP data packet.
    Rtp,
    /// An RTCP packet multiplexed on the RTP port (RFC 5761).
    Rtcp,
    /// Anything else (STUN, DTLS, garbage, truncated headers).
    Other,
}

/// Classifies a datagram per RFC 5761 §4: version 2 and a second byte in 192..=223 is RTCP.
///
/// RTP needs the 12-byte fixed header and RTCP the 4-byte common header; shorter datagrams
/// and other versions are `Other` (RFC 7983 puts STUN and DTLS below 128 in the first byte).
pub fn classify(bytes: &[u8]) -> PacketKind {
    match bytes {
        [first, second, ..] if first >> 6 == 2 => {
            if (192..=223).contains(second) {
                if bytes.len() >= 4 {
                    PacketKind::Rtcp
                } else {
                    PacketKind::Other
                }
            } else if bytes.len() >= RtpReader::MIN_HEADER_LEN {
                PacketKind::Rtp
            } else {
                PacketKind::Other
            }
        }
        _ => PacketKind::Other,
    }
}

/// Why a datagram is not a usable RTP packet, or a packet could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer bytes than the 12-byte fixed header.
    #[error("packet of {0} bytes is shorter than an RTP header")]
    TooShort(usize),
    /// The version field is not 2.
    #[error("unsupported RTP version {0}")]
    Version(u8),
    /// CSRCs or the header extension run past the end of the datagram.
    #[error("RTP header of {header_len} bytes truncated to {buffer_len}")]
    Truncated {
        /// Bytes the header claims.
        header_len: usize,
        /// Bytes present.
        buffer_len: usize,
    },
    /// The padding count is zero or longer than what follows the header.
    #[error("invalid RTP padding length {0}")]
    Padding(u8),
    /// The second byte is in the RTCP range (RFC 5761 §4), so this is not RTP.
    #[error("packet type {0} is RTCP, not RTP")]
    Rtcp(u8),
    /// The output buffer cannot hold the packet.
    #[error("output buffer of {have} bytes cannot hold a {need}-byte packet")]
    BufferTooSmall {
        /// Bytes the packet needs.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A header extension whose length is not a multiple of four or exceeds the field.
    #[error("header extension of {0} bytes cannot be written")]
    Extension(usize),
}

impl From<RtpReaderError> for PacketError {
    fn from(e: RtpReaderError) -> Self {
        match e {
            RtpReaderError::BufferTooShort(n) => PacketError::TooShort(n),
            RtpReaderError::UnsupportedVersion(v) => PacketError::Version(v),
            RtpReaderError::HeadersTruncated {
                header_len,
                buffer_len,
            } => PacketError::Truncated {
                header_len,
                buffer_len,
            },
            RtpReaderError::PaddingLengthInvalid(p) => PacketError::Padding(p),
        }
    }
}

/// The fixed RTP header fields (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit; for audio, the first packet of a talkspurt (RFC 3551 §4.1).
    pub marker: bool,
    /// Payload type.
    pub payload_type: PayloadType,
    /// Wire sequence number.
    pub seq: WireSeq,
    /// Wire timestamp.
    pub timestamp: RtpTimestamp,
    /// Synchronisation source.
    pub ssrc: Ssrc,
}

/// Up to 15 contributing sources, held inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsrcList {
    items: [Ssrc; 15],
    len: u8,
}

impl Default for CsrcList {
    fn default() -> Self {
        CsrcList {
            items: [Ssrc::new(0); 15],
            len: 0,
        }
    }
}

impl CsrcList {
    /// The largest count the four-bit CC field can express.
    pub const MAX: usize = 15;

    /// A list of the first 15 of `csrcs`.
    pub fn new(csrcs: &[Ssrc]) -> Self {
        let mut list = CsrcList::default();
        for &c in csrcs.iter().take(Self::MAX) {
            list.push(c);
        }
        list
    }

    /// Appends `csrc`; returns false (and drops it) when the list is full.
    pub fn push(&mut self, csrc: Ssrc) -> bool {
        match self.items.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = csrc;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The sources, in header order.
    pub fn as_slice(&self) -> &[Ssrc] {
        &self.items[..usize::from(self.len)]
    }
}

/// An RFC 3550 §5.3.1 header extension: a profile-defined id and its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderExtension<'a> {
    /// The 16-bit "defined by profile" field (0xBEDE for RFC 8285 one-byte headers).
    pub profile: u16,
    /// Extension data, a multiple of four bytes long.
    pub data: &'a [u8],
}

/// An RTP packet borrowing its variable parts from a datagram or from the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Fixed header fields.
    pub header: RtpHeader,
    /// Contributing sources.
    pub csrcs: CsrcList,
    /// Optional header extension.
    pub extension: Option<HeaderExtension<'a>>,
    /// Payload, without header, extension or padding.
    pub payload: &'a [u8],
    /// Padding bytes that followed the payload on the wire (0 if none); ignored when writing.
    pub padding: u8,
}

impl<'a> RtpPacket<'a> {
    /// A packet with just a header and payload.
    pub fn new(header: RtpHeader, payload: &'a [u8]) -> Self {
        RtpPacket {
            header,
            csrcs: CsrcList::default(),
            extension: None,
            payload,
            padding: 0,
        }
    }

    /// Parses an RTP packet; rejects RTCP-range packet types (RFC 5761 §4).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, PacketError> {
        let reader = RtpReader::new(bytes)?;
        if let Some(&second) = bytes.get(1) {
            if (192..=223).contains(&second) {
                return Err(PacketError::Rtcp(second));
            }
        }
        // The reader masks the type to seven bits, so this cannot fail; mapping keeps it total.
        let payload_type =
            PayloadType::new(reader.payload_type()).map_err(|e| PacketError::Version(e.0))?;
        let mut csrcs = CsrcList::default();
        for c in reader.csrc() {
            csrcs.push(Ssrc::new(c));
        }
        let padding = if bytes.first().is_some_and(|b| b & 0x20 != 0) {
            bytes.last().copied().unwrap_or(0)
        } else {
            0
        };
        Ok(RtpPacket {
            header: RtpHeader {
                marker: reader.mark(),
                payload_type,
                seq: WireSeq::new(u16::from(reader.sequence_number())),
                timestamp: RtpTimestamp::new(reader.timestamp()),
                ssrc: Ssrc::new(reader.ssrc()),
            },
            csrcs,
            extension: reader
                .extension()
                .map(|(profile, data)| HeaderExtension { profile, data }),
            payload: reader.payload(),
            padding,
        })
    }

    /// Bytes this packet takes when written (no padding).
    pub fn wire_len(&self) -> usize {
        RtpReader::MIN_HEADER_LEN
            + 4 * self.csrcs.as_slice().len()
            + self.extension.map_or(0, |e| 4 + e.data.len())
            + self.payload.len()
    }

    /// Writes the packet into `out` without padding and returns its length.
    ///
    /// Refuses a marker bit with a payload type in 64..=95, which receivers would take for
    /// RTCP (RFC 5761 §4).
    pub fn write(&self, out: &mut [u8]) -> Result<usize, PacketError> {
        let second = (u8::from(self.header.marker) << 7) | self.header.payload_type.get();
        if (192..=223).contains(&second) {
            return Err(PacketError::Rtcp(second));
        }
        let need = self.wire_len();
        if out.len() < need {
            return Err(PacketError::BufferTooSmall {
                need,
                have: out.len(),
            });
        }
        let mut builder = RtpPacketBuilder::new()
            .payload_type(self.header.payload_type.get())
            .marked(self.header.marker)
            .sequence(Seq::from(self.header.seq.get()))
            .timestamp(self.header.timestamp.get())
            .ssrc(self.header.ssrc.get())
            .payload(self.payload);
        for c in self.csrcs.as_slice() {
            builder = builder.add_csrc(c.get());
        }
        if let Some(ext) = self.extension {
            if !ext.data.len().is_multiple_of(4) || ext.data.len() / 4 > usize::from(u16::MAX) {
                return Err(PacketError::Extension(ext.data.len()));
            }
            builder = builder.extension(ext.profile, ext.data);
        }
        builder
            .build_into(out)
            .map_err(|_| PacketError::BufferTooSmall {
                need,
                have: out.len(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(seq: u16) -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: PayloadType::PCMA,
            seq: WireSeq::new(seq),
            timestamp: RtpTimestamp::new(0xdead_beef),
            ssrc: Ssrc::new(0x1234_5678),
        }
    }

    #[test]
    fn classify_per_rfc5761() {
        assert_eq!(classify(&[0x80, 200, 0, 1]), PacketKind::Rtcp);
        assert_eq!(classify(&[0x81, 201, 0, 7, 0, 0, 0, 0]), PacketKind::Rtcp);
        assert_eq!(classify(&[0x80, 223, 0, 1]), PacketKind::Rtcp);
        assert_eq!(classify(&[0x80, 191, 0, 1]), PacketKind::Other, "too short");
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 0x80; // marker + PT 0
        assert_eq!(classify(&rtp), PacketKind::Rtp);
        rtp[1] = 224;
        assert_eq!(classify(&rtp), PacketKind::Rtp);
        rtp[0] = 0x00; // STUN-like first byte
        assert_eq!(classify(&rtp), PacketKind::Other);
        assert_eq!(classify(&[]), PacketKind::Other);
        assert_eq!(classify(&[0x80]), PacketKind::Other);
        assert_eq!(classify(&[0x80, 200]), PacketKind::Other);
    }

    #[test]
    fn parse_rejects_rtcp_range() {
        let mut b = [0u8; 16];
        b[0] = 0x80;
        b[1] = 200;
        assert_eq!(RtpPacket::parse(&b), Err(PacketError::Rtcp(200)));
    }

    #[test]
    fn parse_padding_csrc_and_extension() {
        // V=2 P=1 X=1 CC=2
        let mut b = vec![0b1011_0010, 0x88, 0x12, 0x34, 0, 0, 0, 160, 1, 2, 3, 4];
        b.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 10]); // two CSRCs
        b.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]); // one-word extension
        b.extend_from_slice(b"payload!");
        b.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let p = RtpPacket::parse(&b).unwrap();
        assert!(p.header.marker);
        assert_eq!(p.header.payload_type, PayloadType::PCMA);
        assert_eq!(p.header.seq, WireSeq::new(0x1234));
        assert_eq!(p.header.timestamp, RtpTimestamp::new(160));
        assert_eq!(p.header.ssrc, Ssrc::new(0x0102_0304));
        assert_eq!(p.csrcs.as_slice(), &[Ssrc::new(9), Ssrc::new(10)]);
        assert_eq!(
            p.extension,
            Some(HeaderExtension {
                profile: 0xbede,
                data: &[0x10, 0xaa, 0, 0]
            })
        );
        assert_eq!(p.payload, b"payload!");
        assert_eq!(p.padding, 3);
    }

    #[test]
    fn parse_rejects_bad_padding_and_truncation() {
        let mut b = vec![0b1010_0000, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff];
        assert_eq!(RtpPacket::parse(&b), Err(PacketError::Padding(0xff)));
        *b.last_mut().unwrap() = 0;
        assert_eq!(RtpPacket::parse(&b), Err(PacketError::Padding(0)));
        let b = [0x8f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
        assert!(matches!(
            RtpPacket::parse(&b),
            Err(PacketError::Truncated { .. })
        ));
        assert_eq!(RtpPacket::parse(&[0x80; 5]), Err(PacketError::TooShort(5)));
        assert_eq!(RtpPacket::parse(&[0x40; 12]), Err(PacketError::Version(1)));
    }

    #[test]
    fn write_rejects_small_buffer_and_odd_extension() {
        let p = RtpPacket::new(header(1), &[1; 160]);
        let mut out = [0u8; 100];
        assert_eq!(
            p.write(&mut out),
            Err(PacketError::BufferTooSmall {
                need: 172,
                have: 100
            })
        );
        let mut p = RtpPacket::new(header(1), &[]);
        p.extension = Some(HeaderExtension {
            profile: 1,
            data: &[1, 2, 3],
        });
        assert_eq!(p.write(&mut out), Err(PacketError::Extension(3)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let kind = classify(&bytes);
            if let Ok(p) = RtpPacket::parse(&bytes) {
                prop_assert_eq!(kind, PacketKind::Rtp);
                prop_assert!(p.payload.len() <= bytes.len());
            }
        }

        #[test]
        fn mostly_valid_headers_never_panic(
            first in 0x80u8..=0xbf,
            rest in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut bytes = vec![first];
            bytes.extend_from_slice(&rest);
            let _ = classify(&bytes);
            let _ = RtpPacket::parse(&bytes);
        }

        #[test]
        fn write_parse_round_trip(
            marker in any::<bool>(),
            pt in (0u8..=127).prop_filter("RTCP range", |pt| !(64..=95).contains(pt)),
            seq in any::<u16>(),
            ts in any::<u32>(),
            ssrc in any::<u32>(),
            csrcs in proptest::collection::vec(any::<u32>(), 0..=15),
            ext in proptest::option::of((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..6))),
            payload in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let csrc_list: Vec<Ssrc> = csrcs.iter().copied().map(Ssrc::new).collect();
            let ext_data: Vec<u8> = ext.as_ref().map(|(_, d)| {
                let mut d = d.clone();
                d.resize(d.len().div_ceil(4) * 4, 0);
                d
            }).unwrap_or_default();
            let packet = RtpPacket {
                header: RtpHeader {
                    marker,
                    payload_type: PayloadType::new(pt).unwrap(),
                    seq: WireSeq::new(seq),
                    timestamp: RtpTimestamp::new(ts),
                    ssrc: Ssrc::new(ssrc),
                },
                csrcs: CsrcList::new(&csrc_list),
                extension: ext.map(|(profile, _)| HeaderExtension { profile, data: &ext_data }),
                payload: &payload,
                padding: 0,
            };
            let mut out = [0u8; 600];
            let n = packet.write(&mut out).unwrap();
            prop_assert_eq!(n, packet.wire_len());
            prop_assert_eq!(classify(&out[..n]), PacketKind::Rtp);
            let parsed = RtpPacket::parse(&out[..n]).unwrap();
            prop_assert_eq!(parsed, packet);
        }

        #[test]
        fn padded_payload_is_exact(payload in proptest::collection::vec(any::<u8>(), 0..100)) {
            let built = RtpPacketBuilder::new()
                .payload_type(0)
                .payload(&payload)
                .padded(rtp_rs::Pad::round_to(4))
                .build()
                .unwrap();
            let parsed = RtpPacket::parse(&built).unwrap();
            prop_assert_eq!(parsed.payload, &payload[..]);
            prop_assert_eq!(usize::from(parsed.padding), built.len() - 12 - payload.len());
        }
    }
}
