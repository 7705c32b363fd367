//! Proxy login names: `remote_user%host[:port]%mailbox_id`.
//!
//! The last two `%` separate the parts, so the remote user may contain `@`;
//! a `%` inside the remote user is written `%25`. The host is a DNS name, an
//! IPv4 address or a bracketed IPv6 address.

use std::fmt;
use std::net::IpAddr;

use crate::net::is_dns_name;
use crate::store::MailboxId;

/// Where a proxy login sends the client: host and optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lowercase DNS name, or an IP address literal (without brackets).
    pub host: String,
    /// The port, if the login gave one.
    pub port: Option<u16>,
}

impl Target {
    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// A host as it is written before `:port`: an IPv6 address in brackets.
pub fn bracketed(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') {
        format!("[{host}]").into()
    } else {
        host.into()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = bracketed(&self.host);
        match self.port {
            Some(port) => write!(f, "{host}:{port}"),
            None => f.write_str(&host),
        }
    }
}

/// A parsed proxy login name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyLogin {
    /// The login name at the upstream server.
    pub remote_user: String,
    /// The upstream server.
    pub target: Target,
    /// Where the copies go.
    pub mailbox: MailboxId,
}

/// Parses `remote_user%host[:port]%mailbox_id`; the error says what is wrong
/// (for the log: clients only ever see a generic refusal).
pub fn parse(name: &str) -> Result<ProxyLogin, String> {
    let mut parts = name.rsplitn(3, '%');
    let (mailbox, target, user) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(u)) => (m, t, u),
        _ => return Err("expected remote_user%host[:port]%mailbox_id".into()),
    };
    let mailbox: MailboxId = mailbox.parse()?;
    let target = parse_target(target)?;
    let remote_user = decode_user(user)?;
    Ok(ProxyLogin {
        remote_user,
        target,
        mailbox,
    })
}

fn decode_user(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("the remote user is empty".into());
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("the remote user contains spaces or control characters".into());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest[i + 1..].strip_prefix("25") {
            Some(after) => {
                out.push('%');
                rest = after;
            }
            None => return Err("a % in the remote user must be written %25".into()),
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn parse_target(text: &str) -> Result<Target, String> {
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or("unterminated [ in the host")?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{host:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("expected :port after ]")?),
        };
        (host.to_string(), port)
    } else {
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        };
        if !is_dns_name(host) && host.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(format!("{host:?} is not a host name"));
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(format!("{p:?} is not a port")),
        },
    };
    Ok(Target { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "mbx-0123456789abcdef0123456789abcdef";

    fn target(host: &str, port: Option<u16>) -> Target {
        Target {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn the_three_parts_are_split_at_the_last_two_percent_signs() {
        let login = parse(&format!("anna@contoso.example%smtp.office365.com:587%{ID}")).unwrap();
        assert_eq!(login.remote_user, "anna@contoso.example");
        assert_eq!(login.target, target("smtp.office365.com", Some(587)));
        assert_eq!(login.mailbox.as_str(), ID);
    }

    #[test]
    fn the_port_is_optional_and_the_host_is_lowercased() {
        let login = parse(&format!("anna%Mail.Example.COM%{ID}")).unwrap();
        assert_eq!(login.target, target("mail.example.com", None));
    }

    #[test]
    fn a_percent_in_the_user_is_written_25() {
        let login = parse(&format!("odd%25name@example.com%mail.example.com%{ID}")).unwrap();
        assert_eq!(login.remote_user, "odd%name@example.com");
        assert!(
            parse(&format!("odd%name%mail.example.com%{ID}")).is_err(),
            "a bare % is a separator"
        );
        assert!(parse(&format!("odd%2name%mail.example.com%{ID}")).is_err());
    }

    #[test]
    fn ip_literals_are_accepted_as_hosts() {
        assert_eq!(
            parse(&format!("u%192.0.2.10:465%{ID}")).unwrap().target,
            target("192.0.2.10", Some(465))
        );
        assert_eq!(
            parse(&format!("u%[2001:db8::1]:587%{ID}")).unwrap().target,
            target("2001:db8::1", Some(587))
        );
        assert_eq!(
            parse(&format!("u%[2001:db8::1]%{ID}")).unwrap().target,
            target("2001:db8::1", None)
        );
        assert_eq!(
            parse(&format!("u%[2001:db8::1]%{ID}"))
                .unwrap()
                .target
                .to_string(),
            "[2001:db8::1]"
        );
    }

    #[test]
    fn malformed_names_are_refused_with_a_reason() {
        for bad in [
            String::from("anna"),
            "anna%mail.example.com".to_string(),
            format!("%mail.example.com%{ID}"),
            format!("anna%%{ID}"),
            format!("anna%mail.example.com:0%{ID}"),
            format!("anna%mail.example.com:99999%{ID}"),
            format!("anna%mail.example.com:+25%{ID}"),
            format!("anna%mail_example.com%{ID}"),
            format!("anna%-mail.example.com%{ID}"),
            format!("anna%[2001:db8::1%{ID}"),
            format!("anna%[not-v6]:25%{ID}"),
            format!("anna%999.1.1.1%{ID}"),
            "anna%mail.example.com%mbx-short".to_string(),
            "anna%mail.example.com%../etc".to_string(),
            format!("an na%mail.example.com%{ID}"),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }
}
