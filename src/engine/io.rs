//! How a worker reaches its legs' datagrams: the [`MediaIo`] trait the socket-free tick is
//! written against, and [`SocketIo`], its real implementation over each leg's UDP sockets
//! with kernel receive timestamps ([`crate::media::stamp`]).

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
}

impl LegSockets {
    /// A leg's two sockets, not yet prepared.
    pub fn new(rtp: UdpSocket, rtcp: UdpSocket) -> Self {
        LegSockets {
            rtp,
            rtcp,
            rtp_stamped: false,
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

    fn port(&self, port: Port) -> &UdpSocket {
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
