//! The POP3 server as an I/O-free state machine (RFC 1939 with RFC 2449
//! CAPA and response codes, RFC 2595 STLS, RFC 5034 AUTH). Mailboxes are
//! reached through [`Backend`] and [`Maildrop`]; message bodies leave a piece at
//! a time ([`Step::Stream`], [`Protocol::next_chunk`]) so that they never sit
//! in memory whole.

use std::io::{self, Read};

use log::info;

use super::command::{self, Command, CommandError};
use super::{Pop3, TLS_REQUIRED, err, ok};
use crate::crypto::Password;
use crate::dot_stuffing::DotStuffer;
use crate::failure::Failure;
use crate::net::conn::TlsInfo;
use crate::net::driver::Step;
use crate::net::engine::{Engine, LineMachine, Replies};
use crate::net::error_limit::ErrorPolicy;
use crate::sasl;

/// One message of the snapshot taken at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The unique id (RFC 1939 UIDL).
    pub uidl: String,
    /// Exact octets RETR sends, before dot-stuffing.
    pub size: u64,
}

/// Why a message cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// The file is damaged (`-ERR [SYS/PERM]`).
    Damaged,
    /// It could not be read just now (`-ERR [SYS/TEMP]`).
    Unavailable,
}

/// Why a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    /// Unknown mailbox or wrong password: the client cannot tell which.
    /// The answer waits the failed-login delay, which the driver sleeps
    /// (and cuts short when the gateway stops): never inside the machine.
    Failed(std::time::Duration),
    /// Too many failures from this address or for this mailbox.
    LockedOut,
    /// Another session holds the mailbox.
    InUse,
    /// The store could not be read.
    Unavailable,
}

/// A mailbox opened by a login: its snapshot, its messages, its deletions.
pub trait Maildrop {
    /// The messages as they were at login.
    fn listing(&self) -> &[Listing];
    /// Opens message `index` (0-based) for sending, having decrypted it to
    /// its end and checked every record and its size against the listing,
    /// so that a damaged message is refused before `+OK` is sent.
    fn open(&mut self, index: usize) -> Result<Box<dyn Read>, MessageError>;
    /// Removes these messages durably (the UPDATE state).
    fn delete(&mut self, indexes: &[usize]) -> Result<(), Failure>;
    /// Message `index` was sent whole by RETR (for the custody log).
    fn retrieved(&mut self, _index: usize) {}
}

/// Logs mailboxes in.
pub trait Backend {
    /// What a successful login opens.
    type Maildrop: Maildrop;
    /// Checks a login name and password and opens the mailbox.
    fn login(&mut self, user: &str, password: Password) -> Result<Self::Maildrop, LoginError>;
}

/// Protocol settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest command line, CRLF included.
    pub max_line_bytes: usize,
    /// How many errors a client may make.
    pub errors: ErrorPolicy,
}

enum State<M> {
    Authorization {
        user: Option<String>,
    },
    /// `AUTH PLAIN` sent without initial response; the next line is the response.
    AuthPlain,
    Transaction {
        maildrop: M,
        deleted: Vec<bool>,
    },
    Closed,
}

/// What POP3 means on one connection; the [`Engine`] around it keeps the
/// client side.
pub struct Pop3Server<B: Backend> {
    backend: B,
    tls: Option<TlsInfo>,
    state: State<B::Maildrop>,
    user: Option<String>,
    /// The RETR or TOP response being sent.
    sending: Option<MessageStream>,
}

/// One POP3 connection.
pub type Session<B> = Engine<Pop3Server<B>>;

const NO_SUCH_MESSAGE: &str = "No such message";

impl<B: Backend> Session<B> {
    /// A session; `tls` is set on implicit-TLS listeners.
    pub fn new(settings: Settings, backend: B, tls: Option<TlsInfo>) -> Session<B> {
        let server = Pop3Server {
            backend,
            tls,
            state: State::Authorization { user: None },
            user: None,
            sending: None,
        };
        Engine::around(server, settings.max_line_bytes, settings.errors)
    }

    /// The mailbox logged in, once there is one (for logs).
    pub fn user(&self) -> Option<&str> {
        self.machine().user.as_deref()
    }
}

impl<B: Backend> Pop3Server<B> {
    fn capabilities(&self, out: &mut Replies) {
        let mut caps = vec!["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"];
        if matches!(self.state, State::Authorization { .. }) {
            // Login commands are advertised only where they can succeed (RFC 2595 section 4).
            if self.tls.is_some() {
                caps.extend(["USER", "SASL PLAIN"]);
            } else {
                caps.push("STLS");
            }
        }
        caps.push("IMPLEMENTATION Sealpost");
        ok(out, "Capability list follows");
        let body = out.data();
        for cap in caps {
            body.extend_from_slice(cap.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b".\r\n");
    }

    fn handle(&mut self, line: &[u8], out: &mut Replies) -> Step {
        if matches!(self.state, State::AuthPlain) {
            return self.auth_plain_response(line, out);
        }
        let command = match command::parse(line) {
            Ok(c) => c,
            Err(CommandError::Unknown) => {
                err(out, "Unknown command");
                return Step::Continue;
            }
            Err(CommandError::BadCharacters) => {
                err(out, "Command line is not valid UTF-8 text");
                return Step::Continue;
            }
            Err(CommandError::Syntax(usage)) => {
                err(out, &format!("Syntax: {usage}"));
                return Step::Continue;
            }
        };
        match command {
            Command::Capa => self.capabilities(out),
            Command::Quit => return self.quit(out),
            Command::Stls => return self.stls(out),
            Command::Apop => err(
                out,
                "APOP is not supported; use USER/PASS or AUTH PLAIN over TLS",
            ),
            Command::User(name) => self.user_command(name, out),
            Command::Pass(password) => self.pass(Password::new(password), out),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial, out),
            other => return self.transaction(other, out),
        }
        Step::Continue
    }

    fn stls(&mut self, out: &mut Replies) -> Step {
        let logged_in = !matches!(self.state, State::Authorization { .. });
        super::stls(self.tls.is_some(), logged_in, out)
    }

    /// The pending USER name when login commands may be used now (before
    /// login, over TLS); otherwise writes why not.
    fn login_slot(&mut self, out: &mut Replies) -> Option<&mut Option<String>> {
        let State::Authorization { user } = &mut self.state else {
            err(out, "Already logged in");
            return None;
        };
        if self.tls.is_none() {
            err(out, TLS_REQUIRED);
            return None;
        }
        Some(user)
    }

    fn user_command(&mut self, name: String, out: &mut Replies) {
        if let Some(user) = self.login_slot(out) {
            *user = Some(name);
            // The same answer for every name: nothing about mailboxes is revealed.
            ok(out, "Send your password");
        }
    }

    fn pass(&mut self, password: Password, out: &mut Replies) {
        let Some(user) = self.login_slot(out) else {
            return;
        };
        match user.take() {
            Some(name) => self.login(&name, password, out),
            None => err(out, "Send USER first"),
        }
    }

    fn auth(&mut self, mechanism: Option<String>, initial: Option<String>, out: &mut Replies) {
        if !matches!(self.state, State::Authorization { .. }) {
            err(out, "Already logged in");
            return;
        }
        match mechanism.as_deref() {
            None => {
                ok(out, "Supported mechanisms follow");
                out.data().extend_from_slice(b"PLAIN\r\n.\r\n");
            }
            Some(_) if self.tls.is_none() => err(out, TLS_REQUIRED),
            Some("PLAIN") => match initial {
                // RFC 5034 section 4: "=" is an empty initial response.
                Some(response) if response != sasl::EMPTY_INITIAL => {
                    self.auth_plain(&response, out)
                }
                _ => {
                    self.state = State::AuthPlain;
                    out.data().extend_from_slice(b"+ \r\n");
                }
            },
            Some(other) => err(out, &format!("Unsupported mechanism {other}; use PLAIN")),
        }
    }

    fn auth_plain_response(&mut self, line: &[u8], out: &mut Replies) -> Step {
        self.state = State::Authorization { user: None };
        if line == sasl::CANCEL {
            err(out, "Authentication cancelled");
        } else {
            self.auth_plain(&String::from_utf8_lossy(line), out);
        }
        Step::Continue
    }

    fn auth_plain(&mut self, response: &str, out: &mut Replies) {
        match sasl::plain(response) {
            Some((user, password)) => self.login(&user, password, out),
            None => err(out, "[AUTH] Malformed PLAIN response"),
        }
    }

    fn login(&mut self, user: &str, password: Password, out: &mut Replies) {
        match self.backend.login(user, password) {
            Ok(maildrop) => {
                let count = maildrop.listing().len();
                let octets: u64 = maildrop.listing().iter().map(|l| l.size).sum();
                ok(
                    out,
                    &format!("Logged in: {count} messages ({octets} octets)"),
                );
                self.user = Some(user.to_string());
                self.state = State::Transaction {
                    deleted: vec![false; count],
                    maildrop,
                };
            }
            Err(e) => {
                self.state = State::Authorization { user: None };
                if let LoginError::Failed(delay) = e {
                    out.owe_login_delay(delay);
                }
                err(
                    out,
                    match e {
                        LoginError::Failed(_) => "[AUTH] Invalid login",
                        LoginError::LockedOut => {
                            "[LOGIN-DELAY] Too many failed logins; try again later"
                        }
                        LoginError::InUse => "[IN-USE] The mailbox is in use by another session",
                        LoginError::Unavailable => {
                            "[SYS/TEMP] The mailbox cannot be opened right now; try again later"
                        }
                    },
                );
            }
        }
    }

    fn quit(&mut self, out: &mut Replies) -> Step {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Transaction {
                mut maildrop,
                deleted,
            } => {
                let marked: Vec<usize> = (0..deleted.len()).filter(|&i| deleted[i]).collect();
                // RFC 1939 section 6: the UPDATE state; +OK only once the removal is durable.
                match maildrop.delete(&marked) {
                    Ok(()) => ok(
                        out,
                        &format!("Sealpost signing off ({} messages deleted)", marked.len()),
                    ),
                    Err(e) => {
                        info!(
                            "pop3 {}: deleting at QUIT failed: {e}",
                            self.user.as_deref().unwrap_or("?")
                        );
                        err(out, "[SYS/TEMP] Some deleted messages were not removed");
                    }
                }
            }
            _ => ok(out, "Sealpost signing off"),
        }
        Step::Close
    }

    fn transaction(&mut self, command: Command, out: &mut Replies) -> Step {
        let State::Transaction { maildrop, deleted } = &mut self.state else {
            err(out, "Log in first (USER/PASS or AUTH PLAIN)");
            return Step::Continue;
        };
        match command {
            Command::Stat => stat(maildrop, deleted, out),
            Command::List(None) => listing(maildrop, deleted, Listed::Sizes, out),
            Command::Uidl(None) => listing(maildrop, deleted, Listed::Uidls, out),
            Command::List(Some(n)) => listed(maildrop, deleted, n, Listed::Sizes, out),
            Command::Uidl(Some(n)) => listed(maildrop, deleted, n, Listed::Uidls, out),
            Command::Retr(n) => return self.send_message(n, DotStuffer::whole(), true, out),
            Command::Top(n, lines) => {
                return self.send_message(n, DotStuffer::top(lines), false, out);
            }
            Command::Dele(n) => dele(deleted, n, out),
            Command::Rset => {
                deleted.iter_mut().for_each(|d| *d = false);
                let octets: u64 = maildrop.listing().iter().map(|l| l.size).sum();
                ok(
                    out,
                    &format!("{} messages ({octets} octets)", deleted.len()),
                );
            }
            Command::Noop => ok(out, ""),
            _ => err(out, "Not allowed after login"),
        }
        Step::Continue
    }

    /// RETR and TOP: checked to its end first, then streamed.
    fn send_message(
        &mut self,
        n: u64,
        stuffer: DotStuffer,
        whole: bool,
        out: &mut Replies,
    ) -> Step {
        let State::Transaction { maildrop, deleted } = &mut self.state else {
            return Step::Continue;
        };
        let Some(i) = message(deleted, n) else {
            err(out, NO_SUCH_MESSAGE);
            return Step::Continue;
        };
        match maildrop.open(i) {
            Ok(reader) => {
                let size = maildrop.listing()[i].size;
                ok(out, &format!("{size} octets"));
                self.sending = Some(MessageStream {
                    reader,
                    stuffer,
                    buf: vec![0u8; 64 * 1024],
                    retrieving: whole.then_some(i),
                });
                return Step::Stream;
            }
            Err(MessageError::Damaged) => err(
                out,
                &format!("[SYS/PERM] Message {n} is damaged and cannot be read"),
            ),
            Err(MessageError::Unavailable) => err(
                out,
                &format!("[SYS/TEMP] Message {n} cannot be read right now"),
            ),
        }
        Step::Continue
    }
}

/// What a listing shows of each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listed {
    Sizes,
    Uidls,
}

impl Listed {
    fn of(self, listing: &Listing) -> String {
        match self {
            Listed::Sizes => listing.size.to_string(),
            Listed::Uidls => listing.uidl.clone(),
        }
    }
}

/// Resolves a message number to an index of a message not deleted.
fn message(deleted: &[bool], number: u64) -> Option<usize> {
    let index = usize::try_from(number).ok()?.checked_sub(1)?;
    (index < deleted.len() && !deleted[index]).then_some(index)
}

fn stat<M: Maildrop>(maildrop: &M, deleted: &[bool], out: &mut Replies) {
    let live = maildrop
        .listing()
        .iter()
        .zip(deleted.iter())
        .filter(|(_, d)| !**d);
    let (count, octets) = live.fold((0, 0), |(c, o), (l, _)| (c + 1, o + l.size));
    ok(out, &format!("{count} {octets}"));
}

/// LIST or UIDL without an argument (RFC 1939 section 5 and 7).
fn listing<M: Maildrop>(maildrop: &M, deleted: &[bool], what: Listed, out: &mut Replies) {
    ok(
        out,
        match what {
            Listed::Uidls => "Unique ids follow",
            Listed::Sizes => "Scan listing follows",
        },
    );
    let body = out.data();
    for (i, listing) in maildrop
        .listing()
        .iter()
        .enumerate()
        .filter(|(i, _)| !deleted[*i])
    {
        body.extend_from_slice(format!("{} {}\r\n", i + 1, what.of(listing)).as_bytes());
    }
    body.extend_from_slice(b".\r\n");
}

/// LIST n or UIDL n.
fn listed<M: Maildrop>(maildrop: &M, deleted: &[bool], n: u64, what: Listed, out: &mut Replies) {
    match message(deleted, n) {
        Some(i) => ok(out, &format!("{n} {}", what.of(&maildrop.listing()[i]))),
        None => err(out, NO_SUCH_MESSAGE),
    }
}

/// DELE only marks (RFC 1939 section 6): QUIT removes.
fn dele(deleted: &mut [bool], n: u64, out: &mut Replies) {
    match message(deleted, n) {
        Some(i) => {
            deleted[i] = true;
            ok(out, &format!("Message {n} deleted"));
        }
        None if usize::try_from(n).is_ok_and(|n| n >= 1 && n <= deleted.len()) => {
            err(out, &format!("Message {n} already deleted"))
        }
        None => err(out, NO_SUCH_MESSAGE),
    }
}

/// RETR/TOP output: decrypted, dot-stuffed and sent a piece at a time.
struct MessageStream {
    reader: Box<dyn Read>,
    stuffer: DotStuffer,
    buf: Vec<u8>,
    /// For RETR: the message, told to the maildrop once sent whole.
    retrieving: Option<usize>,
}

impl MessageStream {
    /// Appends the next piece; `Ok(false)` when the response is complete.
    fn next_chunk(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        let n = loop {
            match self.reader.read(&mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 || !self.stuffer.push(&self.buf[..n], out) {
            self.stuffer.finish(out);
            return Ok(false);
        }
        Ok(true)
    }
}

impl<B: Backend> LineMachine for Pop3Server<B> {
    type Dialect = Pop3;

    fn dialect(&self) -> &Pop3 {
        &Pop3
    }

    fn greeting(&self, out: &mut Replies) -> Step {
        ok(out, "Sealpost POP3 server ready");
        Step::Continue
    }

    fn line(&mut self, line: &[u8], out: &mut Replies) -> Step {
        self.handle(line, out)
    }

    fn tls_started(&mut self, tls: TlsInfo) {
        self.tls = Some(tls);
        self.state = State::Authorization { user: None };
    }

    fn next_chunk(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        let Some(sending) = &mut self.sending else {
            return Ok(false);
        };
        let more = sending.next_chunk(out);
        if let (Ok(false), Some(i)) = (&more, sending.retrieving)
            && let State::Transaction { maildrop, .. } = &mut self.state
        {
            maildrop.retrieved(i);
        }
        if !matches!(more, Ok(true)) {
            self.sending = None;
        }
        more
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
