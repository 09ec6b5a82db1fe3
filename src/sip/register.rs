//! The registration client (RFC 3261 §10), sans-IO: one [`Registration`] keeps one
//! account's binding alive at its registrar. REGISTERs share one Call-ID with increasing
//! CSeq (§10.2.4); a 401/407 is answered with digest credentials (and later REGISTERs carry
//! them at once, with the next nonce count); 423 Interval Too Brief is retried with the
//! registrar's Min-Expires; a granted binding is refreshed at the earlier of half its
//! lifetime and 32 s before its end; a failure (an error response, or no answer within
//! 64·T1, Timer F) is retried after a back-off of 30 s doubling to 10 min with seeded
//! jitter, or after a 503's Retry-After, for ever. [`Registration::unregister`] removes
//! the binding (Expires: 0).
//!
//! It is a machine of its own that the transport glue feeds, not part of the
//! [`Endpoint`](super::endpoint::Endpoint): a registration has no dialog and no call, its
//! life spans hours of refreshes, and its state is polled rather than reported as call
//! events. The glue offers each response to its registrations (they match on their own
//! branch) before handing it to the endpoint.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::dialog::Peer;
use super::digest::{ClientAuth, Credentials};
use super::endpoint::Transmit;
use super::ids::Ids;
use super::message::{
    canonical_name, classify_with, header_value, Header, Headers, Inbound, Method, ParsedResponse,
    Request, Uri,
};
use super::transaction::{ClientTx, ResponseDisposition, TimerConfig, TxOutput};

/// One account to register.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// The registrar's Request-URI, e.g. `sip:example.com`.
    pub registrar: String,
    /// Where REGISTERs go (resolved by the layer above).
    pub peer: Peer,
    /// The address of record (To and From).
    pub aor: String,
    /// The Contact URI to bind.
    pub contact: String,
    /// Used to answer challenges.
    pub credentials: Option<Credentials>,
    /// Requested binding lifetime in seconds.
    pub expires: u32,
    /// Our address as written into Via.
    pub local_addr: SocketAddr,
    /// User-Agent header value.
    pub user_agent: String,
    /// RFC 3261 timers.
    pub timers: TimerConfig,
}

/// Where a registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationState {
    /// Not started.
    Idle,
    /// The first REGISTER (or one after a failure) awaits its answer.
    Registering,
    /// Bound until `until`; a refresh goes out before.
    Registered {
        /// When the binding lapses at the registrar.
        until: Instant,
    },
    /// The last attempt failed with `code` (408: no answer); the next goes at `retry_at`.
    Failed {
        /// The final status code.
        code: u16,
        /// When the next REGISTER goes.
        retry_at: Instant,
    },
    /// The REGISTER removing the binding awaits its answer.
    Unregistering,
    /// The binding was removed (or the attempt to remove it ended).
    Unregistered,
}

/// Shortest refresh interval, so that a registrar granting a few seconds is not flooded.
const MIN_REFRESH: u64 = 5;
/// First back-off after a failure.
const BACKOFF_START: u64 = 30;
/// Longest back-off.
const BACKOFF_MAX: u64 = 600;

/// The REGISTER in flight.
struct Pending {
    tx: ClientTx,
    branch: String,
    /// It removes the binding (Expires: 0).
    unregister: bool,
}

/// One account's registration.
pub struct Registration {
    cfg: RegistrationConfig,
    ids: Ids,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// Requested lifetime; a 423 raises it.
    expires: u32,
    state: RegistrationState,
    pending: Option<Pending>,
    /// When the next REGISTER goes by itself (refresh or retry).
    next_attempt: Option<Instant>,
    failures: u32,
    auth: Option<ClientAuth>,
    transmits: VecDeque<Transmit>,
}

impl Registration {
    /// A registration not yet started; its Call-ID, tag, branches and jitter come from `ids`.
    pub fn new(cfg: RegistrationConfig, mut ids: Ids) -> Self {
        let call_id = format!("{}@{}", ids.token(), cfg.local_addr.ip());
        let from_tag = ids.token();
        let cseq = ids.first_cseq();
        Registration {
            expires: cfg.expires,
            auth: cfg.credentials.clone().map(ClientAuth::new),
            cfg,
            ids,
            call_id,
            from_tag,
            cseq,
            state: RegistrationState::Idle,
            pending: None,
            next_attempt: None,
            failures: 0,
            transmits: VecDeque::new(),
        }
    }

    /// Where the registration stands.
    pub fn state(&self) -> RegistrationState {
        self.state
    }

    /// Sends the first REGISTER.
    pub fn start(&mut self, now: Instant) {
        if matches!(
            self.state,
            RegistrationState::Idle | RegistrationState::Unregistered
        ) {
            self.state = RegistrationState::Registering;
            self.send_register(now, false);
        }
    }

    /// Removes the binding: REGISTER with Expires: 0; no more refreshes.
    pub fn unregister(&mut self, now: Instant) {
        if matches!(
            self.state,
            RegistrationState::Idle
                | RegistrationState::Unregistered
                | RegistrationState::Unregistering
        ) {
            return;
        }
        self.next_attempt = None;
        self.state = RegistrationState::Unregistering;
        self.send_register(now, true);
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`Registration::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tx = self.pending.as_ref().and_then(|p| p.tx.poll_timeout());
        [tx, self.next_attempt].into_iter().flatten().min()
    }

    /// Offers one message from the network: true when it was the answer to our REGISTER
    /// (then it is consumed), false when it belongs elsewhere.
    pub fn handle_message(&mut self, now: Instant, bytes: &[u8]) -> bool {
        let stream = self.cfg.peer.transport.is_reliable();
        match classify_with(bytes, stream, &mut self.ids) {
            Inbound::Response(r) => self.handle_response(now, &r),
            _ => false,
        }
    }

    /// Offers a parsed response: true when it answered our REGISTER.
    pub fn handle_response(&mut self, now: Instant, r: &ParsedResponse) -> bool {
        let Some(p) = self.pending.as_mut() else {
            return false;
        };
        if r.ess.branch.as_deref() != Some(p.branch.as_str())
            || r.ess.cseq_method != Method::Register
        {
            return false;
        }
        if p.tx.on_response(now, r.code) == ResponseDisposition::Absorb || r.code < 200 {
            return true;
        }
        let unregister = p.unregister;
        // Retransmitted finals are harmless without the transaction: they match nothing.
        self.pending = None;
        if unregister {
            self.state = RegistrationState::Unregistered;
            return true;
        }
        match r.code {
            200..=299 => self.on_registered(now, r),
            401 | 407 => {
                let answered = self
                    .auth
                    .as_mut()
                    .map(|a| a.on_challenge(&r.resp.headers, r.code == 407));
                match answered {
                    Some(Ok(())) => self.send_register(now, false),
                    Some(Err(e)) => {
                        tracing::info!(aor = %self.cfg.aor, code = r.code, error = %e, "registration refused");
                        self.fail(now, r.code, None);
                    }
                    None => self.fail(now, r.code, None),
                }
            }
            423 => {
                let min = header_value(&r.resp.headers, "Min-Expires")
                    .and_then(|v| v.trim().parse::<u32>().ok());
                match min {
                    Some(m) if m > self.expires => {
                        self.expires = m;
                        self.send_register(now, false);
                    }
                    _ => self.fail(now, r.code, None),
                }
            }
            _ => {
                let retry_after = (r.code == 503)
                    .then(|| header_value(&r.resp.headers, "Retry-After"))
                    .flatten()
                    .and_then(super::endpoint::leading_seconds);
                self.fail(now, r.code, retry_after);
            }
        }
        true
    }

    /// Fires what is due at `now`: retransmissions, Timer F, a refresh or a retry.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut out = Vec::new();
        if let Some(p) = self.pending.as_mut() {
            p.tx.handle_timeout(now, &mut out);
        }
        for o in out {
            match o {
                TxOutput::Retransmit(bytes) => self.transmits.push_back(Transmit {
                    peer: self.cfg.peer,
                    bytes,
                }),
                TxOutput::TimedOut => {
                    let unregister = self.pending.take().is_some_and(|p| p.unregister);
                    if unregister {
                        self.state = RegistrationState::Unregistered;
                    } else {
                        self.fail(now, 408, None);
                    }
                }
            }
        }
        if self.next_attempt.is_some_and(|at| at <= now) {
            self.next_attempt = None;
            if let Some(a) = self.auth.as_mut() {
                a.start_over();
            }
            if matches!(self.state, RegistrationState::Failed { .. }) {
                self.state = RegistrationState::Registering;
            }
            self.send_register(now, false);
        }
    }

    fn on_registered(&mut self, now: Instant, r: &ParsedResponse) {
        let granted = granted_expiry(&r.resp.headers, &self.cfg.contact).unwrap_or(self.expires);
        self.failures = 0;
        let until = now + Duration::from_secs(granted.into());
        self.state = RegistrationState::Registered { until };
        let g = u64::from(granted);
        let refresh = (g / 2).min(g.saturating_sub(32)).max(MIN_REFRESH);
        self.next_attempt = Some(now + Duration::from_secs(refresh));
        tracing::info!(aor = %self.cfg.aor, granted, "registered");
    }

    fn fail(&mut self, now: Instant, code: u16, retry_after: Option<u32>) {
        self.failures += 1;
        let wait = match retry_after {
            Some(s) => Duration::from_secs(s.into()),
            None => {
                let base = BACKOFF_START
                    .saturating_mul(1 << (self.failures - 1).min(10))
                    .min(BACKOFF_MAX)
                    * 1000;
                // Up to a fifth less, so that many accounts failing together spread out.
                Duration::from_millis(base - self.ids.u64(0..=base / 5))
            }
        };
        let retry_at = now + wait;
        tracing::info!(aor = %self.cfg.aor, code, wait_s = wait.as_secs(), "registration failed");
        self.state = RegistrationState::Failed { code, retry_at };
        self.next_attempt = Some(retry_at);
    }

    fn send_register(&mut self, now: Instant, unregister: bool) {
        self.cseq += 1;
        let branch = self.ids.branch();
        let uri = Uri::try_from(self.cfg.registrar.as_str()).unwrap_or_default();
        let mut headers = Headers::default();
        headers.push(super::dialog::via(
            self.cfg.peer.transport,
            self.cfg.local_addr,
            &branch,
        ));
        headers.push(Header::MaxForwards(70.into()));
        headers.push(Header::From(
            format!("<{}>;tag={}", self.cfg.aor, self.from_tag).into(),
        ));
        headers.push(Header::To(format!("<{}>", self.cfg.aor).into()));
        headers.push(Header::CallId(self.call_id.clone().into()));
        headers.push(Header::CSeq(format!("{} REGISTER", self.cseq).into()));
        headers.push(Header::Contact(format!("<{}>", self.cfg.contact).into()));
        let expires = if unregister { 0 } else { self.expires };
        headers.push(Header::Other("Expires".into(), expires.to_string()));
        headers.push(Header::UserAgent(self.cfg.user_agent.clone().into()));
        if let Some(auth) = self.auth.as_mut() {
            let cnonce = self.ids.token();
            let uri = uri.to_string();
            for (name, value) in auth.authorizations("REGISTER", &uri, &[], &cnonce) {
                headers.push(Header::Other(name.into(), value));
            }
        }
        headers.push(Header::ContentLength(0.into()));
        let req = Request {
            method: Method::Register,
            uri,
            version: rsipstack::sip::Version::V2,
            headers,
            body: Vec::new(),
        };
        let bytes = req.to_bytes();
        let tx = ClientTx::new(
            now,
            self.cfg.timers,
            self.cfg.peer.transport.is_reliable(),
            false,
            bytes.clone(),
        );
        self.pending = Some(Pending {
            tx,
            branch,
            unregister,
        });
        self.transmits.push_back(Transmit {
            peer: self.cfg.peer,
            bytes,
        });
    }
}

/// The lifetime the registrar granted our binding: the `expires` parameter of the Contact
/// that is ours, else the Expires header (§10.2.4).
fn granted_expiry(headers: &Headers, contact: &str) -> Option<u32> {
    let ours = headers
        .iter()
        .filter(|h| canonical_name(h.name()).eq_ignore_ascii_case("Contact"))
        .flat_map(|h| super::dialog::split_commas(h.value()))
        .find(|c| super::dialog::bare_uri(c).eq_ignore_ascii_case(contact));
    let from_contact = ours.and_then(|c| {
        let params = c
            .rsplit_once('>')
            .map_or(c.as_str(), |(_, p)| p)
            .to_string();
        params.split(';').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("expires")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
    });
    from_contact.or_else(|| header_value(headers, "Expires").and_then(|v| v.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::headers_of as with;

    #[test]
    fn granted_expiry_prefers_our_contact_over_expires() {
        let h = with(&[
            (
                "Contact",
                "<sip:other@127.0.0.1>;expires=50, <sip:sb@127.0.0.1:5060>;expires=300",
            ),
            ("Expires", "900"),
        ]);
        assert_eq!(granted_expiry(&h, "sip:sb@127.0.0.1:5060"), Some(300));
        assert_eq!(granted_expiry(&h, "sip:nobody@127.0.0.1"), Some(900));
        assert_eq!(granted_expiry(&with(&[]), "sip:x@y"), None);
    }
}
