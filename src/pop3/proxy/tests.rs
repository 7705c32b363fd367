//! Rules of the recording POP3 proxy, one test per rule, with a scripted
//! upstream POP3 server and an in-memory archive (no sockets).

use std::cell::RefCell;
use std::io::{self, Write};
use std::rc::Rc;

use super::*;
use crate::failure::Failure;
use crate::net::driver::Protocol;
use crate::net::driver::testing::exchange;
use crate::net::upstream::{DialError, Perform};
use crate::proxy::login_name::ProxyLogin;
use crate::proxy::relay::PreparedCopy;
use crate::proxy::relay::testing;
use crate::proxy::upstream::Dialer;

const MAILBOX: &str = "mbx-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// The upstream mailbox and everything that happened, shared by fakes.
#[derive(Default)]
struct World {
    below_reserve: bool,
    messages: Vec<(String, Vec<u8>)>,
    deleted: Vec<u64>,
    commands: Vec<String>,
    lose_on: Option<String>,
    no_uidl: bool,
    logins: Vec<(String, String)>,
    login_result: Option<LoginFailure>,
    archived: HashSet<(String, String, String)>,
    copies: Vec<(Vec<u8>, CopyFacts)>,
    fail_copy: bool,
    /// LIST reports every message as 1 byte.
    understate_sizes: bool,
    /// The UIDL listing carries this line too.
    extra_uidl_line: Option<String>,
}

#[derive(Clone)]
struct Fake(Rc<RefCell<World>>, Rc<Dialer>);

impl Default for Fake {
    fn default() -> Fake {
        let dialer = testing::dialer("pop.example.com", 995);
        Fake(Rc::default(), Rc::new(dialer))
    }
}

/// A scripted upstream POP3 server, spoken to at the byte level as the
/// driver would: it takes any login, then answers by the world's rules.
struct FakeUp {
    world: Fake,
    inbox: Vec<u8>,
    wire: std::collections::VecDeque<u8>,
    /// Where the answer to the command being handled starts in `wire`.
    sent_before: usize,
    last: Vec<u8>,
    logged_in: bool,
    closed: bool,
}

impl FakeUp {
    fn new(world: &Fake) -> FakeUp {
        FakeUp {
            world: world.clone(),
            inbox: Vec::new(),
            wire: Default::default(),
            sent_before: 0,
            last: Vec::new(),
            logged_in: false,
            closed: false,
        }
    }
}

/// Dot-stuffs as a strict server does: only lines that follow a CRLF.
fn stuffed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut line_start = true;
    for (i, &b) in body.iter().enumerate() {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n' && i > 0 && body[i - 1] == b'\r';
    }
    out.extend_from_slice(b".\r\n");
    out
}

impl FakeUp {
    /// The status line of `line`; a multi-line body goes to `self.wire`.
    fn command(&mut self, line: &str) -> Result<String, String> {
        let mut w = self.world.0.borrow_mut();
        w.commands.push(line.to_string());
        if w.lose_on.as_deref().is_some_and(|p| line.starts_with(p)) {
            return Err("connection reset".into());
        }
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let n: Option<usize> = words.next().and_then(|n| n.parse().ok());
        let message = n.and_then(|n| w.messages.get(n.wrapping_sub(1)).cloned());
        Ok(match (verb, message) {
            ("UIDL", None) if n.is_none() && !w.no_uidl => {
                let listing: String = w
                    .messages
                    .iter()
                    .enumerate()
                    .map(|(i, (u, _))| format!("{} {u}\r\n", i + 1))
                    .collect();
                self.wire.extend(listing.as_bytes());
                if let Some(extra) = &w.extra_uidl_line {
                    self.wire.extend(extra.as_bytes());
                }
                self.wire.extend(b".\r\n");
                "+OK".into()
            }
            ("UIDL", None) if w.no_uidl => "-ERR no UIDL here".into(),
            ("LIST", None) if n.is_none() => {
                let listing: String = w
                    .messages
                    .iter()
                    .enumerate()
                    .map(|(i, (_, b))| {
                        let size = if w.understate_sizes { 1 } else { b.len() };
                        format!("{} {size}\r\n", i + 1)
                    })
                    .collect();
                self.wire.extend(listing.as_bytes());
                self.wire.extend(b".\r\n");
                "+OK scan listing".into()
            }
            ("RETR", Some((_, body))) => {
                self.wire.extend(&stuffed(&body));
                format!("+OK {} octets", body.len())
            }
            ("TOP", Some((_, body))) => {
                let head = body
                    .split(|&b| b == b'\n')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(&b'\n');
                self.wire
                    .extend(&stuffed(&[head.as_slice(), b"\n"].concat()));
                "+OK top".into()
            }
            ("DELE", Some(_)) => {
                w.deleted.push(n.unwrap() as u64);
                "+OK deleted".into()
            }
            ("STAT", _) => format!("+OK {} 0", w.messages.len()),
            ("NOOP" | "RSET" | "QUIT", _) => "+OK".into(),
            _ => "-ERR no such message".into(),
        })
    }
}

impl Perform for FakeUp {
    fn perform(&mut self, request: Request) -> Response<'_> {
        match request {
            Request::Connect(_) => {
                self.wire.extend(b"+OK fake POP3\r\n");
                Response::Connected {
                    peer: "192.0.2.99:995".parse().unwrap(),
                    tls: Some(tls()),
                }
            }
            Request::StartTls(..) => Response::TlsStarted(tls()),
            Request::Exchange(bytes, _) => {
                self.inbox.extend_from_slice(&bytes);
                while let Some(i) = self.inbox.windows(2).position(|w| w == b"\r\n") {
                    let line =
                        String::from_utf8(self.inbox.drain(..i + 2).take(i).collect()).unwrap();
                    if !self.logged_in {
                        // Any login is good: CAPA offers USER; USER and PASS pass.
                        let answer: &[u8] = match line.as_str() {
                            "CAPA" => b"+OK\r\nUSER\r\nUIDL\r\n.\r\n",
                            _ => b"+OK\r\n",
                        };
                        self.logged_in = line.starts_with("PASS");
                        self.wire.extend(answer);
                        continue;
                    }
                    match self.command(&line) {
                        Ok(status) => {
                            // The status line goes before the body it announces.
                            let body: Vec<u8> = self.wire.drain(self.sent_before..).collect();
                            self.wire.extend(status.as_bytes());
                            self.wire.extend(b"\r\n");
                            self.wire.extend(body);
                        }
                        Err(_) => self.closed = true,
                    }
                    self.sent_before = self.wire.len();
                }
                self.read()
            }
            Request::Read(_) => self.read(),
            Request::Send(..) => {
                Response::Failed(DialError::Unreachable("fake: no Send in POP3".into()))
            }
            Request::Disconnect => Response::Disconnected,
        }
    }
}

impl FakeUp {
    fn read(&mut self) -> Response<'_> {
        if self.wire.is_empty() {
            return match self.closed {
                true => Response::Closed,
                false => Response::Failed(DialError::Unreachable("fake: nothing to read".into())),
            };
        }
        // A few bytes at a time, as a slow network would deliver them
        // (larger pieces once there is much to send).
        let piece = if self.wire.len() > 64 * 1024 {
            16 * 1024
        } else {
            7
        };
        let n = self.wire.len().min(piece);
        self.last = self.wire.drain(..n).collect();
        self.sent_before = self.wire.len();
        Response::Data(&self.last)
    }
}

struct FakeCopy {
    world: Fake,
    bytes: Vec<u8>,
}

impl Write for FakeCopy {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.world.0.borrow().fail_copy {
            return Err(io::Error::other("disk full"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl CopySink for FakeCopy {
    fn prepare(self: Box<Self>, facts: CopyFacts) -> Result<Box<dyn PreparedCopy>, Failure> {
        self.world
            .0
            .borrow_mut()
            .copies
            .push((self.bytes.clone(), facts));
        Ok(Box::new(Committed))
    }
}

struct Committed;

impl PreparedCopy for Committed {
    fn message(&self) -> io::Result<Box<dyn io::Read>> {
        Ok(Box::new(io::empty()))
    }

    fn commit(self: Box<Self>) -> Result<String, Failure> {
        Ok("copy".into())
    }
}

impl Relay for Fake {
    fn authorize(&mut self, name: &str, password: Password) -> Result<Authorized, Refusal> {
        let mut w = self.0.borrow_mut();
        let failure = w.login_result;
        testing::authorize(
            &mut w.logins,
            failure,
            (name, password),
            ("pop.example.com", Some(995)),
            MAILBOX,
        )
    }

    fn dialer(&self) -> &Dialer {
        &self.1
    }

    fn finish_login(
        &mut self,
        authorized: Authorized,
        outcome: Result<(), OpenError>,
    ) -> Result<ProxyLogin, Refusal> {
        testing::finish_login(authorized, outcome)
    }

    fn below_reserve(&mut self) -> bool {
        self.0.borrow().below_reserve
    }

    fn start_copy(&mut self, _mailbox: &MailboxId) -> Result<Box<dyn CopySink>, Failure> {
        Ok(Box::new(FakeCopy {
            world: self.clone(),
            bytes: Vec::new(),
        }))
    }

    fn is_archived(&mut self, _mailbox: &MailboxId, key: &[&str]) -> bool {
        self.0.borrow().archived.contains(&(
            key[0].to_string(),
            key[1].to_string(),
            key[2].to_string(),
        ))
    }

    fn mark_archived(&mut self, _mailbox: &MailboxId, key: &[&str]) -> Result<(), Failure> {
        self.0.borrow_mut().archived.insert((
            key[0].to_string(),
            key[1].to_string(),
            key[2].to_string(),
        ));
        Ok(())
    }
}

fn tls() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
    }
}

struct Harness {
    session: Pop3ProxySession<Fake>,
    world: Fake,
    upstream: FakeUp,
    last: &'static str,
}

const ONE: &[u8] = b"Subject: one\r\n\r\n.leading dot\r\nbody\r\n";
const TWO: &[u8] = b"Subject: two\r\n\r\nsecond\r\n";

impl Harness {
    fn with(world: Fake, tls: Option<TlsInfo>) -> Harness {
        Harness::limited(world, tls, 1 << 20)
    }

    fn limited(world: Fake, tls: Option<TlsInfo>, max_message_bytes: u64) -> Harness {
        Harness {
            session: Pop3ProxySession::new(
                world.clone(),
                Settings {
                    max_line_bytes: 512,
                    errors: ErrorPolicy::default(),
                    max_message_bytes,
                },
                "192.0.2.5".parse().unwrap(),
                tls,
            ),
            upstream: FakeUp::new(&world),
            world,
            last: "continue",
        }
    }

    fn world_with_mail() -> Fake {
        let world = Fake::default();
        world.0.borrow_mut().messages = vec![
            ("UID-1".into(), ONE.to_vec()),
            ("UID-2".into(), TWO.to_vec()),
        ];
        world
    }

    fn logged_in() -> Harness {
        Harness::logged_in_to(Harness::world_with_mail())
    }

    fn logged_in_to(world: Fake) -> Harness {
        Harness::logged_in_with(Harness::with(world, Some(tls())))
    }

    fn logged_in_with(mut h: Harness) -> Harness {
        assert_eq!(
            h.ingest(b"USER anna%pop.example.com:995%mbx-x\r\nPASS secret\r\n"),
            "+OK Send your password\r\n+OK Logged in\r\n"
        );
        h
    }

    /// Feeds bytes; upstream exchanges and pending commands run to completion.
    fn ingest(&mut self, input: &[u8]) -> String {
        let (out, last) = exchange(&mut self.session, &mut self.upstream, input);
        self.last = last;
        out
    }

    fn world(&self) -> std::cell::Ref<'_, World> {
        self.world.0.borrow()
    }
}

#[test]
fn capa_before_tls_offers_stls_and_no_login() {
    let mut h = Harness::with(Fake::default(), None);
    let capa = h.ingest(b"CAPA\r\n");
    assert!(
        capa.contains("STLS\r\n") && !capa.contains("USER"),
        "{capa}"
    );
    let mut h = Harness::with(Fake::default(), Some(tls()));
    let capa = h.ingest(b"CAPA\r\n");
    assert!(
        capa.contains("USER\r\n") && capa.contains("SASL PLAIN\r\n") && !capa.contains("STLS"),
        "{capa}"
    );
}

#[test]
fn login_commands_before_tls_are_refused_and_never_relayed() {
    let mut h = Harness::with(Fake::default(), None);
    for line in [
        "USER a%b%c\r\n",
        "PASS secret\r\n",
        "AUTH PLAIN AGEAYg==\r\n",
    ] {
        assert!(
            h.ingest(line.as_bytes())
                .starts_with("-ERR [AUTH] TLS is required"),
            "{line}"
        );
    }
    assert!(h.world().logins.is_empty());
}

#[test]
fn login_fetches_the_uidl_and_size_lists_once() {
    let h = Harness::logged_in();
    assert_eq!(
        h.world().logins,
        [(
            "anna%pop.example.com:995%mbx-x".to_string(),
            "secret".to_string()
        )]
    );
    assert_eq!(h.world().commands, ["UIDL", "LIST"]);
}

#[test]
fn auth_plain_logs_in_too() {
    let mut h = Harness::with(Harness::world_with_mail(), Some(tls()));
    let token = crate::crypto::base64_encode(b"\0anna%pop.example.com%mbx-x\0secret");
    assert_eq!(
        h.ingest(format!("AUTH PLAIN {token}\r\n").as_bytes()),
        "+OK Logged in\r\n"
    );
}

#[test]
fn refused_and_temporary_logins_have_generic_answers() {
    let world = Fake::default();
    world.0.borrow_mut().login_result = Some(LoginFailure::Refused);
    let mut h = Harness::with(world.clone(), Some(tls()));
    assert_eq!(
        h.ingest(b"USER x\r\nPASS y\r\n"),
        "+OK Send your password\r\n-ERR [AUTH] Invalid login\r\n"
    );
    world.0.borrow_mut().login_result = Some(LoginFailure::Temporary);
    assert_eq!(
        h.ingest(b"USER x\r\nPASS y\r\n"),
        "+OK Send your password\r\n-ERR [SYS/TEMP] Temporary failure; try again later\r\n"
    );
}

#[test]
fn below_the_disk_reserve_a_retr_that_would_need_a_copy_is_refused() {
    let mut h = Harness::logged_in();
    h.world.0.borrow_mut().below_reserve = true;
    let r = h.ingest(b"RETR 1\r\n");
    assert!(
        r.starts_with("-ERR [SYS/TEMP] Message 1 cannot be archived now"),
        "{r}"
    );
    assert!(h.world().copies.is_empty());
    assert!(
        !h.world().commands.iter().any(|c| c.starts_with("RETR")),
        "nothing was retrieved"
    );
    h.world.0.borrow_mut().below_reserve = false;
    let r = h.ingest(b"RETR 1\r\n");
    assert!(r.starts_with("+OK"), "{r}");
    assert_eq!(h.world().copies.len(), 1);
}

#[test]
fn retr_passes_the_message_and_archives_it_once() {
    let mut h = Harness::logged_in();
    let r = h.ingest(b"RETR 1\r\n");
    assert_eq!(
        r.as_bytes(),
        [b"+OK 36 octets\r\n".as_slice(), &stuffed(ONE)].concat()
    );
    let (copy, meta) = h.world().copies[0].clone();
    assert_eq!(copy, ONE);
    assert_eq!(meta.size, ONE.len() as u64);
    let origin = meta.upstream.unwrap();
    assert_eq!(
        (
            origin.user.as_str(),
            origin.host.as_str(),
            origin.uidl.as_str()
        ),
        ("anna", "pop.example.com:995", "UID-1")
    );
    h.ingest(b"RETR 1\r\n");
    assert_eq!(
        h.world().copies.len(),
        1,
        "a second RETR stores nothing new"
    );
}

#[test]
fn a_later_session_does_not_archive_the_same_message_again() {
    let world = Harness::world_with_mail();
    let mut first = Harness::logged_in_to(world.clone());
    first.ingest(b"RETR 1\r\nRETR 2\r\nQUIT\r\n");
    let mut second = Harness::logged_in_to(world.clone());
    second.ingest(b"RETR 1\r\nRETR 2\r\n");
    assert_eq!(world.0.borrow().copies.len(), 2, "one copy each");
}

#[test]
fn top_is_passed_but_not_archived() {
    let mut h = Harness::logged_in();
    let r = h.ingest(b"TOP 1 0\r\n");
    assert!(r.starts_with("+OK Follows\r\nSubject: one\r\n"), "{r}");
    assert!(h.world().copies.is_empty());
}

#[test]
fn dele_of_a_message_never_retrieved_archives_it_first() {
    let mut h = Harness::logged_in();
    assert_eq!(h.ingest(b"DELE 2\r\n"), "+OK Message 2 deleted\r\n");
    let w = h.world();
    assert_eq!(w.copies.len(), 1);
    assert_eq!(w.copies[0].0, TWO);
    assert_eq!(w.commands, ["UIDL", "LIST", "RETR 2", "DELE 2"]);
}

#[test]
fn dele_of_an_archived_message_is_forwarded_at_once() {
    let mut h = Harness::logged_in();
    h.ingest(b"RETR 1\r\n");
    h.ingest(b"DELE 1\r\n");
    assert_eq!(h.world().commands, ["UIDL", "LIST", "RETR 1", "DELE 1"]);
    assert_eq!(h.world().copies.len(), 1);
}

#[test]
fn a_failing_copy_blocks_the_dele() {
    let mut h = Harness::logged_in();
    h.world.0.borrow_mut().fail_copy = true;
    assert_eq!(
        h.ingest(b"DELE 1\r\n"),
        "-ERR [SYS/TEMP] Message 1 could not be archived, so it was not deleted\r\n"
    );
    assert!(h.world().deleted.is_empty(), "DELE was never forwarded");
    assert!(!h.world().commands.iter().any(|c| c.starts_with("DELE")));
}

#[test]
fn a_failing_copy_does_not_stop_retr_but_the_next_dele_retries() {
    let mut h = Harness::logged_in();
    h.world.0.borrow_mut().fail_copy = true;
    assert!(h.ingest(b"RETR 1\r\n").starts_with("+OK 36 octets"));
    h.world.0.borrow_mut().fail_copy = false;
    assert_eq!(h.ingest(b"DELE 1\r\n"), "+OK Message 1 deleted\r\n");
    assert_eq!(h.world().copies.len(), 1, "archived by the DELE");
}

#[test]
fn without_uidl_every_message_is_archived_before_its_dele() {
    let world = Harness::world_with_mail();
    world.0.borrow_mut().no_uidl = true;
    let mut h = Harness::logged_in_to(world);
    h.ingest(b"RETR 1\r\nDELE 1\r\nDELE 2\r\n");
    assert_eq!(h.world().copies.len(), 2);
    assert_eq!(h.world().deleted, [1, 2]);
}

#[test]
fn listings_and_single_line_commands_are_relayed() {
    let mut h = Harness::logged_in();
    assert_eq!(
        h.ingest(b"LIST\r\n"),
        format!("+OK Follows\r\n1 {}\r\n2 {}\r\n.\r\n", ONE.len(), TWO.len())
    );
    assert_eq!(
        h.ingest(b"UIDL\r\n"),
        "+OK Follows\r\n1 UID-1\r\n2 UID-2\r\n.\r\n"
    );
    assert_eq!(h.ingest(b"STAT\r\n"), "+OK 2 0\r\n");
    assert_eq!(h.ingest(b"NOOP\r\n"), "+OK \r\n");
    assert_eq!(
        h.ingest(b"RETR 9\r\n"),
        "-ERR The upstream server refused it\r\n"
    );
}

#[test]
fn losing_the_upstream_is_an_error_and_closes() {
    let mut h = Harness::logged_in();
    h.world.0.borrow_mut().lose_on = Some("STAT".into());
    assert_eq!(
        h.ingest(b"STAT\r\n"),
        "-ERR [SYS/TEMP] Connection to the upstream server lost\r\n"
    );
    assert_eq!(h.last, "close");
}

#[test]
fn quit_is_relayed_and_closes() {
    let mut h = Harness::logged_in();
    assert_eq!(
        h.ingest(b"DELE 1\r\nQUIT\r\n"),
        "+OK Message 1 deleted\r\n+OK Sealpost signing off\r\n"
    );
    assert_eq!(h.last, "close");
    assert_eq!(h.world().commands.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn commands_after_stls_in_the_same_packet_are_discarded() {
    let mut h = Harness::with(Harness::world_with_mail(), None);
    assert_eq!(
        h.ingest(b"STLS\r\nUSER a%b%c\r\nPASS x\r\n"),
        "+OK Begin TLS negotiation\r\n"
    );
    assert_eq!(h.last, "starttls");
    h.session.tls_started(tls());
    assert!(!h.session.has_pending_input());
    assert_eq!(h.ingest(b"PASS x\r\n"), "-ERR Send USER first\r\n");
    assert!(h.world().logins.is_empty());
}

#[test]
fn bare_line_ends_from_the_upstream_reach_the_client_and_the_copy_as_crlf() {
    let world = Fake::default();
    world.0.borrow_mut().messages =
        vec![("UID-X".into(), b"Subject: x\n\nline\n.\nend\r\n".to_vec())];
    let mut h = Harness::logged_in_to(world);
    let r = h.ingest(b"RETR 1\r\n");
    assert!(
        r.ends_with("Subject: x\r\n\r\nline\r\n..\r\nend\r\n.\r\n"),
        "{r:?}"
    );
    assert_eq!(
        h.world().copies[0].0,
        b"Subject: x\r\n\r\nline\r\n.\r\nend\r\n"
    );
}

#[test]
fn auth_plain_can_be_cancelled_and_never_reaches_the_relay() {
    let mut h = Harness::with(Harness::world_with_mail(), Some(tls()));
    assert_eq!(h.ingest(b"AUTH PLAIN\r\n"), "+ \r\n");
    assert_eq!(h.ingest(b"*\r\n"), "-ERR Authentication cancelled\r\n");
    assert_eq!(
        h.ingest(b"AUTH PLAIN !!!\r\n"),
        "-ERR [AUTH] Malformed PLAIN response\r\n"
    );
    assert!(h.world().logins.is_empty());
}

#[test]
fn an_over_long_line_is_an_error_and_the_next_command_is_read() {
    let mut h = Harness::logged_in();
    let mut line = b"STAT ".to_vec();
    line.extend_from_slice(&[b'x'; 600]);
    line.extend_from_slice(b"\r\nSTAT\r\n");
    assert_eq!(h.ingest(&line), "-ERR Line too long\r\n+OK 2 0\r\n");
}

#[test]
fn a_message_above_the_size_limit_is_refused_before_any_byte_and_never_deleted() {
    let mut h = Harness::logged_in_with(Harness::limited(
        Harness::world_with_mail(),
        Some(tls()),
        TWO.len() as u64,
    ));
    let answer = h.ingest(b"RETR 1\r\n");
    assert!(
        answer.starts_with("-ERR [SYS/PERM] Message 1 is larger than this proxy passes on"),
        "{answer}"
    );
    let answer = h.ingest(b"DELE 1\r\n");
    assert!(
        answer.contains("could not be archived, so it was not deleted"),
        "{answer}"
    );
    assert_eq!(h.ingest(b"RETR 2\r\n").matches("second").count(), 1);
    let w = h.world();
    assert!(w.deleted.is_empty());
    assert!(
        !w.commands.iter().any(|c| c == "RETR 1"),
        "{:?}",
        w.commands
    );
}

#[test]
fn an_upstream_that_sends_more_than_it_listed_is_cut_off_and_nothing_is_stored() {
    let world = Harness::world_with_mail();
    world.0.borrow_mut().understate_sizes = true;
    let mut h = Harness::logged_in_with(Harness::limited(world, Some(tls()), 10));
    let answer = h.ingest(b"RETR 1\r\n");
    assert!(answer.starts_with("+OK"), "{answer}");
    assert!(
        !answer.ends_with(".\r\n"),
        "the response is cut off: {answer}"
    );
    assert_eq!(h.last, "close");
    assert!(h.world().copies.is_empty());
}

#[test]
fn a_malformed_uidl_listing_ends_the_login() {
    let world = Harness::world_with_mail();
    world.0.borrow_mut().extra_uidl_line = Some("3 uid with spaces\r\n".into());
    let mut h = Harness::with(world, Some(tls()));
    let answer = h.ingest(b"USER anna%pop.example.com:995%mbx-x\r\nPASS secret\r\n");
    assert!(
        answer.ends_with("-ERR [SYS/TEMP] Connection to the upstream server lost\r\n"),
        "{answer}"
    );
    assert_eq!(h.last, "close");
}

#[test]
fn an_endless_uidl_listing_is_cut_off() {
    let world = Harness::world_with_mail();
    let flood: String = (3..300_000)
        .map(|i| format!("{i} {}\r\n", "u".repeat(70)))
        .collect();
    world.0.borrow_mut().extra_uidl_line = Some(flood);
    let mut h = Harness::with(world, Some(tls()));
    let answer = h.ingest(b"USER anna%pop.example.com:995%mbx-x\r\nPASS secret\r\n");
    assert!(
        answer.ends_with("-ERR [SYS/TEMP] Connection to the upstream server lost\r\n"),
        "{answer}"
    );
}

#[test]
fn twenty_errors_close_the_session() {
    let mut h = Harness::with(Fake::default(), Some(tls()));
    let answer = h.ingest(&b"XYZZY\r\n".repeat(25));
    assert_eq!(answer.matches("-ERR Unknown command").count(), 20);
    assert!(
        answer.ends_with("-ERR [SYS/TEMP] Too many errors; closing\r\n"),
        "{answer}"
    );
    assert_eq!(h.last, "close");
}
