//! The journal SMTP server as an I/O-free state machine: bytes in, replies
//! out. Storage is reached through the [`Backend`] trait, so every protocol
//! rule can be tested without sockets or disks.

use std::io::Write;
use std::net::IpAddr;
use std::time::SystemTime;

use log::{info, warn};

use super::bdat::LineEndingCheck;
use super::command::{self, Body, Command, MailParams, Path};
use super::reply::Reply;
use crate::dot_stuffing::DataReceiver;
use crate::net::error_limit::{ErrorCount, ErrorPolicy, Verdict};
use crate::net::line::{Line, LineAssembler};
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
    /// Makes the message durable in every recipient mailbox; returns the
    /// stored names, or why it failed.
    fn deliver(self: Box<Self>, envelope: &Envelope) -> Result<Vec<String>, String>;
}

/// Where recipients are checked and messages go.
pub trait Backend {
    /// Looks up a recipient address.
    fn recipient(&mut self, address: &Path) -> RecipientCheck;
    /// Starts receiving a message.
    fn start_message(&mut self) -> Result<Box<dyn MessageSink>, String>;
}

/// What the session loop must do after feeding input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Write the replies and read more.
    Continue,
    /// Write the replies, drop every buffered input byte, start TLS, then
    /// call [`Session::tls_started`].
    StartTls,
    /// Write the replies and close the connection.
    Close,
}

#[derive(Debug, Clone)]
struct Helo {
    name: String,
    extended: bool,
}

/// A message body arriving through DATA or BDAT.
struct Incoming {
    sink: Option<Box<dyn MessageSink>>,
    size: u64,
    limit: u64,
    write_error: Option<String>,
}

impl Incoming {
    fn write(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.size > self.limit {
            // Over the limit: keep reading to the end, store nothing.
            self.sink = None;
        } else if let Some(sink) = &mut self.sink
            && let Err(e) = sink.write_all(bytes)
        {
            self.write_error = Some(e.to_string());
            self.sink = None;
        }
    }
}

struct Transaction {
    queue_id: String,
    mail_from: Path,
    params: MailParams,
    recipients: Vec<(MailboxId, String)>,
    accepted: usize,
    /// A BDAT message in progress, with its line-ending check.
    chunks: Option<(Incoming, LineEndingCheck)>,
}

enum Phase {
    /// Waiting for EHLO/HELO (also right after STARTTLS).
    Greeted,
    /// Greeted, no transaction.
    Ready(Helo),
    /// MAIL given; RCPTs being collected.
    Envelope(Helo, Transaction),
    /// Reading DATA.
    Data(Helo, Transaction, Incoming, DataReceiver),
    /// Reading a BDAT chunk; `None` transaction means the chunk is drained
    /// and answered with `error`.
    Chunk {
        helo: Option<Helo>,
        tx: Option<Transaction>,
        remaining: u64,
        last: bool,
        error: Option<Reply>,
    },
    /// QUIT given or the connection is being closed.
    Closed,
}

/// One SMTP connection's protocol state.
pub struct Session<B: Backend> {
    settings: Settings,
    backend: B,
    client_ip: IpAddr,
    tls: Option<TlsInfo>,
    lines: LineAssembler,
    phase: Phase,
    scratch: Vec<u8>,
    errors: ErrorCount,
}

fn random_id() -> String {
    let mut bytes = [0u8; 6];
    crate::crypto::random_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

impl<B: Backend> Session<B> {
    /// A session for a client at `client_ip`; `tls` is set on implicit-TLS listeners.
    pub fn new(
        settings: Settings,
        backend: B,
        client_ip: IpAddr,
        tls: Option<TlsInfo>,
    ) -> Session<B> {
        Session {
            lines: LineAssembler::new(settings.max_line_bytes),
            errors: ErrorCount::new(settings.errors),
            settings,
            backend,
            client_ip,
            tls,
            phase: Phase::Greeted,
            scratch: Vec::with_capacity(64 * 1024),
        }
    }

    /// The 220 greeting.
    pub fn greeting(&self) -> Reply {
        Reply::plain(
            220,
            vec![format!("{} ESMTP Sealpost", self.settings.hostname)],
        )
    }

    /// The reply for a client outside `allowed_clients` (RFC 5321 section 3.1).
    pub fn refusal(&self) -> Reply {
        Reply::new(
            554,
            "5.7.1",
            format!(
                "{} Access denied for {}",
                self.settings.hostname, self.client_ip
            ),
        )
    }

    /// The reply when the client was silent too long (RFC 5321 section 4.5.3.2).
    pub fn timeout_reply(&self) -> Reply {
        Reply::new(
            421,
            "4.4.2",
            format!(
                "{} Timeout exceeded, closing connection",
                self.settings.hostname
            ),
        )
    }

    /// The reply when the gateway is stopping.
    pub fn shutdown_reply(&self) -> Reply {
        Reply::new(
            421,
            "4.3.2",
            format!(
                "{} Service shutting down, try again later",
                self.settings.hostname
            ),
        )
    }

    /// Counts an error reply (our own 421 goodbyes aside).
    fn count(&mut self, reply: &Reply) -> Verdict {
        if reply.code >= 400 && reply.code != 421 {
            self.errors.record()
        } else {
            Verdict::Continue
        }
    }

    /// The goodbye at `limits.hard_error_limit` (Postfix's wording).
    fn errors_exhausted(&self) -> Reply {
        Reply::new(
            421,
            "4.7.0",
            format!("{} Error: too many errors", self.settings.hostname),
        )
    }

    /// The delay owed by error replies since the last call.
    pub fn take_delay(&mut self) -> std::time::Duration {
        self.errors.take_delay()
    }

    /// Whether part of a command line has arrived.
    pub fn has_partial_command(&self) -> bool {
        !self.lines.is_empty()
    }

    /// Whether the session is inside message data (the data timeout applies).
    pub fn expecting_data(&self) -> bool {
        matches!(self.phase, Phase::Data(..) | Phase::Chunk { .. })
    }

    /// Whether nothing is in progress: no transaction, no partial command.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Greeted | Phase::Ready(_)) && self.lines.is_empty()
    }

    /// The TLS parameters, once TLS is on.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// After STARTTLS: forget everything learnt before (RFC 3207 section 4.2).
    pub fn tls_started(&mut self, tls: TlsInfo) {
        self.tls = Some(tls);
        self.lines.clear();
        self.phase = Phase::Greeted;
    }

    /// Feeds bytes from the client; replies are appended to `out`.
    pub fn receive(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Signal {
        loop {
            let (reply, signal) = match &mut self.phase {
                Phase::Closed => return Signal::Close,
                Phase::Data(_, _, incoming, receiver) => {
                    self.scratch.clear();
                    let done = receiver.feed(&mut input, &mut self.scratch);
                    incoming.write(&self.scratch);
                    if !done {
                        return Signal::Continue;
                    }
                    (Some(self.finish_data()), Signal::Continue)
                }
                Phase::Chunk { tx, remaining, .. } => {
                    let take = (*remaining).min(input.len() as u64) as usize;
                    let (bytes, rest) = input.split_at(take);
                    input = rest;
                    *remaining -= take as u64;
                    if let Some((incoming, check)) = tx.as_mut().and_then(|t| t.chunks.as_mut()) {
                        check.feed(bytes);
                        incoming.write(bytes);
                    }
                    if *remaining > 0 {
                        return Signal::Continue;
                    }
                    (Some(self.finish_chunk()), Signal::Continue)
                }
                _ => match self.lines.next_line(&mut input) {
                    None => return Signal::Continue,
                    Some(Line::TooLong) => (
                        Some(Reply::new(500, "5.5.2", "Line too long")),
                        Signal::Continue,
                    ),
                    Some(Line::Complete(line)) => self.command(&line),
                },
            };
            if let Some(reply) = reply {
                reply.write_to(out);
                if self.count(&reply) == Verdict::Close {
                    self.errors_exhausted().write_to(out);
                    self.phase = Phase::Closed;
                    return Signal::Close;
                }
            }
            if signal != Signal::Continue {
                if signal == Signal::Close {
                    self.phase = Phase::Closed;
                }
                return signal;
            }
        }
    }

    /// Handles one command line; `None` means the reply comes later (a BDAT
    /// chunk is answered once its bytes have been read).
    fn command(&mut self, line: &[u8]) -> (Option<Reply>, Signal) {
        let command = match command::parse(line) {
            Ok(c) => c,
            Err(e) => return (Some(Reply::from(e)), Signal::Continue),
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
            Command::Bdat { size, last } => return (self.bdat(size, last), Signal::Continue),
            Command::Rset => {
                self.reset_transaction();
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
                return (Some(reply), Signal::Close);
            }
            Command::StartTls => {
                let (reply, signal) = self.starttls();
                return (Some(reply), signal);
            }
            Command::Auth { .. } => Reply::new(
                502,
                "5.5.1",
                "AUTH is not offered here: this is a journal receiver",
            ),
        };
        (Some(reply), Signal::Continue)
    }

    fn ehlo_reply(&self, name: &str) -> Reply {
        let mut lines = vec![
            format!(
                "{} greets {name} [{}]",
                self.settings.hostname, self.client_ip
            ),
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

    /// Drops any transaction; keeps the greeting.
    fn reset_transaction(&mut self) {
        self.phase = match std::mem::replace(&mut self.phase, Phase::Greeted) {
            Phase::Ready(h) | Phase::Envelope(h, _) | Phase::Data(h, ..) => Phase::Ready(h),
            other => other,
        };
    }

    fn starttls(&mut self) -> (Reply, Signal) {
        if self.tls.is_some() {
            return (
                Reply::new(503, "5.5.1", "TLS is already active"),
                Signal::Continue,
            );
        }
        match self.phase {
            Phase::Ready(_) => (
                Reply::new(220, "2.0.0", "Ready to start TLS"),
                Signal::StartTls,
            ),
            Phase::Greeted => (
                Reply::new(503, "5.5.1", "Send EHLO first"),
                Signal::Continue,
            ),
            _ => (
                Reply::new(
                    503,
                    "5.5.1",
                    "A mail transaction is in progress; send RSET first",
                ),
                Signal::Continue,
            ),
        }
    }

    fn mail(&mut self, from: Path, params: MailParams) -> Reply {
        let helo = match &self.phase {
            Phase::Greeted => return Reply::new(503, "5.5.1", "Send EHLO or HELO first"),
            Phase::Ready(h) => h.clone(),
            _ => return Reply::new(503, "5.5.1", "Nested MAIL command"),
        };
        if self.settings.require_tls && self.tls.is_none() {
            return Reply::new(530, "5.7.0", "Must issue a STARTTLS command first");
        }
        if !from.is_ascii() && !params.smtputf8 {
            // RFC 6531 section 3.4: non-ASCII addresses need SMTPUTF8.
            return Reply::new(
                553,
                "5.6.7",
                "Non-ASCII address without the SMTPUTF8 parameter",
            );
        }
        if params
            .size
            .is_some_and(|s| s > self.settings.max_message_bytes)
        {
            return Reply::too_big();
        }
        let tx = Transaction {
            queue_id: random_id(),
            mail_from: from,
            params,
            recipients: Vec::new(),
            accepted: 0,
            chunks: None,
        };
        self.phase = Phase::Envelope(helo, tx);
        Reply::new(250, "2.1.0", "Ok")
    }

    fn rcpt(&mut self, to: Path) -> Reply {
        let tx = match &mut self.phase {
            Phase::Envelope(_, tx) => tx,
            _ => return Reply::new(503, "5.5.1", "Need MAIL command first"),
        };
        if tx.chunks.is_some() {
            return Reply::new(503, "5.5.1", "RCPT is not allowed after BDAT");
        }
        if tx.accepted >= self.settings.max_recipients {
            return Reply::new(452, "4.5.3", "Too many recipients");
        }
        if !to.is_ascii() && !tx.params.smtputf8 {
            return Reply::new(
                553,
                "5.6.7",
                "Non-ASCII address without the SMTPUTF8 parameter",
            );
        }
        match self.backend.recipient(&to) {
            RecipientCheck::Accept(id) => {
                tx.accepted += 1;
                tx.recipients.push((id, to.0));
                Reply::new(250, "2.1.5", "Ok")
            }
            RecipientCheck::NotLocal => Reply::new(
                550,
                "5.7.1",
                "Relay access denied: not a mailbox of this gateway",
            ),
            RecipientCheck::Unknown => Reply::new(550, "5.1.1", "No such mailbox"),
            RecipientCheck::Suspended => {
                Reply::new(450, "4.2.1", "Mailbox is suspended, try again later")
            }
            RecipientCheck::Unavailable => {
                Reply::new(451, "4.3.0", "Temporary lookup failure, try again later")
            }
        }
    }

    fn start_incoming(&mut self, tx: &Transaction, helo: &Helo) -> Result<Incoming, Reply> {
        let mut sink = self.backend.start_message().map_err(|e| {
            warn!("smtp[{}] cannot start storing a message: {e}", tx.queue_id);
            Reply::new(451, "4.3.0", "Temporary storage failure, try again later")
        })?;
        let header = self.received_header(tx, helo);
        if let Err(e) = sink.write_all(header.as_bytes()) {
            warn!("smtp[{}] cannot start storing a message: {e}", tx.queue_id);
            return Err(Reply::new(
                451,
                "4.3.0",
                "Temporary storage failure, try again later",
            ));
        }
        Ok(Incoming {
            sink: Some(sink),
            size: 0,
            limit: self.settings.max_message_bytes,
            write_error: None,
        })
    }

    fn data(&mut self) -> Reply {
        let (helo, tx) = match std::mem::replace(&mut self.phase, Phase::Greeted) {
            Phase::Envelope(helo, tx) => (helo, tx),
            other => {
                let greeted = matches!(other, Phase::Greeted);
                self.phase = other;
                return if greeted {
                    Reply::new(503, "5.5.1", "Send EHLO or HELO first")
                } else {
                    Reply::new(503, "5.5.1", "Need MAIL command first")
                };
            }
        };
        let refusal = if tx.chunks.is_some() {
            Some(Reply::new(
                503,
                "5.5.1",
                "DATA is not allowed after BDAT in the same transaction",
            ))
        } else if tx.recipients.is_empty() {
            Some(Reply::new(554, "5.5.1", "No valid recipients"))
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.phase = Phase::Envelope(helo, tx);
            return reply;
        }
        match self.start_incoming(&tx, &helo) {
            Ok(incoming) => {
                self.phase = Phase::Data(helo, tx, incoming, DataReceiver::new());
                Reply::new(354, "", "End data with <CR><LF>.<CR><LF>")
            }
            Err(reply) => {
                self.phase = Phase::Envelope(helo, tx);
                reply
            }
        }
    }

    /// BDAT (RFC 3030): the chunk's bytes follow the command line and are
    /// always read, even when the command is refused, to stay in step.
    fn bdat(&mut self, size: u64, last: bool) -> Option<Reply> {
        let (helo, tx, error) = match std::mem::replace(&mut self.phase, Phase::Greeted) {
            Phase::Envelope(helo, mut tx) => {
                if tx.recipients.is_empty() {
                    (
                        Some(helo),
                        None,
                        Some(Reply::new(554, "5.5.1", "No valid recipients")),
                    )
                } else if tx.chunks.is_some() {
                    (Some(helo), Some(tx), None)
                } else {
                    match self.start_incoming(&tx, &helo) {
                        Ok(incoming) => {
                            tx.chunks = Some((incoming, LineEndingCheck::default()));
                            (Some(helo), Some(tx), None)
                        }
                        Err(reply) => (Some(helo), None, Some(reply)),
                    }
                }
            }
            Phase::Ready(helo) => (
                Some(helo),
                None,
                Some(Reply::new(503, "5.5.1", "Need MAIL command first")),
            ),
            _ => (
                None,
                None,
                Some(Reply::new(503, "5.5.1", "Send EHLO or HELO first")),
            ),
        };
        self.phase = Phase::Chunk {
            helo,
            tx,
            remaining: size,
            last,
            error,
        };
        (size == 0).then(|| self.finish_chunk())
    }

    fn finish_chunk(&mut self) -> Reply {
        let Phase::Chunk {
            helo,
            tx,
            last,
            error,
            ..
        } = std::mem::replace(&mut self.phase, Phase::Greeted)
        else {
            return Reply::new(451, "4.3.0", "Internal state error");
        };
        let Some(helo) = helo else {
            return error.unwrap_or_else(|| Reply::new(503, "5.5.1", "Send EHLO or HELO first"));
        };
        let (Some(mut tx), None) = (tx, &error) else {
            self.phase = Phase::Ready(helo);
            return error.unwrap_or_else(|| Reply::new(503, "5.5.1", "Need MAIL command first"));
        };
        let Some((incoming, check)) = tx.chunks.take() else {
            self.phase = Phase::Ready(helo);
            return Reply::new(503, "5.5.1", "Need MAIL command first");
        };
        if !last {
            if incoming.size > incoming.limit {
                // RFC 3030 section 4.2: a failed chunk fails the transaction.
                self.phase = Phase::Ready(helo);
                return Reply::too_big();
            }
            let received = incoming.size;
            tx.chunks = Some((incoming, check));
            self.phase = Phase::Envelope(helo, tx);
            return Reply::new(250, "2.0.0", format!("{received} octets received"));
        }
        let reply = self.complete_message(tx, incoming, check.finish());
        self.phase = Phase::Ready(helo);
        reply
    }

    fn finish_data(&mut self) -> Reply {
        let Phase::Data(helo, tx, incoming, receiver) =
            std::mem::replace(&mut self.phase, Phase::Greeted)
        else {
            return Reply::new(451, "4.3.0", "Internal state error");
        };
        let reply = self.complete_message(tx, incoming, receiver.saw_bare_line_ending());
        self.phase = Phase::Ready(helo);
        reply
    }

    fn complete_message(&mut self, tx: Transaction, incoming: Incoming, bare: bool) -> Reply {
        let qid = &tx.queue_id;
        let tls = self.tls.as_ref().map(|t| t.version.clone());
        let summary = format!(
            "smtp[{qid}] client={} tls={} from=<{}> size={} rcpts={}",
            self.client_ip,
            tls.as_deref().unwrap_or("none"),
            tx.mail_from.0,
            incoming.size,
            tx.recipients.len()
        );
        if incoming.size > incoming.limit {
            info!("{summary} result=rejected reason=too-large");
            return Reply::too_big();
        }
        if let Some(e) = incoming.write_error {
            warn!("{summary} result=deferred reason=storage error={e}");
            return Reply::new(451, "4.3.0", "Temporary storage failure, try again later");
        }
        if bare {
            info!("{summary} result=rejected reason=bare-cr-or-lf");
            return Reply::new(
                550,
                "5.6.0",
                "Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 section 2.3.8)",
            );
        }
        let Some(sink) = incoming.sink else {
            warn!("{summary} result=deferred reason=no-sink");
            return Reply::new(451, "4.3.0", "Temporary storage failure, try again later");
        };
        let envelope = Envelope {
            queue_id: tx.queue_id.clone(),
            mail_from: tx.mail_from.0.clone(),
            recipients: tx.recipients,
            client_ip: self.client_ip,
            tls,
            size: incoming.size,
        };
        match sink.deliver(&envelope) {
            Ok(stored) => {
                let mailboxes: Vec<String> = envelope
                    .recipients
                    .iter()
                    .map(|(id, _)| id.to_string())
                    .collect();
                info!(
                    "{summary} result=stored mailboxes={} files={}",
                    mailboxes.join(","),
                    stored.join(",")
                );
                // A client that delivers is doing real work: its earlier
                // errors (a few unknown recipients) are forgiven.
                self.errors.forgive();
                Reply::new(250, "2.0.0", format!("Ok: queued as {qid}"))
            }
            Err(e) => {
                warn!("{summary} result=deferred reason=storage error={e}");
                Reply::new(451, "4.3.0", "Temporary storage failure, try again later")
            }
        }
    }

    /// `Received:` (RFC 5321 section 4.4), with the TLS details as Postfix writes them.
    fn received_header(&self, tx: &Transaction, helo: &Helo) -> String {
        let ip = match self.client_ip {
            IpAddr::V4(v4) => format!("[{v4}]"),
            IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
        };
        // RFC 3848 and RFC 6531 section 4.3 "with" protocol names.
        let mut protocol = match (helo.extended, tx.params.smtputf8) {
            (false, _) => "SMTP".to_string(),
            (true, false) => "ESMTP".to_string(),
            (true, true) => "UTF8SMTP".to_string(),
        };
        let mut tls_line = String::new();
        if let Some(tls) = &self.tls {
            protocol.push('S');
            tls_line = format!("\r\n\t(using {} with cipher {})", tls.version, tls.cipher);
        }
        let body = match tx.params.body {
            Body::EightBitMime => " (8BITMIME)",
            Body::SevenBit => "",
        };
        let name = if helo.name.is_empty() {
            "unknown"
        } else {
            &helo.name
        };
        format!(
            "Received: from {name} ({ip}){tls_line}\r\n\tby {} (Sealpost) with {protocol}{body} id {};\r\n\t{}\r\n",
            self.settings.hostname,
            tx.queue_id,
            timestamp::rfc5322(SystemTime::now())
        )
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
