//! The web console end to end in a real browser: Debian's Chromium and
//! chromium-driver, driven by Python's Selenium (tests/python/console_browser.py).
//! The administrator password is set with the CLI; the browser logs in,
//! creates a mailbox and reads its password from the page; mail arrives over
//! SMTP and the dashboard's pending count changes; POP3 retrieves it with
//! the password the page showed. Screenshots land in target/console-screenshots/.
//!
//! Chromium phones home even with --disable-background-networking (a DNS
//! server, a DNS-over-HTTPS address), so the browser, its driver and the
//! gateway all run in a network namespace of the test's own where only
//! loopback reaches anything; every other destination is routed to a
//! device that discards and counts, and the test fails if it counted one.

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::gateway::Gateway;
use support::netns;
use support::{Sandbox, peer, repo, run_with_timeout, stderr, stdout};

const ADMIN: &str = "Tangerine-Orbit-Glacier-42";

/// Whether Python can import Selenium (Debian's python3-selenium).
fn python_with_selenium() -> Option<PathBuf> {
    // Debian's python3-selenium belongs to the system Python.
    let python = peer("python3", &["/usr/bin/python3", "python3"])?;
    let out = run_with_timeout(
        Command::new(&python).args(["-c", "import selenium"]),
        b"",
        Duration::from_secs(30),
    );
    if out.status.success() {
        return Some(python);
    }
    support::missing_peer("python3-selenium is not installed (scripts/test installs it)")
}

/// The base64 SHA-256 of the certificate's public key, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it (computed by openssl).
fn spki_hash(cert: &std::path::Path) -> String {
    let script = format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        cert.display()
    );
    let out = run_with_timeout(
        Command::new("sh").args(["-c", &script]),
        b"",
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// The check below can fail: a program that tries to reach a documentation
/// address (RFC 5737) from the namespace is caught, though with no route
/// its attempt fails at once and no packet is sent anywhere.
fn assert_tracing_sees_an_attempt_beyond_loopback(
    netns: &netns::LoopbackOnly,
    dir: &std::path::Path,
    strace: &std::path::Path,
) {
    let python = PathBuf::from("/usr/bin/python3");
    let (script, trace) = netns::traced(dir, "probe", &python, strace);
    let out = run_with_timeout(
        netns.command(&script).args([
            "-c",
            "import socket\n\
             for target in [('127.0.0.1', 9), ('192.0.2.7', 443)]:\n\
             \ttry: socket.create_connection(target, timeout=2)\n\
             \texcept OSError: pass\n\
             u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             try: u.sendto(b'x', ('198.51.100.53', 53))\n\
             except OSError: pass",
        ]),
        b"",
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let caught = netns::beyond_loopback(&trace);
    assert!(
        caught.len() == 2 && caught[0].contains("192.0.2.7") && caught[1].contains("198.51.100.53"),
        "the trace check misses an attempt: {caught:?}\n{}",
        std::fs::read_to_string(&trace).unwrap_or_default()
    );
}

#[test]
fn an_administrator_manages_a_mailbox_in_a_real_browser() {
    let (Some(chromium), Some(chromedriver), Some(python), Some(_)) = (
        peer("chromium", &["chromium", "/usr/bin/chromium"]),
        peer(
            "chromium-driver",
            &["chromedriver", "/usr/bin/chromedriver"],
        ),
        python_with_selenium(),
        peer("openssl", &["openssl"]),
    ) else {
        return;
    };
    let Some(strace) = peer("strace", &["strace"]) else {
        return;
    };
    if !support::is_root() || peer("ip (iproute2)", &["ip"]).is_none() {
        support::missing_peer::<()>(
            "a network namespace of the test's own needs root and iproute2",
        );
        return;
    }
    let netns = support::netns::LoopbackOnly::new();
    let sb = Sandbox::for_gateway(
        "console-browser",
        json!({
            "console": { "listen": ["127.0.0.1:0"] },
            // A certificate authority that is not there: the renewal fails,
            // and the certificate page says so and offers "Renew now".
            "acme": {
                "directory": "https://127.0.0.1:9/directory",
                "agree_to_terms": true,
                "challenge": "http-01",
                "http_listen": ["127.0.0.1:0"],
            },
        }),
    );
    let password_file = sb.password_file(ADMIN);
    let out = sb.run(&[
        "console",
        "passwd",
        "--password-file",
        password_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let gw = Gateway::start_with(&sb, |command| netns.enter(command));
    // Every connect() and sendto() of Chromium and its children, traced.
    let (traced_chromium, trace) = netns::traced(&sb.dir, "chromium", &chromium, &strace);
    assert_tracing_sees_an_attempt_beyond_loopback(&netns, &sb.dir, &strace);
    let shots = repo().join("target/console-screenshots");
    let url = format!("https://localhost:{}", gw.addr("console.listen[0]").port());
    // `timeout` signals its whole process group: chromedriver and Chromium
    // go with Python if the deadline passes.
    let out = run_with_timeout(
        netns
            .command("timeout")
            .args(["-k", "5", "170"])
            .arg(python)
            .arg(repo().join("tests/python/console_browser.py"))
            .arg(&url)
            .arg(&password_file)
            .arg(&gw.cert)
            .arg(gw.addr("smtp.listen[0]").port().to_string())
            .arg(gw.addr("pop3.listen_tls[0]").port().to_string())
            .arg(spki_hash(&gw.cert))
            .arg(&shots)
            .env("CHROMIUM", &traced_chromium)
            .env("CHROMEDRIVER", chromedriver),
        b"",
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        gw.log()
    );
    let elsewhere = netns::beyond_loopback(&trace);
    assert!(
        elsewhere.is_empty(),
        "the browser tried to reach beyond loopback:\n{}",
        elsewhere.join("\n")
    );
    let seen: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        seen["copy_button_shown"], true,
        "the page's script ran: {seen}"
    );
    assert_eq!(seen["pending_before"], 0, "{seen}");
    assert_eq!(seen["pending_after"], 1, "{seen}");
    assert_eq!(seen["retrieved"], 1, "{seen}");
    assert_eq!(seen["subject_seen"], true, "{seen}");
    assert_eq!(seen["pending_at_end"], 0, "{seen}");
    assert_eq!(
        seen["console_problems"],
        json!([]),
        "no CSP or script error: {seen}"
    );
    assert_eq!(seen["acme_failure_shown"], true, "{seen}");
    assert_eq!(seen["renew_asked"], true, "{seen}");
    assert!(gw.log().contains("console: ACME renewal asked for"));
    // The renewer takes the request within a second, as after `sealpost
    // cert renew`, and orders at once despite its back-off.
    gw.wait_for_log(
        "(a renewal was asked for), proving it by http-01",
        Duration::from_secs(10),
    );
    let id = seen["mailbox_id"].as_str().unwrap();
    assert!(sb.mailbox_dir(id).join("messages").is_dir());
    for name in [
        "console-dashboard.png",
        "console-mailbox.png",
        "console-mailbox-created.png",
        "console-certificate.png",
    ] {
        let png = std::fs::read(shots.join(name)).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is a PNG");
    }
    // The browser's whole session left no secret in the log.
    assert!(!gw.log().contains(ADMIN));
    assert!(gw.log().contains("administrator logged in"));
}
