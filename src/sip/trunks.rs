//! SIP trunks: the carriers calls go out through. [`Trunks`] is the registry, shared as
//! `Arc` by the transport task (which keeps the trunks' registrations alive) and the call
//! tasks (which place calls through them). It owns every trunk's settings and live state:
//! calls in use against `max_calls`, whether it is down and why, its registration, and
//! counters of attempts by result. Its decisions take `now` as an argument.
//!
//! A call asks [`Trunks::route`] for everything an [`OutgoingCall`] needs, and holds the
//! [`CallSlot`] it gets until the call ends; the INVITE's final status goes back through
//! [`Trunks::report`]. A failover list tries the next trunk when [`moves_on`] says so.
//!
//! When a trunk is down: a 503 with Retry-After takes it down for that long (RFC 3261
//! §21.5.4; at most [`MAX_DOWN`]); two 408s in a row with no other final status between
//! them (Timer B: the trunk never answered, or its own timeout) take it down for
//! [`TIMEOUT_DOWN`], so that the next calls fail over at once instead of each waiting 32 s.
//! A single 408 does not: it may be one callee's. A 503 without Retry-After does not
//! either. The registration's state does not gate calls: some carriers take calls from an
//! unregistered account, and a failed registration is retried on its own.
//!
//! [`TrunkRegistrations`] drives one [`Registration`] per trunk with `register = true`
//! (sans-IO, fed by the transport task) and publishes each one's state into the registry.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use super::dialog::{uri_peer, Peer, Transport};
use super::digest::{Algorithm, Credentials, Secret};
use super::endpoint::{OutgoingCall, Party, Transmit};
use super::ids::Ids;
use super::message::{classify_with, Inbound};
use super::register::{Registration, RegistrationConfig, RegistrationState};
use super::transaction::TimerConfig;
use crate::config::TrunkConfig;

/// Longest a 503's Retry-After takes a trunk down, so that a wild value cannot shut it for days.
pub const MAX_DOWN: Duration = Duration::from_secs(3600);
/// How long a trunk that let INVITEs time out stays down.
pub const TIMEOUT_DOWN: Duration = Duration::from_secs(30);
/// 408s in a row that take a trunk down.
const TIMEOUTS_BEFORE_DOWN: u32 = 2;

/// Result labels of attempts, in the order of the counters.
pub const RESULTS: [&str; 6] = ["answered", "redirected", "4xx", "5xx", "6xx", "timeout"];

/// Whether a failover list `trunk:a,b/NUMBER` tries its next trunk after an attempt ended
/// with `code`: after 408 (the trunk did not answer, or timed out itself) and any 5xx (the
/// trunk or its network failed). The callee's own answers stop it: 404, 480, 486, 487, 600,
/// 603 and every other 4xx and 6xx, like 2xx and 3xx.
pub fn moves_on(code: u16) -> bool {
    matches!(code, 408 | 500..=599)
}

/// Index into [`RESULTS`] of a final status.
fn result_index(code: u16) -> usize {
    match code {
        200..=299 => 0,
        300..=399 => 1,
        408 => 5,
        400..=499 => 2,
        500..=599 => 3,
        _ => 4,
    }
}

/// Why the configured trunks cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrunkError {
    /// A setting of one trunk is wrong.
    #[error("trunk {name:?}: {why}")]
    Invalid {
        /// The trunk.
        name: String,
        /// What is wrong.
        why: String,
    },
}

/// Why [`Trunks::route`] gave no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrunkUnavailable {
    /// No trunk has this name.
    #[error("no trunk named {0:?}")]
    Unknown(String),
    /// The trunk is down until `until`.
    #[error("trunk {trunk} is down: {reason}")]
    Down {
        /// The trunk.
        trunk: String,
        /// When it is up again.
        until: Instant,
        /// Why it went down.
        reason: String,
    },
    /// All of the trunk's `max_calls` are in use.
    #[error("trunk {trunk} has all its {max} calls in use")]
    AtCapacity {
        /// The trunk.
        trunk: String,
        /// Its cap.
        max: usize,
    },
    /// The number has characters a SIP user part through a trunk does not take.
    #[error("{0:?} is not a number a trunk can dial")]
    InvalidNumber(String),
}

impl TrunkUnavailable {
    /// Whether a failover list tries its next trunk: yes, unless the number itself is wrong.
    pub fn moves_on(&self) -> bool {
        !matches!(self, TrunkUnavailable::InvalidNumber(_))
    }
}

/// One call's hold on a trunk: counts against its `max_calls` until dropped.
#[derive(Debug)]
pub struct CallSlot {
    in_use: Arc<AtomicUsize>,
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Everything a call through a trunk needs, with its [`CallSlot`].
#[derive(Debug)]
pub struct TrunkRoute {
    /// The trunk's name (for [`Trunks::report`]).
    pub trunk: String,
    /// Request-URI: `sip:NUMBER@DOMAIN`.
    pub target: String,
    /// Where the INVITE goes: the trunk's proxy.
    pub peer: Peer,
    /// Preloaded route set: the proxy with `;lr` when the domain is not the proxy's own host.
    pub route: Vec<String>,
    /// From: `sip:CALLER_ID@DOMAIN`.
    pub from: Party,
    /// To: `sip:NUMBER@DOMAIN`.
    pub to: Party,
    /// The account's digest credentials.
    pub credentials: Option<Credentials>,
    /// Held until the call ends.
    pub slot: CallSlot,
}

impl TrunkRoute {
    /// The call to hand to the endpoint; the slot stays here.
    pub fn outgoing(&self, sdp: Option<Vec<u8>>, headers: Vec<(String, String)>) -> OutgoingCall {
        OutgoingCall {
            target: self.target.clone(),
            peer: self.peer,
            from: self.from.clone(),
            to: self.to.clone(),
            sdp,
            headers,
            route: self.route.clone(),
            credentials: self.credentials.clone(),
            call_id: None,
        }
    }
}

/// A trunk's registration as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RegistrationStatus {
    /// The trunk does not register.
    Off,
    /// A REGISTER awaits its answer.
    Registering,
    /// Bound at the registrar; refreshed before it lapses.
    Registered {
        /// Seconds until the binding lapses.
        expires_in_secs: u64,
    },
    /// The last attempt failed; another follows.
    Failed {
        /// Its final status (408: no answer).
        code: u16,
        /// Seconds until the next attempt.
        retry_in_secs: u64,
    },
    /// The binding is being removed (shutdown).
    Unregistering,
    /// The binding was removed.
    Unregistered,
}

/// Final statuses of a trunk's attempts, by class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct TrunkResults {
    /// 2xx.
    pub answered: u64,
    /// 3xx.
    pub redirected: u64,
    /// 4xx other than 408.
    #[serde(rename = "4xx")]
    pub failed_4xx: u64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub failed_5xx: u64,
    /// 6xx.
    #[serde(rename = "6xx")]
    pub failed_6xx: u64,
    /// 408: no answer from the trunk, or its own timeout.
    pub timeout: u64,
}

impl TrunkResults {
    /// `(label, count)` in the order of [`RESULTS`].
    pub fn labelled(&self) -> [(&'static str, u64); 6] {
        let v = [
            self.answered,
            self.redirected,
            self.failed_4xx,
            self.failed_5xx,
            self.failed_6xx,
            self.timeout,
        ];
        std::array::from_fn(|i| (RESULTS[i], v[i]))
    }
}

/// One trunk's state now, for the API and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TrunkStatus {
    /// Its name.
    pub name: String,
    /// Where its calls and REGISTERs go.
    pub proxy: String,
    /// Host part of its Request-URIs.
    pub domain: String,
    /// Its registration.
    pub registration: RegistrationStatus,
    /// Calls may go through it now.
    pub up: bool,
    /// Seconds until it is up again, while down.
    pub down_for_secs: Option<u64>,
    /// Why it is down, while down.
    pub down_reason: Option<String>,
    /// Calls through it now.
    pub calls: usize,
    /// Its cap on calls (0: none).
    pub max_calls: usize,
    /// Calls routed through it, ever.
    pub attempts: u64,
    /// Final statuses reported, by class.
    pub results: TrunkResults,
}

#[derive(Debug, Default)]
struct TrunkState {
    /// None when the trunk does not register.
    registration: Option<RegistrationState>,
    down: Option<(Instant, String)>,
    timeouts_in_a_row: u32,
    attempts: u64,
    results: [u64; RESULTS.len()],
}

struct Trunk {
    name: String,
    proxy: String,
    peer: Peer,
    /// Host (and port) of Request-URIs, To and From.
    domain: String,
    /// The domain is not the proxy: the proxy goes into the route set.
    outbound_proxy: bool,
    username: String,
    credentials: Option<Credentials>,
    register: bool,
    register_expires: u32,
    caller_id: String,
    max_calls: usize,
    in_use: Arc<AtomicUsize>,
    state: Mutex<TrunkState>,
}

impl Trunk {
    fn lock(&self) -> MutexGuard<'_, TrunkState> {
        // The state stays consistent field by field even if a holder panicked.
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn take_slot(&self) -> Option<CallSlot> {
        let max = self.max_calls;
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .ok()?;
        Some(CallSlot {
            in_use: self.in_use.clone(),
        })
    }

    /// `sip:USER@DOMAIN`.
    fn uri(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.domain)
    }
}

/// The configured trunks and their live state.
#[derive(Default)]
pub struct Trunks {
    trunks: Vec<Trunk>,
}

impl std::fmt::Debug for Trunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.trunks.iter().map(|t| &t.name))
            .finish()
    }
}

/// Characters a trunk name may have: it sits in `trunk:a,b/NUMBER`.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A dialled number or caller id: digits, letters and `+*#.-_`, nothing that needs escaping
/// in a URI except `#`, which is escaped when written.
fn valid_user(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '*' | '#' | '.' | '-' | '_'))
}

/// A user part as written in a URI (`#` is not allowed bare, RFC 3261 §25.1).
fn user_part(s: &str) -> String {
    s.replace('#', "%23")
}

/// `host` or `host:port` as written in a URI, the port left out when it is 5060.
fn host_port(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    if addr.port() == 5060 {
        host
    } else {
        format!("{host}:{}", addr.port())
    }
}

impl Trunks {
    /// The name each TLS trunk's proxy certificate is checked against (and sent as SNI):
    /// its `domain` when that is a name of its own, else none (the proxy's IP is used).
    pub fn tls_names(&self) -> Vec<(SocketAddr, String)> {
        self.trunks
            .iter()
            .filter(|t| t.peer.transport == Transport::Tls && t.outbound_proxy)
            .map(|t| {
                let host = match t.domain.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => h,
                    _ => t.domain.as_str(),
                };
                (t.peer.addr, host.to_string())
            })
            .collect()
    }

    /// Checks and takes the configured trunks.
    pub fn new(configs: &[TrunkConfig]) -> Result<Trunks, TrunkError> {
        let mut trunks: Vec<Trunk> = Vec::with_capacity(configs.len());
        for c in configs {
            let invalid = |why: &str| TrunkError::Invalid {
                name: c.name.clone(),
                why: why.to_string(),
            };
            if !valid_name(&c.name) {
                return Err(invalid("a name is 1-64 letters, digits, '-', '_' or '.'"));
            }
            if trunks.iter().any(|t| t.name == c.name) {
                return Err(invalid("the name is used twice"));
            }
            let proxy = c.proxy.trim();
            let transport = proxy
                .to_ascii_lowercase()
                .split(';')
                .skip(1)
                .find_map(|p| p.strip_prefix("transport=").map(str::to_string));
            let lower = proxy.to_ascii_lowercase();
            let peer = uri_peer(proxy, Transport::Udp)
                .filter(|_| lower.starts_with("sip:") || lower.starts_with("sips:"))
                .filter(|_| !proxy.contains('@'))
                .filter(|_| matches!(transport.as_deref(), None | Some("udp" | "tcp" | "tls")))
                .filter(|_| {
                    !lower.starts_with("sips:")
                        || matches!(transport.as_deref(), None | Some("tls"))
                })
                .ok_or_else(|| {
                    invalid(
                        "proxy must be sip:IP[:PORT][;transport=udp|tcp|tls] or sips:IP[:PORT] \
                         (host names are not resolved)",
                    )
                })?;
            let domain = match c.domain.as_deref().map(str::trim) {
                Some(d) => {
                    let ok = !d.is_empty()
                        && d.chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || "-.:[]".contains(ch));
                    if !ok {
                        return Err(invalid("domain must be a host name or address"));
                    }
                    d.to_string()
                }
                None => host_port(peer.addr),
            };
            let outbound_proxy = domain != host_port(peer.addr);
            let credentials = match (&c.password, &c.ha1) {
                (Some(_), Some(_)) => return Err(invalid("give password or ha1, not both")),
                (Some(_), None) | (None, Some(_)) if c.username.is_empty() => {
                    return Err(invalid("a password or ha1 needs a username"))
                }
                (Some(p), None) => Some(Credentials::password(c.username.clone(), p.clone())),
                (None, Some(h)) => {
                    if h.len() != 32 || !h.chars().all(|ch| ch.is_ascii_hexdigit()) {
                        return Err(invalid("ha1 must be 32 hex digits (MD5)"));
                    }
                    Some(Credentials {
                        username: c.username.clone(),
                        secret: Secret::Ha1 {
                            algorithm: Algorithm::Md5,
                            hex: h.to_ascii_lowercase(),
                        },
                        realm: None,
                    })
                }
                (None, None) => None,
            };
            if !c.username.is_empty() && !valid_user(&c.username) {
                return Err(invalid("username has characters a SIP user part cannot"));
            }
            if c.register_expires == 0 {
                return Err(invalid("register_expires must be at least 1"));
            }
            let caller_id = match &c.caller_id {
                Some(id) if !valid_user(id) => {
                    return Err(invalid("caller_id must be digits, letters or +*#.-_"))
                }
                Some(id) => id.clone(),
                None if !c.username.is_empty() => c.username.clone(),
                None => "anonymous".to_string(),
            };
            trunks.push(Trunk {
                name: c.name.clone(),
                proxy: proxy.to_string(),
                peer,
                domain,
                outbound_proxy,
                username: c.username.clone(),
                credentials,
                register: c.register,
                register_expires: c.register_expires,
                caller_id,
                max_calls: c.max_calls,
                in_use: Arc::new(AtomicUsize::new(0)),
                state: Mutex::new(TrunkState {
                    registration: c.register.then_some(RegistrationState::Idle),
                    ..TrunkState::default()
                }),
            });
        }
        Ok(Trunks { trunks })
    }

    fn get(&self, name: &str) -> Option<&Trunk> {
        self.trunks.iter().find(|t| t.name == name)
    }

    /// The trunks' names, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.trunks.iter().map(|t| t.name.as_str())
    }

    /// No trunk is configured.
    pub fn is_empty(&self) -> bool {
        self.trunks.is_empty()
    }

    /// Everything a call to `number` through trunk `name` needs, holding one of its call
    /// slots; or why the trunk cannot take the call now.
    pub fn route(
        &self,
        name: &str,
        number: &str,
        now: Instant,
    ) -> Result<TrunkRoute, TrunkUnavailable> {
        let t = self
            .get(name)
            .ok_or_else(|| TrunkUnavailable::Unknown(name.to_string()))?;
        if !valid_user(number) {
            return Err(TrunkUnavailable::InvalidNumber(number.to_string()));
        }
        if let Some((until, reason)) = &t.lock().down {
            if now < *until {
                return Err(TrunkUnavailable::Down {
                    trunk: t.name.clone(),
                    until: *until,
                    reason: reason.clone(),
                });
            }
        }
        let slot = t.take_slot().ok_or_else(|| TrunkUnavailable::AtCapacity {
            trunk: t.name.clone(),
            max: t.max_calls,
        })?;
        t.lock().attempts += 1;
        let to = t.uri(&user_part(number));
        let param = t.peer.transport.uri_param();
        let (target, route) = if t.outbound_proxy {
            let hop = format!("<sip:{}{param};lr>", host_port(t.peer.addr));
            (to.clone(), vec![hop])
        } else if t.peer.transport != Transport::Udp {
            // The Request-URI is the proxy itself here: it says how it is reached.
            (format!("{to}{param}"), Vec::new())
        } else {
            (to.clone(), Vec::new())
        };
        Ok(TrunkRoute {
            trunk: t.name.clone(),
            target,
            peer: t.peer,
            route,
            from: Party::uri(t.uri(&user_part(&t.caller_id))),
            to: Party::uri(to),
            credentials: t.credentials.clone(),
            slot,
        })
    }

    /// The final status of an INVITE sent through trunk `name` (408 when nothing answered),
    /// with the response's Retry-After in seconds: counted, and it may take the trunk down
    /// (see the module doc).
    pub fn report(&self, name: &str, code: u16, retry_after: Option<u32>, now: Instant) {
        let Some(t) = self.get(name) else { return };
        let mut s = t.lock();
        s.results[result_index(code)] += 1;
        if code == 408 {
            s.timeouts_in_a_row += 1;
            if s.timeouts_in_a_row >= TIMEOUTS_BEFORE_DOWN {
                s.timeouts_in_a_row = 0;
                tracing::warn!(trunk = %t.name, secs = TIMEOUT_DOWN.as_secs(), "trunk down: INVITEs timed out");
                s.down = Some((
                    now + TIMEOUT_DOWN,
                    format!("{TIMEOUTS_BEFORE_DOWN} INVITEs in a row timed out (408)"),
                ));
            }
            return;
        }
        s.timeouts_in_a_row = 0;
        if let (503, Some(secs)) = (code, retry_after) {
            let wait = Duration::from_secs(secs.into()).min(MAX_DOWN);
            tracing::warn!(trunk = %t.name, secs = wait.as_secs(), "trunk down: 503 with Retry-After");
            s.down = Some((
                now + wait,
                format!("503 Service Unavailable, Retry-After {secs}"),
            ));
        }
    }

    /// Records the state of trunk `name`'s registration.
    pub fn set_registration(&self, name: &str, state: RegistrationState) {
        if let Some(t) = self.get(name) {
            t.lock().registration = Some(state);
        }
    }

    /// Every trunk's state at `now`, in configuration order.
    pub fn status(&self, now: Instant) -> Vec<TrunkStatus> {
        let secs_until =
            |at: Instant| at.saturating_duration_since(now).as_secs_f64().ceil() as u64;
        self.trunks
            .iter()
            .map(|t| {
                let s = t.lock();
                let registration = match s.registration {
                    None => RegistrationStatus::Off,
                    Some(RegistrationState::Idle | RegistrationState::Registering) => {
                        RegistrationStatus::Registering
                    }
                    Some(RegistrationState::Registered { until }) => {
                        RegistrationStatus::Registered {
                            expires_in_secs: secs_until(until),
                        }
                    }
                    Some(RegistrationState::Failed { code, retry_at }) => {
                        RegistrationStatus::Failed {
                            code,
                            retry_in_secs: secs_until(retry_at),
                        }
                    }
                    Some(RegistrationState::Unregistering) => RegistrationStatus::Unregistering,
                    Some(RegistrationState::Unregistered) => RegistrationStatus::Unregistered,
                };
                let down = s.down.as_ref().filter(|(until, _)| now < *until);
                let r = s.results;
                TrunkStatus {
                    name: t.name.clone(),
                    proxy: t.proxy.clone(),
                    domain: t.domain.clone(),
                    registration,
                    up: down.is_none(),
                    down_for_secs: down.map(|(until, _)| secs_until(*until)),
                    down_reason: down.map(|(_, why)| why.clone()),
                    calls: t.in_use.load(Ordering::Acquire),
                    max_calls: t.max_calls,
                    attempts: s.attempts,
                    results: TrunkResults {
                        answered: r[0],
                        redirected: r[1],
                        failed_4xx: r[2],
                        failed_5xx: r[3],
                        failed_6xx: r[4],
                        timeout: r[5],
                    },
                }
            })
            .collect()
    }
}

/// Where the registrations of the trunks run from: our address and the endpoint's settings.
#[derive(Debug, Clone)]
pub struct LocalSide {
    /// Our address as written into Via and Contact.
    pub addr: SocketAddr,
    /// User-Agent header value.
    pub user_agent: String,
    /// RFC 3261 timers.
    pub timers: TimerConfig,
}

/// The registrations of every trunk with `register = true`, sans-IO: the transport task
/// offers them responses, fires their timers and sends what they poll; each change of state
/// is written into the [`Trunks`] registry.
pub struct TrunkRegistrations {
    trunks: Arc<Trunks>,
    regs: Vec<(String, Registration)>,
    ids: Ids,
}

impl TrunkRegistrations {
    /// One registration per registering trunk; identifiers drawn from `ids`.
    pub fn new(trunks: Arc<Trunks>, local: &LocalSide, mut ids: Ids) -> TrunkRegistrations {
        let regs = trunks
            .trunks
            .iter()
            .filter(|t| t.register)
            .map(|t| {
                let param = t.peer.transport.uri_param();
                let user = if t.username.is_empty() {
                    "switchboard"
                } else {
                    t.username.as_str()
                };
                let contact = format!("sip:{user}@{}{}", host_port(local.addr), param);
                let registrar = if t.outbound_proxy {
                    format!("sip:{}", t.domain)
                } else {
                    format!("sip:{}{param}", t.domain)
                };
                let cfg = RegistrationConfig {
                    registrar,
                    peer: t.peer,
                    aor: t.uri(user),
                    contact,
                    credentials: t.credentials.clone(),
                    expires: t.register_expires,
                    local_addr: local.addr,
                    user_agent: local.user_agent.clone(),
                    timers: local.timers,
                };
                let seed = ids.u64(..);
                (t.name.clone(), Registration::new(cfg, Ids::with_seed(seed)))
            })
            .collect();
        TrunkRegistrations { trunks, regs, ids }
    }

    /// No trunk registers.
    pub fn is_empty(&self) -> bool {
        self.regs.is_empty()
    }

    fn publish(&self) {
        for (name, r) in &self.regs {
            self.trunks.set_registration(name, r.state());
        }
    }

    /// Sends every first REGISTER.
    pub fn start(&mut self, now: Instant) {
        for (_, r) in &mut self.regs {
            r.start(now);
        }
        self.publish();
    }

    /// Removes every binding (shutdown).
    pub fn unregister_all(&mut self, now: Instant) {
        for (_, r) in &mut self.regs {
            r.unregister(now);
        }
        self.publish();
    }

    /// Some binding is still being removed.
    pub fn unregistering(&self) -> bool {
        self.regs
            .iter()
            .any(|(_, r)| r.state() == RegistrationState::Unregistering)
    }

    /// Offers one message from `peer`: true when it answered one of our REGISTERs (then it
    /// is consumed). Requests are not looked at.
    pub fn handle_message(&mut self, now: Instant, peer: Peer, bytes: &[u8]) -> bool {
        // Cheap checks first: most traffic is requests and answers to calls.
        if self.regs.is_empty()
            || !bytes.starts_with(b"SIP/2.0 ")
            || memchr::memmem::find(bytes, b"REGISTER").is_none()
        {
            return false;
        }
        let Inbound::Response(resp) =
            classify_with(bytes, peer.transport.is_reliable(), &mut self.ids)
        else {
            return false;
        };
        let taken = self
            .regs
            .iter_mut()
            .any(|(_, r)| r.handle_response(now, &resp));
        if taken {
            self.publish();
        }
        taken
    }

    /// When [`TrunkRegistrations::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.regs.iter().filter_map(|(_, r)| r.poll_timeout()).min()
    }

    /// Fires what is due: retransmissions, refreshes, retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (_, r) in &mut self.regs {
            if r.poll_timeout().is_some_and(|at| at <= now) {
                r.handle_timeout(now);
            }
        }
        self.publish();
    }

    /// The next REGISTER (or retransmission) to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.regs.iter_mut().find_map(|(_, r)| r.poll_transmit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, proxy: &str) -> TrunkConfig {
        TrunkConfig {
            name: name.into(),
            proxy: proxy.into(),
            domain: None,
            username: String::new(),
            password: None,
            ha1: None,
            register: false,
            register_expires: 600,
            caller_id: None,
            max_calls: 0,
        }
    }

    fn carrier() -> TrunkConfig {
        TrunkConfig {
            domain: Some("sip.example.net".into()),
            username: "acct".into(),
            password: Some("secret".into()),
            caller_id: Some("+15551230000".into()),
            max_calls: 2,
            ..cfg("carrier", "sip:203.0.113.5:5060;transport=udp")
        }
    }

    #[test]
    fn route_fills_the_request_uri_from_route_set_and_credentials() {
        let trunks = Trunks::new(&[carrier()]).unwrap();
        let now = Instant::now();
        let r = trunks.route("carrier", "+4930123456", now).unwrap();
        assert_eq!(r.trunk, "carrier");
        assert_eq!(r.target, "sip:+4930123456@sip.example.net");
        assert_eq!(r.to.uri, "sip:+4930123456@sip.example.net");
        assert_eq!(r.from.uri, "sip:+15551230000@sip.example.net");
        assert_eq!(r.route, ["<sip:203.0.113.5;lr>"]);
        assert_eq!(r.peer.addr, "203.0.113.5:5060".parse().unwrap());
        assert_eq!(r.peer.transport, Transport::Udp);
        let c = r.credentials.clone().unwrap();
        assert_eq!(c.username, "acct");
        assert!(c.secret == Secret::Password("secret".into()));
        let out = r.outgoing(Some(b"v=0\r\n".to_vec()), Vec::new());
        assert_eq!(out.target, r.target);
        assert_eq!(out.route, r.route);
        assert!(out.credentials.is_some());
    }

    #[test]
    fn a_tls_trunk_routes_with_transport_tls_and_is_checked_by_its_domain() {
        let tls = cfg("tls", "sip:127.0.0.1:5061;transport=tls");
        let mut named = cfg("named", "sips:127.0.0.2");
        named.domain = Some("sip.example.net".into());
        let trunks = Trunks::new(&[tls, named]).unwrap();
        let now = Instant::now();
        let r = trunks.route("tls", "100", now).unwrap();
        assert_eq!(r.target, "sip:100@127.0.0.1:5061;transport=tls");
        assert_eq!(r.peer.transport, Transport::Tls);
        let n = trunks.route("named", "100", now).unwrap();
        assert_eq!(n.peer.addr, "127.0.0.2:5061".parse().unwrap());
        assert_eq!(n.route, ["<sip:127.0.0.2:5061;transport=tls;lr>"]);
        assert_eq!(
            trunks.tls_names(),
            [(n.peer.addr, "sip.example.net".to_string())]
        );
        // sips: with another transport contradicts itself.
        assert!(Trunks::new(&[cfg("x", "sips:127.0.0.1;transport=udp")]).is_err());
    }

    #[test]
    fn route_without_a_domain_goes_to_the_proxy_itself() {
        let mut c = cfg("tcp", "sip:127.0.0.1:5070;transport=tcp");
        c.username = "u".into();
        c.ha1 = Some("0123456789ABCDEF0123456789abcdef".into());
        let trunks = Trunks::new(&[c, cfg("plain", "sip:[::1]")]).unwrap();
        let now = Instant::now();
        let r = trunks.route("tcp", "100#", now).unwrap();
        assert_eq!(r.target, "sip:100%23@127.0.0.1:5070;transport=tcp");
        assert_eq!(r.to.uri, "sip:100%23@127.0.0.1:5070");
        assert_eq!(
            r.from.uri, "sip:u@127.0.0.1:5070",
            "caller id defaults to the user"
        );
        assert!(r.route.is_empty());
        assert_eq!(r.peer.transport, Transport::Tcp);
        assert!(matches!(
            r.credentials.unwrap().secret,
            Secret::Ha1 { ref hex, .. } if hex == "0123456789abcdef0123456789abcdef"
        ));
        let p = trunks.route("plain", "1", now).unwrap();
        assert_eq!(p.target, "sip:1@[::1]");
        assert_eq!(p.from.uri, "sip:anonymous@[::1]");
        assert!(p.credentials.is_none());
        assert_eq!(
            trunks.route("nope", "1", now).unwrap_err(),
            TrunkUnavailable::Unknown("nope".into())
        );
        for bad in ["", "1 2", "a@b", "1;x=y", "<1>"] {
            let e = trunks.route("plain", bad, now).unwrap_err();
            assert!(matches!(e, TrunkUnavailable::InvalidNumber(_)), "{bad}");
            assert!(!e.moves_on());
        }
    }

    #[test]
    fn call_cap_at_the_edge_and_a_dropped_slot_frees_one() {
        let trunks = Trunks::new(&[carrier()]).unwrap();
        let now = Instant::now();
        let a = trunks.route("carrier", "1", now).unwrap();
        let b = trunks.route("carrier", "2", now).unwrap();
        assert_eq!(trunks.status(now)[0].calls, 2);
        let e = trunks.route("carrier", "3", now).unwrap_err();
        assert_eq!(
            e,
            TrunkUnavailable::AtCapacity {
                trunk: "carrier".into(),
                max: 2
            }
        );
        assert!(e.moves_on());
        drop(a);
        assert_eq!(trunks.status(now)[0].calls, 1);
        let c = trunks.route("carrier", "3", now).unwrap();
        assert!(trunks.route("carrier", "4", now).is_err());
        drop((b, c));
        let s = &trunks.status(now)[0];
        assert_eq!((s.calls, s.attempts), (0, 3));
    }

    #[test]
    fn no_cap_when_max_calls_is_zero() {
        let trunks = Trunks::new(&[cfg("open", "sip:192.0.2.1")]).unwrap();
        let now = Instant::now();
        let held: Vec<_> = (0..100)
            .map(|_| trunks.route("open", "1", now).unwrap())
            .collect();
        assert_eq!(trunks.status(now)[0].calls, 100);
        drop(held);
        assert_eq!(trunks.status(now)[0].calls, 0);
    }

    #[test]
    fn a_503_with_retry_after_takes_the_trunk_down_for_exactly_that_long() {
        let trunks = Trunks::new(&[carrier()]).unwrap();
        let t0 = Instant::now();
        trunks.report("carrier", 503, Some(120), t0);
        let just_before = t0 + Duration::from_secs(120) - Duration::from_millis(1);
        match trunks.route("carrier", "1", just_before).unwrap_err() {
            TrunkUnavailable::Down { until, reason, .. } => {
                assert_eq!(until, t0 + Duration::from_secs(120));
                assert!(reason.contains("Retry-After 120"), "{reason}");
            }
            e => panic!("{e:?}"),
        }
        let s = &trunks.status(t0)[0];
        assert!(!s.up);
        assert_eq!(s.down_for_secs, Some(120));
        assert_eq!(s.results.failed_5xx, 1);
        let at = t0 + Duration::from_secs(120);
        assert!(trunks.route("carrier", "1", at).is_ok());
        assert!(trunks.status(at)[0].up);
        assert_eq!(trunks.status(at)[0].down_for_secs, None);
    }

    #[test]
    fn other_failures_leave_the_trunk_up_but_timeouts_in_a_row_take_it_down() {
        let trunks = Trunks::new(&[carrier()]).unwrap();
        let t0 = Instant::now();
        for code in [503, 500, 486, 404, 603, 200] {
            trunks.report("carrier", code, None, t0);
        }
        assert!(trunks.status(t0)[0].up, "503 without Retry-After");
        // A far-fetched Retry-After is capped.
        trunks.report("carrier", 503, Some(u32::MAX), t0);
        assert_eq!(trunks.status(t0)[0].down_for_secs, Some(MAX_DOWN.as_secs()));
        let t1 = t0 + MAX_DOWN;
        trunks.report("carrier", 408, None, t1);
        trunks.report("carrier", 486, None, t1);
        trunks.report("carrier", 408, None, t1);
        assert!(trunks.status(t1)[0].up, "408s with an answer between them");
        trunks.report("carrier", 408, None, t1);
        let s = &trunks.status(t1)[0];
        assert!(!s.up);
        assert_eq!(s.down_for_secs, Some(TIMEOUT_DOWN.as_secs()));
        assert!(trunks.status(t1 + TIMEOUT_DOWN)[0].up);
        let r = &s.results;
        assert_eq!(
            (
                r.answered,
                r.failed_4xx,
                r.failed_5xx,
                r.failed_6xx,
                r.timeout
            ),
            (1, 3, 3, 1, 3)
        );
    }

    #[test]
    fn moves_on_after_trunk_failures_and_stops_at_the_callees_answers() {
        for code in [408, 500, 502, 503, 504, 580, 599] {
            assert!(moves_on(code), "{code}");
        }
        for code in [
            200, 302, 400, 401, 403, 404, 407, 480, 484, 486, 487, 488, 499, 600, 603, 604, 606,
            699,
        ] {
            assert!(!moves_on(code), "{code}");
        }
    }

    #[test]
    fn configuration_mistakes() {
        let bad = |c: TrunkConfig| Trunks::new(&[c]).unwrap_err().to_string();
        assert!(bad(cfg("a", "sip:carrier.example.net")).contains("not resolved"));
        assert!(bad(cfg("a", "sip:user@192.0.2.1")).contains("proxy"));
        assert!(bad(cfg("a b", "sip:192.0.2.1")).contains("name"));
        let mut both = carrier();
        both.ha1 = Some("0123456789abcdef0123456789abcdef".into());
        assert!(bad(both).contains("not both"));
        let mut dom = carrier();
        dom.domain = Some("x>y".into());
        assert!(bad(dom).contains("domain"));
        assert!(Trunks::new(&[cfg("a", "sip:192.0.2.1"), cfg("a", "sip:192.0.2.2")]).is_err());
    }

    #[test]
    fn registrations_publish_their_state_into_the_registry() {
        let mut c = carrier();
        c.register = true;
        c.register_expires = 60;
        let trunks = Arc::new(Trunks::new(&[c, cfg("quiet", "sip:192.0.2.1")]).unwrap());
        let local = LocalSide {
            addr: "192.0.2.9:5060".parse().unwrap(),
            user_agent: "t".into(),
            timers: TimerConfig::default(),
        };
        let mut regs = TrunkRegistrations::new(trunks.clone(), &local, Ids::with_seed(3));
        let t0 = Instant::now();
        assert_eq!(trunks.status(t0)[1].registration, RegistrationStatus::Off);
        regs.start(t0);
        let sent = regs.poll_transmit().unwrap();
        assert!(regs.poll_transmit().is_none());
        let text = String::from_utf8(sent.bytes).unwrap();
        assert!(
            text.starts_with("REGISTER sip:sip.example.net SIP/2.0\r\n"),
            "{text}"
        );
        assert!(text.contains("<sip:acct@sip.example.net>"), "{text}");
        assert!(text.contains("Contact: <sip:acct@192.0.2.9>"), "{text}");
        assert_eq!(sent.peer.addr, "203.0.113.5:5060".parse().unwrap());
        assert_eq!(
            trunks.status(t0)[0].registration,
            RegistrationStatus::Registering
        );
        // The registrar's 503 with Retry-After 2.
        let via = text.lines().find(|l| l.starts_with("Via:")).unwrap();
        let rest: String = text
            .lines()
            .filter(|l| {
                ["From:", "To:", "Call-ID:", "CSeq:"]
                    .iter()
                    .any(|h| l.starts_with(h))
            })
            .map(|l| format!("{l}\r\n"))
            .collect();
        let answer = |code: &str, extra: &str| {
            format!("SIP/2.0 {code}\r\n{via}\r\n{rest}{extra}Content-Length: 0\r\n\r\n")
        };
        let from_proxy = sent.peer;
        let t1 = t0 + Duration::from_millis(50);
        assert!(!regs.handle_message(t1, from_proxy, b"OPTIONS sip:x SIP/2.0\r\n\r\n"));
        assert!(regs.handle_message(
            t1,
            from_proxy,
            answer("503 Service Unavailable", "Retry-After: 2\r\n").as_bytes()
        ));
        assert_eq!(
            trunks.status(t1)[0].registration,
            RegistrationStatus::Failed {
                code: 503,
                retry_in_secs: 2
            }
        );
        assert_eq!(regs.poll_timeout(), Some(t1 + Duration::from_secs(2)));
        let t2 = t1 + Duration::from_secs(2);
        regs.handle_timeout(t2);
        let again = String::from_utf8(regs.poll_transmit().unwrap().bytes).unwrap();
        assert!(again.starts_with("REGISTER "));
        assert_eq!(
            trunks.status(t2)[0].registration,
            RegistrationStatus::Registering
        );
    }
}
