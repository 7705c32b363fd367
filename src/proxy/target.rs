//! Which upstream servers a proxy login may reach: the allow-list of host
//! patterns, and the address check that keeps the proxy from being turned
//! against the internal network (SSRF).

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use super::login_name::{Target, bracketed};
use crate::net::cidr::{Cidr, canonical};
use crate::net::is_dns_name;

/// One `proxy.allowed_targets` entry: `mail.example.com`, `*.example.com`
/// or an IP address, with an optional `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPattern {
    /// Written `*.host`: matches any name below `host`.
    wildcard: bool,
    host: String,
    port: Option<u16>,
}

impl TargetPattern {
    /// Whether `host:port` is allowed by this pattern.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.to_ascii_lowercase();
        if self.wildcard {
            host.strip_suffix(&self.host)
                .is_some_and(|head| head.ends_with('.') && head.len() > 1)
        } else {
            host == self.host
        }
    }
}

impl FromStr for TargetPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<TargetPattern, String> {
        let lower = text.trim().to_ascii_lowercase();
        let (host, port) = if let Some(inner) = lower.strip_prefix('[') {
            let (host, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: unterminated ["))?;
            (
                host.to_string(),
                after.strip_prefix(':').map(str::to_string),
            )
        } else {
            match lower.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p.to_string())),
                _ => (lower.clone(), None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(format!("{text:?}: {p:?} is not a port")),
            },
        };
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, host),
        };
        let valid = is_dns_name(&host) || (!wildcard && host.parse::<IpAddr>().is_ok());
        if !valid {
            return Err(format!(
                "{text:?} is not a host pattern (mail.example.com, *.example.com, optionally with :port)"
            ));
        }
        Ok(TargetPattern {
            wildcard,
            host,
            port,
        })
    }
}

impl fmt::Display for TargetPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let star = if self.wildcard { "*." } else { "" };
        let host = bracketed(&self.host);
        match self.port {
            Some(p) => write!(f, "{star}{host}:{p}"),
            None => write!(f, "{star}{host}"),
        }
    }
}

/// Ranges a proxy never connects to unless `proxy.allow_private_targets`:
/// this-network, loopback, private (RFC 1918), CGNAT, link-local (with the
/// cloud metadata address 169.254.169.254), IETF-reserved, benchmarking,
/// documentation, the 6to4 relay anycast, multicast, reserved and broadcast;
/// for IPv6 every form that carries an IPv4 address (IPv4-compatible
/// `::a.b.c.d`, IPv4-translated, 6to4, Teredo, NAT64), so that no spelling
/// of an internal IPv4 address gets through, plus unspecified, loopback,
/// discard, ORCHID, documentation, unique-local, link-local, site-local and
/// multicast. IPv4-mapped addresses (`::ffff:a.b.c.d`) are judged as the
/// IPv4 address they are.
const BLOCKED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/96",
    "::ffff:0:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/32",
    "2001:10::/28",
    "2001:20::/28",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// Why an address is not reachable through the proxy, or `None`.
pub fn blocked_range(addr: IpAddr) -> Option<Cidr> {
    // IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
    let addr = canonical(addr);
    BLOCKED
        .iter()
        .filter_map(|c| c.parse::<Cidr>().ok())
        .find(|c| c.contains(addr))
}

/// Why a target was refused (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// No pattern of `proxy.allowed_targets` matches.
    NotAllowed(String),
    /// The name does not resolve.
    Unresolvable(String),
    /// Every address is in a blocked range.
    Private(String),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::NotAllowed(t) => write!(f, "{t} is not in proxy.allowed_targets"),
            TargetError::Unresolvable(why) => write!(f, "cannot resolve: {why}"),
            TargetError::Private(why) => {
                write!(f, "{why} (set proxy.allow_private_targets to allow)")
            }
        }
    }
}

/// The allow-list and address policy of the proxies.
#[derive(Debug, Clone)]
pub struct TargetPolicy {
    /// `proxy.allowed_targets`
    pub allowed: Vec<TargetPattern>,
    /// `proxy.allow_private_targets`
    pub allow_private: bool,
}

impl TargetPolicy {
    /// Checks the name against the allow-list, resolves it once and keeps the
    /// addresses that may be connected to. The caller connects only to these.
    pub fn resolve(&self, target: &Target, port: u16) -> Result<Vec<SocketAddr>, TargetError> {
        if !self.allowed.iter().any(|p| p.matches(&target.host, port)) {
            return Err(TargetError::NotAllowed(format!("{}:{port}", target.host)));
        }
        let addrs: Vec<SocketAddr> = match target.ip() {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => (target.host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| TargetError::Unresolvable(format!("{}: {e}", target.host)))?
                .collect(),
        };
        self.check(addrs)
    }

    /// Keeps the addresses outside the blocked ranges (all of them when
    /// private targets are allowed).
    pub fn check(&self, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, TargetError> {
        if addrs.is_empty() {
            return Err(TargetError::Unresolvable("no address".into()));
        }
        if self.allow_private {
            return Ok(addrs);
        }
        let mut refused = Vec::new();
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match blocked_range(a.ip()) {
                Some(range) => {
                    refused.push(format!("{} is in {range}", a.ip()));
                    false
                }
                None => true,
            })
            .collect();
        if allowed.is_empty() {
            return Err(TargetError::Private(refused.join(", ")));
        }
        Ok(allowed)
    }
}

/// Written as the text it was parsed from (`check-config` prints it so).
impl serde::Serialize for TargetPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> TargetPattern {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn exact_patterns_match_the_name_in_any_case_and_any_port() {
        let p = pattern("Mail.Example.com");
        assert!(p.matches("mail.example.com", 587));
        assert!(p.matches("MAIL.EXAMPLE.COM", 465));
        assert!(!p.matches("evil-mail.example.com", 587));
        assert!(!p.matches("mail.example.com.evil.net", 587));
    }

    #[test]
    fn wildcards_match_names_below_the_domain_only() {
        let p = pattern("*.example.com");
        assert!(p.matches("smtp.example.com", 587));
        assert!(p.matches("a.b.example.com", 587));
        assert!(!p.matches("example.com", 587));
        assert!(!p.matches("badexample.com", 587));
        assert!(!p.matches("example.com.evil.net", 587));
    }

    #[test]
    fn a_port_in_the_pattern_restricts_the_port() {
        let p = pattern("smtp.example.com:465");
        assert!(p.matches("smtp.example.com", 465));
        assert!(!p.matches("smtp.example.com", 587));
        assert!(pattern("[2001:db8::5]:587").matches("2001:db8::5", 587));
        assert!(pattern("192.0.2.1").matches("192.0.2.1", 25));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "",
            "*",
            "*.",
            "mail example.com",
            "mail.example.com:0",
            "mail.example.com:x",
            "*.192.0.2.1",
            "[::1",
            "a..b",
        ] {
            assert!(bad.parse::<TargetPattern>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_blocked_ipv4_range_is_refused() {
        for addr in [
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.169.254",
            "169.254.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(blocked_range(ip(addr)).is_some(), "{addr}");
        }
    }

    #[test]
    fn every_blocked_ipv6_range_is_refused() {
        for addr in [
            "::",
            "::1",
            "64:ff9b::a00:1",
            "100::1",
            "2001:db8::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(blocked_range(ip(addr)).is_some(), "{addr}");
        }
    }

    #[test]
    fn every_ipv6_form_of_an_ipv4_address_is_refused() {
        for addr in [
            "::127.0.0.1",                          // IPv4-compatible
            "::10.0.0.1",                           // IPv4-compatible, private
            "::93.184.216.34",                      // IPv4-compatible, even of a public address
            "::ffff:0:127.0.0.1",                   // IPv4-translated (SIIT)
            "2002:7f00:1::1",                       // 6to4 of 127.0.0.1
            "2002:5db8:d822::1",                    // 6to4 of a public address
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo
            "64:ff9b::127.0.0.1",                   // NAT64
            "64:ff9b:1::a00:1",                     // local-use NAT64
        ] {
            assert!(blocked_range(ip(addr)).is_some(), "{addr}");
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_judged_as_ipv4() {
        assert!(blocked_range(ip("::ffff:127.0.0.1")).is_some());
        assert!(blocked_range(ip("::ffff:10.1.2.3")).is_some());
        assert!(blocked_range(ip("::ffff:93.184.216.34")).is_none());
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "93.184.216.34",
            "8.8.8.8",
            "100.63.255.255",
            "172.32.0.1",
            "2606:4700::1111",
            "2a00:1450::1",
        ] {
            assert!(blocked_range(ip(addr)).is_none(), "{addr}");
        }
    }

    #[test]
    fn the_policy_keeps_only_public_addresses_unless_private_is_allowed() {
        let strict = TargetPolicy {
            allowed: vec![],
            allow_private: false,
        };
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:587".parse().unwrap(),
            "93.184.216.34:587".parse().unwrap(),
        ];
        assert_eq!(strict.check(addrs.clone()).unwrap(), vec![addrs[1]]);
        assert!(matches!(
            strict.check(vec![addrs[0]]),
            Err(TargetError::Private(_))
        ));
        let lax = TargetPolicy {
            allowed: vec![],
            allow_private: true,
        };
        assert_eq!(lax.check(addrs.clone()).unwrap(), addrs);
    }

    #[test]
    fn a_target_outside_the_allow_list_is_refused_before_any_lookup() {
        let policy = TargetPolicy {
            allowed: vec![pattern("smtp.example.com")],
            allow_private: true,
        };
        let target = Target {
            host: "smtp.elsewhere.example".into(),
            port: None,
        };
        assert!(matches!(
            policy.resolve(&target, 587),
            Err(TargetError::NotAllowed(_))
        ));
        let empty = TargetPolicy {
            allowed: vec![],
            allow_private: true,
        };
        let local = Target {
            host: "127.0.0.1".into(),
            port: None,
        };
        assert!(
            matches!(empty.resolve(&local, 587), Err(TargetError::NotAllowed(_))),
            "empty allows none"
        );
    }

    #[test]
    fn an_ip_literal_target_is_checked_without_resolving() {
        let policy = TargetPolicy {
            allowed: vec![pattern("127.0.0.1")],
            allow_private: false,
        };
        let local = Target {
            host: "127.0.0.1".into(),
            port: Some(587),
        };
        assert!(matches!(
            policy.resolve(&local, 587),
            Err(TargetError::Private(_))
        ));
        let lax = TargetPolicy {
            allowed: vec![pattern("127.0.0.1")],
            allow_private: true,
        };
        assert_eq!(
            lax.resolve(&local, 587).unwrap(),
            vec!["127.0.0.1:587".parse().unwrap()]
        );
    }

    #[test]
    fn localhost_resolves_to_loopback_and_is_refused() {
        let policy = TargetPolicy {
            allowed: vec![pattern("localhost")],
            allow_private: false,
        };
        let target = Target {
            host: "localhost".into(),
            port: None,
        };
        assert!(matches!(
            policy.resolve(&target, 587),
            Err(TargetError::Private(_))
        ));
    }
}
