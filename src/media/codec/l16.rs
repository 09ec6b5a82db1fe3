//! L16: uncompressed 16-bit linear PCM, big-endian (network order) on the wire
//! (RFC 3551 §4.5.11), mono at 8 or 16 kHz on a dynamic payload type.

use super::{AudioCodec, CodecError, CodecKind};

/// L16 at one of its two rates; stateless, so concealment is silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L16 {
    kind: CodecKind,
}

impl L16 {
    /// L16 for `kind`, which must be [`CodecKind::L16Narrow`] or [`CodecKind::L16Wide`];
    /// anything else is taken as the narrowband form.
    pub const fn new(kind: CodecKind) -> Self {
        let kind = match kind {
            CodecKind::L16Wide => CodecKind::L16Wide,
            _ => CodecKind::L16Narrow,
        };
        L16 { kind }
    }
}

impl AudioCodec for L16 {
    fn kind(&self) -> CodecKind {
        self.kind
    }

    fn max_encoded_len(&self, samples: usize) -> usize {
        2 * samples
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        let needed = 2 * pcm.len();
        let Some(out) = out.get_mut(..needed) else {
            return Err(CodecError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        };
        for (o, &s) in out.chunks_exact_mut(2).zip(pcm) {
            o.copy_from_slice(&s.to_be_bytes());
        }
        Ok(needed)
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if !payload.len().is_multiple_of(2) {
            return Err(CodecError::InvalidPayload { codec: "L16" });
        }
        let needed = payload.len() / 2;
        if out.len() < needed {
            return Err(CodecError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        }
        for (o, b) in out.iter_mut().zip(payload.chunks_exact(2)) {
            *o = i16::from_be_bytes([b[0], b[1]]);
        }
        Ok(needed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::types::ClockRate;

    #[test]
    fn samples_are_big_endian_on_the_wire() {
        let mut c = L16::new(CodecKind::L16Wide);
        let mut out = [0u8; 8];
        assert_eq!(c.encode(&[0x1234, -2, i16::MIN, 1], &mut out).unwrap(), 8);
        assert_eq!(out, [0x12, 0x34, 0xFF, 0xFE, 0x80, 0x00, 0x00, 0x01]);
        let mut pcm = [0i16; 4];
        assert_eq!(c.decode(&out, &mut pcm).unwrap(), 4);
        assert_eq!(pcm, [0x1234, -2, i16::MIN, 1]);
        // Network order regardless of the host's: 0x0100 is 256, not 1.
        c.decode(&[0x01, 0x00], &mut pcm).unwrap();
        assert_eq!(pcm[0], 256);
    }

    #[test]
    fn rates_and_sizes() {
        let narrow = L16::new(CodecKind::L16Narrow);
        let wide = L16::new(CodecKind::L16Wide);
        assert_eq!(narrow.clock_rate(), ClockRate::HZ_8000);
        assert_eq!(narrow.sample_rate(), ClockRate::HZ_8000);
        assert_eq!(wide.clock_rate(), ClockRate::HZ_16000);
        assert_eq!(wide.sample_rate(), ClockRate::HZ_16000);
        assert_eq!(wide.name(), "L16");
        assert_eq!(narrow.max_encoded_len(160), 320);
        assert_eq!(CodecKind::L16Wide.samples_in(640), 320);
        assert_eq!(CodecKind::L16Wide.frame_samples(20), Some(320));
        assert_eq!(L16::new(CodecKind::Pcmu).kind(), CodecKind::L16Narrow);
    }

    #[test]
    fn odd_payloads_and_short_buffers_are_errors() {
        let mut c = L16::new(CodecKind::L16Narrow);
        let mut pcm = [0i16; 4];
        assert_eq!(
            c.decode(&[1, 2, 3], &mut pcm),
            Err(CodecError::InvalidPayload { codec: "L16" })
        );
        assert!(matches!(
            c.decode(&[0; 10], &mut pcm),
            Err(CodecError::BufferTooSmall { needed: 5, .. })
        ));
        let mut out = [0u8; 7];
        assert!(matches!(
            c.encode(&[0; 4], &mut out),
            Err(CodecError::BufferTooSmall {
                needed: 8,
                available: 7
            })
        ));
    }

    #[test]
    fn round_trip_is_lossless() {
        let pcm: Vec<i16> = (0..320).map(|i| (i * 205 - 32768) as i16).collect();
        let mut c = L16::new(CodecKind::L16Wide);
        let out = crate::media::codec::test_util::round_trip(&mut c, &pcm, 320);
        assert_eq!(out, pcm);
    }
}
