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
use std::time::SystemTime;

use log::{info, warn};

use super::command::{self, Command, CommandError};
use super::upstream::{Link, Login, Progress, Status};
use super::{StatusLine, TLS_REQUIRED, err, ok, said};
use crate::crypto::Password;
use crate::dot_stuffing::{DataReceiver, DotStuffer};
use crate::net::driver::Step;
use crate::net::engine::{Engine, LineMachine, Reading, Replies};
use crate::net::error_limit::ErrorPolicy;
use crate::net::intake::{Intake, Refused};
use crate::net::stream::TlsInfo;
use crate::net::upstream::{Request, Response};
use crate::proxy::login_name::Target;
use crate::proxy::relay::{Authorized, CopySink, LoginFailure, Refusal, Relay};
use crate::proxy::upstream::{Broken, OpenError};
use crate::sasl;
use crate::store::message::UpstreamOrigin;
use crate::store::{MailboxId, Metadata, Source};
use crate::timestamp;

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
/// Most bytes of a UIDL or LIST answer read at login (about 200,000
/// messages): an upstream cannot make the proxy hold more.
const MAX_LISTING_BYTES: usize = 16 << 20;
/// Longest line of such an answer (RFC 1939 section 7: a UIDL is at most 70
/// characters; answers are at most 512 octets).
const MAX_LISTING_LINE: usize = 1024;

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

    /// Asks for one of the listings of the login: one UIDL ties message
    /// numbers to the ids the archive index is keyed by; one LIST gives the
    /// sizes the limit is checked on.
    fn list(&mut self, tx: Tx, command: &'static str, out: &mut Replies) -> Step {
        match tx.link.command(command) {
            Ok(request) => {
                self.state = State::Listing(Box::new(Listing {
                    tx,
                    command,
                    receiver: None,
                    bytes: Vec::new(),
                }));
                Step::Upstream(request)
            }
            Err(e) => self.lost(&e, out),
        }
    }

    fn listing(&mut self, mut l: Box<Listing>, response: Response<'_>, out: &mut Replies) -> Step {
        let read = match &mut l.receiver {
            None => match l.tx.link.status(response) {
                Err(e) => return self.lost(&e, out),
                Ok(Progress::Io(request)) => {
                    self.state = State::Listing(l);
                    return Step::Upstream(request);
                }
                // Refused: no listing (an upstream without UIDL).
                Ok(Progress::Done(status)) if !status.ok => Ok(None),
                Ok(Progress::Done(_)) => {
                    l.receiver = Some(DataReceiver::normalizing());
                    read_listing(&mut l, None)
                }
            },
            Some(_) => read_listing(&mut l, Some(response)),
        };
        let entries = match read {
            Err(e) => {
                warn!(
                    "pop3 proxy: {} from {} failed: {e}",
                    l.command, l.tx.account.server
                );
                return self.lost(&e, out);
            }
            Ok(None) if l.receiver.is_some() => {
                let read = l.tx.link.read();
                self.state = State::Listing(l);
                return Step::Upstream(read);
            }
            Ok(entries) => entries,
        };
        let Listing {
            mut tx, command, ..
        } = *l;
        if command == "UIDL" {
            if entries.is_none() {
                warn!(
                    "pop3 proxy: {} offers no UIDL; copies cannot be matched across sessions",
                    tx.account.server
                );
            }
            tx.uidls = entries.map(|list| list.into_iter().collect());
            return self.list(tx, "LIST", out);
        }
        tx.sizes = entries
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(n, size)| Some((n, size.parse().ok()?)))
            .collect();
        self.state = State::Transaction(Box::new(tx));
        ok(out, "Logged in");
        Step::Continue
    }

    fn lost(&mut self, why: &dyn std::fmt::Display, out: &mut Replies) -> Step {
        warn!("pop3 proxy: upstream lost: {why}");
        err(out, LOST);
        self.state = State::Closed;
        Step::Close
    }

    /// Whether message `n` still needs a copy.
    fn needs_copy(&mut self, tx: &Tx, n: u64) -> bool {
        if tx.archived_here.contains(&n) {
            return false;
        }
        match &tx.uidls {
            Some(map) => match map.get(&n) {
                Some(uidl) => {
                    let (mailbox, account) = (&tx.account.mailbox, &tx.account);
                    !self.relay.is_archived(mailbox, &account.key(uidl))
                        && !self.relay.is_archived(mailbox, &account.legacy_key(uidl))
                }
                // Not a message number the upstream listed: it will refuse.
                None => false,
            },
            None => true,
        }
    }

    fn start_copy(&mut self, mailbox: &MailboxId, number: u64) -> Option<Archiving> {
        match self.relay.start_copy(mailbox) {
            Ok(sink) => Some(Archiving {
                intake: Intake::new(sink, u64::MAX),
                number,
            }),
            Err(e) => {
                warn!("pop3 proxy: cannot start a copy for {mailbox}: {e}");
                None
            }
        }
    }

    /// The size of message `n` when the upstream listed it above the limit.
    fn too_big(&self, tx: &Tx, n: u64) -> Option<u64> {
        let size = *tx.sizes.get(&n)?;
        (size > self.max_message_bytes).then_some(size)
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

    fn retr(&mut self, tx: Box<Tx>, n: u64, out: &mut Replies) -> Step {
        if let Some(size) = self.too_big(&tx, n) {
            warn!(
                "pop3 proxy: message {n} is {size} bytes, more than pop3_proxy.max_message_bytes"
            );
            self.state = State::Transaction(tx);
            let limit = self.max_message_bytes;
            return self.error(
                out,
                &format!(
                    "[SYS/PERM] Message {n} is larger than this proxy passes on ({limit} bytes)"
                ),
            );
        }
        let copy = match self.needs_copy(&tx, n) {
            true => self.start_copy(&tx.account.mailbox.clone(), n),
            false => None,
        };
        self.relay_command(
            tx,
            &format!("RETR {n}"),
            Pending::Multi {
                retr: Some(n),
                copy,
            },
            out,
        )
    }

    /// Nothing is deleted upstream without a durable copy: a message never
    /// archived is retrieved and stored first.
    fn dele(&mut self, tx: Box<Tx>, n: u64, out: &mut Replies) -> Step {
        if !self.needs_copy(&tx, n) {
            return self.relay_command(
                tx,
                &format!("DELE {n}"),
                Pending::Line(Answer::Dele(n)),
                out,
            );
        }
        let copy = match self.too_big(&tx, n) {
            Some(size) => Err(format!(
                "it is {size} bytes, more than pop3_proxy.max_message_bytes"
            )),
            None => self
                .start_copy(&tx.account.mailbox.clone(), n)
                .ok_or_else(|| "no copy could be started".to_string()),
        };
        match copy {
            Ok(copy) => self.relay_command(tx, &format!("RETR {n}"), Pending::Archive(copy), out),
            Err(why) => self.not_deleted(tx, n, &why, out),
        }
    }

    fn not_deleted(&mut self, tx: Box<Tx>, n: u64, why: &str, out: &mut Replies) -> Step {
        warn!("pop3 proxy: message {n} could not be archived, DELE not forwarded: {why}");
        self.state = State::Transaction(tx);
        self.error(
            out,
            &format!("[SYS/TEMP] Message {n} could not be archived, so it was not deleted"),
        )
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

    fn receive_body(
        &mut self,
        tx: Box<Tx>,
        to_client: Option<DotStuffer>,
        copy: Option<Archiving>,
        then_dele: Option<u64>,
        out: &mut Replies,
    ) -> Step {
        let body = Box::new(Body {
            receiver: DataReceiver::normalizing(),
            to_client,
            copy,
            total: 0,
            then_dele,
        });
        // Part of the body may have come with the status line.
        self.body(tx, body, None, out)
    }

    /// More of a multi-line answer (the strict reader finds its end, the
    /// client gets it re-stuffed, the copy gets it as it is).
    fn body(
        &mut self,
        mut tx: Box<Tx>,
        mut b: Box<Body>,
        response: Option<Response<'_>>,
        out: &mut Replies,
    ) -> Step {
        let mut plain = Vec::new();
        let end = match tx.link.body(response, &mut b.receiver, &mut plain) {
            Ok(end) => end,
            Err(e) if b.then_dele.is_some() => {
                warn!("pop3 proxy: upstream lost while archiving: {e}");
                return self.lost(&e, out);
            }
            Err(e) => {
                // Mid-response: the client cannot be told more than the close.
                warn!("pop3 proxy: upstream lost in the middle of a response: {e}");
                self.state = State::Closed;
                return Step::Close;
            }
        };
        b.total += plain.len() as u64;
        if b.total > self.max_message_bytes {
            // The upstream announced less (or nothing): stop here, store nothing.
            warn!(
                "pop3 proxy: the upstream sent a response larger than pop3_proxy.max_message_bytes ({} bytes); closing",
                self.max_message_bytes
            );
            self.state = State::Closed;
            return Step::Close;
        }
        if let Some(copy) = &mut b.copy {
            copy.intake.write(&plain);
        }
        if let Some(stuffer) = &mut b.to_client {
            stuffer.push(&plain, out.data());
        }
        if !end {
            let read = tx.link.read();
            self.state = State::Receiving(tx, b);
            return Step::Upstream(read);
        }
        if let Some(stuffer) = &mut b.to_client {
            stuffer.finish(out.data());
        }
        let archived = match b.copy.take() {
            Some(copy) => self.finish_copy(&mut tx, copy),
            None => Ok(()),
        };
        match (b.then_dele, archived) {
            (Some(n), Ok(())) => self.relay_command(
                tx,
                &format!("DELE {n}"),
                Pending::Line(Answer::Dele(n)),
                out,
            ),
            (Some(n), Err(why)) => self.not_deleted(tx, n, &why, out),
            (None, result) => {
                if let Err(e) = result {
                    warn!("pop3 proxy: a copy could not be stored: {e}");
                }
                self.state = State::Transaction(tx);
                Step::Continue
            }
        }
    }

    fn finish_copy(&mut self, tx: &mut Tx, copy: Archiving) -> Result<(), String> {
        let size = copy.intake.size();
        let sink = copy.intake.finish().map_err(|e: Refused| e.to_string())?;
        let uidl = tx
            .uidls
            .as_ref()
            .and_then(|m| m.get(&copy.number))
            .cloned()
            .unwrap_or_default();
        let account = &tx.account;
        let metadata = Metadata {
            received: timestamp::rfc3339(SystemTime::now()),
            source: Source::Pop3Proxy,
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            client_ip: Some(self.client_ip.to_string()),
            tls: self.tls.as_ref().map(|t| t.version.clone()),
            size,
            upstream: Some(UpstreamOrigin {
                user: account.user.clone(),
                host: account.server.clone(),
                uidl: uidl.clone(),
            }),
        };
        let name = sink
            .prepare(metadata)
            .and_then(|prepared| prepared.commit())
            .map_err(|e| e.to_string())?;
        tx.archived_here.insert(copy.number);
        if !uidl.is_empty() {
            self.relay
                .mark_archived(&account.mailbox, &account.key(&uidl))
                .map_err(|e| e.to_string())?;
        }
        info!(
            "pop3 proxy {}: archived message {} ({} bytes) of {} at {} as {name}",
            self.client_ip, copy.number, size, account.user, account.server
        );
        Ok(())
    }
}

/// Reads a UIDL or LIST body into (message number, value) pairs: `Ok(None)`
/// while it goes on; bounded in size and line length; a line that is not
/// `number value` is an error.
fn read_listing(
    l: &mut Listing,
    response: Option<Response<'_>>,
) -> Result<Option<Vec<(u64, String)>>, Broken> {
    let Some(receiver) = &mut l.receiver else {
        return Ok(None);
    };
    let end = l.tx.link.body(response, receiver, &mut l.bytes)?;
    if l.bytes.len() > MAX_LISTING_BYTES {
        return Err(Broken(format!(
            "the {} answer is larger than {MAX_LISTING_BYTES} bytes",
            l.command
        )));
    }
    if !end {
        return Ok(None);
    }
    let mut entries = Vec::new();
    for line in l.bytes.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let parsed = (line.len() <= MAX_LISTING_LINE)
            .then(|| std::str::from_utf8(line).ok())
            .flatten()
            .and_then(|text| {
                let mut words = text.split_ascii_whitespace();
                let number = words.next()?.parse::<u64>().ok()?;
                let value = words.next()?;
                let printable = value.bytes().all(|b| b.is_ascii_graphic());
                (printable && words.next().is_none()).then(|| (number, value.to_string()))
            });
        match parsed {
            Some(entry) => entries.push(entry),
            None => {
                return Err(Broken(format!(
                    "a malformed {} line: {:?}",
                    l.command,
                    String::from_utf8_lossy(&line[..line.len().min(80)])
                )));
            }
        }
    }
    Ok(Some(entries))
}

impl<R: Relay> LineMachine for Pop3Proxy<R> {
    type Reply = StatusLine;

    fn greeting(&self, out: &mut Replies) -> Step {
        ok(out, "Sealpost POP3 recording proxy ready");
        Step::Continue
    }

    fn line_too_long(&self) -> StatusLine {
        said::line_too_long()
    }

    fn too_many_errors(&self) -> StatusLine {
        said::too_many_errors()
    }

    fn timed_out(&self) -> StatusLine {
        said::timed_out()
    }

    fn shutting_down(&self) -> StatusLine {
        said::shutting_down()
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

#[cfg(test)]
mod tests;
