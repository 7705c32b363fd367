//! A client connection: plain TCP or TLS over it, with reads bounded by a
//! deadline and interruptible by a gateway shutdown.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::tls::version_name;

/// Negotiated TLS parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// Cipher suite name, for logs and `Received:` headers.
    pub cipher: String,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    /// Only while upgrading.
    Gone,
}

/// What a read produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// This many bytes were read.
    Data(usize),
    /// The client closed the connection.
    Closed,
    /// Nothing arrived before the deadline.
    TimedOut,
    /// The gateway is stopping and the session is idle.
    ShuttingDown,
}

/// How often a blocked read wakes up to look at the shutdown flag.
const POLL_SLICE: Duration = Duration::from_millis(500);

/// One client connection.
pub struct Connection {
    stream: Stream,
    peer: SocketAddr,
    shutdown: Arc<AtomicBool>,
}

impl Connection {
    /// Wraps an accepted socket; writes time out after `write_timeout`.
    pub fn new(
        tcp: TcpStream,
        peer: SocketAddr,
        shutdown: Arc<AtomicBool>,
        write_timeout: Duration,
    ) -> Connection {
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_write_timeout(Some(write_timeout));
        Connection {
            stream: Stream::Plain(tcp),
            peer,
            shutdown,
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether TLS is on.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    fn tcp(&self) -> Option<&TcpStream> {
        match &self.stream {
            Stream::Plain(tcp) => Some(tcp),
            Stream::Tls(tls) => Some(tls.get_ref()),
            Stream::Gone => None,
        }
    }

    /// Starts TLS as the server (implicit TLS, or after STARTTLS/STLS): the
    /// handshake must finish within `timeout`.
    pub fn start_tls(
        &mut self,
        config: Arc<ServerConfig>,
        timeout: Duration,
    ) -> io::Result<TlsInfo> {
        let Stream::Plain(mut tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(io::Error::other("TLS is already active"));
        };
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        let deadline = Instant::now() + timeout;
        let write_timeout = tcp.write_timeout().ok().flatten();
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            }
            tcp.set_read_timeout(Some(left))?;
            tcp.set_write_timeout(Some(left))?;
            let (read, written) = conn.complete_io(&mut tcp)?;
            if read == 0 && written == 0 && conn.is_handshaking() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed during the TLS handshake",
                ));
            }
        }
        tcp.set_write_timeout(write_timeout)?;
        let info = TlsInfo {
            version: version_name(conn.protocol_version()),
            cipher: conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_else(|| "unknown".into()),
        };
        self.stream = Stream::Tls(Box::new(StreamOwned::new(conn, tcp)));
        Ok(info)
    }

    /// Reads what arrives within `timeout`. When `idle` (no transaction or
    /// partial command pending), a gateway shutdown ends the wait.
    pub fn read_input(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
        idle: bool,
    ) -> io::Result<Input> {
        let deadline = Instant::now() + timeout;
        loop {
            if idle && self.shutdown.load(Ordering::Relaxed) {
                return Ok(Input::ShuttingDown);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Input::TimedOut);
            }
            if let Some(tcp) = self.tcp() {
                tcp.set_read_timeout(Some(left.min(POLL_SLICE)))?;
            }
            let result = match &mut self.stream {
                Stream::Plain(tcp) => tcp.read(buf),
                Stream::Tls(tls) => tls.read(buf),
                Stream::Gone => return Ok(Input::Closed),
            };
            match result {
                Ok(0) => return Ok(Input::Closed),
                Ok(n) => return Ok(Input::Data(n)),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A peer that vanishes without close_notify is a closed connection.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Input::Closed),
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes everything and flushes.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match &mut self.stream {
            Stream::Plain(tcp) => tcp.write_all(bytes),
            Stream::Tls(tls) => {
                tls.write_all(bytes)?;
                tls.flush()
            }
            Stream::Gone => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    /// Ends the connection (with a TLS close_notify where TLS is on).
    pub fn close(mut self) {
        if let Stream::Tls(tls) = &mut self.stream {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        if let Some(tcp) = self.tcp() {
            let _ = tcp.shutdown(Shutdown::Both);
        }
    }
}
