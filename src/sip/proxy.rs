//! Callers that reach us through a SIP proxy in front (Kamailio's dispatcher, say): which
//! peers are trusted to say who the caller really is (`[sip] trusted_proxies`), and the
//! caller's address they write into [`SOURCE_HEADER`]. From any other peer the header means
//! nothing, so a caller cannot borrow someone else's address to slip past the access lists
//! or the rate limits.

use std::net::{IpAddr, SocketAddr};

use super::dialog::Peer;
use super::guard::acl::canonical;
use super::guard::peek::last_header;
use super::guard::{Cidr, CidrError};

/// The header a trusted proxy writes the caller's `ip:port` into.
pub const SOURCE_HEADER: &str = "X-Switchboard-Source";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// One proxy, by address and port.
    Addr(SocketAddr),
    /// Any address of a prefix, from any port.
    Net(Cidr),
}

/// The proxies whose [`SOURCE_HEADER`] is believed; empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    entries: Vec<Entry>,
}

impl TrustedProxies {
    /// From their text forms: `ip:port`, `[ipv6]:port`, an address or a prefix.
    pub fn parse(list: &[String]) -> Result<TrustedProxies, CidrError> {
        let entries = list
            .iter()
            .map(|t| match t.trim().parse::<SocketAddr>() {
                Ok(a) => Ok(Entry::Addr(a)),
                Err(_) => t.parse::<Cidr>().map(Entry::Net),
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { entries })
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `peer` is a trusted proxy. An `ip:port` entry trusts that source port alone,
    /// over any transport: on a shared host every other local process has the same address.
    /// A proxy that reaches us over TCP connects from ports its kernel picks, so it is
    /// trusted by its address (an entry without a port) instead.
    pub fn trusts(&self, peer: Peer) -> bool {
        let ip = canonical(peer.addr.ip());
        self.entries.iter().any(|e| match e {
            Entry::Addr(a) => canonical(a.ip()) == ip && a.port() == peer.addr.port(),
            Entry::Net(n) => n.contains_key(ip),
        })
    }

    /// The caller's address: what a trusted `peer` wrote in `header` (the value of
    /// [`SOURCE_HEADER`]), otherwise `peer`'s own.
    pub fn source(&self, peer: Peer, header: Option<&str>) -> SocketAddr {
        if self.entries.is_empty() || !self.trusts(peer) {
            return peer.addr;
        }
        header.and_then(parse_source).unwrap_or(peer.addr)
    }

    /// [`TrustedProxies::source`] for a message not parsed yet; its headers are only read
    /// when `peer` is trusted, so nothing is spent on anyone else's.
    pub fn source_of(&self, peer: Peer, bytes: &[u8]) -> SocketAddr {
        if self.entries.is_empty() || !self.trusts(peer) {
            return peer.addr;
        }
        let header = last_header(bytes, SOURCE_HEADER.as_bytes());
        self.source(peer, header.and_then(|h| std::str::from_utf8(h).ok()))
    }
}

/// `ip:port`, `[ipv6]:port`, or an address alone (port 0).
fn parse_source(value: &str) -> Option<SocketAddr> {
    let v = value.trim();
    v.parse::<SocketAddr>()
        .ok()
        .or_else(|| v.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::dialog::Transport;

    fn peer(transport: Transport, addr: &str) -> Peer {
        Peer {
            transport,
            addr: addr.parse().unwrap(),
        }
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    const INVITE: &[u8] = b"INVITE sip:conf-1@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
        X-Switchboard-Source: 198.51.100.7:5062\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn an_address_with_a_port_trusts_that_source_port_alone() {
        let p = proxies(&["127.0.0.1:5060"]);
        assert!(p.trusts(peer(Transport::Udp, "127.0.0.1:5060")));
        assert!(
            !p.trusts(peer(Transport::Udp, "127.0.0.1:5061")),
            "another port"
        );
        assert!(
            !p.trusts(peer(Transport::Udp, "127.0.0.2:5060")),
            "another host"
        );
        assert!(p.trusts(peer(Transport::Tcp, "127.0.0.1:5060")));
        assert!(
            !p.trusts(peer(Transport::Tcp, "127.0.0.1:40001")),
            "another local process over TCP"
        );
        // The same host on a dual-stack socket.
        assert!(p.trusts(peer(Transport::Udp, "[::ffff:127.0.0.1]:5060")));
    }

    #[test]
    fn a_prefix_trusts_every_address_inside_it_and_none_outside() {
        let p = proxies(&["10.1.0.0/16", "2001:db8::1"]);
        assert!(p.trusts(peer(Transport::Udp, "10.1.0.0:1")));
        assert!(p.trusts(peer(Transport::Udp, "10.1.255.255:9")));
        assert!(!p.trusts(peer(Transport::Udp, "10.2.0.0:1")));
        assert!(!p.trusts(peer(Transport::Udp, "10.0.255.255:1")));
        assert!(p.trusts(peer(Transport::Udp, "[2001:db8::1]:5060")));
        assert!(!p.trusts(peer(Transport::Udp, "[2001:db8::2]:5060")));
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in ["proxy.example.net:5060", "10.1.0.1/16", "10.0.0.0/33", ""] {
            assert!(
                TrustedProxies::parse(&[bad.to_string()]).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(TrustedProxies::parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn the_header_counts_from_a_trusted_proxy_only() {
        let p = proxies(&["127.0.0.1:5060"]);
        let real: SocketAddr = "198.51.100.7:5062".parse().unwrap();
        let proxy = peer(Transport::Udp, "127.0.0.1:5060");
        assert_eq!(p.source_of(proxy, INVITE), real);
        assert_eq!(p.source(proxy, Some(" 198.51.100.7:5062 ")), real);
        let caller = peer(Transport::Udp, "127.0.0.1:5070");
        assert_eq!(p.source_of(caller, INVITE), caller.addr, "not a proxy");
        assert_eq!(
            TrustedProxies::default().source_of(proxy, INVITE),
            proxy.addr,
            "nobody trusted"
        );
    }

    #[test]
    fn a_missing_or_unreadable_header_leaves_the_proxy_as_the_source() {
        let p = proxies(&["127.0.0.0/8"]);
        let proxy = peer(Transport::Tcp, "127.0.0.1:41000");
        assert_eq!(p.source(proxy, None), proxy.addr);
        assert_eq!(p.source(proxy, Some("somewhere")), proxy.addr);
        assert_eq!(
            p.source(proxy, Some("[2001:db8::7]:5060")),
            "[2001:db8::7]:5060".parse().unwrap()
        );
        assert_eq!(
            p.source(proxy, Some("192.0.2.4")),
            "192.0.2.4:0".parse().unwrap(),
            "an address without a port"
        );
        let bare = b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n";
        assert_eq!(p.source_of(proxy, bare), proxy.addr);
    }
}
