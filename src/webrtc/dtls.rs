//! DTLS-SRTP keying (RFC 5763, RFC 5764) over the sans-IO DTLS 1.2 of the `dimpl` crate:
//! the process's self-signed certificate and its SDP fingerprint, the check of the peer's
//! certificate against the fingerprint in its SDP, and the split of the exported keying
//! material into the master keys [`crate::rtp::srtp`] builds its sessions from.
//!
//! DTLS here carries no application data: once the keys are out, SRTP does the rest.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use dimpl::{Dtls, DtlsCertificate, Output, SrtpProfile};
use ring::digest;

use crate::rtp::srtp::{CryptoAttr, MasterKey, SrtpError, SrtpSession, Suite};

/// SHA-256 output length.
const SHA256_LEN: usize = 32;
/// Big enough for any record dimpl writes at its default MTU.
const OUT_BUF_LEN: usize = 2048;

/// What can go wrong making the certificate or reading a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtlsError {
    /// The certificate or its key could not be generated.
    #[error("certificate generation failed: {0}")]
    Certificate(String),
    /// An `a=fingerprint` value we cannot read, or with a hash other than SHA-256.
    #[error("unusable fingerprint: {0}")]
    Fingerprint(String),
}

/// A certificate's SHA-256 fingerprint, as `a=fingerprint` carries it (RFC 8122 §5).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; SHA256_LEN]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Fingerprint {
        let d = digest::digest(&digest::SHA256, der);
        let mut fp = [0u8; SHA256_LEN];
        fp.copy_from_slice(d.as_ref());
        Fingerprint(fp)
    }

    /// The digest bytes.
    pub fn bytes(&self) -> &[u8; SHA256_LEN] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    /// `sha-256 AB:CD:...`, the value of `a=fingerprint`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha-256 ")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = DtlsError;

    /// Reads `sha-256 AB:CD:...`; the hash name is case-insensitive (RFC 8122 §5), hex
    /// digits may be either case.
    fn from_str(s: &str) -> Result<Fingerprint, DtlsError> {
        let bad = || DtlsError::Fingerprint(s.chars().take(120).collect());
        let (hash, hex) = s.trim().split_once(' ').ok_or_else(bad)?;
        if !hash.eq_ignore_ascii_case("sha-256") {
            return Err(DtlsError::Fingerprint(format!(
                "hash {hash} is not supported, only sha-256"
            )));
        }
        let mut fp = [0u8; SHA256_LEN];
        let mut n = 0;
        for part in hex.trim().split(':') {
            let slot = fp.get_mut(n).ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| bad())?;
            n += 1;
        }
        if n != SHA256_LEN {
            return Err(bad());
        }
        Ok(Fingerprint(fp))
    }
}

/// A self-signed ECDSA P-256 certificate and its key, with its fingerprint.
#[derive(Clone)]
pub struct Certificate {
    dtls: DtlsCertificate,
    fingerprint: Fingerprint,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// A fresh certificate. Its serial number is random: Firefox refuses two certificates
    /// with one issuer and serial, and every one of ours has the same issuer name.
    pub fn generate() -> Result<Certificate, DtlsError> {
        let err = |e: rcgen::Error| DtlsError::Certificate(e.to_string());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "switchboard");
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).map_err(|e| DtlsError::Certificate(e.to_string()))?;
        // A positive DER integer.
        serial[0] &= 0x7F;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params.self_signed(&key).map_err(err)?;
        let der = cert.der().to_vec();
        Ok(Certificate {
            fingerprint: Fingerprint::of_der(&der),
            dtls: DtlsCertificate {
                certificate: der,
                private_key: key.serialize_der(),
            },
        })
    }

    /// The certificate every transport of this process presents, made on first use.
    pub fn process() -> Result<Arc<Certificate>, DtlsError> {
        static CERT: OnceLock<Arc<Certificate>> = OnceLock::new();
        if let Some(c) = CERT.get() {
            return Ok(c.clone());
        }
        let made = Arc::new(Certificate::generate()?);
        // Two first callers at once: both made one, the first stored wins.
        Ok(CERT.get_or_init(|| made).clone())
    }

    /// Its fingerprint, for our `a=fingerprint`.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The certificate in DER.
    pub fn der(&self) -> &[u8] {
        &self.dtls.certificate
    }

    /// The private key in PKCS#8 DER.
    pub fn private_key_der(&self) -> &[u8] {
        &self.dtls.private_key
    }
}

/// Which end of the DTLS handshake we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsRole {
    /// We send the ClientHello (`a=setup:active`).
    Client,
    /// We wait for the peer's ClientHello (`a=setup:passive`).
    Server,
}

impl DtlsRole {
    /// Our role and our answer's `a=setup` value for the peer's offered `a=setup` (RFC 5763
    /// §5, RFC 8842 §5), or `None` for a value that leaves no role (`holdconn`, unknown).
    ///
    /// Given the choice (`actpass`) we take the server role although RFC 5763 recommends
    /// `active` to start DTLS while the answer travels: an ICE-lite agent learns where the
    /// peer is only from the peer's checks, which follow the answer anyway, so being active
    /// would save nothing; passive, we send nothing until the peer starts DTLS on the path
    /// it validated.
    pub fn answering(offered_setup: &str) -> Option<(DtlsRole, &'static str)> {
        match offered_setup.trim() {
            s if s.eq_ignore_ascii_case("actpass") || s.eq_ignore_ascii_case("active") => {
                Some((DtlsRole::Server, "passive"))
            }
            s if s.eq_ignore_ascii_case("passive") => Some((DtlsRole::Client, "active")),
            _ => None,
        }
    }
}

/// The SRTP master keys DTLS-SRTP yields for one leg: ours protects what we send, the
/// peer's unprotects what it sends.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The negotiated suite.
    pub suite: Suite,
    /// Our sending key and salt.
    pub local: MasterKey,
    /// The peer's sending key and salt.
    pub remote: MasterKey,
}

impl fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl SrtpKeys {
    /// Splits exported keying material (RFC 5764 §4.2: client key, server key, client salt,
    /// server salt) by our role: the client sends with the client's key.
    pub fn from_exported(
        suite: Suite,
        material: &[u8],
        role: DtlsRole,
    ) -> Result<SrtpKeys, SrtpError> {
        let k = suite.master_key_len();
        let s = suite.master_salt_len();
        if material.len() != 2 * (k + s) {
            return Err(SrtpError::BadKey);
        }
        let key_salt = |key_at: usize, salt_at: usize| {
            let mut buf = [0u8; 48];
            buf[..k].copy_from_slice(&material[key_at..key_at + k]);
            buf[k..k + s].copy_from_slice(&material[salt_at..salt_at + s]);
            MasterKey::from_bytes(suite, &buf[..k + s])
        };
        let client = key_salt(0, 2 * k)?;
        let server = key_salt(k, 2 * k + s)?;
        let (local, remote) = match role {
            DtlsRole::Client => (client, server),
            DtlsRole::Server => (server, client),
        };
        Ok(SrtpKeys {
            suite,
            local,
            remote,
        })
    }

    /// The SRTP session for the leg: protect with ours, unprotect with the peer's.
    pub fn session(&self) -> Result<SrtpSession, SrtpError> {
        SrtpSession::new(&self.local, &CryptoAttr::new(1, self.remote.clone()))
    }
}

/// The suite of a DTLS-SRTP protection profile, if [`crate::rtp::srtp`] implements it.
pub fn suite_of(profile: SrtpProfile) -> Option<Suite> {
    match profile {
        SrtpProfile::AES128_CM_SHA1_80 => Some(Suite::AesCm128HmacSha1_80),
        SrtpProfile::AEAD_AES_128_GCM => Some(Suite::AeadAes128Gcm),
        SrtpProfile::AEAD_AES_256_GCM => Some(Suite::AeadAes256Gcm),
        _ => None,
    }
}

/// Why the handshake ended without keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeFailure {
    /// The peer's certificate does not match the fingerprint in its SDP.
    #[error("peer certificate does not match its SDP fingerprint")]
    FingerprintMismatch,
    /// The handshake finished without a certificate from the peer.
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    /// The handshake finished without use_srtp.
    #[error("no SRTP protection profile negotiated")]
    NoSrtpProfile,
    /// The peer chose a profile our SRTP does not implement.
    #[error("SRTP profile {0} is not supported")]
    UnsupportedProfile(String),
    /// The keying material did not split into keys.
    #[error("keying material unusable: {0}")]
    Keys(String),
    /// dimpl ended the connection (a fatal alert, a bad message, its own timeout).
    #[error("DTLS: {0}")]
    Dtls(String),
}

/// What a handshake step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtlsEvent {
    /// Handshake done, certificate checked, keys split.
    Connected(SrtpKeys),
    /// The handshake ended without keys.
    Failed(HandshakeFailure),
}

/// dimpl's configuration for a handshake limit, built once per process: building one checks
/// the crypto provider against known answers (key exchanges and signatures included), work
/// no call should pay for again.
fn dimpl_config(handshake_timeout: Duration) -> Result<Arc<dimpl::Config>, HandshakeFailure> {
    /// Distinct limits kept; a process uses one or two.
    const KEPT: usize = 4;
    static CONFIGS: Mutex<Vec<(Duration, Arc<dimpl::Config>)>> = Mutex::new(Vec::new());
    let mut configs = CONFIGS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, c)) = configs.iter().find(|(t, _)| *t == handshake_timeout) {
        return Ok(c.clone());
    }
    let config = Arc::new(
        dimpl::Config::builder()
            .handshake_timeout(handshake_timeout)
            .with_crypto_provider(dimpl::crypto::rust_crypto::default_provider())
            .build()
            .map_err(|e| HandshakeFailure::Dtls(e.to_string()))?,
    );
    if configs.len() < KEPT {
        configs.push((handshake_timeout, config.clone()));
    }
    Ok(config)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    /// Keys are out; dimpl still answers retransmitted flights of a peer that missed our
    /// last one.
    Connected,
    Failed,
}

/// One DTLS endpoint in its role, checking the peer against `remote_fingerprint`.
pub struct DtlsEndpoint {
    dtls: Dtls,
    role: DtlsRole,
    remote_fingerprint: Fingerprint,
    state: State,
    peer_cert_ok: Option<bool>,
    keys: Option<Result<SrtpKeys, HandshakeFailure>>,
    saw_connected: bool,
    next_timeout: Option<Instant>,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<DtlsEvent>,
    buf: Vec<u8>,
}

impl fmt::Debug for DtlsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsEndpoint")
            .field("role", &self.role)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl DtlsEndpoint {
    /// An endpoint in `role`; dimpl's own handshake limit is `handshake_timeout`.
    pub fn new(
        certificate: &Certificate,
        role: DtlsRole,
        remote_fingerprint: Fingerprint,
        handshake_timeout: Duration,
        now: Instant,
    ) -> Result<DtlsEndpoint, HandshakeFailure> {
        let config = dimpl_config(handshake_timeout)?;
        let mut dtls = Dtls::new_12(config, certificate.dtls.clone(), now);
        dtls.set_active(role == DtlsRole::Client);
        Ok(DtlsEndpoint {
            dtls,
            role,
            remote_fingerprint,
            state: State::Handshaking,
            peer_cert_ok: None,
            keys: None,
            saw_connected: false,
            next_timeout: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
            buf: vec![0u8; OUT_BUF_LEN],
        })
    }

    /// Our role.
    pub fn role(&self) -> DtlsRole {
        self.role
    }

    /// Whether the handshake gave keys.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Whether the handshake ended without keys.
    pub fn is_failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Feeds one DTLS datagram.
    pub fn handle_packet(&mut self, now: Instant, bytes: &[u8]) {
        if self.state == State::Failed {
            return;
        }
        let r = self
            .dtls
            .handle_timeout(now)
            .and_then(|()| self.dtls.handle_packet(bytes));
        self.after(r);
    }

    /// Runs retransmissions due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Failed {
            return;
        }
        let r = self.dtls.handle_timeout(now);
        self.after(r);
    }

    /// When [`DtlsEndpoint::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Handshaking => self.next_timeout,
            // Once connected only a peer's retransmission needs an answer, and that comes
            // as a packet.
            State::Connected | State::Failed => None,
        }
    }

    /// The next record to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    fn fail(&mut self, why: HandshakeFailure) {
        if self.state != State::Failed {
            self.state = State::Failed;
            // Nothing more leaves after a failure: no final flight to a peer we refused.
            self.out.clear();
            let _ = self.dtls.close();
            self.events.push_back(DtlsEvent::Failed(why));
        }
    }

    fn after(&mut self, r: Result<(), dimpl::Error>) {
        self.drain();
        if let Err(e) = r {
            self.fail(HandshakeFailure::Dtls(e.to_string()));
        }
    }

    /// Polls dimpl until it has nothing more, acting on each output.
    fn drain(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        // dimpl ends every poll cycle with a Timeout; the bound only guards against a
        // cycle that never ends.
        for _ in 0..1024 {
            match self.dtls.poll_output(&mut buf) {
                Output::Packet(p) if self.state != State::Failed => {
                    self.out.push_back(p.to_vec());
                }
                Output::Packet(_) => {}
                Output::BufferTooSmall { needed } => buf.resize(needed, 0),
                Output::Timeout(t) => {
                    self.next_timeout = Some(t);
                    break;
                }
                Output::PeerCert(der) => {
                    let ok = Fingerprint::of_der(der) == self.remote_fingerprint;
                    self.peer_cert_ok = Some(ok);
                    if !ok {
                        self.fail(HandshakeFailure::FingerprintMismatch);
                    }
                }
                Output::KeyingMaterial(material, profile) => {
                    self.keys = Some(match suite_of(profile) {
                        Some(suite) => SrtpKeys::from_exported(suite, &material, self.role)
                            .map_err(|e| HandshakeFailure::Keys(e.to_string())),
                        None => Err(HandshakeFailure::UnsupportedProfile(profile.to_string())),
                    });
                }
                Output::Connected => self.saw_connected = true,
                // No application data is spoken over this DTLS, and a close_notify after
                // the keys are out ends nothing SRTP needs.
                _ => {}
            }
        }
        self.buf = buf;
        if self.saw_connected && self.state == State::Handshaking {
            match (self.peer_cert_ok, self.keys.take()) {
                (Some(true), Some(Ok(keys))) => {
                    self.state = State::Connected;
                    self.events.push_back(DtlsEvent::Connected(keys));
                }
                (Some(true), Some(Err(why))) => self.fail(why),
                (Some(true), None) => self.fail(HandshakeFailure::NoSrtpProfile),
                _ => self.fail(HandshakeFailure::NoPeerCertificate),
            }
        }
    }
}

#[cfg(test)]
mod tests;
