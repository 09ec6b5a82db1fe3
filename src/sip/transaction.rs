//! RFC 3261 §17 transaction state machines (with the RFC 6026 Accepted states), sans-IO.
//!
//! Each machine stores the bytes it may have to send again; the caller sends the first copy.
//! Time comes in as `now`; the next deadline goes out through `poll_timeout`, and
//! `handle_timeout` yields what to retransmit and whether the transaction gave up.

use std::time::{Duration, Instant};

/// The RFC 3261 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (default 4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (default 5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64·T1: the transaction timeout (Timers B, F, H, J, L, M).
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// The timers of RFC 3261 §17 and RFC 6026, named as in the specs, plus the UAS core's
/// 2xx retransmission (§13.3.1.4), which has no letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Timer {
    /// INVITE client: request retransmit.
    A,
    /// INVITE client: transaction timeout.
    B,
    /// INVITE client: wait for response retransmits after a non-2xx final.
    D,
    /// Non-INVITE client: request retransmit.
    E,
    /// Non-INVITE client: transaction timeout.
    F,
    /// INVITE server: non-2xx final response retransmit.
    G,
    /// INVITE server: wait for ACK.
    H,
    /// INVITE server: wait for ACK retransmits.
    I,
    /// Non-INVITE server: wait for request retransmits.
    J,
    /// Non-INVITE client: wait for response retransmits.
    K,
    /// INVITE server (RFC 6026): linger in Accepted.
    L,
    /// INVITE client (RFC 6026): linger in Accepted.
    M,
    /// UAS core: 2xx retransmit until ACK (RFC 3261 §13.3.1.4).
    Retransmit2xx,
}

/// Timers a transaction has armed at once: no state of RFC 3261 §17 or RFC 6026 runs more
/// than two (a retransmission and a timeout).
const TIMER_SLOTS: usize = 3;

/// A transaction's armed timers; the next deadline is the earliest. A server keeps every
/// finished transaction for up to 64·T1 (32 s) to absorb retransmissions, so this stays
/// small: a slot per timer armed, not one per timer the RFC names.
#[derive(Debug, Clone, Default)]
pub struct TimerTable([Option<(Timer, Instant)>; TIMER_SLOTS]);

impl TimerTable {
    /// Arms `t` to fire at `at`.
    pub fn set(&mut self, t: Timer, at: Instant) {
        let slot = self
            .0
            .iter()
            .position(|s| s.is_some_and(|(x, _)| x == t))
            .or_else(|| self.0.iter().position(Option::is_none))
            .unwrap_or_else(|| {
                // Unreachable by construction (see TIMER_SLOTS); should it ever happen,
                // the latest deadline gives way, never the earliest.
                debug_assert!(false, "more than {TIMER_SLOTS} timers armed");
                (0..TIMER_SLOTS)
                    .max_by_key(|&i| self.0[i].map(|(_, d)| d))
                    .unwrap_or(0)
            });
        self.0[slot] = Some((t, at));
    }
    /// Disarms `t`.
    pub fn stop(&mut self, t: Timer) {
        for s in &mut self.0 {
            if s.is_some_and(|(x, _)| x == t) {
                *s = None;
            }
        }
    }
    /// Disarms every timer.
    pub fn clear(&mut self) {
        self.0 = [None; TIMER_SLOTS];
    }
    /// When `t` fires, if armed.
    pub fn get(&self, t: Timer) -> Option<Instant> {
        self.0
            .iter()
            .flatten()
            .find(|(x, _)| *x == t)
            .map(|(_, d)| *d)
    }
    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().map(|(_, d)| *d).min()
    }
    /// Disarms and returns the earliest timer due at `now`, if any; of timers due at the
    /// same instant, the one named first in [`Timer`].
    pub fn pop_expired(&mut self, now: Instant) -> Option<Timer> {
        let (i, (t, _)) = self
            .0
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.filter(|(_, d)| *d <= now).map(|s| (i, s)))
            .min_by_key(|(_, (t, d))| (*d, *t))?;
        self.0[i] = None;
        Some(t)
    }
}

/// What a transaction asks of its owner when a timer fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOutput {
    /// Send these bytes again.
    Retransmit(Vec<u8>),
    /// The transaction gave up: no response (client) or no ACK (server) within 64·T1.
    TimedOut,
}

/// Doubling retransmit interval, optionally capped (T2), started at T1.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    interval: Duration,
    cap: Option<Duration>,
}

impl Backoff {
    fn new(t1: Duration, cap: Option<Duration>) -> Self {
        Backoff { interval: t1, cap }
    }
    /// The interval to wait now, then doubles for the next time.
    fn next(&mut self) -> Duration {
        let now = self.interval;
        let doubled = self.interval * 2;
        self.interval = self.cap.map_or(doubled, |c| doubled.min(c));
        now
    }
}

/// States of an INVITE server transaction (RFC 3261 Figure 7, RFC 6026 Figure 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerState {
    /// Waiting for the final response.
    Proceeding,
    /// Non-2xx final sent, waiting for ACK.
    Completed,
    /// ACK received, absorbing ACK retransmits.
    Confirmed,
    /// 2xx sent; the core retransmits it until the dialog's ACK.
    Accepted,
    /// Done; may be removed.
    Terminated,
}

/// An INVITE server transaction together with the UAS core's 2xx retransmission.
#[derive(Debug, Clone)]
pub struct InviteServerTx {
    state: InviteServerState,
    cfg: TimerConfig,
    reliable: bool,
    timers: TimerTable,
    last_response: Option<Vec<u8>>,
    backoff: Backoff,
    acked: bool,
}

impl InviteServerTx {
    /// A transaction for an INVITE just received; the caller sends 100 Trying through `respond`.
    pub fn new(cfg: TimerConfig, reliable: bool) -> Self {
        InviteServerTx {
            state: InviteServerState::Proceeding,
            cfg,
            reliable,
            timers: TimerTable::default(),
            last_response: None,
            backoff: Backoff::new(cfg.t1, Some(cfg.t2)),
            acked: false,
        }
    }

    /// Current state.
    pub fn state(&self) -> InviteServerState {
        self.state
    }

    /// Records a response the caller is sending now, and moves the state machine.
    pub fn respond(&mut self, now: Instant, code: u16, bytes: Vec<u8>) {
        if self.state != InviteServerState::Proceeding {
            return;
        }
        self.last_response = Some(bytes);
        match code {
            100..=199 => {}
            200..=299 => {
                self.state = InviteServerState::Accepted;
                // §13.3.1.4 applies whatever the transport: proxies may lose the 2xx.
                self.backoff = Backoff::new(self.cfg.t1, Some(self.cfg.t2));
                let first = self.backoff.next();
                self.timers.set(Timer::Retransmit2xx, now + first);
                self.timers.set(Timer::L, now + self.cfg.timeout());
            }
            _ => {
                self.state = InviteServerState::Completed;
                if !self.reliable {
                    self.backoff = Backoff::new(self.cfg.t1, Some(self.cfg.t2));
                    let first = self.backoff.next();
                    self.timers.set(Timer::G, now + first);
                }
                self.timers.set(Timer::H, now + self.cfg.timeout());
            }
        }
    }

    /// A retransmitted INVITE: the bytes to answer it with, if any.
    pub fn on_retransmitted_request(&self) -> Option<&[u8]> {
        match self.state {
            InviteServerState::Proceeding | InviteServerState::Completed => {
                self.last_response.as_deref()
            }
            _ => None,
        }
    }

    /// An ACK with this transaction's branch (the ACK for a non-2xx final). True when it belonged here.
    pub fn on_ack(&mut self, now: Instant) -> bool {
        match self.state {
            InviteServerState::Completed => {
                self.state = InviteServerState::Confirmed;
                self.timers.stop(Timer::G);
                self.timers.stop(Timer::H);
                let wait = if self.reliable {
                    Duration::ZERO
                } else {
                    self.cfg.t4
                };
                self.timers.set(Timer::I, now + wait);
                true
            }
            InviteServerState::Confirmed => true,
            _ => false,
        }
    }

    /// The dialog's ACK for our 2xx arrived: stop retransmitting (stay Accepted until Timer L).
    pub fn on_2xx_ack(&mut self) {
        if self.state == InviteServerState::Accepted {
            self.acked = true;
            self.timers.stop(Timer::Retransmit2xx);
            // Accepted only absorbs INVITEs from here on: the 2xx is not sent again, and a
            // busy server would hold every call's answer, SDP and all, for Timer L (32 s).
            self.last_response = None;
        }
    }

    /// Bytes of response kept for retransmission.
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.last_response.as_ref().map_or(0, Vec::capacity)
    }

    /// True once the 2xx was acknowledged.
    pub fn is_acked(&self) -> bool {
        self.acked
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<TxOutput>) {
        while let Some(t) = self.timers.pop_expired(now) {
            match t {
                Timer::G | Timer::Retransmit2xx => {
                    if let Some(b) = &self.last_response {
                        out.push(TxOutput::Retransmit(b.clone()));
                    }
                    let at = now + self.backoff.next();
                    self.timers.set(t, at);
                }
                Timer::H => {
                    self.terminate();
                    out.push(TxOutput::TimedOut);
                }
                Timer::L => {
                    let acked = self.acked;
                    self.terminate();
                    if !acked {
                        out.push(TxOutput::TimedOut);
                    }
                }
                _ => self.terminate(),
            }
        }
    }

    fn terminate(&mut self) {
        self.state = InviteServerState::Terminated;
        self.timers.clear();
    }

    /// True when the transaction may be removed.
    pub fn is_terminated(&self) -> bool {
        self.state == InviteServerState::Terminated
    }
}

/// States of a non-INVITE server transaction (RFC 3261 Figure 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteServerState {
    /// Request received, nothing sent.
    Trying,
    /// A provisional response was sent.
    Proceeding,
    /// Final response sent; absorbing request retransmits.
    Completed,
    /// Done.
    Terminated,
}

/// A non-INVITE server transaction.
#[derive(Debug, Clone)]
pub struct NonInviteServerTx {
    state: NonInviteServerState,
    cfg: TimerConfig,
    reliable: bool,
    timers: TimerTable,
    last_response: Option<Vec<u8>>,
}

impl NonInviteServerTx {
    /// A transaction for a request just received.
    pub fn new(cfg: TimerConfig, reliable: bool) -> Self {
        NonInviteServerTx {
            state: NonInviteServerState::Trying,
            cfg,
            reliable,
            timers: TimerTable::default(),
            last_response: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> NonInviteServerState {
        self.state
    }

    /// Records a response the caller is sending now.
    pub fn respond(&mut self, now: Instant, code: u16, bytes: Vec<u8>) {
        if matches!(
            self.state,
            NonInviteServerState::Completed | NonInviteServerState::Terminated
        ) {
            return;
        }
        self.last_response = Some(bytes);
        if code < 200 {
            self.state = NonInviteServerState::Proceeding;
        } else {
            self.state = NonInviteServerState::Completed;
            let wait = if self.reliable {
                Duration::ZERO
            } else {
                self.cfg.timeout()
            };
            self.timers.set(Timer::J, now + wait);
        }
    }

    /// A retransmitted request: the bytes to answer it with, if any.
    pub fn on_retransmitted_request(&self) -> Option<&[u8]> {
        match self.state {
            NonInviteServerState::Proceeding | NonInviteServerState::Completed => {
                self.last_response.as_deref()
            }
            _ => None,
        }
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Fires every timer due at `now` (only J).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timers.pop_expired(now).is_some() {
            self.state = NonInviteServerState::Terminated;
            self.timers.clear();
        }
    }

    /// True when the transaction may be removed.
    pub fn is_terminated(&self) -> bool {
        self.state == NonInviteServerState::Terminated
    }
}

/// What a client transaction does with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseDisposition {
    /// Hand it to the transaction user.
    Deliver,
    /// A retransmission the transaction absorbed (it may have re-sent its ACK).
    Absorb,
}

/// States of a client transaction (INVITE: RFC 3261 Figure 5 + RFC 6026; non-INVITE: Figure 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, nothing heard (`Trying` for non-INVITE).
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived; waiting out retransmits.
    Completed,
    /// INVITE only: 2xx arrived; further 2xx go to the core for ACK.
    Accepted,
    /// Done.
    Terminated,
}

/// A client transaction for a request we send (BYE, INFO, re-INVITE ...).
#[derive(Debug, Clone)]
pub struct ClientTx {
    invite: bool,
    state: ClientState,
    cfg: TimerConfig,
    reliable: bool,
    timers: TimerTable,
    request: Vec<u8>,
    ack: Option<Vec<u8>>,
    backoff: Backoff,
    /// An initial INVITE waits as long as it rings: Timer B stops at the first provisional.
    patient: bool,
}

impl ClientTx {
    /// Starts a transaction for `request`, which the caller sends now.
    pub fn new(
        now: Instant,
        cfg: TimerConfig,
        reliable: bool,
        invite: bool,
        request: Vec<u8>,
    ) -> Self {
        let cap = if invite { None } else { Some(cfg.t2) };
        let mut tx = ClientTx {
            invite,
            state: ClientState::Calling,
            cfg,
            reliable,
            timers: TimerTable::default(),
            request,
            ack: None,
            backoff: Backoff::new(cfg.t1, cap),
            patient: false,
        };
        let (retransmit, timeout) = if invite {
            (Timer::A, Timer::B)
        } else {
            (Timer::E, Timer::F)
        };
        if !reliable {
            let first = tx.backoff.next();
            tx.timers.set(retransmit, now + first);
        }
        tx.timers.set(timeout, now + cfg.timeout());
        tx
    }

    /// Makes an INVITE transaction wait without limit once a provisional arrived (RFC 3261
    /// Figure 5: Timer B runs in Calling only). How long it may ring is the UAC core's choice;
    /// re-INVITEs keep the 64·T1 bound so a vanished peer cannot hold one open for ever.
    pub fn patient(mut self) -> Self {
        self.patient = self.invite;
        self
    }

    /// Arms the transaction timeout (Timer B or F) at `at`: after a CANCEL the INVITE gets
    /// 64·T1 more for its final response (§9.1).
    pub fn time_out_at(&mut self, at: Instant) {
        if matches!(self.state, ClientState::Calling | ClientState::Proceeding) {
            let t = if self.invite { Timer::B } else { Timer::F };
            self.timers.set(t, at);
        }
    }

    /// Current state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// Classifies a response to this transaction and moves the state machine.
    /// For an INVITE's non-2xx final, the caller must then supply the ACK with [`Self::set_ack`].
    pub fn on_response(&mut self, now: Instant, code: u16) -> ResponseDisposition {
        use ClientState::*;
        match (self.state, code) {
            (Calling | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.timers.stop(Timer::A);
                if self.patient {
                    self.timers.stop(Timer::B);
                }
                if self.timers.get(Timer::E).is_some() {
                    // §17.1.2.2: in Proceeding, retransmit every T2.
                    self.backoff = Backoff::new(self.cfg.t2, Some(self.cfg.t2));
                }
                ResponseDisposition::Deliver
            }
            (Calling | Proceeding, 200..=299) if self.invite => {
                self.state = Accepted;
                self.timers.clear();
                self.timers.set(Timer::M, now + self.cfg.timeout());
                ResponseDisposition::Deliver
            }
            (Calling | Proceeding, _) => {
                self.state = Completed;
                self.timers.clear();
                let (timer, wait) = match (self.invite, self.reliable) {
                    (_, true) => (
                        if self.invite { Timer::D } else { Timer::K },
                        Duration::ZERO,
                    ),
                    (true, false) => (
                        Timer::D,
                        Duration::from_secs(32).max(self.cfg.timeout() / 2),
                    ),
                    (false, false) => (Timer::K, self.cfg.t4),
                };
                self.timers.set(timer, now + wait);
                ResponseDisposition::Deliver
            }
            // 2xx retransmissions go to the core so it re-sends its ACK (RFC 6026 §8.4).
            (Accepted, 200..=299) => ResponseDisposition::Deliver,
            _ => ResponseDisposition::Absorb,
        }
    }

    /// The ACK for a non-2xx final response, re-sent when that response is retransmitted.
    pub fn set_ack(&mut self, ack: Vec<u8>) {
        self.ack = Some(ack);
    }

    /// For a retransmitted non-2xx final in Completed: the ACK to send again.
    pub fn ack_to_resend(&self) -> Option<&[u8]> {
        (self.state == ClientState::Completed)
            .then_some(self.ack.as_deref())
            .flatten()
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<TxOutput>) {
        while let Some(t) = self.timers.pop_expired(now) {
            match t {
                Timer::A | Timer::E => {
                    out.push(TxOutput::Retransmit(self.request.clone()));
                    let at = now + self.backoff.next();
                    self.timers.set(t, at);
                }
                Timer::B | Timer::F => {
                    self.state = ClientState::Terminated;
                    self.timers.clear();
                    out.push(TxOutput::TimedOut);
                }
                _ => {
                    self.state = ClientState::Terminated;
                    self.timers.clear();
                }
            }
        }
    }

    /// True when the transaction may be removed.
    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    /// The transport could not carry the request (no connection could be opened): before
    /// any answer this ends the transaction as a timeout would (RFC 3261 §8.1.3.1).
    pub fn transport_failed(&mut self, out: &mut Vec<TxOutput>) {
        if matches!(self.state, ClientState::Calling | ClientState::Proceeding) {
            self.state = ClientState::Terminated;
            self.timers.clear();
            out.push(TxOutput::TimedOut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The surface the virtual-time driver needs.
    trait Machine {
        fn deadline(&self) -> Option<Instant>;
        fn fire(&mut self, now: Instant, out: &mut Vec<TxOutput>);
    }
    impl Machine for InviteServerTx {
        fn deadline(&self) -> Option<Instant> {
            self.poll_timeout()
        }
        fn fire(&mut self, now: Instant, out: &mut Vec<TxOutput>) {
            self.handle_timeout(now, out)
        }
    }
    impl Machine for ClientTx {
        fn deadline(&self) -> Option<Instant> {
            self.poll_timeout()
        }
        fn fire(&mut self, now: Instant, out: &mut Vec<TxOutput>) {
            self.handle_timeout(now, out)
        }
    }

    /// Steps virtual time from deadline to deadline until `limit`, recording (in ms since
    /// `start`) when each retransmission went out and when the machine gave up.
    fn drive(start: Instant, limit: Duration, m: &mut impl Machine) -> (Vec<u64>, Option<u64>) {
        let mut sent = Vec::new();
        let mut timed_out = None;
        let mut out = Vec::new();
        for _ in 0..1000 {
            let Some(now) = m.deadline().filter(|d| *d - start <= limit) else {
                break;
            };
            m.fire(now, &mut out);
            let at = (now - start).as_millis() as u64;
            for o in out.drain(..) {
                match o {
                    TxOutput::Retransmit(_) => sent.push(at),
                    TxOutput::TimedOut => timed_out = Some(at),
                }
            }
        }
        (sent, timed_out)
    }

    #[test]
    fn non_2xx_final_over_udp_follows_timer_g_and_h() {
        let t0 = Instant::now();
        let mut tx = InviteServerTx::new(TimerConfig::default(), false);
        tx.respond(t0, 100, b"100".to_vec());
        tx.respond(t0, 486, b"486".to_vec());
        assert_eq!(tx.state(), InviteServerState::Completed);
        let (sent, timed_out) = drive(t0, ms(40_000), &mut tx);
        // G: 500, 1000, 2000, 4000 (capped at T2) ... until H at 64·T1 = 32 s.
        assert_eq!(
            sent,
            vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(timed_out, Some(32_000));
        assert!(tx.is_terminated());
    }

    #[test]
    fn ack_moves_completed_to_confirmed_and_timer_i_ends_it() {
        let t0 = Instant::now();
        let mut tx = InviteServerTx::new(TimerConfig::default(), false);
        tx.respond(t0, 404, b"404".to_vec());
        assert_eq!(tx.on_retransmitted_request(), Some(&b"404"[..]));
        assert!(tx.on_ack(t0 + ms(700)));
        assert_eq!(tx.state(), InviteServerState::Confirmed);
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(700 + 5000)));
        let mut out = Vec::new();
        tx.handle_timeout(t0 + ms(5699), &mut out);
        assert!(!tx.is_terminated());
        tx.handle_timeout(t0 + ms(5700), &mut out);
        assert!(tx.is_terminated());
        assert!(out.is_empty());
    }

    #[test]
    fn reliable_transport_has_no_timer_g_and_zero_timer_i() {
        let t0 = Instant::now();
        let mut tx = InviteServerTx::new(TimerConfig::default(), true);
        tx.respond(t0, 486, b"486".to_vec());
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32_000)));
        tx.on_ack(t0 + ms(10));
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(10)));
    }

    #[test]
    fn the_timer_table_keeps_one_deadline_per_timer_and_pops_the_earliest() {
        let t0 = Instant::now();
        let mut tt = TimerTable::default();
        tt.set(Timer::H, t0 + ms(32_000));
        tt.set(Timer::G, t0 + ms(500));
        tt.set(Timer::G, t0 + ms(1_500));
        assert_eq!(
            tt.get(Timer::G),
            Some(t0 + ms(1_500)),
            "re-armed, not a second G"
        );
        assert_eq!(tt.next(), Some(t0 + ms(1_500)));
        assert_eq!(
            tt.pop_expired(t0 + ms(1_499)),
            None,
            "just before: nothing due"
        );
        assert_eq!(tt.pop_expired(t0 + ms(1_500)), Some(Timer::G));
        assert_eq!(tt.pop_expired(t0 + ms(1_500)), None);
        assert_eq!(tt.get(Timer::G), None);
        // Three due at the same instant come out in the order the RFCs name them.
        tt.set(Timer::Retransmit2xx, t0 + ms(32_000));
        tt.set(Timer::L, t0 + ms(32_000));
        let at = t0 + ms(32_000);
        let popped: Vec<_> = std::iter::from_fn(|| tt.pop_expired(at)).collect();
        assert_eq!(popped, [Timer::H, Timer::L, Timer::Retransmit2xx]);
        tt.set(Timer::A, t0 + ms(500));
        tt.set(Timer::B, t0 + ms(32_000));
        tt.stop(Timer::A);
        assert_eq!(tt.next(), Some(t0 + ms(32_000)));
        tt.clear();
        assert_eq!(tt.next(), None);
        // Every finished server transaction holds one for 32 s.
        assert!(std::mem::size_of::<TimerTable>() <= 72);
    }

    #[test]
    fn a_2xx_is_retransmitted_until_ack_doubling_to_t2() {
        let t0 = Instant::now();
        let mut tx = InviteServerTx::new(TimerConfig::default(), false);
        tx.respond(t0, 200, b"200".to_vec());
        assert_eq!(tx.state(), InviteServerState::Accepted);
        assert_eq!(
            tx.on_retransmitted_request(),
            None,
            "Accepted absorbs INVITEs"
        );
        let (sent, timed_out) = drive(t0, ms(8_000), &mut tx);
        assert_eq!(
            tx.held_bytes(),
            3,
            "the 2xx is kept while it may be retransmitted"
        );
        tx.on_2xx_ack();
        assert_eq!(tx.held_bytes(), 0, "and let go once it is acknowledged");
        assert_eq!(sent, vec![500, 1500, 3500, 7500]);
        assert_eq!(
            tx.poll_timeout(),
            Some(t0 + ms(32_000)),
            "only Timer L left"
        );
        assert_eq!(timed_out, None);
        assert!(tx.is_acked());
        // Stays Accepted until L to absorb late INVITE retransmissions.
        assert!(!tx.is_terminated());
        let mut out = Vec::new();
        tx.handle_timeout(t0 + ms(32_000), &mut out);
        assert!(tx.is_terminated());
        assert!(out.is_empty(), "acked: no timeout reported");
    }

    #[test]
    fn a_2xx_never_acked_times_out_at_64_t1() {
        let t0 = Instant::now();
        let mut tx = InviteServerTx::new(TimerConfig::default(), true);
        tx.respond(t0, 200, b"200".to_vec());
        let (sent, timed_out) = drive(t0, ms(33_000), &mut tx);
        assert_eq!(
            sent,
            vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(timed_out, Some(32_000));
    }

    #[test]
    fn non_invite_server_timer_j() {
        let t0 = Instant::now();
        let mut tx = NonInviteServerTx::new(TimerConfig::default(), false);
        assert_eq!(tx.on_retransmitted_request(), None);
        tx.respond(t0, 200, b"200".to_vec());
        assert_eq!(tx.on_retransmitted_request(), Some(&b"200"[..]));
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32_000)));
        tx.handle_timeout(t0 + ms(31_999));
        assert!(!tx.is_terminated());
        tx.handle_timeout(t0 + ms(32_000));
        assert!(tx.is_terminated());
        let mut tcp = NonInviteServerTx::new(TimerConfig::default(), true);
        tcp.respond(t0, 200, b"200".to_vec());
        assert_eq!(tcp.poll_timeout(), Some(t0));
    }

    #[test]
    fn non_invite_client_timers_e_f() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(t0, TimerConfig::default(), false, false, b"BYE".to_vec());
        let (sent, timed_out) = drive(t0, ms(40_000), &mut tx);
        assert_eq!(
            sent,
            vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(timed_out, Some(32_000));
    }

    #[test]
    fn non_invite_client_in_proceeding_retransmits_every_t2_then_k() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(t0, TimerConfig::default(), false, false, b"BYE".to_vec());
        let mut out = Vec::new();
        tx.handle_timeout(t0 + ms(500), &mut out);
        assert_eq!(
            tx.on_response(t0 + ms(600), 100),
            ResponseDisposition::Deliver
        );
        // The E armed at 1500 keeps its deadline; from then on the interval is T2.
        tx.handle_timeout(t0 + ms(1500), &mut out);
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(5500)));
        assert_eq!(
            tx.on_response(t0 + ms(2000), 200),
            ResponseDisposition::Deliver
        );
        assert_eq!(
            tx.on_response(t0 + ms(2100), 200),
            ResponseDisposition::Absorb
        );
        assert_eq!(
            tx.poll_timeout(),
            Some(t0 + ms(2000 + 5000)),
            "Timer K = T4"
        );
        tx.handle_timeout(t0 + ms(7000), &mut out);
        assert!(tx.is_terminated());
    }

    #[test]
    fn invite_client_timer_a_doubles_without_cap_and_b_times_out() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(t0, TimerConfig::default(), false, true, b"INVITE".to_vec());
        let (sent, timed_out) = drive(t0, ms(40_000), &mut tx);
        assert_eq!(sent, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(timed_out, Some(32_000));
    }

    #[test]
    fn invite_client_non_2xx_final_resends_ack_then_timer_d() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(t0, TimerConfig::default(), false, true, b"INVITE".to_vec());
        assert_eq!(tx.on_response(t0, 180), ResponseDisposition::Deliver);
        assert_eq!(
            tx.on_response(t0 + ms(100), 486),
            ResponseDisposition::Deliver
        );
        tx.set_ack(b"ACK".to_vec());
        assert_eq!(
            tx.on_response(t0 + ms(600), 486),
            ResponseDisposition::Absorb
        );
        assert_eq!(tx.ack_to_resend(), Some(&b"ACK"[..]));
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(100 + 32_000)));
    }

    #[test]
    fn a_patient_invite_rings_past_64_t1_until_a_cancel_bounds_it() {
        let t0 = Instant::now();
        let cfg = TimerConfig::default();
        let mut tx = ClientTx::new(t0, cfg, false, true, b"INVITE".to_vec()).patient();
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(500)));
        tx.on_response(t0 + ms(100), 180);
        assert_eq!(tx.poll_timeout(), None, "no Timer A or B while ringing");
        tx.time_out_at(t0 + ms(100_000));
        let (_, timed_out) = drive(t0, ms(200_000), &mut tx);
        assert_eq!(timed_out, Some(100_000));
        let mut re = ClientTx::new(t0, cfg, false, true, b"INVITE".to_vec());
        re.on_response(t0, 180);
        assert_eq!(
            re.poll_timeout(),
            Some(t0 + cfg.timeout()),
            "a re-INVITE keeps B"
        );
    }

    #[test]
    fn invite_client_2xx_retransmissions_reach_the_core() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(t0, TimerConfig::default(), true, true, b"INVITE".to_vec());
        assert_eq!(tx.on_response(t0, 200), ResponseDisposition::Deliver);
        assert_eq!(tx.state(), ClientState::Accepted);
        assert_eq!(
            tx.on_response(t0 + ms(500), 200),
            ResponseDisposition::Deliver
        );
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32_000)), "Timer M");
    }

    #[test]
    fn sixty_four_t1_passes_in_microseconds_of_real_time() {
        let real = std::time::Instant::now();
        let t0 = Instant::now();
        let mut tx = ClientTx::new(t0, TimerConfig::default(), false, false, b"INFO".to_vec());
        let mut out = Vec::new();
        let mut now = t0;
        let mut steps = 0;
        while let Some(at) = tx.poll_timeout() {
            now = now.max(at);
            tx.handle_timeout(now, &mut out);
            steps += 1;
            assert!(steps < 100);
        }
        assert_eq!(out.last(), Some(&TxOutput::TimedOut));
        assert_eq!(now - t0, ms(32_000));
        assert!(real.elapsed() < Duration::from_millis(50));
    }
}
