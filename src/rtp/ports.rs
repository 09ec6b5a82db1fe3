//! Allocates RTP/RTCP port pairs from the configured range by binding them, so a port handed
//! out is really ours; a lease gives the ports back when dropped (the call ended).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

/// Hands out even RTP ports (RTCP on port+1) from a range, least recently used first.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    ip: IpAddr,
    free: Arc<Mutex<VecDeque<u16>>>,
}

/// A bound RTP/RTCP socket pair owned by one call.
#[derive(Debug)]
pub struct PortLease {
    /// The RTP socket (even port).
    pub rtp: UdpSocket,
    /// The RTCP socket (RTP port + 1).
    pub rtcp: UdpSocket,
    port: u16,
    free: Arc<Mutex<VecDeque<u16>>>,
}

impl PortLease {
    /// The RTP port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The RTP socket address.
    pub fn rtp_addr(&self) -> std::io::Result<SocketAddr> {
        self.rtp.local_addr()
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut free) = self.free.lock() {
            free.push_back(self.port);
        }
    }
}

impl PortAllocator {
    /// An allocator over the even ports of `min..=max` on `ip`.
    pub fn new(ip: IpAddr, min: u16, max: u16) -> Self {
        let first = min + (min % 2);
        let free = (first..max).step_by(2).collect();
        PortAllocator {
            ip,
            free: Arc::new(Mutex::new(free)),
        }
    }

    /// Ports currently free.
    pub fn available(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// Binds the next free pair; ports some other program holds are skipped and retried later.
    pub fn allocate(&self) -> Option<PortLease> {
        let mut free = self.free.lock().ok()?;
        for _ in 0..free.len() {
            let port = free.pop_front()?;
            let pair = UdpSocket::bind((self.ip, port))
                .and_then(|rtp| Ok((rtp, UdpSocket::bind((self.ip, port + 1))?)));
            match pair {
                Ok((rtp, rtcp)) => {
                    let _ = rtp.set_nonblocking(true);
                    let _ = rtcp.set_nonblocking(true);
                    return Some(PortLease {
                        rtp,
                        rtcp,
                        port,
                        free: self.free.clone(),
                    });
                }
                Err(_) => free.push_back(port),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_even_bound_and_returned_on_drop() {
        let a = PortAllocator::new("127.0.0.1".parse().unwrap(), 41001, 41010);
        assert_eq!(a.available(), 4, "41002, 41004, 41006, 41008");
        let l1 = a.allocate().unwrap();
        assert_eq!(l1.port() % 2, 0);
        assert_eq!(l1.rtcp.local_addr().unwrap().port(), l1.port() + 1);
        assert_eq!(a.available(), 3);
        drop(l1);
        assert_eq!(a.available(), 4);
    }

    #[test]
    fn exhaustion_yields_none() {
        let a = PortAllocator::new("127.0.0.1".parse().unwrap(), 41020, 41024);
        let held: Vec<_> = std::iter::from_fn(|| a.allocate()).take(10).collect();
        assert_eq!(held.len(), 2);
        assert!(a.allocate().is_none());
    }
}
