//! The SDES `a=crypto` attribute (RFC 4568 §9.1): parsing a peer's key and printing ours.
//!
//! `tag SP suite SP inline:KEY||SALT[|lifetime][|MKI:length] *(SP session-param)`, one key
//! per attribute; several `inline:` keys would need MKI switching, which we do not do.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use super::{MasterKey, Suite, MAX_KEY_SALT_LEN};

/// Standard base64; some clients drop the padding, so decoding does not insist on it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What is wrong in an `a=crypto` attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdesError {
    /// A required field is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// The tag is not 1 to 9 digits.
    #[error("tag {0:?} is not 1 to 9 digits")]
    BadTag(String),
    /// The crypto suite is one we do not know.
    #[error("unknown crypto suite {0:?}")]
    UnknownSuite(String),
    /// The key method is not `inline`.
    #[error("key method is not inline")]
    NotInline,
    /// More than one key; only one without MKI switching is supported.
    #[error("more than one key in the attribute")]
    MultipleKeys,
    /// The key and salt are not base64.
    #[error("key and salt are not base64")]
    BadBase64,
    /// The key and salt have the wrong length for the suite.
    #[error("{suite} needs {expected} bytes of key and salt, got {got}")]
    BadKeyLength {
        /// The suite named.
        suite: Suite,
        /// The bytes it needs.
        expected: usize,
        /// The bytes given.
        got: usize,
    },
    /// The lifetime is neither a number nor `2^n`.
    #[error("bad key lifetime {0:?}")]
    BadLifetime(String),
    /// The MKI is not `value:length` with a length of 1 to 128 bytes that holds the value.
    #[error("bad MKI {0:?}")]
    BadMki(String),
    /// A key-info field after the key is neither a lifetime nor an MKI, or repeats one.
    #[error("unexpected key parameter {0:?}")]
    BadKeyParam(String),
    /// A session parameter we know has a malformed value.
    #[error("bad session parameter {0:?}")]
    BadSessionParam(String),
}

/// A master key identifier (RFC 3711 §3.1): the value and the bytes it fills on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mki {
    value: u64,
    len: u8,
}

impl Mki {
    /// The longest MKI RFC 4568 allows, in bytes.
    pub const MAX_LEN: usize = 128;

    /// An MKI of `len` bytes (1 to 128) carrying `value`, if it fits.
    pub fn new(value: u64, len: usize) -> Option<Mki> {
        if !(1..=Self::MAX_LEN).contains(&len) || (len < 8 && value >> (8 * len) != 0) {
            return None;
        }
        Some(Mki {
            value,
            len: u8::try_from(len).ok()?,
        })
    }

    /// The value.
    pub fn value(self) -> u64 {
        self.value
    }

    /// Its length on the wire.
    pub fn byte_len(self) -> usize {
        usize::from(self.len)
    }

    /// Whether `bytes` are this MKI, big-endian over its length.
    pub(super) fn matches(self, bytes: &[u8]) -> bool {
        bytes.len() == self.byte_len()
            && bytes.iter().rev().enumerate().all(|(i, b)| {
                let expected = if i < 8 {
                    (self.value >> (8 * i)) as u8
                } else {
                    0
                };
                *b == expected
            })
    }
}

/// An SDES session parameter (RFC 4568 §6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionParam {
    /// `KDR=n`: a key derivation rate of 2^n (0 leaves it at zero, deriving once).
    Kdr(u8),
    /// `UNENCRYPTED_SRTP`.
    UnencryptedSrtp,
    /// `UNENCRYPTED_SRTCP`.
    UnencryptedSrtcp,
    /// `UNAUTHENTICATED_SRTP`.
    UnauthenticatedSrtp,
    /// `WSH=n`: the replay window the sender suggests.
    Wsh(u32),
    /// Anything else (`FEC_ORDER=`, `FEC_KEY=`, extensions), kept verbatim.
    Other(String),
}

impl SessionParam {
    /// Parses one space-separated session parameter.
    pub fn parse(s: &str) -> Result<SessionParam, SdesError> {
        let bad = || SdesError::BadSessionParam(s.to_owned());
        Ok(match s {
            "UNENCRYPTED_SRTP" => SessionParam::UnencryptedSrtp,
            "UNENCRYPTED_SRTCP" => SessionParam::UnencryptedSrtcp,
            "UNAUTHENTICATED_SRTP" => SessionParam::UnauthenticatedSrtp,
            _ => {
                if let Some(n) = s.strip_prefix("KDR=") {
                    // 1*2DIGIT, 0 to 24.
                    match digits(n, 2).and_then(|n| u8::try_from(n).ok()) {
                        Some(n) if n <= 24 => SessionParam::Kdr(n),
                        _ => return Err(bad()),
                    }
                } else if let Some(n) = s.strip_prefix("WSH=") {
                    // 2*DIGIT, at least 64.
                    match digits(n, 9).and_then(|n| u32::try_from(n).ok()) {
                        Some(n) if n >= 64 => SessionParam::Wsh(n),
                        _ => return Err(bad()),
                    }
                } else {
                    SessionParam::Other(s.to_owned())
                }
            }
        })
    }

    /// Whether a session can run with this parameter: only a window hint and a derivation
    /// rate of zero are implemented.
    pub fn is_supported(&self) -> bool {
        matches!(self, SessionParam::Wsh(_) | SessionParam::Kdr(0))
    }
}

impl fmt::Display for SessionParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionParam::Kdr(n) => write!(f, "KDR={n}"),
            SessionParam::UnencryptedSrtp => f.write_str("UNENCRYPTED_SRTP"),
            SessionParam::UnencryptedSrtcp => f.write_str("UNENCRYPTED_SRTCP"),
            SessionParam::UnauthenticatedSrtp => f.write_str("UNAUTHENTICATED_SRTP"),
            SessionParam::Wsh(n) => write!(f, "WSH={n}"),
            SessionParam::Other(s) => f.write_str(s),
        }
    }
}

/// 1 to `max` ASCII digits as a number.
fn digits(s: &str, max: usize) -> Option<u64> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// One `a=crypto` attribute value (RFC 4568 §9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttr {
    /// The tag an answer echoes to say which offered attribute it accepts.
    pub tag: u32,
    /// The suite, key and salt.
    pub key: MasterKey,
    /// Packets the key may protect; `None`: the suite's default. Kept, not enforced: no
    /// re-keying is started when a short lifetime runs out.
    pub lifetime: Option<u64>,
    /// The MKI the sender's packets carry.
    pub mki: Option<Mki>,
    /// Session parameters, in the order given.
    pub params: Vec<SessionParam>,
}

impl CryptoAttr {
    /// An attribute with no lifetime, MKI or session parameters: what we offer or answer.
    pub fn new(tag: u32, key: MasterKey) -> CryptoAttr {
        CryptoAttr {
            tag,
            key,
            lifetime: None,
            mki: None,
            params: Vec::new(),
        }
    }

    /// The suite of the key.
    pub fn suite(&self) -> Suite {
        self.key.suite()
    }

    /// The first session parameter an [`super::SrtpSession`] cannot honour, if any.
    pub fn unsupported_param(&self) -> Option<&SessionParam> {
        self.params.iter().find(|p| !p.is_supported())
    }

    /// Parses the text after `a=crypto:`.
    pub fn parse(value: &str) -> Result<CryptoAttr, SdesError> {
        let mut fields = value.split_ascii_whitespace();
        let tag_text = fields.next().ok_or(SdesError::Missing("tag"))?;
        let tag = digits(tag_text, 9)
            .and_then(|t| u32::try_from(t).ok())
            .ok_or_else(|| SdesError::BadTag(tag_text.to_owned()))?;
        let suite_text = fields.next().ok_or(SdesError::Missing("crypto suite"))?;
        let suite = Suite::from_sdp_name(suite_text)
            .ok_or_else(|| SdesError::UnknownSuite(suite_text.to_owned()))?;
        let key_params = fields.next().ok_or(SdesError::Missing("key parameters"))?;
        if key_params.contains(';') {
            return Err(SdesError::MultipleKeys);
        }
        let info = key_params
            .strip_prefix("inline:")
            .ok_or(SdesError::NotInline)?;
        let mut parts = info.split('|');
        let key_salt = parts.next().unwrap_or_default();
        let mut bytes = [0u8; MAX_KEY_SALT_LEN + 3];
        let expected = suite.master_key_len() + suite.master_salt_len();
        let got = match BASE64.decode_slice(key_salt, &mut bytes) {
            Ok(n) => n,
            Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
                // Valid base64 but longer than any key: report its decoded length.
                BASE64
                    .decode(key_salt)
                    .map_err(|_| SdesError::BadBase64)?
                    .len()
            }
            Err(base64::DecodeSliceError::DecodeError(_)) => return Err(SdesError::BadBase64),
        };
        let key = bytes
            .get(..got)
            .and_then(|b| MasterKey::from_bytes(suite, b).ok())
            .ok_or(SdesError::BadKeyLength {
                suite,
                expected,
                got,
            })?;
        let mut lifetime = None;
        let mut mki = None;
        for part in parts {
            if let Some((value, len)) = part.split_once(':') {
                if mki.is_some() {
                    return Err(SdesError::BadKeyParam(part.to_owned()));
                }
                let value = digits(value, 20);
                let len = digits(len, 3).and_then(|l| usize::try_from(l).ok());
                mki = Some(
                    value
                        .zip(len)
                        .and_then(|(v, l)| Mki::new(v, l))
                        .ok_or_else(|| SdesError::BadMki(part.to_owned()))?,
                );
            } else {
                // The lifetime comes before the MKI.
                if lifetime.is_some() || mki.is_some() {
                    return Err(SdesError::BadKeyParam(part.to_owned()));
                }
                lifetime = Some(parse_lifetime(part)?);
            }
        }
        let params = fields
            .map(SessionParam::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CryptoAttr {
            tag,
            key,
            lifetime,
            mki,
            params,
        })
    }
}

/// `2^n` or a plain number of packets.
fn parse_lifetime(s: &str) -> Result<u64, SdesError> {
    let bad = || SdesError::BadLifetime(s.to_owned());
    match s.strip_prefix("2^") {
        Some(exp) => match digits(exp, 2) {
            Some(n) if n < 64 => Ok(1 << n),
            _ => Err(bad()),
        },
        None => digits(s, 20).ok_or_else(bad),
    }
}

impl fmt::Display for CryptoAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; MAX_KEY_SALT_LEN];
        let mut b64 = [0u8; MAX_KEY_SALT_LEN.div_ceil(3) * 4];
        let n = BASE64
            .encode_slice(self.key.write_bytes(&mut raw), &mut b64)
            .map_err(|_| fmt::Error)?;
        let b64 = std::str::from_utf8(&b64[..n]).map_err(|_| fmt::Error)?;
        write!(f, "{} {} inline:{b64}", self.tag, self.key.suite())?;
        if let Some(l) = self.lifetime {
            if l.is_power_of_two() {
                write!(f, "|2^{}", l.trailing_zeros())?;
            } else {
                write!(f, "|{l}")?;
            }
        }
        if let Some(m) = self.mki {
            write!(f, "|{}:{}", m.value, m.len)?;
        }
        for p in &self.params {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}
