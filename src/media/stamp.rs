//! Datagrams with the kernel's receive timestamp (`SO_TIMESTAMPNS` on Linux): when a datagram
//! reached the socket, not when a later tick read it. RTCP round-trip times depend on it (a
//! sender report's arrival starts the DLSR), and so do tests that measure them.

pub use imp::{enable, recv};
#[cfg(target_os = "linux")]
pub(crate) use imp::{socket_addr, stamp_of};

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::mem::{size_of, size_of_val, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// Asks the kernel to timestamp datagrams as they reach `socket`.
    pub fn enable(socket: &UdpSocket) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: a valid descriptor and a pointer to an initialised int of the given size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                size_of_val(&on) as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `recv_from`, with the datagram's receive time when the kernel gave one.
    pub fn recv(
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<SystemTime>)> {
        // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
        let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // Aligned for cmsghdr; room for one timestamp message and then some.
        let mut control = [0u64; 8];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        // SAFETY: msg points at live buffers of the lengths it states, for this call only.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let from = socket_addr(&addr)?;
        // SAFETY: msg_control points at `control`, whose first msg_controllen bytes the
        // kernel wrote.
        let stamp = unsafe { stamp_of(&msg) };
        Ok((n as usize, from, stamp))
    }

    /// The `SCM_TIMESTAMPNS` time among a received message's control messages.
    ///
    /// # Safety
    /// `msg.msg_control` points at `msg.msg_controllen` readable bytes of control messages
    /// as the kernel writes them, aligned for `cmsghdr`.
    pub(crate) unsafe fn stamp_of(msg: &libc::msghdr) -> Option<SystemTime> {
        let mut stamp = None;
        // SAFETY: the caller's control messages, walked with the libc macros, which stay
        // within msg_controllen.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
                {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    if let (Ok(secs), Ok(nanos)) =
                        (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec))
                    {
                        stamp = UNIX_EPOCH.checked_add(Duration::new(secs, nanos));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(msg, cmsg);
            }
        }
        stamp
    }

    /// The address the kernel wrote into a `sockaddr_storage`.
    pub(crate) fn socket_addr(addr: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
        match libc::c_int::from(addr.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in, which fits in sockaddr_storage.
                let a: libc::sockaddr_in =
                    unsafe { std::ptr::read((addr as *const libc::sockaddr_storage).cast()) };
                Ok(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6, which fits in sockaddr_storage.
                let a: libc::sockaddr_in6 =
                    unsafe { std::ptr::read((addr as *const libc::sockaddr_storage).cast()) };
                Ok(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            family => Err(io::Error::other(format!("address family {family}"))),
        }
    }
}

/// Without kernel timestamps, a datagram's read time stands in for its arrival.
#[cfg(not(target_os = "linux"))]
mod imp {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::SystemTime;

    pub fn enable(_socket: &UdpSocket) -> std::io::Result<()> {
        Ok(())
    }

    pub fn recv(
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> std::io::Result<(usize, SocketAddr, Option<SystemTime>)> {
        socket.recv_from(buf).map(|(n, from)| (n, from, None))
    }
}
