//! The disk reserve (`limits.min_free_bytes`), as Postfix's
//! `queue_minfree`: on a small tmpfs filled to just above and then just
//! below it, swaks is told `452 4.3.1` at MAIL FROM (a temporary error,
//! so the sender retries), `mailbox deliver` exits 75, `status` exits 4,
//! the archiver still collects and deletes over POP3, nothing acknowledged
//! before is lost, and intake resumes above the reserve without a restart.
//! The proxies' refusals are in `tests/smtp_proxy.rs` and
//! `tests/pop3_proxy.rs`.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::json;
use support::gateway::{Gateway, LineClient};
use support::{Sandbox, peer, small_tmpfs, stderr, stdout, wait_until};

const MIB: u64 = 1024 * 1024;
const RESERVE: u64 = 6 * MIB;

/// Bytes free on the file system of `dir`, for an unprivileged user.
fn free(dir: &Path) -> u64 {
    let vfs = rustix::fs::statvfs(dir).unwrap();
    vfs.f_bavail * vfs.f_frsize
}

/// Grows or shrinks `data/filler` until `target` bytes (± a block) are free.
fn fill_to(data: &Path, target: u64) {
    let filler = data.join("filler");
    let now = fs::metadata(&filler).map_or(0, |m| m.len());
    let size = (now + free(data)).saturating_sub(target);
    // Written, not truncated up: a tmpfs counts only written pages.
    fs::write(&filler, vec![b'x'; usize::try_from(size).unwrap()]).unwrap();
    let left = free(data);
    assert!(
        left.abs_diff(target) < 256 * 1024,
        "{left} free, {target} wanted"
    );
}

fn swaks(swaks: &Path, server: &str, cert: &Path, to: &str, subject: &str) -> String {
    let out = support::run(Command::new(swaks).args([
        "--server",
        server,
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        cert.to_str().unwrap(),
        "--tls-sni",
        "localhost",
        "--from",
        "journal@contoso.example",
        "--to",
        to,
        "--header",
        &format!("Subject: {subject}"),
        "--body",
        "The quarterly figures.",
    ]));
    format!("{}{}", stdout(&out), stderr(&out))
}

#[test]
fn below_the_reserve_intake_stops_with_452_the_archiver_drains_and_intake_resumes() {
    let Some(swaks_bin) = peer("swaks", &["swaks"]) else {
        return;
    };
    let sb = Sandbox::for_gateway(
        "disk-reserve",
        json!({ "limits": { "min_free_bytes": RESERVE } }),
    );
    let Some(_mount) = small_tmpfs(&sb.data(), "24m") else {
        return;
    };
    let (id, password) = sb.create_mailbox("Journal");
    let to = format!("{id}@localhost");
    let gw = Gateway::start(&sb);
    let server = gw.addr("smtp.listen[0]").to_string();

    // Just above the reserve: taken in.
    fill_to(&sb.data(), RESERVE + 2 * MIB);
    let said = swaks(&swaks_bin, &server, &gw.cert, &to, "before");
    assert!(said.contains("250 2.0.0 Ok: queued as"), "{said}");
    let out = sb.run(&["status"]);
    assert!(stdout(&out).contains("Disk:"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("BELOW"), "{}", stdout(&out));

    // Just below: a temporary error at MAIL FROM, which swaks reports.
    fill_to(&sb.data(), RESERVE - MIB);
    let said = swaks(&swaks_bin, &server, &gw.cert, &to, "refused");
    assert!(
        said.contains("<~* 452 4.3.1 Insufficient system storage, try again later"),
        "{said}"
    );
    assert!(!said.contains("queued as"), "{said}");
    gw.wait_for_log(
        "below the reserve of 6.0 MiB: new mail is refused",
        std::time::Duration::from_secs(5),
    );
    assert!(gw.log().contains("reply=452 reason=disk-reserve"));
    let out = sb.run_with_input(&["mailbox", "deliver", &id], b"Subject: cli\r\n\r\nx\r\n");
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("below its reserve"),
        "{}",
        stderr(&out)
    );
    let out = sb.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["disk"]["below_reserve"], true, "{report}");
    assert_eq!(report["disk"]["reserve_bytes"], RESERVE, "{report}");
    assert!(
        report["attention"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains("below the reserve of 6.0 MiB")),
        "{report}"
    );

    // The archiver still collects and deletes: the message taken in before
    // the reserve was crossed is whole.
    let mut pop3 = LineClient::implicit_tls(gw.addr("pop3.listen_tls[0]"), &gw.cert);
    assert!(pop3.read_line().unwrap().starts_with("+OK"));
    assert!(pop3.pop3(&format!("USER {id}")).starts_with("+OK"));
    assert!(pop3.pop3(&format!("PASS {password}")).starts_with("+OK"));
    let (ok, body) = pop3.pop3_multi("RETR 1");
    assert!(ok.starts_with("+OK"), "{ok}");
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("Subject: before") && body.contains("The quarterly figures."),
        "{body}"
    );
    assert!(pop3.pop3("DELE 1").starts_with("+OK"));
    assert!(pop3.pop3("QUIT").starts_with("+OK"));
    wait_until("the retrieved message is deleted", || {
        sb.message_files(&id).is_empty()
    });

    // Space is freed: taken in again, with no restart.
    fs::remove_file(sb.data().join("filler")).unwrap();
    wait_until("mail is taken in again", || {
        swaks(&swaks_bin, &server, &gw.cert, &to, "after").contains("250 2.0.0 Ok: queued as")
    });
    gw.wait_for_log(
        "above the reserve of 6.0 MiB again: mail is taken in",
        std::time::Duration::from_secs(5),
    );
    assert_eq!(sb.message_files(&id).len(), 1);
    let out = sb.run(&["status"]);
    assert!(out.status.success(), "{}", stdout(&out));
}

/// `limits.max_pending_bytes_per_mailbox`: a mailbox holding that much
/// gets `452 4.2.2` (temporary) until the archiver collects; the others
/// take mail as before.
#[test]
fn a_mailbox_over_its_pending_limit_gets_452_4_2_2_until_collected() {
    let sb = Sandbox::for_gateway(
        "mailbox-full",
        json!({ "limits": { "max_pending_bytes_per_mailbox": 4096 } }),
    );
    let (full, password) = sb.create_mailbox("Tenant A");
    let (other, _) = sb.create_mailbox("Tenant B");
    let gw = Gateway::start(&sb);
    let send = |to: &str| {
        let mut c = LineClient::implicit_tls(gw.addr("smtp.listen_tls[0]"), &gw.cert);
        c.smtp_reply();
        c.smtp("EHLO sender.example");
        c.smtp_send(
            "journal@example.org",
            &format!("{to}@localhost"),
            format!("Subject: filler\r\n\r\n{}\r\n", "z".repeat(6000)).as_bytes(),
        )
    };
    assert!(send(&full).starts_with("250"));
    let refused = send(&full);
    assert!(refused.starts_with("452 4.2.2"), "{refused}");
    assert!(
        send(&other).starts_with("250"),
        "another tenant is not affected"
    );
    let mut pop3 = LineClient::implicit_tls(gw.addr("pop3.listen_tls[0]"), &gw.cert);
    pop3.read_line();
    pop3.pop3(&format!("USER {full}"));
    assert!(pop3.pop3(&format!("PASS {password}")).starts_with("+OK"));
    assert!(pop3.pop3("DELE 1").starts_with("+OK"));
    assert!(pop3.pop3("QUIT").starts_with("+OK"));
    wait_until("the mailbox takes mail again", || {
        send(&full).starts_with("250")
    });
    assert!(gw.log().contains("reason=mailbox-full"));
}
