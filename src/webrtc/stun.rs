//! STUN messages (RFC 8489, RFC 5389) as ICE uses them: the Binding method, short-term
//! credentials (MESSAGE-INTEGRITY with HMAC-SHA1), FINGERPRINT, XOR-MAPPED-ADDRESS and the
//! ICE attributes (RFC 8445 §16.1).
//!
//! [`Message::parse`] borrows from the datagram and allocates nothing; attribute accessors
//! walk the attributes on demand. [`Builder`] writes a message into a `Vec` that becomes the
//! datagram to send.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ring::hmac;

/// The fixed value in bytes 4..8 of every RFC 5389 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 20;
/// The Binding method.
pub const BINDING: u16 = 0x0001;

/// MAPPED-ADDRESS (RFC 8489 §14.1).
pub const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
/// USERNAME.
pub const ATTR_USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY (HMAC-SHA1).
pub const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
/// ERROR-CODE.
pub const ATTR_ERROR_CODE: u16 = 0x0009;
/// UNKNOWN-ATTRIBUTES.
pub const ATTR_UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6).
pub const ATTR_MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// XOR-MAPPED-ADDRESS.
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// PRIORITY (RFC 8445 §16.1).
pub const ATTR_PRIORITY: u16 = 0x0024;
/// USE-CANDIDATE.
pub const ATTR_USE_CANDIDATE: u16 = 0x0025;
/// SOFTWARE.
pub const ATTR_SOFTWARE: u16 = 0x8022;
/// FINGERPRINT.
pub const ATTR_FINGERPRINT: u16 = 0x8028;
/// ICE-CONTROLLED.
pub const ATTR_ICE_CONTROLLED: u16 = 0x8029;
/// ICE-CONTROLLING.
pub const ATTR_ICE_CONTROLLING: u16 = 0x802A;

/// The value FINGERPRINT's CRC-32 is xored with (RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;
const INTEGRITY_LEN: usize = 20;
const ATTR_HEADER_LEN: usize = 4;

/// The four message classes (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request, answered by a success or error response.
    Request,
    /// An indication, never answered.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0x000,
            Class::Indication => 0x010,
            Class::Success => 0x100,
            Class::Error => 0x110,
        }
    }

    fn from_type(t: u16) -> Class {
        match t & 0x110 {
            0x000 => Class::Request,
            0x010 => Class::Indication,
            0x100 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// The message type field: the class bits interleaved with the 12-bit method.
fn message_type(class: Class, method: u16) -> u16 {
    let m = method & 0x0FFF;
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | class.bits()
}

fn method_of(t: u16) -> u16 {
    (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
}

/// A 96-bit transaction id.
pub type TransactionId = [u8; 12];

/// Why a datagram is not a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Shorter than the header, or than the length the header states.
    #[error("STUN message truncated")]
    Truncated,
    /// The two top bits are not zero, the cookie is wrong or the length is not a multiple of 4.
    #[error("not a STUN message")]
    NotStun,
    /// An attribute runs past the end of the message.
    #[error("STUN attribute runs past the message")]
    BadAttribute,
}

/// A parsed STUN message borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    raw: &'a [u8],
    class: Class,
    method: u16,
}

/// One attribute: its type, its value (without padding) and where its header starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// The attribute type.
    pub kind: u16,
    /// The value, padding excluded.
    pub value: &'a [u8],
    /// Offset of the attribute header in the message.
    pub offset: usize,
}

/// Iterator over a message's attributes; the message was checked to frame them all.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Attribute<'a>;

    fn next(&mut self) -> Option<Attribute<'a>> {
        let header = self.raw.get(self.pos..self.pos + ATTR_HEADER_LEN)?;
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let start = self.pos + ATTR_HEADER_LEN;
        let value = self.raw.get(start..start + len)?;
        let offset = self.pos;
        self.pos = start + padded(len);
        Some(Attribute {
            kind,
            value,
            offset,
        })
    }
}

fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// Whether the first bytes look like a STUN message (top bits zero and the magic cookie);
/// cheaper than [`Message::parse`] for demultiplexing.
pub fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && bytes[0] & 0xC0 == 0 && bytes[4..8] == MAGIC_COOKIE.to_be_bytes()
}

impl<'a> Message<'a> {
    /// Parses a whole datagram; trailing bytes past the stated length are refused.
    pub fn parse(raw: &'a [u8]) -> Result<Message<'a>, StunError> {
        if raw.len() < HEADER_LEN {
            return Err(StunError::Truncated);
        }
        if !is_stun(raw) {
            return Err(StunError::NotStun);
        }
        let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
        if len % 4 != 0 {
            return Err(StunError::NotStun);
        }
        if raw.len() != HEADER_LEN + len {
            return Err(StunError::Truncated);
        }
        // Attributes must tile the body exactly.
        let mut pos = HEADER_LEN;
        while pos < raw.len() {
            let header = raw
                .get(pos..pos + ATTR_HEADER_LEN)
                .ok_or(StunError::BadAttribute)?;
            let alen = usize::from(u16::from_be_bytes([header[2], header[3]]));
            pos += ATTR_HEADER_LEN + padded(alen);
            if pos > raw.len() {
                return Err(StunError::BadAttribute);
            }
        }
        let t = u16::from_be_bytes([raw[0], raw[1]]);
        Ok(Message {
            raw,
            class: Class::from_type(t),
            method: method_of(t),
        })
    }

    /// The message class.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The method (Binding is 1).
    pub fn method(&self) -> u16 {
        self.method
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        let mut id = [0u8; 12];
        id.copy_from_slice(&self.raw[8..HEADER_LEN]);
        id
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Every attribute in order, including those after MESSAGE-INTEGRITY.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            raw: self.raw,
            pos: HEADER_LEN,
        }
    }

    /// The first attribute of `kind` that integrity protects: RFC 8489 §14.5 says
    /// attributes after MESSAGE-INTEGRITY other than FINGERPRINT are ignored.
    pub fn get(&self, kind: u16) -> Option<Attribute<'a>> {
        let mut past_integrity = false;
        for a in self.attributes() {
            if past_integrity && kind != ATTR_FINGERPRINT {
                return None;
            }
            if a.kind == kind {
                return Some(a);
            }
            if a.kind == ATTR_MESSAGE_INTEGRITY || a.kind == ATTR_MESSAGE_INTEGRITY_SHA256 {
                past_integrity = true;
            }
        }
        None
    }

    /// USERNAME's bytes.
    pub fn username(&self) -> Option<&'a [u8]> {
        self.get(ATTR_USERNAME).map(|a| a.value)
    }

    /// PRIORITY.
    pub fn priority(&self) -> Option<u32> {
        self.get(ATTR_PRIORITY).and_then(|a| be_u32(a.value))
    }

    /// Whether USE-CANDIDATE is present.
    pub fn use_candidate(&self) -> bool {
        self.get(ATTR_USE_CANDIDATE).is_some()
    }

    /// ICE-CONTROLLING's tie-breaker.
    pub fn ice_controlling(&self) -> Option<u64> {
        self.get(ATTR_ICE_CONTROLLING).and_then(|a| be_u64(a.value))
    }

    /// ICE-CONTROLLED's tie-breaker.
    pub fn ice_controlled(&self) -> Option<u64> {
        self.get(ATTR_ICE_CONTROLLED).and_then(|a| be_u64(a.value))
    }

    /// SOFTWARE as text, if it is UTF-8.
    pub fn software(&self) -> Option<&'a str> {
        self.get(ATTR_SOFTWARE)
            .and_then(|a| std::str::from_utf8(a.value).ok())
    }

    /// XOR-MAPPED-ADDRESS decoded with this message's cookie and transaction id.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        let v = self.get(ATTR_XOR_MAPPED_ADDRESS)?.value;
        let family = *v.get(1)?;
        let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
        let mask = self.xor_mask();
        match (family, v.len()) {
            (0x01, 8) => {
                let mut ip = [0u8; 4];
                for (i, b) in ip.iter_mut().enumerate() {
                    *b = v[4 + i] ^ mask[i];
                }
                Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
            }
            (0x02, 20) => {
                let mut ip = [0u8; 16];
                for (i, b) in ip.iter_mut().enumerate() {
                    *b = v[4 + i] ^ mask[i];
                }
                Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
            }
            _ => None,
        }
    }

    /// ERROR-CODE as the number (300..=699) and the reason phrase.
    pub fn error_code(&self) -> Option<(u16, &'a str)> {
        let v = self.get(ATTR_ERROR_CODE)?.value;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
        let reason = std::str::from_utf8(&v[4..]).ok()?;
        Some((code, reason))
    }

    /// The cookie followed by the transaction id: what XOR-MAPPED-ADDRESS is xored with.
    fn xor_mask(&self) -> [u8; 16] {
        let mut mask = [0u8; 16];
        mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        mask[4..].copy_from_slice(&self.raw[8..HEADER_LEN]);
        mask
    }

    /// Whether MESSAGE-INTEGRITY is present and matches HMAC-SHA1 under `key` (for ICE's
    /// short-term credentials, the password itself).
    pub fn check_integrity(&self, key: &[u8]) -> bool {
        let Some(mi) = self.get(ATTR_MESSAGE_INTEGRITY) else {
            return false;
        };
        if mi.value.len() != INTEGRITY_LEN {
            return false;
        }
        let tag = integrity_tag(self.raw, mi.offset, key);
        crate::rtp::srtp::tags_equal(tag.as_ref(), mi.value)
    }

    /// Whether FINGERPRINT is present, last, and matches.
    pub fn check_fingerprint(&self) -> bool {
        let Some(fp) = self.attributes().last() else {
            return false;
        };
        if fp.kind != ATTR_FINGERPRINT {
            return false;
        }
        let Some(expected) = be_u32(fp.value) else {
            return false;
        };
        crc32(&self.raw[..fp.offset]) ^ FINGERPRINT_XOR == expected
    }
}

fn be_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// HMAC-SHA1 over the message up to the attribute at `mi_offset`, with the header's length
/// covering that attribute (RFC 8489 §14.5).
fn integrity_tag(raw: &[u8], mi_offset: usize, key: &[u8]) -> hmac::Tag {
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&raw[..HEADER_LEN]);
    let len = (mi_offset + ATTR_HEADER_LEN + INTEGRITY_LEN - HEADER_LEN) as u16;
    header[2..4].copy_from_slice(&len.to_be_bytes());
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(&header);
    ctx.update(&raw[HEADER_LEN..mi_offset]);
    ctx.sign()
}

/// CRC-32 (ISO-HDLC, the one of zlib and Ethernet) table, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 as FINGERPRINT uses it.
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |c, &b| {
        CRC_TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8)
    })
}

/// Writes one STUN message; attributes go in the order they are added.
#[derive(Debug, Clone)]
pub struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    /// A message of `class` and `method` with the given transaction id.
    pub fn new(class: Class, method: u16, transaction_id: &TransactionId) -> Builder {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&message_type(class, method).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(transaction_id);
        Builder { buf }
    }

    fn set_len(&mut self) {
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Adds any attribute, padding it to four bytes with zeros. Values longer than a STUN
    /// attribute can hold are cut at 65535 bytes.
    pub fn attribute(mut self, kind: u16, value: &[u8]) -> Builder {
        let value = &value[..value.len().min(usize::from(u16::MAX))];
        self.buf.extend_from_slice(&kind.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        self.buf
            .resize(HEADER_LEN + padded(self.buf.len() - HEADER_LEN), 0);
        self.set_len();
        self
    }

    /// USERNAME.
    pub fn username(self, username: &[u8]) -> Builder {
        self.attribute(ATTR_USERNAME, username)
    }

    /// PRIORITY.
    pub fn priority(self, priority: u32) -> Builder {
        self.attribute(ATTR_PRIORITY, &priority.to_be_bytes())
    }

    /// USE-CANDIDATE.
    pub fn use_candidate(self) -> Builder {
        self.attribute(ATTR_USE_CANDIDATE, &[])
    }

    /// ICE-CONTROLLING with its tie-breaker.
    pub fn ice_controlling(self, tie_breaker: u64) -> Builder {
        self.attribute(ATTR_ICE_CONTROLLING, &tie_breaker.to_be_bytes())
    }

    /// ICE-CONTROLLED with its tie-breaker.
    pub fn ice_controlled(self, tie_breaker: u64) -> Builder {
        self.attribute(ATTR_ICE_CONTROLLED, &tie_breaker.to_be_bytes())
    }

    /// SOFTWARE.
    pub fn software(self, software: &str) -> Builder {
        self.attribute(ATTR_SOFTWARE, software.as_bytes())
    }

    /// XOR-MAPPED-ADDRESS of `addr`, xored with this message's cookie and transaction id.
    pub fn xor_mapped_address(self, addr: SocketAddr) -> Builder {
        let mut mask = [0u8; 16];
        mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        mask[4..].copy_from_slice(&self.buf[8..HEADER_LEN]);
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        let mut value = [0u8; 20];
        value[2..4].copy_from_slice(&port.to_be_bytes());
        let len = match addr.ip() {
            IpAddr::V4(ip) => {
                value[1] = 0x01;
                for (i, b) in ip.octets().iter().enumerate() {
                    value[4 + i] = b ^ mask[i];
                }
                8
            }
            IpAddr::V6(ip) => {
                value[1] = 0x02;
                for (i, b) in ip.octets().iter().enumerate() {
                    value[4 + i] = b ^ mask[i];
                }
                20
            }
        };
        self.attribute(ATTR_XOR_MAPPED_ADDRESS, &value[..len])
    }

    /// ERROR-CODE: `code` in 300..=699 and its reason phrase.
    pub fn error_code(self, code: u16, reason: &str) -> Builder {
        let mut value = Vec::with_capacity(4 + reason.len());
        value.extend_from_slice(&[0, 0, (code / 100) as u8 & 0x07, (code % 100) as u8]);
        value.extend_from_slice(reason.as_bytes());
        self.attribute(ATTR_ERROR_CODE, &value)
    }

    /// MESSAGE-INTEGRITY over everything added so far, keyed with `key`.
    pub fn integrity(mut self, key: &[u8]) -> Builder {
        let offset = self.buf.len();
        let tag = integrity_tag(&self.buf, offset, key);
        self.buf
            .extend_from_slice(&ATTR_MESSAGE_INTEGRITY.to_be_bytes());
        self.buf
            .extend_from_slice(&(INTEGRITY_LEN as u16).to_be_bytes());
        self.buf.extend_from_slice(tag.as_ref());
        self.set_len();
        self
    }

    /// FINGERPRINT over everything added so far; it must be the last attribute.
    pub fn fingerprint(mut self) -> Builder {
        let offset = self.buf.len();
        self.buf.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
        self.buf.extend_from_slice(&4u16.to_be_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.set_len();
        let crc = crc32(&self.buf[..offset]) ^ FINGERPRINT_XOR;
        self.buf[offset + ATTR_HEADER_LEN..].copy_from_slice(&crc.to_be_bytes());
        self
    }

    /// The finished message.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests;
