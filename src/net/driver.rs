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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info};

use super::acceptor::Accepted;
use super::conn::{Connection, Input, TlsInfo};
use super::limits::{ConnectionGuard, ConnectionLimits};
use super::tls::TlsServer;

/// A long response the protocol produces piece by piece (a POP3 RETR).
pub trait Outgoing {
    /// Appends the next piece to `out`; `Ok(false)` once everything is out.
    fn next_chunk(&mut self, out: &mut Vec<u8>) -> io::Result<bool>;
}

/// What the loop does after feeding input.
pub enum Step {
    /// Write the replies and read more.
    Continue,
    /// Write the replies, drop every buffered input byte, start TLS, then call
    /// [`Protocol::tls_started`].
    StartTls,
    /// Write the replies, then stream this response, then go on.
    Stream(Box<dyn Outgoing>),
    /// Write the replies and close.
    Close,
}

/// An I/O-free line protocol: bytes in, replies out.
pub trait Protocol {
    /// The greeting, written first.
    fn greeting(&mut self, out: &mut Vec<u8>);
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
    /// delay for repeated errors); taking it resets it.
    fn take_delay(&mut self) -> Duration {
        Duration::ZERO
    }
    /// The goodbye when the client was too slow.
    fn timed_out(&mut self, out: &mut Vec<u8>);
    /// The goodbye when the gateway is stopping.
    fn shutting_down(&mut self, out: &mut Vec<u8>);
}

/// The time limits of a session.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a whole command line.
    pub command: Duration,
    /// Longest pause inside message data, and the grace before the rate counts.
    pub data: Duration,
    /// Bytes per second message data must average after the grace (0: no minimum).
    pub min_data_rate: u64,
    /// For a whole TLS handshake.
    pub handshake: Duration,
    /// What `command` and `data` pauses shrink to while overloaded.
    pub overload: Duration,
}

#[derive(Debug, Clone, Copy)]
struct DataProgress {
    started: Instant,
    bytes: u64,
    last: Instant,
}

/// When the session stops waiting for the client, from what it waits for and
/// how far the client got. Pure: the clock is passed in.
#[derive(Debug, Clone)]
pub struct Patience {
    timeouts: Timeouts,
    command_started: Instant,
    data: Option<DataProgress>,
}

impl Patience {
    /// Waiting for the first command from `now`.
    pub fn new(timeouts: Timeouts, now: Instant) -> Patience {
        Patience {
            timeouts,
            command_started: now,
            data: None,
        }
    }

    fn pause(&self, limit: Duration, overloaded: bool) -> Duration {
        if overloaded {
            limit.min(self.timeouts.overload)
        } else {
            limit
        }
    }

    /// The moment the session gives up.
    pub fn deadline(&self, overloaded: bool) -> Instant {
        let t = &self.timeouts;
        match &self.data {
            None => self.command_started + self.pause(t.command, overloaded),
            Some(d) => {
                let idle = d.last + self.pause(t.data, overloaded);
                if t.min_data_rate == 0 {
                    return idle;
                }
                let earned = Duration::from_secs_f64(d.bytes as f64 / t.min_data_rate as f64);
                idle.min(d.started + t.data + earned)
            }
        }
    }

    /// `n` bytes arrived at `now`.
    pub fn received(&mut self, n: usize, now: Instant) {
        if let Some(d) = &mut self.data {
            d.bytes += n as u64;
            d.last = now;
        }
    }

    /// After the protocol took its input: inside data, or between or within
    /// command lines. A command's deadline starts only when the previous
    /// line is complete, so partial input never moves it.
    pub fn settle(&mut self, now: Instant, in_data: bool, partial_command: bool) {
        if in_data {
            self.data.get_or_insert(DataProgress {
                started: now,
                bytes: 0,
                last: now,
            });
            return;
        }
        if self.data.take().is_some() || !partial_command {
            self.command_started = now;
        }
    }
}

/// What every session of every service shares.
#[derive(Clone)]
pub struct SessionEnv {
    /// The server certificate.
    pub tls: Arc<TlsServer>,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Set when the gateway is stopping.
    pub shutdown: Arc<AtomicBool>,
    /// The connection counts, which say when the gateway is overloaded.
    pub limits: Arc<ConnectionLimits>,
}

/// An accepted connection, ready for its protocol.
pub struct Opened {
    /// The connection (already TLS on implicit-TLS listeners).
    pub conn: Connection,
    /// The TLS parameters when TLS is on.
    pub tls: Option<TlsInfo>,
    /// Keeps the connection counted until the session ends.
    pub guard: ConnectionGuard,
}

impl SessionEnv {
    /// Wraps an accepted socket and, on an implicit-TLS listener, completes the
    /// handshake; `None` (logged) when that fails.
    pub fn open(&self, accepted: Accepted, implicit_tls: bool, service: &str) -> Option<Opened> {
        let Accepted { tcp, peer, guard } = accepted;
        let mut conn = Connection::new(tcp, peer, Arc::clone(&self.shutdown));
        let mut tls = None;
        if implicit_tls {
            let deadline = Instant::now() + self.timeouts.handshake;
            match conn.start_tls(self.tls.current(), deadline) {
                Ok(info) => tls = Some(info),
                Err(e) => {
                    info!("{service} {peer}: TLS handshake failed: {e}");
                    return None;
                }
            }
        }
        info!(
            "{service} {peer}: connected{}",
            tls.as_ref()
                .map(|t| format!(" ({} {})", t.version, t.cipher))
                .unwrap_or_default()
        );
        Some(Opened { conn, tls, guard })
    }

    /// Runs `protocol` over `conn` until either side ends it; returns why.
    pub fn drive(&self, conn: &mut Connection, protocol: &mut dyn Protocol) -> String {
        Driver {
            conn,
            protocol,
            env: self,
        }
        .run()
    }

    /// A whole session: opens the connection, builds the protocol for the
    /// client (address, TLS if implicit), runs it, closes, and logs why it ended.
    /// Returns the protocol, for anything else the caller wants to log.
    pub fn serve<P: Protocol>(
        &self,
        accepted: Accepted,
        implicit_tls: bool,
        service: &str,
        make: impl FnOnce(std::net::SocketAddr, Option<TlsInfo>) -> P,
    ) -> Option<P> {
        let mut opened = self.open(accepted, implicit_tls, service)?;
        let peer = opened.conn.peer();
        let mut protocol = make(peer, opened.tls.take());
        let end = self.drive(&mut opened.conn, &mut protocol);
        opened.conn.close();
        info!("{service} {peer}: {end}");
        Some(protocol)
    }

    fn overloaded(&self) -> bool {
        self.limits.overloaded()
    }

    /// Sleeps `delay` in slices, giving up early when the gateway stops.
    fn hold_back(&self, delay: Duration) {
        let until = Instant::now() + delay;
        while !self.shutdown.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(250)));
        }
    }
}

/// One run of the loop.
struct Driver<'a> {
    conn: &'a mut Connection,
    protocol: &'a mut dyn Protocol,
    env: &'a SessionEnv,
}

impl Driver<'_> {
    /// Writes `out` (after any error delay) within the command timeout.
    fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let delay = self.protocol.take_delay();
        if !delay.is_zero() {
            self.env.hold_back(delay);
        }
        let deadline = Instant::now() + self.env.timeouts.command;
        let sent = self.conn.send(out, deadline);
        out.clear();
        sent.map_err(|e| format!("write failed: {e}"))
    }

    fn run(&mut self) -> String {
        let timeouts = self.env.timeouts;
        let mut out = Vec::new();
        self.protocol.greeting(&mut out);
        let mut buf = vec![0u8; 64 * 1024];
        let mut patience = Patience::new(timeouts, Instant::now());
        loop {
            if let Err(e) = self.flush(&mut out) {
                return e;
            }
            let step = if self.protocol.has_pending_input() {
                self.protocol.receive(&[], &mut out)
            } else {
                let idle = self.protocol.is_idle();
                let env = self.env;
                let waiting = &patience;
                let input =
                    self.conn
                        .read_input(&mut buf, &|| waiting.deadline(env.overloaded()), idle);
                match input {
                    Ok(Input::Data(n)) => {
                        patience.received(n, Instant::now());
                        self.protocol.receive(&buf[..n], &mut out)
                    }
                    Ok(Input::Closed) if self.protocol.expecting_data() => {
                        return "client disconnected during message data; nothing stored".into();
                    }
                    Ok(Input::Closed) => return "client disconnected".into(),
                    Ok(Input::TimedOut) => {
                        self.protocol.timed_out(&mut out);
                        self.conn.say_goodbye(&out);
                        return "timed out".into();
                    }
                    Ok(Input::ShuttingDown) => {
                        self.protocol.shutting_down(&mut out);
                        self.conn.say_goodbye(&out);
                        return "gateway shutting down".into();
                    }
                    Err(e) => return format!("read failed: {e}"),
                }
            };
            patience.settle(
                Instant::now(),
                self.protocol.expecting_data(),
                self.protocol.has_partial_command(),
            );
            match step {
                Step::Continue => {}
                Step::Close => {
                    let delay = self.protocol.take_delay();
                    self.env.hold_back(delay);
                    self.conn.say_goodbye(&out);
                    return "closed".into();
                }
                Step::Stream(mut outgoing) => {
                    // The replies so far go first, then the response in pieces:
                    // memory stays constant whatever its size.
                    loop {
                        if let Err(e) = self.flush(&mut out) {
                            return e;
                        }
                        match outgoing.next_chunk(&mut out) {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(e) => return format!("response aborted: {e}"),
                        }
                    }
                    patience.settle(Instant::now(), false, false);
                }
                Step::StartTls => {
                    // Whatever the client sent after the command in the same
                    // packet is not fed on: it came before TLS.
                    if let Err(e) = self.flush(&mut out) {
                        return e;
                    }
                    let deadline = Instant::now() + timeouts.handshake;
                    match self.conn.start_tls(self.env.tls.current(), deadline) {
                        Ok(info) => {
                            debug!("{}: TLS {} {}", self.conn.peer(), info.version, info.cipher);
                            self.protocol.tls_started(info);
                            patience.settle(Instant::now(), false, false);
                        }
                        Err(e) => {
                            return format!("TLS handshake after the upgrade command failed: {e}");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            command: Duration::from_secs(300),
            data: Duration::from_secs(180),
            min_data_rate: 500,
            handshake: Duration::from_secs(30),
            overload: Duration::from_secs(10),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_command_line_has_one_deadline_however_it_trickles_in() {
        let t0 = Instant::now();
        let mut p = Patience::new(timeouts(), t0);
        // One byte every 10 s: the deadline stays where the line began.
        for i in 1..=20 {
            let now = t0 + secs(10 * i);
            p.received(1, now);
            p.settle(now, false, true);
            assert_eq!(p.deadline(false), t0 + secs(300));
        }
        // The line completes: the next one gets its own 300 s.
        p.settle(t0 + secs(250), false, false);
        assert_eq!(p.deadline(false), t0 + secs(550));
    }

    #[test]
    fn data_must_keep_flowing_and_keep_a_minimum_rate() {
        let t0 = Instant::now();
        let mut p = Patience::new(timeouts(), t0);
        p.settle(t0, true, false);
        // Nothing yet: the grace of `data`.
        assert_eq!(p.deadline(false), t0 + secs(180));
        // A trickle of 1 byte a second keeps the pauses short but earns
        // almost no time: the deadline stays near the grace.
        for i in 1..=170 {
            p.received(1, t0 + secs(i));
        }
        let d = p.deadline(false);
        assert!(d < t0 + secs(181), "{:?}", d - t0);
        // A fast sender earns time at the minimum rate: 1 MB = 2000 s.
        let mut p = Patience::new(timeouts(), t0);
        p.settle(t0, true, false);
        p.received(1_000_000, t0 + secs(1));
        assert_eq!(p.deadline(false), t0 + secs(1) + secs(180));
        // ...but may still not pause longer than `data`.
        p.received(1_000_000, t0 + secs(2));
        assert_eq!(p.deadline(false), t0 + secs(2) + secs(180));
    }

    #[test]
    fn without_a_minimum_rate_only_the_pauses_count() {
        let t0 = Instant::now();
        let mut p = Patience::new(
            Timeouts {
                min_data_rate: 0,
                ..timeouts()
            },
            t0,
        );
        p.settle(t0, true, false);
        p.received(1, t0 + secs(170));
        assert_eq!(p.deadline(false), t0 + secs(350));
    }

    #[test]
    fn the_end_of_data_starts_the_next_command_deadline() {
        let t0 = Instant::now();
        let mut p = Patience::new(timeouts(), t0);
        p.settle(t0, true, false);
        p.received(100, t0 + secs(5));
        p.settle(t0 + secs(5), false, true);
        assert_eq!(p.deadline(false), t0 + secs(305));
    }

    #[test]
    fn overload_shortens_every_wait() {
        let t0 = Instant::now();
        let mut p = Patience::new(timeouts(), t0);
        assert_eq!(p.deadline(true), t0 + secs(10));
        p.settle(t0, true, false);
        p.received(10_000_000, t0 + secs(1));
        assert_eq!(p.deadline(true), t0 + secs(11));
    }
}
