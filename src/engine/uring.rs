//! [`UringIo`]: a worker's datagrams through one io_uring, so that a tick costs one system
//! call for all its legs instead of three or four per leg.
//!
//! Receives: every attached leg's RTP and RTCP socket has a multishot `recvmsg` armed, which
//! takes buffers from a ring of provided buffers as datagrams arrive (with the source
//! address and, where `SO_TIMESTAMPNS` is on, the kernel's receive time). At the start of a
//! tick the completions are moved into small per-leg, per-port queues that the worker's
//! `recv` drains, handing each buffer back to the ring. Sends: bytes and address are copied
//! into a preallocated slab and queued as submissions. [`MediaIo::sleep_until`] submits them
//! all and waits for the next deadline in the same `io_uring_enter`.
//!
//! The ring runs its task work deferred, so datagrams arriving while the worker waits do not
//! wake it: their receives run in one batch when the wait ends. That also means a single
//! issuer: a `UringIo` is made and used on its worker's thread only.
//!
//! Every receive carries its leg's place and that place's generation; a leg that goes has
//! its receives cancelled and its place's generation bumped, so a late completion for it
//! only returns its buffer and never reaches a leg that took the place since. Nothing here
//! allocates once a leg is attached: a full queue, ring or slab drops the datagram and
//! counts it.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Instant, SystemTime};

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

use super::io::{Datagram, LegSockets, MediaIo, SocketIo};
use crate::media::leg::Port;
use crate::media::stamp;

/// Receive buffers a worker's ring provides by default (a power of two).
pub const DEFAULT_BUFFERS: u16 = 2048;
/// Sends a worker can have in flight by default.
pub const DEFAULT_SENDS: usize = 1024;
/// Datagrams queued per leg and port between ticks; more in one tick are dropped.
pub const QUEUE: usize = 32;

/// Room for the source address a receive writes: a `sockaddr_in6` (28 bytes), rounded up
/// so that the control messages after it stay aligned.
const NAME_LEN: usize = 32;
/// Room for the control messages a receive writes: one `SCM_TIMESTAMPNS`, with spare.
const CONTROL_LEN: usize = 64;
/// The header a multishot `recvmsg` writes before the name (`io_uring_recvmsg_out`).
const OUT_LEN: usize = 16;
/// One receive buffer: header, name, control, and a payload as large as the worker reads.
const BUF_LEN: usize = OUT_LEN + NAME_LEN + CONTROL_LEN + 2048;
/// Largest datagram sent through the slab (a UDP payload in a 1500-byte MTU); larger ones
/// are sent with a plain `sendto`.
const SEND_LEN: usize = 1472;
/// The buffer group of the receive ring.
const GROUP: u16 = 0;
/// Submission queue entries; a fuller queue is submitted early.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries, room for every leg's sends and receives of a tick.
const CQ_ENTRIES: u32 = 8192;

/// What a completion is for, in the top two bits of its user data.
const KIND_SHIFT: u32 = 62;
const KIND_RTP: u64 = 0;
const KIND_RTCP: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_CANCEL: u64 = 3;
/// `IORING_ENTER_GETEVENTS`: an enter that also runs deferred receives.
const GETEVENTS: u32 = 1;
/// Generations wrap within the 30 bits between the kind and the place.
const GEN_MASK: u32 = (1 << 30) - 1;

/// Why io_uring cannot carry a worker's datagrams here.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The kernel is older than deferred task running (6.1).
    #[error("kernel {0} is older than 6.1")]
    OldKernel(String),
    /// Setting up the ring or its buffers failed (`io_uring_disabled`, seccomp, limits).
    #[error("io_uring set-up failed: {0}")]
    Setup(#[from] io::Error),
}

/// Whether this kernel and process allow [`UringIo`]: a recent enough kernel, and a ring
/// with its buffers actually set up (and dropped again).
pub fn available() -> Result<(), Unavailable> {
    let release = kernel_release();
    if !kernel_supports(&release) {
        return Err(Unavailable::OldKernel(release));
    }
    UringIo::with_capacity(8, 8)?;
    Ok(())
}

fn kernel_release() -> String {
    // SAFETY: all-zero is a valid utsname, which uname fills.
    let mut u: libc::utsname = unsafe { zeroed() };
    // SAFETY: a valid pointer to a utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::from("unknown");
    }
    u.release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect()
}

/// Whether a kernel release string (`6.1.0-18-amd64`) is 6.1 or later: multishot `recvmsg`
/// and `send` to an address came in 6.0, deferred task running in 6.1.
pub fn kernel_supports(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    let major = parts.next().flatten().unwrap_or(0);
    let minor = parts.next().flatten().unwrap_or(0);
    (major, minor) >= (6, 1)
}

/// Counters of one [`UringIo`], ever.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UringCounters {
    /// Datagrams dropped because their leg's queue was full.
    pub queue_drops: u64,
    /// Times a receive stopped for want of buffers (then re-armed; the datagrams wait in
    /// the socket meanwhile).
    pub starved: u64,
    /// Receives re-armed after they stopped.
    pub rearms: u64,
    /// Datagrams not sent because the slab or the submission queue was full.
    pub send_drops: u64,
    /// Sends the kernel refused.
    pub send_errors: u64,
    /// Receives completed for legs that had gone (their buffers returned, nothing else).
    pub stale: u64,
}

/// Zeroed memory of a given layout, freed on drop; the kernel reads and writes it.
struct Region {
    ptr: *mut u8,
    layout: Layout,
}

impl Region {
    fn new(len: usize, align: usize) -> io::Result<Region> {
        let layout = Layout::from_size_align(len.max(1), align)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout's size is not zero.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "ring memory"));
        }
        Ok(Region { ptr, layout })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// The provided-buffer ring: `count` entries the kernel takes buffers from, and the buffers.
struct Buffers {
    ring: Region,
    data: Region,
    mask: u16,
    /// Our tail: entries before it are the kernel's once published.
    tail: u16,
}

impl Buffers {
    fn new(count: u16) -> io::Result<Buffers> {
        let n = usize::from(count);
        let ring = Region::new(n * size_of::<BufRingEntry>(), 4096)?;
        let data = Region::new(n * BUF_LEN, 4096)?;
        let mut b = Buffers {
            ring,
            data,
            mask: count - 1,
            tail: 0,
        };
        for bid in 0..count {
            b.give(bid);
        }
        b.publish();
        Ok(b)
    }

    fn buffer(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid is below count (the kernel hands back only ids we gave it), so the
        // offset stays within `data`.
        unsafe { self.data.ptr.add(usize::from(bid) * BUF_LEN) }
    }

    /// Hands buffer `bid` back to the kernel, once published.
    fn give(&mut self, bid: u16) {
        let addr = self.buffer(bid) as u64;
        let at = usize::from(self.tail & self.mask);
        // SAFETY: `at` is within the ring's entries; the kernel reads only entries before
        // the published tail, and this one is past it.
        unsafe {
            let e = &mut *self.ring.ptr.cast::<BufRingEntry>().add(at);
            e.set_addr(addr);
            e.set_len(BUF_LEN as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers given back so far the kernel's.
    fn publish(&self) {
        // SAFETY: the tail field lies in the ring's first entry, 2-aligned, and is only
        // read by the kernel; release orders the entries written before it.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.ptr.cast::<BufRingEntry>()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

/// Datagrams received for one leg's port, by buffer id and length, oldest first.
#[derive(Clone, Copy)]
struct Queue {
    items: [(u16, u32); QUEUE],
    head: usize,
    len: usize,
}

impl Queue {
    const EMPTY: Queue = Queue {
        items: [(0, 0); QUEUE],
        head: 0,
        len: 0,
    };

    fn push(&mut self, item: (u16, u32)) -> bool {
        if self.len == QUEUE {
            return false;
        }
        self.items[(self.head + self.len) % QUEUE] = item;
        self.len += 1;
        true
    }

    fn pop(&mut self) -> Option<(u16, u32)> {
        if self.len == 0 {
            return None;
        }
        let item = self.items[self.head];
        self.head = (self.head + 1) % QUEUE;
        self.len -= 1;
        Some(item)
    }
}

/// One place for a leg: its sockets' descriptors and queues while a leg holds it.
struct Place {
    gen: u32,
    live: bool,
    fds: [RawFd; 2],
    armed: [bool; 2],
    queues: [Queue; 2],
}

/// One send in flight: where to and what.
#[repr(C)]
struct SendSlot {
    addr: libc::sockaddr_storage,
    bytes: [u8; SEND_LEN],
}

/// The [`MediaIo`] over io_uring (see the module documentation).
pub struct UringIo {
    // Declared first so that it is dropped, and its requests gone, before the memory the
    // kernel writes into.
    ring: IoUring,
    buffers: Buffers,
    /// What every receive was armed with; only the name and control lengths matter.
    msghdr: Box<libc::msghdr>,
    places: Vec<Place>,
    free_places: Vec<u32>,
    sends: Box<[SendSlot]>,
    free_sends: Vec<u32>,
    /// Some receive stopped and waits to be re-armed at the end of the tick.
    rearm: bool,
    counters: UringCounters,
}

impl std::fmt::Debug for UringIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringIo")
            .field("places", &self.places.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl UringIo {
    /// A ring with the default buffers and send slab.
    pub fn new() -> io::Result<UringIo> {
        Self::with_capacity(DEFAULT_BUFFERS, DEFAULT_SENDS)
    }

    /// A ring of `buffers` receive buffers (a power of two) and `sends` send slots.
    pub fn with_capacity(buffers: u16, sends: usize) -> io::Result<UringIo> {
        if !buffers.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "receive buffers must be a power of two",
            ));
        }
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(CQ_ENTRIES)
            .build(SQ_ENTRIES)?;
        let buffers = Buffers::new(buffers)?;
        // SAFETY: the ring memory lives as long as the registration: `buffers` is dropped
        // after `ring`, whose closing unregisters it.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buffers.ring.ptr as u64,
                buffers.mask + 1,
                GROUP,
                0,
            )?;
        }
        // SAFETY: all-zero is a valid msghdr.
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { zeroed() });
        msghdr.msg_namelen = NAME_LEN as libc::socklen_t;
        msghdr.msg_controllen = CONTROL_LEN as _;
        let slots = (0..sends)
            .map(|_| SendSlot {
                // SAFETY: all-zero is a valid sockaddr_storage.
                addr: unsafe { zeroed() },
                bytes: [0; SEND_LEN],
            })
            .collect();
        Ok(UringIo {
            ring,
            buffers,
            msghdr,
            places: Vec::with_capacity(256),
            free_places: Vec::with_capacity(256),
            sends: slots,
            free_sends: (0..sends as u32).rev().collect(),
            rearm: false,
            counters: UringCounters::default(),
        })
    }

    /// Waits for `n` completions and leaves them unreaped, as a tick that has not begun yet.
    #[cfg(test)]
    pub(super) fn complete_unreaped(&mut self, n: usize) -> io::Result<usize> {
        self.ring.submit_and_wait(n)
    }

    /// This ring's counters.
    pub fn counters(&self) -> UringCounters {
        self.counters
    }

    /// Queues a submission, submitting what is queued first when the queue is full; false
    /// when it still does not fit.
    ///
    /// # Safety
    /// What the entry points at stays valid until its completion.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: the caller's promise.
        if unsafe { self.ring.submission().push(entry) }.is_ok() {
            return true;
        }
        let _ = self.ring.submit();
        // SAFETY: as above.
        unsafe { self.ring.submission().push(entry) }.is_ok()
    }

    fn arm(&mut self, place: u32, port: Port) {
        let Some(p) = self.places.get(place as usize) else {
            return;
        };
        let (kind, i) = match port {
            Port::Rtp => (KIND_RTP, 0),
            Port::Rtcp => (KIND_RTCP, 1),
        };
        let entry = opcode::RecvMsgMulti::new(Fd(p.fds[i]), &*self.msghdr, GROUP)
            .build()
            .user_data(user_data(kind, p.gen, place));
        // SAFETY: the msghdr is boxed and lives as long as the ring; the buffers are the
        // ring's own.
        let armed = unsafe { self.push(&entry) };
        if let Some(p) = self.places.get_mut(place as usize) {
            p.armed[i] = armed;
        }
        if !armed {
            self.rearm = true;
        }
    }

    /// Moves every completion so far into the legs' queues and the free slab.
    fn reap(&mut self) {
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            self.complete(cqe.user_data(), cqe.result(), cqe.flags());
        }
    }

    fn complete(&mut self, data: u64, result: i32, flags: u32) {
        let kind = data >> KIND_SHIFT;
        let place = data as u32;
        match kind {
            KIND_SEND => {
                self.free_sends.push(place);
                if result < 0 {
                    self.counters.send_errors += 1;
                }
            }
            KIND_RTP | KIND_RTCP => {
                let gen = ((data >> 32) as u32) & GEN_MASK;
                let i = kind as usize;
                let bid = cqueue::buffer_select(flags);
                let p = self
                    .places
                    .get_mut(place as usize)
                    .filter(|p| p.live && p.gen == gen);
                let Some(p) = p else {
                    // A leg that has gone: its buffer goes back, nothing else.
                    if let Some(bid) = bid {
                        self.buffers.give(bid);
                        self.counters.stale += 1;
                    }
                    return;
                };
                if let Some(bid) = bid {
                    if result <= 0 || !p.queues[i].push((bid, result as u32)) {
                        if result > 0 {
                            self.counters.queue_drops += 1;
                        }
                        self.buffers.give(bid);
                    }
                }
                if !cqueue::more(flags) {
                    p.armed[i] = false;
                    self.rearm = true;
                    if result == -libc::ENOBUFS {
                        self.counters.starved += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// The oldest datagram queued for a place's port, copied into `buf`.
    fn take(&mut self, place: u32, gen: u32, port: Port, buf: &mut [u8]) -> Option<Datagram> {
        let i = match port {
            Port::Rtp => 0,
            Port::Rtcp => 1,
        };
        loop {
            let p = self
                .places
                .get_mut(place as usize)
                .filter(|p| p.live && p.gen == gen)?;
            let (bid, len) = p.queues[i].pop()?;
            let got = self.read(bid, len as usize, buf);
            self.buffers.give(bid);
            if got.is_some() {
                return got;
            }
        }
    }

    /// Parses a filled receive buffer into `buf`; `None` for one that makes no sense.
    fn read(&self, bid: u16, len: usize, buf: &mut [u8]) -> Option<Datagram> {
        // SAFETY: the kernel wrote `len` (at most BUF_LEN) bytes into this buffer, which is
        // ours until given back.
        let bytes =
            unsafe { std::slice::from_raw_parts(self.buffers.buffer(bid), len.min(BUF_LEN)) };
        let out = RecvMsgOut::parse(bytes, &self.msghdr).ok()?;
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
        let name = out.name_data();
        let n = name.len().min(size_of::<libc::sockaddr_storage>());
        // SAFETY: n bytes fit in both.
        unsafe {
            std::ptr::copy_nonoverlapping(
                name.as_ptr(),
                (&mut addr as *mut libc::sockaddr_storage).cast(),
                n,
            )
        };
        let from = stamp::socket_addr(&addr).ok()?;
        let control = out.control_data();
        let stamp = if control.len() >= size_of::<libc::cmsghdr>() {
            // SAFETY: all-zero is a valid msghdr.
            let mut msg: libc::msghdr = unsafe { zeroed() };
            msg.msg_control = control.as_ptr() as *mut libc::c_void;
            msg.msg_controllen = control.len() as _;
            // SAFETY: the control messages the kernel wrote, 8-aligned in the buffer (the
            // buffers are, and the header and name before them are multiples of 8).
            unsafe { stamp::stamp_of(&msg) }
        } else {
            None
        };
        let payload = out.payload_data();
        let n = payload.len().min(buf.len());
        buf[..n].copy_from_slice(&payload[..n]);
        Some(Datagram {
            len: n,
            from,
            stamp,
        })
    }
}

fn user_data(kind: u64, gen: u32, place: u32) -> u64 {
    (kind << KIND_SHIFT) | (u64::from(gen & GEN_MASK) << 32) | u64::from(place)
}

/// Writes `to` as a C socket address; its length.
fn write_addr(to: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match to {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: a sockaddr_in fits in a sockaddr_storage, which is aligned for it.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for a sockaddr_in6.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

impl MediaIo for UringIo {
    type Endpoint = LegSockets;

    fn recv(&mut self, leg: &LegSockets, port: Port, buf: &mut [u8]) -> Option<Datagram> {
        match leg.ring {
            Some((place, gen)) => self.take(place, gen, port, buf),
            // Not attached (a leg handed straight to a worker): its sockets are read directly.
            None => SocketIo.recv(leg, port, buf),
        }
    }

    fn send(&mut self, leg: &LegSockets, port: Port, to: SocketAddr, bytes: &[u8]) {
        if bytes.len() > SEND_LEN {
            return SocketIo.send(leg, port, to, bytes);
        }
        let slot = match self.free_sends.pop() {
            Some(s) => s,
            None => {
                // Sends on loopback and most NICs complete at submission: submit, collect.
                let _ = self.ring.submit();
                self.reap();
                match self.free_sends.pop() {
                    Some(s) => s,
                    None => {
                        self.counters.send_drops += 1;
                        return;
                    }
                }
            }
        };
        let Some(s) = self.sends.get_mut(slot as usize) else {
            self.counters.send_drops += 1;
            return;
        };
        s.bytes[..bytes.len()].copy_from_slice(bytes);
        let addr_len = write_addr(to, &mut s.addr);
        let entry = opcode::Send::new(
            Fd(leg.port(port).as_raw_fd()),
            s.bytes.as_ptr(),
            bytes.len() as u32,
        )
        .dest_addr((&s.addr as *const libc::sockaddr_storage).cast())
        .dest_addr_len(addr_len)
        .build()
        .user_data(user_data(KIND_SEND, 0, slot));
        // SAFETY: the slot is ours until its completion frees it; the socket outlives the
        // submission (detach submits before a leg's sockets can close).
        if !unsafe { self.push(&entry) } {
            self.free_sends.push(slot);
            self.counters.send_drops += 1;
        }
    }

    fn now(&mut self) -> (Instant, SystemTime) {
        (Instant::now(), SystemTime::now())
    }

    fn attach(&mut self, leg: &mut LegSockets) {
        if leg.ring.is_some() {
            self.detach(leg);
        }
        let fds = [leg.rtp.as_raw_fd(), leg.rtcp.as_raw_fd()];
        let place = match self.free_places.pop() {
            Some(i) => i,
            None => {
                self.places.push(Place {
                    gen: 0,
                    live: false,
                    fds,
                    armed: [false; 2],
                    queues: [Queue::EMPTY; 2],
                });
                (self.places.len() - 1) as u32
            }
        };
        let Some(p) = self.places.get_mut(place as usize) else {
            return;
        };
        p.live = true;
        p.fds = fds;
        p.queues = [Queue::EMPTY; 2];
        leg.ring = Some((place, p.gen));
        self.arm(place, Port::Rtp);
        self.arm(place, Port::Rtcp);
    }

    fn detach(&mut self, leg: &mut LegSockets) {
        let Some((place, gen)) = leg.ring.take() else {
            return;
        };
        let Some(p) = self
            .places
            .get_mut(place as usize)
            .filter(|p| p.live && p.gen == gen)
        else {
            return;
        };
        p.live = false;
        p.gen = (p.gen + 1) & GEN_MASK;
        let armed = p.armed;
        p.armed = [false; 2];
        let mut queues = std::mem::replace(&mut p.queues, [Queue::EMPTY; 2]);
        for q in &mut queues {
            while let Some((bid, _)) = q.pop() {
                self.buffers.give(bid);
            }
        }
        for (kind, armed) in [(KIND_RTP, armed[0]), (KIND_RTCP, armed[1])] {
            if armed {
                let cancel = opcode::AsyncCancel::new(user_data(kind, gen, place))
                    .build()
                    .user_data(user_data(KIND_CANCEL, 0, 0));
                // SAFETY: a cancel points at nothing.
                let _ = unsafe { self.push(&cancel) };
            }
        }
        self.free_places.push(place);
        // The sockets may close as soon as this returns: their sends and the cancels go now.
        self.buffers.publish();
        let _ = self.ring.submit();
    }

    fn begin_tick(&mut self) {
        self.reap();
    }

    fn end_tick(&mut self) {
        self.buffers.publish();
        if std::mem::take(&mut self.rearm) {
            for place in 0..self.places.len() as u32 {
                let p = &self.places[place as usize];
                if !p.live {
                    continue;
                }
                let armed = p.armed;
                for (i, port) in [(0, Port::Rtp), (1, Port::Rtcp)] {
                    if !armed[i] {
                        self.counters.rearms += 1;
                        self.arm(place, port);
                    }
                }
            }
        }
    }

    fn sleep_until(&mut self, deadline: Instant) {
        self.buffers.publish();
        let want = self.ring.params().cq_entries() as usize;
        loop {
            let now = Instant::now();
            if now >= deadline {
                // Late: no wait, but the receives deferred since the last wait still run (only
                // an enter asking for events runs them), or a worker running late for a while
                // would hear nothing.
                let queued = self.ring.submission().len() as u32;
                // SAFETY: no argument; what the queued entries point at is kept alive as
                // `push` promised.
                let _ = unsafe {
                    self.ring
                        .submitter()
                        .enter::<libc::sigset_t>(queued, 0, GETEVENTS, None)
                };
                return;
            }
            let ts = Timespec::from(deadline - now);
            let args = SubmitArgs::new().timespec(&ts);
            // Waits for more completions than can come: the timeout ends it, at the deadline.
            match self.ring.submitter().submit_with_args(want, &args) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => return,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(_) => {
                    let now = Instant::now();
                    if now < deadline {
                        std::thread::sleep(deadline - now);
                    }
                    return;
                }
            }
            // Woken early (the completion queue filled up): make room, wait on.
            self.reap();
        }
    }
}
