//! Backup, restore and a standby node, as an administrator does them: a
//! backup taken while mail arrives, the data directory wiped and restored,
//! every message acknowledged before the backup retrieved over POP3 with
//! Python's poplib, the backup decrypted without Sealpost by
//! `scripts/decrypt` (PyNaCl only) and checked against Sealpost's own
//! reader; and a standby gateway holding only public keys that receives
//! while the primary is down, merged back so that the archiver gets every
//! message exactly once.

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::json;
use support::gateway::{Gateway, LineClient, expect};
use support::{Sandbox, python_with_nacl, repo, run, stderr, stdout};

/// A small message whose subject names it.
fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: journal@example.org\r\nTo: archive@example.org\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.org>\r\n\r\nBody of {subject}.\r\n"
    )
    .into_bytes()
}

/// Sends one message over implicit TLS; whether it got `250`.
fn send(gw: &Gateway, to: &str, subject: &str) -> bool {
    let mut c = LineClient::implicit_tls(gw.addr("smtp.listen_tls[0]"), &gw.cert);
    expect(&c.smtp_reply(), "220 ");
    expect(&c.smtp("EHLO backup.example"), "250");
    let ok = c
        .smtp_send("journal@example.org", to, &message(subject))
        .starts_with("250");
    c.smtp("QUIT");
    ok
}

/// The subjects of the messages in `dir` (`*.eml`), counted.
fn subjects(dir: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "eml") {
            let text = String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned();
            let subject = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or_else(|| panic!("no subject in {path:?}"))
                .to_owned();
            *out.entry(subject).or_default() += 1;
        }
    }
    out
}

/// Retrieves and deletes every message over POP3 with TLS (Python's poplib).
fn retrieve_all(sb: &Sandbox, gw: &Gateway, id: &str, password: &str, out: &Path) -> Output {
    support::poplib_fetch_all(sb, gw, id, password, out)
}

fn decrypt(python: &Path, password_files: &[PathBuf], mailbox: &Path, out: &Path) -> Output {
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("scripts/decrypt"));
    for file in password_files {
        cmd.arg("--password-file").arg(file);
    }
    run(cmd.arg(mailbox).arg(out))
}

/// The `.eml` files of a directory by UIDL (file stem).
fn emls(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem, fs::read(&p).unwrap())
        })
        .collect()
}

fn snapshots(dest: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "latest")
        .collect();
    names.sort();
    names
}

#[test]
fn a_backup_under_load_restores_and_decrypts_without_sealpost() {
    let Some(python) = python_with_nacl() else {
        return;
    };
    let sb = Sandbox::for_gateway("backup", json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let to = format!("{id}@localhost");
    let gw = Arc::new(Gateway::start(&sb));
    let before: Vec<String> = (0..15).map(|i| format!("before-{i}")).collect();
    for subject in &before {
        assert!(send(&gw, &to, subject));
    }

    // Mail keeps arriving while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicUsize::new(0));
    let load = {
        let (gw, to, stop, during) = (
            Arc::clone(&gw),
            to.clone(),
            Arc::clone(&stop),
            Arc::clone(&during),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let n = during.load(Ordering::SeqCst);
                if send(&gw, &to, &format!("during-{n}")) {
                    during.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    support::wait_until("some mail arrives during the backup", || {
        during.load(Ordering::SeqCst) >= 3
    });
    let out = sb.run_with_input(
        &["console", "passwd", "--password-file", "-"],
        b"Tangerine-Orbit-Glacier-42\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = sb.dir.join("backups");
    let out = sb.run(&["backup", dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Snapshot "), "{}", stdout(&out));
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let first = fs::canonicalize(dest.join("latest")).unwrap();
    // The console's administrator password hash comes along.
    assert_eq!(
        fs::read(first.join("console-password")).unwrap(),
        fs::read(sb.data().join("console-password")).unwrap()
    );

    // The next backup links what it has, copies the new mail, and prunes.
    assert!(send(&gw, &to, "after-backup"));
    let out = sb.run(&["backup", dest.to_str().unwrap(), "--keep", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = fs::canonicalize(dest.join("latest")).unwrap();
    assert_ne!(first, second);
    let rel = Path::new("mailboxes").join(&id).join("messages");
    let a_message = fs::read_dir(first.join(&rel))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    assert_eq!(
        fs::metadata(first.join(&rel).join(&a_message))
            .unwrap()
            .ino(),
        fs::metadata(second.join(&rel).join(&a_message))
            .unwrap()
            .ino(),
        "an unchanged message is a hard link, not a copy"
    );
    assert!(!stdout(&out).contains(" 0 linked"), "{}", stdout(&out));
    let out = sb.run(&["backup", dest.to_str().unwrap(), "--keep", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshots(&dest).len(), 1, "{:?}", snapshots(&dest));
    let latest = fs::canonicalize(dest.join("latest")).unwrap();
    for leftover in ["spool", "serve.lock", "control.sock"] {
        assert!(
            !latest.join(leftover).exists(),
            "{leftover} is not backed up"
        );
    }
    assert!(latest.join("tls/cert.pem").exists());

    // The password changes after the backup: the backup keeps the old wrap.
    let old_pw = sb.password_file(&password);
    let new_password = "a brand new password for the journal 2026";
    let out = sb.run(&[
        "mailbox",
        "passwd",
        &id,
        "--password-file",
        old_pw.to_str().unwrap(),
        "--new-password-file",
        sb.password_file(new_password).to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Without Sealpost: the backup decrypts with PyNaCl and the old password.
    let mailbox = latest.join("mailboxes").join(&id);
    let decrypted = sb.dir.join("decrypted");
    let out = decrypt(&python, std::slice::from_ref(&old_pw), &mailbox, &decrypted);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = subjects(&decrypted);
    for subject in &before {
        assert_eq!(got.get(subject), Some(&1), "{subject} in the backup");
    }
    assert_eq!(got.get("after-backup"), Some(&1));

    // A damaged file is reported, the rest is still written.
    let scratch = sb.dir.join("damaged-copy");
    let cp = run(Command::new("cp").arg("-a").arg(&mailbox).arg(&scratch));
    assert!(cp.status.success());
    let victim = fs::read_dir(scratch.join("messages"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = fs::read(&victim).unwrap();
    fs::remove_file(&victim).unwrap();
    fs::write(&victim, &bytes[..bytes.len() - 10]).unwrap();
    let partly = sb.dir.join("partly");
    let out = decrypt(&python, std::slice::from_ref(&old_pw), &scratch, &partly);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stderr(&out).contains(&format!("damaged: {name}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(emls(&partly).len(), emls(&decrypted).len() - 1);
    let out = decrypt(
        &python,
        &[sb.password_file("not the password at all")],
        &mailbox,
        &partly,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));

    // Restore: stop, wipe, copy back, start.
    let gw = Arc::into_inner(gw).expect("the load thread is done");
    assert!(gw.stop().success());
    fs::remove_dir_all(sb.data()).unwrap();
    let cp = run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", latest.display()))
        .arg(sb.data()));
    assert!(cp.status.success(), "{}", stderr(&cp));
    // Sealpost's own reader agrees with the standalone one, file for file.
    let exported = sb.export(&id, &password);
    let ours: BTreeMap<String, Vec<u8>> = exported
        .into_iter()
        .map(|(uidl, body, _)| (uidl, body))
        .collect();
    assert_eq!(ours, emls(&decrypted));

    let gw = Gateway::start(&sb);
    let fetched = sb.dir.join("fetched");
    let out = retrieve_all(&sb, &gw, &id, &password, &fetched);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let got = subjects(&fetched);
    for subject in &before {
        assert_eq!(got.get(subject), Some(&1), "{subject} after the restore");
    }
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    assert!(sb.message_files(&id).is_empty(), "retrieved and deleted");
}

#[test]
fn a_standby_receives_while_the_primary_is_down_and_merges_back_once() {
    let primary = Sandbox::for_gateway("standby-primary", json!({}));
    let (id, password) = primary.create_mailbox("Journal");
    let to = format!("{id}@localhost");
    let out = primary.run(&["mailbox", "export-public", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let public = out.stdout;
    let text = String::from_utf8_lossy(&public);
    assert!(
        text.contains("public_key") && !text.contains("wrapped_key"),
        "{text}"
    );

    let standby = Sandbox::for_gateway("standby", json!({}));
    let out = standby.run_with_input(&["mailbox", "import-public", "-"], &public);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));
    let out = standby.run_with_input(&["mailbox", "import-public", "-"], &public);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let out = standby.run_with_input(&["mailbox", "import-public", "-"], b"{\"id\": 1}");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not valid"), "{}", stderr(&out));
    let out = standby.run(&["mailbox", "show", &id, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["public_only"], true);

    // Mail that reached the primary before it went down.
    for i in 0..2 {
        let out = primary.run_with_input(
            &["mailbox", "deliver", &id],
            &message(&format!("primary-{i}")),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // The primary is down; the standby takes the journal mail.
    let gw = Gateway::start(&standby);
    for i in 0..5 {
        assert!(send(&gw, &to, &format!("standby-{i}")));
    }
    // It can never read it: no POP3 login, no export.
    let mut c = LineClient::implicit_tls(gw.addr("pop3.listen_tls[0]"), &gw.cert);
    c.read_line();
    c.pop3(&format!("USER {id}"));
    let answer = c.pop3(&format!("PASS {password}"));
    assert!(answer.starts_with("-ERR"), "{answer}");
    gw.wait_for_log(
        "a standby copy, public key only",
        std::time::Duration::from_secs(10),
    );
    let out = standby.run_export(
        &id,
        &standby.password_file(&password),
        standby.dir.join("x"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("holds only its public key on this gateway"),
        "{}",
        stderr(&out)
    );
    assert!(gw.stop().success());

    // Merge into the primary, twice: the second run finds nothing to move.
    let data = standby.data();
    let out = primary.run(&["merge", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Merged 5 message(s)"),
        "{}",
        stdout(&out)
    );
    assert!(standby.message_files(&id).is_empty());
    let out = primary.run(&["merge", data.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("Merged 0 message(s)"),
        "{}",
        stdout(&out)
    );
    let out = primary.run(&["merge", primary.data().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));

    let gw = Gateway::start(&primary);
    let fetched = primary.dir.join("fetched");
    let out = retrieve_all(&primary, &gw, &id, &password, &fetched);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let got = subjects(&fetched);
    let expected: BTreeMap<String, usize> = (0..2)
        .map(|i| format!("primary-{i}"))
        .chain((0..5).map(|i| format!("standby-{i}")))
        .map(|s| (s, 1))
        .collect();
    assert_eq!(got, expected);
}
