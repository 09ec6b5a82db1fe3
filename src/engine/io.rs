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
}

impl LegSockets {
    /// Makes both sockets non-blocking and asks for kernel receive timestamps.
    pub fn prepare(&self) -> std::io::Result<()> {
        self.rtp.set_nonblocking(true)?;
        self.rtcp.set_nonblocking(true)?;
        for socket in [&self.rtp, &self.rtcp] {
            if let Err(e) = stamp::enable(socket) {
                // Reports still work, with the read time standing in for the arrival time.
                tracing::debug!(error = %e, "no receive timestamps on a media socket");
            }
        }
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
        let (len, from, stamp) = stamp::recv(leg.port(port), buf).ok()?;
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
