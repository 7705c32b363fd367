//! A client connection: a [`Stream`] whose reads wait for a deadline the
//! session keeps moving, and which a gateway shutdown can interrupt.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection};

use super::stream::Stream;
pub use super::stream::TlsInfo;

/// What a read produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// This many bytes were read.
    Data(usize),
    /// The client closed the connection.
    Closed,
    /// Nothing (or not enough) arrived before the deadline.
    TimedOut,
    /// The gateway is stopping and the session is idle.
    ShuttingDown,
}

/// Whether a gateway shutdown ends the wait for input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnShutdown {
    /// Nothing is in progress: stop waiting and say goodbye.
    Stop,
    /// A transaction or a command is under way: let it finish (within the
    /// shutdown grace period).
    Finish,
}

/// How often a blocked read wakes up to look at the shutdown flag and at a
/// deadline that may have moved (overload shortens it).
const POLL_SLICE: Duration = Duration::from_millis(250);

/// How long a goodbye (a last reply, a TLS close_notify) may take.
const GOODBYE: Duration = Duration::from_secs(2);

/// One client connection.
pub struct Connection {
    stream: Stream,
    peer: SocketAddr,
    shutdown: Arc<AtomicBool>,
    /// Logged at INFO when the client first sends something.
    announce: Option<String>,
    /// Whether the client has sent a byte (after TLS, where TLS is on).
    heard: bool,
}

impl Connection {
    /// Wraps an accepted socket.
    pub fn new(tcp: TcpStream, peer: SocketAddr, shutdown: Arc<AtomicBool>) -> Connection {
        Connection {
            stream: Stream::new(tcp),
            peer,
            shutdown,
            announce: None,
            heard: false,
        }
    }

    /// Logs `line` at INFO once the client sends its first byte. A client
    /// that connects and leaves without a word (a monitoring probe such as
    /// `sealpost status`) is logged at DEBUG only.
    pub fn announce_on_input(&mut self, line: String) {
        self.announce = Some(line);
    }

    /// Whether the client has sent anything.
    pub fn heard_from_client(&self) -> bool {
        self.heard
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether TLS is on.
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Starts TLS as the server (implicit TLS, or after STARTTLS/STLS): the
    /// whole handshake must finish before `deadline`.
    pub fn start_tls(
        &mut self,
        config: Arc<ServerConfig>,
        deadline: Instant,
    ) -> io::Result<TlsInfo> {
        let tls = ServerConnection::new(config).map_err(io::Error::other)?;
        self.stream.start_tls(tls, deadline)
    }

    /// Reads what arrives before the deadline `deadline()` names; it is
    /// asked again every fraction of a second, so it may move.
    pub fn read_input(
        &mut self,
        buf: &mut [u8],
        deadline: &dyn Fn() -> Instant,
        on_shutdown: OnShutdown,
    ) -> io::Result<Input> {
        loop {
            if on_shutdown == OnShutdown::Stop && self.shutdown.load(Ordering::Relaxed) {
                return Ok(Input::ShuttingDown);
            }
            let now = Instant::now();
            let until = deadline();
            if now >= until {
                return Ok(Input::TimedOut);
            }
            match self.stream.read(buf, until.min(now + POLL_SLICE)) {
                Ok(0) => return Ok(Input::Closed),
                Ok(n) => {
                    if !self.heard {
                        self.heard = true;
                        if let Some(line) = self.announce.take() {
                            log::info!("{line}");
                        }
                    }
                    return Ok(Input::Data(n));
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Input::Closed),
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes everything before `deadline`.
    pub fn send(&mut self, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.stream.write_all(bytes, deadline)
    }

    /// A last reply, given a moment to leave; failures do not matter any more.
    pub fn say_goodbye(&mut self, bytes: &[u8]) {
        let _ = self.send(bytes, Instant::now() + GOODBYE);
    }

    /// Ends the connection (with a TLS close_notify where TLS is on).
    pub fn close(mut self) {
        self.stream.close(Instant::now() + GOODBYE);
    }

    /// Ends the connection after answering a request that was not read
    /// whole, so that the answer reaches the client (see
    /// [`Stream::close_lingering`](super::stream::Stream::close_lingering)).
    pub fn close_lingering(mut self) {
        self.stream.close_lingering(Instant::now() + GOODBYE);
    }
}
