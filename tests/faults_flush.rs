//! Group commit under the slow-flush model of an SD card
//! (`tests/shim/slowflush.c`, preloaded into the gateway): every flush
//! takes its time on one machine-wide lock, the shim logs when each flush
//! began and ended and when each file was renamed into place, and fails
//! flushes with EIO on demand.
//!
//! This is evidence of ordering, not of durability on a real card (kill -9
//! leaves the page cache intact): no `250` before a successful flush that
//! began after the message's file was in place, and no `250` for a message
//! whose write began before a flush that failed.

mod support;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use support::Sandbox;
use support::gateway::{Gateway, LineClient, expect};

/// The gateway under the shim; its flush log and the file that fails flushes.
struct Slow {
    sb: Sandbox,
    gw: Gateway,
    id: String,
    password: String,
    log: PathBuf,
    fail: PathBuf,
}

fn slow(label: &str, delay_ms: u64) -> Option<Slow> {
    let shim = support::slowflush_shim()?;
    let sb = Sandbox::for_gateway(label, json!({ "smtp": { "require_tls": false } }));
    let (id, password) = sb.create_mailbox("Journal");
    let (log, fail) = (sb.dir.join("flushes.log"), sb.dir.join("fail-flushes"));
    let lock = sb.dir.join("flush.lock");
    let gw = Gateway::start_with(&sb, |command| {
        command
            .env("LD_PRELOAD", &shim)
            .env("SLOWFLUSH_MS", delay_ms.to_string())
            .env("SLOWFLUSH_LOCK", &lock)
            .env("SLOWFLUSH_LOG", &log)
            .env("SLOWFLUSH_FAIL", &fail);
    });
    Some(Slow {
        sb,
        gw,
        id,
        password,
        log,
        fail,
    })
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Sends one message; the reply to its end of data, and when it came.
fn send(gw: &Gateway, to: &str, subject: &str) -> (String, f64) {
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    expect(&c.smtp_reply(), "220 ");
    c.smtp("EHLO sender.example");
    expect(&c.smtp("MAIL FROM:<journal@example.org>"), "250 ");
    expect(&c.smtp(&format!("RCPT TO:<{to}>")), "250 ");
    expect(&c.smtp("DATA"), "354");
    c.send_raw(format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n.\r\n").as_bytes());
    let reply = c.smtp_reply();
    let at = seconds(SystemTime::now());
    let _ = c.smtp("QUIT");
    (reply, at)
}

/// One line of the shim's log.
struct Entry {
    call: String,
    ok: bool,
    began: f64,
    ended: f64,
    path: Option<String>,
}

fn entries(log: &Path) -> Vec<Entry> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut w = line.splitn(5, ' ');
            let call = w.next().unwrap().to_string();
            let ok = w.next().unwrap() == "0";
            let began = w.next().unwrap().parse().unwrap();
            let ended = w.next().unwrap().parse().unwrap();
            Entry {
                call,
                ok,
                began,
                ended,
                path: w.next().map(str::to_string),
            }
        })
        .collect()
}

/// The stored file name of each queue id, from the gateway's log.
fn stored_files(log: &str) -> HashMap<String, String> {
    log.lines()
        .filter(|l| l.contains("result=stored"))
        .filter_map(|l| {
            let qid = l.split("smtp[").nth(1)?.split(']').next()?.to_string();
            let file = l
                .split(" files=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_string();
            Some((qid, file))
        })
        .collect()
}

#[test]
fn no_message_is_acknowledged_before_a_flush_that_began_after_its_file_was_in_place() {
    let Some(s) = slow("flush-order", 20) else {
        return;
    };
    let to = format!("{}@localhost", s.id);
    let barrier = Arc::new(Barrier::new(8));
    let gw = Arc::new(s.gw);
    let senders: Vec<_> = (0..8)
        .map(|i| {
            let (gw, to, barrier) = (Arc::clone(&gw), to.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                (0..3)
                    .map(|j| send(&gw, &to, &format!("m{i}-{j}")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let replies: Vec<(String, f64)> = senders
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    // The gateway's log reaches the test through a pipe: a 250 can come
    // before its stored line has been read.
    gw.wait_for_log_count("result=stored", replies.len(), Duration::from_secs(10));
    let files = stored_files(&gw.log());
    let log = entries(&s.log);
    let flushes: Vec<&Entry> = log.iter().filter(|e| e.call != "rename").collect();
    for (reply, at) in &replies {
        expect(reply, "250 2.0.0 Ok: queued as ");
        let qid = reply.trim().rsplit(' ').next().unwrap();
        let file = &files[qid];
        let renamed = log
            .iter()
            .find(|e| {
                e.call == "rename" && e.path.as_deref().is_some_and(|p| p.contains(file.as_str()))
            })
            .unwrap_or_else(|| panic!("no rename of {file} in the shim's log"));
        assert!(
            flushes
                .iter()
                .any(|f| f.ok && f.began >= renamed.ended && f.ended <= *at),
            "{file}: renamed at {:.6}, 250 at {at:.6}, and no successful flush in between",
            renamed.ended
        );
    }
    assert_eq!(s.sb.message_files(&s.id).len(), 24);
    // Grouped: far fewer flushes than messages (per file it would be two each).
    let syncfs = flushes.iter().filter(|f| f.call == "syncfs").count();
    println!(
        "24 messages, {} flushes ({syncfs} syncfs): {:?}",
        flushes.len(),
        flushes.iter().map(|f| f.call.as_str()).collect::<Vec<_>>()
    );
    assert!(syncfs > 0, "the grouped flush is a syncfs");
    assert!(
        flushes.len() < 24,
        "{} flushes for 24 messages",
        flushes.len()
    );
}

#[test]
fn a_failed_flush_fails_every_message_whose_write_began_before_it_returned() {
    let Some(s) = slow("flush-fail", 600) else {
        return;
    };
    let to = format!("{}@localhost", s.id);
    // Warm up: the first delivery opens the file system's flusher.
    expect(&send(&s.gw, &to, "first").0, "250 ");
    let renames = || {
        entries(&s.log)
            .iter()
            .filter(|e| e.call == "rename")
            .count()
    };
    let before = renames();
    fs::write(&s.fail, b"").unwrap();
    let gw = Arc::new(s.gw);
    let (a_gw, a_to) = (Arc::clone(&gw), to.clone());
    let a = std::thread::spawn(move || send(&a_gw, &a_to, "during-a"));
    // B's file is written while A's failing flush sleeps; the flush B then
    // waits for succeeds, but B began before the failure returned. The
    // shim logs each rename into place as it happens.
    support::wait_until("A's file is in place", || renames() > before);
    let (b_gw, b_to) = (Arc::clone(&gw), to.clone());
    let b = std::thread::spawn(move || send(&b_gw, &b_to, "during-b"));
    support::wait_until("B's file is in place", || renames() > before + 1);
    fs::remove_file(&s.fail).unwrap();
    for (name, t) in [("a", a), ("b", b)] {
        let (reply, _) = t.join().unwrap();
        assert!(reply.starts_with("451 "), "{name}: {reply}\n{}", gw.log());
    }
    // Neither is left behind, visible or in tmp/.
    assert_eq!(s.sb.message_files(&s.id).len(), 1, "only the first message");
    let failed = entries(&s.log).iter().filter(|e| !e.ok).count();
    assert!(failed >= 1, "the shim failed a flush");
    // The next clean batch succeeds.
    expect(&send(&gw, &to, "after").0, "250 ");
    assert_eq!(s.sb.message_files(&s.id).len(), 2);
}

/// POP3 deletions at QUIT share the flush too; a QUIT whose flush fails
/// answers `-ERR` and leaves the messages where they were.
#[test]
fn a_quit_whose_flush_fails_leaves_the_messages_in_place() {
    let Some(s) = slow("flush-quit", 20) else {
        return;
    };
    let to = format!("{}@localhost", s.id);
    for subject in ["one", "two"] {
        expect(&send(&s.gw, &to, subject).0, "250 ");
    }
    let login = |gw: &Gateway| {
        let mut c = LineClient::implicit_tls(gw.addr("pop3.listen_tls[0]"), &gw.cert);
        c.read_line();
        c.pop3(&format!("USER {}", s.id));
        expect(&c.pop3(&format!("PASS {}", s.password)), "+OK");
        c
    };
    let mut c = login(&s.gw);
    expect(&c.pop3("DELE 1"), "+OK");
    expect(&c.pop3("DELE 2"), "+OK");
    fs::write(&s.fail, b"").unwrap();
    let quit = c.pop3("QUIT");
    fs::remove_file(&s.fail).unwrap();
    assert!(quit.starts_with("-ERR [SYS/TEMP]"), "{quit}");
    assert_eq!(s.sb.message_files(&s.id).len(), 2, "both are still there");
    // The custody log says so too: deleted, then the deletion undone.
    let (code, r) = s.sb.custody_verify();
    assert_eq!((code, &r["counts"]["present"]), (0, &json!(2)), "{r:#}");
    let mut c = login(&s.gw);
    expect(&c.pop3("STAT"), "+OK 2 ");
    expect(&c.pop3("DELE 1"), "+OK");
    expect(&c.pop3("QUIT"), "+OK");
    assert_eq!(s.sb.message_files(&s.id).len(), 1);
    let (code, r) = s.sb.custody_verify();
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["counts"]["deleted without retrieval"], 1, "{r:#}");
}

/// A journal message for two mailboxes: both copies are put in place
/// first, and one flush makes both durable.
#[test]
fn the_copies_of_one_delivery_share_one_flush() {
    let Some(s) = slow("flush-two-copies", 20) else {
        return;
    };
    let (other, _) = s.sb.create_mailbox("Second");
    let mut c = LineClient::plain(s.gw.addr("smtp.listen[0]"));
    expect(&c.smtp_reply(), "220 ");
    c.smtp("EHLO sender.example");
    expect(&c.smtp("MAIL FROM:<journal@example.org>"), "250 ");
    for id in [&s.id, &other] {
        expect(&c.smtp(&format!("RCPT TO:<{id}@localhost>")), "250 ");
    }
    expect(&c.smtp("DATA"), "354");
    let began = seconds(SystemTime::now());
    c.send_raw(b"Subject: both\r\n\r\nfor two mailboxes\r\n.\r\n");
    expect(&c.smtp_reply(), "250 ");
    let answered = seconds(SystemTime::now());
    let log = entries(&s.log);
    let renames: Vec<&Entry> = log
        .iter()
        .filter(|e| {
            e.call == "rename"
                && e.began >= began
                && e.path.as_deref().is_some_and(|p| p.contains("/messages/"))
        })
        .collect();
    assert_eq!(renames.len(), 2, "one copy per mailbox");
    let flushes: Vec<&Entry> = log
        .iter()
        .filter(|e| e.call != "rename" && e.began >= began && e.ended <= answered)
        .collect();
    assert_eq!(
        flushes.len(),
        1,
        "one flush for both copies: {:?}",
        flushes.iter().map(|f| &f.call).collect::<Vec<_>>()
    );
    assert!(flushes[0].ok && renames.iter().all(|r| flushes[0].began >= r.ended));
    assert_eq!(s.sb.message_files(&other).len(), 1);
}
