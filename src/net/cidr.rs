//! Address ranges written as CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a
//! single address. The matching is ipnet's; what is ours is the rule for
//! IPv4-mapped peers and the wording of the errors, which name the text.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// An IPv4 or IPv6 network. IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`) match
/// IPv4 networks, since a dual-stack listener reports IPv4 clients that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl Cidr {
    /// Whether `addr` lies inside this network.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&canonical(addr))
    }
}

/// IPv4-mapped IPv6 addresses as plain IPv4, everything else unchanged.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{text:?}: prefix length must be 0 to {max}")),
            },
        };
        if network != canonical(network) {
            return Err(format!("{text:?}: write IPv4 ranges in IPv4 form"));
        }
        IpNet::new(network, prefix)
            .map(Cidr)
            .map_err(|e| format!("{text:?}: {e}"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.addr(), self.0.prefix_len())
    }
}

/// Written as the text it was parsed from (`check-config` prints it so).
impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_ranges_match_by_prefix() {
        assert!(cidr("10.0.0.0/8").contains(ip("10.200.1.1")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(cidr("192.168.4.0/22").contains(ip("192.168.7.255")));
        assert!(!cidr("192.168.4.0/22").contains(ip("192.168.8.0")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
    }

    #[test]
    fn a_single_address_is_a_full_length_prefix() {
        assert_eq!(cidr("192.0.2.1"), cidr("192.0.2.1/32"));
        assert!(cidr("2001:db8::1").contains(ip("2001:db8::1")));
        assert!(!cidr("2001:db8::1").contains(ip("2001:db8::2")));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges() {
        assert!(cidr("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert!(!cidr("::/0").contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn ipv6_ranges_match_by_prefix() {
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!cidr("2001:db8::/33").contains(ip("2001:db8:8000::1")));
    }

    #[test]
    fn nonsense_is_refused_with_the_reason() {
        assert!(
            "10.0.0.0/33"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("0 to 32")
        );
        assert!(
            "example.com"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("not an IP")
        );
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
        assert!("::ffff:10.0.0.0/104".parse::<Cidr>().is_err());
    }
}
