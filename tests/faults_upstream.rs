//! Fault: a provider that breaks off in the middle of a response or answers
//! nonsense. The client gets a clear error or a closed connection, no
//! partial copy is ever stored, and nothing is deleted upstream without a copy.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use support::ca::TestCa;
use support::gateway::{Gateway, LineClient, code};
use support::scripted::{Peer, Scripted};
use support::{Sandbox, fixture};

const MESSAGE: &str = "Subject: one\r\n\r\nthe first message\r\n";

/// The command word of a line, in capitals.
fn verb(line: &str) -> String {
    line.split(' ')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}

/// A POP3 server that logs anyone in and lists two messages; what happens
/// next is up to `after_login`.
fn pop3_server(mut peer: Peer, after_login: fn(&mut Peer, &str) -> bool) {
    peer.send(b"+OK scripted POP3\r\n");
    while let Some(line) = peer.line() {
        let verb = verb(&line);
        match verb.as_str() {
            "CAPA" => peer.send(b"+OK\r\nUSER\r\nUIDL\r\n.\r\n"),
            "USER" | "PASS" => peer.send(b"+OK\r\n"),
            "UIDL" => peer.send(b"+OK\r\n1 uid-one\r\n2 uid-two\r\n.\r\n"),
            "LIST" => peer.send(format!("+OK\r\n1 {}\r\n2 10\r\n.\r\n", MESSAGE.len()).as_bytes()),
            _ => {
                if !after_login(&mut peer, &line) {
                    return peer.vanish();
                }
            }
        }
    }
}

static DELES: AtomicUsize = AtomicUsize::new(0);

/// RETR sends half a message and hangs up; DELE is counted.
fn closes_mid_retr(peer: Peer) {
    pop3_server(peer, |peer, line| {
        if line.starts_with("RETR") {
            peer.send(format!("+OK\r\n{}", &MESSAGE[..20]).as_bytes());
            return false;
        }
        if line.starts_with("DELE") {
            DELES.fetch_add(1, Ordering::SeqCst);
        }
        peer.send(b"+OK\r\n");
        true
    })
}

/// Answers STAT with something that is not a POP3 status line.
fn nonsense_to_stat(peer: Peer) {
    pop3_server(peer, |peer, line| {
        if line == "STAT" {
            peer.send(b"HELLO THERE\r\n");
        } else {
            peer.send(b"+OK\r\n");
        }
        true
    })
}

struct Setup {
    sb: Sandbox,
    gw: Gateway,
    id: String,
    port: u16,
    _server: Scripted,
}

/// The gateway with its proxies pointed at a scripted provider.
fn setup(label: &str, script: fn(Peer)) -> Setup {
    let sb = Sandbox::for_gateway(
        label,
        json!({ "pop3_proxy": { "listen": [], "listen_tls": ["127.0.0.1:0"] } }),
    );
    let ca = TestCa::new(&sb.dir, "scripted");
    let server = Scripted::start(&sb.dir, &ca, script);
    sb.configure_proxy(&ca.cert_file, server.port(), json!({}));
    let (id, _) = sb.create_mailbox("Office");
    let gw = Gateway::start(&sb);
    Setup {
        sb,
        gw,
        id,
        port: server.port(),
        _server: server,
    }
}

fn pop3_client(s: &Setup) -> LineClient {
    let mut c = LineClient::implicit_tls(s.gw.addr("pop3_proxy.listen_tls[0]"), &s.gw.cert);
    c.read_line();
    assert!(
        c.pop3(&format!("USER anna%localhost:{}%{}", s.port, s.id))
            .starts_with("+OK")
    );
    let answer = c.pop3("PASS secret");
    assert!(answer.starts_with("+OK"), "{answer}");
    c
}

#[test]
fn a_provider_hanging_up_mid_message_leaves_no_copy_and_no_deletion() {
    let s = setup("up-mid-retr", closes_mid_retr);
    let mut c = pop3_client(&s);
    assert!(c.pop3("RETR 1").starts_with("+OK"));
    // Half a message, then the connection ends: never a false end of data.
    let mut rest = Vec::new();
    while let Some(line) = c.read_raw_line() {
        rest.extend_from_slice(&line);
    }
    assert!(!rest.ends_with(b"\r\n.\r\n"), "{rest:?}");
    s.gw.wait_for_log(
        "upstream lost in the middle of a response",
        std::time::Duration::from_secs(10),
    );
    assert!(
        s.sb.message_files(&s.id).is_empty(),
        "a partial copy was stored"
    );

    // DELE of that message needs a copy first; the copy fails the same way.
    let mut c = pop3_client(&s);
    let answer = c.pop3("DELE 1");
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    assert!(c.closed());
    assert_eq!(
        DELES.load(Ordering::SeqCst),
        0,
        "a DELE reached the provider"
    );
    assert!(s.sb.message_files(&s.id).is_empty());
}

#[test]
fn nonsense_from_the_provider_is_a_clear_error_and_a_close() {
    let s = setup("up-nonsense", nonsense_to_stat);
    let mut c = pop3_client(&s);
    assert_eq!(
        c.pop3("STAT"),
        "-ERR [SYS/TEMP] Connection to the upstream server lost\r\n"
    );
    assert!(c.closed());
    s.gw.wait_for_log("not a POP3 status line", std::time::Duration::from_secs(10));
}

/// An SMTP submission server that takes any login; `on_mail` decides the rest.
fn smtp_server(mut peer: Peer, after_rcpt: fn(&mut Peer, &str) -> bool) {
    peer.send(b"220 scripted ESMTP\r\n");
    while let Some(line) = peer.line() {
        let verb = verb(&line);
        match verb.as_str() {
            "EHLO" => peer.send(b"250-scripted\r\n250 AUTH PLAIN\r\n"),
            "AUTH" => peer.send(b"235 2.7.0 ok\r\n"),
            "RCPT" | "RSET" | "NOOP" => peer.send(b"250 2.0.0 ok\r\n"),
            "QUIT" => return peer.send(b"221 bye\r\n"),
            _ => {
                if !after_rcpt(&mut peer, &line) {
                    return peer.vanish();
                }
            }
        }
    }
}

/// Answers MAIL with nonsense.
fn nonsense_to_mail(peer: Peer) {
    smtp_server(peer, |peer, _| {
        peer.send(b"what is this\r\n");
        true
    })
}

/// Takes MAIL, then hangs up in the middle of the message.
fn hangs_up_mid_data(peer: Peer) {
    smtp_server(peer, |peer, line| {
        if line.starts_with("MAIL") {
            peer.send(b"250 2.1.0 ok\r\n");
            return true;
        }
        if line == "DATA" {
            peer.send(b"354 go on\r\n");
            let _ = peer.line();
        }
        false
    })
}

fn smtp_client(s: &Setup) -> LineClient {
    let mut c = LineClient::implicit_tls(s.gw.addr("smtp_proxy.listen_tls[0]"), &s.gw.cert);
    c.smtp_reply();
    c.smtp("EHLO client.example");
    let token = sealpost::crypto::base64_encode(
        format!("\0anna%localhost:{}%{}\0pw", s.port, s.id).as_bytes(),
    );
    assert_eq!(code(&c.smtp(&format!("AUTH PLAIN {token}"))), 235);
    c
}

#[test]
fn a_nonsense_smtp_reply_closes_with_421_and_stores_nothing() {
    let s = setup("up-smtp-nonsense", nonsense_to_mail);
    let mut c = smtp_client(&s);
    let reply = c.smtp("MAIL FROM:<anna@example.test>");
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert!(c.closed());
    assert!(s.sb.message_files(&s.id).is_empty());
}

#[test]
fn a_provider_hanging_up_mid_message_keeps_no_copy_and_the_client_retries() {
    let s = setup("up-smtp-mid-data", hangs_up_mid_data);
    let mut c = smtp_client(&s);
    assert_eq!(code(&c.smtp("MAIL FROM:<anna@example.test>")), 250);
    assert_eq!(code(&c.smtp("RCPT TO:<ben@example.org>")), 250);
    assert_eq!(code(&c.smtp("DATA")), 354);
    let mut message = fixture("attachment-3mb.eml");
    message.extend_from_slice(b".\r\n");
    c.send_raw(&message);
    let reply = c.smtp_reply();
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert!(
        s.sb.message_files(&s.id).is_empty(),
        "a copy of an unsent message was kept"
    );
    s.gw.wait_for_no_spool();
}

/// Set once the silent provider below has a connection.
static SILENT_REACHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A provider that completes the TLS handshake and then never says a word.
fn silent(mut peer: Peer) {
    SILENT_REACHED.store(true, std::sync::atomic::Ordering::SeqCst);
    while peer.line().is_some() {}
}

#[test]
fn a_stopping_gateway_does_not_wait_out_a_provider_that_never_answers() {
    let sb = Sandbox::for_gateway(
        "upstream-silent-stop",
        json!({
            "pop3_proxy": { "listen": [], "listen_tls": ["127.0.0.1:0"] },
            "limits": { "shutdown_grace_secs": 60 },
        }),
    );
    let ca = TestCa::new(&sb.dir, "scripted");
    let server = Scripted::start(&sb.dir, &ca, silent);
    let port = server.port();
    // The proxy would wait 120 s for the provider's greeting.
    sb.configure_proxy(
        &ca.cert_file,
        server.port(),
        json!({ "connect_timeout_secs": 120 }),
    );
    let (id, _) = sb.create_mailbox("Office");
    let mut gw = Gateway::start(&sb);
    let addr = gw.addr("pop3_proxy.listen_tls[0]");
    let cert = gw.cert.clone();
    let client = std::thread::spawn(move || {
        let mut c = LineClient::implicit_tls(addr, &cert);
        c.set_timeout(std::time::Duration::from_secs(150));
        c.read_line();
        c.pop3(&format!("USER anna%localhost:{port}%{id}"));
        c.pop3("PASS secret")
    });
    support::wait_until("the proxy reaches the silent provider", || {
        SILENT_REACHED.load(std::sync::atomic::Ordering::SeqCst)
    });
    let stopped = std::time::Instant::now();
    gw.signal(libc::SIGTERM);
    let status = gw.wait(std::time::Duration::from_secs(90));
    assert!(status.success(), "{status:?}\n{}", gw.log());
    // Not the 60 s grace, nor the 120 s upstream deadline: the wait for the
    // provider ends with the stop.
    assert!(
        stopped.elapsed() < std::time::Duration::from_secs(20),
        "took {:?} to stop",
        stopped.elapsed()
    );
    let answer = client.join().unwrap();
    assert!(answer.starts_with("-ERR") || answer.is_empty(), "{answer}");
}
