//! The connection to an upstream server: TCP to an address the target policy
//! checked, TLS verified against the web roots plus `proxy.extra_ca_file`
//! for the host name the login gave, and line-based reads with a cap.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::login_name::Target;
use super::target::{TargetError, TargetPolicy};
use crate::net::stream::{Stream, TlsInfo};
use crate::net::tls::{TlsError, load_certs, provider};

/// Longest line an upstream may send.
const MAX_LINE: usize = 16 * 1024;

/// The TLS client configuration for upstream servers.
#[derive(Clone)]
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
}

impl UpstreamTls {
    /// Trusts the Mozilla roots of `webpki-roots` plus the CAs in `extra_ca`.
    pub fn new(extra_ca: Option<&Path>) -> Result<UpstreamTls, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = extra_ca {
            for cert in load_certs(path)? {
                roots.add(cert).map_err(|e| {
                    TlsError(format!("proxy.extra_ca_file {}: {e}", path.display()))
                })?;
            }
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS client setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(UpstreamTls {
            config: Arc::new(config),
        })
    }
}

/// What can go wrong talking to an upstream.
#[derive(Debug)]
pub enum UpstreamError {
    /// Could not connect, or the connection broke (try again later).
    Unreachable(String),
    /// TLS could not be established or verified (refused: never fall back to plaintext).
    Tls(String),
    /// The upstream said something we cannot work with.
    Protocol(String),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Unreachable(why) => write!(f, "upstream unreachable: {why}"),
            UpstreamError::Tls(why) => write!(f, "upstream TLS refused: {why}"),
            UpstreamError::Protocol(why) => write!(f, "upstream protocol error: {why}"),
        }
    }
}

impl From<io::Error> for UpstreamError {
    fn from(e: io::Error) -> UpstreamError {
        UpstreamError::Unreachable(e.to_string())
    }
}

/// Why an upstream session could not be opened, as the client will see it.
#[derive(Debug)]
pub enum OpenError {
    /// Policy, TLS or capability refusal (a permanent authentication failure).
    Refused(String),
    /// The upstream refused the credentials.
    AuthFailed(String),
    /// Network or temporary upstream trouble.
    Unavailable(String),
}

impl From<UpstreamError> for OpenError {
    fn from(e: UpstreamError) -> OpenError {
        match e {
            UpstreamError::Tls(_) => OpenError::Refused(e.to_string()),
            _ => OpenError::Unavailable(e.to_string()),
        }
    }
}

/// Everything needed to reach upstream servers, shared by both proxies.
#[derive(Clone)]
pub struct UpstreamSetup {
    /// Allow-list and address policy.
    pub policy: TargetPolicy,
    /// TLS client configuration.
    pub tls: UpstreamTls,
    /// Our name (SMTP EHLO).
    pub hostname: String,
    /// Connect and handshake timeout.
    pub connect_timeout: Duration,
    /// Timeout of each later exchange.
    pub io_timeout: Duration,
    /// Ports spoken with implicit TLS (`proxy.implicit_tls_ports`).
    pub implicit_tls_ports: Vec<u16>,
}

impl UpstreamSetup {
    /// Checks the target against the policy, resolves it once, connects to a
    /// checked address and, on an implicit-TLS port, completes the verified
    /// handshake. Returns the connection and the port used.
    pub fn connect(&self, target: &Target, default_port: u16) -> Result<UpstreamConn, OpenError> {
        let port = target.port.unwrap_or(default_port);
        let addrs = self.policy.resolve(target, port).map_err(|e| match e {
            TargetError::Unresolvable(_) => OpenError::Unavailable(e.to_string()),
            _ => OpenError::Refused(e.to_string()),
        })?;
        let mut conn = UpstreamConn::connect(&addrs, self.connect_timeout)?;
        if self.implicit_tls_ports.contains(&port) {
            conn.start_tls(&self.tls, &target.host, self.connect_timeout)?;
        }
        Ok(conn)
    }

    /// After the opening exchange: later exchanges get `io_timeout`.
    pub fn settle(&self, conn: &mut UpstreamConn) {
        conn.set_timeout(self.io_timeout);
    }
}

/// A line-oriented connection to an upstream server. Every exchange is
/// bounded by a deadline (`io_timeout` for a whole line or write), so a
/// hostile upstream cannot hold a session by trickling bytes.
pub struct UpstreamConn {
    stream: Stream,
    buf: Vec<u8>,
    peer: SocketAddr,
    tls: Option<TlsInfo>,
    io_timeout: Duration,
}

impl UpstreamConn {
    /// Connects to the first of `addrs` that answers within `timeout`.
    pub fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<UpstreamConn, UpstreamError> {
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(addr, timeout) {
                Ok(tcp) => {
                    return Ok(UpstreamConn {
                        stream: Stream::new(tcp),
                        buf: Vec::new(),
                        peer: *addr,
                        tls: None,
                        io_timeout: timeout,
                    });
                }
                Err(e) => last = Some(format!("{addr}: {e}")),
            }
        }
        Err(UpstreamError::Unreachable(
            last.unwrap_or_else(|| "no address to connect to".into()),
        ))
    }

    /// The address connected to.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The TLS parameters, once TLS is on.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// Sets how long a line or a write may take from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.io_timeout = timeout;
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.io_timeout
    }

    /// Starts TLS as the client, verifying the certificate for `host`; the
    /// whole handshake must finish within `timeout`. Bytes the server sent
    /// before the handshake are dropped (RFC 3207 section 4.2).
    pub fn start_tls(
        &mut self,
        tls: &UpstreamTls,
        host: &str,
        timeout: Duration,
    ) -> Result<(), UpstreamError> {
        self.buf.clear();
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            UpstreamError::Tls(format!(
                "{host:?} is not a name a certificate can be checked for"
            ))
        })?;
        let conn = ClientConnection::new(Arc::clone(&tls.config), name)
            .map_err(|e| UpstreamError::Tls(e.to_string()))?;
        let info = self
            .stream
            .start_tls(conn, Instant::now() + timeout)
            .map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => UpstreamError::Tls(e.to_string()),
                io::ErrorKind::TimedOut => {
                    UpstreamError::Unreachable("TLS handshake timed out".into())
                }
                _ => UpstreamError::Unreachable(e.to_string()),
            })?;
        self.tls = Some(info);
        Ok(())
    }

    fn read_some(&mut self, deadline: Instant) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk, deadline)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one line without its CRLF.
    pub fn read_line(&mut self) -> Result<Vec<u8>, UpstreamError> {
        let deadline = self.deadline();
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(UpstreamError::Protocol(
                    "the upstream sent an over-long line".into(),
                ));
            }
            if self.read_some(deadline)? == 0 {
                return Err(UpstreamError::Unreachable(
                    "the upstream closed the connection".into(),
                ));
            }
        }
    }

    /// Puts bytes back in front of what is still to be read (a reader took
    /// more than it needed).
    pub fn unread(&mut self, bytes: &[u8]) {
        self.buf.splice(0..0, bytes.iter().copied());
    }

    /// Reads up to `buf.len()` bytes of a message body (after a line-based
    /// status), taking what is buffered first.
    pub fn read_raw(&mut self, buf: &mut [u8]) -> Result<usize, UpstreamError> {
        if self.buf.is_empty() && self.read_some(self.deadline())? == 0 {
            return Ok(0);
        }
        let n = buf.len().min(self.buf.len());
        buf[..n].copy_from_slice(&self.buf[..n]);
        self.buf.drain(..n);
        Ok(n)
    }

    /// Sends one protocol line and its CRLF. A line holding a control
    /// character is refused before anything is written: it could end the
    /// line early and smuggle a second command (the callers build lines from
    /// checked input; this is the last line of defence).
    pub fn send_line(&mut self, line: &str) -> Result<(), UpstreamError> {
        if crate::auth::has_control_characters(line) {
            return Err(UpstreamError::Protocol(
                "refused to send a line holding a control character".into(),
            ));
        }
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(line.len() + 2));
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.send(&bytes)
    }

    /// Writes everything within the exchange timeout.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        let deadline = self.deadline();
        self.stream.write_all(bytes, deadline)?;
        Ok(())
    }
}

impl Drop for UpstreamConn {
    fn drop(&mut self) {
        self.stream.close(Instant::now() + Duration::from_secs(1));
    }
}
