//! Address prefixes (CIDR) and the allow/deny lists built from them.
//!
//! Every address is held as an IPv6 number, IPv4 ones in their IPv4-mapped form
//! (`::ffff:a.b.c.d`), so an IPv4 rule also matches the same host arriving on a dual-stack
//! socket as a mapped IPv6 address, and one comparison serves both families.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// The IPv4-mapped prefix length: IPv4 `/n` is mapped IPv6 `/(96 + n)`.
const V4_MAPPED_BITS: u8 = 96;

/// An address as the guard keys it: IPv4 mapped into IPv6.
pub fn canonical(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// An address from its canonical form, IPv4 shown as IPv4 again (for logs).
pub fn display_ip(key: u128) -> IpAddr {
    let v6 = Ipv6Addr::from(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// A network prefix such as `10.0.0.0/8`, `2001:db8::/32` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    /// Prefix length over the 128-bit canonical form.
    bits: u8,
    /// Written as IPv4 (for display).
    v4: bool,
}

/// Why a prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not an address.
    #[error("{0:?} is not an IP address")]
    Address(String),
    /// A length that is not a number or too long for the family.
    #[error("{0:?}: bad prefix length")]
    Length(String),
    /// Bits set after the prefix: most likely a typing mistake, so refused rather than guessed.
    #[error("{text:?} has host bits set; the network is {net}")]
    HostBits {
        /// What was written.
        text: String,
        /// The network it would mean.
        net: String,
    },
}

fn mask(bits: u8) -> u128 {
    match bits {
        0 => 0,
        b => u128::MAX << (128 - u32::from(b.min(128))),
    }
}

impl Cidr {
    /// Whether `ip` is inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_key(canonical(ip))
    }

    /// Whether the canonical address `key` is inside the prefix.
    pub fn contains_key(&self, key: u128) -> bool {
        key & mask(self.bits) == self.net
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::Address(text.to_string()))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = match len {
            Some(l) => l
                .parse()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| CidrError::Length(text.to_string()))?,
            None => max,
        };
        let bits = if ip.is_ipv4() {
            V4_MAPPED_BITS + len
        } else {
            len
        };
        let key = canonical(ip);
        let cidr = Cidr {
            net: key & mask(bits),
            bits,
            v4: ip.is_ipv4(),
        };
        if cidr.net != key {
            return Err(CidrError::HostBits {
                text: text.to_string(),
                net: cidr.to_string(),
            });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.v4 {
            write!(f, "{}/{}", display_ip(self.net), self.bits - V4_MAPPED_BITS)
        } else {
            write!(f, "{}/{}", Ipv6Addr::from(self.net), self.bits)
        }
    }
}

/// Who may talk to the server: deny wins over allow; an empty allow list allows everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl Acl {
    /// Lists from their text forms.
    pub fn parse(allow: &[String], deny: &[String]) -> Result<Acl, CidrError> {
        let parse = |v: &[String]| v.iter().map(|s| s.parse()).collect::<Result<Vec<_>, _>>();
        Ok(Acl {
            allow: parse(allow)?,
            deny: parse(deny)?,
        })
    }

    /// Whether the canonical address `key` may talk to the server.
    pub fn permits_key(&self, key: u128) -> bool {
        if self.deny.iter().any(|c| c.contains_key(key)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains_key(key))
    }

    /// Whether `ip` may talk to the server.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.permits_key(canonical(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn acl(allow: &[&str], deny: &[&str]) -> Acl {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Acl::parse(&v(allow), &v(deny)).unwrap()
    }

    #[test]
    fn prefixes_at_their_edges() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(c.contains(ip("192.0.2.0")));
        assert!(c.contains(ip("192.0.2.255")));
        assert!(!c.contains(ip("192.0.3.0")));
        assert!(!c.contains(ip("192.0.1.255")));
        let one: Cidr = "192.0.2.7/32".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.6")));
        assert!(!one.contains(ip("192.0.2.8")));
        assert_eq!(
            "192.0.2.7".parse::<Cidr>().unwrap(),
            one,
            "bare address is /32"
        );
        let six: Cidr = "2001:db8::1/128".parse().unwrap();
        assert!(six.contains(ip("2001:db8::1")));
        assert!(!six.contains(ip("2001:db8::2")));
        assert_eq!("2001:db8::1".parse::<Cidr>().unwrap(), six);
        let net6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(net6.contains(ip("2001:db8:ffff::1")));
        assert!(!net6.contains(ip("2001:db9::")));
    }

    #[test]
    fn zero_length_prefixes() {
        let all4: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all4.contains(ip("255.255.255.255")));
        assert!(all4.contains(ip("0.0.0.0")));
        assert!(all4.contains(ip("::ffff:10.1.2.3")), "mapped is IPv4");
        assert!(!all4.contains(ip("2001:db8::1")), "an IPv4 /0 is IPv4 only");
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
        assert!(all6.contains(ip("10.1.2.3")), "IPv6 /0 is every address");
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_host() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("::ffff:10.9.8.7")));
        assert!(!c.contains(ip("::ffff:11.0.0.0")));
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped.contains(ip("10.200.0.1")));
        assert_eq!(display_ip(canonical(ip("::ffff:10.9.8.7"))), ip("10.9.8.7"));
        assert_eq!(display_ip(canonical(ip("2001:db8::1"))), ip("2001:db8::1"));
        assert_eq!(c.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn malformed_prefixes_are_refused() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "10.0.0.0/",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let e = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/8"), "{e}");
        assert!("2001:db8::1/32".parse::<Cidr>().is_err());
    }

    #[test]
    fn deny_beats_allow_and_empty_allow_is_everyone() {
        let open = acl(&[], &[]);
        assert!(open.permits(ip("198.51.100.1")));
        assert!(open.permits(ip("2001:db8::1")));
        let a = acl(&["10.0.0.0/8", "2001:db8::/32"], &["10.6.6.0/24"]);
        assert!(a.permits(ip("10.1.1.1")));
        assert!(!a.permits(ip("10.6.6.6")), "deny wins");
        assert!(!a.permits(ip("::ffff:10.6.6.6")), "deny wins, mapped too");
        assert!(!a.permits(ip("192.0.2.1")), "not in the allow list");
        assert!(a.permits(ip("2001:db8::5")));
        let deny_only = acl(&[], &["192.0.2.0/24"]);
        assert!(deny_only.permits(ip("192.0.3.1")));
        assert!(!deny_only.permits(ip("192.0.2.200")));
        let both_same = acl(&["192.0.2.1/32"], &["192.0.2.1/32"]);
        assert!(!both_same.permits(ip("192.0.2.1")));
    }
}
