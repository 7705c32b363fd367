//! Fault: the disk fills up. Storing fails with a temporary error and leaves
//! nothing behind (see also `tests/smtp.rs` and the proxies' full-disk
//! tests), and the archiver can still empty a full gateway.

mod support;

use serde_json::json;
use support::gateway::{Gateway, LineClient};
use support::{Sandbox, small_tmpfs};

#[test]
fn an_archiver_can_empty_a_full_gateway() {
    let sb = Sandbox::for_gateway("disk-full-dele", json!({}));
    let Some(_mount) = sb.full_disk("3m") else {
        return;
    };
    let (id, password) = sb.create_mailbox("Journal");
    // Started first: its generated certificate needs room too.
    let gw = Gateway::start(&sb);
    // Fill the disk through the CLI until it refuses (75: try again later).
    let message = format!("Subject: filler\r\n\r\n{}\r\n", "y".repeat(200 * 1024));
    let mut stored = 0;
    loop {
        let out = sb.run_with_input(&["mailbox", "deliver", &id], message.as_bytes());
        if !out.status.success() {
            assert_eq!(out.status.code(), Some(75), "{}", support::stderr(&out));
            break;
        }
        stored += 1;
        assert!(stored < 100, "the disk never filled up");
    }
    assert_eq!(sb.message_files(&id).len(), stored);

    let mut c = LineClient::implicit_tls(gw.addr("pop3.listen_tls[0]"), &gw.cert);
    c.read_line();
    c.pop3(&format!("USER {id}"));
    let answer = c.pop3(&format!("PASS {password}"));
    assert!(answer.starts_with("+OK"), "{answer}");
    for n in 1..=stored {
        assert!(c.pop3(&format!("DELE {n}")).starts_with("+OK"));
    }
    assert_eq!(
        c.pop3("QUIT"),
        format!("+OK Sealpost signing off ({stored} messages deleted)\r\n")
    );
    assert!(sb.message_files(&id).is_empty());
    // And there is room again.
    let out = sb.run_with_input(&["mailbox", "deliver", &id], message.as_bytes());
    assert!(out.status.success(), "{}", support::stderr(&out));
}

/// A directory the gateway must write to but cannot (here a read-only
/// spool) stops start-up with its name, instead of a gateway that says
/// "ready" and then answers every message with 451.
#[test]
fn an_unwritable_spool_stops_start_up_naming_it() {
    let sb = Sandbox::for_gateway("unwritable-spool", json!({}));
    sb.create_mailbox("Journal");
    let spool = sb.data().join("spool");
    let Some(_mount) = small_tmpfs(&spool, "1m") else {
        return;
    };
    let remount = support::run(
        std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&spool),
    );
    assert!(remount.status.success(), "{}", support::stderr(&remount));
    let out = sb.run(&["serve"]);
    assert_eq!(out.status.code(), Some(1), "{}", support::stderr(&out));
    let expected = format!("{}: the gateway cannot write here", spool.display());
    assert!(
        support::stderr(&out).contains(&expected),
        "{}",
        support::stderr(&out)
    );
}

/// A read-only command needs no write access: `mailbox list` on a data
/// directory it cannot write (read-only here, with a crash leftover in a
/// mailbox's `tmp/` that a clean-up would try to remove) still lists; only
/// `serve` cleans up.
#[test]
fn mailbox_list_works_on_a_data_directory_it_cannot_write() {
    let sb = Sandbox::new("readonly-list", json!({}));
    let Some(_mount) = sb.full_disk("2m") else {
        return;
    };
    let (id, _) = sb.create_mailbox("Journal");
    let leftover = sb.mailbox_dir(&id).join("tmp/1-0123456789abcdef.msg");
    std::fs::write(&leftover, b"half").unwrap();
    let remount = support::run(
        std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(sb.data()),
    );
    assert!(remount.status.success(), "{}", support::stderr(&remount));
    let out = sb.run(&["mailbox", "list"]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    assert!(leftover.exists());
}
