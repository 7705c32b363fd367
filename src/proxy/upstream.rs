//! What both upstream clients share, free of I/O: how to reach an upstream
//! (the [`Dialer`]: target policy, verified TLS, timeouts), the bounded
//! reading of the lines it sends ([`Lines`]), the checked writing of the
//! lines we send ([`line`]), and the ways an upstream session can fail.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use super::login_name::Target;
use super::target::{TargetError, TargetPolicy};
use crate::net::line::{CommandQueue, Line};
use crate::net::tls::{TlsError, load_certs, provider};
use crate::net::upstream::{Dial, DialError, Request, Response, TlsClient};

/// Longest line an upstream may send, its line end included.
pub const MAX_LINE: usize = 16 * 1024;

/// The TLS client configuration for upstream servers.
#[derive(Clone)]
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
}

impl UpstreamTls {
    /// Trusts the Mozilla roots of `webpki-roots` plus the CAs in `extra_ca`.
    pub fn new(extra_ca: Option<&Path>) -> Result<UpstreamTls, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = extra_ca {
            for cert in load_certs(path)? {
                roots.add(cert).map_err(|e| {
                    TlsError(format!("proxy.extra_ca_file {}: {e}", path.display()))
                })?;
            }
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS client setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(UpstreamTls {
            config: Arc::new(config),
        })
    }
}

/// Why an upstream session could not be opened, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Policy, TLS or capability refusal (a permanent authentication failure).
    Refused(String),
    /// The upstream refused the credentials.
    AuthFailed(String),
    /// Network or temporary upstream trouble.
    Unavailable(String),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Refused(why) | OpenError::Unavailable(why) => f.write_str(why),
            OpenError::AuthFailed(why) => write!(f, "the upstream refused the credentials: {why}"),
        }
    }
}

/// An upstream connection that cannot go on (it closed, it broke, it sent
/// something we cannot work with). Once logged in, the session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken(pub String);

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Broken> for OpenError {
    fn from(e: Broken) -> OpenError {
        OpenError::Unavailable(e.0)
    }
}

impl From<DialError> for OpenError {
    fn from(e: DialError) -> OpenError {
        match e {
            DialError::Refused(why) => OpenError::Refused(why),
            DialError::Unreachable(why) => {
                OpenError::Unavailable(format!("upstream unreachable: {why}"))
            }
        }
    }
}

/// What a response means when bytes were expected: the bytes, or why the
/// connection is broken.
pub fn bytes_of<'a>(response: Response<'a>) -> Result<&'a [u8], Broken> {
    match response {
        Response::Data(bytes) => Ok(bytes),
        Response::Closed => Err(Broken("the upstream closed the connection".into())),
        Response::Failed(e) => Err(Broken(e.to_string())),
        other => Err(Broken(format!("unexpected {other:?}"))),
    }
}

/// One step of an upstream machine: a request for the driver, or the end.
pub enum Progress<T> {
    /// Perform this and give the machine the response.
    Io(Request),
    /// Finished.
    Done(T),
}

/// How a login machine goes on: its next step, or the failure that ends it.
pub type LoginStep<T> = Result<Progress<Result<T, OpenError>>, OpenError>;

/// The end of a login machine's step: a failure ends the login.
pub fn settle<T>(step: LoginStep<T>) -> Progress<Result<T, OpenError>> {
    step.unwrap_or_else(|e| Progress::Done(Err(e)))
}

/// The first step of a login to `target`: connecting.
pub fn connect<T>(
    dialer: &Dialer,
    target: &Target,
    default_port: u16,
) -> Progress<Result<T, OpenError>> {
    match dialer.dial(target, default_port) {
        Ok(dial) => Progress::Io(Request::Connect(dial)),
        Err(e) => Progress::Done(Err(e)),
    }
}

/// Everything needed to reach upstream servers, shared by both proxies.
#[derive(Clone)]
pub struct Dialer {
    /// Allow-list and address policy.
    pub policy: TargetPolicy,
    /// TLS client configuration.
    pub tls: UpstreamTls,
    /// Our name (SMTP EHLO).
    pub hostname: String,
    /// For connecting, each TLS handshake, and each exchange until logged in.
    pub connect_timeout: Duration,
    /// For each exchange once logged in (`limits.command_timeout_secs`).
    pub io_timeout: Duration,
    /// Ports spoken with implicit TLS (`proxy.implicit_tls_ports`).
    pub implicit_tls_ports: Vec<u16>,
}

impl Dialer {
    /// How to reach `target`: the policy check and name lookup (run by the
    /// driver, which then connects only to the checked addresses) and, on an
    /// implicit-TLS port, the verified handshake.
    pub fn dial(&self, target: &Target, default_port: u16) -> Result<Dial, OpenError> {
        let port = target.port.unwrap_or(default_port);
        let tls = match self.implicit_tls_ports.contains(&port) {
            true => Some(self.tls_client(&target.host)?),
            false => None,
        };
        let (policy, target) = (self.policy.clone(), target.clone());
        Ok(Dial {
            resolve: Box::new(move || {
                policy.resolve(&target, port).map_err(|e| match e {
                    TargetError::Unresolvable(_) => DialError::Unreachable(e.to_string()),
                    _ => DialError::Refused(e.to_string()),
                })
            }),
            timeout: self.connect_timeout,
            tls,
        })
    }

    /// The upgrade after STARTTLS/STLS, verifying the certificate for `host`.
    pub fn upgrade(&self, host: &str) -> Result<Request, OpenError> {
        Ok(Request::StartTls(
            self.tls_client(host)?,
            self.connect_timeout,
        ))
    }

    fn tls_client(&self, host: &str) -> Result<TlsClient, OpenError> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            OpenError::Refused(format!(
                "{host:?} is not a name a certificate can be checked for"
            ))
        })?;
        Ok(TlsClient {
            config: Arc::clone(&self.tls.config),
            name,
        })
    }
}

/// One protocol line and its CRLF. A line holding a control character is
/// refused before anything is written: it could end the line early and
/// smuggle a second command (the callers build lines from checked input;
/// this is the last line of defence).
pub fn line(text: &str) -> Result<Vec<u8>, Broken> {
    if crate::auth::has_control_characters(text) {
        return Err(Broken(
            "refused to send a line holding a control character".into(),
        ));
    }
    let mut bytes = Vec::with_capacity(text.len() + 2);
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    Ok(bytes)
}

/// The bytes an upstream sent and that are not used yet, handed out a line
/// at a time by the same [`CommandQueue`] (and its [`LineAssembler`]) that
/// reads clients: the cap is enforced while the bytes arrive, so a line
/// longer than [`MAX_LINE`] breaks the connection as soon as it is too
/// long, whether or not its line end came with it.
///
/// [`LineAssembler`]: crate::net::line::LineAssembler
#[derive(Debug)]
pub struct Lines {
    queue: CommandQueue,
}

impl Default for Lines {
    fn default() -> Lines {
        Lines {
            queue: CommandQueue::new(MAX_LINE),
        }
    }
}

fn over_long() -> Broken {
    Broken("the upstream sent an over-long line".into())
}

impl Lines {
    /// Adds what was read.
    pub fn push(&mut self, bytes: &[u8]) {
        self.queue.push(bytes);
    }

    /// The next complete line without its line end (CRLF or LF), if there is one.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, Broken> {
        match self.queue.next_line() {
            Some(Line::Complete(line)) => Ok(Some(line)),
            Some(Line::TooLong) => Err(over_long()),
            None if self.queue.over_long() => Err(over_long()),
            None => Ok(None),
        }
    }

    /// Everything buffered, for a reader that takes raw bytes (a message).
    pub fn take(&mut self) -> Vec<u8> {
        self.queue.take_all()
    }

    /// Puts back bytes a raw reader did not use.
    pub fn unread(&mut self, bytes: &[u8]) {
        self.queue.unread(bytes);
    }

    /// Forgets everything (what came before a TLS upgrade, RFC 3207 section 4.2).
    pub fn clear(&mut self) {
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_over_long_line_is_refused_even_with_its_lf_in_the_same_read() {
        let mut long = vec![b'a'; MAX_LINE + 10];
        long.extend_from_slice(b"\r\n");
        for piece in [1, 7, 512, long.len()] {
            let mut lines = Lines::default();
            let mut refused = false;
            for chunk in long.chunks(piece) {
                lines.push(chunk);
                if lines.next_line().is_err() {
                    refused = true;
                    break;
                }
            }
            assert!(refused, "piece {piece}");
        }
        let mut lines = Lines::default();
        let mut fits = vec![b'a'; MAX_LINE - 2];
        fits.extend_from_slice(b"\r\n");
        lines.push(&fits);
        assert_eq!(lines.next_line().unwrap().unwrap().len(), MAX_LINE - 2);
    }

    #[test]
    fn lines_come_out_whole_however_the_bytes_arrive() {
        let mut lines = Lines::default();
        lines.push(b"+OK hel");
        assert_eq!(lines.next_line(), Ok(None));
        lines.push(b"lo\r\n250-a\n250 b\r\nrest");
        assert_eq!(lines.next_line(), Ok(Some(b"+OK hello".to_vec())));
        assert_eq!(lines.next_line(), Ok(Some(b"250-a".to_vec())));
        assert_eq!(lines.next_line(), Ok(Some(b"250 b".to_vec())));
        assert_eq!(lines.next_line(), Ok(None));
        assert_eq!(lines.take(), b"rest");
    }

    #[test]
    fn an_endless_line_breaks_the_connection() {
        let mut lines = Lines::default();
        lines.push(&vec![b'x'; MAX_LINE + 1]);
        assert!(lines.next_line().is_err());
    }

    use crate::net::line::tests::{split_at_cuts, wire};
    use proptest::prelude::*;

    /// What `Lines` makes of `pieces`: each line, then `Err` if it broke.
    fn lines_of(pieces: &[Vec<u8>]) -> Vec<Result<Vec<u8>, Broken>> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for piece in pieces {
            lines.push(piece);
            loop {
                match lines.next_line() {
                    Ok(Some(line)) => out.push(Ok(line)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e));
                        return out;
                    }
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn upstream_lines_are_the_same_at_any_split_and_never_over_the_cap(
            input in wire(),
            long in 0usize..3,
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            // Now and then a line around the cap.
            let mut input = input;
            if long > 0 {
                input.splice(0..0, vec![b'a'; MAX_LINE - 3 + long * 2]);
            }
            let whole = lines_of(std::slice::from_ref(&input));
            let split = lines_of(&split_at_cuts(&input, &cuts));
            // Split reading may notice an endless line sooner, never later,
            // and never differs on a line it gives out.
            let given = |r: &[Result<Vec<u8>, Broken>]| {
                r.iter().filter_map(|l| l.as_ref().ok().cloned()).collect::<Vec<_>>()
            };
            prop_assert_eq!(given(&whole), given(&split));
            prop_assert_eq!(whole.last().is_some_and(Result::is_err), split.last().is_some_and(Result::is_err));
            for line in given(&whole) {
                prop_assert!(line.len() < MAX_LINE && !line.contains(&b'\n'));
            }
        }
    }

    #[test]
    fn no_line_with_a_control_character_is_ever_sent() {
        assert_eq!(line("NOOP").unwrap(), b"NOOP\r\n");
        for bad in ["PASS x\r\nDELE 1", "USER a\0", "RCPT TO:<a@b>\n", "x\u{7f}"] {
            assert!(line(bad).is_err(), "{bad:?}");
        }
    }
}
