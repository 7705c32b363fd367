//! The connection to an upstream server: TCP to an address the target policy
//! checked, TLS verified against the web roots plus `proxy.extra_ca_file`
//! for the host name the login gave, and line-based reads with a cap.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::login_name::Target;
use super::target::{TargetError, TargetPolicy};
use crate::net::conn::TlsInfo;
use crate::net::tls::{TlsError, load_certs, provider, version_name};

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

    /// After the opening exchange: later reads and writes get `io_timeout`.
    pub fn settle(&self, conn: &UpstreamConn) -> Result<(), OpenError> {
        conn.set_timeout(self.io_timeout)
            .map_err(|e| OpenError::Unavailable(e.to_string()))
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Gone,
}

/// A line-oriented connection to an upstream server.
pub struct UpstreamConn {
    stream: Stream,
    buf: Vec<u8>,
    peer: SocketAddr,
    tls: Option<TlsInfo>,
}

impl UpstreamConn {
    /// Connects to the first of `addrs` that answers within `timeout`.
    pub fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<UpstreamConn, UpstreamError> {
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(addr, timeout) {
                Ok(tcp) => {
                    tcp.set_nodelay(true)?;
                    tcp.set_read_timeout(Some(timeout))?;
                    tcp.set_write_timeout(Some(timeout))?;
                    return Ok(UpstreamConn {
                        stream: Stream::Plain(tcp),
                        buf: Vec::new(),
                        peer: *addr,
                        tls: None,
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

    /// Sets how long a read or write may take from now on.
    pub fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        let tcp = match &self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref(),
            Stream::Gone => return Ok(()),
        };
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))
    }

    /// Starts TLS as the client, verifying the certificate for `host`. Bytes
    /// the server sent before the handshake are dropped (RFC 3207 section 4.2).
    pub fn start_tls(
        &mut self,
        tls: &UpstreamTls,
        host: &str,
        timeout: Duration,
    ) -> Result<(), UpstreamError> {
        let Stream::Plain(mut tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(UpstreamError::Protocol("TLS is already on".into()));
        };
        self.buf.clear();
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            UpstreamError::Tls(format!(
                "{host:?} is not a name a certificate can be checked for"
            ))
        })?;
        let mut conn = ClientConnection::new(Arc::clone(&tls.config), name)
            .map_err(|e| UpstreamError::Tls(e.to_string()))?;
        let deadline = Instant::now() + timeout;
        while conn.is_handshaking() {
            if Instant::now() >= deadline {
                return Err(UpstreamError::Unreachable("TLS handshake timed out".into()));
            }
            match conn.complete_io(&mut tcp) {
                Ok((0, 0)) if conn.is_handshaking() => {
                    return Err(UpstreamError::Unreachable(
                        "closed during the TLS handshake".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(UpstreamError::Tls(e.to_string()));
                }
                Err(e) => return Err(UpstreamError::Unreachable(e.to_string())),
            }
        }
        self.tls = Some(TlsInfo {
            version: version_name(conn.protocol_version()),
            cipher: conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
        });
        self.stream = Stream::Tls(Box::new(StreamOwned::new(conn, tcp)));
        Ok(())
    }

    fn read_some(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = match &mut self.stream {
            Stream::Plain(tcp) => tcp.read(&mut chunk)?,
            Stream::Tls(tls) => tls.read(&mut chunk)?,
            Stream::Gone => 0,
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one line without its CRLF.
    pub fn read_line(&mut self) -> Result<Vec<u8>, UpstreamError> {
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
            if self.read_some()? == 0 {
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
        if self.buf.is_empty() && self.read_some()? == 0 {
            return Ok(0);
        }
        let n = buf.len().min(self.buf.len());
        buf[..n].copy_from_slice(&self.buf[..n]);
        self.buf.drain(..n);
        Ok(n)
    }

    /// Writes and flushes.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        match &mut self.stream {
            Stream::Plain(tcp) => tcp.write_all(bytes)?,
            Stream::Tls(tls) => {
                tls.write_all(bytes)?;
                tls.flush()?;
            }
            Stream::Gone => return Err(UpstreamError::Unreachable("not connected".into())),
        }
        Ok(())
    }
}

impl Drop for UpstreamConn {
    fn drop(&mut self) {
        if let Stream::Tls(tls) = &mut self.stream {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    }
}
