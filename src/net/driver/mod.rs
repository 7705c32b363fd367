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
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::net::upstream::DialError;

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

    /// What the scripted client does at its next read.
    enum Next {
        Send(&'static [u8]),
        Close,
        Wait,
        Stop,
    }

    /// A client played from a script; it records what the loop did.
    struct Script {
        next: VecDeque<Next>,
        sent: Vec<u8>,
        deadlines: Vec<Instant>,
        shutdown_modes: Vec<OnShutdown>,
        upgraded: bool,
    }

    impl Script {
        fn new(next: Vec<Next>) -> Script {
            Script {
                next: next.into(),
                sent: Vec::new(),
                deadlines: Vec::new(),
                shutdown_modes: Vec::new(),
                upgraded: false,
            }
        }

        fn sent(&self) -> String {
            String::from_utf8_lossy(&self.sent).into_owned()
        }
    }

    impl Transport for Script {
        fn peer(&self) -> SocketAddr {
            "192.0.2.1:1234".parse().unwrap()
        }

        fn read_input(
            &mut self,
            buf: &mut [u8],
            deadline: &dyn Fn() -> Instant,
            on_shutdown: OnShutdown,
        ) -> io::Result<Input> {
            self.deadlines.push(deadline());
            self.shutdown_modes.push(on_shutdown);
            Ok(match self.next.pop_front().unwrap_or(Next::Close) {
                Next::Send(bytes) => {
                    buf[..bytes.len()].copy_from_slice(bytes);
                    Input::Data(bytes.len())
                }
                Next::Close => Input::Closed,
                Next::Wait => Input::TimedOut,
                Next::Stop => Input::ShuttingDown,
            })
        }

        fn send(&mut self, bytes: &[u8], _deadline: Instant) -> io::Result<()> {
            self.sent.extend_from_slice(bytes);
            Ok(())
        }

        fn say_goodbye(&mut self, bytes: &[u8]) {
            self.sent.extend_from_slice(bytes);
        }

        fn start_tls(
            &mut self,
            _config: Arc<ServerConfig>,
            _deadline: Instant,
        ) -> io::Result<TlsInfo> {
            self.upgraded = true;
            Ok(TlsInfo {
                version: "TLSv1.3".into(),
                cipher: "test".into(),
            })
        }
    }

    /// A line protocol that shows each step: `UP x` asks the upstream,
    /// `STREAM n` streams n pieces, `STARTTLS`, `SLOW` owes a delay, `QUIT`.
    #[derive(Default)]
    struct Lines {
        partial: Vec<u8>,
        pending: VecDeque<Vec<u8>>,
        streaming: u32,
        tls: bool,
        delay: Duration,
    }

    impl Protocol for Lines {
        fn greeting(&mut self, out: &mut Vec<u8>) -> Step {
            out.extend_from_slice(b"hello\n");
            Step::Continue
        }

        fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
            self.partial.extend_from_slice(input);
            while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=i).collect();
                self.pending.push_back(line[..i].to_vec());
            }
            let Some(line) = self.pending.pop_front() else {
                return Step::Continue;
            };
            let line = String::from_utf8(line).unwrap();
            match line.split_once(' ').unwrap_or((&line, "")) {
                ("UP", what) => {
                    Step::Upstream(Request::Exchange(what.as_bytes().to_vec(), secs(1)))
                }
                ("STREAM", n) => {
                    self.streaming = n.parse().unwrap();
                    Step::Stream
                }
                ("STARTTLS", _) => Step::StartTls,
                ("SLOW", _) => {
                    self.delay = secs(2);
                    out.extend_from_slice(b"slow\n");
                    Step::Continue
                }
                ("QUIT", _) => {
                    out.extend_from_slice(b"bye\n");
                    Step::Close
                }
                (other, _) => {
                    out.extend_from_slice(format!("ok {other}\n").as_bytes());
                    Step::Continue
                }
            }
        }

        fn has_pending_input(&self) -> bool {
            !self.pending.is_empty()
        }

        fn has_partial_command(&self) -> bool {
            !self.partial.is_empty()
        }

        fn tls_started(&mut self, _tls: TlsInfo) {
            self.tls = true;
            self.partial.clear();
            self.pending.clear();
        }

        fn is_idle(&self) -> bool {
            self.partial.is_empty()
        }

        fn expecting_data(&self) -> bool {
            false
        }

        fn take_delay(&mut self) -> Duration {
            std::mem::take(&mut self.delay)
        }

        fn next_chunk(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
            out.extend_from_slice(format!("piece {}\n", self.streaming).as_bytes());
            self.streaming -= 1;
            Ok(self.streaming > 0)
        }

        fn upstream(&mut self, response: Response<'_>, out: &mut Vec<u8>) -> Step {
            match response {
                Response::Data(bytes) => {
                    out.extend_from_slice(b"upstream said ");
                    out.extend_from_slice(bytes);
                }
                _ => out.extend_from_slice(b"upstream failed"),
            }
            out.extend_from_slice(b"\n");
            Step::Continue
        }

        fn timed_out(&mut self, out: &mut Vec<u8>) {
            out.extend_from_slice(b"too slow\n");
        }

        fn shutting_down(&mut self, out: &mut Vec<u8>) {
            out.extend_from_slice(b"stopping\n");
        }
    }

    /// An upstream that answers every exchange with what it was sent, upper-cased.
    #[derive(Default)]
    struct Shouting(Vec<u8>);

    impl Perform for Shouting {
        fn perform(&mut self, request: Request) -> Response<'_> {
            match request {
                Request::Exchange(bytes, _) => {
                    self.0 = bytes.to_ascii_uppercase();
                    Response::Data(&self.0)
                }
                _ => Response::Failed(DialError::Unreachable("only exchanges".into())),
            }
        }
    }

    /// The gateway around the loop: fixed time limits, delays written down.
    struct Around {
        delays: Mutex<Vec<Duration>>,
    }

    impl Surroundings for Around {
        fn timeouts(&self) -> Timeouts {
            timeouts()
        }

        fn overloaded(&self) -> bool {
            false
        }

        fn tls_config(&self) -> Arc<ServerConfig> {
            crate::net::tls::tests::server_config()
        }

        fn hold_back(&self, delay: Duration) {
            self.delays.lock().unwrap().push(delay);
        }
    }

    fn run(script: &mut Script, protocol: &mut Lines) -> (String, Vec<Duration>) {
        let around = Around {
            delays: Mutex::new(Vec::new()),
        };
        let end = drive(script, &mut Shouting::default(), protocol, &around);
        let delays = around.delays.into_inner().unwrap();
        (end, delays.into_iter().filter(|d| !d.is_zero()).collect())
    }

    #[test]
    fn replies_follow_the_greeting_in_order_until_the_client_leaves() {
        let mut script = Script::new(vec![Next::Send(b"A\nB\nC\n")]);
        let (end, _) = run(&mut script, &mut Lines::default());
        assert_eq!(script.sent(), "hello\nok A\nok B\nok C\n");
        assert_eq!(end, "client disconnected");
    }

    #[test]
    fn an_upgrade_drops_what_came_with_the_command_and_starts_tls() {
        let mut script = Script::new(vec![
            Next::Send(b"STARTTLS\nINJECTED\n"),
            Next::Send(b"AFTER\n"),
        ]);
        let mut protocol = Lines::default();
        run(&mut script, &mut protocol);
        assert!(script.upgraded && protocol.tls);
        assert_eq!(script.sent(), "hello\nok AFTER\n");
    }

    #[test]
    fn a_streamed_response_goes_out_piece_by_piece_then_the_session_goes_on() {
        let mut script = Script::new(vec![Next::Send(b"STREAM 3\nNEXT\n")]);
        run(&mut script, &mut Lines::default());
        assert_eq!(script.sent(), "hello\npiece 3\npiece 2\npiece 1\nok NEXT\n");
    }

    #[test]
    fn upstream_requests_are_performed_and_answered() {
        let mut script = Script::new(vec![Next::Send(b"UP quiet please\nAFTER\n")]);
        run(&mut script, &mut Lines::default());
        assert_eq!(
            script.sent(),
            "hello\nupstream said QUIET PLEASE\nok AFTER\n"
        );
    }

    #[test]
    fn a_partial_line_never_moves_the_deadline_and_a_whole_one_does() {
        let mut script = Script::new(vec![
            Next::Send(b"AB"),
            Next::Send(b"CD"),
            Next::Send(b"E\n"),
        ]);
        run(&mut script, &mut Lines::default());
        let d = &script.deadlines;
        assert_eq!(d.len(), 4);
        assert_eq!(d[0], d[1], "a partial line keeps its deadline");
        assert_eq!(d[1], d[2]);
        assert!(d[3] > d[2], "the next line gets its own");
    }

    #[test]
    fn a_slow_client_gets_its_goodbye() {
        let mut script = Script::new(vec![Next::Send(b"A"), Next::Wait]);
        let (end, _) = run(&mut script, &mut Lines::default());
        assert_eq!(end, "timed out");
        assert_eq!(script.sent(), "hello\ntoo slow\n");
    }

    #[test]
    fn a_shutdown_interrupts_only_an_idle_wait() {
        let mut script = Script::new(vec![Next::Send(b"A\n"), Next::Send(b"B"), Next::Stop]);
        let (end, _) = run(&mut script, &mut Lines::default());
        assert_eq!(
            script.shutdown_modes,
            [OnShutdown::Stop, OnShutdown::Stop, OnShutdown::Finish]
        );
        assert_eq!(end, "gateway shutting down");
        assert!(script.sent().ends_with("stopping\n"));
    }

    #[test]
    fn replies_that_owe_a_delay_are_held_back_before_they_go_out() {
        let mut script = Script::new(vec![Next::Send(b"SLOW\nQUIT\n")]);
        let (end, delays) = run(&mut script, &mut Lines::default());
        assert_eq!(delays, [secs(2)]);
        assert_eq!(script.sent(), "hello\nslow\nbye\n");
        assert_eq!(end, "closed");
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
