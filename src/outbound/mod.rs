//! The gateway's own outbound connections: the ACME server today, the
//! alerts' smarthost and the time-stamping authority next. One policy for
//! all of them, apart from the proxies' target rules (`proxy::target`):
//!
//! - each has its own configured endpoint and its own optional CA file
//!   (added to the Mozilla roots of `webpki-roots`);
//! - it may reach a loopback or private address, because the administrator
//!   named it (the proxies refuse those unless told otherwise, because a
//!   mail client names their targets);
//! - every lookup, connect, handshake, read and write is bounded by one
//!   deadline (`net::lookup`, `net::stream`), and a read gives up when the
//!   gateway stops;
//! - plain `http://` only where the payload is signed on its own (an RFC
//!   3161 time-stamp token); everything else is `https://` with a verified
//!   certificate.

pub mod dns;
pub mod http;
pub mod mx_tls;

use std::fmt;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;

use crate::net::stream::Stream;
use crate::net::tls::{load_certs, provider};

/// Why an outbound exchange failed, in an administrator's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundError(pub String);

impl fmt::Display for OutboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OutboundError {}

/// Whether an endpoint may be plain `http://`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Only `https://`: what travels is not signed on its own.
    Unsigned,
    /// `http://` too: the answer carries its own signature (RFC 3161 §2.4.2).
    Signed,
}

/// A parsed `http(s)://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// TLS or not.
    pub https: bool,
    /// The host name or address, without brackets.
    pub host: String,
    /// The port (443 or 80 when absent).
    pub port: u16,
    /// The path and query, `/` at least.
    pub path: String,
    /// The URL as it was written (an ACME server compares the JWS `url`
    /// header with it byte for byte, RFC 8555 §6.4).
    pub text: String,
}

impl Url {
    /// Parses an absolute URL. Userinfo and fragments are refused: no
    /// credential travels in a URL, and a fragment means nothing to a server.
    pub fn parse(text: &str) -> Result<Url, OutboundError> {
        let bad = |why: &str| OutboundError(format!("{text:?} is not a usable URL: {why}"));
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("it must start with https:// (or http://)"));
        };
        if text.contains('#') || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                "fragments, spaces and control characters are not allowed",
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(bad("a user name or password in the URL is not allowed"));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after.strip_prefix(':') {
                Some(port) => (host, port.parse().map_err(|_| bad("bad port"))?),
                None if after.is_empty() => (host, default_port),
                None => return Err(bad("junk after the address")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, port.parse().map_err(|_| bad("bad port"))?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() || port == 0 {
            return Err(bad("no host or port"));
        }
        Ok(Url {
            https,
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_string(),
            text: text.to_string(),
        })
    }

    /// `host:port` as a Host header and a log name it.
    pub fn authority(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The same server with another path (an absolute URL replaces it all).
    pub fn join(&self, target: &str) -> Result<Url, OutboundError> {
        if target.starts_with("https://") || target.starts_with("http://") {
            Url::parse(target)
        } else if target.starts_with('/') {
            let scheme = if self.https { "https" } else { "http" };
            Ok(Url {
                path: target.to_string(),
                text: format!("{scheme}://{}{target}", self.authority()),
                ..self.clone()
            })
        } else {
            Err(OutboundError(format!("{target:?} is not a URL")))
        }
    }
}

/// One configured endpoint of the gateway's own: where it is, which CAs it
/// is verified against, how long each exchange may take.
#[derive(Clone)]
pub struct Endpoint {
    /// What it is, for messages (`acme.directory`).
    pub what: &'static str,
    /// The configured URL.
    pub url: Url,
    tls: Arc<ClientConfig>,
    /// Each exchange (lookup, connect, handshake, request, answer) must end
    /// within this.
    pub timeout: Duration,
    shutdown: Arc<AtomicBool>,
}

impl Endpoint {
    /// An endpoint for `url`, verified against the Mozilla roots plus the
    /// CAs in `ca_file`. Refuses plain `http://` unless `payload` is signed.
    pub fn new(
        what: &'static str,
        url: &str,
        ca_file: Option<&Path>,
        payload: Payload,
        timeout: Duration,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Endpoint, OutboundError> {
        let url = Url::parse(url).map_err(|e| OutboundError(format!("{what}: {e}")))?;
        if !url.https && payload == Payload::Unsigned {
            return Err(OutboundError(format!(
                "{what}: plain http:// is allowed only for a time-stamping authority; use https://"
            )));
        }
        Ok(Endpoint {
            what,
            url,
            tls: client_config(ca_file).map_err(|e| OutboundError(format!("{what}: {e}")))?,
            timeout,
            shutdown,
        })
    }

    /// Whether the gateway is stopping.
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Opens a connection to `url`'s server (the endpoint's own, or one it
    /// pointed to) before `deadline`: the name looked up under the
    /// deadline, each address tried, TLS verified for `https`.
    pub fn connect(&self, url: &Url, deadline: Instant) -> Result<Stream, OutboundError> {
        let fail = |why: String| OutboundError(format!("{} {}: {why}", self.what, url.authority()));
        let (host, port) = (url.host.clone(), url.port);
        let addrs: Vec<SocketAddr> = crate::net::lookup::with_deadline(deadline, move || {
            (host.as_str(), port).to_socket_addrs().map(Vec::from_iter)
        })
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(format!("cannot look up the name: {e}")))?;
        let mut last = String::from("the name has no address");
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(fail("no connection in time".into()));
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(tcp) => {
                    let mut stream = Stream::new(tcp);
                    if url.https {
                        let name = ServerName::try_from(url.host.clone())
                            .map_err(|e| fail(format!("not a server name: {e}")))?;
                        let tls = rustls::ClientConnection::new(Arc::clone(&self.tls), name)
                            .map_err(|e| fail(e.to_string()))?;
                        stream
                            .start_tls(tls, deadline)
                            .map_err(|e| fail(format!("TLS handshake failed: {e}")))?;
                    }
                    return Ok(stream);
                }
                // The address only where the URL named a host, not this
                // address itself.
                Err(e) if addr.to_string() == url.authority() => last = e.to_string(),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(fail(last))
    }

    /// Reads into `buf` before `deadline`, in slices so that a stopping
    /// gateway does not wait out a server that never answers. The error
    /// says what happened; the caller names the server.
    pub fn read(
        &self,
        stream: &mut Stream,
        buf: &mut [u8],
        deadline: Instant,
    ) -> Result<usize, String> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err("no complete answer in time".into());
            }
            if self.stopping() {
                return Err("the gateway is stopping".into());
            }
            let slice = deadline.min(now + Duration::from_millis(250));
            match stream.read(buf, slice) {
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) => return Err(format!("reading: {e}")),
                Ok(n) => return Ok(n),
            }
        }
    }
}

/// The TLS client configuration for an endpoint.
fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in load_certs(path).map_err(|e| e.to_string())? {
            roots
                .add(cert)
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
        }
    }
    client_with_roots(roots)
}

/// A TLS client configuration trusting `roots`.
pub fn client_with_roots(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A CA file path as configured, for messages.
pub fn describe_ca(ca_file: Option<&PathBuf>) -> String {
    match ca_file {
        Some(p) => format!("the Mozilla roots and {}", p.display()),
        None => "the Mozilla roots".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_credentials_refused() {
        let u = Url::parse("https://acme.example:14000/dir?x=1").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "acme.example", 14000, "/dir?x=1")
        );
        assert_eq!(u.authority(), "acme.example:14000");
        let u = Url::parse("http://[::1]/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        assert_eq!(Url::parse("https://Example.ORG").unwrap().path, "/");
        for bad in [
            "ftp://x/",
            "https://user:pw@x/",
            "https://x:0/",
            "https://x:99999/",
            "https:///p",
            "https://x/a b",
            "https://x/#frag",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
        let base = Url::parse("https://a.example/dir").unwrap();
        assert_eq!(base.join("/acme/x").unwrap().path, "/acme/x");
        assert_eq!(base.join("https://b.example/y").unwrap().host, "b.example");
        assert!(base.join("relative").is_err());
    }

    #[test]
    fn plain_http_only_for_a_signed_payload() {
        let stop = Arc::new(AtomicBool::new(false));
        let t = Duration::from_secs(1);
        let e = Endpoint::new(
            "acme.directory",
            "http://x/",
            None,
            Payload::Unsigned,
            t,
            stop.clone(),
        )
        .err()
        .unwrap();
        assert!(e.0.contains("only for a time-stamping authority"), "{e}");
        assert!(Endpoint::new("tsa.url", "http://x/", None, Payload::Signed, t, stop).is_ok());
    }
}
