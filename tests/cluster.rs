//! Two gateway nodes on one data directory, as a cluster runs them on a
//! shared file system (here the local one, which has the same `flock` and
//! `rename` guarantees): every guarantee of one node holds across nodes.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::process::{Child, Command, Stdio};

use serde_json::json;
use support::gateway::{Gateway, LineClient, expect};
use support::{Sandbox, stderr};

/// Node `name` on the data directory of `first` (or its own, for the first).
fn node(label: &str, name: &str, data: Option<&Sandbox>) -> Sandbox {
    let mut extra = json!({ "node": name, "smtp": { "require_tls": false } });
    if let Some(first) = data {
        extra["data_dir"] = json!(first.data().to_str().unwrap());
    }
    Sandbox::for_gateway(label, extra)
}

fn send(gw: &Gateway, to: &str, subject: &str) -> String {
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    expect(&c.smtp_reply(), "220 ");
    expect(&c.smtp("EHLO node.example"), "250");
    let body = format!("Subject: {subject}\r\n\r\nbody\r\n");
    c.smtp_send("j@example.org", to, body.as_bytes())
}

fn fingerprint(gw: &Gateway) -> String {
    gw.log()
        .lines()
        .find_map(|l| l.split("(SHA-256 ").nth(1))
        .map(|f| f.trim_end_matches(')').to_owned())
        .expect("the certificate's fingerprint is logged")
}

#[test]
fn two_nodes_share_one_data_directory_and_every_guarantee() {
    let a = node("cluster-a", "a", None);
    let b = node("cluster-b", "b", Some(&a));
    let (id, password) = a.create_mailbox("Journal");
    let to = format!("{id}@localhost");

    // Started together on a directory with no certificate: one is made.
    let (ga, gb) = std::thread::scope(|s| {
        let ga = s.spawn(|| Gateway::start(&a));
        let gb = s.spawn(|| Gateway::start(&b));
        (ga.join().unwrap(), gb.join().unwrap())
    });
    assert_eq!(fingerprint(&ga), fingerprint(&gb));
    assert_eq!(
        ga.log().matches("a self-signed certificate").count()
            + gb.log().matches("a self-signed certificate").count(),
        1,
        "generated once"
    );

    // A second gateway with a node name already serving refuses.
    let again = a.run(&["serve"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains(&format!("(pid {})", ga.pid())),
        "{}",
        stderr(&again)
    );

    // Both deliver into one mailbox at once: no name collides.
    std::thread::scope(|s| {
        for (gw, tag) in [(&ga, "a"), (&gb, "b")] {
            let to = &to;
            s.spawn(move || {
                for i in 0..40 {
                    expect(&send(gw, to, &format!("{tag}-{i}")), "250");
                }
            });
        }
    });
    let names: BTreeSet<_> = a.message_files(&id).into_iter().collect();
    assert_eq!(names.len(), 80);

    // The POP3 lock holds across nodes.
    let mut first = LineClient::implicit_tls(ga.addr("pop3.listen_tls[0]"), &ga.cert);
    first.read_line();
    first.pop3(&format!("USER {id}"));
    let ok = first.pop3(&format!("PASS {password}"));
    assert!(ok.starts_with("+OK"), "{ok}");
    let mut second = LineClient::implicit_tls(gb.addr("pop3.listen_tls[0]"), &ga.cert);
    second.read_line();
    second.pop3(&format!("USER {id}"));
    let busy = second.pop3(&format!("PASS {password}"));
    assert!(busy.starts_with("-ERR [IN-USE]"), "{busy}");
    first.pop3("QUIT");

    // A change made through one node's CLI applies on the other at once.
    let out = b.run(&["mailbox", "suspend", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    expect(&send(&ga, &to, "suspended"), "450");
    let out = a.run(&["mailbox", "resume", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    expect(&send(&gb, &to, "resumed"), "250");
}

/// A node's start-up clean-up removes what a dead writer left, never what a
/// live one (on another node) is writing: files are told apart by `flock`.
#[test]
fn a_starting_node_leaves_another_nodes_file_in_progress_alone() {
    let a = node("cluster-clean-a", "a", None);
    let (id, _) = a.create_mailbox("Journal");
    // Node a runs while its writer is at work; then node b starts.
    let ga = Gateway::start(&a);
    let tmp = a.mailbox_dir(&id).join("tmp");
    let live = tmp.join("live-writer.msg");
    let dead = tmp.join("dead-writer.msg");
    fs::write(&live, b"being written").unwrap();
    fs::write(&dead, b"left by a crash").unwrap();
    // Another node's writer, as a process of its own holding the lock.
    let mut holder: Child = Command::new("flock")
        .arg(&live)
        .args(["sleep", "60"])
        .stdin(Stdio::null())
        .spawn()
        .expect("flock(1)");
    support::wait_until("the writer holds its lock", || {
        fs::File::open(&live)
            .is_ok_and(|f| matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock)))
    });
    let b = node("cluster-clean-b", "b", Some(&a));
    let gb = Gateway::start(&b);
    assert!(live.exists(), "the live writer's file stays");
    assert!(!dead.exists(), "the crash leftover goes");
    let _ = holder.kill();
    let _ = holder.wait();
    drop(gb);
    drop(ga);
}
