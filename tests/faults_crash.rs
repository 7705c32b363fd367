//! Fault: the gateway is killed (SIGKILL) while eight clients deliver. Every
//! message that got its `250` is there after the restart, decrypts and is
//! byte for byte what was sent; none is partial, and `tmp/` is cleaned up at
//! start. Once on the disk as it is, once under the slow-flush model of an
//! SD card (`tests/shim/slowflush.c`), so that the kill lands inside a
//! grouped flush.

mod support;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::gateway::{Gateway, LineClient};
use support::{Sandbox, wait_until};

/// Delivers message after message until the connection breaks; records the
/// subject and body of every message the gateway confirmed.
fn deliver_until_killed(
    gw: &Gateway,
    id: &str,
    client: usize,
    confirmed: &Mutex<Vec<(String, String)>>,
    stop: &AtomicBool,
) {
    let mut c = LineClient::implicit_tls(gw.addr("smtp.listen_tls[0]"), &gw.cert);
    c.smtp_reply();
    c.smtp("EHLO crash.example");
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let subject = format!("client {client} message {n}");
        let body = format!(
            "Subject: {subject}\r\n\r\n{}\r\n",
            "x".repeat(2000 + n % 5000)
        );
        let steps = [
            "MAIL FROM:<load@example.org>".to_string(),
            format!("RCPT TO:<{id}@localhost>"),
            "DATA".to_string(),
        ];
        for step in steps {
            if c.try_send_raw(format!("{step}\r\n").as_bytes()).is_err()
                || c.smtp_reply().is_empty()
            {
                return;
            }
        }
        if c.try_send_raw(format!("{body}.\r\n").as_bytes()).is_err() {
            return;
        }
        let reply = c.smtp_reply();
        if reply.is_empty() {
            return;
        }
        if reply.starts_with("250") {
            confirmed.lock().unwrap().push((subject, body));
        }
    }
}

#[test]
fn kill_9_during_deliveries_loses_no_confirmed_message_and_leaves_no_partial_one() {
    kill_9_run("crash-kill9", None, 200);
}

#[test]
fn kill_9_inside_a_slow_flush_loses_no_confirmed_message() {
    let Some(shim) = support::slowflush_shim() else {
        return;
    };
    kill_9_run("crash-kill9-card", Some(&shim), 40);
}

/// Kills the gateway once `target` messages were confirmed, restarts it,
/// and checks every confirmed message is stored, whole.
fn kill_9_run(label: &str, shim: Option<&std::path::Path>, target: usize) {
    let sb = Sandbox::for_gateway(label, json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let lock = sb.dir.join("flush.lock");
    let mut gw = Gateway::start_with(&sb, |command| {
        if let Some(shim) = shim {
            command
                .env("LD_PRELOAD", shim)
                .env("SLOWFLUSH_MS", "30")
                .env("SLOWFLUSH_LOCK", &lock);
        }
    });
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let gw_ref = &gw;
    std::thread::scope(|scope| {
        for client in 0..8 {
            let (confirmed, stop, id) = (confirmed.clone(), stop.clone(), id.clone());
            scope.spawn(move || deliver_until_killed(gw_ref, &id, client, &confirmed, &stop));
        }
        wait_until("deliveries are under way", || {
            confirmed.lock().unwrap().len() >= target
        });
        gw_ref.signal(libc::SIGKILL);
        stop.store(true, Ordering::SeqCst);
    });
    gw.wait(Duration::from_secs(10));
    let sent: HashMap<String, String> = confirmed.lock().unwrap().iter().cloned().collect();
    let confirmed: HashSet<String> = sent.keys().cloned().collect();
    assert!(confirmed.len() >= target);

    // Restarting cleans up what the killed writers left in tmp/.
    let gw = Gateway::start(&sb);
    let tmp = sb.mailbox_dir(&id).join("tmp");
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "tmp/ was not cleaned"
    );
    // Every stored message decrypts to its end (export fails on any damage).
    let exported = sb.export(&id, &password);
    let stored: HashSet<String> = exported
        .iter()
        .map(|(_, body, _)| {
            let text = String::from_utf8_lossy(body);
            let line = text.lines().find(|l| l.starts_with("Subject: ")).unwrap();
            let subject = line["Subject: ".len()..].to_string();
            // Byte for byte what was sent, after our Received: header.
            if let Some(sent) = sent.get(&subject) {
                assert!(
                    text.ends_with(sent.as_str()),
                    "{subject} differs from what was sent"
                );
            }
            subject
        })
        .collect();
    let lost: Vec<&String> = confirmed.difference(&stored).collect();
    assert!(lost.is_empty(), "confirmed but lost: {lost:?}");
    // The chain of custody: whole after the kill (a torn last entry is cut
    // back at the start), and every confirmed message has its entry.
    let out = sb.run(&["custody", "verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", support::stderr(&out)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let unlogged = report["lines"].to_string();
    for (uidl, body, _) in &exported {
        let text = String::from_utf8_lossy(body);
        let confirmed_one = confirmed
            .iter()
            .any(|s| text.contains(&format!("Subject: {s}\r\n")));
        assert!(
            !confirmed_one || !unlogged.contains(uidl.as_str()),
            "{uidl} was confirmed but has no stored entry"
        );
    }
    println!(
        "{} confirmed, {} stored (a message stored but not yet confirmed is retried by its sender)",
        confirmed.len(),
        stored.len()
    );
    drop(gw);
}
