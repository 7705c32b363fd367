//! The POP3 client the proxy speaks toward the real server, as I/O-free
//! machines: [`Login`] (TLS always: implicit on the
//! `proxy.implicit_tls_ports`, STLS otherwise and refused if not offered;
//! then USER/PASS, or AUTH PLAIN when USER is not offered) and [`Link`]
//! (status lines and multi-line bodies once logged in).

use std::time::Duration;

use crate::dot_stuffing::DataReceiver;
use crate::net::upstream::{Request, Response};
use crate::proxy::relay::Authorized;
use crate::proxy::upstream::{
    Broken, Dialer, Lines, LoginStep, OpenError, bytes_of, connect, line, settle,
};
use crate::sasl;

pub use crate::proxy::upstream::Progress;

/// The POP3 port used when a login names none.
pub const DEFAULT_PORT: u16 = 110;
/// Most lines of a CAPA answer we read.
const MAX_CAPA_LINES: usize = 200;

/// A status line: `+OK …` or `-ERR …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `+OK`.
    pub ok: bool,
    /// What follows the indicator (for the log; the data of STAT, LIST n
    /// and UIDL n; the response code of RFC 2449).
    pub text: String,
}

impl Status {
    fn parse(line: &[u8]) -> Result<Status, Broken> {
        let text = String::from_utf8_lossy(line);
        let (ok, rest) = if let Some(rest) = text.strip_prefix("+OK") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("-ERR") {
            (false, rest)
        } else {
            return Err(Broken(format!("not a POP3 status line: {text:?}")));
        };
        Ok(Status {
            ok,
            text: rest.trim().to_string(),
        })
    }

    /// The RFC 2449 response code at the start of the text (`SYS/TEMP`, `IN-USE`, …).
    pub fn code(&self) -> Option<&str> {
        let inner = self.text.strip_prefix('[')?;
        let (code, _) = inner.split_once(']')?;
        code.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'-')
            .then_some(code)
    }
}

/// A login refused upstream: the response codes of RFC 2449 and RFC 3206 tell
/// a temporary refusal from a bad login.
fn refused(status: &Status, what: &str) -> OpenError {
    let why = format!("{what}: -ERR {}", status.text);
    match status.code() {
        Some("SYS/TEMP" | "IN-USE" | "LOGIN-DELAY") => OpenError::Unavailable(why),
        _ => OpenError::AuthFailed(why),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connecting,
    Greeting,
    Capa,
    CapaList,
    Stls,
    Handshake,
    User,
    Pass,
    AuthPlain,
}

/// Opening an authenticated upstream session.
pub struct Login {
    stage: Stage,
    /// Each exchange of the opening (`proxy.connect_timeout_secs`).
    timeout: Duration,
    /// Each exchange once logged in.
    io_timeout: Duration,
    lines: Lines,
    tls: bool,
    host: String,
    capabilities: Vec<String>,
    upgrade: Result<Request, OpenError>,
}

type Step = LoginStep<Link>;

impl Login {
    /// Starts the login of `authorized`; the first request connects.
    pub fn start(
        dialer: &Dialer,
        authorized: &Authorized,
    ) -> (Login, Progress<Result<Link, OpenError>>) {
        let target = &authorized.login.target;
        let login = Login {
            stage: Stage::Connecting,
            timeout: dialer.connect_timeout,
            io_timeout: dialer.io_timeout,
            lines: Lines::default(),
            tls: false,
            host: target.host.clone(),
            capabilities: Vec::new(),
            upgrade: dialer.upgrade(&target.host),
        };
        (login, connect(dialer, target, DEFAULT_PORT))
    }

    /// The next step after `response`; `authorized` gives the credentials.
    pub fn on(
        &mut self,
        response: Response<'_>,
        authorized: &Authorized,
    ) -> Progress<Result<Link, OpenError>> {
        settle(self.step(response, authorized))
    }

    fn step(&mut self, response: Response<'_>, authorized: &Authorized) -> Step {
        match (self.stage, response) {
            (_, Response::Failed(e)) => Err(e.into()),
            (Stage::Connecting, Response::Connected { tls, .. }) => {
                self.tls = tls.is_some();
                self.stage = Stage::Greeting;
                Ok(Progress::Io(Request::Read(self.timeout)))
            }
            (Stage::Handshake, Response::TlsStarted(_)) => {
                self.tls = true;
                self.send(Stage::Capa, "CAPA")
            }
            (_, response) => {
                self.lines.push(bytes_of(response)?);
                while let Some(line) = self.lines.next_line()? {
                    if let Some(progress) = self.answer(&line, authorized)? {
                        return Ok(progress);
                    }
                }
                Ok(Progress::Io(Request::Read(self.timeout)))
            }
        }
    }

    fn send(&mut self, stage: Stage, text: &str) -> Step {
        self.stage = stage;
        Ok(Progress::Io(Request::Exchange(line(text)?, self.timeout)))
    }

    /// One line from the upstream; `Some` when it settles the next step.
    fn answer(
        &mut self,
        line: &[u8],
        authorized: &Authorized,
    ) -> Result<Option<Progress<Result<Link, OpenError>>>, OpenError> {
        if self.stage == Stage::CapaList {
            if line != b"." {
                if self.capabilities.len() >= MAX_CAPA_LINES {
                    return Err(OpenError::Unavailable("CAPA answer too long".into()));
                }
                self.capabilities
                    .push(String::from_utf8_lossy(line).to_ascii_uppercase());
                return Ok(None);
            }
            return self.capabilities_known(authorized).map(Some);
        }
        let status = Status::parse(line)?;
        let progress = match self.stage {
            Stage::Greeting if status.ok => self.send(Stage::Capa, "CAPA")?,
            Stage::Greeting => {
                return Err(OpenError::Unavailable(format!(
                    "greeting: -ERR {}",
                    status.text
                )));
            }
            Stage::Capa if status.ok => {
                self.capabilities.clear();
                self.stage = Stage::CapaList;
                return Ok(None);
            }
            // No CAPA (RFC 1939 servers): no STLS either.
            Stage::Capa => {
                self.capabilities.clear();
                self.capabilities_known(authorized)?
            }
            Stage::Stls if status.ok => {
                // RFC 2595 section 4: nothing from before the handshake counts.
                self.lines.clear();
                self.stage = Stage::Handshake;
                Progress::Io(std::mem::replace(
                    &mut self.upgrade,
                    Err(OpenError::Unavailable("upgraded once already".into())),
                )?)
            }
            Stage::Stls => {
                return Err(OpenError::Refused(format!(
                    "STLS refused: -ERR {}",
                    status.text
                )));
            }
            Stage::User if status.ok => {
                let pass =
                    zeroize::Zeroizing::new(format!("PASS {}", authorized.password().expose()));
                self.send(Stage::Pass, &pass)?
            }
            Stage::User => return Err(refused(&status, "USER")),
            Stage::Pass | Stage::AuthPlain if status.ok => Progress::Done(Ok(Link {
                lines: std::mem::take(&mut self.lines),
                timeout: self.io_timeout,
            })),
            Stage::Pass => return Err(refused(&status, "PASS")),
            Stage::AuthPlain => return Err(refused(&status, "AUTH PLAIN")),
            Stage::Connecting | Stage::Handshake | Stage::CapaList => {
                return Err(OpenError::Unavailable(format!(
                    "unexpected {:?} from {}",
                    String::from_utf8_lossy(line),
                    self.host
                )));
            }
        };
        Ok(Some(progress))
    }

    /// After CAPA: upgrade first if TLS is not on, then log in.
    fn capabilities_known(&mut self, authorized: &Authorized) -> Step {
        let caps = &self.capabilities;
        if !self.tls {
            // Never send credentials in plaintext: no STLS, no login.
            if !caps.iter().any(|c| c == "STLS") {
                return Err(OpenError::Refused(format!("{} offers no STLS", self.host)));
            }
            return self.send(Stage::Stls, "STLS");
        }
        let user = &authorized.login.remote_user;
        let sasl_plain_only = !caps.iter().any(|c| c == "USER")
            && caps
                .iter()
                .any(|c| c.starts_with("SASL ") && c.split_whitespace().any(|m| m == "PLAIN"));
        if sasl_plain_only {
            let plain = sasl::encode_plain(user, authorized.password());
            self.send(Stage::AuthPlain, &format!("AUTH PLAIN {}", *plain))
        } else {
            self.send(Stage::User, &format!("USER {user}"))
        }
    }
}

/// An authenticated upstream session: one command at a time, its status
/// line, and for multi-line answers the body.
#[derive(Debug)]
pub struct Link {
    lines: Lines,
    /// Each exchange (`limits.command_timeout_secs`).
    timeout: Duration,
}

impl Link {
    /// The request that sends one command and reads its answer.
    pub fn command(&self, text: &str) -> Result<Request, Broken> {
        Ok(Request::Exchange(line(text)?, self.timeout))
    }

    /// The request that reads more of an answer.
    pub fn read(&self) -> Request {
        Request::Read(self.timeout)
    }

    /// Takes the response to a command: the status line, once complete.
    pub fn status(&mut self, response: Response<'_>) -> Result<Progress<Status>, Broken> {
        self.lines.push(bytes_of(response)?);
        Ok(match self.lines.next_line()? {
            Some(line) => Progress::Done(Status::parse(&line)?),
            None => Progress::Io(self.read()),
        })
    }

    /// Reads body bytes into `receiver` (the strict reader: only CRLF . CRLF
    /// ends it), appending the message to `out`: first what is buffered,
    /// then `response` (if any). `Ok(true)` at the end of the body; bytes
    /// after it stay buffered.
    pub fn body(
        &mut self,
        response: Option<Response<'_>>,
        receiver: &mut DataReceiver,
        out: &mut Vec<u8>,
    ) -> Result<bool, Broken> {
        let mut bytes = self.lines.take();
        if let Some(response) = response {
            bytes.extend_from_slice(bytes_of(response)?);
        }
        let mut rest = bytes.as_slice();
        let end = receiver.feed(&mut rest, out);
        if end {
            self.lines.unread(rest);
        }
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::line::tests::split_at_cuts;
    use proptest::prelude::*;

    /// The status line and the body a `Link` reads from `pieces`, and
    /// what stays buffered after the body's end.
    fn answer_of(pieces: &[Vec<u8>]) -> Result<(bool, Vec<u8>, bool, Vec<u8>), Broken> {
        let mut link = Link {
            lines: Lines::default(),
            timeout: Duration::from_secs(1),
        };
        let mut pieces = pieces.iter();
        let mut next = || Response::Data(pieces.next().map_or(&[][..], |p| p.as_slice()));
        let ok = loop {
            if let Progress::Done(status) = link.status(next())? {
                break status.ok;
            }
        };
        let (mut receiver, mut body) = (DataReceiver::normalizing(), Vec::new());
        let mut end = link.body(None, &mut receiver, &mut body)?;
        for _ in 0..64 {
            if end {
                break;
            }
            end = link.body(Some(next()), &mut receiver, &mut body)?;
        }
        for rest in pieces {
            link.lines.push(rest);
        }
        Ok((ok, body, end, link.lines.take()))
    }

    proptest! {
        #[test]
        fn a_status_line_and_its_body_read_the_same_at_any_split(
            body in crate::net::line::tests::wire(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut input = b"+OK 12 octets\r\n".to_vec();
            // A well-formed body: CRLF line ends (a bare one never ends the
            // answer: the strict reader, on purpose).
            let body: Vec<u8> = body
                .into_iter()
                .filter(|&b| b != b'\r')
                .flat_map(|b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] })
                .collect();
            let mut stuffer = crate::dot_stuffing::DotStuffer::whole();
            stuffer.push(&body, &mut input);
            stuffer.finish(&mut input);
            input.extend_from_slice(b"NEXT");
            let whole = answer_of(std::slice::from_ref(&input));
            let split = answer_of(&split_at_cuts(&input, &cuts));
            prop_assert_eq!(&whole, &split);
            let (ok, _, end, rest) = whole.expect("a well-formed answer");
            prop_assert!(ok && end);
            prop_assert_eq!(rest, b"NEXT");
        }
    }

    fn status(text: &str) -> Status {
        Status::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn response_codes_tell_a_temporary_refusal_from_a_bad_login() {
        for line in [
            "-ERR [SYS/TEMP] try later",
            "-ERR [IN-USE] locked",
            "-ERR [LOGIN-DELAY] wait",
        ] {
            assert!(
                matches!(refused(&status(line), "PASS"), OpenError::Unavailable(_)),
                "{line}"
            );
        }
        for line in ["-ERR [AUTH] Authentication failed.", "-ERR bad password"] {
            assert!(
                matches!(refused(&status(line), "PASS"), OpenError::AuthFailed(_)),
                "{line}"
            );
        }
    }

    #[test]
    fn status_lines_and_their_codes() {
        assert_eq!(
            status("+OK 2 320"),
            Status {
                ok: true,
                text: "2 320".into()
            }
        );
        assert_eq!(status("-ERR [IN-USE] busy").code(), Some("IN-USE"));
        assert_eq!(status("-ERR no code").code(), None);
        assert!(Status::parse(b"HELLO").is_err());
    }

    #[test]
    fn a_body_ends_at_the_dot_line_and_what_follows_stays() {
        let mut link = Link {
            lines: Lines::default(),
            timeout: Duration::from_secs(1),
        };
        link.lines.push(b"+OK\r\nline one\r\n.");
        let Ok(Progress::Done(s)) = link.status(Response::Data(b"")) else {
            panic!()
        };
        assert!(s.ok);
        let mut receiver = DataReceiver::normalizing();
        let mut out = Vec::new();
        assert_eq!(link.body(None, &mut receiver, &mut out), Ok(false));
        assert_eq!(
            link.body(
                Some(Response::Data(b"\r\n+OK next\r\n")),
                &mut receiver,
                &mut out
            ),
            Ok(true)
        );
        assert_eq!(out, b"line one\r\n");
        let Ok(Progress::Done(next)) = link.status(Response::Data(b"")) else {
            panic!()
        };
        assert_eq!(next.text, "next");
    }
}
