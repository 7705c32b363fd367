//! Networking shared by every service: listeners, connections, TLS, limits.

pub mod acceptor;
pub mod activation;
pub mod cidr;
pub mod conn;
pub mod driver;
pub mod engine;
pub mod error_limit;
pub mod intake;
pub mod limits;
pub mod line;
pub mod log_context;
pub mod lookup;
pub mod proxy_header;
pub mod signals;
pub mod stream;
pub mod tls;
pub mod upstream;

/// A host name: letters, digits and hyphens in dot-separated labels of 1 to
/// 63 characters, 253 at most. A trailing dot is allowed. The last label may
/// not be a number, decimal or `0x` hex: every such name is some spelling of
/// an IPv4 address to the resolver (`127.1`, `2130706433`, `0x7f000001`,
/// `0177.0.0.1`), which must never pass for a name.
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
        && !name.rsplit('.').next().is_some_and(is_number)
}

/// Decimal digits, or `0x` and hex digits (inet_aton's numbers; octal is
/// decimal digits too).
fn is_number(label: &str) -> bool {
    let digits = match label.get(..2) {
        Some(p) if p.eq_ignore_ascii_case("0x") => &label[2..],
        _ => return label.bytes().all(|b| b.is_ascii_digit()),
    };
    digits.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_names_and_numbers_are_not() {
        for good in [
            "mail.example.com",
            "localhost",
            "a-b.example.",
            "1e100.net",
            "0xdead.example",
        ] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in [
            "127.1",
            "2130706433",
            "0x7f000001",
            "0X7F.1",
            "0177.0.0.1",
            "1.0x1",
            "10.0.0.1",
            "-a.example",
            "a..b",
            "",
            "under_score.example",
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }
}
