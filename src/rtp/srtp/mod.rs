//! SRTP and SRTCP (RFC 3711, RFC 7714) for SDES-keyed calls: session key derivation, the
//! AES-CM + HMAC-SHA1 and AEAD_AES_128_GCM transforms, rollover counter estimation and the
//! replay windows of each peer stream. The SDES `a=crypto` attribute that carries the keys
//! lives in [`sdes`].
//!
//! Sans-IO and allocation-free per packet: the four transform functions of [`SrtpSession`]
//! work in place on the caller's buffer and keep per-SSRC state in a fixed table.

pub mod sdes;

#[cfg(test)]
mod tests;

use std::fmt;

use aes::cipher::consts::U16;
use aes::cipher::{BlockCipherEncrypt, BlockSizeUser, KeyInit};
use aes::{Aes128Enc, Aes256Enc, Block};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_128_GCM, AES_256_GCM};
use ring::hmac;

pub use sdes::{CryptoAttr, Mki, SdesError, SessionParam};

/// An SDES crypto suite (RFC 4568 §6.2, RFC 7714 §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag.
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 with a 32-bit tag on RTP (80 bits on RTCP).
    AesCm128HmacSha1_32,
    /// AES-128 in Galois/counter mode, 16-byte tag.
    AeadAes128Gcm,
    /// AES-256 in Galois/counter mode, 16-byte tag (RFC 7714). Keyed by DTLS-SRTP only:
    /// it is not among the suites SDES offers or accepts.
    AeadAes256Gcm,
}

impl Suite {
    /// Every suite SDES negotiates, most preferred first.
    pub const ALL: [Suite; 3] = [
        Suite::AeadAes128Gcm,
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
    ];

    /// The name in an `a=crypto` attribute.
    pub fn sdp_name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Suite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// The suite an `a=crypto` name stands for; the RFC 4568 grammar is case-sensitive.
    pub fn from_sdp_name(s: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|suite| suite.sdp_name() == s)
    }

    /// Master key length in bytes.
    pub fn master_key_len(self) -> usize {
        match self {
            Suite::AeadAes256Gcm => KEY_LEN_256,
            _ => KEY_LEN,
        }
    }

    /// Master salt length in bytes.
    pub fn master_salt_len(self) -> usize {
        match self {
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => GCM_SALT_LEN,
            _ => CM_SALT_LEN,
        }
    }

    /// Bytes protection adds to an RTP packet (the tag).
    pub fn rtp_overhead(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => GCM_TAG_LEN,
        }
    }

    /// Bytes protection adds to an RTCP packet (E flag and index, and the tag).
    pub fn rtcp_overhead(self) -> usize {
        SRTCP_INDEX_LEN + self.rtcp_tag_len()
    }

    /// RFC 4568 §6.2.2: the 32-bit suite still tags SRTCP with 80 bits.
    fn rtcp_tag_len(self) -> usize {
        match self {
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => GCM_TAG_LEN,
            _ => 10,
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdp_name())
    }
}

const KEY_LEN: usize = 16;
const KEY_LEN_256: usize = 32;
const CM_SALT_LEN: usize = 14;
const GCM_SALT_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;
const AUTH_KEY_LEN: usize = 20;
const SRTCP_INDEX_LEN: usize = 4;
const RTCP_HEADER_LEN: usize = 8;
/// The longest key and salt of any suite.
const MAX_KEY_SALT_LEN: usize = KEY_LEN_256 + CM_SALT_LEN;
const E_FLAG: u32 = 0x8000_0000;

/// What can go wrong setting up a session or transforming one packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// The packet is shorter than its header, MKI and tag.
    #[error("packet too short for its header and tag")]
    TooShort,
    /// The authentication tag does not match: forged, corrupted or keyed differently.
    #[error("authentication tag does not match")]
    AuthFailed,
    /// The packet index was seen already or is older than the replay window.
    #[error("packet replayed or older than the replay window")]
    Replayed,
    /// The packet's MKI is not the one the peer's key carries.
    #[error("packet carries an unknown MKI")]
    UnknownMki,
    /// The buffer has no room for the tag, or is shorter than the stated length.
    #[error("buffer has no room for the protected packet")]
    BufferTooSmall,
    /// The master key and salt have the wrong length for the suite.
    #[error("master key and salt have the wrong length for the suite")]
    BadKey,
    /// Our key and the peer's are for different suites.
    #[error("our key is for {ours}, the peer's for {theirs}")]
    SuiteMismatch {
        /// The suite of our key.
        ours: Suite,
        /// The suite of the peer's key.
        theirs: Suite,
    },
    /// The peer's attribute asks for a session parameter we do not implement.
    #[error("session parameter {0} is not supported")]
    Unsupported(String),
    /// The operating system gave no random bytes for a key.
    #[error("no random bytes for a key: {0}")]
    NoRandom(String),
    /// The crypto library refused the operation (a packet far beyond RTP sizes).
    #[error("the cipher refused the packet")]
    Cipher,
}

/// A master key and salt (the SDES `inline:` key material).
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    suite: Suite,
    /// The first `suite.master_key_len()` bytes are the key.
    key: [u8; KEY_LEN_256],
    /// The GCM suite's 12-byte salt is followed by two zero bytes, which is also how it
    /// enters the key derivation (RFC 7714 §11).
    salt: [u8; CM_SALT_LEN],
}

/// Debug output of a type holding keys: its suite, never the keys.
fn debug_suite_only(f: &mut fmt::Formatter<'_>, name: &str, suite: Suite) -> fmt::Result {
    f.debug_struct(name)
        .field("suite", &suite)
        .finish_non_exhaustive()
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_suite_only(f, "MasterKey", self.suite)
    }
}

impl MasterKey {
    /// A fresh key and salt from the operating system's generator.
    pub fn random(suite: Suite) -> Result<MasterKey, SrtpError> {
        let mut bytes = [0u8; MAX_KEY_SALT_LEN];
        let n = suite.master_key_len() + suite.master_salt_len();
        getrandom::fill(&mut bytes[..n]).map_err(|e| SrtpError::NoRandom(e.to_string()))?;
        MasterKey::from_bytes(suite, &bytes[..n])
    }

    /// The key followed by the salt, exactly as long as the suite wants.
    pub fn from_bytes(suite: Suite, key_and_salt: &[u8]) -> Result<MasterKey, SrtpError> {
        if key_and_salt.len() != suite.master_key_len() + suite.master_salt_len() {
            return Err(SrtpError::BadKey);
        }
        let (k, s) = key_and_salt.split_at(suite.master_key_len());
        let mut key = [0u8; KEY_LEN_256];
        key[..k.len()].copy_from_slice(k);
        let mut salt = [0u8; CM_SALT_LEN];
        salt[..s.len()].copy_from_slice(s);
        Ok(MasterKey { suite, key, salt })
    }

    /// The suite this key is for.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Key then salt, as the `inline:` parameter carries them.
    fn write_bytes<'a>(&self, out: &'a mut [u8; MAX_KEY_SALT_LEN]) -> &'a [u8] {
        let k = self.suite.master_key_len();
        let n = k + self.suite.master_salt_len();
        out[..k].copy_from_slice(&self.key[..k]);
        out[k..k + CM_SALT_LEN].copy_from_slice(&self.salt);
        &out[..n]
    }
}

/// RFC 3711 §4.3.1 key derivation labels; SRTCP's are these plus 3.
const LABEL_ENCRYPTION: u8 = 0;
const LABEL_AUTH: u8 = 1;
const LABEL_SALT: u8 = 2;
const LABEL_RTCP: u8 = 3;

/// XORs the AES-CM keystream that starts at counter block `iv` into `data` (RFC 3711 §4.1.1).
fn aes_cm_xor<C: BlockCipherEncrypt + BlockSizeUser<BlockSize = U16>>(
    cipher: &C,
    iv: &[u8; 16],
    data: &mut [u8],
) {
    // Several blocks per call let the cipher pipeline them.
    const BATCH: usize = 8;
    let start = u128::from_be_bytes(*iv);
    let mut counter = 0u128;
    for chunk in data.chunks_mut(16 * BATCH) {
        let mut blocks: [Block; BATCH] = Default::default();
        let n = chunk.len().div_ceil(16);
        for block in &mut blocks[..n] {
            *block = Block::from(start.wrapping_add(counter).to_be_bytes());
            counter += 1;
        }
        cipher.encrypt_blocks(&mut blocks[..n]);
        for (bytes, keystream) in chunk.chunks_mut(16).zip(&blocks) {
            for (b, k) in bytes.iter_mut().zip(keystream.iter()) {
                *b ^= k;
            }
        }
    }
}

/// RFC 3711 §4.3.1 with a key derivation rate of zero: the session key for `label`.
fn derive<C: BlockCipherEncrypt + BlockSizeUser<BlockSize = U16>>(
    master: &C,
    master_salt: &[u8; CM_SALT_LEN],
    label: u8,
    out: &mut [u8],
) {
    let mut iv = [0u8; 16];
    iv[..CM_SALT_LEN].copy_from_slice(master_salt);
    iv[7] ^= label;
    out.fill(0);
    aes_cm_xor(master, &iv, out);
}

/// Compares tags without an early exit, so timing does not tell how much of a forgery matched.
pub(crate) fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session keys of one direction of RTP or of RTCP.
enum Cipher {
    Cm {
        aes: Aes128Enc,
        auth: hmac::Key,
        salt: [u8; CM_SALT_LEN],
        tag_len: usize,
    },
    Gcm {
        key: LessSafeKey,
        salt: [u8; GCM_SALT_LEN],
    },
}

impl Cipher {
    /// Derives the RTP (or RTCP) session keys of `master`.
    fn derive(master: &MasterKey, rtcp: bool) -> Result<Cipher, SrtpError> {
        let base = if rtcp { LABEL_RTCP } else { 0 };
        if master.suite == Suite::AeadAes256Gcm {
            // RFC 7714 §11: AES_256_CM_PRF (RFC 6188) as the key derivation function.
            let kdf = Aes256Enc::new(&master.key.into());
            let mut key = [0u8; KEY_LEN_256];
            derive(&kdf, &master.salt, base + LABEL_ENCRYPTION, &mut key);
            let mut salt = [0u8; GCM_SALT_LEN];
            derive(&kdf, &master.salt, base + LABEL_SALT, &mut salt);
            return Cipher::gcm_with(&AES_256_GCM, &key, salt);
        }
        let mut k128 = [0u8; KEY_LEN];
        k128.copy_from_slice(&master.key[..KEY_LEN]);
        let kdf = Aes128Enc::new(&k128.into());
        let mut key = [0u8; KEY_LEN];
        derive(&kdf, &master.salt, base + LABEL_ENCRYPTION, &mut key);
        match master.suite {
            Suite::AeadAes128Gcm => {
                let mut salt = [0u8; GCM_SALT_LEN];
                derive(&kdf, &master.salt, base + LABEL_SALT, &mut salt);
                Cipher::gcm(&key, salt)
            }
            suite => {
                let mut auth = [0u8; AUTH_KEY_LEN];
                derive(&kdf, &master.salt, base + LABEL_AUTH, &mut auth);
                let mut salt = [0u8; CM_SALT_LEN];
                derive(&kdf, &master.salt, base + LABEL_SALT, &mut salt);
                let tag_len = if rtcp {
                    suite.rtcp_tag_len()
                } else {
                    suite.rtp_overhead()
                };
                Ok(Cipher::cm(&key, &auth, salt, tag_len))
            }
        }
    }

    fn cm(
        key: &[u8; KEY_LEN],
        auth: &[u8; AUTH_KEY_LEN],
        salt: [u8; CM_SALT_LEN],
        tag_len: usize,
    ) -> Cipher {
        Cipher::Cm {
            aes: Aes128Enc::new(&(*key).into()),
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth),
            salt,
            tag_len,
        }
    }

    fn gcm(key: &[u8; KEY_LEN], salt: [u8; GCM_SALT_LEN]) -> Result<Cipher, SrtpError> {
        Cipher::gcm_with(&AES_128_GCM, key, salt)
    }

    fn gcm_with(
        algorithm: &'static ring::aead::Algorithm,
        key: &[u8],
        salt: [u8; GCM_SALT_LEN],
    ) -> Result<Cipher, SrtpError> {
        let key = UnboundKey::new(algorithm, key).map_err(|_| SrtpError::BadKey)?;
        Ok(Cipher::Gcm {
            key: LessSafeKey::new(key),
            salt,
        })
    }
}

/// RFC 3711 §4.1.1: the counter block of packet `index` of `ssrc`.
fn cm_iv(salt: &[u8; CM_SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..CM_SALT_LEN].copy_from_slice(salt);
    for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= s;
    }
    for (b, i) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *b ^= i;
    }
    iv
}

/// RFC 7714 §8.1 (SRTP: ROC and sequence number) and §9.1 (SRTCP: the 31-bit index): both
/// are `00 00 || SSRC || 48-bit index`, XORed with the salt.
fn gcm_nonce(salt: &[u8; GCM_SALT_LEN], ssrc: u32, index: u64) -> Nonce {
    let mut iv = [0u8; GCM_SALT_LEN];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..].copy_from_slice(&index.to_be_bytes()[2..]);
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    Nonce::assume_unique_for_key(iv)
}

/// HMAC-SHA1 over `parts`, truncated to `out`.
fn hmac_tag(key: &hmac::Key, parts: [&[u8]; 2], out: &mut [u8]) {
    let mut ctx = hmac::Context::with_key(key);
    for p in parts {
        ctx.update(p);
    }
    let tag = ctx.sign();
    let n = out.len();
    out.copy_from_slice(&tag.as_ref()[..n]);
}

/// Length of the RTP header with its CSRCs and extension: where encryption starts.
fn rtp_header_len(packet: &[u8]) -> Result<usize, SrtpError> {
    let first = *packet.first().ok_or(SrtpError::TooShort)?;
    let mut n = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = packet.get(n + 2..n + 4).ok_or(SrtpError::TooShort)?;
        n += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    if n > packet.len() {
        return Err(SrtpError::TooShort);
    }
    Ok(n)
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}

/// Indices seen near the highest one (RFC 3711 §3.3.2), 128 of them as libsrtp keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    /// The highest index accepted.
    top: u64,
    /// Bit k: index `top - k` was accepted.
    seen: u128,
}

impl Window {
    const SIZE: u64 = 128;

    fn starting_at(index: u64) -> Window {
        Window {
            top: index,
            seen: 1,
        }
    }

    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.top {
            return Ok(());
        }
        let age = self.top - index;
        if age >= Self::SIZE || self.seen & (1 << age) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    /// Accepts `index` into the window in `slot`, starting one there if none.
    fn record(slot: &mut Option<Window>, index: u64) {
        match slot {
            Some(w) => w.accept(index),
            None => *slot = Some(Window::starting_at(index)),
        }
    }

    fn accept(&mut self, index: u64) {
        if index > self.top {
            let shift = index - self.top;
            self.seen = if shift >= Self::SIZE {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = index;
        } else {
            self.seen |= 1 << (self.top - index);
        }
    }
}

/// RFC 3711 §3.3.1 / Appendix A: the 48-bit index of `seq` given the highest index so far.
fn estimate_index(highest: Option<u64>, seq: u16) -> u64 {
    let seq = u64::from(seq);
    let Some(highest) = highest else {
        // SDES streams start with a rollover counter of zero.
        return seq;
    };
    let roc = highest >> 16;
    let s_l = highest & 0xffff;
    let v = if s_l < 0x8000 {
        if seq > s_l + 0x8000 {
            // Before the last wrap; at ROC 0 there is none, so it is a jump forward.
            roc.saturating_sub(1)
        } else {
            roc
        }
    } else if seq + 0x8000 < s_l {
        roc + 1
    } else {
        roc
    };
    (v << 16) | seq
}

/// The state of one SSRC in one direction.
#[derive(Debug, Clone, Copy)]
struct Stream {
    ssrc: u32,
    /// Recency stamp for replacing the least recently used stream.
    used: u64,
    /// RTP indices: sent (ours) or accepted (theirs).
    rtp: Option<Window>,
    /// SRTCP indices accepted from the peer.
    rtcp: Option<Window>,
    /// The SRTCP index our next packet carries (RFC 3711 §3.4: starts at zero).
    rtcp_next: u32,
}

impl Stream {
    fn new(ssrc: u32) -> Stream {
        Stream {
            ssrc,
            used: 0,
            rtp: None,
            rtcp: None,
            rtcp_next: 0,
        }
    }
}

/// Streams a peer may move between over a call (a new SSRC after a re-INVITE or a PBX's
/// media change); the least recently used is replaced.
const MAX_STREAMS: usize = 4;

#[derive(Debug, Default)]
struct Streams {
    slots: [Option<Stream>; MAX_STREAMS],
    clock: u64,
}

impl Streams {
    /// A copy of the state of `ssrc`, fresh if unknown; nothing changes until [`Self::store`].
    fn get(&self, ssrc: u32) -> Stream {
        self.slots
            .iter()
            .flatten()
            .find(|s| s.ssrc == ssrc)
            .copied()
            .unwrap_or_else(|| Stream::new(ssrc))
    }

    fn store(&mut self, mut stream: Stream) {
        self.clock += 1;
        stream.used = self.clock;
        let slot = match self.slots.iter().position(|s| match s {
            Some(s) => s.ssrc == stream.ssrc,
            None => false,
        }) {
            Some(i) => i,
            None => match self.slots.iter().position(Option::is_none) {
                Some(i) => i,
                None => self
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.map_or(0, |s| s.used))
                    .map_or(0, |(i, _)| i),
            },
        };
        self.slots[slot] = Some(stream);
    }
}

/// One direction: its keys, the MKI its packets carry and its streams.
struct Direction {
    rtp: Cipher,
    rtcp: Cipher,
    mki: Option<Mki>,
    streams: Streams,
}

impl Direction {
    fn new(key: &MasterKey, mki: Option<Mki>) -> Result<Direction, SrtpError> {
        Ok(Direction {
            rtp: Cipher::derive(key, false)?,
            rtcp: Cipher::derive(key, true)?,
            mki,
            streams: Streams::default(),
        })
    }

    fn mki_len(&self) -> usize {
        self.mki.map_or(0, |m| m.byte_len())
    }

    fn check_mki(&self, bytes: &[u8]) -> Result<(), SrtpError> {
        match self.mki {
            Some(m) if !m.matches(bytes) => Err(SrtpError::UnknownMki),
            _ => Ok(()),
        }
    }
}

/// Both directions of one RTP session: ours (protect) and the peer's (unprotect).
pub struct SrtpSession {
    suite: Suite,
    ours: Direction,
    theirs: Direction,
}

impl fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_suite_only(f, "SrtpSession", self.suite)
    }
}

impl SrtpSession {
    /// A session that protects with `ours` and unprotects with the key the peer offered or
    /// answered. Refuses a peer attribute with session parameters we do not implement.
    pub fn new(ours: &MasterKey, theirs: &CryptoAttr) -> Result<SrtpSession, SrtpError> {
        if ours.suite != theirs.key.suite {
            return Err(SrtpError::SuiteMismatch {
                ours: ours.suite,
                theirs: theirs.key.suite,
            });
        }
        if let Some(p) = theirs.unsupported_param() {
            return Err(SrtpError::Unsupported(p.to_string()));
        }
        Ok(SrtpSession {
            suite: ours.suite,
            ours: Direction::new(ours, None)?,
            theirs: Direction::new(&theirs.key, theirs.mki)?,
        })
    }

    /// The suite of both directions.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Protects the RTP packet in `buf[..len]` in place; returns the new length (len + tag).
    /// A sequence number already protected (or older than the window) is `Replayed`.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = buf.get(..len).ok_or(SrtpError::BufferTooSmall)?;
        let header = rtp_header_len(packet)?;
        let out_len = len + self.suite.rtp_overhead();
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall);
        }
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = be32(buf, 8);
        let dir = &mut self.ours;
        let mut stream = dir.streams.get(ssrc);
        let index = estimate_index(stream.rtp.map(|w| w.top), seq);
        // One index protected twice would reuse a GCM nonce or an AES-CM keystream; like
        // libsrtp, refuse it.
        if let Some(w) = &stream.rtp {
            w.check(index)?;
        }
        let roc = (index >> 16) as u32;
        match &dir.rtp {
            Cipher::Cm {
                aes,
                auth,
                salt,
                tag_len,
            } => {
                aes_cm_xor(aes, &cm_iv(salt, ssrc, index), &mut buf[header..len]);
                let (authed, tail) = buf.split_at_mut(len);
                hmac_tag(auth, [authed, &roc.to_be_bytes()], &mut tail[..*tag_len]);
            }
            Cipher::Gcm { key, salt } => {
                let (head, rest) = buf.split_at_mut(header);
                let tag = key
                    .seal_in_place_separate_tag(
                        gcm_nonce(salt, ssrc, index),
                        Aad::from(&*head),
                        &mut rest[..len - header],
                    )
                    .map_err(|_| SrtpError::Cipher)?;
                buf[len..out_len].copy_from_slice(tag.as_ref());
            }
        }
        Window::record(&mut stream.rtp, index);
        dir.streams.store(stream);
        Ok(out_len)
    }

    /// Protects the RTCP compound packet in `buf[..len]` in place, encrypted (E flag set);
    /// returns the new length (len + index + tag).
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        if len > buf.len() {
            return Err(SrtpError::BufferTooSmall);
        }
        if len < RTCP_HEADER_LEN {
            return Err(SrtpError::TooShort);
        }
        let out_len = len + self.suite.rtcp_overhead();
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall);
        }
        let ssrc = be32(buf, 4);
        let dir = &mut self.ours;
        let mut stream = dir.streams.get(ssrc);
        let index = stream.rtcp_next;
        let e_index = (E_FLAG | index).to_be_bytes();
        match &dir.rtcp {
            Cipher::Cm {
                aes,
                auth,
                salt,
                tag_len,
            } => {
                let iv = cm_iv(salt, ssrc, u64::from(index));
                aes_cm_xor(aes, &iv, &mut buf[RTCP_HEADER_LEN..len]);
                buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&e_index);
                let (authed, tail) = buf.split_at_mut(len + SRTCP_INDEX_LEN);
                hmac_tag(auth, [authed, &[]], &mut tail[..*tag_len]);
            }
            Cipher::Gcm { key, salt } => {
                let aad = rtcp_aad(buf, e_index);
                let tag = key
                    .seal_in_place_separate_tag(
                        gcm_nonce(salt, ssrc, u64::from(index)),
                        Aad::from(aad),
                        &mut buf[RTCP_HEADER_LEN..len],
                    )
                    .map_err(|_| SrtpError::Cipher)?;
                buf[len..len + GCM_TAG_LEN].copy_from_slice(tag.as_ref());
                buf[len + GCM_TAG_LEN..out_len].copy_from_slice(&e_index);
            }
        }
        // Past 2^31 packets the key is spent (RFC 3711 §9.2); the SDES lifetime ends first.
        stream.rtcp_next = (index + 1) & !E_FLAG;
        dir.streams.store(stream);
        Ok(out_len)
    }

    /// Authenticates, replay-checks and decrypts the SRTP packet in `buf` in place; returns
    /// the plaintext length. On an error no state changes; after `AuthFailed` the GCM suite
    /// may have overwritten the payload.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let len = buf.len();
        let header = rtp_header_len(buf)?;
        let dir = &mut self.theirs;
        let tag_len = self.suite.rtp_overhead();
        let mki_len = dir.mki_len();
        if len < header + tag_len + mki_len {
            return Err(SrtpError::TooShort);
        }
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = be32(buf, 8);
        let mut stream = dir.streams.get(ssrc);
        let index = estimate_index(stream.rtp.map(|w| w.top), seq);
        if let Some(w) = &stream.rtp {
            w.check(index)?;
        }
        let roc = (index >> 16) as u32;
        let plain_len = match &dir.rtp {
            Cipher::Cm {
                aes, auth, salt, ..
            } => {
                // header | payload | MKI | tag, the MKI not authenticated (RFC 3711 §3.1).
                let end = len - tag_len - mki_len;
                dir.check_mki(&buf[end..end + mki_len])?;
                let mut tag = [0u8; 10];
                hmac_tag(auth, [&buf[..end], &roc.to_be_bytes()], &mut tag[..tag_len]);
                if !tags_equal(&tag[..tag_len], &buf[len - tag_len..]) {
                    return Err(SrtpError::AuthFailed);
                }
                aes_cm_xor(aes, &cm_iv(salt, ssrc, index), &mut buf[header..end]);
                end
            }
            Cipher::Gcm { key, salt } => {
                // header | ciphertext and tag | MKI (RFC 7714 §8).
                let end = len - mki_len;
                dir.check_mki(&buf[end..])?;
                let (head, rest) = buf.split_at_mut(header);
                key.open_in_place(
                    gcm_nonce(salt, ssrc, index),
                    Aad::from(&*head),
                    &mut rest[..end - header],
                )
                .map_err(|_| SrtpError::AuthFailed)?;
                end - GCM_TAG_LEN
            }
        };
        Window::record(&mut stream.rtp, index);
        dir.streams.store(stream);
        Ok(plain_len)
    }

    /// Authenticates, replay-checks and decrypts (when its E flag says so) the SRTCP packet
    /// in `buf` in place; returns the plaintext length. No state changes on an error.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let len = buf.len();
        let dir = &mut self.theirs;
        let tag_len = self.suite.rtcp_tag_len();
        let mki_len = dir.mki_len();
        if len < RTCP_HEADER_LEN + SRTCP_INDEX_LEN + tag_len + mki_len {
            return Err(SrtpError::TooShort);
        }
        let ssrc = be32(buf, 4);
        let index_at = match dir.rtcp {
            // header | payload | E+index | MKI | tag (RFC 3711 §3.4).
            Cipher::Cm { .. } => len - tag_len - mki_len - SRTCP_INDEX_LEN,
            // header | payload | tag | E+index | MKI (RFC 7714 §9).
            Cipher::Gcm { .. } => len - mki_len - SRTCP_INDEX_LEN,
        };
        let mki_at = match dir.rtcp {
            Cipher::Cm { .. } => index_at + SRTCP_INDEX_LEN,
            Cipher::Gcm { .. } => len - mki_len,
        };
        dir.check_mki(&buf[mki_at..mki_at + mki_len])?;
        let e_index = be32(buf, index_at);
        let encrypted = e_index & E_FLAG != 0;
        let index = e_index & !E_FLAG;
        let mut stream = dir.streams.get(ssrc);
        if let Some(w) = &stream.rtcp {
            w.check(u64::from(index))?;
        }
        let plain_len = match &dir.rtcp {
            Cipher::Cm {
                aes, auth, salt, ..
            } => {
                let mut tag = [0u8; 10];
                hmac_tag(
                    auth,
                    [&buf[..index_at + SRTCP_INDEX_LEN], &[]],
                    &mut tag[..tag_len],
                );
                if !tags_equal(&tag[..tag_len], &buf[len - tag_len..]) {
                    return Err(SrtpError::AuthFailed);
                }
                if encrypted {
                    let iv = cm_iv(salt, ssrc, u64::from(index));
                    aes_cm_xor(aes, &iv, &mut buf[RTCP_HEADER_LEN..index_at]);
                }
                index_at
            }
            Cipher::Gcm { key, salt } => {
                let nonce = gcm_nonce(salt, ssrc, u64::from(index));
                let tag_at = index_at - GCM_TAG_LEN;
                if tag_at < RTCP_HEADER_LEN {
                    return Err(SrtpError::TooShort);
                }
                if encrypted {
                    let aad = rtcp_aad(buf, e_index.to_be_bytes());
                    key.open_in_place(nonce, Aad::from(aad), &mut buf[RTCP_HEADER_LEN..index_at])
                        .map_err(|_| SrtpError::AuthFailed)?;
                } else {
                    // Authenticated only (RFC 7714 §9.2): the AAD is the whole packet then
                    // E+index, which the tag separates; move the index next to the payload.
                    let mut tag = [0u8; GCM_TAG_LEN];
                    tag.copy_from_slice(&buf[tag_at..index_at]);
                    buf.copy_within(index_at..index_at + SRTCP_INDEX_LEN, tag_at);
                    let opened = key.open_in_place_separate_tag(
                        nonce,
                        Aad::from(&buf[..tag_at + SRTCP_INDEX_LEN]),
                        Tag::from(tag),
                        &mut [],
                        0..,
                    );
                    if opened.is_err() {
                        buf[tag_at..index_at].copy_from_slice(&tag);
                        return Err(SrtpError::AuthFailed);
                    }
                }
                tag_at
            }
        };
        Window::record(&mut stream.rtcp, u64::from(index));
        dir.streams.store(stream);
        Ok(plain_len)
    }
}

/// RFC 7714 §9.1: the SRTCP AAD is the first eight octets and the E flag with the index.
fn rtcp_aad(buf: &[u8], e_index: [u8; 4]) -> [u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN] {
    let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
    aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
    aad[RTCP_HEADER_LEN..].copy_from_slice(&e_index);
    aad
}

#[cfg(test)]
impl SrtpSession {
    /// A session of `suite` whose four ciphers use the given session keys, as the RFC test
    /// vectors state them.
    fn with_session_keys(
        suite: Suite,
        key: [u8; KEY_LEN],
        salt: &[u8],
        auth: [u8; AUTH_KEY_LEN],
    ) -> SrtpSession {
        let cipher = |rtcp: bool| match suite {
            Suite::AeadAes128Gcm => {
                let mut s = [0u8; GCM_SALT_LEN];
                s.copy_from_slice(salt);
                Cipher::gcm(&key, s).unwrap_or_else(|e| panic!("{e}"))
            }
            _ => {
                let mut s = [0u8; CM_SALT_LEN];
                s.copy_from_slice(salt);
                let tag_len = if rtcp {
                    suite.rtcp_tag_len()
                } else {
                    suite.rtp_overhead()
                };
                Cipher::cm(&key, &auth, s, tag_len)
            }
        };
        let dir = || Direction {
            rtp: cipher(false),
            rtcp: cipher(true),
            mki: None,
            streams: Streams::default(),
        };
        SrtpSession {
            suite,
            ours: dir(),
            theirs: dir(),
        }
    }

    /// Sets the SRTCP index our next packet from `ssrc` carries.
    fn set_rtcp_next(&mut self, ssrc: u32, next: u32) {
        let mut s = self.ours.streams.get(ssrc);
        s.rtcp_next = next;
        self.ours.streams.store(s);
    }

    /// The highest RTP index accepted from `ssrc`, and the SRTCP window, if any.
    fn peer_state(&self, ssrc: u32) -> (Option<Window>, Option<Window>) {
        let s = self.theirs.streams.get(ssrc);
        (s.rtp, s.rtcp)
    }
}
