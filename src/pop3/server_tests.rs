//! POP3 rules, one short test per rule, driven through bytes in and
//! responses out (no sockets): every command in every state.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::failure::Failure;
use crate::net::driver::Protocol;

const PASSWORD: &str = "right password";

#[derive(Default)]
struct Shared {
    logins: usize,
    deleted: Vec<usize>,
    delete_calls: usize,
    fail_delete: bool,
    next_error: Option<LoginError>,
}

#[derive(Clone, Default)]
struct Fake(Rc<RefCell<Shared>>);

struct FakeDrop {
    shared: Fake,
    listing: Vec<Listing>,
    bodies: Vec<Vec<u8>>,
}

impl Maildrop for FakeDrop {
    fn listing(&self) -> &[Listing] {
        &self.listing
    }

    fn open(&mut self, index: usize) -> Result<Box<dyn Read>, MessageError> {
        if self.bodies[index].starts_with(b"DAMAGED") {
            return Err(MessageError::Damaged);
        }
        Ok(Box::new(io::Cursor::new(self.bodies[index].clone())))
    }

    fn delete(&mut self, indexes: &[usize]) -> Result<(), Failure> {
        let mut shared = self.shared.0.borrow_mut();
        shared.delete_calls += 1;
        if shared.fail_delete {
            return Err(Failure::Temporary(
                "cannot remove messages: read-only file system".into(),
            ));
        }
        shared.deleted.extend_from_slice(indexes);
        Ok(())
    }
}

impl Backend for Fake {
    type Maildrop = FakeDrop;

    fn login(&mut self, user: &str, password: Password) -> Result<FakeDrop, LoginError> {
        let mut shared = self.0.borrow_mut();
        shared.logins += 1;
        if let Some(e) = shared.next_error.take() {
            return Err(e);
        }
        if user != "mbx-1" || password.expose() != PASSWORD {
            return Err(LoginError::Failed(std::time::Duration::from_millis(1500)));
        }
        let bodies = vec![
            b"Subject: one\r\n\r\n.starts with a dot\r\nline 2\r\n".to_vec(),
            b"DAMAGED".to_vec(),
            b"Subject: three\r\n\r\nbody\r\n".to_vec(),
        ];
        let listing = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| Listing {
                uidl: format!("uid-{}", i + 1),
                size: b.len() as u64,
            })
            .collect();
        Ok(FakeDrop {
            shared: self.clone(),
            listing,
            bodies,
        })
    }
}

struct Harness {
    session: Session<Fake>,
    fake: Fake,
    last: &'static str,
}

fn tls() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
    }
}

impl Harness {
    fn new(tls: Option<TlsInfo>) -> Harness {
        let fake = Fake::default();
        Harness {
            session: Session::new(
                Settings {
                    max_line_bytes: 255,
                    errors: ErrorPolicy::default(),
                },
                fake.clone(),
                tls,
            ),
            fake,
            last: "continue",
        }
    }

    fn secure() -> Harness {
        Harness::new(Some(tls()))
    }

    fn logged_in() -> Harness {
        let mut h = Harness::secure();
        let r = h.ingest(b"USER mbx-1\r\nPASS right password\r\n");
        assert!(
            r.ends_with("+OK Logged in: 3 messages (75 octets)\r\n"),
            "{r}"
        );
        h
    }

    /// Feeds bytes; streams and pending commands are run to completion, as the driver would.
    fn ingest(&mut self, input: &[u8]) -> String {
        let mut out = Vec::new();
        let mut step = self.session.receive(input, &mut out);
        loop {
            match step {
                Step::Stream => {
                    while self.session.next_chunk(&mut out).unwrap() {}
                    self.last = "continue";
                }
                Step::Upstream(request) => panic!("the POP3 server never asks for {request:?}"),
                Step::Continue => self.last = "continue",
                Step::StartTls => {
                    self.last = "starttls";
                    break;
                }
                Step::Close => {
                    self.last = "close";
                    break;
                }
            }
            if !self.session.has_pending_input() {
                break;
            }
            step = self.session.receive(&[], &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    fn logins(&self) -> usize {
        self.fake.0.borrow().logins
    }
}

#[test]
fn the_greeting_is_ok() {
    let mut h = Harness::secure();
    let mut out = Vec::new();
    h.session.greeting(&mut out);
    assert_eq!(out, b"+OK Sealpost POP3 server ready\r\n");
}

#[test]
fn capa_before_tls_offers_stls_and_no_login() {
    let mut h = Harness::new(None);
    let capa = h.ingest(b"CAPA\r\n");
    assert!(capa.starts_with("+OK"));
    assert!(capa.ends_with("\r\n.\r\n"));
    for cap in [
        "STLS",
        "TOP",
        "UIDL",
        "RESP-CODES",
        "PIPELINING",
        "IMPLEMENTATION Sealpost",
    ] {
        assert!(capa.contains(&format!("\r\n{cap}\r\n")), "{cap} in {capa}");
    }
    assert!(!capa.contains("USER") && !capa.contains("SASL"));
}

#[test]
fn capa_after_tls_offers_user_and_sasl_plain_and_no_stls() {
    let mut h = Harness::secure();
    let capa = h.ingest(b"CAPA\r\n");
    for cap in [
        "USER",
        "SASL PLAIN",
        "TOP",
        "UIDL",
        "RESP-CODES",
        "PIPELINING",
        "IMPLEMENTATION Sealpost",
    ] {
        assert!(capa.contains(&format!("\r\n{cap}\r\n")), "{cap} in {capa}");
    }
    assert!(!capa.contains("STLS"));
}

#[test]
fn every_login_command_before_tls_is_refused_and_never_checked() {
    let mut h = Harness::new(None);
    for line in [
        "USER mbx-1\r\n",
        "PASS right password\r\n",
        "AUTH PLAIN AG1ieC0xAHJpZ2h0IHBhc3N3b3Jk\r\n",
        "AUTH PLAIN\r\n",
    ] {
        let r = h.ingest(line.as_bytes());
        assert!(r.starts_with("-ERR [AUTH] TLS is required"), "{line}: {r}");
    }
    assert_eq!(h.logins(), 0, "the password was never looked at");
}

#[test]
fn stls_upgrades_and_discards_pipelined_commands() {
    let mut h = Harness::new(None);
    let r = h.ingest(b"STLS\r\nUSER mbx-1\r\nPASS right password\r\n");
    assert_eq!(r, "+OK Begin TLS negotiation\r\n");
    assert_eq!(h.last, "starttls");
    h.session.tls_started(tls());
    assert!(!h.session.has_pending_input());
    assert_eq!(
        h.ingest(b"STAT\r\n"),
        "-ERR Log in first (USER/PASS or AUTH PLAIN)\r\n"
    );
    assert_eq!(h.logins(), 0);
    assert!(
        h.ingest(b"STLS\r\n")
            .starts_with("-ERR TLS is already active")
    );
}

#[test]
fn user_pass_logs_in_and_wrong_or_unknown_look_the_same() {
    let mut h = Harness::secure();
    assert_eq!(h.ingest(b"USER nobody\r\n"), "+OK Send your password\r\n");
    let unknown = h.ingest(b"PASS right password\r\n");
    h.ingest(b"USER mbx-1\r\n");
    let wrong = h.ingest(b"PASS wrong password\r\n");
    assert_eq!(unknown, "-ERR [AUTH] Invalid login\r\n");
    assert_eq!(unknown, wrong);
    // The failed-login delay is owed to the driver, which sleeps it (cut
    // short at shutdown); the machine itself never sleeps.
    assert_eq!(
        h.session.take_delay(),
        std::time::Duration::from_millis(3000),
        "two failures, 1.5 s each"
    );
    assert_eq!(h.session.take_delay(), std::time::Duration::ZERO);
    assert_eq!(
        h.ingest(b"PASS right password\r\n"),
        "-ERR Send USER first\r\n"
    );
    h.ingest(b"USER mbx-1\r\n");
    assert!(
        h.ingest(b"PASS right password\r\n")
            .starts_with("+OK Logged in: 3 messages")
    );
}

#[test]
fn auth_plain_with_an_initial_response() {
    let mut h = Harness::secure();
    let response = crate::crypto::base64_encode(b"\0mbx-1\0right password");
    assert!(
        h.ingest(format!("AUTH PLAIN {response}\r\n").as_bytes())
            .starts_with("+OK Logged in")
    );
}

#[test]
fn auth_plain_with_a_continuation_and_cancel() {
    let mut h = Harness::secure();
    assert_eq!(h.ingest(b"AUTH PLAIN\r\n"), "+ \r\n");
    assert_eq!(h.ingest(b"*\r\n"), "-ERR Authentication cancelled\r\n");
    assert_eq!(h.ingest(b"AUTH PLAIN =\r\n"), "+ \r\n");
    let response = crate::crypto::base64_encode(b"\0mbx-1\0right password");
    assert!(
        h.ingest(format!("{response}\r\n").as_bytes())
            .starts_with("+OK Logged in")
    );
}

#[test]
fn auth_refuses_malformed_responses_and_other_mechanisms() {
    let mut h = Harness::secure();
    assert_eq!(
        h.ingest(b"AUTH PLAIN !!!\r\n"),
        "-ERR [AUTH] Malformed PLAIN response\r\n"
    );
    assert!(
        h.ingest(b"AUTH CRAM-MD5\r\n")
            .starts_with("-ERR Unsupported mechanism")
    );
    assert_eq!(
        h.ingest(b"AUTH\r\n"),
        "+OK Supported mechanisms follow\r\nPLAIN\r\n.\r\n"
    );
    assert!(
        h.ingest(b"APOP mbx-1 c4c9334bac560ecc979e58001b3e22fb\r\n")
            .starts_with("-ERR APOP is not supported")
    );
}

#[test]
fn lockout_in_use_and_store_errors_have_response_codes() {
    let mut h = Harness::secure();
    for (error, code) in [
        (LoginError::LockedOut, "-ERR [LOGIN-DELAY] "),
        (LoginError::InUse, "-ERR [IN-USE] "),
        (LoginError::Unavailable, "-ERR [SYS/TEMP] "),
    ] {
        h.fake.0.borrow_mut().next_error = Some(error);
        h.ingest(b"USER mbx-1\r\n");
        assert!(
            h.ingest(b"PASS right password\r\n").starts_with(code),
            "{code}"
        );
    }
}

#[test]
fn stat_list_and_uidl_describe_the_snapshot() {
    let mut h = Harness::logged_in();
    assert_eq!(h.ingest(b"STAT\r\n"), "+OK 3 75\r\n");
    assert_eq!(
        h.ingest(b"LIST\r\n"),
        "+OK Scan listing follows\r\n1 44\r\n2 7\r\n3 24\r\n.\r\n"
    );
    assert_eq!(h.ingest(b"LIST 2\r\n"), "+OK 2 7\r\n");
    assert_eq!(
        h.ingest(b"UIDL\r\n"),
        "+OK Unique ids follow\r\n1 uid-1\r\n2 uid-2\r\n3 uid-3\r\n.\r\n"
    );
    assert_eq!(h.ingest(b"UIDL 3\r\n"), "+OK 3 uid-3\r\n");
    for bad in [
        "LIST 0\r\n",
        "LIST 4\r\n",
        "UIDL 9\r\n",
        "RETR 4\r\n",
        "TOP 0 1\r\n",
        "DELE 99\r\n",
    ] {
        assert_eq!(
            h.ingest(bad.as_bytes()),
            "-ERR No such message\r\n",
            "{bad}"
        );
    }
}

#[test]
fn retr_sends_the_exact_size_and_the_dot_stuffed_message() {
    let mut h = Harness::logged_in();
    assert_eq!(
        h.ingest(b"RETR 1\r\n"),
        "+OK 44 octets\r\nSubject: one\r\n\r\n..starts with a dot\r\nline 2\r\n.\r\n"
    );
}

#[test]
fn top_sends_the_header_and_n_lines() {
    let mut h = Harness::logged_in();
    assert_eq!(
        h.ingest(b"TOP 1 0\r\n"),
        "+OK 44 octets\r\nSubject: one\r\n\r\n.\r\n"
    );
    assert_eq!(
        h.ingest(b"TOP 1 1\r\n"),
        "+OK 44 octets\r\nSubject: one\r\n\r\n..starts with a dot\r\n.\r\n"
    );
}

#[test]
fn a_damaged_message_is_sys_perm_and_the_session_goes_on() {
    let mut h = Harness::logged_in();
    assert_eq!(
        h.ingest(b"RETR 2\r\n"),
        "-ERR [SYS/PERM] Message 2 is damaged and cannot be read\r\n"
    );
    assert!(h.ingest(b"RETR 3\r\n").starts_with("+OK 24 octets\r\n"));
}

#[test]
fn dele_marks_rset_unmarks_and_deleted_messages_disappear() {
    let mut h = Harness::logged_in();
    assert_eq!(h.ingest(b"DELE 1\r\n"), "+OK Message 1 deleted\r\n");
    assert_eq!(
        h.ingest(b"DELE 1\r\n"),
        "-ERR Message 1 already deleted\r\n"
    );
    assert_eq!(h.ingest(b"STAT\r\n"), "+OK 2 31\r\n");
    assert_eq!(h.ingest(b"LIST 1\r\n"), "-ERR No such message\r\n");
    assert_eq!(h.ingest(b"RETR 1\r\n"), "-ERR No such message\r\n");
    assert!(!h.ingest(b"UIDL\r\n").contains("uid-1"));
    assert_eq!(h.ingest(b"RSET\r\n"), "+OK 3 messages (75 octets)\r\n");
    assert_eq!(h.ingest(b"STAT\r\n"), "+OK 3 75\r\n");
}

#[test]
fn quit_removes_marked_messages_and_only_then_says_ok() {
    let mut h = Harness::logged_in();
    h.ingest(b"DELE 1\r\nDELE 3\r\n");
    assert_eq!(
        h.ingest(b"QUIT\r\n"),
        "+OK Sealpost signing off (2 messages deleted)\r\n"
    );
    assert_eq!(h.last, "close");
    assert_eq!(h.fake.0.borrow().deleted, [0, 2]);
}

#[test]
fn a_failed_removal_at_quit_is_an_error() {
    let mut h = Harness::logged_in();
    h.fake.0.borrow_mut().fail_delete = true;
    h.ingest(b"DELE 1\r\n");
    assert_eq!(
        h.ingest(b"QUIT\r\n"),
        "-ERR [SYS/TEMP] Some deleted messages were not removed\r\n"
    );
}

#[test]
fn without_quit_nothing_is_deleted() {
    let mut h = Harness::logged_in();
    h.ingest(b"DELE 1\r\nDELE 2\r\n");
    drop(h.session);
    assert_eq!(h.fake.0.borrow().delete_calls, 0);
}

#[test]
fn quit_before_login_deletes_nothing() {
    let mut h = Harness::secure();
    assert_eq!(h.ingest(b"QUIT\r\n"), "+OK Sealpost signing off\r\n");
    assert_eq!(h.fake.0.borrow().delete_calls, 0);
    assert_eq!(h.ingest(b"NOOP\r\n"), "", "nothing after QUIT");
}

#[test]
fn transaction_commands_before_login_are_refused() {
    let mut h = Harness::secure();
    for line in [
        "STAT", "LIST", "UIDL", "RETR 1", "TOP 1 1", "DELE 1", "RSET", "NOOP",
    ] {
        assert_eq!(
            h.ingest(format!("{line}\r\n").as_bytes()),
            "-ERR Log in first (USER/PASS or AUTH PLAIN)\r\n",
            "{line}"
        );
    }
}

#[test]
fn login_commands_after_login_are_refused() {
    let mut h = Harness::logged_in();
    assert_eq!(h.ingest(b"USER mbx-1\r\n"), "-ERR Already logged in\r\n");
    assert_eq!(h.ingest(b"PASS x\r\n"), "-ERR Already logged in\r\n");
    assert_eq!(h.ingest(b"AUTH PLAIN\r\n"), "-ERR Already logged in\r\n");
    assert_eq!(h.ingest(b"STLS\r\n"), "-ERR TLS is already active\r\n");
    assert_eq!(h.ingest(b"NOOP\r\n"), "+OK \r\n");
    assert!(
        h.ingest(b"CAPA\r\n")
            .starts_with("+OK Capability list follows")
    );
}

#[test]
fn unknown_garbled_and_over_long_lines_are_errors() {
    let mut h = Harness::secure();
    assert_eq!(h.ingest(b"XYZZY\r\n"), "-ERR Unknown command\r\n");
    assert_eq!(
        h.ingest(b"USER \xff\r\n"),
        "-ERR Command line is not valid UTF-8 text\r\n"
    );
    assert_eq!(h.ingest(b"RETR\r\n"), "-ERR Syntax: RETR message\r\n");
    let mut long = b"USER ".to_vec();
    long.extend_from_slice(&[b'a'; 400]);
    long.extend_from_slice(b"\r\nNOOP\r\n");
    assert_eq!(
        h.ingest(&long),
        "-ERR Line too long\r\n-ERR Log in first (USER/PASS or AUTH PLAIN)\r\n"
    );
}

#[test]
fn pipelined_commands_are_answered_in_order_around_a_retr() {
    let mut h = Harness::logged_in();
    let r = h.ingest(b"STAT\r\nRETR 3\r\nDELE 3\r\nSTAT\r\n");
    assert_eq!(
        r,
        "+OK 3 75\r\n+OK 24 octets\r\nSubject: three\r\n\r\nbody\r\n.\r\n+OK Message 3 deleted\r\n+OK 2 51\r\n"
    );
}

#[test]
fn a_whole_session_gives_the_same_responses_at_every_split() {
    let input =
        b"CAPA\r\nUSER mbx-1\r\nPASS right password\r\nLIST\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n";
    let expected = Harness::secure().ingest(input);
    for size in 1..=input.len() {
        let mut h = Harness::secure();
        let mut got = String::new();
        for piece in input.chunks(size) {
            got.push_str(&h.ingest(piece));
        }
        assert_eq!(got, expected, "split {size}");
        assert_eq!(h.fake.0.borrow().deleted, [0]);
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::net::line::tests::split_at_cuts;

    fn traffic() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"CAPA\r\n".to_vec()),
            Just(b"USER mbx-1\r\n".to_vec()),
            Just(b"PASS right password\r\n".to_vec()),
            Just(b"PASS wrong\r\n".to_vec()),
            Just(b"AUTH PLAIN\r\n".to_vec()),
            Just(b"STAT\r\nLIST\r\nUIDL 1\r\n".to_vec()),
            Just(b"RETR 1\r\n".to_vec()),
            Just(b"RETR 2\r\nTOP 3 0\r\n".to_vec()),
            Just(b"DELE 1\r\nRSET\r\n".to_vec()),
            Just(b"QUIT\r\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..40),
        ];
        prop::collection::vec(piece, 0..20).prop_map(|p| p.concat())
    }

    fn replies(pieces: &[Vec<u8>]) -> String {
        let mut h = Harness::new(Some(tls()));
        let mut all = String::new();
        for piece in pieces {
            all.push_str(&h.ingest(piece));
            if h.last != "continue" {
                break;
            }
        }
        all
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
