//! One media worker's state and its tick, socket-free: legs, the conference rooms those legs
//! are in, and the commands from calls and rooms. Datagrams go through a [`MediaIo`], time is
//! an argument, so the tick runs the same over real sockets ([`super::SocketIo`]) and over
//! memory in virtual time.
//!
//! Order of a tick: every leg's receive half (datagrams, jitter buffer, decode, digits); each
//! bridged pair's input frames copied across, each into the other leg's bridge buffer
//! (silence while a leg hears nothing or a key tone sounds); each room's mix and its members'
//! send halves; the send half of every leg not in a room, a bridged leg's with its peer's
//! frame; events to calls and key presses to rooms; room events. Commands are applied before it.
//! All receives come before all sends even for legs on their own: one pass that received and
//! sent each such leg in turn measured 18% dearer (BENCHMARKS.md, "Cuts that did not pay"),
//! probably because the peer is then woken for many packets instead of one burst of sends.
//! The io hears of each tick's start and end, and of each leg's endpoint arriving (added or
//! moved here) and leaving (removed or moved away), for an io that keeps state per leg.
//!
//! A bridge pairs two legs of one worker, each hearing the other: a call's leg and the leg it
//! dialled. Each leg decodes to and encodes from the internal frame, so legs with different
//! codecs are transcoded on the way. A leg is in a room or a bridge, never both, and a bridged
//! leg stays on its worker; removing either leg ends the bridge for the other.
//!
//! RTCP timing is not the tick's: peers compute round-trip times from the delay between our
//! reading their sender report and sending ours (DLSR), so the legs are given true times.
//! RTCP datagrams carry the kernel's receive timestamp (the time they reached the socket, not
//! the later tick that read them), turned into an `Instant` with one clock reading per
//! receive batch; a leg whose report is due is sent with the clock read just then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc::UnboundedSender;

use super::io::MediaIo;
use super::thread::BridgeError;
use crate::conference::host::{MemberLegs, RoomCommand, RoomHost};
use crate::conference::{AudioLevel, MemberId};
use crate::media::codec::CodecKind;
use crate::media::frame::{Frame, SILENCE};
use crate::media::leg::{Leg, LegCommand, LegEvent, LegStats, Port};
use crate::rtp::packet::{classify, PacketKind};

/// The RTCP socket is read every this many ticks.
const RTCP_POLL_TICKS: u64 = 8;
/// Datagrams read from one leg's socket per tick at most, so one flood cannot starve others.
const MAX_READS_PER_TICK: usize = 16;
/// Ticks a worker forwards commands for a leg that moved away (five seconds): long enough
/// for every command sent before the handle learnt of the move.
const FORWARD_TICKS: u64 = 250;

/// Counters of one worker, readable from any thread.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Ticks run.
    pub ticks: AtomicU64,
    /// Ticks that started more than 2 ms after their deadline.
    pub late_ticks: AtomicU64,
    /// Frames skipped after falling more than three ticks behind.
    pub skipped_ticks: AtomicU64,
    /// Largest lateness seen, in microseconds.
    pub max_lateness_us: AtomicU64,
    /// Legs owned now.
    pub legs: AtomicUsize,
    /// Time spent working (not sleeping), in microseconds.
    pub busy_us: AtomicU64,
    /// RTP packets accepted by this worker's legs, ever.
    pub packets_in: AtomicU64,
    /// RTP packets sent by this worker's legs, ever.
    pub packets_out: AtomicU64,
    /// Frames concealed (lost or late) by this worker's legs, ever.
    pub frames_concealed: AtomicU64,
    /// RTP packets lost (expected from sequence numbers, never received) on this worker's legs, ever.
    pub packets_lost: AtomicU64,
    /// Conference rooms owned now.
    pub rooms: AtomicUsize,
    /// Members of those rooms now.
    pub members: AtomicUsize,
    /// Bridged pairs of legs now.
    pub bridges: AtomicUsize,
    /// Packets this worker's legs left undecoded, their RFC 6464 level being too quiet for
    /// their room to mix, ever.
    pub decodes_skipped: AtomicU64,
}

/// A message to a worker; `E` is the per-leg endpoint of the worker's [`MediaIo`].
pub(crate) enum Command<E> {
    Add {
        id: u64,
        leg: Box<Leg>,
        endpoint: E,
        events: UnboundedSender<LegEvent>,
        route: Arc<Route<E>>,
    },
    Leg(u64, LegCommand),
    Remove(u64),
    Move {
        id: u64,
        to: usize,
        done: tokio::sync::oneshot::Sender<bool>,
    },
    AddRoom(Box<RoomHost>),
    Room(u64, RoomCommand),
    Bridge {
        a: u64,
        b: u64,
        done: tokio::sync::oneshot::Sender<Result<(), BridgeError>>,
    },
    Unbridge(u64),
    Stop,
}

impl<E> std::fmt::Debug for Command<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Add { id, .. } => write!(f, "Add({id})"),
            Command::Leg(id, c) => write!(f, "Leg({id}, {c:?})"),
            Command::Remove(id) => write!(f, "Remove({id})"),
            Command::Move { id, to, .. } => write!(f, "Move({id} to {to})"),
            Command::AddRoom(h) => write!(f, "AddRoom({})", h.id()),
            Command::Room(id, c) => write!(f, "Room({id}, {c:?})"),
            Command::Bridge { a, b, .. } => write!(f, "Bridge({a}, {b})"),
            Command::Unbridge(id) => write!(f, "Unbridge({id})"),
            Command::Stop => write!(f, "Stop"),
        }
    }
}

struct Slot<E> {
    id: u64,
    leg: Box<Leg>,
    endpoint: E,
    events: UnboundedSender<LegEvent>,
    route: Arc<Route<E>>,
    /// The room (by id) and membership, while the leg is in one.
    room: Option<(u64, MemberId)>,
    /// The leg this one is bridged to, while it is.
    bridge: Option<Bridge>,
}

/// One side of a bridge: the peer's slot, and the peer's frame this tick, copied here
/// before the send halves so that each leg's send half reads only its own slot.
struct Bridge {
    peer: usize,
    audio: Frame,
}

impl Bridge {
    fn to(peer: usize) -> Option<Bridge> {
        Some(Bridge {
            peer,
            audio: SILENCE,
        })
    }
}

/// Where a leg lives now: shared by its handle, its senders and its worker.
#[derive(Debug)]
pub(crate) struct Route<E> {
    pub(crate) worker: AtomicUsize,
    pub(crate) workers: Arc<Vec<Sender<Command<E>>>>,
}

impl<E> Route<E> {
    /// Sends to the leg's current worker; ignored once that worker has stopped.
    pub(crate) fn send(&self, cmd: Command<E>) {
        let i = self.worker.load(Ordering::Acquire);
        if let Some(tx) = self.workers.get(i) {
            let _ = tx.send(cmd);
        }
    }
}

/// A leg that moved to another worker: its commands are passed on until the tick `until`.
#[derive(Debug, Clone, Copy)]
struct Forward {
    leg: u64,
    to: usize,
    until: u64,
}

/// One worker's state: its legs and rooms, ticked over a [`MediaIo`] whose per-leg
/// endpoints are `E`. Owned by one thread (or a test or benchmark driving it in virtual time).
pub struct Worker<E> {
    slots: Vec<Option<Slot<E>>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    rooms: Vec<RoomHost>,
    /// Bridged pairs, by slot.
    pairs: Vec<(usize, usize)>,
    /// Legs that moved away, whose commands go on to their new worker for a while.
    forwards: Vec<Forward>,
    peers: Arc<Vec<Sender<Command<E>>>>,
    /// Counters of legs that are gone, so the totals never go backwards.
    retired: LegStats,
    stats: Arc<WorkerStats>,
    /// Receive buffer, reused by every read.
    buf: Box<[u8; 2048]>,
}

impl<E> Default for Worker<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Worker<E> {
    /// An empty worker on its own (no other workers to move legs to).
    pub fn new() -> Self {
        Self::with_peers(Arc::default(), Arc::new(Vec::new()))
    }

    /// An empty worker; `peers` are every worker's command senders (for moving legs).
    pub(crate) fn with_peers(stats: Arc<WorkerStats>, peers: Arc<Vec<Sender<Command<E>>>>) -> Self {
        Worker {
            slots: Vec::with_capacity(256),
            free: Vec::with_capacity(256),
            by_id: HashMap::with_capacity(256),
            rooms: Vec::with_capacity(16),
            pairs: Vec::with_capacity(128),
            forwards: Vec::new(),
            peers,
            retired: LegStats::default(),
            stats,
            buf: Box::new([0; 2048]),
        }
    }

    /// This worker's counters.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// Adds a leg reached through `endpoint`; its events go to `events`.
    pub fn add_leg(&mut self, id: u64, leg: Leg, endpoint: E, events: UnboundedSender<LegEvent>) {
        let route = Arc::new(Route {
            worker: AtomicUsize::new(0),
            workers: self.peers.clone(),
        });
        self.insert(Slot {
            id,
            leg: Box::new(leg),
            endpoint,
            events,
            route,
            room: None,
            bridge: None,
        });
    }

    /// Applies a command to leg `id`, as its handle would.
    pub fn leg_command(&mut self, now: Instant, id: u64, cmd: LegCommand) {
        if let Some((_, s)) = self.slot_of(id) {
            s.leg.apply(now, cmd);
        }
    }

    /// Places a room on this worker.
    pub fn add_room(&mut self, host: RoomHost) {
        self.rooms.push(host);
    }

    /// Applies a command to room `room` (a join, a control), as the registry would.
    pub fn room_command<I>(&mut self, now: Instant, room: u64, cmd: RoomCommand, io: &mut I)
    where
        I: MediaIo<Endpoint = E>,
    {
        let Some(r) = self.rooms.iter().position(|h| h.id() == room) else {
            cmd.refuse_gone();
            return;
        };
        let (_, wallclock) = io.now();
        let mut legs = Legs {
            slots: &mut self.slots,
            by_id: &self.by_id,
            tick: 0,
            now,
            wallclock,
            io,
        };
        self.rooms[r].command(now, cmd, &mut legs);
        self.rooms[r].flush(now, &mut legs);
    }

    fn slot_of(&mut self, id: u64) -> Option<(usize, &mut Slot<E>)> {
        let i = *self.by_id.get(&id)?;
        self.slots.get_mut(i)?.as_mut().map(|s| (i, s))
    }

    /// Hands a command for a leg that moved away to its new worker; false if it never did.
    fn forward(&self, id: u64, cmd: Command<E>) -> bool {
        match self.forwards.iter().find(|f| f.leg == id) {
            Some(&Forward { to, .. }) => {
                if let Some(tx) = self.peers.get(to) {
                    let _ = tx.send(cmd);
                }
                true
            }
            None => false,
        }
    }

    /// Bridges legs `a` and `b`, both on this worker: from the next tick each leg sends what
    /// the other hears (its own playback still comes first). Bridging a pair again is a no-op.
    pub fn bridge(&mut self, a: u64, b: u64) -> Result<(), BridgeError> {
        if a == b {
            return Err(BridgeError::SameLeg);
        }
        let mut at = [0; 2];
        for (k, id) in [a, b].into_iter().enumerate() {
            let (i, s) = self.slot_of(id).ok_or(BridgeError::Gone(id))?;
            if s.room.is_some() {
                return Err(BridgeError::InRoom(id));
            }
            at[k] = i;
        }
        let [ia, ib] = at;
        if self.pairs.iter().any(|&p| p == (ia, ib) || p == (ib, ia)) {
            return Ok(());
        }
        for (id, i) in [(a, ia), (b, ib)] {
            if self.slots[i].as_ref().is_some_and(|s| s.bridge.is_some()) {
                return Err(BridgeError::Bridged(id));
            }
        }
        if let Ok([Some(x), Some(y)]) = self.slots.get_disjoint_mut([ia, ib]) {
            x.bridge = Bridge::to(ib);
            y.bridge = Bridge::to(ia);
            self.pairs.push((ia, ib));
        }
        Ok(())
    }

    /// Ends leg `id`'s bridge for both legs, which then send as plain legs; false when it
    /// was in none here.
    pub fn unbridge(&mut self, id: u64) -> bool {
        let Some((i, s)) = self.slot_of(id) else {
            return false;
        };
        let Some(peer) = s.bridge.take().map(|b| b.peer) else {
            return false;
        };
        if let Some(Some(p)) = self.slots.get_mut(peer) {
            p.bridge = None;
        }
        self.pairs.retain(|&(x, y)| x != i && y != i);
        true
    }

    fn insert(&mut self, slot: Slot<E>) -> usize {
        let id = slot.id;
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.by_id.insert(id, i);
        i
    }

    fn take(&mut self, i: usize) -> Option<Slot<E>> {
        let s = self.slots.get_mut(i)?.take()?;
        self.by_id.remove(&s.id);
        self.free.push(i);
        Some(s)
    }

    /// Hands a command for a leg that moved away to its new worker, or gives it back.
    // The "error" is the command itself, handed back by value to be handled here: boxing it
    // would allocate per command for nothing.
    #[allow(clippy::result_large_err)]
    fn forward_or_return(&self, id: u64, cmd: Command<E>) -> Result<(), Command<E>> {
        match self.forwards.iter().find(|f| f.leg == id) {
            Some(&Forward { to, .. }) => match self.peers.get(to) {
                Some(tx) => tx.send(cmd).map_err(|e| e.0),
                None => Err(cmd),
            },
            None => Err(cmd),
        }
    }

    /// Applies a command at tick `n` (before that tick runs).
    pub(crate) fn command<I>(&mut self, now: Instant, n: u64, cmd: Command<E>, io: &mut I)
    where
        I: MediaIo<Endpoint = E>,
    {
        match cmd {
            Command::Add {
                id,
                leg,
                mut endpoint,
                events,
                route,
            } => {
                io.attach(&mut endpoint);
                self.insert(Slot {
                    id,
                    leg,
                    endpoint,
                    events,
                    route,
                    room: None,
                    bridge: None,
                });
            }
            Command::Leg(id, cmd) => match self.slot_of(id) {
                Some((_, s)) => s.leg.apply(now, cmd),
                None => {
                    let _ = self.forward(id, Command::Leg(id, cmd));
                }
            },
            Command::Remove(id) => {
                let Some((i, _)) = self.slot_of(id) else {
                    let _ = self.forward(id, Command::Remove(id));
                    return;
                };
                let room = self.slots[i].as_ref().and_then(|s| s.room);
                if let Some((room, member)) = room {
                    // The call hung up while in a room: it leaves first.
                    self.room_command(now, room, RoomCommand::Hangup { member }, io);
                }
                // Its peer goes on as a plain leg, hearing silence.
                self.unbridge(id);
                if let Some(mut s) = self.take(i) {
                    // The call is over: a recording in progress ends as a hangup, digits kept.
                    s.leg.close();
                    if let Some((to, bye)) = s.leg.rtcp_bye() {
                        io.send(&s.endpoint, Port::Rtcp, to, bye);
                    }
                    io.detach(&mut s.endpoint);
                    // What closing produced (a recording ended by the hangup) goes to the call
                    // before the final statistics.
                    while let Some(e) = s.leg.poll_event() {
                        let _ = s.events.send(e);
                    }
                    let _ = s.events.send(LegEvent::Closed(s.leg.rtp_summary()));
                    add_stats(&mut self.retired, s.leg.stats());
                }
            }
            Command::Move { id, to, done } => {
                let Some((i, s)) = self.slot_of(id) else {
                    if let Err(Command::Move { done, .. }) =
                        self.forward_or_return(id, Command::Move { id, to, done })
                    {
                        let _ = done.send(false);
                    }
                    return;
                };
                // A member stays with its room, a bridged leg with its peer.
                if s.room.is_some() || s.bridge.is_some() || self.peers.get(to).is_none() {
                    let _ = done.send(false);
                    return;
                }
                let Some(mut s) = self.take(i) else {
                    let _ = done.send(false);
                    return;
                };
                io.detach(&mut s.endpoint);
                let route = s.route.clone();
                add_stats(&mut self.retired, s.leg.stats());
                let sent = self.peers[to].send(Command::Add {
                    id,
                    leg: s.leg,
                    endpoint: s.endpoint,
                    events: s.events,
                    route: route.clone(),
                });
                if sent.is_ok() {
                    route.worker.store(to, Ordering::Release);
                    self.forwards.push(Forward {
                        leg: id,
                        to,
                        until: n + FORWARD_TICKS,
                    });
                }
                let _ = done.send(sent.is_ok());
            }
            Command::AddRoom(host) => self.rooms.push(*host),
            Command::Room(room, cmd) => self.room_command(now, room, cmd, io),
            Command::Bridge { a, b, done } => {
                if self.slot_of(a).is_none() {
                    if let Err(Command::Bridge { done, .. }) =
                        self.forward_or_return(a, Command::Bridge { a, b, done })
                    {
                        let _ = done.send(Err(BridgeError::Gone(a)));
                    }
                    return;
                }
                let _ = done.send(self.bridge(a, b));
            }
            Command::Unbridge(id) => {
                if !self.unbridge(id) && self.slot_of(id).is_none() {
                    let _ = self.forward(id, Command::Unbridge(id));
                }
            }
            Command::Stop => {}
        }
    }

    /// Runs tick `n` due at `now` (commands for it applied first): every leg and room,
    /// datagrams through `io`. The steady state allocates nothing.
    pub fn tick<I>(&mut self, n: u64, now: Instant, wallclock: SystemTime, io: &mut I)
    where
        I: MediaIo<Endpoint = E>,
    {
        self.forwards.retain(|f| f.until >= n);
        io.begin_tick();
        let mut live = LegStats::default();
        for s in self.slots.iter_mut().flatten() {
            receive_leg(s, now, wallclock, n, &mut self.buf[..], io);
        }
        for &(a, b) in &self.pairs {
            if let Ok([Some(x), Some(y)]) = self.slots.get_disjoint_mut([a, b]) {
                cross(x, y);
            }
        }
        let mut legs = Legs {
            slots: &mut self.slots,
            by_id: &self.by_id,
            tick: n,
            now,
            wallclock,
            io: &mut *io,
        };
        let mut members = 0;
        for host in &mut self.rooms {
            host.tick(now, &mut legs);
            members += host.len();
        }
        for s in self.slots.iter_mut().flatten() {
            if s.room.is_none() {
                let endpoint = &s.endpoint;
                let (now, wallclock) = send_time(&s.leg, now, wallclock, io);
                let peer = s.bridge.as_ref().map(|b| &b.audio);
                s.leg.send(now, wallclock, n, peer, &mut |port, to, bytes| {
                    io.send(endpoint, port, to, bytes)
                });
            }
            let mut key = None;
            while let Some(e) = s.leg.poll_event() {
                if let (LegEvent::Digit { digit, .. }, Some(_)) = (&e, s.room) {
                    key = Some(*digit);
                }
                let _ = s.events.send(e);
            }
            if let (Some(digit), Some((room, member))) = (key, s.room) {
                if let Some(h) = self.rooms.iter_mut().find(|h| h.id() == room) {
                    h.key(member, digit);
                }
            }
            add_stats(&mut live, s.leg.stats());
        }
        let mut legs = Legs {
            slots: &mut self.slots,
            by_id: &self.by_id,
            tick: n,
            now,
            wallclock,
            io,
        };
        for host in &mut self.rooms {
            host.flush(now, &mut legs);
        }
        self.rooms.retain_mut(|h| !h.close_if_done(now));
        io.end_tick();
        let stats = &self.stats;
        stats.ticks.fetch_add(1, Ordering::Relaxed);
        stats.rooms.store(self.rooms.len(), Ordering::Relaxed);
        stats.legs.store(self.by_id.len(), Ordering::Relaxed);
        stats.members.store(members, Ordering::Relaxed);
        stats.bridges.store(self.pairs.len(), Ordering::Relaxed);
        stats
            .packets_in
            .store(live.packets_in + self.retired.packets_in, Ordering::Relaxed);
        stats.packets_out.store(
            live.packets_out + self.retired.packets_out,
            Ordering::Relaxed,
        );
        stats.frames_concealed.store(
            live.frames_concealed + self.retired.frames_concealed,
            Ordering::Relaxed,
        );
        stats.packets_lost.store(
            live.packets_lost + self.retired.packets_lost,
            Ordering::Relaxed,
        );
        stats.decodes_skipped.store(
            live.decodes_skipped + self.retired.decodes_skipped,
            Ordering::Relaxed,
        );
    }
}

/// A leg's received frame this tick when it is audio to pass on: not filler, and no key tone
/// (keys reach others as events, not in-band).
fn audible(leg: &Leg) -> Option<&Frame> {
    (leg.hearing() && !leg.dtmf_sounding()).then(|| leg.input())
}

/// Copies each bridged leg's audible input into the other's bridge buffer.
fn cross<E>(x: &mut Slot<E>, y: &mut Slot<E>) {
    if let Some(b) = x.bridge.as_mut() {
        b.audio = *audible(&y.leg).unwrap_or(&SILENCE);
    }
    if let Some(b) = y.bridge.as_mut() {
        b.audio = *audible(&x.leg).unwrap_or(&SILENCE);
    }
}

fn add_stats(total: &mut LegStats, s: LegStats) {
    total.packets_in += s.packets_in;
    total.packets_out += s.packets_out;
    total.frames_concealed += s.frames_concealed;
    total.frames_decoded += s.frames_decoded;
    total.decodes_skipped += s.decodes_skipped;
    total.dropped += s.dropped;
    total.packets_lost += s.packets_lost;
}

/// The worker's legs as a room sees its members.
struct Legs<'a, E, I> {
    slots: &'a mut Vec<Option<Slot<E>>>,
    by_id: &'a HashMap<u64, usize>,
    tick: u64,
    now: Instant,
    wallclock: SystemTime,
    io: &'a mut I,
}

impl<E, I: MediaIo<Endpoint = E>> MemberLegs for Legs<'_, E, I> {
    fn find(&self, leg: u64) -> Option<usize> {
        let i = *self.by_id.get(&leg)?;
        let s = self.slots.get(i)?.as_ref()?;
        (s.room.is_none() && s.bridge.is_none()).then_some(i)
    }

    fn bind(&mut self, tag: usize, room: Option<(u64, MemberId)>) {
        if let Some(Some(s)) = self.slots.get_mut(tag) {
            s.room = room;
            if room.is_none() {
                // Out of the room, every packet is heard again.
                s.leg.set_quiet_floor(None);
            }
        }
    }

    fn input(&self, tag: usize) -> Option<&Frame> {
        audible(&self.slots.get(tag)?.as_ref()?.leg)
    }

    fn input_level(&self, tag: usize) -> Option<AudioLevel> {
        self.slots.get(tag)?.as_ref()?.leg.input_level()
    }

    fn set_quiet_floor(&mut self, tag: usize, floor: Option<AudioLevel>) {
        if let Some(Some(s)) = self.slots.get_mut(tag) {
            s.leg.set_quiet_floor(floor);
        }
    }

    fn codec(&self, tag: usize) -> Option<CodecKind> {
        Some(self.slots.get(tag)?.as_ref()?.leg.codec())
    }

    fn send(&mut self, tag: usize, pcm: &Frame, encoded: Option<&[u8]>) {
        let Some(Some(s)) = self.slots.get_mut(tag) else {
            return;
        };
        let io = &mut *self.io;
        let (now, wallclock) = send_time(&s.leg, self.now, self.wallclock, io);
        let endpoint = &s.endpoint;
        let mut out = |port, to, bytes: &[u8]| io.send(endpoint, port, to, bytes);
        match encoded {
            Some(payload) => s
                .leg
                .send_encoded(now, wallclock, self.tick, pcm, payload, &mut out),
            None => s.leg.send(now, wallclock, self.tick, Some(pcm), &mut out),
        }
    }
}

/// The time to send a leg's half tick with: the tick's, unless an RTCP report goes out now,
/// whose DLSR and NTP timestamp must be the true send time.
fn send_time<I: MediaIo>(
    leg: &Leg,
    now: Instant,
    wallclock: SystemTime,
    io: &mut I,
) -> (Instant, SystemTime) {
    if leg.rtcp_due(now) {
        io.now()
    } else {
        (now, wallclock)
    }
}

/// The clock, read once per receive batch and only when a datagram needs it, to place
/// kernel receive timestamps on the monotonic clock.
struct BatchClock(Option<(Instant, SystemTime)>);

impl BatchClock {
    /// When a datagram stamped `stamp` by the kernel arrived (now, if it was not stamped).
    fn arrival<I: MediaIo>(
        &mut self,
        stamp: Option<SystemTime>,
        io: &mut I,
    ) -> (Instant, SystemTime) {
        let (now, wall) = *self.0.get_or_insert_with(|| io.now());
        let Some(stamp) = stamp else {
            return (now, wall);
        };
        // A wallclock stepped back since the datagram arrived counts as no time waited.
        let waited = wall.duration_since(stamp).unwrap_or_default();
        (now.checked_sub(waited).unwrap_or(now), stamp.min(wall))
    }
}

fn receive_leg<E, I: MediaIo<Endpoint = E>>(
    s: &mut Slot<E>,
    now: Instant,
    wallclock: SystemTime,
    n: u64,
    buf: &mut [u8],
    io: &mut I,
) {
    let mut clock = BatchClock(None);
    for _ in 0..MAX_READS_PER_TICK {
        let Some(d) = io.recv(&s.endpoint, Port::Rtp, buf) else {
            break;
        };
        let bytes = &buf[..d.len.min(buf.len())];
        // RTP keeps the tick's time; RTCP (rtcp-mux) its true arrival.
        let (at, wall) = match classify(bytes) {
            PacketKind::Rtcp => clock.arrival(d.stamp, io),
            _ => (now, wallclock),
        };
        s.leg.handle_packet(at, wall, d.from, bytes)
    }
    // RTCP comes every few seconds and its timing comes from the kernel's receive timestamps:
    // read its socket on every eighth tick only, saving a system call per leg per tick.
    if n.is_multiple_of(RTCP_POLL_TICKS) {
        for _ in 0..MAX_READS_PER_TICK {
            let Some(d) = io.recv(&s.endpoint, Port::Rtcp, buf) else {
                break;
            };
            let (at, wall) = clock.arrival(d.stamp, io);
            s.leg
                .handle_rtcp(at, wall, d.from, &buf[..d.len.min(buf.len())])
        }
    }
    s.leg.receive(now);
}
