//! RFC 8285 header extension elements, read in place from a packet's extension block, and
//! the one this server uses: the RFC 6464 client-to-mixer audio level.
//!
//! Both forms are read: one-byte headers (profile `0xBEDE`, ids 1..=14, 1..=16 bytes of
//! data) and two-byte headers (profile `0x100X`, ids 1..=255, 0..=255 bytes). Padding bytes
//! (0) between elements are skipped; in the one-byte form id 15 ends the block (RFC 8285
//! §4.2). An element that would run past the block ends it too, so no element is ever read
//! beyond the bytes the packet has.

use super::packet::HeaderExtension;

/// The "defined by profile" value of the one-byte form.
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;

/// Whether `profile` announces the two-byte form: `0x100` then four application bits.
fn is_two_byte(profile: u16) -> bool {
    profile & 0xFFF0 == 0x1000
}

/// The elements of one extension block, in order: `(id, data)`.
#[derive(Debug, Clone)]
pub struct Elements<'a> {
    data: &'a [u8],
    pos: usize,
    two_byte: bool,
}

impl<'a> Elements<'a> {
    /// The elements of `ext`; none when its profile is neither RFC 8285 form.
    pub fn new(ext: HeaderExtension<'a>) -> Self {
        let (data, two_byte) = if ext.profile == ONE_BYTE_PROFILE {
            (ext.data, false)
        } else if is_two_byte(ext.profile) {
            (ext.data, true)
        } else {
            (&[][..], false)
        };
        Elements {
            data,
            pos: 0,
            two_byte,
        }
    }

    fn end(&mut self) -> Option<(u8, &'a [u8])> {
        self.pos = self.data.len();
        None
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let &head = self.data.get(self.pos)?;
            if head == 0 {
                self.pos += 1;
                continue;
            }
            let (id, start, len) = if self.two_byte {
                let Some(&len) = self.data.get(self.pos + 1) else {
                    return self.end();
                };
                (head, self.pos + 2, usize::from(len))
            } else {
                let id = head >> 4;
                if id == 15 {
                    return self.end();
                }
                (id, self.pos + 1, usize::from(head & 0x0F) + 1)
            };
            let Some(data) = self.data.get(start..start + len) else {
                return self.end();
            };
            self.pos = start + len;
            // A one-byte header with id 0 and a length is not padding, but no element either.
            if id != 0 {
                return Some((id, data));
            }
        }
    }
}

/// The data of the first element `id` in `ext`.
pub fn find(ext: HeaderExtension<'_>, id: u8) -> Option<&[u8]> {
    Elements::new(ext).find(|&(i, _)| i == id).map(|(_, d)| d)
}

/// An RFC 6464 client-to-mixer audio level element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLevel {
    /// The V flag: the sender's own voice activity detection heard speech (when it says so:
    /// `vad=on`).
    pub voice: bool,
    /// The level, 0..=127: minus dBov, so 0 is the loudest and 127 digital silence.
    pub level: u8,
}

impl ClientLevel {
    /// Reads the element's data (one byte, `V` then seven bits of level; a longer element
    /// from a sender that pads it is read by its first byte).
    pub fn parse(data: &[u8]) -> Option<ClientLevel> {
        let &b = data.first()?;
        Some(ClientLevel {
            voice: b & 0x80 != 0,
            level: b & 0x7F,
        })
    }

    /// The element's byte.
    pub fn to_byte(self) -> u8 {
        (u8::from(self.voice) << 7) | (self.level & 0x7F)
    }
}

/// The audio level carried in element `id` of `ext`, when there is one.
pub fn audio_level(ext: Option<HeaderExtension<'_>>, id: u8) -> Option<ClientLevel> {
    find(ext?, id).and_then(ClientLevel::parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::packet::RtpPacket;
    use proptest::prelude::*;

    fn one_byte(data: &[u8]) -> HeaderExtension<'_> {
        HeaderExtension {
            profile: ONE_BYTE_PROFILE,
            data,
        }
    }

    #[test]
    fn reads_the_rfc_6464_one_byte_element_in_a_packet() {
        // RFC 6464 §3 in an RFC 3550 packet: X set, 0xBEDE, one word: id 1, len 0, V=1,
        // level 42, then two bytes of padding.
        let mut pkt = vec![0x90, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0, 0, 0, 7];
        pkt.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01, 0x10, 0x80 | 42, 0x00, 0x00]);
        pkt.extend_from_slice(&[0xFF; 160]);
        let p = RtpPacket::parse(&pkt).unwrap();
        assert_eq!(p.payload.len(), 160);
        assert_eq!(
            audio_level(p.extension, 1),
            Some(ClientLevel {
                voice: true,
                level: 42
            })
        );
        // Not the negotiated id: nothing.
        assert_eq!(audio_level(p.extension, 2), None);
        // No extension at all.
        assert_eq!(audio_level(None, 1), None);
    }

    #[test]
    fn reads_the_two_byte_form() {
        // RFC 6464 §3's two-byte form: id, len=1, V|level; profile 0x1000 with app bits.
        for profile in [0x1000, 0x100F] {
            let ext = HeaderExtension {
                profile,
                data: &[0x00, 0x07, 0x01, 0x7F, 0x03, 0x00, 0x00, 0x00],
            };
            assert_eq!(
                audio_level(Some(ext), 7),
                Some(ClientLevel {
                    voice: false,
                    level: 127
                })
            );
            // A zero-length element is found and has no level.
            assert_eq!(find(ext, 3), Some(&[][..]));
            assert_eq!(audio_level(Some(ext), 3), None);
        }
        // 0x1010 is neither form.
        let other = HeaderExtension {
            profile: 0x1010,
            data: &[0x07, 0x01, 0x7F, 0x00],
        };
        assert_eq!(Elements::new(other).count(), 0);
    }

    #[test]
    fn rfc_8285_elements_padding_and_id_15() {
        // id 1 (2 bytes), padding, id 2 (1 byte), id 15 ends the block, id 3 after it.
        let data = [
            0x11, 0xAA, 0xBB, 0x00, 0x00, 0x20, 0x05, 0xF0, 0x30, 0x09, 0, 0,
        ];
        let got: Vec<(u8, &[u8])> = Elements::new(one_byte(&data)).collect();
        assert_eq!(got, vec![(1, &[0xAA, 0xBB][..]), (2, &[0x05][..])]);
        assert_eq!(find(one_byte(&data), 3), None);
        // Levels at both ends of the scale.
        for (byte, voice, level) in [(0x00, false, 0), (0x7F, false, 127), (0x80, true, 0)] {
            let d = [0x40, byte, 0, 0];
            assert_eq!(
                audio_level(Some(one_byte(&d)), 4),
                Some(ClientLevel { voice, level })
            );
            assert_eq!(ClientLevel { voice, level }.to_byte(), byte);
        }
        // A padded two-byte level element in the one-byte form reads its first byte.
        let d = [0x41, 30, 0, 0];
        assert_eq!(
            audio_level(Some(one_byte(&d)), 4).map(|l| l.level),
            Some(30)
        );
    }

    #[test]
    fn malformed_blocks_end_the_parse_without_reading_past_them() {
        // An element claiming 16 bytes in a block of 4.
        assert_eq!(Elements::new(one_byte(&[0x1F, 1, 2, 3])).count(), 0);
        // A two-byte header cut after its id.
        let cut = HeaderExtension {
            profile: 0x1000,
            data: &[0x00, 0x00, 0x00, 0x05],
        };
        assert_eq!(Elements::new(cut).count(), 0);
        // Another profile is not RFC 8285.
        let other = HeaderExtension {
            profile: 0xABAC,
            data: &[0x10, 0x2A, 0, 0],
        };
        assert_eq!(audio_level(Some(other), 1), None);
    }

    proptest! {
        #[test]
        fn any_block_parses_within_its_bytes(
            profile in prop_oneof![Just(ONE_BYTE_PROFILE), 0x1000u16..=0x100F, any::<u16>()],
            data in proptest::collection::vec(any::<u8>(), 0..64),
            id in any::<u8>(),
        ) {
            let ext = HeaderExtension { profile, data: &data };
            let (lo, hi) = (data.as_ptr() as usize, data.as_ptr() as usize + data.len());
            let mut count = 0;
            for (i, d) in Elements::new(ext) {
                prop_assert!(i != 0);
                if profile == ONE_BYTE_PROFILE {
                    prop_assert!(i < 15 && (1..=16).contains(&d.len()));
                }
                let start = d.as_ptr() as usize;
                prop_assert!(d.is_empty() || (start >= lo && start + d.len() <= hi));
                count += 1;
            }
            // Each element takes at least two bytes (one-byte form) or a header (two-byte).
            prop_assert!(count <= data.len() / 2 + 1);
            if let Some(l) = audio_level(Some(ext), id) {
                prop_assert!(l.level <= 127);
            }
        }
    }
}
