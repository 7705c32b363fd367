//! Whether an MX serves, on port 25 after STARTTLS, a certificate that a
//! sender enforcing MTA-STS accepts: issued by a CA in the system's trust
//! store (`rustls-native-certs`: `/etc/ssl/certs`, or `SSL_CERT_FILE`) for
//! the MX's own name (RFC 8461 §4.2). `sealpost dns --check` asks it before
//! it calls enforce mode safe.
//!
//! The exchange is four lines (greeting, EHLO, STARTTLS, QUIT), so it is
//! written here rather than driven through the proxy's upstream machine,
//! which logs in and relays.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;

use crate::net::stream::Stream;

/// The system's trust store, as a TLS client configuration.
pub fn system_roots() -> Result<Arc<ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "the system's trust store holds no certificate ({})",
            found
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    super::client_with_roots(roots)
}

/// Reads one SMTP reply (every line of it) before `deadline`; its text.
fn reply(stream: &mut Stream, expected: &str, deadline: Instant) -> Result<String, String> {
    let mut text = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf, deadline).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        text.extend_from_slice(&buf[..n]);
        if text.len() > 64 * 1024 {
            return Err("a reply longer than 64 KiB".into());
        }
        let s = String::from_utf8_lossy(&text).into_owned();
        // The last line of a reply has a space after its code (RFC 5321 §4.2.1).
        if s.ends_with("\r\n")
            && s.trim_end()
                .lines()
                .last()
                .is_some_and(|l| l.as_bytes().get(3) == Some(&b' '))
        {
            if !s.starts_with(expected) {
                return Err(format!("answered {:?}", s.lines().last().unwrap_or("")));
            }
            return Ok(s);
        }
    }
}

/// Checks `ip` port `port` as the MX `name`: STARTTLS offered, and the
/// certificate verified for `name` against `tls`.
pub fn check(
    name: &str,
    ip: IpAddr,
    port: u16,
    helo: &str,
    tls: &Arc<ClientConfig>,
    deadline: Instant,
) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    let addr = SocketAddr::new(ip, port);
    let tcp = TcpStream::connect_timeout(&addr, left).map_err(|e| format!("{addr}: {e}"))?;
    let mut stream = Stream::new(tcp);
    let mut step = |line: &str, expected: &str| -> Result<String, String> {
        if !line.is_empty() {
            stream
                .write_all(format!("{line}\r\n").as_bytes(), deadline)
                .map_err(|e| e.to_string())?;
        }
        reply(&mut stream, expected, deadline)
    };
    step("", "220")?;
    let ehlo = step(&format!("EHLO {helo}"), "250")?;
    if !ehlo.lines().any(|l| {
        l.get(4..)
            .is_some_and(|k| k.eq_ignore_ascii_case("STARTTLS"))
    }) {
        return Err("offers no STARTTLS".into());
    }
    step("STARTTLS", "220")?;
    let server = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::clone(tls), server).map_err(|e| e.to_string())?;
    stream
        .start_tls(conn, deadline)
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let _ = stream.write_all(b"QUIT\r\n", deadline);
    stream.close(deadline);
    Ok(())
}
