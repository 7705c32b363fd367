//! The journal SMTP server as an I/O-free state machine: bytes in, replies
//! out, one type per state (mailin's shape). Storage is reached through the
//! [`Backend`] trait, so every protocol rule can be tested without sockets or
//! disks. The client side (lines, error count, intake) is the shared
//! [`Engine`]'s; [`Journal`] holds only what SMTP means.

use std::io::Write;
use std::net::IpAddr;
use std::time::SystemTime;

use log::{info, warn};

use super::bdat::LineEndingCheck;
use super::command::{self, Body, Command, MailParams, Path};
use super::message_id::MessageIdScan;
use super::reply::{Reply, Smtp};
use crate::dot_stuffing::DataReceiver;
use crate::failure::Failure;
use crate::net::driver::Step;
use crate::net::engine::{Engine, LineMachine, Reading, Replies};
use crate::net::error_limit::ErrorPolicy;
use crate::net::intake::{Intake, Refused};
use crate::net::line::CommandQueue;
use crate::store::MailboxId;
use crate::timestamp;

/// What the server needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our name in the greeting and `Received:` header.
    pub hostname: String,
    /// Largest message in bytes.
    pub max_message_bytes: u64,
    /// Most recipients per transaction.
    pub max_recipients: usize,
    /// Refuse MAIL before TLS.
    pub require_tls: bool,
    /// Longest command line, CRLF included.
    pub max_line_bytes: usize,
    /// How many errors a client may make.
    pub errors: ErrorPolicy,
}

pub use crate::net::conn::TlsInfo;

/// What a recipient lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientCheck {
    /// A mailbox that takes mail.
    Accept(MailboxId),
    /// Not an address of our mailbox domain: we never relay.
    NotLocal,
    /// Our domain, but no such mailbox.
    Unknown,
    /// The mailbox is suspended.
    Suspended,
    /// The mailbox holds `limits.max_pending_bytes_per_mailbox` already.
    Full,
    /// The store could not be asked.
    Unavailable,
}

/// The finished envelope handed over with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Queue id for logs and the reply.
    pub queue_id: String,
    /// The reverse-path (empty for `<>`).
    pub mail_from: String,
    /// Accepted recipients: mailbox and the address as the client wrote it.
    pub recipients: Vec<(MailboxId, String)>,
    /// The client address.
    pub client_ip: IpAddr,
    /// TLS protocol version, if any.
    pub tls: Option<String>,
    /// Message bytes as received (without our `Received:` header).
    pub size: u64,
}

/// A message being written to storage.
pub trait MessageSink: Write {
    /// Makes the message durable in every recipient mailbox that still
    /// exists; returns each mailbox with the stored name, or why it failed
    /// (a permanent error when none of the mailboxes exists any more).
    fn deliver(self: Box<Self>, envelope: &Envelope) -> Result<Vec<(MailboxId, String)>, Failure>;
}

/// Where recipients are checked and messages go.
pub trait Backend {
    /// Looks up a recipient address.
    fn recipient(&mut self, address: &Path) -> RecipientCheck;
    /// Starts receiving a message.
    fn start_message(&mut self) -> Result<Box<dyn MessageSink>, Failure>;
    /// Whether the disk is below its reserve (`store::reserve`): no new
    /// mail is taken in.
    fn below_reserve(&mut self) -> bool;
}

/// How the message's lines ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineEnds {
    /// Every line with CRLF.
    Crlf,
    /// A bare CR or LF somewhere (RFC 5321 section 2.3.8 forbids them).
    HadBare,
}

/// Takes up to `remaining` bytes from the front of `input`.
fn take<'a>(input: &mut &'a [u8], remaining: &mut u64) -> &'a [u8] {
    let n = (*remaining).min(input.len() as u64) as usize;
    let (bytes, rest) = input.split_at(n);
    *input = rest;
    *remaining -= n as u64;
    bytes
}

#[derive(Debug, Clone)]
struct Helo {
    name: String,
    extended: bool,
}

/// A message body arriving through DATA or BDAT.
struct Incoming {
    intake: Intake<Box<dyn MessageSink>>,
    /// For the `result=stored` line.
    message_id: MessageIdScan,
}

impl Incoming {
    fn write(&mut self, bytes: &[u8]) {
        self.message_id.feed(bytes);
        self.intake.write(bytes);
    }
}

struct Transaction {
    queue_id: String,
    mail_from: Path,
    params: MailParams,
    recipients: Vec<(MailboxId, String)>,
}

/// A message arriving in BDAT chunks (RFC 3030), with its line-ending check.
struct Chunked {
    helo: Helo,
    tx: Transaction,
    incoming: Incoming,
    check: LineEndingCheck,
}

/// Where the session is. Each state holds exactly what it needs, so no
/// command can meet a state it has no meaning in.
enum Phase {
    /// Needs EHLO or HELO (at first, and again after STARTTLS).
    Greeted,
    /// Greeted, no transaction.
    Ready(Helo),
    /// MAIL given; recipients being collected.
    Envelope(Helo, Transaction),
    /// Reading DATA.
    Data(Helo, Transaction, Incoming, DataReceiver),
    /// Between BDAT chunks: only BDAT (or RSET, QUIT…) may follow.
    Chunked(Box<Chunked>),
    /// Reading the bytes of a BDAT chunk; `last` ends the message.
    Chunk(Box<Chunked>, u64, bool),
    /// Reading the bytes of a refused BDAT chunk, to stay in step; then
    /// `reply`, and the session goes on in `then`.
    Discard {
        remaining: u64,
        reply: Reply,
        then: Box<Phase>,
    },
    /// QUIT, or the end. Also what `phase` holds while a transition is
    /// worked out, so that a transition that forgets the next phase fails
    /// safe, by closing.
    Closed,
}

impl Phase {
    /// The greeting, if there was one: where a refused transaction goes back to.
    fn without_transaction(self) -> Phase {
        match self {
            Phase::Ready(h) | Phase::Envelope(h, _) | Phase::Data(h, ..) => Phase::Ready(h),
            Phase::Chunked(c) | Phase::Chunk(c, ..) => Phase::Ready(c.helo),
            Phase::Discard { then, .. } => then.without_transaction(),
            Phase::Greeted | Phase::Closed => Phase::Greeted,
        }
    }
}

/// What SMTP means on one journal connection; the [`Engine`] around it
/// keeps the client side.
pub struct Journal<B: Backend> {
    dialect: Smtp,
    settings: Settings,
    backend: B,
    client_ip: IpAddr,
    tls: Option<TlsInfo>,
    /// Outside `smtp.allowed_clients`: the greeting is a refusal.
    refused: bool,
    phase: Phase,
    scratch: Vec<u8>,
}

/// One SMTP connection.
pub type Session<B> = Engine<Journal<B>>;

fn random_id() -> String {
    let mut bytes = [0u8; 6];
    crate::crypto::random_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn temporary_storage_failure() -> Reply {
    Reply::new(451, "4.3.0", "Temporary storage failure, try again later")
}

impl<B: Backend> Session<B> {
    /// A session for a client at `client_ip`; `tls` is set on implicit-TLS listeners.
    pub fn new(
        settings: Settings,
        backend: B,
        client_ip: IpAddr,
        tls: Option<TlsInfo>,
    ) -> Session<B> {
        let (max_line, errors) = (settings.max_line_bytes, settings.errors);
        let journal = Journal {
            dialect: Smtp {
                hostname: settings.hostname.clone(),
            },
            settings,
            backend,
            client_ip,
            tls,
            refused: false,
            phase: Phase::Greeted,
            scratch: Vec::with_capacity(64 * 1024),
        };
        Engine::around(journal, max_line, errors)
    }

    /// A session for a client outside `smtp.allowed_clients`: the greeting
    /// is `554` and the session ends (RFC 5321 section 3.1).
    pub fn refusing(self) -> Session<B> {
        self.map_machine(|j| j.refused = true)
    }
}

impl<B: Backend> LineMachine for Journal<B> {
    type Dialect = Smtp;

    fn dialect(&self) -> &Smtp {
        &self.dialect
    }

    fn greeting(&self, out: &mut Replies) -> Step {
        let host = &self.settings.hostname;
        if self.refused {
            let ip = self.client_ip;
            out.say(&Reply::new(
                554,
                "5.7.1",
                format!("{host} Access denied for {ip}"),
            ));
            return Step::Close;
        }
        out.say(&Reply::plain(220, vec![format!("{host} ESMTP Sealpost")]));
        Step::Continue
    }

    fn reading(&self) -> Reading {
        match self.expecting_data() {
            true => Reading::Raw,
            false => Reading::Lines,
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Replies) -> Step {
        let (reply, step) = self.command(line, out);
        if let Some(reply) = reply {
            out.say(&reply);
        }
        step
    }

    fn raw(&mut self, queue: &mut CommandQueue, out: &mut Replies) -> Option<Step> {
        let reply = match &mut self.phase {
            Phase::Data(_, _, incoming, receiver) => {
                let scratch = &mut self.scratch;
                scratch.clear();
                let mut done = false;
                queue.take_raw(|input| done = receiver.feed(input, scratch));
                incoming.write(scratch);
                if !done {
                    return None;
                }
                self.finish_data(out)
            }
            Phase::Chunk(chunked, remaining, _) => {
                queue.take_raw(|input| {
                    let bytes = take(input, remaining);
                    chunked.check.feed(bytes);
                    chunked.incoming.write(bytes);
                });
                if *remaining > 0 {
                    return None;
                }
                self.finish_chunk(out)
            }
            Phase::Discard { remaining, .. } => {
                queue.take_raw(|input| {
                    take(input, remaining);
                });
                if *remaining > 0 {
                    return None;
                }
                self.finish_discard()
            }
            _ => return Some(Step::Continue),
        };
        out.say(&reply);
        Some(Step::Continue)
    }

    /// After STARTTLS: forget everything learnt before (RFC 3207 section 4.2).
    fn tls_started(&mut self, tls: TlsInfo) {
        self.tls = Some(tls);
        self.phase = Phase::Greeted;
    }

    /// No transaction.
    fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Greeted | Phase::Ready(_))
    }

    fn expecting_data(&self) -> bool {
        matches!(
            self.phase,
            Phase::Data(..) | Phase::Chunk(..) | Phase::Discard { .. }
        )
    }
}

impl<B: Backend> Journal<B> {
    /// Handles one command line; `None` means the reply comes later (a BDAT
    /// chunk is answered once its bytes have been read).
    fn command(&mut self, line: &[u8], out: &mut Replies) -> (Option<Reply>, Step) {
        let command = match command::parse(line) {
            Ok(c) => c,
            Err(e) => return (Some(Reply::from(e)), Step::Continue),
        };
        let host = &self.settings.hostname;
        let reply = match command {
            Command::Ehlo(name) => {
                let reply = self.ehlo_reply(&name);
                self.phase = Phase::Ready(Helo {
                    name,
                    extended: true,
                });
                reply
            }
            Command::Helo(name) => {
                let reply = Reply::plain(250, vec![host.clone()]);
                self.phase = Phase::Ready(Helo {
                    name,
                    extended: false,
                });
                reply
            }
            Command::Mail(from, params) => self.mail(from, params),
            Command::Rcpt(to) => self.rcpt(to),
            Command::Data => self.data(),
            Command::Bdat { size, last } => return (self.bdat(size, last, out), Step::Continue),
            Command::Rset => {
                let phase = std::mem::replace(&mut self.phase, Phase::Closed);
                self.phase = phase.without_transaction();
                Reply::new(250, "2.0.0", "Ok")
            }
            Command::Noop => Reply::new(250, "2.0.0", "Ok"),
            Command::Vrfy => Reply::new(
                252,
                "2.5.0",
                "Cannot VRFY user; send mail and it will be delivered if the mailbox exists",
            ),
            Command::Expn => Reply::new(502, "5.5.1", "EXPN is not available"),
            Command::Help => Reply {
                code: 214,
                status: "2.0.0".into(),
                lines: vec![
                    "Sealpost journal receiver (RFC 5321). Commands:".into(),
                    "EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT STARTTLS".into(),
                ],
            },
            Command::Quit => {
                let reply = Reply::new(221, "2.0.0", format!("{host} closing connection"));
                return (Some(reply), Step::Close);
            }
            Command::StartTls => return self.starttls(),
            Command::Auth { .. } => Reply::new(
                502,
                "5.5.1",
                "AUTH is not offered here: this is a journal receiver",
            ),
        };
        (Some(reply), Step::Continue)
    }

    fn ehlo_reply(&self, name: &str) -> Reply {
        let mut lines = vec![
            Reply::greets(&self.settings.hostname, name, self.client_ip),
            "PIPELINING".into(),
            format!("SIZE {}", self.settings.max_message_bytes),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
        ];
        if self.tls.is_none() {
            lines.push("STARTTLS".into());
        }
        Reply::plain(250, lines)
    }

    fn starttls(&mut self) -> (Option<Reply>, Step) {
        let greeted = !matches!(self.phase, Phase::Greeted);
        let in_transaction = !matches!(self.phase, Phase::Greeted | Phase::Ready(_));
        match Reply::starttls(self.tls.is_some(), greeted, in_transaction) {
            Ok(go) => (Some(go), Step::StartTls),
            Err(refusal) => (Some(refusal), Step::Continue),
        }
    }

    fn mail(&mut self, from: Path, params: MailParams) -> Reply {
        let helo = match &self.phase {
            Phase::Greeted => return Reply::new(503, "5.5.1", "Send EHLO or HELO first"),
            Phase::Ready(h) => h.clone(),
            _ => return Reply::new(503, "5.5.1", "Nested MAIL command"),
        };
        if self.settings.require_tls && self.tls.is_none() {
            info!(
                "smtp from=<{}> result=refused reply=530 reason=no-tls",
                from.0
            );
            return Reply::must_starttls();
        }
        if let Err(reply) = Reply::check_utf8(&from, params.smtputf8, true) {
            return reply;
        }
        if params
            .size
            .is_some_and(|s| s > self.settings.max_message_bytes)
        {
            return Reply::too_big();
        }
        if self.backend.below_reserve() {
            info!(
                "smtp from=<{}> result=refused reply=452 reason=disk-reserve",
                from.0
            );
            crate::metrics::refused("smtp", "disk-reserve");
            return Reply::storage_full();
        }
        let tx = Transaction {
            queue_id: random_id(),
            mail_from: from,
            params,
            recipients: Vec::new(),
        };
        self.phase = Phase::Envelope(helo, tx);
        Reply::new(250, "2.1.0", "Ok")
    }

    fn rcpt(&mut self, to: Path) -> Reply {
        let tx = match &mut self.phase {
            Phase::Envelope(_, tx) => tx,
            Phase::Chunked(_) => return Reply::new(503, "5.5.1", "RCPT is not allowed after BDAT"),
            _ => return Reply::new(503, "5.5.1", "Need MAIL command first"),
        };
        if tx.recipients.len() >= self.settings.max_recipients {
            return Reply::too_many_recipients();
        }
        if let Err(reply) = Reply::check_utf8(&to, tx.params.smtputf8, true) {
            return reply;
        }
        // The reserve may have been crossed since MAIL.
        if self.backend.below_reserve() {
            info!(
                "smtp[{}] rcpt=<{}> result=refused reply=452 reason=disk-reserve",
                tx.queue_id, to.0
            );
            crate::metrics::refused("smtp", "disk-reserve");
            return Reply::storage_full();
        }
        let (reply, reason) = match self.backend.recipient(&to) {
            RecipientCheck::Accept(id) => {
                tx.recipients.push((id, to.0));
                return Reply::new(250, "2.1.5", "Ok");
            }
            RecipientCheck::NotLocal => (
                Reply::new(
                    550,
                    "5.7.1",
                    "Relay access denied: not a mailbox of this gateway",
                ),
                "not-local",
            ),
            RecipientCheck::Unknown => (Reply::new(550, "5.1.1", "No such mailbox"), "unknown"),
            RecipientCheck::Suspended => (
                Reply::new(450, "4.2.1", "Mailbox is suspended, try again later"),
                "suspended",
            ),
            // RFC 3463 §3.3: mailbox full, a temporary condition.
            RecipientCheck::Full => (
                Reply::new(452, "4.2.2", "Mailbox full, try again later"),
                "mailbox-full",
            ),
            RecipientCheck::Unavailable => (
                Reply::new(451, "4.3.0", "Temporary lookup failure, try again later"),
                "lookup-failed",
            ),
        };
        crate::metrics::refused("smtp", reason);
        // A journal rule pointing at a wrong address shows here.
        warn!(
            "smtp[{}] from=<{}> rcpt=<{}> result=refused reply={} reason={reason}",
            tx.queue_id, tx.mail_from.0, to.0, reply.code
        );
        reply
    }
}

mod message;

#[cfg(test)]
mod tests;
