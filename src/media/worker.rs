//! Media workers: OS threads that each own many legs and their sockets, and tick them all on
//! one absolute 20 ms schedule (`t0 + n·20 ms`, never `sleep(20 ms)` in a loop), so media
//! does not drift. Calls talk to their leg through a [`LegHandle`]; events come back on a
//! tokio channel. A tick more than three frames late skips ahead and is counted.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::UnboundedSender;

use super::leg::{Leg, LegCommand, LegEvent, Port, FRAME};

/// A tick later than this counts as late.
const LATE: Duration = Duration::from_millis(2);
/// The RTCP socket is read every this many ticks.
const RTCP_POLL_TICKS: u64 = 8;
/// Datagrams read from one leg's socket per tick at most, so one flood cannot starve others.
const MAX_READS_PER_TICK: usize = 16;

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
}

enum Command {
    Add {
        id: u64,
        leg: Box<Leg>,
        sockets: LegSockets,
        events: UnboundedSender<LegEvent>,
    },
    Leg(u64, LegCommand),
    Remove(u64),
    Stop,
}

struct Slot {
    id: u64,
    leg: Box<Leg>,
    sockets: LegSockets,
    events: UnboundedSender<LegEvent>,
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
    workers: Vec<(Sender<Command>, Arc<WorkerStats>)>,
    threads: Vec<JoinHandle<()>>,
    next_id: AtomicU64,
}

/// A call's grip on its leg; dropping it removes the leg from its worker.
#[derive(Debug)]
pub struct LegHandle {
    id: u64,
    tx: Sender<Command>,
}

impl LegHandle {
    /// Sends a command, applied at the start of the leg's next tick.
    pub fn send(&self, cmd: LegCommand) {
        let _ = self.tx.send(Command::Leg(self.id, cmd));
    }

    /// A sender for other threads (e.g. a prompt loader); it does not keep the leg alive.
    pub fn sender(&self) -> LegSender {
        LegSender {
            id: self.id,
            tx: self.tx.clone(),
        }
    }
}

/// Sends commands to a leg from anywhere; unlike [`LegHandle`] it does not own the leg.
#[derive(Debug, Clone)]
pub struct LegSender {
    id: u64,
    tx: Sender<Command>,
}

impl LegSender {
    /// Sends a command; ignored once the leg is gone.
    pub fn send(&self, cmd: LegCommand) {
        let _ = self.tx.send(Command::Leg(self.id, cmd));
    }
}

impl Drop for LegHandle {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Remove(self.id));
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Add { id, .. } => write!(f, "Add({id})"),
            Command::Leg(id, c) => write!(f, "Leg({id}, {c:?})"),
            Command::Remove(id) => write!(f, "Remove({id})"),
            Command::Stop => write!(f, "Stop"),
        }
    }
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
        let mut engine = MediaEngine {
            workers: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
            next_id: AtomicU64::new(1),
        };
        for i in 0..n {
            let (tx, rx) = mpsc::channel();
            let stats = Arc::new(WorkerStats::default());
            let s = stats.clone();
            let t = std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || {
                    if realtime_priority > 0 {
                        set_realtime(realtime_priority, i);
                    }
                    run(rx, s)
                })?;
            engine.workers.push((tx, stats));
            engine.threads.push(t);
        }
        Ok(engine)
    }

    /// Per-worker counters.
    pub fn stats(&self) -> Vec<Arc<WorkerStats>> {
        self.workers.iter().map(|w| w.1.clone()).collect()
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
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, _) = self
            .workers
            .iter()
            .min_by_key(|w| w.1.legs.load(Ordering::Relaxed))
            .ok_or_else(|| std::io::Error::other("no media worker"))?;
        tx.send(Command::Add {
            id,
            leg: Box::new(leg),
            sockets,
            events,
        })
        .map_err(|_| std::io::Error::other("media worker stopped"))?;
        Ok(LegHandle { id, tx: tx.clone() })
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        for (tx, _) in &self.workers {
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

fn run(rx: Receiver<Command>, stats: Arc<WorkerStats>) {
    let mut slots: Vec<Slot> = Vec::with_capacity(256);
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
                Ok(Command::Add {
                    id,
                    leg,
                    sockets,
                    events,
                }) => slots.push(Slot {
                    id,
                    leg,
                    sockets,
                    events,
                }),
                Ok(Command::Leg(id, cmd)) => {
                    if let Some(s) = slots.iter_mut().find(|s| s.id == id) {
                        s.leg.apply(now, cmd);
                    }
                }
                Ok(Command::Remove(id)) => {
                    if let Some(i) = slots.iter().position(|s| s.id == id) {
                        let mut s = slots.swap_remove(i);
                        // The call is over: a recording in progress ends as a hangup, digits kept.
                        s.leg.close();
                        if let Some((to, bye)) = s.leg.rtcp_bye() {
                            let _ = s.sockets.rtcp.send_to(bye, to);
                        }
                    }
                }
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => break,
            }
        }
        stats.legs.store(slots.len(), Ordering::Relaxed);
        let wallclock = SystemTime::now();
        for s in &mut slots {
            tick_leg(s, now, wallclock, n, &mut buf);
        }
        stats.ticks.fetch_add(1, Ordering::Relaxed);
        stats
            .busy_us
            .fetch_add(now.elapsed().as_micros() as u64, Ordering::Relaxed);
        n += 1;
    }
}

fn tick_leg(s: &mut Slot, now: Instant, wallclock: SystemTime, n: u64, buf: &mut [u8]) {
    for _ in 0..MAX_READS_PER_TICK {
        match s.sockets.rtp.recv_from(buf) {
            Ok((len, from)) => s.leg.handle_packet(now, wallclock, from, &buf[..len]),
            Err(_) => break,
        }
    }
    // RTCP comes every few seconds and a little delay does not matter: read its socket on
    // every eighth tick only, saving a system call per leg per tick.
    if n.is_multiple_of(RTCP_POLL_TICKS) {
        for _ in 0..MAX_READS_PER_TICK {
            match s.sockets.rtcp.recv_from(buf) {
                Ok((len, _)) => s.leg.handle_rtcp(now, wallclock, &buf[..len]),
                Err(_) => break,
            }
        }
    }
    let sockets = &s.sockets;
    s.leg.tick(
        now,
        wallclock,
        n,
        &mut |port: Port, to: SocketAddr, bytes: &[u8]| {
            let socket = match port {
                Port::Rtp => &sockets.rtp,
                Port::Rtcp => &sockets.rtcp,
            };
            // Non-blocking: a full socket buffer drops the frame rather than stall every leg.
            let _ = socket.send_to(bytes, to);
        },
    );
    while let Some(e) = s.leg.poll_event() {
        let _ = s.events.send(e);
    }
}
