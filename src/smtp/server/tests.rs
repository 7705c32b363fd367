//! Protocol rules of the journal receiver, one short test per rule, driven
//! through bytes in and replies out (no sockets).

use std::cell::RefCell;
use std::io::{self, Write};
use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::failure::Failure;
use crate::net::driver::Protocol;

const A: &str = "mbx-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "mbx-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SUSPENDED: &str = "mbx-cccccccccccccccccccccccccccccccc";

#[derive(Default)]
struct Shared {
    stored: Vec<(Envelope, Vec<u8>)>,
    fail_start: bool,
    below_reserve: bool,
    fail_write: bool,
    fail_deliver: bool,
    mailbox_gone: bool,
}

#[derive(Clone, Default)]
struct Fake(Rc<RefCell<Shared>>);

struct FakeSink {
    shared: Fake,
    bytes: Vec<u8>,
}

impl Write for FakeSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The first write is our Received header; fail on the message itself.
        if self.shared.0.borrow().fail_write && !self.bytes.is_empty() {
            return Err(io::Error::other("disk full"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl MessageSink for FakeSink {
    fn deliver(self: Box<Self>, envelope: &Envelope) -> Result<Vec<(MailboxId, String)>, Failure> {
        if self.shared.0.borrow().fail_deliver {
            return Err(Failure::Temporary(
                "cannot sync messages: fsync failed".into(),
            ));
        }
        if self.shared.0.borrow().mailbox_gone {
            return Err(Failure::Permanent(format!(
                "{} not found",
                envelope.recipients[0].0
            )));
        }
        self.shared
            .0
            .borrow_mut()
            .stored
            .push((envelope.clone(), self.bytes));
        Ok(vec![(envelope.recipients[0].0.clone(), "stored".into())])
    }
}

impl Backend for Fake {
    fn recipient(&mut self, address: &Path) -> RecipientCheck {
        let Some((local, domain)) = address.split() else {
            return RecipientCheck::NotLocal;
        };
        if !domain.eq_ignore_ascii_case("localhost") {
            return RecipientCheck::NotLocal;
        }
        if local == "unavailable" {
            return RecipientCheck::Unavailable;
        }
        match local.parse::<MailboxId>() {
            Ok(id) if id.as_str() == SUSPENDED => RecipientCheck::Suspended,
            Ok(id) if id.as_str() == A || id.as_str() == B => RecipientCheck::Accept(id),
            _ => RecipientCheck::Unknown,
        }
    }

    fn below_reserve(&mut self) -> bool {
        self.0.borrow().below_reserve
    }

    fn start_message(&mut self) -> Result<Box<dyn MessageSink>, Failure> {
        if self.0.borrow().fail_start {
            return Err(Failure::Temporary(
                "cannot create a spool file: not writable".into(),
            ));
        }
        Ok(Box::new(FakeSink {
            shared: self.clone(),
            bytes: Vec::new(),
        }))
    }
}

fn settings() -> Settings {
    Settings {
        hostname: "gw.example".into(),
        max_message_bytes: 1000,
        max_recipients: 3,
        require_tls: true,
        max_line_bytes: 512,
        errors: ErrorPolicy::default(),
    }
}

fn tls() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
    }
}

/// How feeding ended (the driver's [`Step`], without its payloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Continue,
    StartTls,
    Close,
}

impl From<Step> for Signal {
    fn from(step: Step) -> Signal {
        match step {
            Step::Continue => Signal::Continue,
            Step::StartTls => Signal::StartTls,
            Step::Close => Signal::Close,
            other => panic!("the journal receiver never asks for {other:?}"),
        }
    }
}

struct Harness {
    session: Session<Fake>,
    fake: Fake,
    last_signal: Signal,
}

impl Harness {
    /// A session that already speaks TLS (an implicit-TLS listener).
    fn tls() -> Harness {
        Harness::with(settings(), Some(tls()))
    }

    fn with(settings: Settings, tls: Option<TlsInfo>) -> Harness {
        let fake = Fake::default();
        Harness {
            session: Session::new(settings, fake.clone(), "192.0.2.7".parse().unwrap(), tls),
            fake,
            last_signal: Signal::Continue,
        }
    }

    /// Feeds bytes and returns the replies they produced, as text.
    fn ingest(&mut self, input: &[u8]) -> String {
        let mut out = Vec::new();
        self.last_signal = self.session.receive(input, &mut out).into();
        String::from_utf8(out).unwrap()
    }

    /// Feeds bytes in pieces of `size`, as a slow network would.
    fn ingest_split(&mut self, input: &[u8], size: usize) -> String {
        let mut replies = String::new();
        for piece in input.chunks(size) {
            replies.push_str(&self.ingest(piece));
        }
        replies
    }

    fn stored(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.fake.0.borrow().stored.clone()
    }
}

/// The final line of each reply as its code and enhanced code, in order:
/// `["250", "250 2.1.0", "354", ...]` (EHLO and 354 carry no enhanced code).
fn codes(replies: &str) -> Vec<String> {
    let enhanced = |w: &str| {
        w.split('.').count() == 3
            && w.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    replies
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| {
            let mut words = l.split(' ');
            let code = words.next().unwrap_or_default();
            match words.next() {
                Some(w) if enhanced(w) => format!("{code} {w}"),
                _ => code.to_string(),
            }
        })
        .collect()
}

fn assert_code(replies: &str, expected: &str) {
    let got = codes(replies);
    assert_eq!(
        got.last().map(String::as_str),
        Some(expected),
        "replies were: {replies:?}"
    );
}

fn envelope_for(to: &[&str]) -> String {
    let mut s = String::from("EHLO client.example\r\nMAIL FROM:<journal@contoso.example>\r\n");
    for t in to {
        s.push_str(&format!("RCPT TO:<{t}@localhost>\r\n"));
    }
    s
}

/// The stored message without our Received header.
fn body_of(stored: &[u8]) -> &[u8] {
    let text = stored;
    let mut i = 0;
    // The header ends at the first CRLF not followed by a tab.
    while i + 2 < text.len() {
        if &text[i..i + 2] == b"\r\n" && text[i + 2] != b'\t' {
            return &text[i + 2..];
        }
        i += 1;
    }
    &[]
}

#[test]
fn greeting_is_220_with_the_hostname_and_554_for_a_client_not_allowed() {
    let mut h = Harness::tls();
    let mut out = Vec::new();
    assert!(matches!(h.session.greeting(&mut out), Step::Continue));
    assert_eq!(out, b"220 gw.example ESMTP Sealpost\r\n");
    // RFC 5321 section 3.1: the 554 greeting, then the end.
    let mut refused = Harness::tls().session.refusing();
    let mut out = Vec::new();
    assert!(matches!(refused.greeting(&mut out), Step::Close));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "554 5.7.1 gw.example Access denied for 192.0.2.7\r\n"
    );
}

#[test]
fn ehlo_lists_the_extensions_and_starttls_only_before_tls() {
    let mut plain = Harness::with(settings(), None);
    let reply = plain.ingest(b"EHLO client.example\r\n");
    for ext in [
        "PIPELINING",
        "SIZE 1000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "STARTTLS",
    ] {
        assert!(
            reply.contains(&format!("250-{ext}\r\n")) || reply.contains(&format!("250 {ext}\r\n")),
            "{ext} in {reply}"
        );
    }
    let mut secure = Harness::tls();
    assert!(
        !secure
            .ingest(b"EHLO client.example\r\n")
            .contains("STARTTLS")
    );
}

#[test]
fn helo_is_answered_with_a_plain_250() {
    let mut h = Harness::tls();
    assert_eq!(h.ingest(b"HELO client.example\r\n"), "250 gw.example\r\n");
}

#[test]
fn mail_before_ehlo_is_out_of_sequence() {
    let mut h = Harness::tls();
    assert_code(&h.ingest(b"MAIL FROM:<a@b.example>\r\n"), "503 5.5.1");
}

#[test]
fn mail_before_starttls_is_refused_when_tls_is_required() {
    let mut h = Harness::with(settings(), None);
    assert_code(
        &h.ingest(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n"),
        "530 5.7.0",
    );
    assert_code(&h.ingest(b"STARTTLS\r\n"), "220 2.0.0");
    assert_eq!(h.last_signal, Signal::StartTls);
    h.session.tls_started(tls());
    assert_code(&h.ingest(b"MAIL FROM:<a@b.example>\r\n"), "503 5.5.1");
    assert_code(
        &h.ingest(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n"),
        "250 2.1.0",
    );
}

#[test]
fn mail_without_tls_is_fine_when_tls_is_not_required() {
    let mut h = Harness::with(
        Settings {
            require_tls: false,
            ..settings()
        },
        None,
    );
    assert_code(
        &h.ingest(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n"),
        "250 2.1.0",
    );
}

#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    let mut h = Harness::with(settings(), None);
    h.ingest(b"EHLO c\r\n");
    let replies = h.ingest(b"STARTTLS\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<mbx-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@localhost>\r\n");
    assert_eq!(
        codes(&replies),
        ["220 2.0.0"],
        "nothing after STARTTLS may be answered"
    );
    assert_eq!(h.last_signal, Signal::StartTls);
    h.session.tls_started(tls());
    // Inside TLS the state is fresh: the injected MAIL was never executed.
    assert_code(
        &h.ingest(b"RCPT TO:<mbx-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@localhost>\r\n"),
        "503 5.5.1",
    );
}

#[test]
fn a_partial_command_before_starttls_is_forgotten() {
    let mut h = Harness::with(settings(), None);
    h.ingest(b"EHLO c\r\n");
    // STARTTLS, a whole command and half of another in one packet.
    let replies = h.ingest(b"STARTTLS\r\nNOOP\r\nMAIL FR");
    assert_eq!(
        codes(&replies),
        ["220 2.0.0"],
        "nothing after STARTTLS is answered"
    );
    assert_eq!(h.last_signal, Signal::StartTls);
    h.session.tls_started(tls());
    assert!(h.session.is_idle() && !h.session.has_partial_command());
    // The rest of the half command is a command of its own now, and not a MAIL.
    assert_code(&h.ingest(b"OM:<a@b.example>\r\n"), "500 5.5.2");
    assert_code(&h.ingest(b"EHLO c\r\n"), "250");
    assert_code(
        &h.ingest(b"RCPT TO:<mbx-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@localhost>\r\n"),
        "503 5.5.1",
    );
}

#[test]
fn starttls_twice_or_inside_a_transaction_is_refused() {
    let mut h = Harness::tls();
    assert_code(&h.ingest(b"EHLO c\r\nSTARTTLS\r\n"), "503 5.5.1");
    let mut h = Harness::with(
        Settings {
            require_tls: false,
            ..settings()
        },
        None,
    );
    assert_code(
        &h.ingest(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nSTARTTLS\r\n"),
        "503 5.5.1",
    );
}

#[test]
fn nested_mail_is_refused() {
    let mut h = Harness::tls();
    assert_code(
        &h.ingest(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nMAIL FROM:<a@b.example>\r\n"),
        "503 5.5.1",
    );
}

#[test]
fn declared_size_over_the_limit_is_refused_at_mail() {
    let mut h = Harness::tls();
    assert_code(
        &h.ingest(b"EHLO c\r\nMAIL FROM:<a@b.example> SIZE=1001\r\n"),
        "552 5.3.4",
    );
    assert_code(
        &h.ingest(b"MAIL FROM:<a@b.example> SIZE=1000\r\n"),
        "250 2.1.0",
    );
}

#[test]
fn rcpt_before_mail_is_out_of_sequence() {
    let mut h = Harness::tls();
    assert_code(
        &h.ingest(b"EHLO c\r\nRCPT TO:<mbx-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@localhost>\r\n"),
        "503 5.5.1",
    );
}

#[test]
fn recipients_are_checked_case_insensitively() {
    let mut h = Harness::tls();
    h.ingest(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
    assert_code(
        &h.ingest(b"RCPT TO:<MBX-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@LOCALHOST>\r\n"),
        "250 2.1.5",
    );
}

#[test]
fn unknown_mailboxes_are_550_5_1_1() {
    let mut h = Harness::tls();
    h.ingest(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
    assert_code(
        &h.ingest(b"RCPT TO:<mbx-dddddddddddddddddddddddddddddddd@localhost>\r\n"),
        "550 5.1.1",
    );
    assert_code(
        &h.ingest(b"RCPT TO:<postmaster@localhost>\r\n"),
        "550 5.1.1",
    );
}

#[test]
fn other_domains_are_never_relayed() {
    let mut h = Harness::tls();
    h.ingest(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
    assert_code(
        &h.ingest(b"RCPT TO:<mbx-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@elsewhere.example>\r\n"),
        "550 5.7.1",
    );
}

#[test]
fn suspended_mailboxes_get_a_temporary_450_4_2_1() {
    let mut h = Harness::tls();
    h.ingest(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
    assert_code(
        &h.ingest(format!("RCPT TO:<{SUSPENDED}@localhost>\r\n").as_bytes()),
        "450 4.2.1",
    );
}

#[test]
fn a_store_that_cannot_be_asked_is_451() {
    let mut h = Harness::tls();
    h.ingest(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
    assert_code(
        &h.ingest(b"RCPT TO:<unavailable@localhost>\r\n"),
        "451 4.3.0",
    );
}

#[test]
fn below_the_disk_reserve_mail_and_rcpt_get_452_4_3_1_and_intake_resumes_above_it() {
    let mut h = Harness::tls();
    h.ingest(b"EHLO c\r\n");
    h.fake.0.borrow_mut().below_reserve = true;
    assert_code(&h.ingest(b"MAIL FROM:<a@b.example>\r\n"), "452 4.3.1");
    h.fake.0.borrow_mut().below_reserve = false;
    assert_code(&h.ingest(b"MAIL FROM:<a@b.example>\r\n"), "250 2.1.0");
    // Crossed between MAIL and RCPT.
    h.fake.0.borrow_mut().below_reserve = true;
    assert_code(
        &h.ingest(format!("RCPT TO:<{A}@localhost>\r\n").as_bytes()),
        "452 4.3.1",
    );
    h.fake.0.borrow_mut().below_reserve = false;
    assert_code(
        &h.ingest(format!("RCPT TO:<{A}@localhost>\r\n").as_bytes()),
        "250 2.1.5",
    );
}

#[test]
fn more_than_max_recipients_get_452_4_5_3() {
    let mut h = Harness::tls();
    h.ingest(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
    for _ in 0..3 {
        assert_code(
            &h.ingest(format!("RCPT TO:<{A}@localhost>\r\n").as_bytes()),
            "250 2.1.5",
        );
    }
    assert_code(
        &h.ingest(format!("RCPT TO:<{B}@localhost>\r\n").as_bytes()),
        "452 4.5.3",
    );
}

#[test]
fn non_ascii_addresses_need_smtputf8() {
    let mut h = Harness::tls();
    assert_code(
        &h.ingest("EHLO c\r\nMAIL FROM:<jürgen@bücher.example>\r\n".as_bytes()),
        "553 5.6.7",
    );
    assert_code(
        &h.ingest("MAIL FROM:<jürgen@bücher.example> SMTPUTF8\r\n".as_bytes()),
        "250 2.1.0",
    );
}

#[test]
fn data_without_recipients_is_554_and_without_mail_503() {
    let mut h = Harness::tls();
    assert_code(&h.ingest(b"EHLO c\r\nDATA\r\n"), "503 5.5.1");
    assert_code(
        &h.ingest(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<nobody@localhost>\r\nDATA\r\n"),
        "554 5.5.1",
    );
}

#[test]
fn a_message_is_stored_with_a_received_header_at_every_split() {
    let message = b"Subject: hello\r\n\r\n..dotted line\r\nbody\r\n";
    let mut wire = envelope_for(&[A]).into_bytes();
    wire.extend_from_slice(
        b"DATA\r\nSubject: hello\r\n\r\n...dotted line\r\nbody\r\n.\r\nQUIT\r\n",
    );
    for size in 1..=wire.len() {
        let mut h = Harness::tls();
        let replies = h.ingest_split(&wire, size);
        assert_eq!(
            codes(&replies),
            [
                "250",
                "250 2.1.0",
                "250 2.1.5",
                "354",
                "250 2.0.0",
                "221 2.0.0"
            ],
            "split {size}"
        );
        let stored = h.stored();
        assert_eq!(stored.len(), 1);
        let (envelope, bytes) = &stored[0];
        assert!(
            bytes.starts_with(b"Received: from client.example ([192.0.2.7])\r\n\t(using TLSv1.3"),
            "split {size}"
        );
        assert_eq!(body_of(bytes), message, "split {size}");
        assert_eq!(envelope.mail_from, "journal@contoso.example");
        assert_eq!(envelope.size, message.len() as u64);
        assert_eq!(envelope.tls.as_deref(), Some("TLSv1.3"));
        assert_eq!(h.last_signal, Signal::Close);
    }
}

#[test]
fn one_message_to_several_mailboxes_is_one_delivery_with_every_recipient() {
    let mut h = Harness::tls();
    let mut wire = envelope_for(&[A, B]).into_bytes();
    wire.extend_from_slice(b"DATA\r\nx\r\n.\r\n");
    assert_code(&h.ingest(&wire), "250 2.0.0");
    let stored = h.stored();
    assert_eq!(stored.len(), 1);
    let ids: Vec<&str> = stored[0]
        .0
        .recipients
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(ids, [A, B]);
}

#[test]
fn pipelined_transactions_each_get_their_reply_in_order() {
    let mut h = Harness::tls();
    let mut wire = String::from("EHLO c\r\n");
    for i in 0..3 {
        wire.push_str(&format!(
            "MAIL FROM:<s{i}@b.example>\r\nRCPT TO:<{A}@localhost>\r\nDATA\r\nmessage {i}\r\n.\r\n"
        ));
    }
    let replies = h.ingest(wire.as_bytes());
    let expected: Vec<&str> =
        std::iter::repeat_n(["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"], 3)
            .flatten()
            .collect();
    assert_eq!(codes(&replies)[1..], expected);
    let bodies: Vec<Vec<u8>> = h
        .stored()
        .iter()
        .map(|(_, b)| body_of(b).to_vec())
        .collect();
    assert_eq!(
        bodies,
        [
            b"message 0\r\n".to_vec(),
            b"message 1\r\n".to_vec(),
            b"message 2\r\n".to_vec()
        ]
    );
}

#[test]
fn data_over_the_limit_is_drained_then_refused_with_552() {
    let mut h = Harness::tls();
    let mut wire = envelope_for(&[A]).into_bytes();
    wire.extend_from_slice(b"DATA\r\n");
    for _ in 0..50 {
        wire.extend_from_slice(&[b'x'; 98]);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\nNOOP\r\n");
    let replies = h.ingest_split(&wire, 333);
    assert_eq!(
        codes(&replies),
        [
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "552 5.3.4",
            "250 2.0.0"
        ]
    );
    assert!(h.stored().is_empty());
}

#[test]
fn bare_line_endings_reject_the_whole_message_and_never_split_it() {
    for vector in [&b"\n.\n"[..], b"\n.\r\n", b"\r.\r", b"\r\n.\n"] {
        let mut h = Harness::tls();
        let mut wire = envelope_for(&[A]).into_bytes();
        wire.extend_from_slice(b"DATA\r\nSubject: one\r\n\r\nbody");
        wire.extend_from_slice(vector);
        wire.extend_from_slice(format!("MAIL FROM:<evil@x.example>\r\nRCPT TO:<{B}@localhost>\r\nDATA\r\nSubject: smuggled\r\n").as_bytes());
        wire.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
        let replies = h.ingest(&wire);
        assert_eq!(
            codes(&replies),
            [
                "250",
                "250 2.1.0",
                "250 2.1.5",
                "354",
                "550 5.6.0",
                "250 2.0.0"
            ],
            "{vector:?}"
        );
        assert!(h.stored().is_empty(), "{vector:?}: nothing may be stored");
    }
}

#[test]
fn bdat_chunks_make_one_message() {
    let mut h = Harness::tls();
    let mut wire = envelope_for(&[A]).into_bytes();
    wire.extend_from_slice(b"BDAT 8\r\nSubject:BDAT 9 LAST\r\n hi\r\nxy\r\n");
    let replies = h.ingest_split(&wire, 5);
    assert_eq!(
        codes(&replies),
        ["250", "250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.0.0"]
    );
    assert_eq!(body_of(&h.stored()[0].1), b"Subject: hi\r\nxy\r\n");
}

#[test]
fn bdat_zero_last_ends_a_message() {
    let mut h = Harness::tls();
    let mut wire = envelope_for(&[A]).into_bytes();
    wire.extend_from_slice(b"BDAT 3\r\nx\r\nBDAT 0 LAST\r\n");
    assert_code(&h.ingest(&wire), "250 2.0.0");
    assert_eq!(body_of(&h.stored()[0].1), b"x\r\n");
}

#[test]
fn bdat_and_data_transactions_alternate_on_one_connection() {
    let mut h = Harness::tls();
    let mut wire = envelope_for(&[A]).into_bytes();
    wire.extend_from_slice(b"BDAT 3 LAST\r\none");
    wire.extend_from_slice(
        format!("MAIL FROM:<a@b.example>\r\nRCPT TO:<{A}@localhost>\r\nDATA\r\ntwo\r\n.\r\n")
            .as_bytes(),
    );
    wire.extend_from_slice(
        format!("MAIL FROM:<a@b.example>\r\nRCPT TO:<{A}@localhost>\r\nBDAT 5 LAST\r\nthree")
            .as_bytes(),
    );
    let replies = h.ingest(&wire);
    assert_eq!(
        codes(&replies).iter().filter(|c| *c == "250 2.0.0").count(),
        3,
        "{replies}"
    );
    assert_eq!(h.stored().len(), 3);
}

#[test]
fn bdat_without_mail_is_refused_but_its_bytes_are_still_read() {
    let mut h = Harness::tls();
    let replies = h.ingest(b"EHLO c\r\nBDAT 6 LAST\r\nNOOP\r\nNOOP\r\n");
    assert_eq!(
        codes(&replies),
        ["250", "503 5.5.1", "250 2.0.0"],
        "the chunk is skipped, the next command is read"
    );
}

#[test]
fn data_after_bdat_in_one_transaction_is_refused() {
    let mut h = Harness::tls();
    let mut wire = envelope_for(&[A]).into_bytes();
    wire.extend_from_slice(b"BDAT 2\r\nabDATA\r\n");
    assert_code(&h.ingest(&wire), "503 5.5.1");
}

#[test]
fn bdat_over_the_limit_is_552() {
    let mut h = Harness::tls();
    let mut wire = envelope_for(&[A]).into_bytes();
    wire.extend_from_slice(b"BDAT 1001\r\n");
    wire.extend_from_slice(&[b'x'; 1001]);
    wire.extend_from_slice(b"BDAT 0 LAST\r\n");
    let replies = h.ingest(&wire);
    assert_eq!(
        codes(&replies),
        ["250", "250 2.1.0", "250 2.1.5", "552 5.3.4", "503 5.5.1"]
    );
    assert!(h.stored().is_empty());
}

#[test]
fn bdat_with_a_bare_lf_is_rejected_at_last() {
    let mut h = Harness::tls();
    let mut wire = envelope_for(&[A]).into_bytes();
    wire.extend_from_slice(b"BDAT 4 LAST\r\na\nb\n");
    assert_code(&h.ingest(&wire), "550 5.6.0");
    assert!(h.stored().is_empty());
}

#[test]
fn over_long_command_lines_are_500_5_5_2() {
    let mut h = Harness::tls();
    let mut wire = b"NOOP ".to_vec();
    wire.extend_from_slice(&[b'x'; 600]);
    wire.extend_from_slice(b"\r\nNOOP\r\n");
    assert_eq!(
        codes(&h.ingest_split(&wire, 50)),
        ["500 5.5.2", "250 2.0.0"]
    );
}

#[test]
fn the_small_commands() {
    let mut h = Harness::tls();
    assert_code(&h.ingest(b"NOOP\r\n"), "250 2.0.0");
    assert_code(&h.ingest(b"VRFY someone\r\n"), "252 2.5.0");
    assert_code(&h.ingest(b"EXPN list\r\n"), "502 5.5.1");
    assert_code(&h.ingest(b"HELP\r\n"), "214 2.0.0");
    assert_code(&h.ingest(b"AUTH PLAIN AGEAYg==\r\n"), "502 5.5.1");
    assert_code(&h.ingest(b"WHAT\r\n"), "500 5.5.2");
    assert_code(
        &h.ingest(b"MAIL FROM:<a@b.example> RET=FULL\r\n"),
        "555 5.5.4",
    );
    assert_code(&h.ingest(b"EHLO\r\n"), "501 5.5.4");
    assert_code(&h.ingest(b"EHLO c\r\nMAIL FROM:<bad\r\n"), "501 5.1.7");
    assert_code(
        &h.ingest(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bad\r\n"),
        "501 5.1.3",
    );
    assert_code(&h.ingest(b"RCPT TO:<>\r\n"), "501 5.1.3");
    assert_code(
        &h.ingest(b"MAIL FROM:<a@b.example>\r\nRSET\r\n"),
        "250 2.0.0",
    );
    assert_code(
        &h.ingest(format!("RCPT TO:<{A}@localhost>\r\n").as_bytes()),
        "503 5.5.1",
    );
    assert_code(&h.ingest(b"QUIT\r\n"), "221 2.0.0");
    assert_eq!(h.last_signal, Signal::Close);
    assert_eq!(h.ingest(b"NOOP\r\n"), "", "nothing is answered after QUIT");
}

#[test]
fn a_storage_failure_is_always_a_temporary_451() {
    let mut wire = envelope_for(&[A]).into_bytes();
    wire.extend_from_slice(b"DATA\r\nx\r\n.\r\n");
    let mut h = Harness::tls();
    h.fake.0.borrow_mut().fail_start = true;
    assert_code(&h.ingest(&wire[..wire.len() - 6]), "451 4.3.0");

    for setup in [
        |s: &mut Shared| s.fail_write = true,
        |s: &mut Shared| s.fail_deliver = true,
    ] {
        let mut h = Harness::tls();
        setup(&mut h.fake.0.borrow_mut());
        let replies = h.ingest(&wire);
        assert_code(&replies, "451 4.3.0");
        assert!(h.stored().is_empty());
    }
}

#[test]
fn the_session_reports_when_it_waits_for_data() {
    let mut h = Harness::tls();
    h.ingest(envelope_for(&[A]).as_bytes());
    assert!(!h.session.expecting_data());
    assert!(!h.session.is_idle(), "a transaction is open");
    h.ingest(b"DATA\r\npartial");
    assert!(h.session.expecting_data());
    h.ingest(b"\r\n.\r\n");
    assert!(h.session.is_idle());
}

#[test]
fn eight_bit_mime_and_smtputf8_show_in_the_received_header() {
    let mut h = Harness::tls();
    let wire = format!(
        "EHLO c\r\nMAIL FROM:<jürgen@bücher.example> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<{A}@localhost>\r\nDATA\r\nGrüße\r\n.\r\n"
    );
    assert_code(&h.ingest(wire.as_bytes()), "250 2.0.0");
    let stored = &h.stored()[0].1;
    let header =
        String::from_utf8_lossy(&stored[..stored.len() - body_of(stored).len()]).into_owned();
    assert!(header.contains("with UTF8SMTPS (8BITMIME) id"), "{header}");
    assert_eq!(body_of(stored), "Grüße\r\n".as_bytes());
}

#[test]
fn the_error_limit_closes_with_421_after_twenty_errors() {
    let mut h = Harness::tls();
    let replies = h.ingest(&b"XYZZY\r\n".repeat(30));
    let got = codes(&replies);
    assert_eq!(got.len(), 21, "{replies}");
    assert!(got[..20].iter().all(|c| c == "500 5.5.2"));
    assert_eq!(got[20], "421 4.7.0");
    assert!(replies.contains("Error: too many errors"));
    assert_eq!(h.last_signal, Signal::Close);
}

#[test]
fn errors_beyond_the_soft_limit_are_answered_ever_more_slowly() {
    let mut h = Harness::tls();
    h.ingest(&b"XYZZY\r\n".repeat(10));
    assert_eq!(h.session.take_delay(), Duration::ZERO);
    h.ingest(b"XYZZY\r\n");
    assert_eq!(h.session.take_delay(), Duration::from_secs(1));
    h.ingest(b"XYZZY\r\n");
    assert_eq!(h.session.take_delay(), Duration::from_secs(2));
}

#[test]
fn a_delivered_message_forgives_earlier_errors() {
    let mut h = Harness::tls();
    h.ingest(b"EHLO c\r\n");
    h.ingest(&b"XYZZY\r\n".repeat(15));
    let replies = h.ingest(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<mbx-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@localhost>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_code(&replies, "250 2.0.0");
    let replies = h.ingest(&b"XYZZY\r\n".repeat(19));
    assert!(!replies.contains("421"), "{replies}");
}

#[test]
fn a_partial_command_line_is_known_to_the_driver() {
    let mut h = Harness::tls();
    assert!(!h.session.has_partial_command());
    h.ingest(b"EHLO c");
    assert!(h.session.has_partial_command());
    h.ingest(b"\r\n");
    assert!(!h.session.has_partial_command());
}

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::net::line::tests::split_at_cuts;

    /// Command lines a client might send, good and bad, and some data.
    fn traffic() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"EHLO c.example\r\n".to_vec()),
            Just(b"MAIL FROM:<a@b.example>\r\n".to_vec()),
            Just(b"RCPT TO:<mbx-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@localhost>\r\n".to_vec()),
            Just(b"RCPT TO:<nobody@elsewhere.example>\r\n".to_vec()),
            Just(b"DATA\r\n".to_vec()),
            Just(b"BDAT 5\r\nhello".to_vec()),
            Just(b"BDAT 0 LAST\r\n".to_vec()),
            Just(b"Subject: x\r\n\r\nbody\r\n.\r\n".to_vec()),
            Just(b"\n.\n".to_vec()),
            Just(b"RSET\r\nNOOP\r\n".to_vec()),
            Just(b"STARTTLS\r\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..40),
        ];
        prop::collection::vec(piece, 0..20).prop_map(|p| p.concat())
    }

    /// Feeds the pieces as the driver would (stopping at a close or an
    /// upgrade); returns the replies with the random queue ids masked.
    fn replies(pieces: &[Vec<u8>]) -> String {
        let mut h = Harness::tls();
        let mut all = String::new();
        for piece in pieces {
            all.push_str(&h.ingest(piece));
            if h.last_signal != Signal::Continue {
                break;
            }
        }
        all.split("queued as ")
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part.to_string()
                } else {
                    format!("ID{}", &part[12..])
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn the_session_answers_the_same_at_any_split(
            input in traffic(),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
        ) {
            let whole = replies(std::slice::from_ref(&input));
            let split = replies(&split_at_cuts(&input, &cuts));
            prop_assert_eq!(whole, split);
        }
    }
}

#[test]
fn a_mailbox_deleted_during_the_transaction_is_a_permanent_550() {
    let mut h = Harness::tls();
    h.fake.0.borrow_mut().mailbox_gone = true;
    let replies = h.ingest(
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<mbx-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@localhost>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_code(&replies, "550 5.1.1");
}
