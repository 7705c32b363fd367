//! The mailbox management CLI, run as the real binary: every command and the
//! error paths an administrator will hit, with exit codes and messages.

mod support;

use std::fs;

use serde_json::json;
use support::{Sandbox, contains, fixture, is_root, stderr, stdout, walk};

fn code(out: &std::process::Output) -> i32 {
    out.status.code().expect("exit code")
}

#[test]
fn help_and_usage_errors() {
    let sb = Sandbox::new("help", json!({}));
    let out = sb.run(&["--help"]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("Usage: sealpost"));
    let out = sb.run(&["mailbox", "create", "--help"]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("--password-file"));

    for command in [&["status"][..], &["cert"], &["serve"], &["check-config"]] {
        let mut args = command.to_vec();
        args.push("--help");
        let out = sb.run(&args);
        assert_eq!(code(&out), 0, "{args:?}");
        assert!(
            stdout(&out).contains(&format!("Usage: sealpost {}", command[0])),
            "{args:?}"
        );
    }
    let out = sb.run(&["status", "--help"]);
    assert!(stdout(&out).contains("--prometheus") && stdout(&out).contains("Exits 4"));

    let out = sb.run(&["frobnicate"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("unknown command \"frobnicate\""));
    let out = sb.run(&["mailbox", "list", "--colour"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("Unrecognized option: 'colour'"));
    let out = sb.run(&["mailbox", "create"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--name is required"));
    let out = sb.run(&["mailbox"]);
    assert_eq!(code(&out), 2);
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let sb = Sandbox::new("check", json!({ "smtp": { "max_recipients": 7 } }));
    let out = sb.run(&["check-config"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let effective: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(effective["smtp"]["max_recipients"], 7);
    assert_eq!(effective["smtp"]["max_message_bytes"], 209_715_200);
    assert_eq!(effective["data_dir"], sb.dir.join("data").to_str().unwrap());
}

#[test]
fn a_bad_configuration_names_the_key_and_exits_1() {
    let sb = Sandbox::new("badcfg", json!({ "limits": { "max_connections": "many" } }));
    let out = sb.run(&["check-config"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("limits.max_connections: expected a whole number"),
        "{}",
        stderr(&out)
    );
    let out = sb.run(&["mailbox", "list"]);
    assert_eq!(code(&out), 1);
    let out = support::run(std::process::Command::new(support::sealpost_bin()).args([
        "-c",
        "/nonexistent/gateway.json",
        "check-config",
    ]));
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("/nonexistent/gateway.json: cannot read the file"));
}

#[test]
fn the_shipped_configuration_is_valid() {
    let out = support::run(std::process::Command::new(support::sealpost_bin()).args([
        "-c",
        support::repo().join("gateway.json").to_str().unwrap(),
        "check-config",
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn create_generates_a_password_once_and_the_mailbox_is_listed() {
    let sb = Sandbox::new("create", json!({ "mailbox_domain": "archive.example" }));
    let out = sb.run(&[
        "mailbox",
        "create",
        "--name",
        "Journal",
        "--description",
        "M365 journal",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("password: "));
    assert!(text.contains("cannot be recovered"));
    assert!(text.contains("@archive.example"));

    let (id, password) = sb.create_mailbox("Second");
    assert!(password.len() >= 26);
    let out = sb.run(&["mailbox", "list", "--json"]);
    assert_eq!(code(&out), 0);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(row["address"], format!("{id}@archive.example"));
    assert_eq!(row["status"], "active");
    assert_eq!(row["messages"], 0);
    // The password appears nowhere on disk.
    for file in walk(&sb.data()) {
        assert!(
            !contains(&fs::read(&file).unwrap(), password.as_bytes()),
            "{}",
            file.display()
        );
    }
}

#[test]
fn a_weak_chosen_password_is_refused_with_the_reason() {
    let sb = Sandbox::new("weak", json!({}));
    let pw = sb.password_file("password1234");
    let out = sb.run(&[
        "mailbox",
        "create",
        "--name",
        "J",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("too easy to guess"),
        "{}",
        stderr(&out)
    );
    let short = sb.password_file("Xk9#mQ2!");
    let out = sb.run(&[
        "mailbox",
        "create",
        "--name",
        "J",
        "--password-file",
        short.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("at least 12 characters"));
    let out = sb.run(&["mailbox", "list", "--json"]);
    assert_eq!(stdout(&out).trim(), "[]");
}

#[test]
fn a_strong_chosen_password_from_standard_input_works() {
    let sb = Sandbox::new("stdinpw", json!({}));
    let out = sb.run_with_input(
        &[
            "mailbox",
            "create",
            "--name",
            "J",
            "--password-file",
            "-",
            "--json",
        ],
        b"correct-Horse-battery-staple-94!\n",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.get("password").is_none(),
        "a chosen password is not echoed"
    );
    let id = v["id"].as_str().unwrap();
    sb.run_with_input(&["mailbox", "deliver", id], b"Subject: t\n\nx\n");
    assert_eq!(sb.export(id, "correct-Horse-battery-staple-94!").len(), 1);
}

#[test]
fn deliver_and_export_round_trip_the_fixtures_byte_for_byte() {
    let sb = Sandbox::new("roundtrip", json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let names = support::FIXTURES;
    for name in names {
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
        assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
    }
    let exported = sb.export(&id, &password);
    assert_eq!(exported.len(), names.len());
    for ((_, body, meta), name) in exported.iter().zip(names) {
        assert!(body == &fixture(name), "{name} differs after export");
        assert_eq!(meta["size"], fixture(name).len());
        assert_eq!(meta["source"], "cli");
        assert_eq!(meta["mail_from"], "journal@contoso.example");
        assert_eq!(meta["rcpt_to"][0], format!("{id}@localhost"));
    }
}

#[test]
fn exported_mail_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new("export-private", json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let out = sb.run_with_input(
        &["mailbox", "deliver", &id],
        b"Subject: private\r\n\r\nx\r\n",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let pw = sb.password_file(&password);
    let dir = sb.dir.join("exported/deeper");
    let out = sb.run_export(&id, &pw, &dir);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    // An existing directory others can open is refused, and nothing lands there.
    let open_dir = sb.dir.join("shared");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = sb.run_export(&id, &pw, &open_dir);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("other users can open this directory"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(&open_dir).unwrap().count(), 0);
}

#[test]
fn deliver_refuses_an_empty_message_and_stores_nothing() {
    let sb = Sandbox::new("empty", json!({}));
    let (id, _) = sb.create_mailbox("J");
    let out = sb.run_with_input(&["mailbox", "deliver", &id], b"");
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the message is empty"),
        "{}",
        stderr(&out)
    );
    assert!(sb.message_files(&id).is_empty());
    assert!(sb.tmp_is_empty(&id));
}

#[test]
fn deliver_turns_lf_line_endings_into_crlf() {
    let sb = Sandbox::new("lf", json!({}));
    let (id, password) = sb.create_mailbox("J");
    sb.run_with_input(
        &["mailbox", "deliver", &id],
        b"Subject: lf\n\nline one\nline two\n",
    );
    let exported = sb.export(&id, &password);
    assert_eq!(
        exported[0].1,
        b"Subject: lf\r\n\r\nline one\r\nline two\r\n"
    );
}

#[test]
fn no_plaintext_of_a_delivered_message_is_on_disk() {
    let sb = Sandbox::new("plain", json!({}));
    let (id, _) = sb.create_mailbox("J");
    let message = fixture("m365-journal-report.eml");
    let out = sb.run_with_input(
        &[
            "mailbox",
            "deliver",
            &id,
            "--from",
            "journal@contoso.example",
        ],
        &message,
    );
    assert_eq!(code(&out), 0);
    let needles: [&[u8]; 5] = [
        b"Q4 contract draft",
        b"anna.berger@contoso.example",
        b"X-MS-Journal-Report",
        b"Content-Type",
        b"journal@contoso.example",
    ];
    for needle in needles {
        assert!(contains(&message, needle) || needle == b"journal@contoso.example");
        for file in walk(&sb.data()) {
            let bytes = fs::read(&file).unwrap();
            assert!(
                !contains(&bytes, needle),
                "{:?} found in {}",
                String::from_utf8_lossy(needle),
                file.display()
            );
        }
    }
}

#[test]
fn export_with_a_wrong_password_fails_and_writes_nothing() {
    let sb = Sandbox::new("wrongpw", json!({}));
    let (id, _) = sb.create_mailbox("J");
    sb.run_with_input(&["mailbox", "deliver", &id], b"Subject: x\r\n\r\ny\r\n");
    let pw = sb.password_file("not-the-password-at-all");
    let out_dir = sb.dir.join("out");
    let out = sb.run_export(&id, &pw, &out_dir);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
    assert!(!out_dir.exists());
}

#[test]
fn export_skips_a_damaged_message_reports_it_and_exits_3() {
    let sb = Sandbox::new("damaged", json!({}));
    let (id, password) = sb.create_mailbox("J");
    for body in [
        "Subject: one\r\n\r\n1\r\n",
        "Subject: two\r\n\r\n2\r\n",
        "Subject: three\r\n\r\n3\r\n",
    ] {
        sb.run_with_input(&["mailbox", "deliver", &id], body.as_bytes());
    }
    let files = sb.message_files(&id);
    let mut bytes = fs::read(&files[1]).unwrap();
    let mid = bytes.len() - 5;
    bytes[mid] ^= 0x40;
    fs::write(&files[1], bytes).unwrap();
    let pw = sb.password_file(&password);
    let out_dir = sb.dir.join("out");
    let out = sb.run_export(&id, &pw, &out_dir);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let damaged_name = files[1].file_name().unwrap().to_str().unwrap();
    assert!(stderr(&out).contains(damaged_name), "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged"));
    let emls: Vec<_> = fs::read_dir(&out_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "eml")
        })
        .collect();
    assert_eq!(emls.len(), 2);
    assert!(
        !walk(&out_dir)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".part"))
    );
}

#[test]
fn unknown_and_malformed_ids_are_clear_errors() {
    let sb = Sandbox::new("ids", json!({}));
    let out = sb.run(&["mailbox", "show", "mbx-00000000000000000000000000000000"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("mailbox mbx-00000000000000000000000000000000 does not exist"));
    for bad in ["../etc", "mbx-../../etc/passwd", "mbx-0000"] {
        let out = sb.run(&["mailbox", "show", bad]);
        assert_eq!(code(&out), 2, "{bad}");
        assert!(
            stderr(&out).contains("is not a mailbox id"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!sb.dir.join("etc").exists());
    // deliver speaks sysexits for a Postfix pipe transport.
    let out = sb.run_with_input(
        &["mailbox", "deliver", "mbx-00000000000000000000000000000000"],
        b"x\r\n",
    );
    assert_eq!(code(&out), 67);
    let out = sb.run_with_input(&["mailbox", "deliver", "../etc"], b"x\r\n");
    assert_eq!(code(&out), 67);
}

#[test]
fn show_reports_the_mailbox() {
    let sb = Sandbox::new("show", json!({}));
    let (id, _) = sb.create_mailbox("Journal");
    sb.run_with_input(&["mailbox", "deliver", &id], b"Subject: x\r\n\r\ny\r\n");
    let out = sb.run(&["mailbox", "show", &id, "--json"]);
    assert_eq!(code(&out), 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "Journal");
    assert_eq!(v["messages"], 1);
    assert_eq!(v["kdf"]["opslimit"], 1);
    assert!(v["newest"].as_str().unwrap().ends_with('Z'));
    let out = sb.run(&["mailbox", "show", &id]);
    assert!(stdout(&out).contains("status:      active"));
}

#[test]
fn passwd_rewraps_the_key_and_old_mail_stays_readable() {
    let sb = Sandbox::new("passwd", json!({}));
    let (id, password) = sb.create_mailbox("J");
    sb.run_with_input(
        &["mailbox", "deliver", &id],
        b"Subject: before\r\n\r\nx\r\n",
    );
    let old = sb.password_file(&password);
    let new = sb.password_file("another-Strong-passphrase-77?");
    let out = sb.run(&[
        "mailbox",
        "passwd",
        &id,
        "--password-file",
        old.to_str().unwrap(),
        "--new-password-file",
        new.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let exported = sb.export(&id, "another-Strong-passphrase-77?");
    assert_eq!(exported[0].1, b"Subject: before\r\n\r\nx\r\n");

    // The old password no longer works.
    let out = sb.run(&[
        "mailbox",
        "passwd",
        &id,
        "--password-file",
        old.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("wrong password"));

    // Without a new password file one is generated and printed.
    let out = sb.run(&[
        "mailbox",
        "passwd",
        &id,
        "--password-file",
        new.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0);
    let generated = stdout(&out)
        .lines()
        .find_map(|l| l.trim().strip_prefix("new password: ").map(str::to_string))
        .unwrap();
    assert_eq!(sb.export(&id, &generated).len(), 1);
}

#[test]
fn passwd_refuses_two_passwords_from_standard_input() {
    let sb = Sandbox::new("passwd2", json!({}));
    let (id, _) = sb.create_mailbox("J");
    let out = sb.run(&[
        "mailbox",
        "passwd",
        &id,
        "--password-file",
        "-",
        "--new-password-file",
        "-",
    ]);
    assert_eq!(code(&out), 2);
}

#[test]
fn reset_password_needs_force_and_moves_the_old_mail_aside() {
    let sb = Sandbox::new("reset", json!({}));
    let (id, password) = sb.create_mailbox("J");
    sb.run_with_input(&["mailbox", "deliver", &id], b"Subject: old\r\n\r\nx\r\n");
    let out = sb.run(&["mailbox", "reset-password", &id]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("--force"));
    assert!(stderr(&out).contains("no longer be read"));
    assert_eq!(
        sb.export(&id, &password).len(),
        1,
        "nothing changed without --force"
    );

    let out = sb.run(&["mailbox", "reset-password", &id, "--force"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("moved\naside"), "{}", stdout(&out));
    let new_password = stdout(&out)
        .lines()
        .find_map(|l| l.trim().strip_prefix("new password: ").map(str::to_string))
        .unwrap();
    sb.run_with_input(&["mailbox", "deliver", &id], b"Subject: new\r\n\r\ny\r\n");
    let pw = sb.password_file(&new_password);
    let out_dir = sb.dir.join("after-reset");
    let out = sb.run_export(&id, &pw, &out_dir);
    // The old message was moved aside: the export holds the new one only.
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let bodies: Vec<Vec<u8>> = walk(&out_dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| fs::read(p).unwrap())
        .collect();
    assert_eq!(bodies, vec![b"Subject: new\r\n\r\ny\r\n".to_vec()]);
}

#[test]
fn suspend_resume_and_update() {
    let sb = Sandbox::new("suspend", json!({}));
    let (id, _) = sb.create_mailbox("J");
    assert_eq!(code(&sb.run(&["mailbox", "suspend", &id])), 0);
    let out = sb.run_with_input(&["mailbox", "deliver", &id], b"x\r\n");
    assert_eq!(
        code(&out),
        75,
        "suspended refuses new mail with a temporary failure"
    );
    assert!(stderr(&out).contains("suspended"));
    assert_eq!(code(&sb.run(&["mailbox", "resume", &id])), 0);
    assert_eq!(
        code(&sb.run_with_input(&["mailbox", "deliver", &id], b"x\r\n")),
        0
    );

    assert_eq!(
        code(&sb.run(&[
            "mailbox",
            "update",
            &id,
            "--name",
            "Renamed",
            "--description",
            "d"
        ])),
        0
    );
    let v: serde_json::Value =
        serde_json::from_slice(&sb.run(&["mailbox", "show", &id, "--json"]).stdout).unwrap();
    assert_eq!(v["name"], "Renamed");
    assert_eq!(v["description"], "d");
    assert_eq!(code(&sb.run(&["mailbox", "update", &id])), 2);
    let out = sb.run(&["mailbox", "update", &id, "--name", ""]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("name must not be empty"));
}

#[test]
fn delete_refuses_an_active_mailbox_and_a_non_empty_one_without_force() {
    let sb = Sandbox::new("delete", json!({}));
    let (id, _) = sb.create_mailbox("J");
    sb.run_with_input(&["mailbox", "deliver", &id], b"x\r\n");
    // Active: refused, however forced, until suspended.
    let out = sb.run(&["mailbox", "delete", &id, "--force"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("is active: suspend it first"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sb.message_files(&id).len(), 1);
    assert_eq!(code(&sb.run(&["mailbox", "suspend", &id])), 0);
    let out = sb.run(&["mailbox", "delete", &id]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("still holds 1 message"));
    assert!(sb.mailbox_dir(&id).exists());
    let out = sb.run(&["mailbox", "delete", &id, "--force"]);
    assert_eq!(code(&out), 0);
    assert!(!sb.mailbox_dir(&id).exists());
    // The explicit override deletes an active one, with a warning.
    let (empty, _) = sb.create_mailbox("K");
    let out = sb.run(&["mailbox", "delete", &empty, "--even-if-active"]);
    assert_eq!(code(&out), 0);
    assert!(
        stderr(&out).contains("warning: mailbox"),
        "{}",
        stderr(&out)
    );
    assert!(!sb.mailbox_dir(&empty).exists());
}

#[test]
fn a_corrupt_secret_key_file_is_a_clear_error() {
    let sb = Sandbox::new("corrupt", json!({}));
    let (id, password) = sb.create_mailbox("J");
    let key_file = sb.mailbox_dir(&id).join("secret-key.json");
    fs::write(&key_file, b"{ not json").unwrap();
    let pw = sb.password_file(&password);
    let out = sb.run_export(&id, &pw, sb.dir.join("o"));
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("secret-key.json: the file is not valid"),
        "{}",
        stderr(&out)
    );

    fs::write(&key_file, br#"{"kdf":"argon2id13","opslimit":1,"memlimit":8388608,"salt":"AAAA","nonce":"x","wrapped_key":"y"}"#).unwrap();
    let out = sb.run(&["mailbox", "show", &id]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("salt"), "{}", stderr(&out));
}

#[test]
fn a_missing_password_file_is_a_clear_error() {
    let sb = Sandbox::new("nopw", json!({}));
    let (id, _) = sb.create_mailbox("J");
    let out = sb.run(&[
        "mailbox",
        "export",
        &id,
        "--password-file",
        "/nonexistent/pw",
        "--out",
        "o",
    ]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("cannot read password file /nonexistent/pw"));
    // Standard input is not a terminal here, so there is no prompt to fall back on.
    let out = sb.run(&["mailbox", "export", &id, "--out", "o"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--password-file"));
}

/// Installed, the CLI is run from anywhere: `SEALPOST_CONFIG` names the
/// file when `-c` does not, even where a `./gateway.json` lies.
#[test]
fn the_configuration_comes_from_sealpost_config_when_no_flag_names_it() {
    let sb = Sandbox::new("envconfig", json!({}));
    let elsewhere = sb.dir.join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    let check = |dir: &std::path::Path| {
        support::run(
            std::process::Command::new(support::sealpost_bin())
                .arg("check-config")
                .env("SEALPOST_CONFIG", sb.config())
                .current_dir(dir),
        )
    };
    let out = check(&elsewhere);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let expected = format!("{}: configuration is valid", sb.config().display());
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    // An explicit variable beats a gateway.json lying in the directory.
    fs::write(elsewhere.join("gateway.json"), b"{ not json").unwrap();
    let out = check(&elsewhere);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// `cert show` prints what a client shows on first connect: the same
/// fingerprint the gateway logged, its names and validity; a clear error
/// before there is any certificate.
#[test]
fn cert_show_prints_the_served_certificate() {
    let sb = Sandbox::for_gateway("certshow", json!({}));
    let out = sb.run(&["cert", "show"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("no certificate yet"),
        "{}",
        stderr(&out)
    );
    let gw = support::gateway::Gateway::start(&sb);
    let logged = gw
        .log()
        .split("(SHA-256 ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap()
        .to_string();
    let out = sb.run(&["cert", "show"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("SHA-256:     {logged}")), "{text}");
    assert!(text.contains("127.0.0.1"), "{text}");
    let out = sb.run(&["cert", "show", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sha256"], logged.as_str());
    assert!(v["days_left"].as_i64().unwrap() > 14);
    let out = sb.run(&["cert", "list"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

/// Installed, the gateway runs as `sealpost` and owns the data directory; the
/// administrator runs the CLI as root. What root creates must belong to the
/// owner, or every delivery to it fails.
#[test]
fn run_as_root_the_cli_works_as_the_data_directory_owner() {
    if !is_root() {
        support::missing_peer::<()>("switching to the data directory's owner needs root");
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    const NOBODY: u32 = 65534;
    let sb = Sandbox::new("owner", json!({}));
    let (before, _) = sb.create_mailbox("Before");
    let out = support::run(
        std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(sb.data()),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let (id, password) = sb.create_mailbox("Journal");
    let created: Vec<_> = walk(&sb.mailbox_dir(&id));
    assert!(!created.is_empty());
    for path in created.iter().chain([&sb.mailbox_dir(&id)]) {
        let meta = fs::metadata(path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY), "{path:?}");
    }
    let out = sb.run_with_input(&["mailbox", "deliver", &id], &fixture("utf8-headers.eml"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for path in sb.message_files(&id) {
        assert_eq!(fs::metadata(&path).unwrap().uid(), NOBODY, "{path:?}");
    }
    let out = sb.run(&["mailbox", "list"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains(&before) && stdout(&out).contains(&id));

    // A password file only root can read: the error says why.
    let secret = sb.password_file("correct horse battery staple 1987");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let out = sb.run(&[
        "mailbox",
        "create",
        "--name",
        "Root file",
        "--password-file",
        secret.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("works as the data directory's owner, nobody"),
        "{}",
        stderr(&out)
    );

    // So is an export into a directory only root may write.
    let locked = sb.dir.join("root-only");
    fs::create_dir(&locked).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    let out = sb.run_export(&id, &sb.password_file(&password), locked.join("out"));
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("Permission denied")
            && stderr(&out).contains("give it files and directories that user can use"),
        "{}",
        stderr(&out)
    );

    // The gateway itself is not started as root on the owner's directory.
    let out = sb.run(&["serve"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out)
            .contains("this data directory belongs to nobody; start the gateway as that user"),
        "{}",
        stderr(&out)
    );
}

/// `backup` and `merge` refuse what would do harm, with the reason.
#[test]
fn backup_and_merge_refuse_bad_arguments_clearly() {
    let sb = Sandbox::new("backup-args", json!({}));
    sb.create_mailbox("Journal");
    let out = sb.run(&["backup"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("give the backup directory"),
        "{}",
        stderr(&out)
    );
    let dest = sb.dir.join("b");
    let out = sb.run(&["backup", dest.to_str().unwrap(), "--keep", "0"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--keep \"0\""), "{}", stderr(&out));
    // Into the data directory itself: a backup that copies itself.
    let inside = sb.data().join("backups");
    let out = sb.run(&["backup", inside.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("the backup must be outside the data directory"),
        "{}",
        stderr(&out)
    );
    assert!(!inside.exists(), "nothing was created");
    let out = sb.run(&["merge"]);
    assert_eq!(code(&out), 2);
    let missing = sb.dir.join("no-such-standby");
    let out = sb.run(&["merge", missing.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("no-such-standby"), "{}", stderr(&out));
    let out = sb.run(&["mailbox", "import-public"]);
    assert_eq!(code(&out), 2);

    // A standby copy whose public key no longer matches (the password was
    // reset on the primary): its mail is not merged, and it stays.
    let (id, _) = sb.create_mailbox("Reset later");
    let public = sb.run(&["mailbox", "export-public", &id]).stdout;
    let standby = Sandbox::new("backup-args-standby", json!({}));
    let out = standby.run_with_input(&["mailbox", "import-public", "-"], &public);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = standby.run_with_input(&["mailbox", "deliver", &id], &fixture("utf8-headers.eml"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = sb.run(&["mailbox", "reset-password", &id, "--force"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = sb.run(&["merge", standby.data().to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("the public keys differ"),
        "{}",
        stderr(&out)
    );
    assert_eq!(standby.message_files(&id).len(), 1, "left on the standby");
    assert!(sb.message_files(&id).is_empty());
    let out = sb.run(&[
        "mailbox",
        "export-public",
        "mbx-00000000000000000000000000000000",
    ]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}
