//! The recording SMTP proxy's client side as an I/O-free state machine.
//!
//! The gateway answers EHLO, STARTTLS and AUTH itself. AUTH runs the local
//! checks, then the upstream login ([`Login`]); every upstream effect is a
//! [`Step::Upstream`] the driver performs. After AUTH, MAIL, RCPT, RSET and
//! NOOP are relayed one at a time (lockstep: each client command waits for
//! the upstream's reply, so pipelined commands are answered in order; the
//! rest waits in the queue). DATA is read with the strict reader into an
//! encrypted spool; then the copy is made durable in the mailbox, and only
//! then is the message sent upstream ([`Outbound`]). The copy becomes
//! visible when the upstream answers 250 and is discarded otherwise.
//!
//! Upstream texts are never shown to the client: it gets the upstream's
//! code and enhanced code with a text of ours; the upstream's text is logged.

use std::net::IpAddr;

use log::{info, warn};

use super::command::{self, Body, Command, MailParams, Path};
use super::reply::{Reply, Smtp};
use super::upstream::{Link, Login, Outbound, Progress, SendOutcome, UpReply};
use crate::crypto::Password;
use crate::dot_stuffing::DataReceiver;
use crate::net::driver::Step;
use crate::net::engine::{Engine, LineMachine, Reading, Replies};
use crate::net::error_limit::ErrorPolicy;
use crate::net::intake::{Intake, Refused};
use crate::net::line::CommandQueue;
use crate::net::stream::TlsInfo;
use crate::net::upstream::{Request, Response};
use crate::proxy::relay::{Authorized, CopyFacts};
pub use crate::proxy::relay::{CopySink, LoginFailure, PreparedCopy, Refusal, Relay};
use crate::proxy::upstream::OpenError;
use crate::sasl;
use crate::store::MailboxId;

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

/// A logged-in session.
struct Relaying {
    mailbox: MailboxId,
    link: Link,
    tx: Option<Transaction>,
}

/// A relayed command waiting for the upstream's reply.
enum Waiting {
    /// EHLO inside a transaction: RSET went upstream; then the EHLO reply.
    Ehlo(String),
    Mail(String),
    Rcpt(String),
    Rset,
    Noop,
    /// Refused before DATA went upstream: RSET clears the upstream envelope,
    /// then the client gets this reply.
    Abandon(Reply),
    Quit,
}

/// A message whose durable copy is being sent upstream.
struct Delivery {
    copy: Box<dyn PreparedCopy>,
    outbound: Outbound,
    summary: String,
}

enum Phase {
    /// Needs EHLO or HELO.
    Greeted,
    /// Greeted, not logged in.
    Ready,
    /// `AUTH PLAIN` without initial response: the next line is the response.
    AuthPlain,
    /// `AUTH LOGIN`: the next line is the user name.
    AuthLoginUser,
    /// `AUTH LOGIN`: the next line is the password.
    AuthLoginPassword(String),
    /// The upstream login is under way.
    LoggingIn(Box<Login>, Box<Authorized>),
    /// A failed login's upstream connection is being closed.
    Disconnecting,
    /// Logged in, between commands.
    Relaying(Relaying),
    /// Logged in, a relayed command waiting for its reply.
    Awaiting(Relaying, Waiting),
    /// Reading the client's message.
    Data(Relaying, Intake<Box<dyn CopySink>>, DataReceiver),
    /// Sending the message upstream.
    Sending(Relaying, Box<Delivery>),
    /// QUIT, or the end. Also what `phase` holds while a transition is
    /// worked out, so that a transition that forgets to set the next phase
    /// fails safe, by closing.
    Closed,
}

/// What SMTP means on one proxy connection; the [`Engine`] around it keeps
/// the client side.
pub struct SmtpProxy<R: Relay> {
    dialect: Smtp,
    settings: Settings,
    relay: R,
    client_ip: IpAddr,
    tls: Option<TlsInfo>,
    phase: Phase,
    scratch: Vec<u8>,
}

/// One proxy connection.
pub type ProxySession<R> = Engine<SmtpProxy<R>>;

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

fn lost(why: &dyn std::fmt::Display) -> Reply {
    warn!("smtp proxy: upstream connection lost: {why}");
    Reply::new(
        421,
        "4.4.2",
        "Connection to the upstream server lost; try again",
    )
}

fn cannot_archive() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "Cannot archive the message right now; try again later",
    )
}

impl<R: Relay> ProxySession<R> {
    /// A session; `tls` is set on implicit-TLS listeners.
    pub fn new(
        settings: Settings,
        relay: R,
        client_ip: IpAddr,
        tls: Option<TlsInfo>,
    ) -> ProxySession<R> {
        let (max_line, errors) = (settings.max_line_bytes, settings.errors);
        let machine = SmtpProxy {
            dialect: Smtp {
                hostname: settings.hostname.clone(),
            },
            settings,
            relay,
            client_ip,
            tls,
            phase: Phase::Greeted,
            scratch: Vec::with_capacity(64 * 1024),
        };
        Engine::around(machine, max_line, errors)
    }
}

impl<R: Relay> SmtpProxy<R> {
    /// Writes a reply (the engine counts it, and closes on a 421).
    fn say(&mut self, reply: Reply, out: &mut Replies) -> Step {
        if reply.code == 421 {
            self.phase = Phase::Closed;
        }
        out.say(&reply);
        Step::Continue
    }

    fn ehlo_reply(&self, name: &str) -> Reply {
        let mut lines = vec![
            Reply::greets(&self.settings.hostname, name, self.client_ip),
            "PIPELINING".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.tls.is_none() {
            lines.push("STARTTLS".into());
        } else {
            lines.push(format!("SIZE {}", self.settings.max_message_bytes));
            lines.push("8BITMIME".into());
            if matches!(self.phase, Phase::Greeted | Phase::Ready) {
                lines.push("AUTH PLAIN LOGIN".into());
            }
        }
        Reply::plain(250, lines)
    }

    fn handle(&mut self, line: &[u8], out: &mut Replies) -> Step {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            phase @ (Phase::AuthPlain | Phase::AuthLoginUser | Phase::AuthLoginPassword(_)) => {
                self.phase = Phase::Ready;
                self.auth_response(phase, line, out)
            }
            phase => {
                self.phase = phase;
                match command::parse(line) {
                    Ok(command) => self.command(command, out),
                    Err(e) => self.say(Reply::from(e), out),
                }
            }
        }
    }

    fn command(&mut self, command: Command, out: &mut Replies) -> Step {
        let host = self.settings.hostname.clone();
        let reply = match command {
            Command::Ehlo(name) | Command::Helo(name) => return self.ehlo(name, out),
            Command::StartTls => {
                let greeted = !matches!(self.phase, Phase::Greeted);
                // Logged in means TLS is on: no transaction can be open here.
                match Reply::starttls(self.tls.is_some(), greeted, false) {
                    Ok(go) => {
                        self.say(go, out);
                        return Step::StartTls;
                    }
                    Err(refusal) => refusal,
                }
            }
            Command::Auth { mechanism, initial } => return self.auth(&mechanism, initial, out),
            Command::Mail(from, params) => return self.mail(from, params, out),
            Command::Rcpt(to) => return self.rcpt(to, out),
            Command::Data => return self.data(out),
            Command::Rset => {
                if let Phase::Relaying(r) = &mut self.phase {
                    r.tx = None;
                }
                return self.relay_simple(Waiting::Rset, "RSET", out);
            }
            Command::Noop => return self.relay_simple(Waiting::Noop, "NOOP", out),
            Command::Quit => {
                if matches!(self.phase, Phase::Relaying(_)) {
                    return self.relay_simple(Waiting::Quit, "QUIT", out);
                }
                self.say(
                    Reply::new(221, "2.0.0", format!("{host} closing connection")),
                    out,
                );
                self.phase = Phase::Closed;
                return Step::Close;
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
        self.say(reply, out)
    }

    /// EHLO resets any transaction (RFC 5321 section 4.1.4), upstream too.
    fn ehlo(&mut self, name: String, out: &mut Replies) -> Step {
        if let Phase::Relaying(r) = &mut self.phase
            && r.tx.take().is_some()
        {
            return self.relay_simple(Waiting::Ehlo(name), "RSET", out);
        }
        if matches!(self.phase, Phase::Greeted) {
            self.phase = Phase::Ready;
        }
        let reply = self.ehlo_reply(&name);
        self.say(reply, out)
    }

    /// Sends a command upstream when logged in; otherwise answers it here.
    fn relay_simple(&mut self, waiting: Waiting, line: &str, out: &mut Replies) -> Step {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Relaying(r) => self.relay_command(r, waiting, line, out),
            other => {
                self.phase = other;
                self.say(Reply::new(250, "2.0.0", "Ok"), out)
            }
        }
    }

    fn relay_command(
        &mut self,
        r: Relaying,
        waiting: Waiting,
        line: &str,
        out: &mut Replies,
    ) -> Step {
        match r.link.command(line) {
            Ok(request) => {
                self.phase = Phase::Awaiting(r, waiting);
                Step::Upstream(request)
            }
            Err(e) => self.say(lost(&e), out),
        }
    }

    fn mail(&mut self, from: Path, params: MailParams, out: &mut Replies) -> Step {
        let r = match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Relaying(r) => r,
            other => {
                let reply = match other {
                    Phase::Greeted => Reply::new(503, "5.5.1", "Send EHLO first"),
                    _ if self.tls.is_none() => Reply::must_starttls(),
                    _ => Reply::new(530, "5.7.0", "Authentication required"),
                };
                self.phase = other;
                return self.say(reply, out);
            }
        };
        let refusal = if r.tx.is_some() {
            Some(Reply::new(503, "5.5.1", "Nested MAIL command"))
        } else if let Err(reply) = Reply::check_utf8(&from, params.smtputf8, false) {
            Some(reply)
        } else if params
            .size
            .is_some_and(|s| s > self.settings.max_message_bytes)
        {
            Some(Reply::too_big())
        } else if self.relay.below_reserve() {
            // Nothing is relayed that could not be archived.
            info!("smtp proxy: MAIL refused: the disk is below its reserve");
            Some(Reply::storage_full())
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.phase = Phase::Relaying(r);
            return self.say(reply, out);
        }
        let mut line = format!("MAIL FROM:<{}>", from.0);
        if let Some(size) = params.size.filter(|_| r.link.supports("SIZE")) {
            line.push_str(&format!(" SIZE={size}"));
        }
        if params.body == Body::EightBitMime && r.link.supports("8BITMIME") {
            line.push_str(" BODY=8BITMIME");
        }
        self.relay_command(r, Waiting::Mail(from.0), &line, out)
    }

    /// The logged-in session, taken out of the phase; otherwise the 530.
    fn relaying(&mut self, out: &mut Replies) -> Result<Relaying, Step> {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Relaying(r) => Ok(r),
            other => {
                self.phase = other;
                Err(self.say(Reply::new(530, "5.7.0", "Authentication required"), out))
            }
        }
    }

    fn rcpt(&mut self, to: Path, out: &mut Replies) -> Step {
        let r = match self.relaying(out) {
            Ok(r) => r,
            Err(step) => return step,
        };
        let refusal = match &r.tx {
            None => Some(Reply::new(503, "5.5.1", "Need MAIL command first")),
            Some(tx) if tx.accepted.len() >= self.settings.max_recipients => {
                Some(Reply::too_many_recipients())
            }
            Some(_) => Reply::check_utf8(&to, false, false).err(),
        };
        if let Some(reply) = refusal {
            self.phase = Phase::Relaying(r);
            return self.say(reply, out);
        }
        let line = format!("RCPT TO:<{}>", to.0);
        self.relay_command(r, Waiting::Rcpt(to.0), &line, out)
    }

    /// An upstream reply to a relayed command, or the end of a delivery.
    fn answered(
        &mut self,
        mut r: Relaying,
        waiting: Waiting,
        reply: UpReply,
        out: &mut Replies,
    ) -> Step {
        let answer = match waiting {
            Waiting::Mail(from) => {
                if reply.is_success() {
                    r.tx = Some(Transaction {
                        mail_from: from,
                        accepted: Vec::new(),
                    });
                }
                relayed(&reply, "Sender")
            }
            Waiting::Rcpt(to) => {
                if reply.is_success()
                    && let Some(tx) = &mut r.tx
                {
                    // Every recipient the upstream accepted, Bcc included: the
                    // envelope is the only place a Bcc is recorded.
                    tx.accepted.push(to);
                }
                relayed(&reply, "Recipient")
            }
            Waiting::Rset => relayed(&reply, "RSET"),
            Waiting::Noop => relayed(&reply, "NOOP"),
            Waiting::Ehlo(name) => {
                self.phase = Phase::Relaying(r);
                let reply = self.ehlo_reply(&name);
                return self.say(reply, out);
            }
            Waiting::Abandon(reply) => reply,
            Waiting::Quit => return self.quit(out),
        };
        self.phase = Phase::Relaying(r);
        self.say(answer, out)
    }

    fn quit(&mut self, out: &mut Replies) -> Step {
        let host = &self.settings.hostname;
        out.say(&Reply::new(
            221,
            "2.0.0",
            format!("{host} closing connection"),
        ));
        self.phase = Phase::Closed;
        Step::Close
    }
}

impl<R: Relay> LineMachine for SmtpProxy<R> {
    type Dialect = Smtp;

    fn dialect(&self) -> &Smtp {
        &self.dialect
    }

    fn greeting(&self, out: &mut Replies) -> Step {
        let host = &self.settings.hostname;
        out.say(&Reply::plain(
            220,
            vec![format!("{host} ESMTP Sealpost recording proxy")],
        ));
        Step::Continue
    }

    fn reading(&self) -> Reading {
        match self.phase {
            Phase::Data(..) => Reading::Raw,
            Phase::LoggingIn(..)
            | Phase::Disconnecting
            | Phase::Awaiting(..)
            | Phase::Sending(..)
            | Phase::Closed => Reading::Nothing,
            _ => Reading::Lines,
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Replies) -> Step {
        self.handle(line, out)
    }

    /// Message data into the copy; at its end, the copy, then the upstream.
    fn raw(&mut self, queue: &mut CommandQueue, out: &mut Replies) -> Option<Step> {
        let Phase::Data(_, intake, receiver) = &mut self.phase else {
            return Some(Step::Continue);
        };
        let scratch = &mut self.scratch;
        scratch.clear();
        let mut done = false;
        queue.take_raw(|input| done = receiver.feed(input, scratch));
        intake.write(scratch);
        done.then(|| self.finish_data(out))
    }

    fn upstream(&mut self, response: Response<'_>, out: &mut Replies) -> Step {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::LoggingIn(mut login, authorized) => {
                let progress = login.on(response, &authorized);
                self.logging_in(*login, authorized, progress, out)
            }
            Phase::Disconnecting => {
                self.phase = Phase::Ready;
                Step::Continue
            }
            Phase::Awaiting(mut r, Waiting::Quit) => {
                // The upstream's goodbye does not matter: ours is the same.
                let _ = r.link.reply(response);
                self.quit(out)
            }
            Phase::Awaiting(mut r, waiting) => match r.link.reply(response) {
                Err(e) => self.say(lost(&e), out),
                Ok(Progress::Io(request)) => {
                    self.phase = Phase::Awaiting(r, waiting);
                    Step::Upstream(request)
                }
                Ok(Progress::Done(reply)) => self.answered(r, waiting, reply, out),
            },
            Phase::Sending(mut r, mut delivery) => {
                match delivery.outbound.on(&mut r.link, response) {
                    Progress::Io(request) => {
                        self.phase = Phase::Sending(r, delivery);
                        Step::Upstream(request)
                    }
                    Progress::Done(outcome) => self.delivered(r, *delivery, outcome, out),
                }
            }
            other => {
                self.phase = other;
                Step::Continue
            }
        }
    }

    fn tls_started(&mut self, tls: TlsInfo) {
        self.tls = Some(tls);
        self.phase = Phase::Greeted;
    }

    fn is_idle(&self) -> bool {
        matches!(
            self.phase,
            Phase::Greeted | Phase::Ready | Phase::Relaying(Relaying { tx: None, .. })
        )
    }

    fn expecting_data(&self) -> bool {
        matches!(self.phase, Phase::Data(..))
    }
}

mod auth;
mod delivery;

#[cfg(test)]
mod tests;
