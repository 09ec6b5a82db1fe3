//! Media workers: OS threads that each own many legs and their sockets, and the conference
//! rooms those legs are in, and tick them all on one absolute 20 ms schedule (`t0 + n·20 ms`,
//! never `sleep(20 ms)` in a loop), so media does not drift. Calls talk to their leg through a
//! [`LegHandle`]; events come back on a tokio channel. A tick more than three frames late
//! skips ahead and is counted.
//!
//! A room and all its members live on one worker, so mixing takes no locks: a leg is moved
//! to its room's worker before it joins ([`MediaEngine::move_leg`]). Its handle follows it,
//! and the old worker forwards commands that still reach it for a while.
//!
//! Order of a tick: commands; every leg's receive half (sockets, jitter buffer, decode,
//! digits); each room's mix and its members' send halves; the send half of every leg not in
//! a room; events to calls and key presses to rooms; room events.
//!
//! RTCP timing is not the tick's: peers compute round-trip times from the delay between our
//! reading their sender report and sending ours (DLSR), so the legs are given true times.
//! RTCP datagrams carry the kernel's receive timestamp (the time they reached the socket, not
//! the later tick that read them), turned into an `Instant` with one clock reading per
//! receive batch; a leg whose report is due is sent with the clock read just then.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::UnboundedSender;

use super::codec::CodecKind;
use super::frame::{Frame, FRAME};
use super::leg::{Leg, LegCommand, LegEvent, LegStats, Port};
use super::stamp;
use crate::conference::host::{MemberLegs, RoomCommand, RoomHost};
use crate::conference::MemberId;
use crate::rtp::packet::{classify, PacketKind};

/// A tick later than this counts as late.
const LATE: Duration = Duration::from_millis(2);
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
}

pub(crate) enum Command {
    Add {
        id: u64,
        leg: Box<Leg>,
        sockets: LegSockets,
        events: UnboundedSender<LegEvent>,
        route: Arc<Route>,
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
    Stop,
}

struct Slot {
    id: u64,
    leg: Box<Leg>,
    sockets: LegSockets,
    events: UnboundedSender<LegEvent>,
    route: Arc<Route>,
    /// The room (by id) and membership, while the leg is in one.
    room: Option<(u64, MemberId)>,
}

/// Where a leg lives now: shared by its handle, its senders and its worker.
#[derive(Debug)]
pub(crate) struct Route {
    worker: AtomicUsize,
    workers: Arc<Vec<Sender<Command>>>,
}

impl Route {
    fn send(&self, cmd: Command) {
        let i = self.worker.load(Ordering::Acquire);
        if let Some(tx) = self.workers.get(i) {
            let _ = tx.send(cmd);
        }
    }
}

/// A leg's RTP and RTCP sockets.
#[derive(Debug)]
pub struct LegSockets {
    /// RTP (even port).
    pub rtp: UdpSocket,
    /// RTCP (RTP port + 1).
    pub rtcp: UdpSocket,
}

/// The set of media workers.
pub struct MediaEngine {
    workers: Arc<Vec<Sender<Command>>>,
    stats: Vec<Arc<WorkerStats>>,
    threads: Vec<JoinHandle<()>>,
    next_id: AtomicU64,
}

/// A call's grip on its leg; dropping it removes the leg from its worker.
#[derive(Debug)]
pub struct LegHandle {
    id: u64,
    route: Arc<Route>,
}

impl LegHandle {
    /// Sends a command, applied at the start of the leg's next tick.
    pub fn send(&self, cmd: LegCommand) {
        self.route.send(Command::Leg(self.id, cmd));
    }

    /// A sender for other threads (e.g. a prompt loader); it does not keep the leg alive.
    pub fn sender(&self) -> LegSender {
        LegSender {
            id: self.id,
            route: self.route.clone(),
        }
    }

    /// The leg's id, unique in its engine.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The worker the leg lives on now.
    pub fn worker(&self) -> usize {
        self.route.worker.load(Ordering::Acquire)
    }
}

/// Sends commands to a leg from anywhere; unlike [`LegHandle`] it does not own the leg.
#[derive(Debug, Clone)]
pub struct LegSender {
    id: u64,
    route: Arc<Route>,
}

impl LegSender {
    /// Sends a command; ignored once the leg is gone.
    pub fn send(&self, cmd: LegCommand) {
        self.route.send(Command::Leg(self.id, cmd));
    }
}

impl Drop for LegHandle {
    fn drop(&mut self) {
        self.route.send(Command::Remove(self.id));
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Add { id, .. } => write!(f, "Add({id})"),
            Command::Leg(id, c) => write!(f, "Leg({id}, {c:?})"),
            Command::Remove(id) => write!(f, "Remove({id})"),
            Command::Move { id, to, .. } => write!(f, "Move({id} to {to})"),
            Command::AddRoom(h) => write!(f, "AddRoom({})", h.id()),
            Command::Room(id, c) => write!(f, "Room({id}, {c:?})"),
            Command::Stop => write!(f, "Stop"),
        }
    }
}

/// A leg could not be moved to another worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    /// No worker with that index.
    #[error("no media worker {0}")]
    NoWorker(usize),
    /// The leg is gone, or in a room (a member stays with its room).
    #[error("leg cannot move now")]
    Refused,
}

impl MediaEngine {
    /// Starts `workers` threads (0: one per core). With `realtime_priority` > 0 the threads ask
    /// for SCHED_FIFO at that priority, so a busy machine delays the media tick less; where
    /// that is not permitted they run at normal priority and say so once.
    pub fn start(workers: usize, realtime_priority: i32) -> std::io::Result<MediaEngine> {
        let n = if workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers
        };
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel()).unzip();
        let txs = Arc::new(txs);
        let mut engine = MediaEngine {
            workers: txs.clone(),
            stats: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
            next_id: AtomicU64::new(1),
        };
        for (i, rx) in rxs.into_iter().enumerate() {
            let stats = Arc::new(WorkerStats::default());
            let s = stats.clone();
            let peers = txs.clone();
            let t = std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || {
                    if realtime_priority > 0 {
                        set_realtime(realtime_priority, i);
                    }
                    run(rx, s, peers)
                })?;
            engine.stats.push(stats);
            engine.threads.push(t);
        }
        Ok(engine)
    }

    /// Per-worker counters.
    pub fn stats(&self) -> Vec<Arc<WorkerStats>> {
        self.stats.clone()
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The worker with the fewest legs (rooms break ties).
    pub fn least_loaded(&self) -> usize {
        self.stats
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| {
                (
                    s.legs.load(Ordering::Relaxed),
                    s.rooms.load(Ordering::Relaxed),
                )
            })
            .map_or(0, |(i, _)| i)
    }

    /// Hands a leg and its sockets to the least loaded worker.
    pub fn add(
        &self,
        leg: Leg,
        sockets: LegSockets,
        events: UnboundedSender<LegEvent>,
    ) -> std::io::Result<LegHandle> {
        sockets.rtp.set_nonblocking(true)?;
        sockets.rtcp.set_nonblocking(true)?;
        for socket in [&sockets.rtp, &sockets.rtcp] {
            if let Err(e) = stamp::enable(socket) {
                // Reports still work, with the read time standing in for the arrival time.
                tracing::debug!(error = %e, "no receive timestamps on a media socket");
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let worker = self.least_loaded();
        // Counted at once, so that legs added in a burst spread over the workers.
        if let Some(s) = self.stats.get(worker) {
            s.legs.fetch_add(1, Ordering::Relaxed);
        }
        let route = Arc::new(Route {
            worker: AtomicUsize::new(worker),
            workers: self.workers.clone(),
        });
        self.workers
            .get(worker)
            .ok_or_else(|| std::io::Error::other("no media worker"))?
            .send(Command::Add {
                id,
                leg: Box::new(leg),
                sockets,
                events,
                route: route.clone(),
            })
            .map_err(|_| std::io::Error::other("media worker stopped"))?;
        Ok(LegHandle { id, route })
    }

    /// Moves a leg, with its sockets, events and id, to worker `to`; resolves once commands
    /// sent through its handle reach the new worker after the leg itself.
    pub async fn move_leg(&self, leg: &LegHandle, to: usize) -> Result<(), MoveError> {
        if to >= self.workers.len() {
            return Err(MoveError::NoWorker(to));
        }
        if leg.worker() == to {
            return Ok(());
        }
        let (done, rx) = tokio::sync::oneshot::channel();
        leg.route.send(Command::Move {
            id: leg.id,
            to,
            done,
        });
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(MoveError::Refused),
        }
    }

    /// Places a new room on worker `worker` (see [`MediaEngine::least_loaded`]); false when
    /// that worker has stopped.
    pub(crate) fn add_room(&self, worker: usize, host: RoomHost) -> bool {
        if let Some(s) = self.stats.get(worker) {
            s.rooms.fetch_add(1, Ordering::Relaxed);
        }
        self.workers
            .get(worker)
            .is_some_and(|tx| tx.send(Command::AddRoom(Box::new(host))).is_ok())
    }

    /// Sends a command to a room on `worker`; false when the worker has stopped.
    pub(crate) fn room_command(&self, worker: usize, room: u64, cmd: RoomCommand) -> bool {
        self.workers
            .get(worker)
            .is_some_and(|tx| tx.send(Command::Room(room, cmd)).is_ok())
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        for tx in self.workers.iter() {
            let _ = tx.send(Command::Stop);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(target_os = "linux")]
fn set_realtime(priority: i32, worker: usize) {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: plain FFI call on the current thread with a valid, initialised parameter.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if rc != 0 && worker == 0 {
        tracing::info!(
            error = %std::io::Error::from_raw_os_error(rc),
            "media workers run without real-time priority"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn set_realtime(_priority: i32, _worker: usize) {}

/// One worker's state, owned by its thread.
struct Worker {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    rooms: Vec<RoomHost>,
    /// Legs that moved away: (leg id, new worker, last tick to forward).
    forwards: Vec<(u64, usize, u64)>,
    peers: Arc<Vec<Sender<Command>>>,
    /// Counters of legs that are gone, so the totals never go backwards.
    retired: LegStats,
    stats: Arc<WorkerStats>,
}

fn run(rx: Receiver<Command>, stats: Arc<WorkerStats>, peers: Arc<Vec<Sender<Command>>>) {
    let mut w = Worker {
        slots: Vec::with_capacity(256),
        free: Vec::with_capacity(256),
        by_id: HashMap::with_capacity(256),
        rooms: Vec::with_capacity(16),
        forwards: Vec::new(),
        peers,
        retired: LegStats::default(),
        stats,
    };
    let mut buf = [0u8; 2048];
    let t0 = Instant::now();
    let mut n: u64 = 0;
    loop {
        let deadline = t0 + FRAME * n as u32;
        let now = Instant::now();
        if now < deadline {
            std::thread::sleep(deadline - now);
        }
        let now = Instant::now();
        let lateness = now.saturating_duration_since(deadline);
        let stats = &w.stats;
        if lateness > LATE {
            stats.late_ticks.fetch_add(1, Ordering::Relaxed);
        }
        stats
            .max_lateness_us
            .fetch_max(lateness.as_micros() as u64, Ordering::Relaxed);
        if lateness > FRAME * 3 {
            // Far behind (the machine stalled): catch up instead of bursting frames out.
            let behind = (lateness.as_nanos() / FRAME.as_nanos()) as u64;
            stats.skipped_ticks.fetch_add(behind, Ordering::Relaxed);
            n += behind;
            tracing::warn!(
                late_ms = lateness.as_millis() as u64,
                "media tick skipped ahead"
            );
        }
        loop {
            match rx.try_recv() {
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return,
                Ok(cmd) => w.command(now, n, cmd),
                Err(TryRecvError::Empty) => break,
            }
        }
        w.forwards.retain(|f| f.2 >= n);
        let wallclock = SystemTime::now();
        w.tick(now, wallclock, n, &mut buf);
        w.stats.ticks.fetch_add(1, Ordering::Relaxed);
        w.stats
            .busy_us
            .fetch_add(now.elapsed().as_micros() as u64, Ordering::Relaxed);
        n += 1;
    }
}

impl Worker {
    fn slot_of(&mut self, id: u64) -> Option<(usize, &mut Slot)> {
        let i = *self.by_id.get(&id)?;
        self.slots.get_mut(i)?.as_mut().map(|s| (i, s))
    }

    /// Hands a command for a leg that moved away to its new worker; false if it never did.
    fn forward(&self, id: u64, cmd: Command) -> bool {
        match self.forwards.iter().find(|f| f.0 == id) {
            Some(&(_, to, _)) => {
                if let Some(tx) = self.peers.get(to) {
                    let _ = tx.send(cmd);
                }
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, slot: Slot) -> usize {
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

    fn take(&mut self, i: usize) -> Option<Slot> {
        let s = self.slots.get_mut(i)?.take()?;
        self.by_id.remove(&s.id);
        self.free.push(i);
        Some(s)
    }

    fn command(&mut self, now: Instant, n: u64, cmd: Command) {
        match cmd {
            Command::Add {
                id,
                leg,
                sockets,
                events,
                route,
            } => {
                self.insert(Slot {
                    id,
                    leg,
                    sockets,
                    events,
                    route,
                    room: None,
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
                    self.room_command(now, room, RoomCommand::Hangup { member });
                }
                if let Some(mut s) = self.take(i) {
                    // The call is over: a recording in progress ends as a hangup, digits kept.
                    s.leg.close();
                    if let Some((to, bye)) = s.leg.rtcp_bye() {
                        let _ = s.sockets.rtcp.send_to(bye, to);
                    }
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
                        self.forward_move(id, Command::Move { id, to, done })
                    {
                        let _ = done.send(false);
                    }
                    return;
                };
                if s.room.is_some() || self.peers.get(to).is_none() {
                    let _ = done.send(false);
                    return;
                }
                let Some(s) = self.take(i) else {
                    let _ = done.send(false);
                    return;
                };
                let route = s.route.clone();
                add_stats(&mut self.retired, s.leg.stats());
                let sent = self.peers[to].send(Command::Add {
                    id,
                    leg: s.leg,
                    sockets: s.sockets,
                    events: s.events,
                    route: route.clone(),
                });
                if sent.is_ok() {
                    route.worker.store(to, Ordering::Release);
                    self.forwards.push((id, to, n + FORWARD_TICKS));
                }
                let _ = done.send(sent.is_ok());
            }
            Command::AddRoom(host) => self.rooms.push(*host),
            Command::Room(room, cmd) => self.room_command(now, room, cmd),
            Command::Stop => {}
        }
    }

    fn forward_move(&self, id: u64, cmd: Command) -> Result<(), Command> {
        match self.forwards.iter().find(|f| f.0 == id) {
            Some(&(_, to, _)) => match self.peers.get(to) {
                Some(tx) => tx.send(cmd).map_err(|e| e.0),
                None => Err(cmd),
            },
            None => Err(cmd),
        }
    }

    fn room_command(&mut self, now: Instant, room: u64, cmd: RoomCommand) {
        let Some(r) = self.rooms.iter().position(|h| h.id() == room) else {
            cmd.refuse_gone();
            return;
        };
        let mut legs = Legs {
            slots: &mut self.slots,
            by_id: &self.by_id,
            tick: 0,
            now,
            wallclock: SystemTime::now(),
        };
        self.rooms[r].command(now, cmd, &mut legs);
        self.rooms[r].flush(now, &mut legs);
    }

    fn tick(&mut self, now: Instant, wallclock: SystemTime, n: u64, buf: &mut [u8]) {
        let mut live = LegStats::default();
        for s in self.slots.iter_mut().flatten() {
            receive_leg(s, now, wallclock, n, buf);
        }
        let mut legs = Legs {
            slots: &mut self.slots,
            by_id: &self.by_id,
            tick: n,
            now,
            wallclock,
        };
        let mut members = 0;
        for host in &mut self.rooms {
            host.tick(now, &mut legs);
            members += host.len();
        }
        for s in self.slots.iter_mut().flatten() {
            if s.room.is_none() {
                let sockets = &s.sockets;
                let (now, wallclock) = send_time(&s.leg, now, wallclock);
                s.leg.send(now, wallclock, n, None, &mut |port, to, bytes| {
                    send_on(sockets, port, to, bytes)
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
        };
        for host in &mut self.rooms {
            host.flush(now, &mut legs);
        }
        self.rooms.retain_mut(|h| !h.close_if_done(now));
        let stats = &self.stats;
        stats.rooms.store(self.rooms.len(), Ordering::Relaxed);
        stats.legs.store(self.by_id.len(), Ordering::Relaxed);
        stats.members.store(members, Ordering::Relaxed);
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
    }
}

fn add_stats(total: &mut LegStats, s: LegStats) {
    total.packets_in += s.packets_in;
    total.packets_out += s.packets_out;
    total.frames_concealed += s.frames_concealed;
    total.frames_decoded += s.frames_decoded;
    total.dropped += s.dropped;
    total.packets_lost += s.packets_lost;
}

fn send_on(sockets: &LegSockets, port: Port, to: SocketAddr, bytes: &[u8]) {
    let socket = match port {
        Port::Rtp => &sockets.rtp,
        Port::Rtcp => &sockets.rtcp,
    };
    // Non-blocking: a full socket buffer drops the frame rather than stall every leg.
    let _ = socket.send_to(bytes, to);
}

/// The worker's legs as a room sees its members.
struct Legs<'a> {
    slots: &'a mut Vec<Option<Slot>>,
    by_id: &'a HashMap<u64, usize>,
    tick: u64,
    now: Instant,
    wallclock: SystemTime,
}

impl MemberLegs for Legs<'_> {
    fn find(&self, leg: u64) -> Option<usize> {
        let i = *self.by_id.get(&leg)?;
        let s = self.slots.get(i)?.as_ref()?;
        s.room.is_none().then_some(i)
    }

    fn bind(&mut self, tag: usize, room: Option<(u64, MemberId)>) {
        if let Some(Some(s)) = self.slots.get_mut(tag) {
            s.room = room;
        }
    }

    fn input(&self, tag: usize) -> Option<&Frame> {
        let s = self.slots.get(tag)?.as_ref()?;
        (s.leg.hearing() && !s.leg.dtmf_sounding()).then(|| s.leg.input())
    }

    fn codec(&self, tag: usize) -> Option<CodecKind> {
        Some(self.slots.get(tag)?.as_ref()?.leg.codec())
    }

    fn send(&mut self, tag: usize, pcm: &Frame, encoded: Option<&[u8]>) {
        let Some(Some(s)) = self.slots.get_mut(tag) else {
            return;
        };
        let sockets = &s.sockets;
        let mut out = |port, to, bytes: &[u8]| send_on(sockets, port, to, bytes);
        let (now, wallclock) = send_time(&s.leg, self.now, self.wallclock);
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
fn send_time(leg: &Leg, now: Instant, wallclock: SystemTime) -> (Instant, SystemTime) {
    if leg.rtcp_due(now) {
        (Instant::now(), SystemTime::now())
    } else {
        (now, wallclock)
    }
}

/// The clock, read once per receive batch and only when a datagram needs it, to place
/// kernel receive timestamps on the monotonic clock.
struct BatchClock(Option<(Instant, SystemTime)>);

impl BatchClock {
    /// When a datagram stamped `stamp` by the kernel arrived (now, if it was not stamped).
    fn arrival(&mut self, stamp: Option<SystemTime>) -> (Instant, SystemTime) {
        let (now, wall) = *self
            .0
            .get_or_insert_with(|| (Instant::now(), SystemTime::now()));
        let Some(stamp) = stamp else {
            return (now, wall);
        };
        // A wallclock stepped back since the datagram arrived counts as no time waited.
        let waited = wall.duration_since(stamp).unwrap_or_default();
        (now.checked_sub(waited).unwrap_or(now), stamp.min(wall))
    }
}

fn receive_leg(s: &mut Slot, now: Instant, wallclock: SystemTime, n: u64, buf: &mut [u8]) {
    let mut clock = BatchClock(None);
    for _ in 0..MAX_READS_PER_TICK {
        match stamp::recv(&s.sockets.rtp, buf) {
            Ok((len, from, stamp)) => {
                let bytes = &buf[..len];
                // RTP keeps the tick's time; RTCP (rtcp-mux) its true arrival.
                let (at, wall) = match classify(bytes) {
                    PacketKind::Rtcp => clock.arrival(stamp),
                    _ => (now, wallclock),
                };
                s.leg.handle_packet(at, wall, from, bytes)
            }
            Err(_) => break,
        }
    }
    // RTCP comes every few seconds and its timing comes from the kernel's receive timestamps:
    // read its socket on every eighth tick only, saving a system call per leg per tick.
    if n.is_multiple_of(RTCP_POLL_TICKS) {
        for _ in 0..MAX_READS_PER_TICK {
            match stamp::recv(&s.sockets.rtcp, buf) {
                Ok((len, from, stamp)) => {
                    let (at, wall) = clock.arrival(stamp);
                    s.leg.handle_rtcp(at, wall, from, &buf[..len])
                }
                Err(_) => break,
            }
        }
    }
    s.leg.receive(now);
}
