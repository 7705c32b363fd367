//! A hostile or broken ACME server, and hostile clients of the two web
//! listeners certificates need: each is a clear error in the log and in
//! `status`, the current certificate stays, the gateway goes on serving
//! mail, and the sixth order of a day waits (Let's Encrypt's rate limits).
//! No Pebble here: a scripted server answers what no real CA would.

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::ca::TestCa;
use support::gateway::{Gateway, LineClient};
use support::https::Client;
use support::scripted::{Peer, Scripted, Start};
use support::{Sandbox, stderr, stdout, wait_until};

/// What the scripted certificate authority does with the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Garbage,
    Huge,
    Redirect,
    Trickle,
    /// Served by a second server whose certificate the gateway does not
    /// trust (the forwarder switches to it).
    WrongCertificate,
}

/// Answers one request as `mode` says.
fn answer(mut peer: Peer, mode: Mode) {
    // The request head; a body (none for GET and HEAD) is not read.
    while peer.line().is_some_and(|l| !l.is_empty()) {}
    match mode {
        Mode::Garbage | Mode::WrongCertificate => peer.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n<html>not json</html>",
        ),
        Mode::Huge => {
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 4000000\r\n\r\n");
            let block = vec![b'{'; 64 * 1024];
            for _ in 0..40 {
                peer.send(&block);
            }
        }
        Mode::Redirect => peer.send(
            b"HTTP/1.1 302 Found\r\nLocation: https://acme.elsewhere.example/directory\r\nContent-Length: 0\r\n\r\n",
        ),
        Mode::Trickle => {
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
            let end = Instant::now() + Duration::from_secs(15);
            while Instant::now() < end {
                peer.send(b" ");
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
}

/// Forwards every connection to `good` or, in `WrongCertificate` mode, to
/// `wrong`, so that one configured directory URL can be both.
fn forwarder(mode: Arc<Mutex<Mode>>, good: u16, wrong: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let to = if *mode.lock().unwrap() == Mode::WrongCertificate {
                wrong
            } else {
                good
            };
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            for (mut from, mut into) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    port
}

/// The renewer's state file.
fn state(sb: &Sandbox) -> serde_json::Value {
    std::fs::read(sb.data().join("tls/acme-state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Reads from `tcp` until the gateway closes it; the bytes, and how long
/// that took.
fn until_closed(tcp: &mut TcpStream) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the gateway did not close in time: {e}"),
        }
    }
    (got, start.elapsed())
}

fn status_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_hostile_certificate_authority_is_a_clear_error_and_the_gateway_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, stranger) = (
        TestCa::new(dir.path(), "acme"),
        TestCa::new(dir.path(), "stranger"),
    );
    for sub in ["good", "wrong"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let mode = Arc::new(Mutex::new(Mode::Garbage));
    let shared = Arc::clone(&mode);
    let good = Scripted::serve(
        &dir.path().join("good"),
        &ca,
        Start::ImplicitTls,
        Arc::new(move |peer| {
            let mode = *shared.lock().unwrap();
            answer(peer, mode);
        }),
    );
    let wrong = Scripted::serve(
        &dir.path().join("wrong"),
        &stranger,
        Start::ImplicitTls,
        Arc::new(|peer| answer(peer, Mode::WrongCertificate)),
    );
    let port = forwarder(Arc::clone(&mode), good.port(), wrong.port());
    let sb = Sandbox::for_gateway(
        "acme-hostile",
        json!({
            "mailbox_domain": "example.test",
            "limits": { "tls_handshake_timeout_secs": 3 },
            "acme": {
                "directory": format!("https://localhost:{port}/directory"),
                "ca_file": ca.cert_file,
                "agree_to_terms": true,
                "challenge": "http-01",
                "http_listen": ["127.0.0.1:0"],
                // Every attempt after the first is asked for, so the test
                // decides what the CA does for each.
                "retry_secs": 3600,
                "timeout_secs": 3,
            },
            "mta_sts": { "listen": ["127.0.0.1:0"] },
        }),
    );
    let gw = Gateway::start(&sb);
    let pop3 = gw.addr("pop3.listen_tls[0]");
    let cases = [
        (
            Mode::Garbage,
            "the ACME server's directory is not JSON: \"<html>not json</html>\"",
        ),
        (Mode::Huge, "the answer is larger than 1024 KiB"),
        (
            Mode::Redirect,
            "answered 302 redirecting to \"https://acme.elsewhere.example/directory\", which is not followed",
        ),
        (Mode::Trickle, "no complete answer in time"),
        (Mode::WrongCertificate, "TLS handshake failed"),
    ];
    for (n, (case, expected)) in cases.into_iter().enumerate() {
        *mode.lock().unwrap() = case;
        // The first attempt is the gateway's own, at start.
        if n > 0 {
            let out = sb.run(&["cert", "renew"]);
            assert!(out.status.success(), "{}", stderr(&out));
        }
        let failures = n as u64 + 1;
        wait_until(&format!("{case:?} recorded as failure {failures}"), || {
            state(&sb)["failures"].as_u64() == Some(failures)
        });
        let error = state(&sb)["last_error"].as_str().unwrap().to_string();
        assert!(error.contains(expected), "{case:?}: {error}");
        assert!(
            error.starts_with(&format!("acme.directory localhost:{port}: ")),
            "it names what it tried: {error}"
        );
        gw.wait_for_log(
            &format!("failed ({failures} in a row), the current certificate stays"),
            Duration::from_secs(10),
        );
        let out = sb.run(&["status"]);
        assert_eq!(out.status.code(), Some(4), "{}", stdout(&out));
        assert!(stdout(&out).contains(expected), "{}", stdout(&out));
        // Mail goes on.
        let mut client = LineClient::implicit_tls(pop3, &gw.cert);
        assert!(client.read_line().unwrap().starts_with("+OK"), "{case:?}");
    }
    let log = gw.log();
    assert!(log.contains("invalid peer certificate"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    // A sixth order within the day waits for the oldest to be a day old.
    let out = sb.run(&["cert", "renew"]);
    assert!(out.status.success(), "{}", stderr(&out));
    gw.wait_for_log(
        "5 orders in the last 24 hours: the next waits until ",
        Duration::from_secs(10),
    );
    assert_eq!(state(&sb)["failures"], 5, "no sixth attempt");
    assert_eq!(state(&sb)["orders"].as_array().unwrap().len(), 5);

    // Hostile clients of the two web listeners: answered and closed under
    // the deadline (tls_handshake_timeout_secs, 3 s here, covers the whole
    // request).
    let http = gw.addr("acme.http_listen[0]");
    let https = gw.addr("mta_sts.listen[0]");
    let mut web = Client::new(https, &gw.cert);
    for (path, status) in [
        ("/.well-known/mta-sts.txt", 200),
        ("/../../etc/passwd", 404),
        ("/.well-known/acme-challenge/", 404),
        ("/.well-known/mta-sts.txt/../../gateway.json", 404),
    ] {
        let page = web.get(path);
        assert_eq!(page.status, status, "{path}: {}", page.body);
    }
    let page = web.get("/.well-known/mta-sts.txt");
    assert!(page.body.starts_with("version: STSv1\r\n"), "{}", page.body);
    for (path, status) in [
        ("/.well-known/acme-challenge/unknown-token", 404),
        (
            "/.well-known/acme-challenge/../../tls/acme-account.pem",
            404,
        ),
        (
            "/.well-known/acme-challenge/%2e%2e%2ftls%2facme-account.pem",
            404,
        ),
        ("/", 404),
    ] {
        let mut tcp = TcpStream::connect(http).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: mail.example.test\r\n\r\n"
        )
        .unwrap();
        let (got, _) = until_closed(&mut tcp);
        assert!(
            status_line(&got).starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {}",
            String::from_utf8_lossy(&got)
        );
        assert!(!String::from_utf8_lossy(&got).contains("PRIVATE KEY"));
    }
    let mut tcp = TcpStream::connect(http).unwrap();
    tcp.write_all(
        b"POST /.well-known/acme-challenge/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    assert!(status_line(&until_closed(&mut tcp).0).starts_with("HTTP/1.1 405 "));

    // A huge header: 431, and closed.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let mut tcp = TcpStream::connect(http).unwrap();
    let _ = tcp.write_all(huge.as_bytes());
    let (got, took) = until_closed(&mut tcp);
    assert!(
        status_line(&got).starts_with("HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The same over TLS: the gateway may close while the rest is still
    // being written, so a failed write is no failure; the answer is.
    let mut tls = support::gateway::tls(TcpStream::connect(https).unwrap(), &gw.cert);
    let _ = tls.write_all(huge.as_bytes()).and_then(|()| tls.flush());
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got);
    assert!(
        status_line(&got).starts_with("HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // A request that never ends: closed at the deadline, both listeners.
    for addr in [http, https] {
        let mut tcp = TcpStream::connect(addr).unwrap();
        if addr == https {
            // The handshake never starts either.
            tcp.write_all(b"\x16\x03\x01").unwrap();
        } else {
            tcp.write_all(b"GET /.well-known/acme-challenge/x HTTP/1.1\r\nHost:")
                .unwrap();
        }
        let (_, took) = until_closed(&mut tcp);
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(10),
            "{addr}: closed after {took:?}"
        );
    }
    let mut client = LineClient::implicit_tls(pop3, &gw.cert);
    assert!(client.read_line().unwrap().starts_with("+OK"));
    assert!(!gw.log().contains("panicked"));
}
