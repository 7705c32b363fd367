//! Networking shared by every service: listeners, connections, TLS, limits.

pub mod acceptor;
pub mod cidr;
pub mod conn;
pub mod driver;
pub mod limits;
pub mod line;
pub mod signals;
pub mod tls;

/// A host name: letters, digits and hyphens in dot-separated labels of 1 to
/// 63 characters, 253 at most, not all-numeric at the end (that would be an
/// IPv4 address). A trailing dot is allowed.
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}
