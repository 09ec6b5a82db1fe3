//! [`WebRtcTransport`]: one leg's ICE-lite agent and DTLS endpoint behind one sans-IO
//! interface, with the deadlines that end a leg whose peer never completes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dtls::{
    Certificate, DtlsEndpoint, DtlsEvent, DtlsRole, Fingerprint, HandshakeFailure, SrtpKeys,
};
use super::ice::{Credentials, IceCounters, IceEvent, IceLite, DEFAULT_CHECK_TIMEOUT};
use super::{demux, Demux};

/// How long ICE and DTLS together may take from the transport's creation to keys.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// DTLS record header: type, version, epoch, sequence number, length.
const DTLS_HEADER_LEN: usize = 13;

/// What one leg's transport needs from the offer and answer.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Our ICE credentials (in our answer).
    pub local: Credentials,
    /// The peer's ICE credentials (from its offer).
    pub remote: Credentials,
    /// Our DTLS role, from [`DtlsRole::answering`].
    pub role: DtlsRole,
    /// The peer's `a=fingerprint`.
    pub remote_fingerprint: Fingerprint,
    /// The certificate we present; normally [`Certificate::process`].
    pub certificate: Arc<Certificate>,
    /// How long the peer has for its first valid check.
    pub check_timeout: Duration,
    /// How long the peer has from our creation to finished keys.
    pub connect_timeout: Duration,
}

impl TransportConfig {
    /// A config with the default deadlines.
    pub fn new(
        local: Credentials,
        remote: Credentials,
        role: DtlsRole,
        remote_fingerprint: Fingerprint,
        certificate: Arc<Certificate>,
    ) -> TransportConfig {
        TransportConfig {
            local,
            remote,
            role,
            remote_fingerprint,
            certificate,
            check_timeout: DEFAULT_CHECK_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Why a transport ended without (or after losing) its keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailReason {
    /// No valid ICE check arrived within the check timeout.
    #[error("no valid ICE check in time")]
    IceTimeout,
    /// ICE or the DTLS handshake did not finish within the connect timeout.
    #[error("DTLS handshake did not finish in time")]
    HandshakeTimeout,
    /// The handshake ended without keys.
    #[error(transparent)]
    Handshake(#[from] HandshakeFailure),
}

/// What the transport tells the leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// RTP goes to this address from now on.
    Selected(SocketAddr),
    /// The handshake finished: build the leg's SRTP session from these keys.
    Connected(SrtpKeys),
    /// The transport ended; the leg ends with it.
    Failed(FailReason),
    /// The peer stopped proving consent (RFC 7675): stop sending and end the leg.
    ConsentLost,
}

/// Counts of what the transport received, by fate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// STUN checks by outcome.
    pub ice: IceCounters,
    /// DTLS datagrams handed to the handshake.
    pub dtls_accepted: u64,
    /// DTLS datagrams from an address that never sent a valid check.
    pub dtls_unvalidated: u64,
    /// DTLS datagrams whose records do not frame (bad type, version or length).
    pub dtls_malformed: u64,
    /// RTP, RTCP and anything RFC 7983 assigns to none of STUN and DTLS.
    pub not_ours: u64,
    /// Datagrams that came after the transport ended.
    pub after_end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Connected,
    Ended,
}

/// One WebRTC leg's ICE-lite agent and DTLS endpoint.
#[derive(Debug)]
pub struct WebRtcTransport {
    ice: IceLite,
    dtls: DtlsEndpoint,
    role: DtlsRole,
    /// Whether dimpl has been given time: a client's ClientHello waits for an address.
    dtls_started: bool,
    /// Where DTLS records go: the selected address, or before one the last validated
    /// address a DTLS record came from.
    dtls_peer: Option<SocketAddr>,
    connect_deadline: Instant,
    state: State,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
}

impl WebRtcTransport {
    /// A transport waiting for the peer's checks.
    pub fn new(config: TransportConfig, now: Instant) -> Result<WebRtcTransport, FailReason> {
        let dtls = DtlsEndpoint::new(
            &config.certificate,
            config.role,
            config.remote_fingerprint,
            config.connect_timeout,
            now,
        )?;
        Ok(WebRtcTransport {
            ice: IceLite::new(config.local, config.remote, now, config.check_timeout),
            dtls,
            role: config.role,
            dtls_started: false,
            dtls_peer: None,
            connect_deadline: now + config.connect_timeout,
            state: State::Connecting,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
        })
    }

    /// Our ICE credentials, for the answer.
    pub fn local_credentials(&self) -> &Credentials {
        self.ice.local_credentials()
    }

    /// Where RTP goes, once ICE selected an address.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.ice.selected()
    }

    /// Whether the transport ended (failed or consent lost).
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        Counters {
            ice: self.ice.counters(),
            ..self.counters
        }
    }

    /// Handles one datagram that arrived from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if self.state == State::Ended {
            self.counters.after_end += 1;
            return;
        }
        match demux(bytes) {
            Demux::Stun => {
                if let Some(response) = self.ice.handle_stun(now, from, bytes) {
                    self.transmits.push_back(Transmit {
                        to: from,
                        bytes: response,
                    });
                }
                self.pump_ice(now);
            }
            Demux::Dtls => {
                if !self.ice.is_validated(from) {
                    self.counters.dtls_unvalidated += 1;
                } else if !records_frame(bytes) {
                    self.counters.dtls_malformed += 1;
                } else {
                    self.counters.dtls_accepted += 1;
                    if self.ice.selected().is_none() {
                        self.dtls_peer = Some(from);
                    }
                    self.dtls_started = true;
                    self.dtls.handle_packet(now, bytes);
                    self.pump_dtls();
                }
            }
            Demux::Rtp | Demux::Other => self.counters.not_ours += 1,
        }
        self.check_deadline(now);
    }

    /// Runs what is due at `now`: ICE deadlines, DTLS retransmissions, the connect deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Ended {
            return;
        }
        self.ice.handle_timeout(now);
        self.pump_ice(now);
        if self.dtls_started && self.state != State::Ended {
            self.dtls.handle_timeout(now);
            self.pump_dtls();
        }
        self.check_deadline(now);
    }

    /// When [`WebRtcTransport::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Ended {
            return None;
        }
        let connect = (self.state == State::Connecting).then_some(self.connect_deadline);
        let dtls = if self.dtls_started {
            self.dtls.poll_timeout()
        } else {
            None
        };
        [self.ice.poll_timeout(), dtls, connect]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn end(&mut self, event: Event) {
        if self.state != State::Ended {
            tracing::debug!(?event, counters = ?self.counters(), "WebRTC transport ended");
            self.state = State::Ended;
            self.transmits.clear();
            self.events.push_back(event);
        }
    }

    fn check_deadline(&mut self, now: Instant) {
        if self.state == State::Connecting && now >= self.connect_deadline {
            self.end(Event::Failed(FailReason::HandshakeTimeout));
        }
    }

    fn pump_ice(&mut self, now: Instant) {
        while let Some(e) = self.ice.poll_event() {
            match e {
                IceEvent::Selected(addr) => {
                    self.dtls_peer = Some(addr);
                    self.events.push_back(Event::Selected(addr));
                    if self.role == DtlsRole::Client && !self.dtls_started {
                        // Now we know where the peer is: send the ClientHello.
                        self.dtls_started = true;
                        self.dtls.handle_timeout(now);
                        self.pump_dtls();
                    }
                }
                IceEvent::Failed => self.end(Event::Failed(FailReason::IceTimeout)),
                IceEvent::ConsentLost => self.end(Event::ConsentLost),
            }
        }
    }

    fn pump_dtls(&mut self) {
        while let Some(bytes) = self.dtls.poll_transmit() {
            if let Some(to) = self.dtls_peer {
                self.transmits.push_back(Transmit { to, bytes });
            }
        }
        while let Some(e) = self.dtls.poll_event() {
            match e {
                DtlsEvent::Connected(keys) => {
                    if self.state == State::Connecting {
                        self.state = State::Connected;
                        self.events.push_back(Event::Connected(keys));
                    }
                }
                DtlsEvent::Failed(why) => self.end(Event::Failed(FailReason::Handshake(why))),
            }
        }
    }
}

/// Whether `bytes` is a sequence of whole DTLS 1.x records of the four DTLS 1.2 content
/// types (RFC 6347 §4.1); anything else is not worth the handshake's time.
fn records_frame(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let Some(header) = rest.get(..DTLS_HEADER_LEN) else {
            return false;
        };
        let content_type_ok = (20..=23).contains(&header[0]);
        let version_ok = header[1] == 0xFE;
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        if !content_type_ok || !version_ok {
            return false;
        }
        let Some(next) = rest.get(DTLS_HEADER_LEN + len..) else {
            return false;
        };
        rest = next;
    }
    true
}

#[cfg(test)]
mod tests;
