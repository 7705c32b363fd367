//! The service log as journald and a log watcher see it. Under systemd,
//! standard error is a stream into the journal named by `JOURNAL_STREAM`
//! (`<device>:<inode>`): then every line carries its syslog priority and no
//! timestamp of its own, so `journalctl -p warning` shows exactly the
//! warnings and errors. A refused recipient and a lockout are warnings; a
//! stored message names its Message-ID; a `sealpost status` run, which
//! probes every listener, leaves no warning.

// System calls the standard library does not offer (signals, pipes,
// namespaces, resource limits), each block with its SAFETY comment.
#![allow(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::gateway::LineClient;
use support::{Sandbox, sealpost_bin, stderr, wait_until};

/// A gateway whose standard error is a pipe of the test's, with
/// `JOURNAL_STREAM` naming that pipe (or, with `matching` false, another
/// file), and everything it logs.
struct Logged {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Logged {
    fn start(sb: &Sandbox, matching: bool) -> Logged {
        Logged::start_at(sb, matching, "info")
    }

    fn start_at(sb: &Sandbox, matching: bool, level: &str) -> Logged {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors that we then own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: just returned by pipe2, owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let meta = std::fs::File::from(write.try_clone().unwrap())
            .metadata()
            .unwrap();
        let ino = if matching { meta.ino() } else { meta.ino() + 1 };
        let child = Command::new(sealpost_bin())
            .arg("-c")
            .arg(sb.config())
            .arg("serve")
            .env("RUST_LOG", level)
            .env("JOURNAL_STREAM", format!("{}:{ino}", meta.dev()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(write))
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(std::fs::File::from(read)).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let logged = Logged { child, log };
        logged.wait_for(" ready (data in ");
        logged
    }

    fn text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_for(&self, needle: &str) {
        wait_until(&format!("the gateway logs {needle:?}"), || {
            self.text().contains(needle)
        });
    }

    fn addr(&self, key: &str) -> SocketAddr {
        let text = self.text();
        let line = text
            .lines()
            .find(|l| l.contains(&format!("listening on {key} ")))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"));
        let rest = line.split(&format!("listening on {key} ")).nth(1).unwrap();
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn sandbox(label: &str) -> (Sandbox, String) {
    let sb = Sandbox::for_gateway(
        label,
        json!({
            "smtp": { "require_tls": false },
            "limits": { "max_failed_logins": 1 },
        }),
    );
    let (id, _) = sb.create_mailbox("Journal");
    (sb, id)
}

#[test]
fn under_journald_every_line_carries_its_priority_and_no_timestamp() {
    let (sb, id) = sandbox("journal-stream");
    let gw = Logged::start(&sb, true);
    // A refused recipient, a stored message and a lockout.
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    c.smtp_reply();
    c.smtp("EHLO logs.example");
    c.smtp("MAIL FROM:<a@example.org>");
    assert!(c.smtp("RCPT TO:<nobody@example.org>").starts_with("550"));
    assert!(c.smtp("RSET").starts_with("250"));
    let stored = c.smtp_send(
        "a@example.org",
        &format!("{id}@localhost"),
        b"Message-ID: <trace-me.42@example.org>\r\nSubject: x\r\n\r\nbody\r\n",
    );
    assert!(stored.starts_with("250"), "{stored}");
    for _ in 0..2 {
        let mut p = LineClient::implicit_tls(
            gw.addr("pop3.listen_tls[0]"),
            &sb.data().join("tls/cert.pem"),
        );
        p.read_line();
        p.pop3(&format!("USER {id}"));
        p.pop3("PASS not-the-password");
    }
    gw.wait_for("result=stored");
    gw.wait_for("locked out");
    let text = gw.text();
    for line in text.lines() {
        let priority = &line[..line.find('>').map_or(0, |i| i + 1)];
        assert!(
            ["<3>", "<4>", "<6>", "<7>"].contains(&priority),
            "a line without its priority: {line}"
        );
        assert!(!has_timestamp(line), "a timestamp of its own: {line}");
    }
    let line_of = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
            .to_owned()
    };
    assert!(line_of("result=refused").starts_with("<4>"));
    assert!(line_of("locked out").starts_with("<4>"));
    assert!(line_of(" ready (data in ").starts_with("<6>"));
    // proxy.allowed_targets is empty in this configuration: a warning at start.
    assert!(line_of("proxy.allowed_targets is empty").starts_with("<4>"));
    let stored = line_of("result=stored");
    assert!(stored.starts_with("<6>"), "{stored}");
    assert!(
        stored.contains("message_id=<trace-me.42@example.org>"),
        "{stored}"
    );
}

#[test]
fn without_a_matching_journal_stream_the_human_format_stays() {
    let (sb, _) = sandbox("journal-stream-other");
    let gw = Logged::start(&sb, false);
    let text = gw.text();
    let ready = text
        .lines()
        .find(|l| l.contains(" ready (data in "))
        .unwrap();
    assert!(ready.starts_with("[20"), "{ready}");
    assert!(!text.contains("<6>"), "{text}");
}

#[test]
fn a_status_run_leaves_no_warning_in_the_log() {
    let (sb, _) = sandbox("status-quiet");
    let gw = Logged::start_at(&sb, true, "info,sealpost=debug");
    let before = gw.text().len();
    let out = sb.run(&["status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listeners = report["listeners"].as_array().unwrap();
    assert!(listeners.len() >= 6, "{report}");
    assert!(
        listeners.iter().all(|l| l["answers"] != json!(false)),
        "{report}\n{}",
        stderr(&out)
    );
    // Each probe's session ends, at DEBUG, as a client that left without a word.
    let probed = listeners
        .iter()
        .filter(|l| l["answers"] == json!(true))
        .count();
    let mut after = String::new();
    wait_until("every probe's session has ended", || {
        after = gw.text()[before..].to_owned();
        after
            .lines()
            .filter(|l| l.starts_with("<7>") && l.contains("client disconnected"))
            .count()
            >= probed
    });
    for line in after.lines() {
        assert!(
            !(line.starts_with("<3>") || line.starts_with("<4>")),
            "status left a warning: {line}"
        );
        assert!(
            !line.contains("TLS handshake failed"),
            "status left a failed handshake: {line}"
        );
    }
}

/// Whether a line carries env_logger's own timestamp (`[2026-12-07T…`);
/// a queue id such as `smtp[208EA1…]` is not one.
fn has_timestamp(line: &str) -> bool {
    line.match_indices('[').any(|(i, _)| {
        let rest = &line.as_bytes()[i + 1..];
        rest.len() > 5 && rest[..4].iter().all(u8::is_ascii_digit) && rest[4] == b'-'
    })
}
