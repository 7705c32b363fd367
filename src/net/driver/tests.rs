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

    fn start_tls(&mut self, _config: Arc<ServerConfig>, _deadline: Instant) -> io::Result<TlsInfo> {
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
            ("UP", what) => Step::Upstream(Request::Exchange(what.as_bytes().to_vec(), secs(1))),
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
