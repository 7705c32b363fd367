//! The SMTP client the proxy speaks toward the real server, and the alerts
//! toward their relay, as I/O-free machines: [`Login`] (TLS always:
//! implicit on `proxy.implicit_tls_ports`, STARTTLS otherwise and refused if
//! not offered, unless a local relay's [`TlsPolicy::Off`]; then AUTH with
//! the credentials, or none for a relay that authenticates by address),
//! [`Link`] (one command at a time once logged in) and [`Outbound`] (DATA,
//! the message, the final dot). Each turns upstream [`Response`]s into the
//! next [`Request`] for the driver (the proxies') or the blocking link (the
//! alerts').

use std::io::{self, Read};
use std::time::Duration;

use crate::crypto::Password;
use crate::dot_stuffing::DotStuffer;
use crate::net::upstream::{Request, Response};
use crate::proxy::login_name::Target;
use crate::proxy::relay::Authorized;
pub use crate::proxy::upstream::Progress;
use crate::proxy::upstream::{
    Broken, Dialer, Lines, LoginStep, OpenError, bytes_of, connect, line, settle,
};
use crate::sasl;

/// The SMTP submission port used when a login names none.
pub const DEFAULT_PORT: u16 = 587;
/// Most lines of one upstream reply we read.
const MAX_REPLY_LINES: usize = 200;

/// An upstream reply: the code and enhanced code are passed on; the text is
/// only logged (never shown to the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpReply {
    /// Three-digit code.
    pub code: u16,
    /// Enhanced status code of the last line, if any.
    pub enhanced: Option<String>,
    /// All text lines joined, for the log.
    pub text: String,
}

impl UpReply {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

fn parse_reply(lines: &[Vec<u8>]) -> Result<UpReply, Broken> {
    let last = lines.last().ok_or_else(|| Broken("empty reply".into()))?;
    let code = std::str::from_utf8(last.get(..3).unwrap_or_default())
        .ok()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (200..600).contains(c))
        .ok_or_else(|| {
            Broken(format!(
                "not an SMTP reply: {:?}",
                String::from_utf8_lossy(last)
            ))
        })?;
    let rest = String::from_utf8_lossy(last.get(4..).unwrap_or_default()).into_owned();
    let enhanced = rest
        .split_whitespace()
        .next()
        .filter(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                && parts[0] == (code / 100).to_string()
        })
        .map(str::to_string);
    let text = lines
        .iter()
        .map(|l| String::from_utf8_lossy(l.get(4..).unwrap_or_default()).into_owned())
        .collect::<Vec<_>>()
        .join(" / ");
    Ok(UpReply {
        code,
        enhanced,
        text,
    })
}

/// A whole reply and the lines it came in.
type Complete = (UpReply, Vec<Vec<u8>>);

/// Collects the lines of one reply, however they arrive; bounded.
#[derive(Debug, Default)]
struct Replies {
    lines: Lines,
    pending: Vec<Vec<u8>>,
}

impl Replies {
    /// Feeds a response; the reply once it is complete, the raw lines with it.
    fn feed(&mut self, response: Response<'_>) -> Result<Option<Complete>, Broken> {
        self.lines.push(bytes_of(response)?);
        while let Some(line) = self.lines.next_line()? {
            let more = line.get(3) == Some(&b'-');
            self.pending.push(line);
            if !more {
                let lines = std::mem::take(&mut self.pending);
                return Ok(Some((parse_reply(&lines)?, lines)));
            }
            if self.pending.len() >= MAX_REPLY_LINES {
                return Err(Broken("the upstream reply has too many lines".into()));
            }
        }
        Ok(None)
    }
}

/// How an opening treats TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// TLS always: implicit on an implicit-TLS port, otherwise STARTTLS,
    /// and refused when the server does not offer it (the proxy; the
    /// alerts' smarthost).
    Required,
    /// No TLS at all: a local MTA on a loopback address (the alerts'
    /// `smarthost.tls: none`), whose certificate, if any, names nothing we
    /// could verify.
    Off,
}

/// Whom an opening logs in as; `None` sends without AUTH (an
/// IP-authenticated relay, a local MTA).
pub type Credentials<'a> = Option<(&'a str, &'a Password)>;

/// The SASL mechanisms the proxy speaks upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    /// RFC 4616
    Plain,
    /// The de-facto LOGIN mechanism.
    Login,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connecting,
    Greeting,
    Ehlo,
    StartTls,
    Handshake,
    AuthLoginUser,
    AuthLoginPassword,
    AuthResult,
}

/// Opening an authenticated upstream session.
pub struct Login {
    stage: Stage,
    /// Each exchange of the opening (`proxy.connect_timeout_secs`).
    timeout: Duration,
    /// Each exchange once logged in.
    io_timeout: Duration,
    replies: Replies,
    hostname: String,
    host: String,
    tls: bool,
    extensions: Vec<String>,
    upgrade: Result<Request, OpenError>,
    tls_policy: TlsPolicy,
}

/// An unexpected reply during the opening: 5xx refuses, anything else is temporary.
fn unexpected(reply: &UpReply, what: &str) -> OpenError {
    let why = format!("{what}: {} {}", reply.code, reply.text);
    if reply.code >= 500 {
        OpenError::Refused(why)
    } else {
        OpenError::Unavailable(why)
    }
}

impl Login {
    /// Starts the login of `authorized`; the first request connects.
    pub fn start(
        dialer: &Dialer,
        authorized: &Authorized,
    ) -> (Login, Progress<Result<Link, OpenError>>) {
        Login::open(dialer, &authorized.login.target, TlsPolicy::Required)
    }

    /// Starts an opening toward `target` (port 587 unless it names one);
    /// the first request connects. [`Login::step_with`] drives it.
    pub fn open(
        dialer: &Dialer,
        target: &Target,
        tls_policy: TlsPolicy,
    ) -> (Login, Progress<Result<Link, OpenError>>) {
        let login = Login {
            stage: Stage::Connecting,
            timeout: dialer.connect_timeout,
            io_timeout: dialer.io_timeout,
            replies: Replies::default(),
            hostname: dialer.hostname.clone(),
            host: target.host.clone(),
            tls: false,
            extensions: Vec::new(),
            upgrade: dialer.upgrade(&target.host),
            tls_policy,
        };
        (login, connect(dialer, target, DEFAULT_PORT))
    }

    /// The next step after `response`; `authorized` gives the credentials.
    pub fn on(
        &mut self,
        response: Response<'_>,
        authorized: &Authorized,
    ) -> Progress<Result<Link, OpenError>> {
        let credentials = Some((authorized.login.remote_user.as_str(), authorized.password()));
        self.step_with(response, credentials)
    }

    /// The next step after `response`, logging in with `credentials`.
    pub fn step_with(
        &mut self,
        response: Response<'_>,
        credentials: Credentials<'_>,
    ) -> Progress<Result<Link, OpenError>> {
        settle(self.step(response, credentials))
    }

    fn step(&mut self, response: Response<'_>, credentials: Credentials<'_>) -> LoginStep<Link> {
        match (self.stage, response) {
            (_, Response::Failed(e)) => Err(e.into()),
            (Stage::Connecting, Response::Connected { tls, .. }) => {
                self.tls = tls.is_some();
                self.stage = Stage::Greeting;
                Ok(Progress::Io(Request::Read(self.timeout)))
            }
            (Stage::Handshake, Response::TlsStarted(_)) => {
                self.tls = true;
                self.ehlo()
            }
            (_, response) => match self.replies.feed(response)? {
                None => Ok(Progress::Io(Request::Read(self.timeout))),
                Some((reply, lines)) => self.answer(reply, lines, credentials),
            },
        }
    }

    fn ehlo(&mut self) -> LoginStep<Link> {
        let ehlo = format!("EHLO {}", self.hostname);
        self.send(Stage::Ehlo, &ehlo)
    }

    fn send(&mut self, stage: Stage, text: &str) -> LoginStep<Link> {
        self.stage = stage;
        Ok(Progress::Io(Request::Exchange(line(text)?, self.timeout)))
    }

    fn answer(
        &mut self,
        reply: UpReply,
        lines: Vec<Vec<u8>>,
        credentials: Credentials<'_>,
    ) -> LoginStep<Link> {
        let expect = |code: u16, what: &str| match reply.code == code {
            true => Ok(()),
            false => Err(unexpected(&reply, what)),
        };
        let (user, password) = match credentials {
            Some((user, password)) => (user, Some(password)),
            None => ("", None),
        };
        let no_password = || OpenError::Unavailable("AUTH without credentials".into());
        match self.stage {
            Stage::Greeting => {
                expect(220, "greeting")?;
                self.ehlo()
            }
            Stage::Ehlo => {
                expect(250, "EHLO")?;
                self.after_ehlo(&lines, credentials)
            }
            Stage::StartTls => {
                expect(220, "STARTTLS")?;
                // RFC 3207 section 4.2: nothing from before the handshake counts.
                self.replies = Replies::default();
                self.stage = Stage::Handshake;
                std::mem::replace(
                    &mut self.upgrade,
                    Err(OpenError::Unavailable("upgraded once already".into())),
                )
                .map(Progress::Io)
            }
            Stage::AuthLoginUser => {
                expect(334, "AUTH LOGIN")?;
                self.send(Stage::AuthLoginPassword, &sasl::encode_login(user))
            }
            Stage::AuthLoginPassword => {
                expect(334, "AUTH LOGIN user")?;
                let password = password.ok_or_else(no_password)?;
                self.send(Stage::AuthResult, &sasl::encode_login(password.expose()))
            }
            Stage::AuthResult => match reply.code {
                235 => Ok(Progress::Done(Ok(self.link()))),
                c if c >= 500 => Err(OpenError::AuthFailed(format!(
                    "{} {}",
                    reply.code, reply.text
                ))),
                _ => Err(OpenError::Unavailable(format!(
                    "AUTH: {} {}",
                    reply.code, reply.text
                ))),
            },
            Stage::Connecting | Stage::Handshake => Err(OpenError::Unavailable(format!(
                "unexpected reply {} {}",
                reply.code, reply.text
            ))),
        }
    }

    /// The session, once opened.
    fn link(&mut self) -> Link {
        Link {
            extensions: std::mem::take(&mut self.extensions),
            replies: std::mem::take(&mut self.replies),
            timeout: self.io_timeout,
        }
    }

    /// EHLO answered: upgrade first if TLS is not on (unless the policy is
    /// off), then authenticate, unless there are no credentials.
    fn after_ehlo(&mut self, lines: &[Vec<u8>], credentials: Credentials<'_>) -> LoginStep<Link> {
        // The first line is the greeting, not a keyword.
        self.extensions = lines
            .iter()
            .skip(1)
            .map(|l| String::from_utf8_lossy(l.get(4..).unwrap_or_default()).to_ascii_uppercase())
            .collect();
        if !self.tls && self.tls_policy == TlsPolicy::Required {
            // Never send credentials in plaintext: no STARTTLS, no login.
            if !self.extensions.iter().any(|e| e == "STARTTLS") {
                return Err(OpenError::Refused(format!(
                    "{} offers no STARTTLS",
                    self.host
                )));
            }
            return self.send(Stage::StartTls, "STARTTLS");
        }
        let Some((user, password)) = credentials else {
            return Ok(Progress::Done(Ok(self.link())));
        };
        if !self.tls {
            return Err(OpenError::Refused(
                "credentials are never sent without TLS".into(),
            ));
        }
        match self.mechanism()? {
            Mechanism::Plain => {
                let plain = sasl::encode_plain(user, password);
                self.send(Stage::AuthResult, &format!("AUTH PLAIN {}", *plain))
            }
            Mechanism::Login => self.send(Stage::AuthLoginUser, "AUTH LOGIN"),
        }
    }

    fn mechanism(&self) -> Result<Mechanism, OpenError> {
        let offered: Vec<&str> = self
            .extensions
            .iter()
            .filter_map(|e| e.strip_prefix("AUTH ").or_else(|| e.strip_prefix("AUTH=")))
            .flat_map(str::split_whitespace)
            .collect();
        if offered.contains(&"PLAIN") {
            Ok(Mechanism::Plain)
        } else if offered.contains(&"LOGIN") {
            Ok(Mechanism::Login)
        } else {
            Err(OpenError::Refused(format!(
                "{} offers neither AUTH PLAIN nor LOGIN",
                self.host
            )))
        }
    }
}

/// An authenticated upstream session, one command at a time.
#[derive(Debug)]
pub struct Link {
    extensions: Vec<String>,
    replies: Replies,
    /// Each exchange (`limits.command_timeout_secs`).
    timeout: Duration,
}

impl Link {
    /// Whether the upstream announced an EHLO keyword (`SIZE`, `8BITMIME`, …).
    pub fn supports(&self, keyword: &str) -> bool {
        self.extensions
            .iter()
            .any(|e| e.split_whitespace().next() == Some(keyword))
    }

    /// The request that sends one command line and reads its reply.
    pub fn command(&self, text: &str) -> Result<Request, Broken> {
        Ok(Request::Exchange(line(text)?, self.timeout))
    }

    /// Takes the response to a command: the reply, once it is complete.
    pub fn reply(&mut self, response: Response<'_>) -> Result<Progress<UpReply>, Broken> {
        Ok(match self.replies.feed(response)? {
            Some((reply, _)) => Progress::Done(reply),
            None => Progress::Io(Request::Read(self.timeout)),
        })
    }
}

/// How a message transfer ended.
#[derive(Debug)]
pub enum SendOutcome {
    /// The upstream's final reply (or its refusal of DATA).
    Reply(UpReply),
    /// The connection broke before the final dot: the upstream discards it.
    LostBeforeEnd(String),
    /// The connection broke after the final dot: the message may have been accepted.
    LostAfterEnd(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    /// DATA sent, waiting for 354.
    Go,
    /// Sending the message.
    Body,
    /// The final dot went out; waiting for the reply.
    Final,
}

/// DATA, the message dot-stuffed with CRLF line ends, the final dot, and the
/// final reply. The message is CRLF text (the proxy's data reader made sure).
pub struct Outbound {
    timeout: Duration,
    message: Box<dyn Read>,
    stuffer: DotStuffer,
    buf: Vec<u8>,
    transfer: Transfer,
}

impl Outbound {
    /// Starts sending `message` over `link`: the first request sends DATA.
    pub fn start(link: &Link, message: Box<dyn Read>) -> (Outbound, Request) {
        let outbound = Outbound {
            timeout: link.timeout,
            message,
            stuffer: DotStuffer::whole(),
            buf: vec![0u8; 64 * 1024],
            transfer: Transfer::Go,
        };
        let data = Request::Exchange(b"DATA\r\n".to_vec(), link.timeout);
        (outbound, data)
    }

    /// The next step after `response`.
    pub fn on(&mut self, link: &mut Link, response: Response<'_>) -> Progress<SendOutcome> {
        let lost = |e: Broken, transfer| match transfer {
            Transfer::Final => SendOutcome::LostAfterEnd(e.0),
            _ => SendOutcome::LostBeforeEnd(e.0),
        };
        match (self.transfer, response) {
            (Transfer::Body, Response::Sent) => match self.next_piece() {
                Ok(request) => Progress::Io(request),
                Err(e) => {
                    Progress::Done(SendOutcome::LostBeforeEnd(format!("reading the copy: {e}")))
                }
            },
            (transfer, response) => match link.reply(response) {
                Err(e) => Progress::Done(lost(e, transfer)),
                Ok(Progress::Io(request)) => Progress::Io(request),
                Ok(Progress::Done(reply)) if transfer == Transfer::Go && reply.code == 354 => {
                    self.transfer = Transfer::Body;
                    match self.next_piece() {
                        Ok(request) => Progress::Io(request),
                        Err(e) => Progress::Done(SendOutcome::LostBeforeEnd(format!(
                            "reading the copy: {e}"
                        ))),
                    }
                }
                Ok(Progress::Done(reply)) => Progress::Done(SendOutcome::Reply(reply)),
            },
        }
    }

    /// The next stuffed piece of the message, or the final dot and a read.
    fn next_piece(&mut self) -> io::Result<Request> {
        let n = loop {
            match self.message.read(&mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        let mut out = Vec::with_capacity(n + n / 64 + 8);
        if n > 0 {
            self.stuffer.push(&self.buf[..n], &mut out);
            return Ok(Request::Send(out, self.timeout));
        }
        self.stuffer.finish(&mut out);
        self.transfer = Transfer::Final;
        Ok(Request::Exchange(out, self.timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::line::tests::split_at_cuts;
    use proptest::prelude::*;

    /// The replies (or the break) `Replies` makes of `pieces`.
    fn replies_of(pieces: &[Vec<u8>]) -> (Vec<UpReply>, bool) {
        let mut replies = Replies::default();
        let mut out = Vec::new();
        for piece in pieces {
            let mut response = Response::Data(piece);
            loop {
                match replies.feed(response) {
                    Ok(Some((reply, _))) => out.push(reply),
                    Ok(None) => break,
                    Err(_) => return (out, true),
                }
                // More complete replies may be buffered already.
                response = Response::Data(&[]);
            }
        }
        (out, false)
    }

    /// Reply-shaped lines: codes, continuations, stray bytes.
    fn reply_wire() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            Just(b"250-mx.example\r\n".to_vec()),
            Just(b"250 2.1.0 Ok\r\n".to_vec()),
            Just(b"354 go\n".to_vec()),
            Just(b"550 5.7.1 no\r\n".to_vec()),
            Just(b"xyz\r\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..40),
        ];
        prop::collection::vec(line, 0..20).prop_map(|l| l.concat())
    }

    proptest! {
        #[test]
        fn upstream_replies_are_the_same_at_any_split(
            input in reply_wire(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let whole = replies_of(std::slice::from_ref(&input));
            let split = replies_of(&split_at_cuts(&input, &cuts));
            prop_assert_eq!(whole, split);
        }
    }

    fn reply(lines: &[&str]) -> UpReply {
        parse_reply(
            &lines
                .iter()
                .map(|l| l.as_bytes().to_vec())
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn replies_give_their_code_and_enhanced_code() {
        let r = reply(&["250-first", "250 2.1.5 Recipient ok"]);
        assert_eq!((r.code, r.enhanced.as_deref()), (250, Some("2.1.5")));
        let r = reply(&["550 No such user here"]);
        assert_eq!((r.code, r.enhanced), (550, None));
        let r = reply(&["550 2.1.5 mismatched class"]);
        assert_eq!(
            r.enhanced, None,
            "an enhanced code of another class is ignored"
        );
    }

    #[test]
    fn garbage_is_not_a_reply() {
        assert!(parse_reply(&[b"hello".to_vec()]).is_err());
        assert!(parse_reply(&[b"999 x".to_vec()]).is_err());
        assert!(parse_reply(&[]).is_err());
    }

    #[test]
    fn a_reply_is_whole_however_its_lines_arrive() {
        let mut replies = Replies::default();
        let pieces: [&[u8]; 4] = [
            b"250-mail.exa",
            b"mple\r\n250-SIZE 10\r",
            b"\n250 8BITMI",
            b"ME\r\n",
        ];
        for (i, piece) in pieces.iter().enumerate() {
            let got = replies.feed(Response::Data(piece)).unwrap();
            assert_eq!(got.is_some(), i == 3, "piece {i}");
            if let Some((reply, lines)) = got {
                assert_eq!(reply.code, 250);
                assert_eq!(lines.len(), 3);
            }
        }
    }

    #[test]
    fn an_endless_multi_line_reply_breaks_the_link() {
        let mut replies = Replies::default();
        let flood = b"250-more\r\n".repeat(MAX_REPLY_LINES + 1);
        assert!(replies.feed(Response::Data(&flood)).is_err());
    }
}
