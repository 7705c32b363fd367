//! The line-session core: the client side of every line protocol (the SMTP
//! server, the SMTP proxy, the POP3 server, the POP3 proxy), written once.
//!
//! pingora's split is the model: the engine owns the phases and the bytes,
//! the protocol gives hooks. [`Engine`] owns
//! - the command queue (lines assembled under their cap, raw message data,
//!   what a client pipelined while an answer is still going out);
//! - the error count and its growing delay: every reply a machine writes
//!   goes through [`Replies::say`], which knows whether it is an error, and
//!   at the hard limit the engine says the protocol's goodbye and closes;
//! - the failed-login delay, which a machine hands over with
//!   [`Replies::owe_login_delay`] and the driver sleeps (shutdown-aware),
//!   never the machine;
//! - the end of the session, whichever side asks for it.
//!
//! A protocol implements [`LineMachine`]: what a line means, what raw bytes
//! mean while it reads message data, what an upstream response means. The
//! engine is the one [`Protocol`] the driver sees, so every protocol is
//! wired into its service the same way ([`super::driver::SessionEnv::serve`]).
//!
//! Hand-written, like the machines themselves: these rules are the
//! protocol state machines' own (the design keeps those ours).

use std::io;
use std::time::Duration;

use super::conn::TlsInfo;
use super::driver::{Protocol, Step};
use super::error_limit::{ErrorCount, ErrorPolicy, Verdict};
use super::line::{CommandQueue, Line};
use super::upstream::Response;

/// A reply the engine can count.
pub trait Answer {
    /// Appends the reply in its wire form.
    fn write_to(&self, out: &mut Vec<u8>);
    /// Whether it refuses or fails something (counts toward the error limit).
    fn is_error(&self) -> bool;
    /// Whether it ends the session (SMTP's 421).
    fn closes(&self) -> bool {
        false
    }
}

/// Where a machine writes during one hook: replies (counted), data that
/// is not a reply (a multi-line body), and what the engine must do about
/// them.
pub struct Replies<'a> {
    out: &'a mut Vec<u8>,
    errors: u32,
    closing: bool,
    login_delay: Duration,
    forgiven: bool,
}

impl<'a> Replies<'a> {
    /// Replies appended to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Replies<'a> {
        Replies {
            out,
            errors: 0,
            closing: false,
            login_delay: Duration::ZERO,
            forgiven: false,
        }
    }

    /// Writes a reply; an error reply counts toward the error limit.
    pub fn say<A: Answer + ?Sized>(&mut self, reply: &A) {
        reply.write_to(self.out);
        if reply.is_error() {
            self.errors += 1;
        }
        if reply.closes() {
            self.closing = true;
        }
    }

    /// Bytes that are not a reply of their own: the lines of a multi-line
    /// answer after its status line.
    pub fn data(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// A login failed: the replies wait this long before they go out.
    pub fn owe_login_delay(&mut self, delay: Duration) {
        self.login_delay += delay;
    }

    /// The client delivered a message: it is doing real work, so its
    /// earlier errors (a few unknown recipients) are forgiven.
    pub fn forgive(&mut self) {
        self.forgiven = true;
    }
}

/// What the engine reads for a machine next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Command lines.
    Lines,
    /// Raw bytes (message data), handed to [`LineMachine::raw`].
    Raw,
    /// Nothing: an upstream answer is awaited; the client's bytes wait.
    Nothing,
}

/// What a protocol says the same way in every session of it, whichever
/// machine runs the session: the answer to an over-long line, and its
/// goodbyes.
pub trait Dialect {
    /// The protocol's reply type.
    type Reply: Answer;
    /// The answer to a command line over the cap.
    fn line_too_long(&self) -> Self::Reply;
    /// The goodbye at the hard error limit.
    fn too_many_errors(&self) -> Self::Reply;
    /// The goodbye when the client was too slow.
    fn timed_out(&self) -> Self::Reply;
    /// The goodbye when the gateway is stopping.
    fn shutting_down(&self) -> Self::Reply;
}

/// A line protocol's hooks. Each hook writes through [`Replies`] and returns
/// the [`Step`] the driver takes next.
pub trait LineMachine {
    /// The protocol's common replies.
    type Dialect: Dialect;
    /// The machine's dialect.
    fn dialect(&self) -> &Self::Dialect;
    /// The greeting; `Step::Close` to refuse the client at once.
    fn greeting(&self, out: &mut Replies) -> Step;
    /// What to read next.
    fn reading(&self) -> Reading {
        Reading::Lines
    }
    /// One complete command line, without its line ending.
    fn line(&mut self, line: &[u8], out: &mut Replies) -> Step;
    /// Raw bytes while [`Reading::Raw`]: takes what it needs from the
    /// queue; `None` while the data goes on, the step once it ended.
    fn raw(&mut self, _queue: &mut CommandQueue, _out: &mut Replies) -> Option<Step> {
        Some(Step::Close)
    }
    /// The outcome of an upstream request.
    fn upstream(&mut self, _response: Response<'_>, _out: &mut Replies) -> Step {
        Step::Close
    }
    /// The next piece of a streamed response; `Ok(false)` once complete.
    fn next_chunk(&mut self, _out: &mut Vec<u8>) -> io::Result<bool> {
        Ok(false)
    }
    /// TLS is up: forget everything learnt before (RFC 3207 section 4.2,
    /// RFC 2595 section 4). The engine has dropped the buffered bytes.
    fn tls_started(&mut self, tls: TlsInfo);
    /// Nothing of the machine's own is in progress (a transaction, an
    /// upstream exchange): a shutdown may interrupt the wait for input.
    fn is_idle(&self) -> bool {
        true
    }
    /// Inside message data: the data deadline applies.
    fn expecting_data(&self) -> bool {
        false
    }
}

/// One session: a machine and the client side the engine keeps for it.
pub struct Engine<M> {
    machine: M,
    queue: CommandQueue,
    errors: ErrorCount,
    login_delay: Duration,
    closed: bool,
}

impl<M: LineMachine> Engine<M> {
    /// A session of `machine` whose command lines are at most `max_line`
    /// bytes, CRLF included.
    pub fn around(machine: M, max_line: usize, errors: ErrorPolicy) -> Engine<M> {
        Engine {
            machine,
            queue: CommandQueue::new(max_line),
            errors: ErrorCount::new(errors),
            login_delay: Duration::ZERO,
            closed: false,
        }
    }

    /// The machine, for what a service logs at the end.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The same session with its machine changed by `f`.
    pub fn map_machine(mut self, f: impl FnOnce(&mut M)) -> Engine<M> {
        f(&mut self.machine);
        self
    }

    /// Runs one hook, then applies what it wrote: errors counted (the
    /// goodbye at the hard limit), delays owed, the end of the session.
    fn hook(
        &mut self,
        out: &mut Vec<u8>,
        f: impl FnOnce(&mut M, &mut CommandQueue, &mut Replies) -> Step,
    ) -> Step {
        let mut replies = Replies::new(out);
        let step = f(&mut self.machine, &mut self.queue, &mut replies);
        let Replies {
            errors,
            closing,
            login_delay,
            forgiven,
            ..
        } = replies;
        self.login_delay += login_delay;
        if forgiven {
            self.errors.forgive();
        }
        for _ in 0..errors {
            if self.errors.record() == Verdict::Close {
                self.machine.dialect().too_many_errors().write_to(out);
                self.closed = true;
                return Step::Close;
            }
        }
        if closing || matches!(step, Step::Close) {
            self.closed = true;
            return Step::Close;
        }
        step
    }

    /// Handles what is queued: lines one at a time, or raw data, until
    /// more input is needed or a step other than `Continue` comes up.
    fn work(&mut self, out: &mut Vec<u8>) -> Step {
        loop {
            if self.closed {
                return Step::Close;
            }
            let step = match self.machine.reading() {
                Reading::Nothing => return Step::Continue,
                Reading::Raw => {
                    let mut more = false;
                    let step = self.hook(out, |m, queue, r| {
                        m.raw(queue, r).unwrap_or_else(|| {
                            more = true;
                            Step::Continue
                        })
                    });
                    if more && matches!(step, Step::Continue) {
                        return Step::Continue;
                    }
                    step
                }
                Reading::Lines => match self.queue.next_line() {
                    None => return Step::Continue,
                    Some(Line::TooLong) => self.hook(out, |m, _, r| {
                        r.say(&m.dialect().line_too_long());
                        Step::Continue
                    }),
                    Some(Line::Complete(line)) => self.hook(out, |m, _, r| m.line(&line, r)),
                },
            };
            if !matches!(step, Step::Continue) {
                return step;
            }
        }
    }
}

impl<M: LineMachine> Protocol for Engine<M> {
    fn greeting(&mut self, out: &mut Vec<u8>) -> Step {
        self.hook(out, |m, _, r| m.greeting(r))
    }

    fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        self.queue.push(input);
        self.work(out)
    }

    fn has_pending_input(&self) -> bool {
        !self.closed && self.queue.has_pending() && self.machine.reading() != Reading::Nothing
    }

    fn has_partial_command(&self) -> bool {
        !self.queue.is_empty()
    }

    fn tls_started(&mut self, tls: TlsInfo) {
        self.queue.clear();
        self.machine.tls_started(tls);
    }

    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.machine.is_idle()
    }

    fn expecting_data(&self) -> bool {
        self.machine.expecting_data()
    }

    fn take_delay(&mut self) -> Duration {
        std::mem::take(&mut self.login_delay) + self.errors.take_delay()
    }

    fn next_chunk(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        self.machine.next_chunk(out)
    }

    fn upstream(&mut self, response: Response<'_>, out: &mut Vec<u8>) -> Step {
        self.hook(out, |m, _, r| m.upstream(response, r))
    }

    fn timed_out(&mut self, out: &mut Vec<u8>) {
        self.machine.dialect().timed_out().write_to(out);
    }

    fn shutting_down(&mut self, out: &mut Vec<u8>) {
        self.machine.dialect().shutting_down().write_to(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply: `+ text` or `- text`; `-421` closes.
    struct Said(&'static str);

    impl Answer for Said {
        fn write_to(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(self.0.as_bytes());
            out.extend_from_slice(b"\n");
        }
        fn is_error(&self) -> bool {
            self.0.starts_with('-')
        }
        fn closes(&self) -> bool {
            self.0.starts_with("-421")
        }
    }

    /// `BAD` is an error, `FAIL` a failed login, `GOOD` a delivery,
    /// `DATA` reads raw bytes up to a `.`, `BYE` closes, `SHUT` says 421.
    #[derive(Default)]
    struct Machine {
        raw: bool,
        data: Vec<u8>,
    }

    struct Words;

    impl Dialect for Words {
        type Reply = Said;
        fn line_too_long(&self) -> Said {
            Said("- too long")
        }
        fn too_many_errors(&self) -> Said {
            Said("- too many errors")
        }
        fn timed_out(&self) -> Said {
            Said("- slow")
        }
        fn shutting_down(&self) -> Said {
            Said("- stopping")
        }
    }

    impl LineMachine for Machine {
        type Dialect = Words;
        fn dialect(&self) -> &Words {
            &Words
        }
        fn greeting(&self, out: &mut Replies) -> Step {
            out.say(&Said("+ hello"));
            Step::Continue
        }
        fn reading(&self) -> Reading {
            if self.raw {
                Reading::Raw
            } else {
                Reading::Lines
            }
        }
        fn line(&mut self, line: &[u8], out: &mut Replies) -> Step {
            match line {
                b"BAD" => out.say(&Said("- bad")),
                b"FAIL" => {
                    out.owe_login_delay(Duration::from_secs(3));
                    out.say(&Said("- invalid login"));
                }
                b"GOOD" => {
                    out.forgive();
                    out.say(&Said("+ stored"));
                }
                b"DATA" => {
                    self.raw = true;
                    out.say(&Said("+ go ahead"));
                }
                b"BYE" => {
                    out.say(&Said("+ bye"));
                    return Step::Close;
                }
                b"SHUT" => out.say(&Said("-421 going away")),
                _ => out.say(&Said("+ ok")),
            }
            Step::Continue
        }
        fn raw(&mut self, queue: &mut CommandQueue, out: &mut Replies) -> Option<Step> {
            let mut done = false;
            queue.take_raw(|input| {
                let end = input.iter().position(|&b| b == b'.');
                let n = end.map_or(input.len(), |i| i + 1);
                self.data.extend_from_slice(&input[..n]);
                *input = &input[n..];
                done = end.is_some();
            });
            if !done {
                return None;
            }
            self.raw = false;
            out.say(&Said("+ got it"));
            Some(Step::Continue)
        }
        fn tls_started(&mut self, _tls: TlsInfo) {
            self.raw = false;
        }
    }

    fn engine() -> Engine<Machine> {
        let policy = ErrorPolicy {
            soft: 1,
            hard: 3,
            delay: Duration::from_secs(1),
        };
        Engine::around(Machine::default(), 16, policy)
    }

    fn feed(e: &mut Engine<Machine>, input: &[u8]) -> (String, bool) {
        let mut out = Vec::new();
        let step = e.receive(input, &mut out);
        (String::from_utf8(out).unwrap(), matches!(step, Step::Close))
    }

    #[test]
    fn every_error_reply_counts_and_the_hard_limit_closes_with_the_goodbye() {
        let mut e = engine();
        let (out, closed) = feed(&mut e, b"BAD\nNOOP\nBAD\nBAD\nNOOP\n");
        assert_eq!(out, "- bad\n+ ok\n- bad\n- bad\n- too many errors\n");
        assert!(closed);
        assert!(!e.has_pending_input(), "nothing after the end is handled");
    }

    #[test]
    fn errors_beyond_the_soft_limit_owe_a_growing_delay() {
        let mut e = engine();
        feed(&mut e, b"BAD\n");
        assert_eq!(e.take_delay(), Duration::ZERO);
        feed(&mut e, b"BAD\n");
        assert_eq!(e.take_delay(), Duration::from_secs(1));
    }

    #[test]
    fn an_over_long_line_is_an_error_like_any_other() {
        let mut e = engine();
        let (out, _) = feed(&mut e, b"NOOPNOOPNOOPNOOPNOOP\nNOOP\n");
        assert_eq!(out, "- too long\n+ ok\n");
        feed(&mut e, b"BAD\n");
        assert_eq!(e.take_delay(), Duration::from_secs(1), "two errors so far");
    }

    #[test]
    fn a_failed_login_owes_its_delay_to_the_driver() {
        let mut e = engine();
        feed(&mut e, b"FAIL\n");
        assert_eq!(e.take_delay(), Duration::from_secs(3));
        assert_eq!(e.take_delay(), Duration::ZERO, "taking it pays it");
    }

    #[test]
    fn a_delivery_forgives_earlier_errors() {
        let mut e = engine();
        let (out, closed) = feed(&mut e, b"BAD\nBAD\nGOOD\nBAD\nBAD\n");
        assert!(!closed, "{out}");
        let (_, closed) = feed(&mut e, b"BAD\n");
        assert!(closed);
    }

    #[test]
    fn raw_data_is_handed_over_at_every_split_and_lines_resume_after_it() {
        let input = b"DATA\nab\nc.NOOP\n";
        for size in 1..=input.len() {
            let mut e = engine();
            let mut out = String::new();
            for piece in input.chunks(size) {
                out.push_str(&feed(&mut e, piece).0);
            }
            assert_eq!(out, "+ go ahead\n+ got it\n+ ok\n", "split {size}");
            assert_eq!(e.machine().data, b"ab\nc.", "split {size}");
            assert!(e.is_idle());
        }
    }

    #[test]
    fn a_closing_reply_or_step_ends_the_session() {
        let mut e = engine();
        assert_eq!(
            feed(&mut e, b"SHUT\nNOOP\n"),
            ("-421 going away\n".into(), true)
        );
        let mut e = engine();
        assert_eq!(feed(&mut e, b"BYE\nNOOP\n"), ("+ bye\n".into(), true));
    }

    #[test]
    fn tls_drops_what_was_buffered() {
        let mut e = engine();
        feed(&mut e, b"NOO");
        assert!(e.has_partial_command() && !e.is_idle());
        e.tls_started(TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "test".into(),
        });
        assert!(!e.has_partial_command() && e.is_idle());
    }
}
