//! Rules of the recording SMTP proxy's client side, one test per rule, with
//! a scripted upstream SMTP server and fake copies (no sockets, no disk).

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

use super::*;
use crate::failure::Failure;
use crate::net::driver::Protocol;
use crate::net::driver::testing::exchange;
use crate::net::upstream::{DialError, Perform};
use crate::proxy::login_name::ProxyLogin;
use crate::proxy::relay::testing;
use crate::proxy::upstream::Dialer;

const MAILBOX: &str = "mbx-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[derive(Default)]
struct World {
    below_reserve: bool,
    logins: Vec<(String, String)>,
    login_result: Option<LoginFailure>,
    commands: Vec<String>,
    /// Replies by command prefix; anything else is 250.
    refuse: Vec<(String, u16, Option<String>)>,
    lose_on: Option<String>,
    sent: Vec<Vec<u8>>,
    send_outcome: Option<&'static str>,
    copies_started: usize,
    fail_start: bool,
    fail_prepare: bool,
    prepared: Vec<(Vec<u8>, CopyFacts)>,
    committed: usize,
}

#[derive(Clone)]
struct Fake(Rc<RefCell<World>>, Rc<Dialer>);

impl Default for Fake {
    fn default() -> Fake {
        let dialer = testing::dialer("mail.example.com", 587);
        Fake(Rc::default(), Rc::new(dialer))
    }
}

/// A scripted upstream submission server, spoken to at the byte level as
/// the driver would: it takes any login, then answers by the world's rules.
struct FakeUp {
    world: Fake,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
    last: Vec<u8>,
    logged_in: bool,
    data: Option<Vec<u8>>,
    closed: bool,
}

impl FakeUp {
    fn new(world: &Fake) -> FakeUp {
        FakeUp {
            world: world.clone(),
            inbox: Vec::new(),
            outbox: Vec::new(),
            last: Vec::new(),
            logged_in: false,
            data: None,
            closed: false,
        }
    }

    fn take_in(&mut self, bytes: &[u8]) {
        self.inbox.extend_from_slice(bytes);
        while !self.closed {
            if let Some(data) = &mut self.data {
                data.append(&mut self.inbox);
                let Some(end) = find(data, b"\r\n.\r\n")
                    .map(|i| i + 2)
                    .or((data.as_slice() == b".\r\n").then_some(0))
                else {
                    if self.world.0.borrow().send_outcome == Some("lost-before") {
                        self.closed = true;
                    }
                    return;
                };
                let body = unstuff(&data[..end]);
                self.inbox = data.split_off(end + 3);
                self.data = None;
                let mut w = self.world.0.borrow_mut();
                w.sent.push(body);
                match w.send_outcome {
                    Some("refuse") => self.outbox.extend_from_slice(b"554 5.7.1 spam\r\n"),
                    Some("lost-after") | Some("lost-before") => self.closed = true,
                    _ => self.outbox.extend_from_slice(b"250 2.0.0 queued as X\r\n"),
                }
                continue;
            }
            let Some(i) = find(&self.inbox, b"\r\n") else {
                return;
            };
            let line = String::from_utf8(self.inbox.drain(..i + 2).take(i).collect()).unwrap();
            self.command(&line);
        }
    }

    fn command(&mut self, line: &str) {
        if !self.logged_in {
            let answer: &[u8] = if line.starts_with("EHLO") {
                b"250-fake\r\n250-SIZE 100000\r\n250-8BITMIME\r\n250 AUTH PLAIN LOGIN\r\n"
            } else {
                self.logged_in = line.starts_with("AUTH PLAIN");
                b"235 2.7.0 ok\r\n"
            };
            self.outbox.extend_from_slice(answer);
            return;
        }
        let mut w = self.world.0.borrow_mut();
        w.commands.push(line.to_string());
        if w.lose_on.as_deref().is_some_and(|p| line.starts_with(p)) {
            self.closed = true;
            return;
        }
        for (prefix, code, enhanced) in &w.refuse {
            if line.starts_with(prefix.as_str()) {
                let enhanced = enhanced
                    .as_deref()
                    .map(|e| format!("{e} "))
                    .unwrap_or_default();
                self.outbox.extend_from_slice(
                    format!("{code} {enhanced}secret upstream text\r\n").as_bytes(),
                );
                return;
            }
        }
        let answer: &[u8] = match line {
            "DATA" => {
                self.data = Some(Vec::new());
                b"354 go on\r\n"
            }
            "QUIT" => b"221 bye\r\n",
            _ => b"250 2.0.0 fine\r\n",
        };
        self.outbox.extend_from_slice(answer);
    }

    fn read(&mut self) -> Response<'_> {
        if self.closed {
            return Response::Closed;
        }
        if self.outbox.is_empty() {
            return Response::Failed(DialError::Unreachable("fake: nothing to read".into()));
        }
        self.last = std::mem::take(&mut self.outbox);
        Response::Data(&self.last)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The message a dot-stuffed body up to (not including) its final dot carries.
fn unstuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut line_start = true;
    let mut i = 0;
    while i < body.len() {
        if line_start && body[i] == b'.' {
            i += 1;
            line_start = false;
            continue;
        }
        out.push(body[i]);
        line_start = body[i] == b'\n';
        i += 1;
    }
    out
}

impl Perform for FakeUp {
    fn perform(&mut self, request: Request) -> Response<'_> {
        match request {
            Request::Connect(_) => {
                self.outbox.extend_from_slice(b"220 fake ESMTP\r\n");
                Response::Connected {
                    peer: "192.0.2.99:587".parse().unwrap(),
                    tls: Some(tls()),
                }
            }
            Request::StartTls(..) => Response::TlsStarted(tls()),
            Request::Exchange(bytes, _) => {
                self.take_in(&bytes);
                self.read()
            }
            Request::Read(_) => self.read(),
            Request::Send(bytes, _) => {
                self.take_in(&bytes);
                match self.closed {
                    true => Response::Failed(DialError::Unreachable("reset".into())),
                    false => Response::Sent,
                }
            }
            Request::Disconnect => Response::Disconnected,
        }
    }
}

struct FakeCopy {
    world: Fake,
    bytes: Vec<u8>,
}

impl io::Write for FakeCopy {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl CopySink for FakeCopy {
    fn prepare(self: Box<Self>, facts: CopyFacts) -> Result<Box<dyn PreparedCopy>, Failure> {
        if self.world.0.borrow().fail_prepare {
            return Err(Failure::Temporary("disk full".into()));
        }
        self.world
            .0
            .borrow_mut()
            .prepared
            .push((self.bytes.clone(), facts));
        Ok(Box::new(FakePrepared {
            world: self.world,
            bytes: self.bytes,
        }))
    }
}

struct FakePrepared {
    world: Fake,
    bytes: Vec<u8>,
}

impl PreparedCopy for FakePrepared {
    fn message(&self) -> io::Result<Box<dyn Read>> {
        Ok(Box::new(io::Cursor::new(self.bytes.clone())))
    }

    fn commit(self: Box<Self>) -> Result<String, Failure> {
        self.world.0.borrow_mut().committed += 1;
        Ok("copy-1".into())
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
            ("mail.example.com", None),
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
        let mut w = self.0.borrow_mut();
        if w.fail_start {
            return Err(Failure::Temporary("spool unwritable".into()));
        }
        w.copies_started += 1;
        Ok(Box::new(FakeCopy {
            world: self.clone(),
            bytes: Vec::new(),
        }))
    }

    fn is_archived(&mut self, _mailbox: &MailboxId, _key: &[&str]) -> bool {
        false
    }

    fn mark_archived(&mut self, _mailbox: &MailboxId, _key: &[&str]) -> Result<(), Failure> {
        Ok(())
    }
}

struct Harness {
    session: ProxySession<Fake>,
    world: Fake,
    upstream: FakeUp,
    last: &'static str,
}

fn settings() -> Settings {
    Settings {
        hostname: "gw.example".into(),
        max_message_bytes: 1000,
        max_recipients: 3,
        max_line_bytes: 1000,
        errors: ErrorPolicy::default(),
    }
}

fn tls() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
    }
}

impl Harness {
    fn new(tls: Option<TlsInfo>) -> Harness {
        let world = Fake::default();
        Harness {
            session: ProxySession::new(
                settings(),
                world.clone(),
                "192.0.2.9".parse().unwrap(),
                tls,
            ),
            upstream: FakeUp::new(&world),
            world,
            last: "continue",
        }
    }

    fn ingest(&mut self, input: &[u8]) -> String {
        let (out, last) = exchange(&mut self.session, &mut self.upstream, input);
        self.last = last;
        out
    }

    /// EHLO and AUTH PLAIN over TLS.
    fn logged_in() -> Harness {
        let mut h = Harness::new(Some(tls()));
        h.ingest(b"EHLO client\r\n");
        let token = crate::crypto::base64_encode(
            format!("\0anna@example.com%mail.example.com%{MAILBOX}\0pw").as_bytes(),
        );
        let r = h.ingest(format!("AUTH PLAIN {token}\r\n").as_bytes());
        assert_eq!(r, "235 2.7.0 Authentication successful\r\n");
        h
    }

    fn world(&self) -> std::cell::Ref<'_, World> {
        self.world.0.borrow()
    }
}

/// The code of the last reply line with its enhanced code, whole (`538 5.7.11`).
fn last_code(replies: &str) -> String {
    let last = replies.lines().last().unwrap_or("");
    let mut words = last.splitn(3, ' ');
    let code = words.next().unwrap_or_default();
    match words.next() {
        Some(w)
            if w.split('.').count() == 3 && w.bytes().all(|b| b.is_ascii_digit() || b == b'.') =>
        {
            format!("{code} {w}")
        }
        _ => code.to_string(),
    }
}

#[test]
fn ehlo_before_tls_offers_starttls_and_no_auth() {
    let mut h = Harness::new(None);
    let r = h.ingest(b"EHLO client\r\n");
    assert!(r.contains("STARTTLS") && !r.contains("AUTH"), "{r}");
}

#[test]
fn ehlo_after_tls_offers_auth_size_8bitmime_enhancedstatuscodes_pipelining() {
    let mut h = Harness::new(Some(tls()));
    let r = h.ingest(b"EHLO client\r\n");
    for ext in [
        "AUTH PLAIN LOGIN",
        "SIZE 1000",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "PIPELINING",
    ] {
        assert!(r.contains(ext), "{ext} in {r}");
    }
    assert!(!r.contains("STARTTLS"));
}

#[test]
fn auth_before_tls_is_538_and_the_password_is_never_read() {
    let mut h = Harness::new(None);
    h.ingest(b"EHLO client\r\n");
    assert_eq!(
        h.ingest(b"AUTH PLAIN AGEAYg==\r\n"),
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    assert_eq!(last_code(&h.ingest(b"AUTH LOGIN\r\n")), "538 5.7.11");
    assert!(h.world().logins.is_empty());
}

#[test]
fn below_the_disk_reserve_mail_is_452_4_3_1_and_nothing_goes_upstream() {
    let mut h = Harness::logged_in();
    h.world.0.borrow_mut().below_reserve = true;
    assert_eq!(
        last_code(&h.ingest(b"MAIL FROM:<a@b.example>\r\n")),
        "452 4.3.1"
    );
    assert!(!h.world().commands.iter().any(|c| c.starts_with("MAIL")));
    h.world.0.borrow_mut().below_reserve = false;
    assert!(last_code(&h.ingest(b"MAIL FROM:<a@b.example>\r\n")).starts_with("250"));
    assert!(h.world().commands.iter().any(|c| c.starts_with("MAIL")));
}

#[test]
fn mail_before_tls_or_auth_is_530() {
    let mut h = Harness::new(None);
    h.ingest(b"EHLO client\r\n");
    assert_eq!(
        last_code(&h.ingest(b"MAIL FROM:<a@b.example>\r\n")),
        "530 5.7.0"
    );
    let mut h = Harness::new(Some(tls()));
    h.ingest(b"EHLO client\r\n");
    assert_eq!(
        h.ingest(b"MAIL FROM:<a@b.example>\r\n"),
        "530 5.7.0 Authentication required\r\n"
    );
}

#[test]
fn auth_plain_with_a_continuation() {
    let mut h = Harness::new(Some(tls()));
    h.ingest(b"EHLO client\r\n");
    assert_eq!(h.ingest(b"AUTH PLAIN\r\n"), "334 \r\n");
    let token = crate::crypto::base64_encode(b"\0u%h%mbx-1\0secret");
    assert_eq!(
        last_code(&h.ingest(format!("{token}\r\n").as_bytes())),
        "235 2.7.0"
    );
    assert_eq!(
        h.world().logins,
        [("u%h%mbx-1".to_string(), "secret".to_string())]
    );
}

#[test]
fn auth_login_asks_for_user_then_password() {
    let mut h = Harness::new(Some(tls()));
    h.ingest(b"EHLO client\r\n");
    assert_eq!(h.ingest(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    let user = crate::crypto::base64_encode(b"anna%mail.example.com%mbx-x");
    assert_eq!(
        h.ingest(format!("{user}\r\n").as_bytes()),
        "334 UGFzc3dvcmQ6\r\n"
    );
    let pw = crate::crypto::base64_encode(b"pass word");
    assert_eq!(
        last_code(&h.ingest(format!("{pw}\r\n").as_bytes())),
        "235 2.7.0"
    );
    assert_eq!(
        h.world().logins,
        [(
            "anna%mail.example.com%mbx-x".to_string(),
            "pass word".to_string()
        )]
    );
}

#[test]
fn auth_can_be_cancelled() {
    let mut h = Harness::new(Some(tls()));
    h.ingest(b"EHLO client\r\n");
    h.ingest(b"AUTH LOGIN\r\n");
    assert_eq!(last_code(&h.ingest(b"*\r\n")), "501 5.0.0");
    h.ingest(b"AUTH PLAIN\r\n");
    assert_eq!(last_code(&h.ingest(b"*\r\n")), "501 5.0.0");
    assert!(h.world().logins.is_empty());
}

#[test]
fn refused_logins_get_a_generic_535_and_temporary_ones_454() {
    let mut h = Harness::new(Some(tls()));
    h.ingest(b"EHLO client\r\n");
    h.world.0.borrow_mut().login_result = Some(LoginFailure::Refused);
    let token = crate::crypto::base64_encode(b"\0x%y%z\0pw");
    assert_eq!(
        h.ingest(format!("AUTH PLAIN {token}\r\n").as_bytes()),
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    h.world.0.borrow_mut().login_result = Some(LoginFailure::Temporary);
    assert_eq!(
        last_code(&h.ingest(format!("AUTH PLAIN {token}\r\n").as_bytes())),
        "454 4.7.0"
    );
}

#[test]
fn mail_and_rcpt_are_relayed_with_supported_parameters() {
    let mut h = Harness::logged_in();
    assert_eq!(
        last_code(&h.ingest(b"MAIL FROM:<anna@example.com> SIZE=200 BODY=8BITMIME\r\n")),
        "250 2.0.0"
    );
    assert_eq!(
        last_code(&h.ingest(b"RCPT TO:<ben@example.org>\r\n")),
        "250 2.0.0"
    );
    assert_eq!(
        h.world().commands,
        [
            "MAIL FROM:<anna@example.com> SIZE=200 BODY=8BITMIME",
            "RCPT TO:<ben@example.org>"
        ]
    );
}

#[test]
fn upstream_refusals_pass_their_codes_but_never_their_text() {
    let mut h = Harness::logged_in();
    h.world
        .0
        .borrow_mut()
        .refuse
        .push(("RCPT TO:<nobody".into(), 550, Some("5.1.1".into())));
    h.ingest(b"MAIL FROM:<anna@example.com>\r\n");
    let r = h.ingest(b"RCPT TO:<nobody@example.org>\r\n");
    assert!(r.starts_with("550 5.1.1 "), "{r}");
    assert!(!r.contains("secret upstream text"), "{r}");
    h.world
        .0
        .borrow_mut()
        .refuse
        .push(("RCPT TO:<later".into(), 451, None));
    assert_eq!(
        last_code(&h.ingest(b"RCPT TO:<later@example.org>\r\n")),
        "451 4.0.0"
    );
}

#[test]
fn a_message_is_copied_before_it_is_sent_and_kept_on_250() {
    let mut h = Harness::logged_in();
    h.world
        .0
        .borrow_mut()
        .refuse
        .push(("RCPT TO:<refused".into(), 550, Some("5.1.1".into())));
    let r = h.ingest(
        b"MAIL FROM:<anna@example.com>\r\nRCPT TO:<to@example.org>\r\nRCPT TO:<refused@example.org>\r\nRCPT TO:<bcc@example.org>\r\nDATA\r\n",
    );
    assert!(
        r.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"),
        "{r}"
    );
    let r = h.ingest(b"Subject: hi\r\n\r\n..dotted\r\n.\r\n");
    assert_eq!(r, "250 2.0.0 Ok: sent, and a copy archived\r\n");
    let w = h.world();
    assert_eq!(w.prepared.len(), 1);
    let (copy, meta) = &w.prepared[0];
    assert_eq!(copy, b"Subject: hi\r\n\r\n.dotted\r\n");
    assert_eq!(
        w.sent,
        std::slice::from_ref(copy),
        "the upstream got exactly the copy"
    );
    assert_eq!(w.committed, 1);
    assert_eq!(meta.mail_from, "anna@example.com");
    assert_eq!(
        meta.rcpt_to,
        ["to@example.org", "bcc@example.org"],
        "accepted recipients only, Bcc included"
    );
    assert_eq!(meta.client_ip.to_string(), "192.0.2.9");
    assert_eq!(meta.tls.as_deref(), Some("TLSv1.3"));
}

#[test]
fn a_message_the_upstream_refuses_leaves_no_copy() {
    let mut h = Harness::logged_in();
    h.world.0.borrow_mut().send_outcome = Some("refuse");
    h.ingest(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
    assert_eq!(last_code(&h.ingest(b"spam\r\n.\r\n")), "554 5.7.1");
    assert_eq!(h.world().committed, 0);
}

#[test]
fn a_copy_that_cannot_be_written_means_451_and_nothing_sent() {
    let mut h = Harness::logged_in();
    h.world.0.borrow_mut().fail_prepare = true;
    h.ingest(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
    assert_eq!(
        h.ingest(b"body\r\n.\r\n"),
        "451 4.3.0 Cannot archive the message right now; try again later\r\n"
    );
    let w = h.world();
    assert!(w.sent.is_empty(), "nothing went upstream");
    assert_eq!(
        w.commands.last().map(String::as_str),
        Some("RSET"),
        "the upstream envelope is cleared"
    );
}

#[test]
fn a_copy_that_cannot_even_start_refuses_data() {
    let mut h = Harness::logged_in();
    h.world.0.borrow_mut().fail_start = true;
    let r = h.ingest(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
    assert_eq!(last_code(&r), "451 4.3.0");
}

#[test]
fn an_oversize_message_is_read_to_its_end_and_refused() {
    let mut h = Harness::logged_in();
    h.ingest(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
    let mut body = Vec::new();
    for _ in 0..30 {
        body.extend_from_slice(&[b'x'; 60]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\nNOOP\r\n");
    let r = h.ingest(&body);
    assert!(r.starts_with("552 5.3.4 "), "{r}");
    assert!(r.ends_with("250 2.0.0 NOOP: ok\r\n"), "{r}");
    assert!(h.world().sent.is_empty());
    assert!(h.world().prepared.is_empty());
}

#[test]
fn smuggling_sequences_stay_inside_one_message() {
    let mut h = Harness::logged_in();
    h.ingest(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
    let r = h.ingest(b"Subject: one\r\n\r\nbody\n.\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<x@example.org>\r\nDATA\r\nsmuggled\r\n.\r\n");
    assert_eq!(r, "250 2.0.0 Ok: sent, and a copy archived\r\n");
    let w = h.world();
    assert_eq!(w.sent.len(), 1, "exactly one message upstream");
    assert_eq!(w.sent[0], w.prepared[0].0, "matching the copy");
    assert!(w.sent[0].windows(9).any(|x| x == b"MAIL FROM"));
    assert!(
        !w.sent[0]
            .iter()
            .zip(w.sent[0].iter().skip(1))
            .any(|(&a, &b)| b == b'\n' && a != b'\r'),
        "CRLF only"
    );
    assert!(
        !w.commands.iter().any(|c| c.contains("evil")),
        "the smuggled MAIL was never a command"
    );
}

#[test]
fn losing_the_upstream_mid_session_closes_with_421() {
    let mut h = Harness::logged_in();
    h.world.0.borrow_mut().lose_on = Some("MAIL".into());
    assert_eq!(
        last_code(&h.ingest(b"MAIL FROM:<a@example.com>\r\n")),
        "421 4.4.2"
    );
    assert_eq!(h.last, "close");
}

#[test]
fn losing_the_upstream_after_the_final_dot_keeps_the_copy() {
    let mut h = Harness::logged_in();
    h.world.0.borrow_mut().send_outcome = Some("lost-after");
    h.ingest(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
    assert_eq!(last_code(&h.ingest(b"x\r\n.\r\n")), "421 4.4.2");
    assert_eq!(
        h.world().committed,
        1,
        "it may have been sent: the copy stays"
    );
    let mut h = Harness::logged_in();
    h.world.0.borrow_mut().send_outcome = Some("lost-before");
    h.ingest(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n");
    assert_eq!(last_code(&h.ingest(b"x\r\n.\r\n")), "421 4.4.2");
    assert_eq!(h.world().committed, 0, "not sent: no copy");
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let mut h = Harness::logged_in();
    let r = h.ingest(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\nx\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n");
    let codes: Vec<&str> = r.lines().map(|l| &l[..3]).collect();
    assert_eq!(
        codes,
        ["250", "250", "250", "354", "250", "250", "250", "221"]
    );
    assert_eq!(h.last, "close");
    assert_eq!(h.world().commands.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn data_without_recipients_and_too_many_recipients() {
    let mut h = Harness::logged_in();
    assert_eq!(last_code(&h.ingest(b"DATA\r\n")), "503 5.5.1");
    h.world
        .0
        .borrow_mut()
        .refuse
        .push(("RCPT".into(), 550, None));
    h.ingest(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<x@example.org>\r\n");
    assert_eq!(last_code(&h.ingest(b"DATA\r\n")), "554 5.5.1");
    let mut h = Harness::logged_in();
    h.ingest(b"MAIL FROM:<a@example.com>\r\n");
    for _ in 0..3 {
        h.ingest(b"RCPT TO:<x@example.org>\r\n");
    }
    assert_eq!(
        last_code(&h.ingest(b"RCPT TO:<y@example.org>\r\n")),
        "452 4.5.3"
    );
}

#[test]
fn commands_after_starttls_in_the_same_packet_are_discarded() {
    let mut h = Harness::new(None);
    h.ingest(b"EHLO client\r\n");
    let token = crate::crypto::base64_encode(b"\0a%b%c\0pw");
    let r = h.ingest(format!("STARTTLS\r\nAUTH PLAIN {token}\r\n").as_bytes());
    assert_eq!(r, "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(h.last, "starttls");
    h.session.tls_started(tls());
    assert!(h.world().logins.is_empty());
    assert_eq!(
        last_code(&h.ingest(b"MAIL FROM:<a@example.com>\r\n")),
        "503 5.5.1",
        "EHLO is needed again"
    );
}

#[test]
fn bdat_and_smtputf8_are_not_offered() {
    let mut h = Harness::logged_in();
    assert_eq!(last_code(&h.ingest(b"BDAT 0 LAST\r\n")), "502 5.5.1");
    assert_eq!(
        last_code(&h.ingest("MAIL FROM:<jürgen@bücher.example> SMTPUTF8\r\n".as_bytes())),
        "553 5.6.7"
    );
}

#[test]
fn an_over_long_line_is_500_and_the_next_command_is_read() {
    let mut h = Harness::logged_in();
    let mut line = b"NOOP ".to_vec();
    line.extend_from_slice(&[b'x'; 2000]);
    line.extend_from_slice(b"\r\nNOOP\r\n");
    let r = h.ingest(&line);
    assert!(r.starts_with("500 5.5.2 Line too long\r\n"), "{r}");
    assert_eq!(last_code(&r), "250 2.0.0");
    assert_eq!(
        h.world().commands,
        ["NOOP"],
        "the long line never went upstream"
    );
}
