//! How a worker reaches its legs' datagrams: the [`MediaIo`] trait the socket-free tick is
//! written against, and [`SocketIo`], its real implementation over each leg's UDP sockets
//! with kernel receive timestamps ([`crate::media::stamp`]). [`IoMode`] chooses between it
//! and io_uring ([`super::uring`]).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Instant, SystemTime};

use crate::media::leg::Port;
use crate::media::stamp;

/// A datagram read into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// Its length in the buffer.
    pub len: usize,
    /// Its source.
    pub from: SocketAddr,
    /// When it reached the socket, if known (else the read time stands in).
    pub stamp: Option<SystemTime>,
}

/// Datagrams in and out of a worker's legs, and the clock the worker reads when a packet's
/// true time matters (RTCP arrival and send times).
pub trait MediaIo {
    /// What the worker keeps per leg to reach its datagrams (its sockets, or a key).
    type Endpoint: Send;

    /// The next datagram waiting on a leg's port, read into `buf`; `None` when none is.
    fn recv(&mut self, leg: &Self::Endpoint, port: Port, buf: &mut [u8]) -> Option<Datagram>;

    /// Sends a datagram from a leg's port; never blocks (a full buffer drops it).
    fn send(&mut self, leg: &Self::Endpoint, port: Port, to: SocketAddr, bytes: &[u8]);

    /// The time now, on both clocks.
    fn now(&mut self) -> (Instant, SystemTime);

    /// A leg's endpoint joins this worker (added, or moved here): from now on its datagrams
    /// are read through `self`.
    fn attach(&mut self, _leg: &mut Self::Endpoint) {}

    /// A leg's endpoint leaves this worker (removed, or moved away): nothing of `self` may
    /// refer to it afterwards, and what it sent before goes out.
    fn detach(&mut self, _leg: &mut Self::Endpoint) {}

    /// A tick starts: what arrived since the last one becomes readable.
    fn begin_tick(&mut self) {}

    /// A tick's sends are all queued.
    fn end_tick(&mut self) {}

    /// Sends what is queued and waits until `deadline` (the next tick's).
    fn sleep_until(&mut self, deadline: Instant) {
        let now = Instant::now();
        if now < deadline {
            std::thread::sleep(deadline - now);
        }
    }
}

/// How the media workers move datagrams (`[media] io`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// io_uring where the kernel allows it, else plain sockets (said once in the log).
    Auto,
    /// io_uring; the engine does not start without it.
    Uring,
    /// A `recvfrom`/`sendto` per datagram: the default, as io_uring measured no cheaper
    /// (BENCHMARKS.md, "io_uring beside sockets and the floor").
    #[default]
    Sockets,
}

/// A leg's RTP and RTCP sockets.
#[derive(Debug)]
pub struct LegSockets {
    /// RTP (even port).
    pub rtp: UdpSocket,
    /// RTCP (RTP port + 1).
    pub rtcp: UdpSocket,
    /// RTCP arrives on the RTP socket too (rtcp-mux), so it is read with timestamps.
    rtp_stamped: bool,
    /// Its place in the worker's io_uring, with that place's generation, while attached.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(super) ring: Option<(u32, u32)>,
}

impl LegSockets {
    /// A leg's two sockets, not yet prepared.
    pub fn new(rtp: UdpSocket, rtcp: UdpSocket) -> Self {
        LegSockets {
            rtp,
            rtcp,
            rtp_stamped: false,
            ring: None,
        }
    }

    /// Makes both sockets non-blocking and asks for kernel receive timestamps where RTCP
    /// arrives: the RTCP socket, and the RTP socket with `rtcp_mux`. RTP packets keep the
    /// tick's time, so without mux the RTP socket is read by plain `recvfrom`, the cheaper
    /// call on the path every leg takes every tick.
    pub fn prepare(&mut self, rtcp_mux: bool) -> std::io::Result<()> {
        self.rtp.set_nonblocking(true)?;
        self.rtcp.set_nonblocking(true)?;
        // Without timestamps reports still work, the read time standing in for the arrival.
        if let Err(e) = stamp::enable(&self.rtcp) {
            tracing::debug!(error = %e, "no receive timestamps on an RTCP socket");
        }
        self.rtp_stamped = rtcp_mux
            && stamp::enable(&self.rtp)
                .inspect_err(
                    |e| tracing::debug!(error = %e, "no receive timestamps on an RTP socket"),
                )
                .is_ok();
        Ok(())
    }

    pub(super) fn port(&self, port: Port) -> &UdpSocket {
        match port {
            Port::Rtp => &self.rtp,
            Port::Rtcp => &self.rtcp,
        }
    }
}

/// The real [`MediaIo`]: each leg's own non-blocking sockets and the system clocks.
#[derive(Debug, Default)]
pub struct SocketIo;

impl MediaIo for SocketIo {
    type Endpoint = LegSockets;

    fn recv(&mut self, leg: &LegSockets, port: Port, buf: &mut [u8]) -> Option<Datagram> {
        let socket = leg.port(port);
        let (len, from, stamp) = if port == Port::Rtp && !leg.rtp_stamped {
            let (len, from) = socket.recv_from(buf).ok()?;
            (len, from, None)
        } else {
            stamp::recv(socket, buf).ok()?
        };
        Some(Datagram { len, from, stamp })
    }

    fn send(&mut self, leg: &LegSockets, port: Port, to: SocketAddr, bytes: &[u8]) {
        // Non-blocking: a full socket buffer drops the frame rather than stall every leg.
        let _ = leg.port(port).send_to(bytes, to);
    }

    fn now(&mut self) -> (Instant, SystemTime) {
        (Instant::now(), SystemTime::now())
    }
}
