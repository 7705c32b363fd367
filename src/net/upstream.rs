//! The upstream side of a session, for the proxies: what a protocol asks the
//! driver to do toward an upstream server ([`Request`]), what came of it
//! ([`Response`]), and the link that performs it ([`UpstreamLink`]).
//!
//! The protocol machines stay free of I/O: they never resolve, connect,
//! handshake, write or read themselves, so the driver's deadlines and the
//! gateway's shutdown apply to upstream work as they do to client work.

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use super::stream::{Stream, TlsInfo};

/// Why an upstream could not be reached, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialError {
    /// Policy, name or certificate refused it: a permanent refusal.
    Refused(String),
    /// The network did not let us through: try again later.
    Unreachable(String),
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::Refused(why) => write!(f, "refused: {why}"),
            DialError::Unreachable(why) => write!(f, "unreachable: {why}"),
        }
    }
}

/// A TLS client handshake: the configuration and the name to verify.
#[derive(Clone)]
pub struct TlsClient {
    /// Roots and protocol versions.
    pub config: Arc<ClientConfig>,
    /// The name the certificate must be valid for.
    pub name: ServerName<'static>,
}

/// How to reach an upstream. `resolve` runs in the driver: it looks the name
/// up and returns only the addresses the target policy allows.
pub struct Dial {
    /// Name lookup and address check.
    pub resolve: Box<dyn FnOnce() -> Result<Vec<SocketAddr>, DialError> + Send>,
    /// For connecting and, on an implicit-TLS port, the whole handshake.
    pub timeout: Duration,
    /// `Some` on an implicit-TLS port: the handshake right after connecting.
    pub tls: Option<TlsClient>,
}

/// What a protocol asks the driver to do upstream.
pub enum Request {
    /// Resolve, connect and (implicit TLS) handshake.
    Connect(Dial),
    /// Upgrade the connection to TLS (after STARTTLS or STLS was accepted);
    /// the handshake must be done within the duration.
    StartTls(TlsClient, Duration),
    /// Write these bytes, then read what arrives; all within the duration.
    Exchange(Vec<u8>, Duration),
    /// Read what arrives within the duration.
    Read(Duration),
    /// Write these bytes within the duration; do not read.
    Send(Vec<u8>, Duration),
    /// Close the upstream connection.
    Disconnect,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Connect(_) => f.write_str("Connect"),
            Request::StartTls(..) => f.write_str("StartTls"),
            Request::Exchange(b, _) => write!(f, "Exchange({} bytes)", b.len()),
            Request::Read(_) => f.write_str("Read"),
            Request::Send(b, _) => write!(f, "Send({} bytes)", b.len()),
            Request::Disconnect => f.write_str("Disconnect"),
        }
    }
}

/// What came of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Response<'a> {
    /// Connected (with TLS, on an implicit-TLS port).
    Connected {
        /// The address connected to.
        peer: SocketAddr,
        /// The TLS parameters, if the handshake ran.
        tls: Option<TlsInfo>,
    },
    /// The upgrade is done.
    TlsStarted(TlsInfo),
    /// Bytes written (`Send`).
    Sent,
    /// Bytes read (`Exchange`, `Read`).
    Data(&'a [u8]),
    /// The upstream closed the connection.
    Closed,
    /// The connection is closed, as asked.
    Disconnected,
    /// It failed.
    Failed(DialError),
}

/// The driver's connection to an upstream server.
#[derive(Default)]
pub struct UpstreamLink {
    stream: Option<Stream>,
    /// Allocated at the first read: most sessions never have an upstream.
    buf: Vec<u8>,
    /// Set when the gateway stops: a wait for the upstream ends then.
    shutdown: Option<Arc<AtomicBool>>,
}

/// How often a wait for the upstream looks at the shutdown flag.
const POLL_SLICE: Duration = Duration::from_millis(250);

/// Whatever performs upstream requests: the real link, or a test's fake.
pub trait Perform {
    /// Carries out `request`.
    fn perform(&mut self, request: Request) -> Response<'_>;
}

impl Perform for UpstreamLink {
    fn perform(&mut self, request: Request) -> Response<'_> {
        UpstreamLink::perform(self, request)
    }
}

impl UpstreamLink {
    /// A link whose waits end when `shutdown` is set (the gateway stopping).
    pub fn watching(shutdown: Arc<AtomicBool>) -> UpstreamLink {
        UpstreamLink {
            stream: None,
            buf: Vec::new(),
            shutdown: Some(shutdown),
        }
    }

    /// Performs `request`.
    pub fn perform(&mut self, request: Request) -> Response<'_> {
        match request {
            Request::Connect(dial) => self.connect(dial),
            Request::StartTls(tls, timeout) => match &mut self.stream {
                None => Response::Failed(DialError::Unreachable("not connected".into())),
                Some(stream) => {
                    let deadline = Instant::now() + timeout;
                    match handshake(stream, tls, deadline) {
                        Ok(info) => Response::TlsStarted(info),
                        Err(e) => Response::Failed(e),
                    }
                }
            },
            Request::Exchange(bytes, within) => {
                let deadline = Instant::now() + within;
                match self.write(&bytes, deadline) {
                    Err(e) => Response::Failed(e),
                    Ok(()) => self.read(deadline),
                }
            }
            Request::Read(within) => self.read(Instant::now() + within),
            Request::Send(bytes, within) => match self.write(&bytes, Instant::now() + within) {
                Err(e) => Response::Failed(e),
                Ok(()) => Response::Sent,
            },
            Request::Disconnect => {
                self.close();
                Response::Disconnected
            }
        }
    }

    fn connect(&mut self, dial: Dial) -> Response<'_> {
        self.close();
        // The name lookup is bounded by the connect timeout like the rest
        // of the dial (see `lookup`).
        let addrs = match super::lookup::with_deadline(Instant::now() + dial.timeout, dial.resolve)
        {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(e)) => return Response::Failed(e),
            Err(e) => return Response::Failed(DialError::Unreachable(e.to_string())),
        };
        let mut last = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, dial.timeout) {
                Ok(tcp) => {
                    let mut stream = Stream::new(tcp);
                    let tls = match dial.tls {
                        None => None,
                        Some(tls) => {
                            let deadline = Instant::now() + dial.timeout;
                            match handshake(&mut stream, tls, deadline) {
                                Ok(info) => Some(info),
                                Err(e) => return Response::Failed(e),
                            }
                        }
                    };
                    self.stream = Some(stream);
                    return Response::Connected { peer: *addr, tls };
                }
                Err(e) => last = Some(format!("{addr}: {e}")),
            }
        }
        Response::Failed(DialError::Unreachable(
            last.unwrap_or_else(|| "no address to connect to".into()),
        ))
    }

    fn write(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), DialError> {
        let Some(stream) = &mut self.stream else {
            return Err(DialError::Unreachable("not connected".into()));
        };
        stream
            .write_all(bytes, deadline)
            .map_err(|e| DialError::Unreachable(format!("writing: {e}")))
    }

    fn read(&mut self, deadline: Instant) -> Response<'_> {
        let shutdown = self.shutdown.clone();
        let stopping = || shutdown.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
        let Some(stream) = &mut self.stream else {
            return Response::Failed(DialError::Unreachable("not connected".into()));
        };
        if self.buf.is_empty() {
            self.buf = vec![0u8; 64 * 1024];
        }
        // In slices, so that a gateway that stops does not wait out an
        // upstream that never answers.
        let read = loop {
            let now = Instant::now();
            if now >= deadline {
                break Err(std::io::ErrorKind::TimedOut.into());
            }
            if stopping() {
                return Response::Failed(DialError::Unreachable("the gateway is stopping".into()));
            }
            match stream.read(&mut self.buf, deadline.min(now + POLL_SLICE)) {
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                other => break other,
            }
        };
        match read {
            Ok(0) => Response::Closed,
            Ok(n) => Response::Data(&self.buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                Response::Failed(DialError::Unreachable("no answer in time".into()))
            }
            Err(e) => Response::Failed(DialError::Unreachable(format!("reading: {e}"))),
        }
    }

    /// Closes the connection (with a TLS close_notify), if there is one.
    pub fn close(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            stream.close(Instant::now() + Duration::from_secs(1));
        }
    }
}

impl Drop for UpstreamLink {
    fn drop(&mut self) {
        self.close();
    }
}

/// A client handshake; a certificate that does not verify is a refusal
/// (never a reason to fall back to plaintext), anything else a network failure.
fn handshake(stream: &mut Stream, tls: TlsClient, deadline: Instant) -> Result<TlsInfo, DialError> {
    let conn = rustls::ClientConnection::new(tls.config, tls.name)
        .map_err(|e| DialError::Refused(format!("TLS: {e}")))?;
    stream
        .start_tls(conn, deadline)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => {
                DialError::Refused(format!("upstream TLS refused: {e}"))
            }
            std::io::ErrorKind::TimedOut => {
                DialError::Unreachable("TLS handshake timed out".into())
            }
            _ => DialError::Unreachable(format!("TLS handshake: {e}")),
        })
}
