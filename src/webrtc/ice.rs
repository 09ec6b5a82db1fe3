//! The ICE-lite agent (RFC 8445 §2.5, §7.3): it answers the peer's connectivity checks,
//! never sends its own, and takes the source of the latest nominated check as the address
//! media goes to. Consent freshness (RFC 7675) is judged from the peer's checks: a lite agent
//! sends no requests of its own, so the peer's continued checks are the only sign it still
//! wants our media.
//!
//! Sans-IO: [`IceLite::handle_stun`] takes `now` and the datagram and returns the response to
//! send, if any; [`IceLite::handle_timeout`] turns silence into failure or lost consent.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::stun::{Builder, Class, Message, BINDING};

/// RFC 8445 §5.3: ice-char is ALPHA / DIGIT / "+" / "/".
const ICE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// At least 24 bits of randomness (RFC 8445 §5.3 asks for 4 characters at least).
const UFRAG_LEN: usize = 8;
/// At least 128 bits of randomness (RFC 8445 §5.3 asks for 22 characters at least).
const PWD_LEN: usize = 24;

/// RFC 7675 §5.1: consent expires 30 seconds after the last proof of it.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the peer has to send its first valid check before the agent gives up.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// One side's ICE username fragment and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `a=ice-ufrag`.
    pub ufrag: String,
    /// `a=ice-pwd`.
    pub pwd: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("ufrag", &self.ufrag)
            .finish_non_exhaustive()
    }
}

/// The operating system gave no random bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no random bytes for ICE credentials: {0}")]
pub struct NoRandom(pub String);

impl Credentials {
    /// Fresh credentials from the operating system's generator.
    pub fn random() -> Result<Credentials, NoRandom> {
        Ok(Credentials {
            ufrag: random_ice_chars(UFRAG_LEN)?,
            pwd: random_ice_chars(PWD_LEN)?,
        })
    }
}

fn random_ice_chars(n: usize) -> Result<String, NoRandom> {
    let mut bytes = [0u8; PWD_LEN];
    let bytes = &mut bytes[..n.min(PWD_LEN)];
    getrandom::fill(bytes).map_err(|e| NoRandom(e.to_string()))?;
    // 64 characters: the low six bits pick one without bias.
    Ok(bytes
        .iter()
        .map(|b| char::from(ICE_CHARS[usize::from(b & 0x3F)]))
        .collect())
}

/// What the agent tells its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceEvent {
    /// A nominated check came from this address: media goes there from now on.
    Selected(SocketAddr),
    /// No valid check arrived in time.
    Failed,
    /// The selected address sent no valid check for [`CONSENT_TIMEOUT`].
    ConsentLost,
}

/// Counts of the checks the agent saw, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IceCounters {
    /// Valid checks answered with a success response.
    pub checks_ok: u64,
    /// Checks answered 400: no USERNAME or no MESSAGE-INTEGRITY.
    pub bad_request: u64,
    /// Checks answered 401: a USERNAME not ours or a wrong MESSAGE-INTEGRITY.
    pub unauthorized: u64,
    /// Checks answered 487: the peer also claims the controlled role.
    pub role_conflict: u64,
    /// STUN messages dropped unanswered: bad FINGERPRINT, responses, indications, other
    /// methods, or anything after the agent stopped.
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No valid check yet.
    Waiting,
    /// At least one valid check; maybe a selected address.
    Checking,
    /// Failed or consent lost: nothing more is answered.
    Stopped,
}

/// The ICE-lite agent of one media stream.
#[derive(Debug)]
pub struct IceLite {
    local: Credentials,
    remote: Credentials,
    /// `RFRAG:LFRAG` as the peer puts it in USERNAME (RFC 8445 §7.2.2), built once.
    expected_username: Vec<u8>,
    state: State,
    check_deadline: Instant,
    selected: Option<SocketAddr>,
    /// Addresses that sent at least one valid check: DTLS is accepted from these only.
    validated: Vec<SocketAddr>,
    /// When the selected address last sent a valid check.
    last_consent: Option<Instant>,
    events: VecDeque<IceEvent>,
    counters: IceCounters,
}

/// Validated addresses remembered per agent; a browser has a handful of candidates.
const MAX_VALIDATED: usize = 16;

impl IceLite {
    /// An agent with our credentials and the peer's, waiting `check_timeout` from `now` for
    /// the first valid check.
    pub fn new(
        local: Credentials,
        remote: Credentials,
        now: Instant,
        check_timeout: Duration,
    ) -> IceLite {
        let mut expected_username = Vec::with_capacity(local.ufrag.len() + remote.ufrag.len() + 1);
        expected_username.extend_from_slice(local.ufrag.as_bytes());
        expected_username.push(b':');
        expected_username.extend_from_slice(remote.ufrag.as_bytes());
        IceLite {
            local,
            remote,
            expected_username,
            state: State::Waiting,
            check_deadline: now + check_timeout,
            selected: None,
            validated: Vec::new(),
            last_consent: None,
            events: VecDeque::new(),
            counters: IceCounters::default(),
        }
    }

    /// Our credentials, for the answer's `a=ice-ufrag` and `a=ice-pwd`.
    pub fn local_credentials(&self) -> &Credentials {
        &self.local
    }

    /// The peer's credentials from its offer.
    pub fn remote_credentials(&self) -> &Credentials {
        &self.remote
    }

    /// Where media goes: the source of the latest nominated check.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// Whether `addr` has sent a valid check (so its DTLS and media are the peer's).
    pub fn is_validated(&self, addr: SocketAddr) -> bool {
        self.validated.contains(&addr)
    }

    /// Whether the agent has failed or lost consent.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// The counters so far.
    pub fn counters(&self) -> IceCounters {
        self.counters
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    /// When [`IceLite::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting => Some(self.check_deadline),
            State::Checking => self.last_consent.map(|t| t + CONSENT_TIMEOUT),
            State::Stopped => None,
        }
    }

    /// Fails the agent when no valid check came in time, and drops consent when the
    /// selected address has been silent for [`CONSENT_TIMEOUT`].
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Waiting if now >= self.check_deadline => {
                self.state = State::Stopped;
                self.events.push_back(IceEvent::Failed);
            }
            State::Checking => {
                if let Some(last) = self.last_consent {
                    if now >= last + CONSENT_TIMEOUT {
                        self.state = State::Stopped;
                        self.events.push_back(IceEvent::ConsentLost);
                    }
                }
            }
            _ => {}
        }
    }

    /// Handles one STUN datagram from `from`; returns the response to send back to `from`,
    /// if the message deserves one.
    pub fn handle_stun(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
        // Time first: a check arriving after consent expired does not revive it.
        self.handle_timeout(now);
        let Ok(msg) = Message::parse(bytes) else {
            self.counters.dropped += 1;
            return None;
        };
        if self.state == State::Stopped
            || msg.class() != Class::Request
            || msg.method() != BINDING
            || (msg.get(super::stun::ATTR_FINGERPRINT).is_some() && !msg.check_fingerprint())
        {
            self.counters.dropped += 1;
            return None;
        }
        let txid = msg.transaction_id();
        let Some(username) = msg.username() else {
            self.counters.bad_request += 1;
            return Some(error_response(&txid, 400, "Bad Request"));
        };
        if msg.get(super::stun::ATTR_MESSAGE_INTEGRITY).is_none() {
            self.counters.bad_request += 1;
            return Some(error_response(&txid, 400, "Bad Request"));
        }
        if username != self.expected_username.as_slice()
            || !msg.check_integrity(self.local.pwd.as_bytes())
        {
            // RFC 8489 §9.1.3: no MESSAGE-INTEGRITY on this answer, the key is not shared.
            self.counters.unauthorized += 1;
            return Some(error_response(&txid, 401, "Unauthorized"));
        }
        if msg.ice_controlled().is_some() {
            // A lite agent is always controlled (RFC 8445 §6.1.1); the full peer must take
            // the controlling role, which a 487 tells it to.
            self.counters.role_conflict += 1;
            return Some(
                Builder::new(Class::Error, BINDING, &txid)
                    .error_code(487, "Role Conflict")
                    .integrity(self.local.pwd.as_bytes())
                    .fingerprint()
                    .finish(),
            );
        }
        self.counters.checks_ok += 1;
        if self.state == State::Waiting {
            self.state = State::Checking;
        }
        if !self.validated.contains(&from) {
            if self.validated.len() == MAX_VALIDATED {
                self.validated.remove(0);
            }
            self.validated.push(from);
        }
        if msg.use_candidate() && self.selected != Some(from) {
            self.selected = Some(from);
            self.last_consent = Some(now);
            self.events.push_back(IceEvent::Selected(from));
        } else if self.selected == Some(from) {
            self.last_consent = Some(now);
        }
        Some(
            Builder::new(Class::Success, BINDING, &txid)
                .xor_mapped_address(from)
                .integrity(self.local.pwd.as_bytes())
                .fingerprint()
                .finish(),
        )
    }
}

/// The ufrag a check is addressed to: USERNAME up to its colon (RFC 8445 §7.2.2), so that
/// checks arriving on a port several legs share can be routed to the leg whose local ufrag
/// it is. `None` for anything but a Binding request with a USERNAME.
pub fn addressed_ufrag(bytes: &[u8]) -> Option<&[u8]> {
    let msg = Message::parse(bytes).ok()?;
    if msg.class() != Class::Request || msg.method() != BINDING {
        return None;
    }
    let username = msg.username()?;
    let colon = username.iter().position(|&b| b == b':')?;
    Some(&username[..colon])
}

fn error_response(txid: &[u8; 12], code: u16, reason: &str) -> Vec<u8> {
    Builder::new(Class::Error, BINDING, txid)
        .error_code(code, reason)
        .fingerprint()
        .finish()
}

#[cfg(test)]
mod tests;
