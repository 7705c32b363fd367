//! The socket loop shared by the line protocols (SMTP, POP3, and the proxies'
//! client sides): read until the session's deadline, feed the I/O-free
//! protocol, write its replies, stream long responses, upgrade to TLS.
//!
//! Time limits are deadlines, never timeouts per read, so a client that
//! trickles one byte at a time gains nothing ([`Patience`]):
//! - a whole command line must arrive within `command` of the moment the
//!   session began to wait for it;
//! - message data must keep coming (`data` at most between pieces) and
//!   average at least `min_data_rate` bytes a second after a first `data`
//!   of grace. This is Postfix's `smtpd_per_request_deadline` with
//!   `smtpd_min_data_rate`;
//! - a TLS handshake must be complete within `handshake`;
//! - while the gateway is overloaded (most connection slots taken), waiting
//!   clients get `overload` instead (Postfix's stress mode).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use rustls::ServerConfig;

use super::acceptor::Accepted;
use super::cidr::Cidr;
use super::conn::{Connection, Input, OnShutdown, TlsInfo};
use super::limits::{ConnectionGuard, ConnectionLimits, Pool};
use super::stream::DeadlineSocket;
use super::tls::TlsServer;
use super::upstream::{Perform, Request, Response, UpstreamLink};
use super::{log_context, proxy_header};

/// What the loop does after feeding input.
#[derive(Debug)]
pub enum Step {
    /// Write the replies and read more.
    Continue,
    /// Write the replies, drop every buffered input byte, start TLS, then call
    /// [`Protocol::tls_started`].
    StartTls,
    /// Write the replies, then call [`Protocol::next_chunk`] until it says
    /// the response is complete (a POP3 RETR), then go on.
    Stream,
    /// Write the replies, perform this upstream request, and give the
    /// outcome to [`Protocol::upstream`] (the proxies).
    Upstream(Request),
    /// Write the replies and close.
    Close,
}

/// An I/O-free line protocol: bytes in, replies out, effects as [`Step`]s.
pub trait Protocol {
    /// The greeting, written first; `Step::Close` refuses the client.
    fn greeting(&mut self, out: &mut Vec<u8>) -> Step;
    /// Feeds bytes (possibly none, to process input it still holds).
    fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step;
    /// Whether complete commands are waiting to be processed without reading.
    fn has_pending_input(&self) -> bool {
        false
    }
    /// Whether part of a command line has arrived (its deadline is running).
    fn has_partial_command(&self) -> bool;
    /// TLS is up: forget everything learnt before (RFC 3207 4.2, RFC 2595 4).
    fn tls_started(&mut self, tls: TlsInfo);
    /// Nothing in progress: a shutdown may interrupt the wait for input.
    fn is_idle(&self) -> bool;
    /// Inside message data: the data deadline applies.
    fn expecting_data(&self) -> bool;
    /// How long the replies just produced must be held back (the growing
    /// delay for repeated errors, the failed-login delay); taking it resets it.
    fn take_delay(&mut self) -> Duration {
        Duration::ZERO
    }
    /// The next piece of a streamed response (after [`Step::Stream`]);
    /// `Ok(false)` once it is complete.
    fn next_chunk(&mut self, _out: &mut Vec<u8>) -> io::Result<bool> {
        Ok(false)
    }
    /// The outcome of an upstream request (after [`Step::Upstream`]).
    fn upstream(&mut self, _response: Response<'_>, _out: &mut Vec<u8>) -> Step {
        Step::Close
    }
    /// The goodbye when the client was too slow.
    fn timed_out(&mut self, out: &mut Vec<u8>);
    /// The goodbye when the gateway is stopping.
    fn shutting_down(&mut self, out: &mut Vec<u8>);
}

/// The client's side of a session: a real connection, or a test's script.
pub trait Transport {
    /// The client's address.
    fn peer(&self) -> SocketAddr;
    /// Reads what arrives before `deadline()` (asked again as time passes).
    fn read_input(
        &mut self,
        buf: &mut [u8],
        deadline: &dyn Fn() -> Instant,
        on_shutdown: OnShutdown,
    ) -> io::Result<Input>;
    /// Writes everything before `deadline`.
    fn send(&mut self, bytes: &[u8], deadline: Instant) -> io::Result<()>;
    /// A last reply; failures do not matter any more.
    fn say_goodbye(&mut self, bytes: &[u8]);
    /// Starts TLS as the server; the handshake must end before `deadline`.
    fn start_tls(&mut self, config: Arc<ServerConfig>, deadline: Instant) -> io::Result<TlsInfo>;
}

impl Transport for Connection {
    fn peer(&self) -> SocketAddr {
        Connection::peer(self)
    }

    fn read_input(
        &mut self,
        buf: &mut [u8],
        deadline: &dyn Fn() -> Instant,
        on_shutdown: OnShutdown,
    ) -> io::Result<Input> {
        Connection::read_input(self, buf, deadline, on_shutdown)
    }

    fn send(&mut self, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        Connection::send(self, bytes, deadline)
    }

    fn say_goodbye(&mut self, bytes: &[u8]) {
        Connection::say_goodbye(self, bytes);
    }

    fn start_tls(&mut self, config: Arc<ServerConfig>, deadline: Instant) -> io::Result<TlsInfo> {
        Connection::start_tls(self, config, deadline)
    }
}

mod patience;
mod session;
#[cfg(test)]
pub(crate) mod testing;

pub use patience::{Patience, Timeouts};
use session::HANDSHAKE_FAILED;
pub use session::{Opened, SessionEnv, Surroundings};

/// Runs a protocol over a client transport (and, for the proxies, an
/// upstream) until either side ends it; returns why, for the log.
pub fn drive(
    client: &mut dyn Transport,
    upstream: &mut dyn Perform,
    protocol: &mut dyn Protocol,
    around: &dyn Surroundings,
) -> String {
    let patience = Patience::new(around.timeouts(), Instant::now());
    let mut driver = Driver {
        client,
        upstream,
        protocol,
        around,
        patience,
    };
    match driver.run() {
        Ok(never) => match never {},
        Err(end) => end,
    }
}

/// One run of the loop; every method's `Err` is why the session ended.
struct Driver<'a> {
    client: &'a mut dyn Transport,
    upstream: &'a mut dyn Perform,
    protocol: &'a mut dyn Protocol,
    around: &'a dyn Surroundings,
    patience: Patience,
}

type Ended = String;

impl Driver<'_> {
    fn run(&mut self) -> Result<std::convert::Infallible, Ended> {
        let mut out = Vec::new();
        let first = self.protocol.greeting(&mut out);
        self.perform(first, &mut out)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            self.flush(&mut out)?;
            let step = self.next_step(&mut buf, &mut out)?;
            self.perform(step, &mut out)?;
        }
    }

    /// Writes `out` (after any delay the protocol owes) within the command timeout.
    fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), Ended> {
        let delay = self.protocol.take_delay();
        if !delay.is_zero() {
            self.around.hold_back(delay);
        }
        let deadline = Instant::now() + self.around.timeouts().command;
        let sent = self.client.send(out, deadline);
        out.clear();
        sent.map_err(|e| format!("write failed: {e}"))
    }

    /// Feeds the protocol what it still holds, or what the client sends next.
    fn next_step(&mut self, buf: &mut [u8], out: &mut Vec<u8>) -> Result<Step, Ended> {
        if self.protocol.has_pending_input() {
            return Ok(self.protocol.receive(&[], out));
        }
        let on_shutdown = if self.protocol.is_idle() {
            OnShutdown::Stop
        } else {
            OnShutdown::Finish
        };
        let (around, patience) = (self.around, &self.patience);
        let input =
            self.client
                .read_input(buf, &|| patience.deadline(around.overloaded()), on_shutdown);
        match input {
            Ok(Input::Data(n)) => {
                self.patience.received(n, Instant::now());
                Ok(self.protocol.receive(&buf[..n], out))
            }
            Ok(Input::Closed) if self.protocol.expecting_data() => {
                Err("client disconnected during message data; nothing stored".into())
            }
            Ok(Input::Closed) => Err("client disconnected".into()),
            Ok(Input::TimedOut) => {
                self.protocol.timed_out(out);
                self.client.say_goodbye(out);
                Err("timed out".into())
            }
            Ok(Input::ShuttingDown) => {
                self.protocol.shutting_down(out);
                self.client.say_goodbye(out);
                Err("gateway shutting down".into())
            }
            Err(e) => Err(format!("read failed: {e}")),
        }
    }

    /// Carries out a step and whatever steps follow from it.
    fn perform(&mut self, mut step: Step, out: &mut Vec<u8>) -> Result<(), Ended> {
        loop {
            step = match step {
                Step::Continue => break,
                Step::Close => {
                    let delay = self.protocol.take_delay();
                    self.around.hold_back(delay);
                    self.client.say_goodbye(out);
                    return Err("closed".into());
                }
                Step::StartTls => return self.upgrade(out),
                Step::Stream => {
                    // The replies so far go first, then the response in
                    // pieces: memory stays constant whatever its size.
                    loop {
                        self.flush(out)?;
                        match self.protocol.next_chunk(out) {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(e) => return Err(format!("response aborted: {e}")),
                        }
                    }
                    Step::Continue
                }
                Step::Upstream(request) => {
                    self.flush(out)?;
                    let response = self.upstream.perform(request);
                    self.protocol.upstream(response, out)
                }
            };
        }
        self.patience.settle(
            Instant::now(),
            self.protocol.expecting_data(),
            self.protocol.has_partial_command(),
        );
        Ok(())
    }

    /// STARTTLS/STLS: whatever the client sent after the command in the
    /// same packet is not fed on, since it came before TLS.
    fn upgrade(&mut self, out: &mut Vec<u8>) -> Result<(), Ended> {
        self.flush(out)?;
        let deadline = Instant::now() + self.around.timeouts().handshake;
        match self.client.start_tls(self.around.tls_config(), deadline) {
            Ok(info) => {
                debug!(
                    "{}: TLS {} {}",
                    self.client.peer(),
                    info.version,
                    info.cipher
                );
                self.protocol.tls_started(info);
                self.patience.settle(Instant::now(), false, false);
                Ok(())
            }
            Err(e) => Err(format!(
                "{HANDSHAKE_FAILED} after the upgrade command failed: {e}"
            )),
        }
    }
}

#[cfg(test)]
mod tests;
