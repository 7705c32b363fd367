//! The recording SMTP proxy's client side as an I/O-free state machine.
//!
//! The gateway answers EHLO, STARTTLS and AUTH itself. After AUTH, MAIL,
//! RCPT, RSET and NOOP are relayed to the upstream one at a time (lockstep:
//! each client command waits for the upstream's reply, so pipelined commands
//! are answered in order). DATA is read with the strict reader into an
//! encrypted spool; then the copy is made durable in the mailbox, and only
//! then is the message sent upstream. The copy becomes visible when the
//! upstream answers 250 and is discarded otherwise.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::time::SystemTime;

use log::{info, warn};

use super::command::{self, Body, Command, MailParams, Path};
use super::reply::Reply;
use super::upstream::{SendOutcome, UpReply};
use crate::auth;
use crate::crypto::Password;
use crate::dot_stuffing::DataReceiver;
use crate::net::conn::TlsInfo;
use crate::net::driver::{Protocol, Step};
use crate::net::error_limit::{ErrorCount, ErrorPolicy, Verdict};
use crate::net::line::{Line, LineAssembler};
pub use crate::proxy::relay::{CopySink, LoginFailure, PreparedCopy};
use crate::store::{MailboxId, Metadata, Source};
use crate::timestamp;

/// An authenticated upstream session.
pub trait Upstream {
    /// Whether the upstream announced an EHLO keyword.
    fn supports(&self, keyword: &str) -> bool;
    /// Relays one command; `Err` when the connection is lost.
    fn command(&mut self, line: &str) -> Result<UpReply, String>;
    /// DATA, the message, the final dot, the final reply.
    fn send_message(&mut self, message: &mut dyn Read) -> SendOutcome;
}

/// Logins and copies.
pub trait Relay {
    /// The upstream session a login opens.
    type Up: Upstream;
    /// Checks the login name, the mailbox and the target, and opens an
    /// authenticated upstream session.
    fn login(
        &mut self,
        name: &str,
        password: Password,
    ) -> Result<(MailboxId, Self::Up), LoginFailure>;
    /// Starts a copy for `mailbox`.
    fn start_copy(&mut self, mailbox: &MailboxId) -> Result<Box<dyn CopySink>, String>;
}

/// Protocol settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our name in the greeting.
    pub hostname: String,
    /// Largest message.
    pub max_message_bytes: u64,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Longest command line.
    pub max_line_bytes: usize,
    /// How many errors a client may make.
    pub errors: ErrorPolicy,
}

struct Transaction {
    mail_from: String,
    accepted: Vec<String>,
}

struct Relaying<U> {
    mailbox: MailboxId,
    up: U,
    tx: Option<Transaction>,
}

struct Incoming {
    sink: Option<Box<dyn CopySink>>,
    size: u64,
    error: Option<String>,
}

enum Phase<U> {
    Greeted,
    Ready,
    /// `AUTH PLAIN` without initial response: the next line is the response.
    AuthPlain,
    /// `AUTH LOGIN`: the next line is the user name.
    AuthLoginUser,
    /// `AUTH LOGIN`: the next line is the password.
    AuthLoginPassword(String),
    Relaying(Relaying<U>),
    Data(Relaying<U>, Incoming, DataReceiver),
    Closed,
}

/// One proxy connection's protocol state.
pub struct ProxySession<R: Relay> {
    settings: Settings,
    relay: R,
    client_ip: IpAddr,
    tls: Option<TlsInfo>,
    lines: LineAssembler,
    phase: Phase<R::Up>,
    scratch: Vec<u8>,
    errors: ErrorCount,
}

const AUTH_REFUSED: (u16, &str, &str) = (535, "5.7.8", "Authentication credentials invalid");

/// The client's copy of an upstream reply: its code and enhanced code, our text.
fn relayed(reply: &UpReply, what: &str) -> Reply {
    let class = reply.code / 100;
    let status = match (class, &reply.enhanced) {
        (_, Some(e)) => e.clone(),
        (2 | 3, None) => "2.0.0".to_string(),
        (4, None) => "4.0.0".to_string(),
        _ => "5.0.0".to_string(),
    };
    let text = match class {
        2 | 3 => format!("{what}: ok"),
        4 => format!("{what}: temporarily refused by the upstream server"),
        _ => format!("{what}: refused by the upstream server"),
    };
    Reply::new(reply.code, status, text)
}

/// One AUTH LOGIN response (RFC 4954 section 4): base64 of UTF-8 text.
/// Control characters are not refused here: the login refuses them with the
/// generic answer, so a client learns nothing from the difference.
fn decode_login_response(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?;
    let decoded = zeroize::Zeroizing::new(crate::crypto::base64_decode(text.trim()).ok()?);
    std::str::from_utf8(&decoded).ok().map(str::to_string)
}

impl<R: Relay> ProxySession<R> {
    /// A session; `tls` is set on implicit-TLS listeners.
    pub fn new(
        settings: Settings,
        relay: R,
        client_ip: IpAddr,
        tls: Option<TlsInfo>,
    ) -> ProxySession<R> {
        ProxySession {
            lines: LineAssembler::new(settings.max_line_bytes),
            errors: ErrorCount::new(settings.errors),
            settings,
            relay,
            client_ip,
            tls,
            phase: Phase::Greeted,
            scratch: Vec::with_capacity(64 * 1024),
        }
    }

    fn ehlo_reply(&self, name: &str) -> Reply {
        let mut lines = vec![
            format!(
                "{} greets {name} [{}]",
                self.settings.hostname, self.client_ip
            ),
            "PIPELINING".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.tls.is_none() {
            lines.push("STARTTLS".into());
        } else {
            lines.push(format!("SIZE {}", self.settings.max_message_bytes));
            lines.push("8BITMIME".into());
            if !matches!(self.phase, Phase::Relaying(_)) {
                lines.push("AUTH PLAIN LOGIN".into());
            }
        }
        Reply::plain(250, lines)
    }

    /// Feeds client bytes; replies are appended to `out`.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Step {
        loop {
            let (reply, step) = match &mut self.phase {
                Phase::Closed => return Step::Close,
                Phase::Data(_, incoming, receiver) => {
                    self.scratch.clear();
                    let done = receiver.feed(&mut input, &mut self.scratch);
                    incoming.size += self.scratch.len() as u64;
                    if incoming.size > self.settings.max_message_bytes {
                        incoming.sink = None;
                    } else if let Some(sink) = &mut incoming.sink
                        && let Err(e) = sink.write_all(&self.scratch)
                    {
                        incoming.error = Some(e.to_string());
                        incoming.sink = None;
                    }
                    if !done {
                        return Step::Continue;
                    }
                    self.finish_data()
                }
                _ => match self.lines.next_line(&mut input) {
                    None => return Step::Continue,
                    Some(Line::TooLong) => {
                        (Reply::new(500, "5.5.2", "Line too long"), Step::Continue)
                    }
                    Some(Line::Complete(line)) => self.line(&line),
                },
            };
            reply.write_to(out);
            if reply.code >= 400 && reply.code != 421 && self.errors.record() == Verdict::Close {
                Reply::new(
                    421,
                    "4.7.0",
                    format!("{} Error: too many errors", self.settings.hostname),
                )
                .write_to(out);
                self.phase = Phase::Closed;
                return Step::Close;
            }
            if !matches!(step, Step::Continue) {
                if matches!(step, Step::Close) {
                    self.phase = Phase::Closed;
                }
                return step;
            }
        }
    }

    fn line(&mut self, line: &[u8]) -> (Reply, Step) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::AuthPlain => {
                self.phase = Phase::Ready;
                (self.auth_plain(line), Step::Continue)
            }
            Phase::AuthLoginUser => {
                self.phase = Phase::Ready;
                if line == b"*" {
                    return (
                        Reply::new(501, "5.0.0", "Authentication cancelled"),
                        Step::Continue,
                    );
                }
                match decode_login_response(line) {
                    Some(user) => {
                        self.phase = Phase::AuthLoginPassword(user);
                        (Reply::new(334, "", "UGFzc3dvcmQ6"), Step::Continue)
                    }
                    None => (
                        Reply::new(501, "5.5.2", "Cannot decode the response"),
                        Step::Continue,
                    ),
                }
            }
            Phase::AuthLoginPassword(user) => {
                self.phase = Phase::Ready;
                if line == b"*" {
                    return (
                        Reply::new(501, "5.0.0", "Authentication cancelled"),
                        Step::Continue,
                    );
                }
                match decode_login_response(line) {
                    Some(pw) if !pw.is_empty() => {
                        (self.login(&user, Password::new(pw)), Step::Continue)
                    }
                    _ => (
                        Reply::new(501, "5.5.2", "Cannot decode the response"),
                        Step::Continue,
                    ),
                }
            }
            phase => {
                self.phase = phase;
                self.command(line)
            }
        }
    }

    fn command(&mut self, line: &[u8]) -> (Reply, Step) {
        let command = match command::parse(line) {
            Ok(c) => c,
            Err(e) => return (Reply::from(e), Step::Continue),
        };
        let host = self.settings.hostname.clone();
        let reply = match command {
            Command::Ehlo(name) | Command::Helo(name) => {
                // EHLO resets any transaction (RFC 5321 section 4.1.4), upstream too.
                if let Phase::Relaying(r) = &mut self.phase
                    && r.tx.take().is_some()
                    && let Err(e) = r.up.command("RSET")
                {
                    return (Self::lost(&e), Step::Close);
                }
                if matches!(self.phase, Phase::Greeted) {
                    self.phase = Phase::Ready;
                }
                self.ehlo_reply(&name)
            }
            Command::StartTls => {
                if self.tls.is_some() {
                    Reply::new(503, "5.5.1", "TLS is already active")
                } else if matches!(self.phase, Phase::Greeted) {
                    Reply::new(503, "5.5.1", "Send EHLO first")
                } else {
                    return (
                        Reply::new(220, "2.0.0", "Ready to start TLS"),
                        Step::StartTls,
                    );
                }
            }
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial),
            Command::Mail(from, params) => self.mail(from, params),
            Command::Rcpt(to) => self.rcpt(to),
            Command::Data => self.data(),
            Command::Rset => {
                self.reset();
                self.relay_simple("RSET")
            }
            Command::Noop => self.relay_simple("NOOP"),
            Command::Quit => {
                if let Phase::Relaying(r) = &mut self.phase {
                    let _ = r.up.command("QUIT");
                }
                return (
                    Reply::new(221, "2.0.0", format!("{host} closing connection")),
                    Step::Close,
                );
            }
            Command::Vrfy => Reply::new(252, "2.5.0", "Cannot VRFY user"),
            Command::Expn => Reply::new(502, "5.5.1", "EXPN is not available"),
            Command::Help => Reply::new(
                214,
                "2.0.0",
                "Sealpost recording SMTP proxy: log in as remote_user%host[:port]%mailbox_id",
            ),
            Command::Bdat { .. } => Reply::new(502, "5.5.1", "CHUNKING is not offered; use DATA"),
        };
        if reply.code == 421 {
            return (reply, Step::Close);
        }
        (reply, Step::Continue)
    }

    /// Forgets the local transaction (RSET, EHLO).
    fn reset(&mut self) {
        if let Phase::Relaying(r) = &mut self.phase {
            r.tx = None;
        }
    }

    fn lost(why: &str) -> Reply {
        warn!("smtp proxy: upstream connection lost: {why}");
        Reply::new(
            421,
            "4.4.2",
            "Connection to the upstream server lost; try again",
        )
    }

    fn relay_simple(&mut self, line: &str) -> Reply {
        match &mut self.phase {
            Phase::Relaying(r) => match r.up.command(line) {
                Ok(reply) => relayed(&reply, line),
                Err(e) => Self::lost(&e),
            },
            _ => Reply::new(250, "2.0.0", "Ok"),
        }
    }

    fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Reply {
        if self.tls.is_none() {
            // RFC 4954 section 6: the credentials are never looked at.
            return Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            );
        }
        match self.phase {
            Phase::Ready => {}
            Phase::Greeted => return Reply::new(503, "5.5.1", "Send EHLO first"),
            _ => return Reply::new(503, "5.5.1", "Already authenticated"),
        }
        match (mechanism, initial) {
            ("PLAIN", Some(response)) if response != "=" => self.auth_plain(response.as_bytes()),
            ("PLAIN", _) => {
                self.phase = Phase::AuthPlain;
                Reply::new(334, "", "")
            }
            ("LOGIN", None) => {
                self.phase = Phase::AuthLoginUser;
                Reply::new(334, "", "VXNlcm5hbWU6")
            }
            ("LOGIN", Some(user)) => match decode_login_response(user.as_bytes()) {
                Some(user) => {
                    self.phase = Phase::AuthLoginPassword(user);
                    Reply::new(334, "", "UGFzc3dvcmQ6")
                }
                None => Reply::new(501, "5.5.2", "Cannot decode the response"),
            },
            _ => Reply::new(504, "5.5.4", "Unsupported mechanism; use PLAIN or LOGIN"),
        }
    }

    fn auth_plain(&mut self, response: &[u8]) -> Reply {
        if response == b"*" {
            return Reply::new(501, "5.0.0", "Authentication cancelled");
        }
        match auth::sasl_plain(&String::from_utf8_lossy(response)) {
            Some((user, password)) => self.login(&user, password),
            None => Reply::new(501, "5.5.2", "Malformed PLAIN response"),
        }
    }

    fn login(&mut self, name: &str, password: Password) -> Reply {
        match self.relay.login(name, password) {
            Ok((mailbox, up)) => {
                self.phase = Phase::Relaying(Relaying {
                    mailbox,
                    up,
                    tx: None,
                });
                Reply::new(235, "2.7.0", "Authentication successful")
            }
            Err(LoginFailure::Refused) => {
                Reply::new(AUTH_REFUSED.0, AUTH_REFUSED.1, AUTH_REFUSED.2)
            }
            Err(LoginFailure::Temporary) => Reply::new(
                454,
                "4.7.0",
                "Temporary authentication failure; try again later",
            ),
        }
    }

    fn mail(&mut self, from: Path, params: MailParams) -> Reply {
        let r = match &mut self.phase {
            Phase::Relaying(r) => r,
            Phase::Greeted => return Reply::new(503, "5.5.1", "Send EHLO first"),
            _ if self.tls.is_none() => {
                return Reply::new(530, "5.7.0", "Must issue a STARTTLS command first");
            }
            _ => return Reply::new(530, "5.7.0", "Authentication required"),
        };
        if r.tx.is_some() {
            return Reply::new(503, "5.5.1", "Nested MAIL command");
        }
        if !from.is_ascii() || params.smtputf8 {
            return Reply::new(
                553,
                "5.6.7",
                "Non-ASCII addresses are not supported by this proxy",
            );
        }
        if params
            .size
            .is_some_and(|s| s > self.settings.max_message_bytes)
        {
            return Reply::too_big();
        }
        let mut line = format!("MAIL FROM:<{}>", from.0);
        if let Some(size) = params.size.filter(|_| r.up.supports("SIZE")) {
            line.push_str(&format!(" SIZE={size}"));
        }
        if params.body == Body::EightBitMime && r.up.supports("8BITMIME") {
            line.push_str(" BODY=8BITMIME");
        }
        match r.up.command(&line) {
            Ok(reply) => {
                if reply.is_success() {
                    r.tx = Some(Transaction {
                        mail_from: from.0,
                        accepted: Vec::new(),
                    });
                }
                relayed(&reply, "Sender")
            }
            Err(e) => Self::lost(&e),
        }
    }

    fn rcpt(&mut self, to: Path) -> Reply {
        let Phase::Relaying(r) = &mut self.phase else {
            return Reply::new(530, "5.7.0", "Authentication required");
        };
        let Some(tx) = &mut r.tx else {
            return Reply::new(503, "5.5.1", "Need MAIL command first");
        };
        if tx.accepted.len() >= self.settings.max_recipients {
            return Reply::new(452, "4.5.3", "Too many recipients");
        }
        if !to.is_ascii() {
            return Reply::new(
                553,
                "5.6.7",
                "Non-ASCII addresses are not supported by this proxy",
            );
        }
        match r.up.command(&format!("RCPT TO:<{}>", to.0)) {
            Ok(reply) => {
                if reply.is_success() {
                    // Every recipient the upstream accepted, Bcc included: the
                    // envelope is the only place a Bcc is recorded.
                    tx.accepted.push(to.0);
                }
                relayed(&reply, "Recipient")
            }
            Err(e) => Self::lost(&e),
        }
    }

    fn data(&mut self) -> Reply {
        let r = match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Relaying(r) => r,
            other => {
                self.phase = other;
                return Reply::new(530, "5.7.0", "Authentication required");
            }
        };
        let refusal = match &r.tx {
            None => Some(Reply::new(503, "5.5.1", "Need MAIL command first")),
            Some(tx) if tx.accepted.is_empty() => {
                Some(Reply::new(554, "5.5.1", "No valid recipients"))
            }
            Some(_) => None,
        };
        if let Some(reply) = refusal {
            self.phase = Phase::Relaying(r);
            return reply;
        }
        match self.relay.start_copy(&r.mailbox) {
            Ok(sink) => {
                self.phase = Phase::Data(
                    r,
                    Incoming {
                        sink: Some(sink),
                        size: 0,
                        error: None,
                    },
                    DataReceiver::normalizing(),
                );
                Reply::new(354, "", "End data with <CR><LF>.<CR><LF>")
            }
            Err(e) => {
                warn!("smtp proxy: cannot start a copy for {}: {e}", r.mailbox);
                self.phase = Phase::Relaying(r);
                Reply::new(
                    451,
                    "4.3.0",
                    "Cannot archive the message right now; try again later",
                )
            }
        }
    }

    /// The end of the client's data: copy first, then the upstream.
    fn finish_data(&mut self) -> (Reply, Step) {
        let Phase::Data(mut r, incoming, _) = std::mem::replace(&mut self.phase, Phase::Closed)
        else {
            return (
                Reply::new(451, "4.3.0", "Internal state error"),
                Step::Close,
            );
        };
        let tx = r.tx.take().unwrap_or(Transaction {
            mail_from: String::new(),
            accepted: Vec::new(),
        });
        let summary = format!(
            "smtp proxy {}: mailbox={} from=<{}> rcpts={} size={}",
            self.client_ip,
            r.mailbox,
            tx.mail_from,
            tx.accepted.len(),
            incoming.size
        );
        let reply = self.deliver(&mut r, tx, incoming, &summary);
        if reply.code == 250 {
            self.errors.forgive();
        }
        let step = if reply.code == 421 {
            Step::Close
        } else {
            Step::Continue
        };
        self.phase = Phase::Relaying(r);
        (reply, step)
    }

    fn deliver(
        &mut self,
        r: &mut Relaying<R::Up>,
        tx: Transaction,
        incoming: Incoming,
        summary: &str,
    ) -> Reply {
        // Anything refused before DATA upstream clears the upstream envelope.
        let abandon = |r: &mut Relaying<R::Up>, reply: Reply| match r.up.command("RSET") {
            Ok(_) => reply,
            Err(e) => Self::lost(&e),
        };
        // A copy that cannot be made: nothing is sent.
        let copy_failed = |r: &mut Relaying<R::Up>, why: &dyn std::fmt::Display| {
            warn!("{summary} result=deferred reason=copy error={why}");
            abandon(
                r,
                Reply::new(
                    451,
                    "4.3.0",
                    "Cannot archive the message right now; try again later",
                ),
            )
        };
        if incoming.size > self.settings.max_message_bytes {
            info!("{summary} result=rejected reason=too-large");
            return abandon(r, Reply::too_big());
        }
        let sink = match (incoming.sink, incoming.error) {
            (Some(sink), None) => sink,
            (_, error) => return copy_failed(r, &error.unwrap_or_default()),
        };
        let metadata = Metadata {
            received: timestamp::rfc3339(SystemTime::now()),
            source: Source::SmtpProxy,
            mail_from: tx.mail_from.clone(),
            rcpt_to: tx.accepted.clone(),
            client_ip: Some(self.client_ip.to_string()),
            tls: self.tls.as_ref().map(|t| t.version.clone()),
            size: incoming.size,
            upstream: None,
        };
        // The archiving rule: the copy is durable before anything is sent.
        let copy = match sink.prepare(metadata) {
            Ok(copy) => copy,
            Err(e) => return copy_failed(r, &e),
        };
        let mut message = match copy.message() {
            Ok(m) => m,
            Err(e) => return copy_failed(r, &e),
        };
        match r.up.send_message(&mut message) {
            SendOutcome::Reply(reply) if reply.is_success() => match copy.commit() {
                Ok(name) => {
                    info!(
                        "{summary} result=sent copy={name} upstream=\"{} {}\"",
                        reply.code, reply.text
                    );
                    Reply::new(250, "2.0.0", "Ok: sent, and a copy archived")
                }
                Err(e) => {
                    // Sent, and the copy is durable in tmp/ but could not be
                    // renamed: say so loudly, but the client must not resend.
                    warn!("{summary} result=sent copy-not-visible error={e}");
                    Reply::new(250, "2.0.0", "Ok: sent")
                }
            },
            SendOutcome::Reply(reply) => {
                info!(
                    "{summary} result=refused upstream=\"{} {}\"",
                    reply.code, reply.text
                );
                relayed(&reply, "Message")
            }
            SendOutcome::LostBeforeEnd(e) => {
                warn!("{summary} result=deferred reason=upstream-lost-before-end error={e}");
                Self::lost(&e)
            }
            SendOutcome::LostAfterEnd(e) => {
                // The upstream may have accepted it: keep the copy.
                let kept = copy
                    .commit()
                    .unwrap_or_else(|e| format!("not visible: {e}"));
                warn!(
                    "{summary} result=unknown reason=upstream-lost-after-end copy={kept} error={e}"
                );
                Self::lost(&e)
            }
        }
    }
}

impl<R: Relay> Protocol for ProxySession<R> {
    fn greeting(&mut self, out: &mut Vec<u8>) {
        Reply::plain(
            220,
            vec![format!(
                "{} ESMTP Sealpost recording proxy",
                self.settings.hostname
            )],
        )
        .write_to(out);
    }

    fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        self.feed(input, out)
    }

    fn tls_started(&mut self, tls: TlsInfo) {
        self.tls = Some(tls);
        self.lines.clear();
        self.phase = Phase::Greeted;
    }

    fn is_idle(&self) -> bool {
        matches!(
            self.phase,
            Phase::Greeted | Phase::Ready | Phase::Relaying(Relaying { tx: None, .. })
        ) && self.lines.is_empty()
    }

    fn expecting_data(&self) -> bool {
        matches!(self.phase, Phase::Data(..))
    }

    fn has_partial_command(&self) -> bool {
        !self.lines.is_empty()
    }

    fn take_delay(&mut self) -> std::time::Duration {
        self.errors.take_delay()
    }

    fn timed_out(&mut self, out: &mut Vec<u8>) {
        Reply::new(
            421,
            "4.4.2",
            format!(
                "{} Timeout exceeded, closing connection",
                self.settings.hostname
            ),
        )
        .write_to(out);
    }

    fn shutting_down(&mut self, out: &mut Vec<u8>) {
        Reply::new(
            421,
            "4.3.2",
            format!(
                "{} Service shutting down, try again later",
                self.settings.hostname
            ),
        )
        .write_to(out);
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
