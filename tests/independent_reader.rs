//! The message file format is readable and writable without Sealpost: a
//! PyNaCl script written from the README decrypts what Sealpost stored, and
//! Sealpost exports what the script stored.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::json;
use support::{Sandbox, fixture, python_with_nacl, stderr};

fn script() -> std::path::PathBuf {
    support::repo().join("tests/python/sealpost_format.py")
}

#[test]
fn pynacl_reads_a_message_sealpost_stored() {
    let Some(python) = python_with_nacl() else {
        return;
    };
    let sb = Sandbox::new("pyread", json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    for name in ["m365-journal-report.eml", "attachment-3mb.eml"] {
        let out = sb.run_with_input(
            &[
                "mailbox",
                "deliver",
                &id,
                "--from",
                "journal@contoso.example",
            ],
            &fixture(name),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let pw = sb.password_file(&password);
    for (file, name) in sb
        .message_files(&id)
        .iter()
        .zip(["m365-journal-report.eml", "attachment-3mb.eml"])
    {
        let out_file = sb.dir.join("decrypted.eml");
        let out = support::run(
            Command::new(&python)
                .arg(script())
                .arg("read")
                .arg(sb.mailbox_dir(&id))
                .arg(&pw)
                .arg(file)
                .arg(&out_file),
        );
        assert!(
            out.status.success(),
            "python reader failed: {}",
            stderr(&out)
        );
        assert!(
            fs::read(&out_file).unwrap() == fixture(name),
            "{name} differs"
        );
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(meta["mail_from"], "journal@contoso.example");
        assert_eq!(meta["size"], fixture(name).len());
    }
}

#[test]
fn pynacl_refuses_a_wrong_password() {
    let Some(python) = python_with_nacl() else {
        return;
    };
    let sb = Sandbox::new("pywrong", json!({}));
    let (id, _) = sb.create_mailbox("Journal");
    sb.run_with_input(&["mailbox", "deliver", &id], b"Subject: x\r\n\r\ny\r\n");
    let pw = sb.password_file("definitely-not-it");
    let out = support::run(
        Command::new(&python)
            .arg(script())
            .arg("read")
            .arg(sb.mailbox_dir(&id))
            .arg(&pw)
            .arg(&sb.message_files(&id)[0])
            .arg(sb.dir.join("x.eml")),
    );
    assert!(
        !out.status.success(),
        "the independent reader must fail with a wrong password"
    );
}

/// Stores `body` in mailbox `id` with the PyNaCl script (a file named
/// `<id>.msg`, with SMTP-like metadata from writer@example.org).
fn write_with_pynacl(python: &Path, sb: &Sandbox, id: &str, body: &[u8]) {
    let body_file = sb.dir.join("body.eml");
    fs::write(&body_file, body).unwrap();
    let metadata = json!({
        "received": "2026-11-22T10:00:00Z",
        "source": "smtp",
        "mail_from": "writer@example.org",
        "rcpt_to": [format!("{id}@localhost")],
        "client_ip": "192.0.2.1",
        "tls": "TLSv1.3",
    });
    let out = support::run(
        Command::new(python)
            .arg(script())
            .arg("write")
            .arg(sb.mailbox_dir(id))
            .arg(metadata.to_string())
            .arg(&body_file),
    );
    assert!(
        out.status.success(),
        "python writer failed: {}",
        stderr(&out)
    );
}

#[test]
fn sealpost_exports_a_message_pynacl_stored() {
    let Some(python) = python_with_nacl() else {
        return;
    };
    let sb = Sandbox::new("pywrite", json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let body = fixture("utf8-headers.eml");
    write_with_pynacl(&python, &sb, &id, &body);
    let exported = sb.export(&id, &password);
    assert_eq!(exported.len(), 1);
    assert!(exported[0].1 == body);
    assert_eq!(exported[0].2["mail_from"], "writer@example.org");
    assert_eq!(exported[0].2["size"], body.len());
}

/// Files named before the size went into the name (`<id>.msg`, as the
/// PyNaCl writer names them) and files named `<id>,S=<size>.msg` list with
/// their exact sizes and retrieve alike over POP3.
#[test]
fn pop3_serves_files_with_and_without_the_size_in_their_name() {
    let Some(python) = python_with_nacl() else {
        return;
    };
    let sb = Sandbox::for_gateway("pyname", json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let old = fixture("utf8-headers.eml");
    let new = fixture("long-lines.eml");
    write_with_pynacl(&python, &sb, &id, &old);
    let out = sb.run_with_input(&["mailbox", "deliver", &id], &new);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = sb
        .message_files(&id)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.iter().filter(|n| n.contains(",S=")).count(),
        1,
        "{names:?}"
    );
    let gw = support::gateway::Gateway::start(&sb);
    let mut c = support::gateway::LineClient::implicit_tls(gw.addr("pop3.listen_tls[0]"), &gw.cert);
    c.read_line();
    c.pop3(&format!("USER {id}"));
    assert!(c.pop3(&format!("PASS {password}")).starts_with("+OK"));
    let (_, list) = c.pop3_multi("LIST");
    let sizes: Vec<usize> = String::from_utf8_lossy(&list)
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    // The PyNaCl file is older (its name sorts first).
    assert_eq!(sizes, vec![old.len(), new.len()]);
    for (n, body) in [(1, &old), (2, &new)] {
        let (status, got) = c.pop3_multi(&format!("RETR {n}"));
        assert!(
            status.starts_with(&format!("+OK {} octets", body.len())),
            "{status}"
        );
        assert!(&got == body, "message {n} differs");
    }
}
