//! The recording POP3 proxy's client side as an I/O-free state machine.
//!
//! The gateway answers the greeting, CAPA, STLS and the login itself; the
//! upstream login ([`Login`]) and every later exchange are
//! [`Step::Upstream`]s the driver performs. After login it asks the upstream
//! for UIDL and LIST once each, then relays commands one at a time. A RETR
//! response is passed to the client and, for a message not yet archived for
//! this mailbox, account and UIDL, stored as a copy. A DELE for a message
//! without a copy first retrieves and stores it; if that fails the DELE is
//! refused and never forwarded. TOP responses are not archived.
//!
//! Upstream texts are never shown to the client, as in the SMTP proxy: it
//! gets the `+OK`/`-ERR` and any RFC 2449 response code, with a text of
//! ours; where the text is the answer's data (STAT, LIST n, UIDL n) that
//! data is checked and passed on. Multi-line answers are data and pass whole.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use log::{info, warn};

use super::command::{self, Command, CommandError};
use super::upstream::{Link, Login, Progress, Status};
use super::{Pop3, TLS_REQUIRED, err, ok};
use crate::crypto::Password;
use crate::dot_stuffing::{DataReceiver, DotStuffer};
use crate::net::driver::Step;
use crate::net::engine::{Engine, LineMachine, Reading, Replies};
use crate::net::error_limit::ErrorPolicy;
use crate::net::intake::{Intake, Refused};
use crate::net::stream::TlsInfo;
use crate::net::upstream::{Request, Response};
use crate::proxy::login_name::Target;
use crate::proxy::relay::{Authorized, CopyFacts, CopySink, Fetched, LoginFailure, Refusal, Relay};
use crate::proxy::upstream::{Broken, OpenError};
use crate::sasl;
use crate::store::MailboxId;

/// Protocol settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest command line, CRLF included.
    pub max_line_bytes: usize,
    /// How many errors a client may make.
    pub errors: ErrorPolicy,
    /// Largest message retrieved (and archived) from the upstream.
    pub max_message_bytes: u64,
}

/// Whose mail a session archives: the mailbox and the upstream account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Where the copies go.
    pub mailbox: MailboxId,
    /// Login name at the upstream.
    pub user: String,
    /// The upstream host (lowercase, no port): with `user`, the identity of
    /// the account, whatever port or TLS mode reached it.
    pub host: String,
    /// Host and port as connected, for logs and metadata.
    pub server: String,
}

impl Account {
    fn of(login: crate::proxy::login_name::ProxyLogin) -> Account {
        let server = Target {
            port: Some(login.target.port.unwrap_or(super::upstream::DEFAULT_PORT)),
            ..login.target.clone()
        }
        .to_string();
        Account {
            mailbox: login.mailbox,
            user: login.remote_user,
            // Lowercase already (the login name parser made it so).
            host: login.target.host,
            server,
        }
    }

    /// The archive index key of a message.
    fn key<'a>(&'a self, uidl: &'a str) -> [&'a str; 3] {
        [&self.user, &self.host, uidl]
    }

    /// The key earlier versions wrote, with the port in the host: still
    /// honoured, so an upgrade archives nothing twice.
    fn legacy_key<'a>(&'a self, uidl: &'a str) -> [&'a str; 3] {
        [&self.user, &self.server, uidl]
    }
}

/// A logged-in session.
struct Tx {
    link: Link,
    account: Account,
    /// Message number to UIDL, from the one UIDL at login; `None` if the
    /// upstream has no UIDL (then only this session's copies are known).
    uidls: Option<HashMap<u64, String>>,
    /// Message number to size, from the one LIST at login (empty if refused).
    sizes: HashMap<u64, u64>,
    archived_here: HashSet<u64>,
}

/// The two listings fetched once after login.
struct Listing {
    tx: Tx,
    /// `UIDL`, then `LIST`.
    command: &'static str,
    receiver: Option<DataReceiver>,
    bytes: Vec<u8>,
}

/// A copy being made of a RETR response (its size is bounded by the body's
/// own check, so the intake's limit is not the one that acts).
struct Archiving {
    intake: Intake<Box<dyn CopySink>>,
    number: u64,
}

/// What a one-line answer is, for the text passed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Stat,
    List(u64),
    Uidl(u64),
    Dele(u64),
    Plain,
}

/// A relayed command waiting for its status line.
enum Pending {
    Line(Answer),
    /// LIST, UIDL, TOP or RETR n (copied if `copy`).
    Multi {
        retr: Option<u64>,
        copy: Option<Archiving>,
    },
    /// RETR n sent to archive the message before its DELE.
    Archive(Archiving),
    Quit,
}

/// A multi-line answer being read.
struct Body {
    receiver: DataReceiver,
    /// Where the client gets it (`None`: the client is not sent it).
    to_client: Option<DotStuffer>,
    copy: Option<Archiving>,
    total: u64,
    /// After an archiving RETR: the DELE it was for.
    then_dele: Option<u64>,
}

enum State {
    Authorization {
        user: Option<String>,
    },
    AuthPlain,
    LoggingIn(Box<Login>, Box<Authorized>),
    Disconnecting,
    Listing(Box<Listing>),
    Transaction(Box<Tx>),
    Awaiting(Box<Tx>, Pending),
    Receiving(Box<Tx>, Box<Body>),
    /// QUIT or the end; also what `state` holds while a transition is worked
    /// out, so that a transition that forgets to set the next state fails
    /// safe, by closing.
    Closed,
}

/// What POP3 means on one proxy connection; the [`Engine`] around it keeps
/// the client side.
pub struct Pop3Proxy<R: Relay> {
    relay: R,
    client_ip: IpAddr,
    tls: Option<TlsInfo>,
    state: State,
    max_message_bytes: u64,
}

/// One POP3 proxy connection.
pub type Pop3ProxySession<R> = Engine<Pop3Proxy<R>>;

const LOST: &str = "[SYS/TEMP] Connection to the upstream server lost";

/// The client's copy of an upstream status line (see the module's text policy).
fn passed_on(status: &Status, answer: Answer, out: &mut Replies) {
    if !status.ok {
        let code = status.code().map(|c| format!("[{c}] ")).unwrap_or_default();
        return err(out, &format!("{code}The upstream server refused it"));
    }
    let mut words = status.text.split_ascii_whitespace();
    let (first, second) = (words.next(), words.next());
    let number = |w: Option<&str>| w.and_then(|w| w.parse::<u64>().ok());
    let text = match answer {
        Answer::Stat => match (number(first), number(second)) {
            (Some(count), Some(octets)) => format!("{count} {octets}"),
            _ => String::new(),
        },
        Answer::List(n) => match (number(first), number(second)) {
            (Some(m), Some(size)) if m == n => format!("{n} {size}"),
            _ => String::new(),
        },
        Answer::Uidl(n) => match (number(first), second) {
            (Some(m), Some(uid)) if m == n && valid_uidl(uid) => format!("{n} {uid}"),
            _ => String::new(),
        },
        Answer::Dele(n) => format!("Message {n} deleted"),
        Answer::Plain => String::new(),
    };
    ok(out, &text);
}

/// RFC 1939 section 7: 1 to 70 characters from 0x21 to 0x7E.
fn valid_uidl(uid: &str) -> bool {
    (1..=70).contains(&uid.len()) && uid.bytes().all(|b| b.is_ascii_graphic())
}

impl<R: Relay> Pop3ProxySession<R> {
    /// A session; `tls` is set on implicit-TLS listeners.
    pub fn new(
        relay: R,
        settings: Settings,
        client_ip: IpAddr,
        tls: Option<TlsInfo>,
    ) -> Pop3ProxySession<R> {
        let proxy = Pop3Proxy {
            relay,
            client_ip,
            tls,
            state: State::Authorization { user: None },
            max_message_bytes: settings.max_message_bytes,
        };
        Engine::around(proxy, settings.max_line_bytes, settings.errors)
    }
}

impl<R: Relay> Pop3Proxy<R> {
    fn capabilities(&self, out: &mut Replies) {
        let mut caps = vec!["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE"];
        if matches!(self.state, State::Authorization { .. }) {
            if self.tls.is_some() {
                caps.extend(["USER", "SASL PLAIN"]);
            } else {
                caps.push("STLS");
            }
        }
        caps.push("IMPLEMENTATION Sealpost recording proxy");
        ok(out, "Capability list follows");
        let body = out.data();
        for cap in caps {
            body.extend_from_slice(format!("{cap}\r\n").as_bytes());
        }
        body.extend_from_slice(b".\r\n");
    }

    fn handle(&mut self, line: &[u8], out: &mut Replies) -> Step {
        if matches!(self.state, State::AuthPlain) {
            self.state = State::Authorization { user: None };
            if line == sasl::CANCEL {
                err(out, "Authentication cancelled");
                return Step::Continue;
            }
            return self.auth_plain(&String::from_utf8_lossy(line), out);
        }
        let command = match command::parse(line) {
            Ok(c) => c,
            Err(CommandError::Unknown) => return self.error(out, "Unknown command"),
            Err(CommandError::BadCharacters) => {
                return self.error(out, "Command line is not valid UTF-8 text");
            }
            Err(CommandError::Syntax(usage)) => {
                return self.error(out, &format!("Syntax: {usage}"));
            }
        };
        let in_transaction = matches!(self.state, State::Transaction(_));
        match command {
            Command::Capa => self.capabilities(out),
            Command::Stls => return super::stls(self.tls.is_some(), in_transaction, out),
            Command::Apop => err(out, "APOP is not supported"),
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } if in_transaction => {
                err(out, "Already logged in")
            }
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } if self.tls.is_none() => {
                err(out, TLS_REQUIRED)
            }
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } => {
                return self.login_command(command, out);
            }
            Command::Quit if !in_transaction => {
                ok(out, "Sealpost signing off");
                self.state = State::Closed;
                return Step::Close;
            }
            _ if !in_transaction => err(out, "Log in first (USER/PASS or AUTH PLAIN)"),
            other => return self.transaction(other, out),
        }
        Step::Continue
    }

    /// USER, PASS and AUTH, over TLS and before login.
    fn login_command(&mut self, command: Command, out: &mut Replies) -> Step {
        match command {
            Command::User(name) => {
                self.state = State::Authorization { user: Some(name) };
                ok(out, "Send your password");
            }
            Command::Pass(password) => {
                let user = match &mut self.state {
                    State::Authorization { user } => user.take(),
                    _ => None,
                };
                return match user {
                    Some(name) => self.login(&name, Password::new(password), out),
                    None => self.error(out, "Send USER first"),
                };
            }
            Command::Auth {
                mechanism: None, ..
            } => {
                ok(out, "Supported mechanisms follow");
                out.data().extend_from_slice(b"PLAIN\r\n.\r\n");
            }
            Command::Auth {
                mechanism: Some(m),
                initial,
            } if m == "PLAIN" => match initial {
                Some(response) if response != sasl::EMPTY_INITIAL => {
                    return self.auth_plain(&response, out);
                }
                _ => {
                    self.state = State::AuthPlain;
                    out.data().extend_from_slice(b"+ \r\n");
                }
            },
            Command::Auth {
                mechanism: Some(m), ..
            } => err(out, &format!("Unsupported mechanism {m}; use PLAIN")),
            _ => {}
        }
        Step::Continue
    }

    fn error(&mut self, out: &mut Replies, text: &str) -> Step {
        err(out, text);
        Step::Continue
    }

    fn auth_plain(&mut self, response: &str, out: &mut Replies) -> Step {
        match sasl::plain(response) {
            Some((user, password)) => self.login(&user, password, out),
            None => self.error(out, "[AUTH] Malformed PLAIN response"),
        }
    }

    /// The local checks, then the upstream login.
    fn login(&mut self, name: &str, password: Password, out: &mut Replies) -> Step {
        match self.relay.authorize(name, password) {
            Ok(authorized) => {
                let (login, first) = Login::start(self.relay.dialer(), &authorized);
                self.logging_in(login, Box::new(authorized), first, out)
            }
            Err(refusal) => self.refused(refusal, out),
        }
    }

    fn refused(&mut self, refusal: Refusal, out: &mut Replies) -> Step {
        out.owe_login_delay(refusal.delay);
        self.state = State::Authorization { user: None };
        match refusal.failure {
            LoginFailure::Refused => err(out, "[AUTH] Invalid login"),
            LoginFailure::Temporary => err(out, "[SYS/TEMP] Temporary failure; try again later"),
        }
        Step::Continue
    }

    fn logging_in(
        &mut self,
        login: Login,
        authorized: Box<Authorized>,
        progress: Progress<Result<Link, OpenError>>,
        out: &mut Replies,
    ) -> Step {
        let result = match progress {
            Progress::Io(request) => {
                self.state = State::LoggingIn(Box::new(login), authorized);
                return Step::Upstream(request);
            }
            Progress::Done(result) => result,
        };
        let (outcome, link) = match result {
            Ok(link) => (Ok(()), Some(link)),
            Err(e) => (Err(e), None),
        };
        match (self.relay.finish_login(*authorized, outcome), link) {
            (Ok(login), Some(link)) => {
                let tx = Tx {
                    link,
                    account: Account::of(login),
                    uidls: None,
                    sizes: HashMap::new(),
                    archived_here: HashSet::new(),
                };
                self.list(tx, "UIDL", out)
            }
            (Ok(_), None) => self.lost(&Broken("no upstream session".into()), out),
            (Err(refusal), _) => {
                self.refused(refusal, out);
                // The upstream connection is of no use any more.
                self.state = State::Disconnecting;
                Step::Upstream(Request::Disconnect)
            }
        }
    }

    fn lost(&mut self, why: &dyn std::fmt::Display, out: &mut Replies) -> Step {
        warn!("pop3 proxy: upstream lost: {why}");
        err(out, LOST);
        self.state = State::Closed;
        Step::Close
    }

    /// Sends `line` upstream; its answer comes to `pending`.
    fn relay_command(
        &mut self,
        tx: Box<Tx>,
        line: &str,
        pending: Pending,
        out: &mut Replies,
    ) -> Step {
        match tx.link.command(line) {
            Ok(request) => {
                self.state = State::Awaiting(tx, pending);
                Step::Upstream(request)
            }
            Err(e) => self.lost(&e, out),
        }
    }

    fn transaction(&mut self, command: Command, out: &mut Replies) -> Step {
        let State::Transaction(tx) = std::mem::replace(&mut self.state, State::Closed) else {
            return self.error(out, "Log in first (USER/PASS or AUTH PLAIN)");
        };
        let line = |answer| Pending::Line(answer);
        let multi = Pending::Multi {
            retr: None,
            copy: None,
        };
        match command {
            Command::Stat => self.relay_command(tx, "STAT", line(Answer::Stat), out),
            Command::Noop => self.relay_command(tx, "NOOP", line(Answer::Plain), out),
            Command::Rset => self.relay_command(tx, "RSET", line(Answer::Plain), out),
            Command::List(Some(n)) => {
                self.relay_command(tx, &format!("LIST {n}"), line(Answer::List(n)), out)
            }
            Command::Uidl(Some(n)) => {
                self.relay_command(tx, &format!("UIDL {n}"), line(Answer::Uidl(n)), out)
            }
            Command::List(None) => self.relay_command(tx, "LIST", multi, out),
            Command::Uidl(None) => self.relay_command(tx, "UIDL", multi, out),
            Command::Top(n, lines) => {
                self.relay_command(tx, &format!("TOP {n} {lines}"), multi, out)
            }
            Command::Retr(n) => self.retr(tx, n, out),
            Command::Dele(n) => self.dele(tx, n, out),
            Command::Quit => self.relay_command(tx, "QUIT", Pending::Quit, out),
            _ => {
                self.state = State::Transaction(tx);
                self.error(out, "Not allowed after login")
            }
        }
    }

    /// The status line of a relayed command.
    fn answered(
        &mut self,
        tx: Box<Tx>,
        pending: Pending,
        status: Status,
        out: &mut Replies,
    ) -> Step {
        match pending {
            Pending::Line(answer) => {
                passed_on(&status, answer, out);
                self.state = State::Transaction(tx);
                Step::Continue
            }
            Pending::Quit => {
                ok(out, "Sealpost signing off");
                self.state = State::Closed;
                Step::Close
            }
            Pending::Multi { retr, copy } if status.ok => {
                match retr.and_then(|n| tx.sizes.get(&n)) {
                    Some(size) => ok(out, &format!("{size} octets")),
                    None => ok(out, "Follows"),
                }
                self.receive_body(tx, Some(DotStuffer::whole()), copy, None, out)
            }
            Pending::Multi { .. } => {
                passed_on(&status, Answer::Plain, out);
                self.state = State::Transaction(tx);
                Step::Continue
            }
            Pending::Archive(copy) if status.ok => {
                let n = copy.number;
                self.receive_body(tx, None, Some(copy), Some(n), out)
            }
            Pending::Archive(copy) => {
                let why = format!(
                    "the upstream refused RETR {}: -ERR {}",
                    copy.number, status.text
                );
                self.not_deleted(tx, copy.number, &why, out)
            }
        }
    }
}

impl<R: Relay> LineMachine for Pop3Proxy<R> {
    type Dialect = Pop3;

    fn dialect(&self) -> &Pop3 {
        &Pop3
    }

    fn greeting(&self, out: &mut Replies) -> Step {
        ok(out, "Sealpost POP3 recording proxy ready");
        Step::Continue
    }

    /// While an upstream exchange is under way, the client's next
    /// commands wait.
    fn reading(&self) -> Reading {
        match self.state {
            State::Authorization { .. } | State::AuthPlain | State::Transaction(_) => {
                Reading::Lines
            }
            _ => Reading::Nothing,
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Replies) -> Step {
        self.handle(line, out)
    }

    fn upstream(&mut self, response: Response<'_>, out: &mut Replies) -> Step {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::LoggingIn(mut login, authorized) => {
                let progress = login.on(response, &authorized);
                self.logging_in(*login, authorized, progress, out)
            }
            State::Disconnecting => {
                self.state = State::Authorization { user: None };
                Step::Continue
            }
            State::Listing(l) => self.listing(l, response, out),
            State::Awaiting(mut tx, pending) => match tx.link.status(response) {
                Err(_) if matches!(pending, Pending::Quit) => {
                    ok(out, "Sealpost signing off");
                    Step::Close
                }
                Err(e) => self.lost(&e, out),
                Ok(Progress::Io(request)) => {
                    self.state = State::Awaiting(tx, pending);
                    Step::Upstream(request)
                }
                Ok(Progress::Done(status)) => self.answered(tx, pending, status, out),
            },
            State::Receiving(tx, body) => self.body(tx, body, Some(response), out),
            other => {
                self.state = other;
                Step::Continue
            }
        }
    }

    fn tls_started(&mut self, tls: TlsInfo) {
        self.tls = Some(tls);
        self.state = State::Authorization { user: None };
    }
}

mod listing;
mod retrieval;

#[cfg(test)]
mod tests;
