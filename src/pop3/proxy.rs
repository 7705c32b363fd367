//! The recording POP3 proxy's client side as an I/O-free state machine.
//!
//! The gateway answers the greeting, CAPA, STLS and the login itself. After
//! login it asks the upstream for UIDL once, then relays commands one at a
//! time. A RETR response is passed to the client and, for a message not yet
//! archived for this mailbox, account and UIDL, stored as a copy. A DELE for
//! a message without a copy first retrieves and stores it; if that fails the
//! DELE is refused and never forwarded. TOP responses are not archived.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::SystemTime;

use log::{info, warn};

use super::command::{self, Command, CommandError};
use super::{Commands, err, ok};
use crate::auth;
use crate::crypto::Password;
use crate::dot_stuffing::{DataReceiver, DotStuffer};
use crate::net::conn::TlsInfo;
use crate::net::driver::{Outgoing, Protocol, Step};
use crate::net::error_limit::{ErrorCount, ErrorPolicy};
use crate::net::line::CommandQueue;
use crate::proxy::relay::{CopySink, LoginFailure};
use crate::store::message::UpstreamOrigin;
use crate::store::{MailboxId, Metadata, Source};
use crate::timestamp;

/// An authenticated upstream POP3 session.
pub trait Upstream {
    /// Sends a command; returns its status line. `Err` when the connection is lost.
    fn command(&mut self, line: &str) -> Result<String, String>;
    /// Reads raw bytes of a multi-line response.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, String>;
    /// Gives back bytes read past the end of a multi-line response.
    fn unread(&mut self, bytes: &[u8]);
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

/// Logins, the archive index and copies.
pub trait Relay {
    /// The upstream session a login opens.
    type Up: Upstream;
    /// Checks the login name, mailbox and target and opens the upstream session.
    fn login(
        &mut self,
        name: &str,
        password: Password,
    ) -> Result<(Account, Self::Up), LoginFailure>;
    /// Whether this message was archived before (in any session).
    fn is_archived(&mut self, account: &Account, uidl: &str) -> bool;
    /// Starts a copy.
    fn start_copy(&mut self, mailbox: &MailboxId) -> Result<Box<dyn CopySink>, String>;
    /// Records durably that this message is archived.
    fn mark_archived(&mut self, account: &Account, uidl: &str) -> Result<(), String>;
}

struct Link<U> {
    up: U,
    account: Account,
    /// Message number to UIDL, from the one UIDL at login; `None` if the
    /// upstream has no UIDL (then only this session's copies are known).
    uidls: Option<HashMap<u64, String>>,
    /// Message number to size, from the one LIST at login (empty if refused).
    sizes: HashMap<u64, u64>,
    archived_here: HashSet<u64>,
}

struct Shared<R: Relay> {
    relay: R,
    link: Option<Link<R::Up>>,
    client_ip: IpAddr,
    tls_version: Option<String>,
}

impl<R: Relay> Shared<R> {
    fn link(&mut self) -> Result<&mut Link<R::Up>, String> {
        self.link
            .as_mut()
            .ok_or_else(|| "not logged in".to_string())
    }

    /// Whether message `n` still needs a copy.
    fn needs_copy(&mut self, n: u64) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        if link.archived_here.contains(&n) {
            return false;
        }
        match &link.uidls {
            Some(map) => match map.get(&n) {
                Some(uidl) => !self.relay.is_archived(&link.account, uidl),
                // Not a message number the upstream listed: it will refuse.
                None => false,
            },
            None => true,
        }
    }
}

enum State {
    Authorization { user: Option<String> },
    AuthPlain,
    Transaction,
    Closed,
}

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

/// One POP3 proxy connection's protocol state.
pub struct Pop3ProxySession<R: Relay> {
    shared: Rc<RefCell<Shared<R>>>,
    tls: Option<TlsInfo>,
    input: CommandQueue,
    state: State,
    errors: ErrorCount,
    max_message_bytes: u64,
}

const LOST: &str = "[SYS/TEMP] Connection to the upstream server lost";
const TLS_REQUIRED: &str =
    "[AUTH] TLS is required before logging in: use STLS, or the implicit-TLS port";

/// Why a message could not be archived before its DELE.
enum ArchiveError {
    /// The upstream connection broke: the session ends.
    Lost(String),
    /// The upstream refused, or the copy could not be written: DELE is refused.
    Failed(String),
}

/// A copy being made of a RETR response.
struct Copy {
    sink: Option<Box<dyn CopySink>>,
    number: u64,
    size: u64,
    error: Option<String>,
}

/// A multi-line response read from the upstream with the strict reader,
/// re-stuffed for the client and, for a RETR to archive, copied.
struct Relayed<R: Relay> {
    shared: Rc<RefCell<Shared<R>>>,
    /// Most bytes the response may have (`pop3_proxy.max_message_bytes`).
    limit: u64,
    total: u64,
    receiver: DataReceiver,
    to_client: Option<DotStuffer>,
    copy: Option<Copy>,
    buf: Vec<u8>,
    plain: Vec<u8>,
    /// How archiving ended, once the response is complete.
    archived: Option<Result<(), String>>,
}

impl<R: Relay> Relayed<R> {
    fn new(
        shared: &Rc<RefCell<Shared<R>>>,
        limit: u64,
        to_client: bool,
        copy: Option<Copy>,
    ) -> Relayed<R> {
        Relayed {
            shared: Rc::clone(shared),
            limit,
            total: 0,
            receiver: DataReceiver::normalizing(),
            to_client: to_client.then(DotStuffer::whole),
            copy,
            buf: vec![0u8; 64 * 1024],
            plain: Vec::with_capacity(64 * 1024),
            archived: None,
        }
    }

    fn finish_copy(&mut self) -> Result<(), String> {
        let Some(copy) = self.copy.take() else {
            return Ok(());
        };
        if let Some(e) = copy.error {
            return Err(e);
        }
        let sink = copy.sink.ok_or("no copy")?;
        let mut shared = self.shared.borrow_mut();
        let (client_ip, tls) = (shared.client_ip, shared.tls_version.clone());
        let link = shared.link()?;
        let uidl = link
            .uidls
            .as_ref()
            .and_then(|m| m.get(&copy.number))
            .cloned()
            .unwrap_or_default();
        let account = link.account.clone();
        let metadata = Metadata {
            received: timestamp::rfc3339(SystemTime::now()),
            source: Source::Pop3Proxy,
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            client_ip: Some(client_ip.to_string()),
            tls,
            size: copy.size,
            upstream: Some(UpstreamOrigin {
                user: account.user.clone(),
                host: account.server.clone(),
                uidl: uidl.clone(),
            }),
        };
        let name = sink.prepare(metadata)?.commit()?;
        link.archived_here.insert(copy.number);
        if !uidl.is_empty() {
            shared.relay.mark_archived(&account, &uidl)?;
        }
        info!(
            "pop3 proxy {client_ip}: archived message {} ({} bytes) of {} at {} as {name}",
            copy.number, copy.size, account.user, account.server
        );
        Ok(())
    }
}

impl<R: Relay> Outgoing for Relayed<R> {
    fn next_chunk(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        if self.archived.is_some() {
            return Ok(false);
        }
        let n = {
            let mut shared = self.shared.borrow_mut();
            let link = shared.link().map_err(io::Error::other)?;
            link.up.read(&mut self.buf).map_err(io::Error::other)?
        };
        if n == 0 {
            return Err(io::Error::other("the upstream closed the connection"));
        }
        let mut input = &self.buf[..n];
        self.plain.clear();
        let end = self.receiver.feed(&mut input, &mut self.plain);
        self.total += self.plain.len() as u64;
        if self.total > self.limit {
            // The upstream announced less (or nothing): stop here, store nothing.
            return Err(io::Error::other(format!(
                "the upstream sent a response larger than pop3_proxy.max_message_bytes ({} bytes)",
                self.limit
            )));
        }
        if end
            && !input.is_empty()
            && let Ok(link) = self.shared.borrow_mut().link()
        {
            link.up.unread(input);
        }
        if let Some(copy) = &mut self.copy {
            copy.size += self.plain.len() as u64;
            if let Some(sink) = &mut copy.sink
                && copy.error.is_none()
                && let Err(e) = sink.write_all(&self.plain)
            {
                copy.error = Some(e.to_string());
                copy.sink = None;
            }
        }
        if let Some(stuffer) = &mut self.to_client {
            stuffer.push(&self.plain, out);
        }
        if end {
            if let Some(stuffer) = &mut self.to_client {
                stuffer.finish(out);
            }
            let outcome = self.finish_copy();
            if let Err(e) = &outcome {
                warn!("pop3 proxy: a copy could not be stored: {e}");
            }
            self.archived = Some(outcome);
        }
        Ok(true)
    }
}

impl<R: Relay + 'static> Pop3ProxySession<R> {
    /// A session; `tls` is set on implicit-TLS listeners.
    pub fn new(
        relay: R,
        settings: Settings,
        client_ip: IpAddr,
        tls: Option<TlsInfo>,
    ) -> Pop3ProxySession<R> {
        Pop3ProxySession {
            shared: Rc::new(RefCell::new(Shared {
                relay,
                link: None,
                client_ip,
                tls_version: tls.as_ref().map(|t| t.version.clone()),
            })),
            tls,
            input: CommandQueue::new(settings.max_line_bytes),
            state: State::Authorization { user: None },
            errors: ErrorCount::new(settings.errors),
            max_message_bytes: settings.max_message_bytes,
        }
    }

    fn capabilities(&self, out: &mut Vec<u8>) {
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
        for cap in caps {
            out.extend_from_slice(format!("{cap}\r\n").as_bytes());
        }
        out.extend_from_slice(b".\r\n");
    }

    fn handle(&mut self, line: &[u8], out: &mut Vec<u8>) -> Step {
        if matches!(self.state, State::AuthPlain) {
            self.state = State::Authorization { user: None };
            if line == b"*" {
                err(out, "Authentication cancelled");
            } else {
                self.auth_plain(&String::from_utf8_lossy(line), out);
            }
            return self.step();
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
        let in_transaction = matches!(self.state, State::Transaction);
        match command {
            Command::Capa => self.capabilities(out),
            Command::Stls if self.tls.is_some() => err(out, "TLS is already active"),
            Command::Stls if in_transaction => err(out, "STLS is only allowed before login"),
            Command::Stls => {
                ok(out, "Begin TLS negotiation");
                return Step::StartTls;
            }
            Command::Apop => err(out, "APOP is not supported"),
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } if in_transaction => {
                err(out, "Already logged in")
            }
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } if self.tls.is_none() => {
                err(out, TLS_REQUIRED)
            }
            Command::User(name) => {
                self.state = State::Authorization { user: Some(name) };
                ok(out, "Send your password");
            }
            Command::Pass(password) => {
                let user = match &mut self.state {
                    State::Authorization { user } => user.take(),
                    _ => None,
                };
                match user {
                    Some(name) => self.login(&name, Password::new(password), out),
                    None => err(out, "Send USER first"),
                }
                return self.step();
            }
            Command::Auth {
                mechanism: None, ..
            } => {
                ok(out, "Supported mechanisms follow");
                out.extend_from_slice(b"PLAIN\r\n.\r\n");
            }
            Command::Auth {
                mechanism: Some(m),
                initial,
            } if m == "PLAIN" => match initial {
                Some(response) if response != "=" => {
                    self.auth_plain(&response, out);
                    return self.step();
                }
                _ => {
                    self.state = State::AuthPlain;
                    out.extend_from_slice(b"+ \r\n");
                }
            },
            Command::Auth {
                mechanism: Some(m), ..
            } => err(out, &format!("Unsupported mechanism {m}; use PLAIN")),
            Command::Quit if !in_transaction => {
                ok(out, "Sealpost signing off");
                return Step::Close;
            }
            _ if !in_transaction => err(out, "Log in first (USER/PASS or AUTH PLAIN)"),
            other => return self.transaction(other, out),
        }
        Step::Continue
    }

    /// Close if a login lost the upstream link, otherwise go on.
    fn step(&self) -> Step {
        if matches!(self.state, State::Closed) {
            Step::Close
        } else {
            Step::Continue
        }
    }

    fn auth_plain(&mut self, response: &str, out: &mut Vec<u8>) {
        match auth::sasl_plain(response) {
            Some((user, password)) => self.login(&user, password, out),
            None => err(out, "[AUTH] Malformed PLAIN response"),
        }
    }

    fn login(&mut self, name: &str, password: Password, out: &mut Vec<u8>) {
        let result = self.shared.borrow_mut().relay.login(name, password);
        let (account, mut up) = match result {
            Ok(pair) => pair,
            Err(LoginFailure::Refused) => return err(out, "[AUTH] Invalid login"),
            Err(LoginFailure::Temporary) => {
                return err(out, "[SYS/TEMP] Temporary failure; try again later");
            }
        };
        // One UIDL at login ties message numbers to the ids the archive
        // index is keyed by; one LIST gives the sizes the limit is checked on.
        let listings = read_listing(&mut up, "UIDL").and_then(|uidls| {
            let sizes = read_listing(&mut up, "LIST")?;
            Ok((uidls, sizes))
        });
        let (uidls, sizes) = match listings {
            Ok(pair) => pair,
            Err(e) => {
                warn!("pop3 proxy: UIDL/LIST from {} failed: {e}", account.server);
                self.state = State::Closed;
                return err(out, LOST);
            }
        };
        if uidls.is_none() {
            warn!(
                "pop3 proxy: {} offers no UIDL; copies cannot be matched across sessions",
                account.server
            );
        }
        let sizes = sizes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(n, size)| Some((n, size.parse().ok()?)))
            .collect();
        self.shared.borrow_mut().link = Some(Link {
            up,
            account,
            uidls: uidls.map(|list| list.into_iter().collect()),
            sizes,
            archived_here: HashSet::new(),
        });
        self.state = State::Transaction;
        ok(out, "Logged in");
    }

    /// Relays a command with a one-line answer.
    fn relay_line(&mut self, line: &str, out: &mut Vec<u8>) -> Step {
        self.relay(line, None, out)
    }

    /// Relays a command and passes its answer on; for a multi-line command
    /// (`multi` is `Some`) the body follows as a stream, copied if a copy is given.
    fn relay(&mut self, line: &str, multi: Option<Option<Copy>>, out: &mut Vec<u8>) -> Step {
        let answer = self
            .shared
            .borrow_mut()
            .link()
            .and_then(|l| l.up.command(line));
        let status = match answer {
            Ok(status) => status,
            Err(e) => return self.lost(&e, out),
        };
        out.extend_from_slice(status.as_bytes());
        out.extend_from_slice(b"\r\n");
        match multi {
            Some(copy) if status.starts_with("+OK") => Step::Stream(Box::new(Relayed::new(
                &self.shared,
                self.max_message_bytes,
                true,
                copy,
            ))),
            _ => Step::Continue,
        }
    }

    fn lost(&mut self, why: &str, out: &mut Vec<u8>) -> Step {
        warn!("pop3 proxy: upstream lost: {why}");
        err(out, LOST);
        self.state = State::Closed;
        Step::Close
    }

    fn start_copy(&mut self, number: u64) -> Option<Copy> {
        let mut shared = self.shared.borrow_mut();
        let mailbox = shared.link.as_ref()?.account.mailbox.clone();
        match shared.relay.start_copy(&mailbox) {
            Ok(sink) => Some(Copy {
                sink: Some(sink),
                number,
                size: 0,
                error: None,
            }),
            Err(e) => {
                warn!("pop3 proxy: cannot start a copy for {mailbox}: {e}");
                None
            }
        }
    }

    /// The size of message `n` when the upstream listed it above the limit.
    fn too_big(&self, n: u64) -> Option<u64> {
        let shared = self.shared.borrow();
        let size = *shared.link.as_ref()?.sizes.get(&n)?;
        (size > self.max_message_bytes).then_some(size)
    }

    /// Retrieves message `n` from the upstream and stores it, without
    /// sending it to the client (a DELE of a message never retrieved).
    fn archive_now(&mut self, n: u64) -> Result<(), ArchiveError> {
        if let Some(size) = self.too_big(n) {
            return Err(ArchiveError::Failed(format!(
                "it is {size} bytes, more than pop3_proxy.max_message_bytes"
            )));
        }
        let copy = self
            .start_copy(n)
            .ok_or_else(|| ArchiveError::Failed("no copy could be started".into()))?;
        let status = self
            .shared
            .borrow_mut()
            .link()
            .and_then(|l| l.up.command(&format!("RETR {n}")))
            .map_err(ArchiveError::Lost)?;
        if !status.starts_with("+OK") {
            return Err(ArchiveError::Failed(format!(
                "the upstream refused RETR {n}: {status}"
            )));
        }
        let mut job = Relayed::new(&self.shared, self.max_message_bytes, false, Some(copy));
        let mut discard = Vec::new();
        while job
            .next_chunk(&mut discard)
            .map_err(|e| ArchiveError::Lost(e.to_string()))?
        {
            discard.clear();
        }
        job.archived
            .unwrap_or_else(|| Err("incomplete".into()))
            .map_err(ArchiveError::Failed)
    }

    fn transaction(&mut self, command: Command, out: &mut Vec<u8>) -> Step {
        match command {
            Command::Stat => self.relay_line("STAT", out),
            Command::Noop => self.relay_line("NOOP", out),
            Command::Rset => self.relay_line("RSET", out),
            Command::List(Some(n)) => self.relay_line(&format!("LIST {n}"), out),
            Command::Uidl(Some(n)) => self.relay_line(&format!("UIDL {n}"), out),
            Command::List(None) => self.relay("LIST", Some(None), out),
            Command::Uidl(None) => self.relay("UIDL", Some(None), out),
            Command::Top(n, lines) => self.relay(&format!("TOP {n} {lines}"), Some(None), out),
            Command::Retr(n) => {
                if let Some(size) = self.too_big(n) {
                    warn!(
                        "pop3 proxy: message {n} is {size} bytes, more than pop3_proxy.max_message_bytes"
                    );
                    err(
                        out,
                        &format!(
                            "[SYS/PERM] Message {n} is larger than this proxy passes on ({} bytes)",
                            self.max_message_bytes
                        ),
                    );
                    return Step::Continue;
                }
                let copy = if self.shared.borrow_mut().needs_copy(n) {
                    self.start_copy(n)
                } else {
                    None
                };
                self.relay(&format!("RETR {n}"), Some(copy), out)
            }
            Command::Dele(n) => {
                // Nothing is deleted upstream without a durable copy.
                if self.shared.borrow_mut().needs_copy(n) {
                    match self.archive_now(n) {
                        Ok(()) => {}
                        Err(ArchiveError::Lost(e)) => return self.lost(&e, out),
                        Err(ArchiveError::Failed(e)) => {
                            warn!(
                                "pop3 proxy: message {n} could not be archived, DELE not forwarded: {e}"
                            );
                            err(
                                out,
                                &format!(
                                    "[SYS/TEMP] Message {n} could not be archived, so it was not deleted"
                                ),
                            );
                            return Step::Continue;
                        }
                    }
                }
                self.relay_line(&format!("DELE {n}"), out)
            }
            Command::Quit => {
                let step = self.relay_line("QUIT", out);
                self.state = State::Closed;
                if matches!(step, Step::Continue) {
                    Step::Close
                } else {
                    step
                }
            }
            _ => {
                err(out, "Not allowed after login");
                Step::Continue
            }
        }
    }
}

/// Most bytes of a UIDL or LIST answer read at login (about 200,000
/// messages): an upstream cannot make the proxy hold more.
const MAX_LISTING_BYTES: usize = 16 << 20;
/// Longest line of such an answer (RFC 1939 section 7: a UIDL is at most 70
/// characters; answers are at most 512 octets).
const MAX_LISTING_LINE: usize = 1024;

/// Reads the upstream's answer to `UIDL` or `LIST` as (message number,
/// value) pairs; `None` if it refuses the command. Bounded in total size and
/// line length; a line that is not `number value` is an error.
fn read_listing<U: Upstream>(
    up: &mut U,
    command: &str,
) -> Result<Option<Vec<(u64, String)>>, String> {
    let status = up.command(command)?;
    if !status.starts_with("+OK") {
        return Ok(None);
    }
    let mut receiver = DataReceiver::normalizing();
    let mut listing = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = up.read(&mut buf)?;
        if n == 0 {
            return Err("the upstream closed the connection".into());
        }
        let mut input = &buf[..n];
        let end = receiver.feed(&mut input, &mut listing);
        if listing.len() > MAX_LISTING_BYTES {
            return Err(format!(
                "the {command} answer is larger than {MAX_LISTING_BYTES} bytes"
            ));
        }
        if end {
            up.unread(input);
            break;
        }
    }
    let mut entries = Vec::new();
    for line in listing.split(|&b| b == b'\n') {
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
                return Err(format!(
                    "a malformed {command} line: {:?}",
                    String::from_utf8_lossy(&line[..line.len().min(80)])
                ));
            }
        }
    }
    Ok(Some(entries))
}

impl<R: Relay + 'static> Commands for Pop3ProxySession<R> {
    fn queue(&mut self) -> &mut CommandQueue {
        &mut self.input
    }

    fn errors(&mut self) -> &mut ErrorCount {
        &mut self.errors
    }

    fn closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Step {
        self.handle(line, out)
    }
}

impl<R: Relay + 'static> Protocol for Pop3ProxySession<R> {
    fn greeting(&mut self, out: &mut Vec<u8>) {
        ok(out, "Sealpost POP3 recording proxy ready");
    }

    fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        super::feed(self, input, out)
    }

    fn has_pending_input(&self) -> bool {
        self.input.has_pending()
    }

    fn tls_started(&mut self, tls: TlsInfo) {
        self.shared.borrow_mut().tls_version = Some(tls.version.clone());
        self.tls = Some(tls);
        self.input.clear();
        self.state = State::Authorization { user: None };
    }

    fn is_idle(&self) -> bool {
        self.input.is_empty()
    }

    fn has_partial_command(&self) -> bool {
        !self.input.is_empty()
    }

    fn take_delay(&mut self) -> std::time::Duration {
        self.errors.take_delay()
    }

    fn expecting_data(&self) -> bool {
        false
    }

    fn timed_out(&mut self, out: &mut Vec<u8>) {
        err(out, "[SYS/TEMP] Idle too long; closing");
    }

    fn shutting_down(&mut self, out: &mut Vec<u8>) {
        err(out, "[SYS/TEMP] Server shutting down; try again later");
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
