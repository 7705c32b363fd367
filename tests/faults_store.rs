//! Fault: files of the store or the configuration go missing or bad under a
//! running gateway: a key file, a whole mailbox, the certificate. Each gets a
//! clear error, nothing panics, and no stored mail is lost. (A damaged
//! message file is `tests/pop3.rs`'s
//! `a_damaged_message_in_the_middle_is_sys_perm_and_the_others_come_through`.)

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]
// System calls the standard library does not offer (signals, pipes,
// namespaces, resource limits), each block with its SAFETY comment.
#![allow(unsafe_code)]

mod support;

use std::fs;
use std::time::Duration;

use serde_json::json;
use support::ca::TestCa;
use support::gateway::{Gateway, LineClient, expect};
use support::{Sandbox, stderr};

fn login(gw: &Gateway, id: &str, password: &str) -> (LineClient, String) {
    let mut c = LineClient::implicit_tls(gw.addr("pop3.listen_tls[0]"), &gw.cert);
    c.read_line();
    c.pop3(&format!("USER {id}"));
    let answer = c.pop3(&format!("PASS {password}"));
    (c, answer)
}

fn deliver(gw: &Gateway, id: &str, subject: &str) -> String {
    let mut c = LineClient::implicit_tls(gw.addr("smtp.listen_tls[0]"), &gw.cert);
    c.smtp_reply();
    c.smtp("EHLO faults.example");
    c.smtp("MAIL FROM:<a@example.org>");
    c.smtp(&format!("RCPT TO:<{id}@localhost>"));
    c.smtp("DATA");
    c.smtp(&format!("Subject: {subject}\r\n\r\nbody\r\n."))
}

#[test]
fn a_missing_or_corrupt_key_file_refuses_logins_clearly_while_mail_still_arrives() {
    let sb = Sandbox::for_gateway("fault-keyfile", json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    expect(&deliver(&gw, &id, "before"), "250 2.0.0");
    let key = sb.mailbox_dir(&id).join("secret-key.json");
    let saved = fs::read(&key).unwrap();

    for damage in ["missing", "corrupt"] {
        match damage {
            "missing" => fs::remove_file(&key).unwrap(),
            _ => fs::write(&key, b"{\"kdf\": \"argon2id13\", \"salt\": 7}").unwrap(),
        }
        let (_, answer) = login(&gw, &id, &password);
        assert!(
            answer.starts_with("-ERR [SYS/TEMP] The mailbox cannot be opened"),
            "{damage}: {answer}"
        );
        gw.wait_for_log("secret-key.json", Duration::from_secs(10));
        // Storing needs only the public key: journal mail keeps arriving.
        expect(&deliver(&gw, &id, damage), "250 2.0.0");
        let pw = sb.password_file(&password);
        let out = sb.run_export(&id, &pw, "x");
        assert_eq!(out.status.code(), Some(1), "{damage}");
        assert!(
            stderr(&out).contains("secret-key.json"),
            "{damage}: {}",
            stderr(&out)
        );
    }
    // The key file comes back from a backup: everything is readable.
    fs::write(&key, &saved).unwrap();
    let (mut c, answer) = login(&gw, &id, &password);
    assert!(answer.starts_with("+OK Logged in: 3 messages"), "{answer}");
    c.pop3("QUIT");
    assert_eq!(sb.export(&id, &password).len(), 3);
}

#[test]
fn a_mailbox_removed_under_an_open_session_gives_clear_errors() {
    let sb = Sandbox::for_gateway("fault-rmbox", json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let (other, other_password) = sb.create_mailbox("Other");
    let gw = Gateway::start(&sb);
    expect(&deliver(&gw, &id, "one"), "250 2.0.0");
    let (mut c, answer) = login(&gw, &id, &password);
    assert!(answer.starts_with("+OK"), "{answer}");
    // The CLI refuses while the session holds the mailbox.
    let out = sb.run(&["mailbox", "delete", &id, "--force", "--even-if-active"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    // Removed behind the gateway's back (by hand, a bad script, a restore).
    fs::remove_dir_all(sb.mailbox_dir(&id)).unwrap();
    assert!(
        c.pop3("RETR 1")
            .starts_with("-ERR [SYS/TEMP] Message 1 cannot be read")
    );
    assert!(c.pop3("DELE 1").starts_with("+OK"));
    let quit = c.pop3("QUIT");
    assert!(quit.starts_with("-ERR [SYS/TEMP]"), "{quit}");
    // Deliveries to it are refused as for any unknown mailbox; others work.
    let mut s = LineClient::implicit_tls(gw.addr("smtp.listen_tls[0]"), &gw.cert);
    s.smtp_reply();
    s.smtp("EHLO faults.example");
    s.smtp("MAIL FROM:<a@example.org>");
    expect(&s.smtp(&format!("RCPT TO:<{id}@localhost>")), "550 5.1.1");
    expect(&deliver(&gw, &other, "three"), "250 2.0.0");
    let (_, answer) = login(&gw, &other, &other_password);
    assert!(answer.starts_with("+OK"), "{answer}");
    assert!(!gw.log().contains("panicked"));
}

#[test]
fn a_garbage_certificate_on_sighup_keeps_the_running_one() {
    let sb = Sandbox::for_gateway("fault-cert", json!({}));
    let ca = TestCa::new(&sb.dir, "gateway");
    let (cert, key) = ca.issue(&sb.dir, "gateway", &["localhost"]);
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(sb.config()).unwrap()).unwrap();
    config["tls"] = json!({ "cert_file": cert, "key_file": key });
    fs::write(sb.config(), serde_json::to_vec(&config).unwrap()).unwrap();
    let gw = Gateway::start(&sb);
    let mut open = LineClient::implicit_tls(gw.addr("smtp.listen_tls[0]"), &ca.cert_file);
    expect(&open.smtp_reply(), "220 ");
    for (n, (file, garbage)) in [
        (&cert, &b"-----BEGIN CERTIFICATE-----\nnonsense\n"[..]),
        (&key, b"\x00\x01"),
    ]
    .into_iter()
    .enumerate()
    {
        let good = fs::read(file).unwrap();
        fs::write(file, garbage).unwrap();
        gw.signal(libc::SIGHUP);
        gw.wait_for_log_count(
            "reload failed, keeping the running configuration",
            n + 1,
            Duration::from_secs(10),
        );
        // Old sessions go on; new ones still get the running certificate.
        expect(&open.smtp("NOOP"), "250 2.0.0");
        let mut fresh = LineClient::implicit_tls(gw.addr("smtp.listen_tls[0]"), &ca.cert_file);
        expect(&fresh.smtp_reply(), "220 ");
        fs::write(file, good).unwrap();
    }
    assert!(!gw.log().contains("panicked"));
}

/// A file whose name and metadata disagree on the size (renamed by hand, or
/// damaged) is refused at RETR, never sent with a wrong octet count; files
/// named with a malformed size are not messages and are left alone.
#[test]
fn a_size_in_the_file_name_that_disagrees_with_the_metadata_is_damage() {
    let sb = Sandbox::for_gateway("fault-sizename", json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    expect(&deliver(&gw, &id, "first"), "250 2.0.0");
    expect(&deliver(&gw, &id, "second"), "250 2.0.0");
    let files = sb.message_files(&id);
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    let (stem, size) = name
        .strip_suffix(".msg")
        .unwrap()
        .split_once(",S=")
        .unwrap();
    let size: usize = size.parse().unwrap();
    let lied = files[0].with_file_name(format!("{stem},S={}.msg", size + 1));
    fs::rename(&files[0], &lied).unwrap();
    let junk = files[0].with_file_name(format!("{stem},S=x.msg"));
    fs::write(&junk, b"not a message").unwrap();

    let (mut c, answer) = login(&gw, &id, &password);
    assert!(answer.starts_with("+OK"), "{answer}");
    assert!(
        c.pop3("STAT").starts_with("+OK 2 "),
        "the junk file is no message"
    );
    expect(&c.pop3("LIST 1"), &format!("+OK 1 {}", size + 1));
    let refused = c.pop3("RETR 1");
    assert!(
        refused.starts_with("-ERR [SYS/PERM] Message 1 is damaged"),
        "{refused}"
    );
    let (status, body) = c.pop3_multi("RETR 2");
    assert!(status.starts_with("+OK"), "{status}");
    assert!(String::from_utf8_lossy(&body).contains("Subject: second"));
    gw.wait_for_log("its name", Duration::from_secs(10));
    c.pop3("QUIT");
    assert!(lied.exists() && junk.exists(), "nothing was removed");
}

/// How many `.eml` files an export or `scripts/decrypt` wrote into `dir`.
fn eml_count(dir: &std::path::Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "eml")
        })
        .count()
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_or_directory_in_messages_is_skipped_by_pop3_backup_and_status() {
    let sb = Sandbox::for_gateway("fault-fifo", json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    expect(&deliver(&gw, &id, "one"), "250 2.0.0");
    expect(&deliver(&gw, &id, "two"), "250 2.0.0");
    let messages = sb.mailbox_dir(&id).join("messages");
    mkfifo(&messages.join("1600000000000000-00000000000000f1,S=10.msg"));
    fs::create_dir(messages.join("1600000000000001-00000000000000d1,S=10.msg")).unwrap();

    // POP3 lists the two messages, retrieves and deletes them; the
    // mailbox is free again at once (not held [IN-USE] by a hung RETR).
    let (mut c, answer) = login(&gw, &id, &password);
    assert!(answer.starts_with("+OK Logged in: 2 messages"), "{answer}");
    for n in 1..=2 {
        let (status, body) = c.pop3_multi(&format!("RETR {n}"));
        assert!(status.starts_with("+OK"), "{status}");
        assert!(!body.is_empty());
        c.pop3(&format!("DELE {n}"));
    }
    assert!(c.pop3("QUIT").starts_with("+OK"));
    let (mut c, answer) = login(&gw, &id, &password);
    assert!(answer.starts_with("+OK Logged in: 0 messages"), "{answer}");
    c.pop3("QUIT");
    gw.wait_for_log("not a message file", Duration::from_secs(10));

    // status counts them and says what to do.
    let out = sb.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mailboxes"][0]["stray_entries"], 2);
    let attention = report["attention"].to_string();
    assert!(
        attention.contains("a FIFO") && attention.contains("a directory"),
        "{attention}"
    );

    // backup neither hangs on the FIFO nor fails on the directory.
    expect(&deliver(&gw, &id, "three"), "250 2.0.0");
    let out = sb.run(&["backup", sb.dir.join("backups").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        support::stdout(&out).contains("1 message(s)"),
        "{}",
        support::stdout(&out)
    );
    assert!(gw.stop().success());
}

#[test]
fn scripts_decrypt_reports_a_fifo_a_directory_and_a_duplicate_name_as_damaged_and_carries_on() {
    let Some(python) = support::python_with_nacl() else {
        return;
    };
    let sb = Sandbox::new("fault-decrypt-strays", json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    for subject in ["one", "two"] {
        let out = sb.run_with_input(
            &["mailbox", "deliver", &id],
            format!("Subject: {subject}\r\n\r\nbody\r\n").as_bytes(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let messages = sb.mailbox_dir(&id).join("messages");
    let first = sb.message_files(&id).remove(0);
    let name = first.file_name().unwrap().to_str().unwrap().to_owned();
    let (uidl, _) = name.split_once(",S=").unwrap();
    fs::copy(&first, messages.join(format!("{uidl}.msg"))).unwrap();
    mkfifo(&messages.join("1600000000000000-00000000000000f1,S=10.msg"));
    fs::create_dir(messages.join("1600000000000001-00000000000000d1,S=10.msg")).unwrap();
    let out_dir = sb.dir.join("decrypted");
    let out = support::run(
        std::process::Command::new(python)
            .arg(support::repo().join("scripts/decrypt"))
            .arg("--password-file")
            .arg(sb.password_file(&password))
            .arg(sb.mailbox_dir(&id))
            .arg(&out_dir),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("is a FIFO"), "{err}");
    assert!(err.contains("is a directory"), "{err}");
    assert!(err.contains("has the same UIDL"), "{err}");
    assert!(err.contains("2 message(s) written"), "{err}");
    let written = eml_count(&out_dir);
    assert_eq!(written, 2);
}

#[test]
fn after_a_password_reset_the_old_messages_are_moved_aside_not_served_as_damaged() {
    let sb = Sandbox::for_gateway("fault-reset", json!({}));
    let (id, old_password) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    expect(&deliver(&gw, &id, "old-1"), "250 2.0.0");
    expect(&deliver(&gw, &id, "old-2"), "250 2.0.0");
    let new_password = "Lantern-Walrus-Quartz-Meadow-77";
    let out = sb.run(&[
        "mailbox",
        "reset-password",
        &id,
        "--force",
        "--new-password-file",
        sb.password_file(new_password).to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        support::stdout(&out).contains("moved\naside"),
        "{}",
        support::stdout(&out)
    );
    expect(&deliver(&gw, &id, "new-1"), "250 2.0.0");
    // The archiver sees only what it can read, run after run.
    for _ in 0..2 {
        let (mut c, answer) = login(&gw, &id, new_password);
        assert!(answer.starts_with("+OK Logged in: 1 messages"), "{answer}");
        let (status, body) = c.pop3_multi("RETR 1");
        assert!(status.starts_with("+OK"), "{status}");
        assert!(support::contains(&body, b"Subject: new-1"));
        c.pop3("QUIT");
    }
    // status and the export with the old password.
    let out = sb.run(&["status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mailboxes"][0]["retired_messages"], 2);
    assert!(support::stdout(&sb.run(&["status"])).contains("2 message(s) sealed to a retired key"));
    let exported = sb.dir.join("retired-export");
    let out = sb.run(&[
        "mailbox",
        "export",
        &id,
        "--retired",
        "--password-file",
        sb.password_file(&old_password).to_str().unwrap(),
        "--out",
        exported.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let emls = eml_count(&exported);
    assert_eq!(emls, 2);
    let out = sb.run(&[
        "mailbox",
        "export",
        &id,
        "--retired",
        "--password-file",
        sb.password_file(new_password).to_str().unwrap(),
        "--out",
        sb.dir.join("nothing").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("opens none of the retired keys"),
        "{}",
        stderr(&out)
    );
    // A backup keeps them, and scripts/decrypt reads them with the old
    // password beside the new mail with the new one.
    let backups = sb.dir.join("backups");
    let out = sb.run(&["backup", backups.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    if let Some(python) = support::python_with_nacl() {
        let decrypted = sb.dir.join("decrypted");
        let out = support::run(
            std::process::Command::new(python)
                .arg(support::repo().join("scripts/decrypt"))
                .arg("--password-file")
                .arg(sb.password_file(new_password))
                .arg("--password-file")
                .arg(sb.password_file(&old_password))
                .arg(backups.join("latest/mailboxes").join(&id))
                .arg(&decrypted),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("3 message(s) written"),
            "{}",
            stderr(&out)
        );
    }
    // Purged only when asked explicitly.
    assert_eq!(
        sb.run(&["mailbox", "purge-retired", &id]).status.code(),
        Some(1)
    );
    let out = sb.run(&["mailbox", "purge-retired", &id, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sb.run(&["status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mailboxes"][0]["retired_messages"], 0);
    assert!(gw.stop().success());
}
