//! The guard in front of the SIP endpoint: decides for each inbound message whether it is
//! handled ([`Verdict::Pass`]), answered with a refusal ([`Verdict::Refuse`]) or silently
//! dropped ([`Verdict::Drop`]), and keeps the counters of those decisions.
//!
//! In order: the access lists (every message, responses and in-dialog requests too);
//! scanner User-Agents (dropped unanswered: an answer only tells a scanner someone is here);
//! then, for requests outside a dialog only, the drain, a source's escalation block, its
//! token bucket for the method, and for INVITE the server-wide caps. Requests inside a
//! dialog (a To tag), ACK and CANCEL are never limited, so a flood cannot keep callers from
//! hanging up.
//!
//! Sans-IO: `now` comes in with every call. Per-source state lives in a fixed table of
//! [`GuardConfig::sources`] entries, set-associative with the least recently seen entry of
//! a set evicted, so a flood from millions of spoofed addresses costs no more memory than a
//! quiet day; the table is hashed with a per-process random key so no one can aim
//! collisions at a victim's entry. The pass path does not allocate.

pub mod acl;
pub mod peek;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub use acl::{Acl, Cidr, CidrError};
pub use peek::{peek, Kind, Peek};

use super::dialog::Transport;

/// Entries per set of the source table.
const WAYS: usize = 4;

/// A token bucket's setting: `rate` requests per second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second; 0 means no limit.
    pub per_sec: f64,
    /// Requests allowed back to back (at least 1).
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        per_sec: 0.0,
        burst: 1,
    };
}

/// What a source the access lists shut out gets (`acl_action` in `[sip]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum AclAction {
    /// 403 Forbidden.
    #[default]
    #[serde(rename = "403")]
    Forbidden,
    /// Nothing.
    #[serde(rename = "drop")]
    Drop,
}

/// Everything the guard enforces.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Allow and deny lists.
    pub acl: Acl,
    /// What a source the lists shut out gets.
    pub acl_action: AclAction,
    /// User-Agent substrings (matched ignoring ASCII case) whose requests are dropped.
    pub scanner_agents: Vec<String>,
    /// Per source: new INVITEs.
    pub invite: Rate,
    /// Per source: REGISTERs.
    pub register: Rate,
    /// Per source: OPTIONS and every other request outside a dialog.
    pub options: Rate,
    /// Refusals by the per-source buckets within `escalate_window` that get the source
    /// blocked (0: never).
    pub escalate_after: u32,
    /// The window refusals are counted in.
    pub escalate_window: Duration,
    /// How long a blocked source's requests outside a dialog are dropped.
    pub block: Duration,
    /// Concurrent calls (0: no cap).
    pub max_calls: usize,
    /// New calls per second, server-wide (0: no cap).
    pub max_cps: u32,
    /// INVITE server transactions without a final answer (0: no cap).
    pub max_pending_invites: usize,
    /// Open TCP connections from one address (0: no cap).
    pub max_tcp_per_source: u32,
    /// Entries of the per-source table.
    pub sources: usize,
    /// Proxies whose word on the caller's address is taken: for their requests the caller's
    /// address is what everything above is applied to (see [`crate::sip::proxy`]).
    pub trusted_proxies: crate::sip::proxy::TrustedProxies,
}

impl Default for GuardConfig {
    /// Nothing limited, nothing refused.
    fn default() -> Self {
        GuardConfig {
            acl: Acl::default(),
            acl_action: AclAction::Forbidden,
            scanner_agents: Vec::new(),
            invite: Rate::UNLIMITED,
            register: Rate::UNLIMITED,
            options: Rate::UNLIMITED,
            escalate_after: 0,
            escalate_window: Duration::from_secs(10),
            block: Duration::from_secs(60),
            max_calls: 0,
            max_cps: 0,
            max_pending_invites: 0,
            max_tcp_per_source: 0,
            sources: 4096,
            trusted_proxies: crate::sip::proxy::TrustedProxies::default(),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The access lists (403).
    Acl,
    /// The source's INVITE bucket is empty.
    InviteRate,
    /// The source's REGISTER bucket is empty.
    RegisterRate,
    /// The source's OPTIONS bucket is empty.
    OptionsRate,
    /// `max_calls` reached.
    MaxCalls,
    /// `max_cps` reached.
    MaxCps,
    /// `max_pending_invites` reached.
    MaxPending,
    /// The server is draining.
    Draining,
}

impl RefuseReason {
    /// Every reason, in counter order.
    pub const ALL: [RefuseReason; 8] = [
        RefuseReason::Acl,
        RefuseReason::InviteRate,
        RefuseReason::RegisterRate,
        RefuseReason::OptionsRate,
        RefuseReason::MaxCalls,
        RefuseReason::MaxCps,
        RefuseReason::MaxPending,
        RefuseReason::Draining,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            RefuseReason::Acl => "acl",
            RefuseReason::InviteRate => "invite_rate",
            RefuseReason::RegisterRate => "register_rate",
            RefuseReason::OptionsRate => "options_rate",
            RefuseReason::MaxCalls => "max_calls",
            RefuseReason::MaxCps => "max_cps",
            RefuseReason::MaxPending => "max_pending_invites",
            RefuseReason::Draining => "draining",
        }
    }
}

/// Why a message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The access lists, with `acl_action = "drop"`.
    Acl,
    /// A scanner's User-Agent.
    Scanner,
    /// The source kept exceeding its rate and is blocked for a while.
    Blocked,
    /// A TCP connection beyond `max_tcp_per_source`.
    TcpConnections,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 4] = [
        DropReason::Acl,
        DropReason::Scanner,
        DropReason::Blocked,
        DropReason::TcpConnections,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Acl => "acl",
            DropReason::Scanner => "scanner",
            DropReason::Blocked => "blocked",
            DropReason::TcpConnections => "tcp_connections",
        }
    }
}

/// The guard's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the message to the endpoint.
    Pass,
    /// Answer with `code` (and `Retry-After: retry_after` seconds when given), nothing more.
    Refuse {
        /// 403 or 503.
        code: u16,
        /// Seconds, for a `Retry-After` header.
        retry_after: Option<u32>,
        /// Why.
        reason: RefuseReason,
    },
    /// Send nothing.
    Drop(DropReason),
}

/// A message as the guard sees it.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// Source address.
    pub source: IpAddr,
    /// How it came.
    pub transport: Transport,
    /// What [`peek`] read from it.
    pub peek: Peek<'a>,
}

/// The server's load, read only when an INVITE reaches the server-wide caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Live calls.
    pub calls: usize,
    /// INVITEs without a final answer.
    pub pending_invites: usize,
}

/// The guard's counters so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Refusals, by [`RefuseReason::ALL`] order.
    pub refused: [u64; RefuseReason::ALL.len()],
    /// Drops, by [`DropReason::ALL`] order.
    pub dropped: [u64; DropReason::ALL.len()],
    /// Sources blocked after exceeding their rate again and again.
    pub escalations: u64,
}

/// A GCRA token bucket: the theoretical arrival time of the next request, in ns since the
/// guard's epoch. A request passes when it is no more than `(burst - 1)` intervals early.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    interval_ns: u64,
    tolerance_ns: u64,
}

impl Bucket {
    fn new(rate: Rate) -> Option<Bucket> {
        if rate.per_sec <= 0.0 || !rate.per_sec.is_finite() {
            return None;
        }
        let interval_ns = (1e9 / rate.per_sec).round().max(1.0) as u64;
        Some(Bucket {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(rate.burst.max(1) - 1)),
        })
    }

    /// Takes a token at `now` (ns): `Ok` with the new arrival time, or how long until one.
    fn take(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let tat = tat.max(now);
        let early = tat - now;
        if early > self.tolerance_ns {
            Err(early - self.tolerance_ns)
        } else {
            Ok(tat + self.interval_ns)
        }
    }
}

/// One source's state.
#[derive(Debug, Clone, Copy)]
struct Source {
    key: u128,
    seen: u64,
    /// Arrival times of the INVITE, REGISTER and OPTIONS buckets.
    tat: [u64; 3],
    strikes: u32,
    strikes_since: u64,
    blocked_until: u64,
}

/// The guard: configuration, per-source table, server-wide bucket, counters.
#[derive(Debug)]
pub struct Guard {
    cfg: GuardConfig,
    /// Scanner User-Agent substrings.
    scanners: peek::Patterns,
    buckets: [Option<Bucket>; 3],
    cps: Option<Bucket>,
    cps_tat: u64,
    epoch: Instant,
    table: Vec<Option<Source>>,
    set_mask: usize,
    hasher: RandomState,
    draining: bool,
    stats: GuardStats,
}

impl Guard {
    /// A guard whose clock starts at `now`.
    pub fn new(cfg: GuardConfig, now: Instant) -> Guard {
        let sets = cfg.sources.div_ceil(WAYS).max(1).next_power_of_two();
        let cps = (cfg.max_cps > 0)
            .then(|| {
                Bucket::new(Rate {
                    per_sec: f64::from(cfg.max_cps),
                    burst: cfg.max_cps,
                })
            })
            .flatten();
        Guard {
            scanners: peek::Patterns::new(&cfg.scanner_agents),
            buckets: [
                Bucket::new(cfg.invite),
                Bucket::new(cfg.register),
                Bucket::new(cfg.options),
            ],
            cps,
            cps_tat: 0,
            epoch: now,
            table: vec![None; sets * WAYS],
            set_mask: sets - 1,
            hasher: RandomState::new(),
            draining: false,
            stats: GuardStats::default(),
            cfg,
        }
    }

    /// From now on new INVITEs and OPTIONS get 503, so a dispatcher in front moves on.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Whether the guard is draining.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// The counters so far.
    pub fn stats(&self) -> &GuardStats {
        &self.stats
    }

    /// The settings.
    pub fn config(&self) -> &GuardConfig {
        &self.cfg
    }

    /// Sources in the table now.
    pub fn tracked_sources(&self) -> usize {
        self.table.iter().filter(|s| s.is_some()).count()
    }

    fn ns(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Decides what happens to `msg` at `now`; `load` is asked only for an INVITE that
    /// reaches the server-wide caps.
    pub fn check(
        &mut self,
        now: Instant,
        msg: &Inbound<'_>,
        load: impl FnOnce() -> Load,
    ) -> Verdict {
        let key = acl::canonical(msg.source);
        if !self.cfg.acl.permits_key(key) {
            return self.acl_verdict();
        }
        let (kind, user_agent, in_dialog) = match msg.peek {
            Peek::KeepAlive | Peek::Response => return Verdict::Pass,
            Peek::Request {
                kind,
                user_agent,
                in_dialog,
            } => (kind, user_agent, in_dialog),
        };
        if user_agent.is_some_and(|ua| self.scanners.any_in(ua)) {
            return self.dropped(DropReason::Scanner);
        }
        if in_dialog || matches!(kind, Kind::Ack | Kind::Cancel) {
            return Verdict::Pass;
        }
        if self.draining && matches!(kind, Kind::Invite | Kind::Options) {
            return self.refused(503, None, RefuseReason::Draining);
        }
        let now_ns = self.ns(now);
        let (which, reason) = match kind {
            Kind::Invite => (0, RefuseReason::InviteRate),
            Kind::Register => (1, RefuseReason::RegisterRate),
            _ => (2, RefuseReason::OptionsRate),
        };
        if let Some(v) = self.per_source(now_ns, key, msg, which, reason) {
            return v;
        }
        if kind == Kind::Invite {
            return self.server_caps(now_ns, load);
        }
        Verdict::Pass
    }

    fn per_source(
        &mut self,
        now: u64,
        key: u128,
        msg: &Inbound<'_>,
        which: usize,
        reason: RefuseReason,
    ) -> Option<Verdict> {
        // A method without a limit keeps no per-source state.
        let bucket = self.buckets[which]?;
        let slot = self.slot(key, now);
        let src = self.table[slot].as_mut()?;
        if src.blocked_until > now {
            return Some(self.dropped(DropReason::Blocked));
        }
        match bucket.take(src.tat[which], now) {
            Ok(tat) => {
                src.tat[which] = tat;
                None
            }
            Err(wait_ns) => {
                self.strike(now, slot, msg.source, reason.label());
                Some(self.refused(503, Some(retry_secs(wait_ns)), reason))
            }
        }
    }

    /// Counts a strike against the source in `slot`; `escalate_after` of them within the
    /// window get it blocked.
    fn strike(&mut self, now: u64, slot: usize, source: IpAddr, limit: &str) {
        let window = duration_ns(self.cfg.escalate_window);
        let (escalate, block) = (self.cfg.escalate_after, duration_ns(self.cfg.block));
        let Some(src) = self.table[slot].as_mut() else {
            return;
        };
        if now.saturating_sub(src.strikes_since) >= window || src.strikes == 0 {
            src.strikes = 0;
            src.strikes_since = now;
        }
        src.strikes += 1;
        if escalate > 0 && src.strikes >= escalate {
            src.strikes = 0;
            src.blocked_until = now.saturating_add(block);
            self.stats.escalations += 1;
            tracing::warn!(
                %source,
                limit,
                block_secs = self.cfg.block.as_secs(),
                "a source kept exceeding its limits: dropping its requests for a while"
            );
        }
    }

    /// Counts a failed digest authentication of `source` as a strike, like a rate refusal:
    /// a source that keeps failing is blocked too (when INVITEs have a rate limit, since
    /// the block is enforced where the rates are).
    pub fn count_auth_failure(&mut self, now: Instant, source: IpAddr) {
        let now = self.ns(now);
        let slot = self.slot(acl::canonical(source), now);
        self.strike(now, slot, source, "auth");
    }

    fn server_caps(&mut self, now: u64, load: impl FnOnce() -> Load) -> Verdict {
        if self.cfg.max_calls > 0 || self.cfg.max_pending_invites > 0 {
            let load = load();
            if self.cfg.max_calls > 0 && load.calls >= self.cfg.max_calls {
                return self.refused(503, Some(5), RefuseReason::MaxCalls);
            }
            if self.cfg.max_pending_invites > 0
                && load.pending_invites >= self.cfg.max_pending_invites
            {
                return self.refused(503, Some(1), RefuseReason::MaxPending);
            }
        }
        if let Some(cps) = self.cps {
            match cps.take(self.cps_tat, now) {
                Ok(tat) => self.cps_tat = tat,
                Err(wait) => {
                    return self.refused(503, Some(retry_secs(wait)), RefuseReason::MaxCps)
                }
            }
        }
        Verdict::Pass
    }

    /// The table slot for `key`: its entry, or a new one in place of the set's least
    /// recently seen.
    fn slot(&mut self, key: u128, now: u64) -> usize {
        let set = (self.hasher.hash_one(key) as usize) & self.set_mask;
        let base = set * WAYS;
        let mut empty = None;
        let mut victim = base;
        let mut oldest = u64::MAX;
        for i in base..base + WAYS {
            match &mut self.table[i] {
                Some(s) if s.key == key => {
                    s.seen = now;
                    return i;
                }
                Some(s) => {
                    if s.seen < oldest {
                        oldest = s.seen;
                        victim = i;
                    }
                }
                None => {
                    empty.get_or_insert(i);
                }
            }
        }
        let victim = empty.unwrap_or(victim);
        self.table[victim] = Some(Source {
            key,
            seen: now,
            tat: [0; 3],
            strikes: 0,
            strikes_since: now,
            blocked_until: 0,
        });
        victim
    }

    fn acl_verdict(&mut self) -> Verdict {
        match self.cfg.acl_action {
            AclAction::Forbidden => self.refused(403, None, RefuseReason::Acl),
            AclAction::Drop => self.dropped(DropReason::Acl),
        }
    }

    fn refused(&mut self, code: u16, retry_after: Option<u32>, reason: RefuseReason) -> Verdict {
        self.stats.refused[reason as usize] += 1;
        Verdict::Refuse {
            code,
            retry_after,
            reason,
        }
    }

    fn dropped(&mut self, reason: DropReason) -> Verdict {
        self.stats.dropped[reason as usize] += 1;
        Verdict::Drop(reason)
    }

    /// Counts a TCP connection closed for `reason` at accept time (the caller closed it).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.stats.dropped[reason as usize] += 1;
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Whole seconds for Retry-After, rounded up, at least 1.
fn retry_secs(wait_ns: u64) -> u32 {
    u32::try_from(wait_ns.div_ceil(1_000_000_000).max(1)).unwrap_or(u32::MAX)
}

/// TCP connections open per source address. Entries exist only while a connection does, so
/// its size follows the open connections, which the kernel bounds.
#[derive(Debug, Default)]
pub struct ConnLimit {
    max_per_source: u32,
    acl: Acl,
    open: HashMap<u128, u32>,
}

impl ConnLimit {
    /// At most `max_per_source` connections per address (0: no cap), none from addresses
    /// `acl` shuts out.
    pub fn new(max_per_source: u32, acl: Acl) -> ConnLimit {
        ConnLimit {
            max_per_source,
            acl,
            open: HashMap::new(),
        }
    }

    /// A connection from `ip` was accepted: `Ok` to keep it (counted until
    /// [`ConnLimit::close`]), or why it must be closed at once.
    pub fn open(&mut self, ip: IpAddr) -> Result<(), DropReason> {
        let key = acl::canonical(ip);
        if !self.acl.permits_key(key) {
            return Err(DropReason::Acl);
        }
        let n = self.open.entry(key).or_insert(0);
        if self.max_per_source > 0 && *n >= self.max_per_source {
            if *n == 0 {
                self.open.remove(&key);
            }
            return Err(DropReason::TcpConnections);
        }
        *n += 1;
        Ok(())
    }

    /// A connection [`ConnLimit::open`] kept has closed.
    pub fn close(&mut self, ip: IpAddr) {
        let key = acl::canonical(ip);
        if let Some(n) = self.open.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open.remove(&key);
            }
        }
    }

    /// Open connections from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        self.open.get(&acl::canonical(ip)).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
