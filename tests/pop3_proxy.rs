//! The recording POP3 proxy. Its rules are tested against a scripted POP3
//! server (`support::scripted::maildrop`: STLS, USER/PASS, UIDL, LIST, RETR,
//! DELE, every command recorded) on an implicit-TLS and an STLS port, which
//! needs neither root nor Dovecot. Interoperation is tested against a real
//! upstream started by the test: Dovecot's POP3 server with a certificate
//! from a test CA, a passwd-file user and a Maildir filled by the test.
//! Clients are Python's poplib, fetchmail and raw TLS sockets.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::gateway::{Gateway, LineClient};
use support::postfix::refused_port;
use support::scripted::{Maildrop, Start, maildrop};
use support::{FIXTURES, Sandbox, fixture, peer, repo, stderr, stdout, without_first_headers};

use support::upstreams::{POP3_PASSWORD as PASSWORD, POP3_USER as USER, Pop3Upstream as Upstream};

struct Setup {
    sb: Sandbox,
    gw: Gateway,
    upstream: Upstream,
    id: String,
    password: String,
}

fn setup(label: &str, proxy: serde_json::Value) -> Option<Setup> {
    let sb = Sandbox::for_gateway(
        label,
        json!({ "pop3_proxy": { "listen": ["127.0.0.1:0"], "listen_tls": ["127.0.0.1:0"] } }),
    );
    let upstream = Upstream::start(&sb.dir.join("upstream"), true)?;
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
    format!("{USER}%localhost:{port}%{id}")
}

/// poplib against `addr` (`ssl` or `stls`); returns the messages retrieved.
fn poplib(
    sb: &Sandbox,
    mode: &str,
    port: u16,
    cafile: &Path,
    user: &str,
    password: &str,
    delete: bool,
) -> Vec<Vec<u8>> {
    let python = peer("python3", &["python3"]).unwrap();
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_dir = sb.dir.join(format!("poplib-{run}"));
    let pw = sb.password_file(password);
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("tests/python/pop3_fetch.py"))
        .args([mode, "localhost", &port.to_string()])
        .arg(cafile)
        .arg(user)
        .arg(&pw)
        .arg(&out_dir);
    if delete {
        cmd.arg("delete");
    }
    let out = support::run(&mut cmd);
    assert!(
        out.status.success(),
        "poplib: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let mut files: Vec<PathBuf> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort_by_key(|p| {
        p.file_stem()
            .unwrap()
            .to_string_lossy()
            .parse::<u32>()
            .unwrap()
    });
    files.iter().map(|p| fs::read(p).unwrap()).collect()
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

fn copies(s: &Setup) -> Vec<(Vec<u8>, serde_json::Value)> {
    s.sb.export(&s.id, &s.password)
        .into_iter()
        .map(|(_, body, meta)| (body, meta))
        .collect()
}

/// The gateway with one mailbox, and a scripted POP3 server holding the
/// fixtures as the upstream, on an implicit-TLS and an STLS port. No root,
/// no Dovecot.
struct Scripted {
    sb: Sandbox,
    gw: Gateway,
    implicit: u16,
    stls: u16,
    upstream: Arc<Maildrop>,
    id: String,
    password: String,
}

/// `stls`: whether the plaintext port offers STLS; `prepare` runs on the
/// sandbox before the gateway starts (`None` from it: skip).
fn scripted_with<T>(
    label: &str,
    proxy: serde_json::Value,
    stls: bool,
    prepare: impl FnOnce(&Sandbox) -> Option<T>,
) -> Option<(Scripted, T)> {
    let sb = Sandbox::for_gateway(
        label,
        json!({ "pop3_proxy": { "listen": [], "listen_tls": ["127.0.0.1:0"] } }),
    );
    let prepared = prepare(&sb)?;
    let ca = support::ca::TestCa::new(&sb.dir, "scripted");
    let bodies: Vec<Vec<u8>> = FIXTURES.iter().map(|f| fixture(f)).collect();
    let messages: Vec<(String, &[u8])> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("uid-{i}"), b.as_slice()))
        .collect();
    let messages: Vec<(&str, &[u8])> = messages.iter().map(|(u, b)| (u.as_str(), *b)).collect();
    let upstream = Arc::new(Maildrop {
        stls,
        ..Maildrop::new(USER, PASSWORD, &messages)
    });
    let serve = |start| {
        let state = Arc::clone(&upstream);
        support::scripted::Scripted::serve(
            &sb.dir,
            &ca,
            start,
            Arc::new(move |peer| maildrop(peer, &state)),
        )
        .port()
    };
    let (implicit, stls) = (serve(Start::ImplicitTls), serve(Start::Plain));
    sb.configure_proxy(&ca.cert_file, implicit, proxy);
    let (id, password) = sb.create_mailbox("Office");
    let gw = Gateway::start(&sb);
    let scripted = Scripted {
        sb,
        gw,
        implicit,
        stls,
        upstream,
        id,
        password,
    };
    Some((scripted, prepared))
}

fn scripted(label: &str, proxy: serde_json::Value) -> Scripted {
    scripted_with(label, proxy, true, |_| Some(())).unwrap().0
}

impl Scripted {
    fn copies(&self) -> Vec<(Vec<u8>, serde_json::Value)> {
        self.sb
            .export(&self.id, &self.password)
            .into_iter()
            .map(|(_, body, meta)| (body, meta))
            .collect()
    }

    /// poplib through the proxy's implicit-TLS port, as `login`.
    fn poplib(&self, login: &str, delete: bool) -> Vec<Vec<u8>> {
        let port = self.gw.addr("pop3_proxy.listen_tls[0]").port();
        poplib(
            &self.sb,
            "ssl",
            port,
            &self.gw.cert,
            login,
            PASSWORD,
            delete,
        )
    }
}

#[test]
fn poplib_through_the_proxy_gets_the_originals_and_each_is_archived() {
    let Some(s) = setup("pop3proxy-poplib", json!({})) else {
        return;
    };
    let direct = poplib(
        &s.sb,
        "ssl",
        s.upstream.implicit,
        &s.upstream.ca.cert_file,
        USER,
        PASSWORD,
        false,
    );
    assert_eq!(direct.len(), FIXTURES.len());
    let port = s.gw.addr("pop3_proxy.listen[0]").port();
    let via_proxy = poplib(
        &s.sb,
        "stls",
        port,
        &s.gw.cert,
        &login_name(s.upstream.implicit, &s.id),
        PASSWORD,
        false,
    );
    assert!(via_proxy == direct, "the proxy changed a message");
    let copies = copies(&s);
    assert!(
        sorted(copies.iter().map(|(b, _)| b.clone()).collect()) == sorted(direct.clone()),
        "the copies are the originals"
    );
    for (_, meta) in &copies {
        assert_eq!(meta["source"], "pop3-proxy");
        assert_eq!(meta["upstream"]["user"], USER);
        assert_eq!(
            meta["upstream"]["host"],
            format!("localhost:{}", s.upstream.implicit)
        );
        assert!(!meta["upstream"]["uidl"].as_str().unwrap().is_empty());
    }
    let sources = s.sb.stored_sources();
    assert_eq!(sources.len(), copies.len(), "the custody log");
    assert!(sources.iter().all(|s| s == "pop3-proxy"), "{sources:?}");
    let (code, report) = s.sb.custody_verify();
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn the_same_account_through_another_port_or_name_case_is_not_archived_again() {
    let s = scripted("pop3proxy-dedupe-ports", json!({}));
    // First through the implicit-TLS port, then through the STLS port with
    // the host name in capitals: one account, one copy of each message.
    for login in [
        format!("{USER}%localhost:{}%{}", s.implicit, s.id),
        format!("{USER}%LocalHost:{}%{}", s.stls, s.id),
    ] {
        assert_eq!(s.poplib(&login, false).len(), FIXTURES.len());
    }
    assert_eq!(s.sb.message_files(&s.id).len(), FIXTURES.len());
    assert!(s.upstream.commands().iter().any(|c| c == "STLS"));
}

#[test]
fn retrieving_the_same_messages_twice_stores_one_copy_each() {
    let s = scripted("pop3proxy-dedupe", json!({}));
    for _ in 0..2 {
        s.poplib(&login_name(s.implicit, &s.id), false);
    }
    assert_eq!(s.sb.message_files(&s.id).len(), FIXTURES.len());
    // The index holds hashes, never the UIDLs.
    let index = s.sb.mailbox_dir(&s.id).join("pop3-index");
    assert_eq!(fs::read_dir(&index).unwrap().count(), FIXTURES.len());
    for entry in fs::read_dir(&index).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(!name.to_string_lossy().contains("uid-"), "{name:?}");
    }
}

#[test]
fn a_deleting_client_through_the_stls_upstream_leaves_copies_and_an_empty_upstream() {
    let s = scripted("pop3proxy-delete", json!({}));
    let fetched = s.poplib(&login_name(s.stls, &s.id), true);
    assert_eq!(fetched.len(), FIXTURES.len());
    assert!(
        s.upstream.uidls().is_empty(),
        "QUIT made the upstream delete them"
    );
    let originals: Vec<Vec<u8>> = FIXTURES.iter().map(|f| fixture(f)).collect();
    assert!(
        sorted(fetched.clone()) == sorted(originals),
        "the client got the originals"
    );
    assert!(sorted(s.copies().into_iter().map(|(b, _)| b).collect()) == sorted(fetched));
}

#[test]
fn fetchmail_through_the_proxy() {
    let Some(fetchmail) = peer("fetchmail", &["fetchmail"]) else {
        return;
    };
    let Some(s) = setup("pop3proxy-fetchmail", json!({})) else {
        return;
    };
    let direct = sorted(poplib(
        &s.sb,
        "ssl",
        s.upstream.implicit,
        &s.upstream.ca.cert_file,
        USER,
        PASSWORD,
        false,
    ));
    let home = s.sb.dir.join("fetchmail");
    let (mda, out_dir) = support::fetchmail_mda(&home);
    let rc = home.join("fetchmailrc");
    fs::write(
        &rc,
        format!(
            "set no syslog\npoll 127.0.0.1 service {port} protocol pop3 auth password\n  \
             user \"{user}\" password \"{PASSWORD}\" ssl sslcertfile \"{cert}\" sslcertck sslcommonname localhost\n  \
             keep no rewrite no stripcr mda \"{mda}\"\n",
            port = s.gw.addr("pop3_proxy.listen_tls[0]").port(),
            user = login_name(s.upstream.stls, &s.id),
            cert = s.gw.cert.display(),
        ),
    )
    .unwrap();
    fs::set_permissions(&rc, fs::Permissions::from_mode(0o600)).unwrap();
    let out = support::run(
        Command::new(fetchmail)
            .arg("-f")
            .arg(&rc)
            .args(["--nodetach", "-v", "--pidfile"])
            .arg(home.join("fetchmail.pid"))
            .env("FETCHMAILHOME", &home),
    );
    assert!(
        out.status.success(),
        "fetchmail:\n{}{}\n{}",
        stdout(&out),
        stderr(&out),
        s.gw.log()
    );
    let got: Vec<Vec<u8>> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| without_first_headers(&fs::read(e.unwrap().path()).unwrap(), 1).to_vec())
        .collect();
    assert!(
        sorted(got) == direct,
        "fetchmail got something other than the originals"
    );
    assert!(sorted(copies(&s).into_iter().map(|(b, _)| b).collect()) == direct);
}

/// Logs in over TLS to the proxy; returns the client and the PASS answer.
fn proxy_login(gw: &Gateway, login: &str, password: &str) -> (LineClient, String) {
    let mut c = LineClient::implicit_tls(gw.addr("pop3_proxy.listen_tls[0]"), &gw.cert);
    c.read_line();
    c.pop3(&format!("USER {login}"));
    let answer = c.pop3(&format!("PASS {password}"));
    (c, answer)
}

#[test]
fn dele_without_retrieving_still_leaves_a_copy() {
    let s = scripted("pop3proxy-dele", json!({}));
    let (mut c, answer) = proxy_login(&s.gw, &login_name(s.implicit, &s.id), PASSWORD);
    assert!(answer.starts_with("+OK"), "{answer}");
    assert!(c.pop3("DELE 1").starts_with("+OK"));
    assert!(c.pop3("QUIT").starts_with("+OK"));
    assert_eq!(s.upstream.uidls().len(), FIXTURES.len() - 1);
    let commands = s.upstream.commands();
    let retr = commands.iter().position(|c| c == "RETR 1");
    let dele = commands.iter().position(|c| c == "DELE 1");
    assert!(
        retr.is_some() && retr < dele,
        "archived before deleted: {commands:?}"
    );
    let copies = s.copies();
    assert_eq!(copies.len(), 1);
    assert!(
        copies[0].0 == fixture(FIXTURES[0]),
        "the deleted message is in the archive"
    );
    assert_eq!(copies[0].1["upstream"]["uidl"], "uid-0");
}

#[test]
fn a_copy_that_cannot_be_written_blocks_the_dele_and_the_message_stays_upstream() {
    let Some((s, _full)) =
        scripted_with("pop3proxy-full", json!({}), true, |sb| sb.full_disk("2m"))
    else {
        return;
    };
    let (mut c, answer) = proxy_login(&s.gw, &login_name(s.implicit, &s.id), PASSWORD);
    assert!(answer.starts_with("+OK"), "{answer}");
    // Message 4 is the 3 MB attachment: it cannot fit in 2 MiB.
    let refused = c.pop3("DELE 4");
    assert!(refused.starts_with("-ERR [SYS/TEMP]"), "{refused}");
    assert!(c.pop3("QUIT").starts_with("+OK"));
    assert_eq!(
        s.upstream.uidls().len(),
        FIXTURES.len(),
        "nothing was deleted upstream"
    );
    assert!(!s.upstream.commands().iter().any(|c| c.starts_with("DELE")));
    assert!(s.sb.message_files(&s.id).is_empty());
}

#[test]
fn below_the_disk_reserve_a_retrieval_it_could_not_archive_is_refused() {
    let Some((s, _mount)) = scripted_with("pop3proxy-reserve", json!({}), true, |sb| {
        let mount = support::small_tmpfs(&sb.data(), "16m")?;
        // More than the whole file system: below the reserve from the start.
        sb.set_config(&["limits", "min_free_bytes"], json!(64 * 1024 * 1024));
        Some(mount)
    }) else {
        return;
    };
    let (mut c, answer) = proxy_login(&s.gw, &login_name(s.implicit, &s.id), PASSWORD);
    assert!(answer.starts_with("+OK"), "{answer}");
    let refused = c.pop3("RETR 1");
    assert!(
        refused.starts_with("-ERR [SYS/TEMP] Message 1 cannot be archived now"),
        "{refused}"
    );
    let refused = c.pop3("DELE 1");
    assert!(refused.starts_with("-ERR [SYS/TEMP]"), "{refused}");
    assert!(c.pop3("QUIT").starts_with("+OK"));
    assert!(
        !s.upstream
            .commands()
            .iter()
            .any(|c| c.starts_with("RETR") || c.starts_with("DELE")),
        "{:?}",
        s.upstream.commands()
    );
    assert_eq!(s.upstream.uidls().len(), FIXTURES.len(), "nothing deleted");
}

#[test]
fn failures_are_generic_errors_with_logged_reasons() {
    let s = scripted(
        "pop3proxy-failures",
        json!({ "allowed_targets": ["localhost", "127.0.0.1"] }),
    );
    let id = &s.id;
    let cases = [
        (
            format!("{USER}%localhost:{}%{id}", s.implicit),
            "wrong-password",
            "-ERR [AUTH]",
            "refused the credentials",
        ),
        (
            format!("{USER}%127.0.0.1:{}%{id}", s.implicit),
            PASSWORD,
            "-ERR [AUTH]",
            "upstream TLS refused",
        ),
        (
            format!("{USER}%pop.example.net:995%{id}"),
            PASSWORD,
            "-ERR [AUTH]",
            "pop.example.net:995 is not in proxy.allowed_targets",
        ),
        (
            format!(
                "{USER}%localhost:{}%mbx-00000000000000000000000000000000",
                s.implicit
            ),
            PASSWORD,
            "-ERR [AUTH]",
            "no such mailbox",
        ),
    ];
    for (login, password, answer, log) in cases {
        let (_, got) = proxy_login(&s.gw, &login, password);
        assert!(got.starts_with(answer), "{login}: {got}");
        assert!(
            !got.contains("scripted"),
            "upstream texts never reach the client: {got}"
        );
        s.gw.wait_for_log(log, Duration::from_secs(10));
    }
    let (_held, closed) = refused_port();
    let (_, got) = proxy_login(&s.gw, &format!("{USER}%localhost:{closed}%{id}"), PASSWORD);
    assert!(got.starts_with("-ERR [SYS/TEMP]"), "upstream down: {got}");
    assert_eq!(s.sb.message_files(id).len(), 0);
}

#[test]
fn an_untrusted_ca_and_a_private_address_are_refused() {
    let s = scripted("pop3proxy-untrusted", json!({ "extra_ca_file": null }));
    let (_, got) = proxy_login(&s.gw, &login_name(s.implicit, &s.id), PASSWORD);
    assert!(got.starts_with("-ERR [AUTH]"), "{got}");
    s.gw.wait_for_log("upstream TLS refused", Duration::from_secs(10));
    let p = scripted(
        "pop3proxy-private",
        json!({ "allow_private_targets": false }),
    );
    let (_, got) = proxy_login(&p.gw, &login_name(p.implicit, &p.id), PASSWORD);
    assert!(got.starts_with("-ERR [AUTH]"), "{got}");
    p.gw.wait_for_log("127.0.0.1 is in 127.0.0.0/8", Duration::from_secs(10));
    for upstream in [&s.upstream, &p.upstream] {
        assert!(!upstream.commands().iter().any(|c| c == "PASS"));
    }
}

#[test]
fn an_upstream_without_stls_never_sees_the_password() {
    let (s, ()) = scripted_with("pop3proxy-nostls", json!({}), false, |_| Some(())).unwrap();
    let (_, got) = proxy_login(&s.gw, &login_name(s.stls, &s.id), PASSWORD);
    assert!(got.starts_with("-ERR [AUTH]"), "{got}");
    s.gw.wait_for_log("offers no STLS", Duration::from_secs(10));
    let commands = s.upstream.commands();
    assert!(commands.iter().any(|c| c == "CAPA"), "{commands:?}");
    assert!(
        !commands
            .iter()
            .any(|c| c.starts_with("USER") || c == "PASS"),
        "no login reached the upstream: {commands:?}"
    );
}

/// The 50 MiB benchmark: run by scripts/bench, which quotes the figure.
#[test]
#[ignore = "benchmark: scripts/bench pop3proxy"]
fn bench_a_50_mib_message_through_the_pop3_proxy() {
    let Some(s) = setup("pop3proxy-bench", json!({})) else {
        return;
    };
    let mut message = b"From: big@example.org\r\nSubject: big\r\n\r\n".to_vec();
    while message.len() < 50 * 1024 * 1024 {
        message.extend_from_slice(&[b'q'; 76]);
        message.extend_from_slice(b"\r\n");
    }
    let maildir = s.upstream.dovecot.home(USER).join("Maildir/new");
    fs::write(maildir.join("1795000099.M9P1.big"), &message).unwrap();
    let chown = support::run(
        Command::new("chown")
            .args(["-R", "nobody"])
            .arg(s.upstream.dovecot.home(USER)),
    );
    assert!(chown.status.success());
    let started = std::time::Instant::now();
    let port = s.gw.addr("pop3_proxy.listen_tls[0]").port();
    let got = poplib(
        &s.sb,
        "ssl",
        port,
        &s.gw.cert,
        &login_name(s.upstream.implicit, &s.id),
        PASSWORD,
        false,
    );
    let elapsed = started.elapsed();
    assert!(got.iter().any(|m| m == &message));
    println!(
        "BENCH pop3 proxy: {} bytes (plus the fixtures) retrieved and archived in {:.2} s; gateway peak RSS {} MiB",
        message.len(),
        elapsed.as_secs_f64(),
        s.gw.peak_rss_kib() / 1024
    );
}
