//! Real archiving clients retrieve from the POP3 server: Python's poplib,
//! fetchmail (keep and delete) and getmail6 (into a Maildir, deleting), and a
//! round trip from swaks in to fetchmail and getmail out.

// System calls the standard library does not offer (signals, pipes,
// namespaces, resource limits), each block with its SAFETY comment.
#![allow(unsafe_code)]

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::gateway::Gateway;
use support::{FIXTURES, Sandbox, fixture, peer, repo, stderr, stdout, without_first_headers};

fn archive(label: &str) -> (Sandbox, Gateway, String, String) {
    let sb = Sandbox::for_gateway(label, json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    for name in FIXTURES {
        let out = sb.run_with_input(&["mailbox", "deliver", &id], &fixture(name));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let gw = Gateway::start(&sb);
    (sb, gw, id, password)
}

/// The files in `dir`, contents sorted (clients name files their own way).
fn contents(dir: &Path) -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    all.sort();
    all
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

fn fixtures() -> Vec<Vec<u8>> {
    sorted(FIXTURES.iter().map(|n| fixture(n)).collect())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn python_poplib_with_stls_and_pop3_ssl() {
    let Some(python) = peer("python3", &["python3"]) else {
        return;
    };
    let (sb, gw, id, password) = archive("interop-poplib");
    let pw = sb.password_file(&password);
    for (mode, key) in [("stls", "pop3.listen[0]"), ("ssl", "pop3.listen_tls[0]")] {
        let out_dir = sb.dir.join(format!("poplib-{mode}"));
        let out = support::run(
            Command::new(&python)
                .arg(repo().join("tests/python/pop3_fetch.py"))
                .args([mode, "localhost", &gw.addr(key).port().to_string()])
                .arg(&gw.cert)
                .arg(&id)
                .arg(&pw)
                .arg(&out_dir),
        );
        assert!(
            out.status.success(),
            "poplib {mode}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(
            contents(&out_dir) == fixtures(),
            "poplib {mode}: messages differ"
        );
    }
}

/// Runs fetchmail once over implicit TLS with certificate checking; returns
/// the messages it delivered, without the Received header it adds.
fn fetchmail(
    fetchmail: &Path,
    sb: &Sandbox,
    gw: &Gateway,
    id: &str,
    password: &str,
    keep: bool,
) -> Vec<Vec<u8>> {
    let home = sb.dir.join(format!(
        "fetchmail-{}",
        if keep { "keep" } else { "delete" }
    ));
    let (mda, out_dir) = support::fetchmail_mda(&home);
    let rc = home.join("fetchmailrc");
    fs::write(
        &rc,
        format!(
            "set no syslog\npoll 127.0.0.1 service {port} protocol pop3 auth password\n  \
             user \"{id}\" password \"{password}\" ssl sslcertfile \"{cert}\" sslcertck sslcommonname localhost\n  \
             {keep} no rewrite no stripcr mda \"{mda}\"\n",
            port = gw.addr("pop3.listen_tls[0]").port(),
            cert = gw.cert.display(),
            keep = if keep { "keep" } else { "no keep" },
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
        "fetchmail failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    contents(&out_dir)
        .iter()
        .map(|m| without_first_headers(m, 1).to_vec())
        .collect()
}

#[test]
fn fetchmail_with_keep_then_without() {
    let Some(fetchmail_bin) = peer("fetchmail", &["fetchmail"]) else {
        return;
    };
    let (sb, gw, id, password) = archive("interop-fetchmail");
    let kept = fetchmail(&fetchmail_bin, &sb, &gw, &id, &password, true);
    assert!(
        sorted(kept) == fixtures(),
        "fetchmail (keep) got different messages"
    );
    assert_eq!(
        sb.message_files(&id).len(),
        FIXTURES.len(),
        "keep leaves the messages"
    );
    let fetched = fetchmail(&fetchmail_bin, &sb, &gw, &id, &password, false);
    assert!(
        sorted(fetched) == fixtures(),
        "fetchmail got different messages"
    );
    assert!(
        sb.message_files(&id).is_empty(),
        "without keep fetchmail deletes them"
    );
}

/// Runs getmail6 once (SimplePOP3SSLRetriever into a Maildir, deleting);
/// returns the delivered files.
fn getmail(getmail: &Path, sb: &Sandbox, gw: &Gateway, id: &str, password: &str) -> Vec<Vec<u8>> {
    let dir = sb.dir.join("getmail");
    let maildir = dir.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    // getmail refuses to deliver as root; it can switch to another user.
    let user_line = if is_root() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&sb.dir, fs::Permissions::from_mode(0o755)).unwrap();
        let status =
            support::run(Command::new("chown").args(["-R", "nobody"]).arg(&maildir)).status;
        assert!(status.success());
        "user = nobody\n"
    } else {
        ""
    };
    fs::write(
        dir.join("getmailrc"),
        format!(
            "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = 127.0.0.1\nport = {port}\n\
             username = {id}\npassword = {password}\nssl_ca_certs = {cert}\nssl_cert_hostname = localhost\n\n\
             [destination]\ntype = Maildir\npath = {maildir}/\n{user_line}\n\
             [options]\nread_all = true\ndelete = true\ndelivered_to = false\nreceived = false\n",
            port = gw.addr("pop3.listen_tls[0]").port(),
            cert = gw.cert.display(),
            maildir = maildir.display(),
        ),
    )
    .unwrap();
    let out = support::run(
        Command::new(getmail)
            .args(["--rcfile", "getmailrc", "--getmaildir"])
            .arg(&dir),
    );
    let transcript = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        out.status.success() && !transcript.contains("error"),
        "getmail failed:\n{transcript}"
    );
    contents(&maildir.join("new"))
}

/// How getmail writes `message` into a Maildir (its own re-serialisation).
fn getmail_rendering(sb: &Sandbox, message: &[u8]) -> Vec<u8> {
    let file = sb.dir.join("render-input.eml");
    fs::write(&file, message).unwrap();
    let out = support::run(
        Command::new("/usr/bin/python3")
            .arg(repo().join("tests/python/getmail_render.py"))
            .arg(&file),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    out.stdout
}

#[test]
fn getmail_retrieves_into_a_maildir_and_deletes() {
    let Some(getmail_bin) = peer("getmail", &["getmail"]) else {
        return;
    };
    let (sb, gw, id, password) = archive("interop-getmail");
    let delivered = getmail(&getmail_bin, &sb, &gw, &id, &password);
    let expected = sorted(
        FIXTURES
            .iter()
            .map(|n| getmail_rendering(&sb, &fixture(n)))
            .collect(),
    );
    let delivered = sorted(delivered);
    assert_eq!(
        delivered.len(),
        expected.len(),
        "getmail delivered {} of {} messages",
        delivered.len(),
        expected.len()
    );
    for (got, want) in delivered.iter().zip(&expected) {
        assert!(
            got == want,
            "getmail delivered\n{}\ninstead of\n{}",
            String::from_utf8_lossy(&got[..got.len().min(400)]),
            String::from_utf8_lossy(&want[..want.len().min(400)])
        );
    }
    assert!(
        sb.message_files(&id).is_empty(),
        "delete = true removes the messages"
    );
}

#[test]
fn round_trip_from_swaks_to_fetchmail_and_getmail() {
    let Some(swaks) = peer("swaks", &["swaks"]) else {
        return;
    };
    let Some(fetchmail_bin) = peer("fetchmail", &["fetchmail"]) else {
        return;
    };
    let Some(getmail_bin) = peer("getmail", &["getmail"]) else {
        return;
    };
    let sb = Sandbox::for_gateway("interop-roundtrip", json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    let smtp = gw.addr("smtp.listen[0]").to_string();
    for name in FIXTURES {
        let file: PathBuf = sb.dir.join(name);
        fs::write(&file, fixture(name)).unwrap();
        let out = support::run(
            Command::new(&swaks)
                .args([
                    "--server",
                    &smtp,
                    "--tls",
                    "--from",
                    "journal@contoso.example",
                    "--to",
                    &format!("{id}@localhost"),
                ])
                .arg("--data")
                .arg(format!("@{}", file.display())),
        );
        assert!(out.status.success(), "{}", stdout(&out));
    }
    // What swaks sent: the file plus one CRLF swaks adds at the end of --data.
    let sent: Vec<Vec<u8>> = FIXTURES
        .iter()
        .map(|n| {
            let mut m = fixture(n);
            m.extend_from_slice(b"\r\n");
            m
        })
        .collect();
    let stored: Vec<Vec<u8>> = sb
        .export(&id, &password)
        .into_iter()
        .map(|(_, body, _)| body)
        .collect();
    for (s, m) in stored.iter().zip(&sent) {
        assert!(
            without_first_headers(s, 1) == m.as_slice(),
            "stored differs from sent"
        );
    }

    let via_fetchmail = fetchmail(&fetchmail_bin, &sb, &gw, &id, &password, true);
    assert!(
        sorted(via_fetchmail) == sorted(stored.clone()),
        "fetchmail got different messages"
    );

    let via_getmail = getmail(&getmail_bin, &sb, &gw, &id, &password);
    let expected = sorted(stored.iter().map(|m| getmail_rendering(&sb, m)).collect());
    assert!(
        sorted(via_getmail) == expected,
        "getmail got different messages"
    );
    assert!(
        sb.message_files(&id).is_empty(),
        "the deleting run emptied the mailbox"
    );
}
