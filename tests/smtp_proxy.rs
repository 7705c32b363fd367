//! The recording SMTP proxy. Its rules are tested against a scripted
//! submission server (`support::scripted::submission`: STARTTLS, AUTH PLAIN
//! and LOGIN, every command and message recorded), which needs neither root
//! nor Postfix. Interoperation is tested against a real upstream started by
//! the test: Postfix as a submission server (STARTTLS on one port, implicit
//! TLS on another, certificates from a test CA, SASL through Dovecot's auth
//! service with a passwd-file user, mail delivered to a Maildir). Clients
//! are Python's smtplib, swaks and a raw TLS socket.

mod support;

use std::fs;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::gateway::{Gateway, LineClient, expect};
use support::postfix::refused_port;
use support::scripted::{Start, Submission, submission};
use support::{Sandbox, fixture, peer, repo, stderr, stdout};

use support::upstreams::{
    SUBMISSION_PASSWORD as UPSTREAM_PASSWORD, SUBMISSION_USER as UPSTREAM_USER,
    SubmissionUpstream as Upstream,
};

/// The gateway with one mailbox, and an upstream.
struct Setup {
    sb: Sandbox,
    gw: Gateway,
    upstream: Upstream,
    id: String,
    password: String,
}

fn setup(label: &str, proxy: serde_json::Value) -> Option<Setup> {
    let sb = Sandbox::for_gateway(label, json!({}));
    let upstream = Upstream::start(&sb.dir.join("upstream"))?;
    sb.configure_proxy(&upstream.ca.cert_file, upstream.implicit, proxy);
    let (id, password) = sb.create_mailbox("Office");
    let gw = Gateway::start(&sb);
    Some(Setup {
        sb,
        gw,
        upstream,
        id,
        password,
    })
}

fn login_name(port: u16, id: &str) -> String {
    format!("{UPSTREAM_USER}%localhost:{port}%{id}")
}

/// Sends with smtplib through the proxy; returns (success, printed output).
fn smtplib_through(
    sb: &Sandbox,
    gw: &Gateway,
    listener: (&str, &str),
    login: &str,
    password: &str,
    to: &[&str],
    message: &[u8],
) -> (bool, String) {
    let python = peer("python3", &["python3"]).unwrap();
    let file = sb.dir.join("outgoing.eml");
    fs::write(&file, message).unwrap();
    let pw = sb.password_file(password);
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("tests/python/smtp_send.py"))
        .args([
            listener.1,
            "localhost",
            &gw.addr(listener.0).port().to_string(),
        ])
        .arg(&gw.cert)
        .arg("anna@example.test")
        .arg(&file)
        .args(["--login", login])
        .arg("--password-file")
        .arg(&pw);
    for t in to {
        cmd.args(["--to", t]);
    }
    let out = support::run(&mut cmd);
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

fn message_with(subject: &str) -> Vec<u8> {
    format!(
        "From: Anna <anna@example.test>\r\nTo: Ben <ben@example.org>\r\nSubject: {subject}\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\n\r\nHello Ben,\r\n.a line with a leading dot\r\n\r\nAnna\r\n"
    )
    .into_bytes()
}

/// Postfix stores with LF line ends and its own headers on top.
fn upstream_holds(delivered: &[u8], sent: &[u8]) -> bool {
    let sent_lf: Vec<u8> = String::from_utf8_lossy(sent)
        .replace("\r\n", "\n")
        .into_bytes();
    delivered.ends_with(&sent_lf)
}

#[test]
fn smtplib_through_the_proxy_to_a_starttls_upstream_keeps_a_copy_with_the_bcc() {
    let Some(Setup {
        sb,
        gw,
        upstream,
        id,
        password,
    }) = setup("proxy-587", json!({}))
    else {
        return;
    };
    let message = message_with("via-587");
    let (ok, out) = smtplib_through(
        &sb,
        &gw,
        ("smtp_proxy.listen[0]", "starttls"),
        &login_name(upstream.starttls, &id),
        UPSTREAM_PASSWORD,
        &["ben@example.org", "hidden-bcc@example.org"],
        &message,
    );
    assert!(ok, "{out}\n{}", gw.log());
    let delivered = upstream.wait_for(2);
    assert!(
        delivered.iter().all(|d| upstream_holds(d, &message)),
        "the upstream got something else"
    );
    let copies = sb.export(&id, &password);
    assert_eq!(copies.len(), 1);
    let (_, body, meta) = &copies[0];
    assert!(body == &message, "the copy is the message exactly");
    assert_eq!(meta["source"], "smtp-proxy");
    assert_eq!(meta["mail_from"], "anna@example.test");
    assert_eq!(
        meta["rcpt_to"],
        json!(["ben@example.org", "hidden-bcc@example.org"]),
        "Bcc kept"
    );
    assert_eq!(meta["tls"], "TLSv1.3");
    assert_eq!(sb.stored_sources(), ["smtp-proxy"], "the custody log");
    let (code, report) = sb.custody_verify();
    assert_eq!(
        (code, &report["counts"]["present"]),
        (0, &json!(1)),
        "{report:#}"
    );
}

#[test]
fn swaks_through_the_implicit_tls_proxy_to_an_implicit_tls_upstream() {
    let Some(swaks) = peer("swaks", &["swaks"]) else {
        return;
    };
    let Some(Setup {
        sb,
        gw,
        upstream,
        id,
        password,
    }) = setup("proxy-465", json!({}))
    else {
        return;
    };
    let message = fixture("attachment-3mb.eml");
    let file = sb.dir.join("att.eml");
    fs::write(&file, &message).unwrap();
    let out = support::run(
        Command::new(swaks)
            .args([
                "--server",
                &gw.addr("smtp_proxy.listen_tls[0]").to_string(),
                "--tlsc",
            ])
            .args([
                "--auth",
                "LOGIN",
                "--auth-user",
                &login_name(upstream.implicit, &id),
                "--auth-password",
                UPSTREAM_PASSWORD,
            ])
            .args([
                "--from",
                "anna@example.test",
                "--to",
                "ben@example.org,bcc-two@example.org",
            ])
            .arg("--data")
            .arg(format!("@{}", file.display())),
    );
    assert!(
        out.status.success(),
        "{}{}\n{}",
        stdout(&out),
        stderr(&out),
        gw.log()
    );
    // swaks ends --data with one more CRLF.
    let mut sent = message.clone();
    sent.extend_from_slice(b"\r\n");
    let delivered = upstream.wait_for(2);
    assert!(delivered.iter().all(|d| upstream_holds(d, &sent)));
    let copies = sb.export(&id, &password);
    assert!(copies[0].1 == sent);
    assert_eq!(
        copies[0].2["rcpt_to"],
        json!(["ben@example.org", "bcc-two@example.org"])
    );
}

/// The gateway with one mailbox, and a scripted submission server as the
/// upstream: its STARTTLS port, and what it saw. No root, no Postfix.
struct Scripted {
    sb: Sandbox,
    gw: Gateway,
    port: u16,
    upstream: Arc<Submission>,
    id: String,
    password: String,
}

fn scripted(label: &str, proxy: serde_json::Value, upstream: Submission) -> Scripted {
    scripted_with(label, proxy, upstream, |_| Some(()))
        .unwrap()
        .0
}

/// The same, with `prepare` run on the sandbox before the gateway starts
/// (`None` from it: a missing peer, skip).
fn scripted_with<T>(
    label: &str,
    proxy: serde_json::Value,
    upstream: Submission,
    prepare: impl FnOnce(&Sandbox) -> Option<T>,
) -> Option<(Scripted, T)> {
    let sb = Sandbox::for_gateway(label, json!({}));
    let prepared = prepare(&sb)?;
    let ca = support::ca::TestCa::new(&sb.dir, "scripted");
    let upstream = Arc::new(upstream);
    let state = Arc::clone(&upstream);
    let server = support::scripted::Scripted::serve(
        &sb.dir,
        &ca,
        Start::Plain,
        Arc::new(move |peer| submission(peer, &state)),
    );
    // No implicit-TLS port of its own: 465 and 995 are the defaults.
    sb.configure_proxy(&ca.cert_file, 465, proxy);
    let (id, password) = sb.create_mailbox("Office");
    let gw = Gateway::start(&sb);
    let scripted = Scripted {
        sb,
        gw,
        port: server.port(),
        upstream,
        id,
        password,
    };
    Some((scripted, prepared))
}

fn scripted_upstream() -> Submission {
    Submission::new(UPSTREAM_USER, UPSTREAM_PASSWORD)
}

#[test]
fn a_wrong_password_is_535_and_nothing_is_stored() {
    let s = scripted("proxy-wrongpw", json!({}), scripted_upstream());
    let reply = raw_login(&s.gw, &login_name(s.port, &s.id), "wrong");
    expect(&reply, "535 5.7.8");
    assert!(
        !reply.contains("scripted"),
        "upstream texts never reach the client: {reply}"
    );
    assert!(s.sb.message_files(&s.id).is_empty());
    let commands = s.upstream.commands();
    assert!(commands.iter().any(|c| c == "AUTH PLAIN"), "{commands:?}");
    assert!(s.upstream.messages().is_empty());
}

/// AUTH over a raw TLS connection to the proxy; returns the reply.
fn raw_login(gw: &Gateway, login: &str, password: &str) -> String {
    let mut c = LineClient::implicit_tls(gw.addr("smtp_proxy.listen_tls[0]"), &gw.cert);
    c.smtp_reply();
    c.smtp("EHLO client.example");
    let token = sealpost::crypto::base64_encode(format!("\0{login}\0{password}").as_bytes());
    c.smtp(&format!("AUTH PLAIN {token}"))
}

#[test]
fn policy_and_tls_failures_are_refused_with_a_generic_535_and_logged() {
    let s = scripted(
        "proxy-refusals",
        json!({ "allowed_targets": ["localhost", "127.0.0.1"] }),
        scripted_upstream(),
    );
    // A certificate for another name: the upstream is reached as 127.0.0.1 but its certificate says localhost.
    let reply = raw_login(
        &s.gw,
        &format!("{UPSTREAM_USER}%127.0.0.1:{}%{}", s.port, s.id),
        UPSTREAM_PASSWORD,
    );
    expect(&reply, "535 5.7.8");
    s.gw.wait_for_log("upstream TLS refused", Duration::from_secs(10));
    // Not in the allow-list.
    let reply = raw_login(
        &s.gw,
        &format!("{UPSTREAM_USER}%smtp.example.net:587%{}", s.id),
        UPSTREAM_PASSWORD,
    );
    expect(&reply, "535 5.7.8");
    s.gw.wait_for_log(
        "smtp.example.net:587 is not in proxy.allowed_targets",
        Duration::from_secs(10),
    );
    // Unknown mailbox and malformed names.
    expect(
        &raw_login(
            &s.gw,
            &login_name(s.port, "mbx-00000000000000000000000000000000"),
            UPSTREAM_PASSWORD,
        ),
        "535 5.7.8",
    );
    expect(
        &raw_login(&s.gw, "no-percent-signs", UPSTREAM_PASSWORD),
        "535 5.7.8",
    );
    assert!(
        !s.upstream.commands().iter().any(|c| c.starts_with("AUTH")),
        "no credentials reached the upstream: {:?}",
        s.upstream.commands()
    );
}

#[test]
fn an_upstream_without_starttls_never_sees_the_credentials() {
    let upstream = Submission {
        starttls: false,
        ..scripted_upstream()
    };
    let s = scripted("proxy-no-starttls", json!({}), upstream);
    let reply = raw_login(&s.gw, &login_name(s.port, &s.id), UPSTREAM_PASSWORD);
    expect(&reply, "535 5.7.8");
    s.gw.wait_for_log("offers no STARTTLS", Duration::from_secs(10));
    let commands = s.upstream.commands();
    assert!(
        commands.iter().any(|c| c.starts_with("EHLO")),
        "{commands:?}"
    );
    assert!(
        !commands.iter().any(|c| c.starts_with("AUTH")),
        "{commands:?}"
    );
}

/// With the proxy configured by `proxy`, a login to the STARTTLS upstream
/// gets `reply`, and the gateway logs `log` as the reason.
fn assert_login_refused(label: &str, proxy: serde_json::Value, reply: &str, log: &str) {
    let s = scripted(label, proxy, scripted_upstream());
    let login = login_name(s.port, &s.id);
    expect(&raw_login(&s.gw, &login, UPSTREAM_PASSWORD), reply);
    s.gw.wait_for_log(log, Duration::from_secs(10));
    assert!(!s.upstream.commands().iter().any(|c| c.starts_with("AUTH")));
}

#[test]
fn an_untrusted_ca_is_refused() {
    assert_login_refused(
        "proxy-untrusted",
        json!({ "extra_ca_file": null }),
        "535 5.7.8",
        "upstream TLS refused",
    );
}

#[test]
fn a_private_address_is_refused_unless_allowed() {
    assert_login_refused(
        "proxy-private",
        json!({ "allow_private_targets": false }),
        "535 5.7.8",
        "127.0.0.1 is in 127.0.0.0/8",
    );
}

#[test]
fn an_upstream_that_is_down_is_a_temporary_454() {
    // No provider at all: a closed port is enough.
    let (_held, closed) = refused_port();
    let sb = Sandbox::for_gateway("proxy-down", json!({}));
    let ca = support::ca::TestCa::new(&sb.dir, "down");
    sb.configure_proxy(&ca.cert_file, 995, json!({}));
    let (id, _) = sb.create_mailbox("Office");
    let gw = Gateway::start(&sb);
    expect(
        &raw_login(&gw, &login_name(closed, &id), UPSTREAM_PASSWORD),
        "454 4.7.0",
    );
}

#[test]
fn auth_before_tls_is_538_and_a_suspended_mailbox_is_535() {
    let s = scripted("proxy-538", json!({}), scripted_upstream());
    let mut c = LineClient::plain(s.gw.addr("smtp_proxy.listen[0]"));
    c.smtp_reply();
    c.smtp("EHLO client.example");
    expect(&c.smtp("AUTH PLAIN AGFubmEAc2VjcmV0"), "538 5.7.11");
    // After STARTTLS on the proxy's own plain port, AUTH is offered.
    expect(&c.smtp("STARTTLS"), "220 2.0.0");
    let mut c = c.start_tls(&s.gw.cert);
    expect(&c.smtp("EHLO client.example"), "250");
    s.sb.run(&["mailbox", "suspend", &s.id]);
    expect(
        &raw_login(&s.gw, &login_name(s.port, &s.id), UPSTREAM_PASSWORD),
        "535 5.7.8",
    );
    assert!(!s.upstream.commands().iter().any(|c| c.starts_with("AUTH")));
}

#[test]
fn smuggling_sequences_reach_the_upstream_as_one_message_matching_the_copy() {
    let s = scripted("proxy-smuggle", json!({}), scripted_upstream());
    let mut c = LineClient::implicit_tls(s.gw.addr("smtp_proxy.listen_tls[0]"), &s.gw.cert);
    c.smtp_reply();
    c.smtp("EHLO client.example");
    let token = sealpost::crypto::base64_encode(
        format!("\0{}\0{UPSTREAM_PASSWORD}", login_name(s.port, &s.id)).as_bytes(),
    );
    expect(&c.smtp(&format!("AUTH PLAIN {token}")), "235 2.7.0");
    expect(&c.smtp("MAIL FROM:<anna@example.test>"), "250 ");
    expect(&c.smtp("RCPT TO:<ben@example.org>"), "250 ");
    expect(&c.smtp("DATA"), "354");
    c.send_raw(b"From: anna@example.test\r\nSubject: one\r\n\r\nbody\n.\nMAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nsecond\r\n.\r\n");
    expect(&c.smtp_reply(), "250 2.0.0");
    expect(&c.smtp("QUIT"), "221");
    let delivered = s.upstream.messages();
    assert_eq!(delivered.len(), 1, "exactly one message upstream");
    let copy = &s.sb.export(&s.id, &s.password)[0].1;
    assert_eq!(
        String::from_utf8_lossy(&delivered[0]),
        String::from_utf8_lossy(copy),
        "the upstream message is the copy"
    );
    assert!(
        String::from_utf8_lossy(copy).contains("Subject: smuggled"),
        "the smuggled part is content"
    );
    let commands = s.upstream.commands();
    assert!(
        !commands.iter().any(|c| c.contains("victim@example.org")),
        "the smuggled RCPT never reached the upstream as a command: {commands:?}"
    );
}

#[test]
fn a_copy_that_cannot_be_written_gets_451_and_nothing_reaches_the_upstream() {
    let Some((s, _full)) = scripted_with("proxy-full", json!({}), scripted_upstream(), |sb| {
        sb.full_disk("2m")
    }) else {
        return;
    };
    let (ok, out) = smtplib_through(
        &s.sb,
        &s.gw,
        ("smtp_proxy.listen_tls[0]", "ssl"),
        &login_name(s.port, &s.id),
        UPSTREAM_PASSWORD,
        &["ben@example.org"],
        &fixture("attachment-3mb.eml"),
    );
    assert!(!ok);
    assert!(out.starts_with("451 "), "{out}");
    assert!(
        s.upstream.messages().is_empty(),
        "nothing was sent without a copy"
    );
    assert!(
        !s.upstream.commands().iter().any(|c| c == "DATA"),
        "{:?}",
        s.upstream.commands()
    );
    assert!(s.sb.message_files(&s.id).is_empty());
}

#[test]
fn below_the_disk_reserve_mail_is_refused_with_452_and_nothing_reaches_the_upstream() {
    let Some((s, _mount)) = scripted_with("proxy-reserve", json!({}), scripted_upstream(), |sb| {
        let mount = support::small_tmpfs(&sb.data(), "16m")?;
        // More than the whole file system: below the reserve from the start.
        sb.set_config(&["limits", "min_free_bytes"], json!(64 * 1024 * 1024));
        Some(mount)
    }) else {
        return;
    };
    let (ok, out) = smtplib_through(
        &s.sb,
        &s.gw,
        ("smtp_proxy.listen_tls[0]", "ssl"),
        &login_name(s.port, &s.id),
        UPSTREAM_PASSWORD,
        &["ben@example.org"],
        b"Subject: not without a copy\r\n\r\nbody\r\n",
    );
    assert!(!ok);
    assert!(out.starts_with("452 "), "{out}");
    assert!(out.contains("Insufficient system storage"), "{out}");
    assert!(
        !s.upstream.commands().iter().any(|c| c.starts_with("MAIL")),
        "{:?}",
        s.upstream.commands()
    );
    assert!(
        s.gw.log()
            .contains("MAIL refused: the disk is below its reserve")
    );
}

/// The 50 MiB benchmark: run by scripts/bench, which quotes the figure.
#[test]
#[ignore = "benchmark: scripts/bench proxy"]
fn bench_a_50_mib_message_through_the_proxy() {
    let Some(Setup {
        sb,
        gw,
        upstream,
        id,
        ..
    }) = setup("proxy-bench", json!({}))
    else {
        return;
    };
    let mut message =
        b"From: anna@example.test\r\nTo: ben@example.org\r\nSubject: big\r\n\r\n".to_vec();
    let line = [b'z'; 76];
    while message.len() < 50 * 1024 * 1024 {
        message.extend_from_slice(&line);
        message.extend_from_slice(b"\r\n");
    }
    let started = Instant::now();
    let (ok, out) = smtplib_through(
        &sb,
        &gw,
        ("smtp_proxy.listen_tls[0]", "ssl"),
        &login_name(upstream.implicit, &id),
        UPSTREAM_PASSWORD,
        &["ben@example.org"],
        &message,
    );
    assert!(ok, "{out}");
    let elapsed = started.elapsed();
    upstream.wait_for(1);
    println!(
        "BENCH proxy: {} bytes through the SMTP proxy in {:.2} s; gateway peak RSS {} MiB",
        message.len(),
        elapsed.as_secs_f64(),
        gw.peak_rss_kib() / 1024
    );
    assert_eq!(sb.message_files(&id).len(), 1);
}

#[test]
fn an_upstream_that_never_answers_times_out_with_454() {
    // Accepts the connection (the kernel does) but never says a word.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = mute.local_addr().unwrap().port();
    let sb = Sandbox::for_gateway(
        "proxy-mute",
        json!({ "proxy": { "allowed_targets": ["localhost"], "allow_private_targets": true, "connect_timeout_secs": 1 } }),
    );
    let (id, _) = sb.create_mailbox("Office");
    let gw = Gateway::start(&sb);
    let started = Instant::now();
    expect(
        &raw_login(&gw, &login_name(port, &id), UPSTREAM_PASSWORD),
        "454 4.7.0",
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    gw.wait_for_log("upstream unreachable", Duration::from_secs(5));
    drop(mute);
}

#[test]
fn an_upstream_offering_only_auth_login_is_logged_in_with_login() {
    let upstream = Submission {
        mechanisms: "LOGIN",
        ..scripted_upstream()
    };
    let s = scripted("proxy-login-only", json!({}), upstream);
    // The client uses PLAIN; the upstream only speaks LOGIN.
    let message = message_with("via-login");
    let (ok, out) = smtplib_through(
        &s.sb,
        &s.gw,
        ("smtp_proxy.listen_tls[0]", "ssl"),
        &login_name(s.port, &s.id),
        UPSTREAM_PASSWORD,
        &["ben@example.org"],
        &message,
    );
    assert!(ok, "{out}\n{}", s.gw.log());
    let commands = s.upstream.commands();
    assert!(commands.iter().any(|c| c == "AUTH LOGIN"), "{commands:?}");
    assert_eq!(s.upstream.messages().len(), 1);
    assert!(s.sb.export(&s.id, &s.password)[0].1 == message);
}

/// A name server that never answers: `getaddrinfo` would wait for it far
/// longer than the session's deadline. The gateway and this client run in
/// a network namespace of the test's own, whose `resolv.conf` (`ip netns
/// exec` mounts `/etc/netns/<ns>/resolv.conf`) names a silent port there.
#[test]
fn a_name_server_that_never_answers_is_a_temporary_error_at_the_deadline() {
    if !support::is_root() {
        support::missing_peer::<()>("a network namespace of the test's own needs root");
        return;
    }
    let netns = std::sync::Arc::new(support::netns::LoopbackOnly::new());
    let etc = std::path::PathBuf::from("/etc/netns").join(&netns.name);
    fs::create_dir_all(&etc).unwrap();
    // glibc would wait 60 s for this server; the proxy's deadline is 2 s.
    fs::write(
        etc.join("resolv.conf"),
        "nameserver 127.0.0.1\noptions timeout:60 attempts:1\n",
    )
    .unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
            let _ = fs::remove_dir("/etc/netns");
        }
    }
    let _cleanup = Cleanup(etc);
    let sb = Sandbox::for_gateway("proxy-silent-dns", json!({}));
    let (id, _) = sb.create_mailbox("Proxy");
    let ca = support::ca::TestCa::new(&sb.dir, "silent");
    sb.configure_proxy(
        &ca.cert_file,
        995,
        json!({ "allowed_targets": ["mail.silent.example"], "connect_timeout_secs": 2 }),
    );
    let mut ip = std::process::Command::new("ip");
    ip.args(["netns", "exec", &netns.name])
        .arg(support::sealpost_bin());
    let gw = Gateway::start_program(&sb, ip, |_| {});
    let (addr, cert) = (gw.addr("smtp_proxy.listen_tls[0]"), gw.cert.clone());
    let inside = std::sync::Arc::clone(&netns);
    let answer = std::thread::spawn(move || {
        inside.enter_this_thread();
        // The silent name server: it takes every query and answers none.
        let _dns = std::net::UdpSocket::bind("127.0.0.1:53").unwrap();
        let mut c = LineClient::implicit_tls(addr, &cert);
        c.set_timeout(std::time::Duration::from_secs(30));
        c.smtp_reply();
        c.smtp("EHLO client.example");
        let login = format!("user%mail.silent.example%{id}");
        let token = sealpost::crypto::base64_encode(format!("\0{login}\0secret").as_bytes());
        let started = std::time::Instant::now();
        let reply = c.smtp(&format!("AUTH PLAIN {token}"));
        (reply, started.elapsed())
    })
    .join()
    .unwrap();
    expect(&answer.0, "454 4.7.0");
    assert!(
        answer.1 < std::time::Duration::from_secs(20),
        "the lookup was not cut off at its deadline: {:?}",
        answer.1
    );
    gw.wait_for_log(
        "name lookup did not finish in time",
        std::time::Duration::from_secs(10),
    );
}
