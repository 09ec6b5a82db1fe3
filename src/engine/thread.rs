//! The media worker threads and the handles calls hold: [`MediaEngine`] starts one OS thread
//! per worker (real-time priority where permitted), each a thin loop that sleeps until its
//! [`MediaClock`] deadline, applies commands and runs the socket-free [`Worker`] tick over
//! its [`MediaIo`]: one io_uring per worker, or [`SocketIo`] ([`IoMode`]). Calls talk to
//! their leg through a [`LegHandle`]; events come back on a tokio channel.
//!
//! A room and all its members live on one worker, so mixing takes no locks: a leg is moved
//! to its room's worker before it joins ([`MediaEngine::move_leg`]). Its handle follows it,
//! and the old worker forwards commands that still reach it for a while. Bridged legs share
//! a worker the same way: [`MediaEngine::bridge`] moves the second leg to the first's.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc::UnboundedSender;

use super::clock::MediaClock;
use super::io::{IoMode, LegSockets, MediaIo, SocketIo};
use super::worker::{Command, Route, Worker, WorkerStats};
use crate::conference::host::{RoomCommand, RoomHost};
use crate::conference::registry::{RoomLeg, RoomWorkers};
use crate::media::leg::{Leg, LegCommand, LegEvent};

/// The set of media workers.
pub struct MediaEngine {
    workers: Arc<Vec<Sender<Command<LegSockets>>>>,
    stats: Vec<Arc<WorkerStats>>,
    threads: Vec<JoinHandle<()>>,
    next_id: AtomicU64,
}

/// A call's grip on its leg; dropping it removes the leg from its worker.
#[derive(Debug)]
pub struct LegHandle {
    id: u64,
    route: Arc<Route<LegSockets>>,
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

    /// Moves the leg, with its sockets, events and id, to worker `to`; resolves once
    /// commands sent through this handle reach the new worker after the leg itself.
    pub async fn move_to(&self, to: usize) -> Result<(), MoveError> {
        if to >= self.route.workers.len() {
            return Err(MoveError::NoWorker(to));
        }
        if self.worker() == to {
            return Ok(());
        }
        let (done, rx) = tokio::sync::oneshot::channel();
        self.route.send(Command::Move {
            id: self.id,
            to,
            done,
        });
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(MoveError::Refused),
        }
    }

    /// Bridges this leg with `other`, moving `other` to this leg's worker first: each then
    /// sends what the other hears, transcoded when their codecs differ, until either is
    /// unbridged or removed.
    pub async fn bridge(&self, other: &LegHandle) -> Result<(), BridgeError> {
        if self.id == other.id {
            return Err(BridgeError::SameLeg);
        }
        other.move_to(self.worker()).await?;
        let (done, rx) = tokio::sync::oneshot::channel();
        self.route.send(Command::Bridge {
            a: self.id,
            b: other.id,
            done,
        });
        // No answer: the worker has stopped, and the leg with it.
        rx.await.unwrap_or(Err(BridgeError::Gone(self.id)))
    }

    /// Ends this leg's bridge, for both legs; each then sends as a plain leg (silence unless
    /// told otherwise). Nothing happens when it is in none.
    pub fn unbridge(&self) {
        self.route.send(Command::Unbridge(self.id));
    }
}

/// Sends commands to a leg from anywhere; unlike [`LegHandle`] it does not own the leg.
#[derive(Debug, Clone)]
pub struct LegSender {
    id: u64,
    route: Arc<Route<LegSockets>>,
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

/// A leg could not be moved to another worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    /// No worker with that index.
    #[error("no media worker {0}")]
    NoWorker(usize),
    /// The leg is gone, in a room (a member stays with its room) or bridged (it stays with
    /// its peer).
    #[error("leg cannot move now")]
    Refused,
}

/// Two legs could not be bridged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// A leg bridged with itself.
    #[error("a leg cannot be bridged with itself")]
    SameLeg,
    /// The leg with this id is gone (or not on the worker asked).
    #[error("leg {0} is gone")]
    Gone(u64),
    /// The leg with this id is in a conference room.
    #[error("leg {0} is in a room")]
    InRoom(u64),
    /// The leg with this id is bridged with another leg already.
    #[error("leg {0} is bridged already")]
    Bridged(u64),
    /// The second leg could not be moved to the first one's worker.
    #[error("moving the leg to its peer's worker: {0}")]
    Move(#[from] MoveError),
}

impl MediaEngine {
    /// Starts `workers` threads (0: one per core). With `realtime_priority` > 0 the threads ask
    /// for SCHED_FIFO at that priority, so a busy machine delays the media tick less; where
    /// that is not permitted they run at normal priority and say so once.
    pub fn start(workers: usize, realtime_priority: i32) -> std::io::Result<MediaEngine> {
        Self::start_with_io(workers, realtime_priority, IoMode::default())
    }

    /// As [`MediaEngine::start`], the workers moving datagrams as `io` says.
    pub fn start_with_io(
        workers: usize,
        realtime_priority: i32,
        io: IoMode,
    ) -> std::io::Result<MediaEngine> {
        let uring = choose(io, probe_uring)?;
        let n = if workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers
        };
        tracing::info!(
            workers = n,
            io = if uring { "uring" } else { "sockets" },
            "media engine started"
        );
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
                    if uring {
                        match uring_io() {
                            Ok(io) => return run(rx, s, peers, io),
                            Err(e) => tracing::warn!(
                                worker = i,
                                error = %e,
                                "media worker falls back to plain sockets"
                            ),
                        }
                    }
                    run(rx, s, peers, SocketIo)
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
        mut sockets: LegSockets,
        events: UnboundedSender<LegEvent>,
    ) -> std::io::Result<LegHandle> {
        sockets.prepare(leg.rtcp_mux())?;
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
                endpoint: sockets,
                events,
                route: route.clone(),
            })
            .map_err(|_| std::io::Error::other("media worker stopped"))?;
        Ok(LegHandle { id, route })
    }

    /// Moves a leg, with its sockets, events and id, to worker `to`; resolves once commands
    /// sent through its handle reach the new worker after the leg itself.
    pub async fn move_leg(&self, leg: &LegHandle, to: usize) -> Result<(), MoveError> {
        leg.move_to(to).await
    }

    /// Bridges legs `a` and `b`, moving `b` to `a`'s worker first (see [`LegHandle::bridge`]).
    pub async fn bridge(&self, a: &LegHandle, b: &LegHandle) -> Result<(), BridgeError> {
        a.bridge(b).await
    }

    /// Ends `a`'s bridge, for both of its legs.
    pub fn unbridge(&self, a: &LegHandle) {
        a.unbridge();
    }

    /// Places a new room on worker `worker` (see [`MediaEngine::least_loaded`]); false when
    /// that worker has stopped.
    pub fn add_room(&self, worker: usize, host: RoomHost) -> bool {
        if let Some(s) = self.stats.get(worker) {
            s.rooms.fetch_add(1, Ordering::Relaxed);
        }
        self.workers
            .get(worker)
            .is_some_and(|tx| tx.send(Command::AddRoom(Box::new(host))).is_ok())
    }

    /// Sends a command to a room on `worker`; false when the worker has stopped.
    pub fn room_command(&self, worker: usize, room: u64, cmd: RoomCommand) -> bool {
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

impl RoomWorkers for MediaEngine {
    fn least_loaded(&self) -> usize {
        MediaEngine::least_loaded(self)
    }

    fn add_room(&self, worker: usize, host: RoomHost) -> bool {
        MediaEngine::add_room(self, worker, host)
    }

    fn room_command(&self, worker: usize, room: u64, cmd: RoomCommand) -> bool {
        MediaEngine::room_command(self, worker, room, cmd)
    }
}

impl RoomLeg for LegHandle {
    fn id(&self) -> u64 {
        self.id
    }

    fn move_to(
        &self,
        worker: usize,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            LegHandle::move_to(self, worker)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Whether the workers use io_uring, given the mode and, when it matters, whether the
/// kernel allows it (`probe`, asked at most once).
pub(crate) fn choose(
    mode: IoMode,
    probe: impl FnOnce() -> Result<(), String>,
) -> std::io::Result<bool> {
    match mode {
        IoMode::Sockets => Ok(false),
        IoMode::Uring => probe()
            .map(|()| true)
            .map_err(|why| std::io::Error::other(format!("[media] io = \"uring\": {why}"))),
        IoMode::Auto => match probe() {
            Ok(()) => Ok(true),
            Err(why) => {
                tracing::info!(reason = %why, "media workers use plain sockets: no io_uring");
                Ok(false)
            }
        },
    }
}

#[cfg(target_os = "linux")]
fn probe_uring() -> Result<(), String> {
    super::uring::available().map_err(|e| e.to_string())
}

#[cfg(not(target_os = "linux"))]
fn probe_uring() -> Result<(), String> {
    Err("io_uring is Linux's".into())
}

#[cfg(target_os = "linux")]
fn uring_io() -> std::io::Result<super::uring::UringIo> {
    super::uring::UringIo::new()
}

#[cfg(not(target_os = "linux"))]
fn uring_io() -> std::io::Result<SocketIo> {
    Err(std::io::Error::other("io_uring is Linux's"))
}

/// One worker's thread: sleep until the clock's deadline, apply commands, tick.
fn run<I: MediaIo<Endpoint = LegSockets>>(
    rx: Receiver<Command<LegSockets>>,
    stats: Arc<WorkerStats>,
    peers: Arc<Vec<Sender<Command<LegSockets>>>>,
    mut io: I,
) {
    let mut w = Worker::with_peers(stats, peers);
    let mut clock = MediaClock::new(Instant::now());
    loop {
        io.sleep_until(clock.deadline());
        let now = Instant::now();
        let tick = clock.start(now);
        let stats = w.stats();
        if tick.late {
            stats.late_ticks.fetch_add(1, Ordering::Relaxed);
        }
        stats
            .max_lateness_us
            .fetch_max(tick.lateness.as_micros() as u64, Ordering::Relaxed);
        if tick.skipped > 0 {
            stats
                .skipped_ticks
                .fetch_add(tick.skipped, Ordering::Relaxed);
            tracing::warn!(
                late_ms = tick.lateness.as_millis() as u64,
                "media tick skipped ahead"
            );
        }
        loop {
            match rx.try_recv() {
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return,
                Ok(cmd) => w.command(now, tick.n, cmd, &mut io),
                Err(TryRecvError::Empty) => break,
            }
        }
        w.tick(tick.n, now, SystemTime::now(), &mut io);
        w.stats()
            .busy_us
            .fetch_add(now.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}
