//! The message file format is readable and writable without Sealpost: a
//! PyNaCl script written from the README decrypts what Sealpost stored, and
//! Sealpost exports what the script stored.

mod support;

use std::fs;
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

#[test]
fn sealpost_exports_a_message_pynacl_stored() {
    let Some(python) = python_with_nacl() else {
        return;
    };
    let sb = Sandbox::new("pywrite", json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let body = fixture("utf8-headers.eml");
    let body_file = sb.dir.join("body.eml");
    fs::write(&body_file, &body).unwrap();
    let metadata = json!({
        "received": "2026-11-22T10:00:00Z",
        "source": "smtp",
        "mail_from": "writer@example.org",
        "rcpt_to": [format!("{id}@localhost")],
        "client_ip": "192.0.2.1",
        "tls": "TLSv1.3",
    });
    let out = support::run(
        Command::new(&python)
            .arg(script())
            .arg("write")
            .arg(sb.mailbox_dir(&id))
            .arg(metadata.to_string())
            .arg(&body_file),
    );
    assert!(
        out.status.success(),
        "python writer failed: {}",
        stderr(&out)
    );
    let exported = sb.export(&id, &password);
    assert_eq!(exported.len(), 1);
    assert!(exported[0].1 == body);
    assert_eq!(exported[0].2["mail_from"], "writer@example.org");
    assert_eq!(exported[0].2["size"], body.len());
}
