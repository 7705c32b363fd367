//! Alerts by email, against private aiosmtpd relays on loopback: one with
//! STARTTLS and AUTH, one that authenticates nobody, one that refuses, and
//! one that is not there. A condition is mailed once when it starts, again
//! after the reminder interval, and once when it clears; a restart sends
//! nothing again; a relay that fails shows in `status`.

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::ca::TestCa;
use support::gateway::{Gateway, LineClient};
use support::{Sandbox, peer, repo, stderr, stdout, wait_until};

const ADMIN: &str = "admin@example.org";

/// A private relay (tests/python/smtp_sink.py), killed on drop.
struct Relay {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Relay {
    /// Starts one writing into `dir`; `tls`: (certificate, key);
    /// `auth`: (user, password).
    fn start(
        dir: &Path,
        mode: &str,
        tls: Option<(&Path, &Path)>,
        auth: Option<(&str, &str)>,
    ) -> Option<Relay> {
        // Debian's python3-aiosmtpd belongs to the system Python.
        let python = peer("python3", &["/usr/bin/python3", "python3"])?;
        let check = support::run(Command::new(&python).args(["-c", "import aiosmtpd"]));
        if !check.status.success() {
            return support::missing_peer("python3-aiosmtpd (aiosmtpd) for the alerts' relay");
        }
        std::fs::create_dir_all(dir).unwrap();
        let port = support::postfix::free_port();
        let mut command = Command::new(python);
        command
            .arg(repo().join("tests/python/smtp_sink.py"))
            .arg(port.to_string())
            .arg(dir)
            .arg(mode);
        if let Some((cert, key)) = tls {
            command.arg(cert).arg(key);
        }
        if let Some((user, password)) = auth {
            command.args([user, password]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("relay.log")).unwrap())
            .spawn()
            .expect("start smtp_sink.py");
        let relay = Relay {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        wait_until("the relay listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(relay)
    }

    /// The messages it took, oldest first.
    fn mails(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in 1.. {
            match std::fs::read_to_string(self.dir.join(format!("{n}.eml"))) {
                Ok(mail) => out.push(mail),
                Err(_) => break,
            }
        }
        out
    }

    fn envelope(&self, n: usize) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join(format!("{n}.json"))).unwrap())
            .unwrap()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA, and a relay with STARTTLS (its certificate from that CA)
/// that accepts everything, with AUTH when `auth` names the account.
fn tls_relay(dir: &Path, auth: Option<(&str, &str)>) -> Option<(TestCa, Relay)> {
    let ca = TestCa::new(dir, "relay");
    let (cert, key) = ca.issue(dir, "relay", &["localhost"]);
    let relay = Relay::start(&dir.join("mails"), "accept", Some((&cert, &key)), auth)?;
    Some((ca, relay))
}

fn subject(mail: &str) -> &str {
    mail.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
}

/// Waits until every node of `sb`'s data directory has looked at the
/// alerts once more, whole: each node publishes its file in
/// `alerts/nodes/` just before it looks, so two new publications mean the
/// look between them is over.
fn wait_for_a_look(sb: &Sandbox) {
    let times = || -> std::collections::BTreeMap<PathBuf, std::time::SystemTime> {
        std::fs::read_dir(sb.data().join("alerts/nodes"))
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .filter_map(|p| Some((p.clone(), std::fs::metadata(&p).ok()?.modified().ok()?)))
            .collect()
    };
    wait_until("the nodes publish", || !times().is_empty());
    for _ in 0..2 {
        let before = times();
        wait_until("the nodes look again", || {
            let now = times();
            !before.is_empty()
                && before
                    .iter()
                    .all(|(p, t)| now.get(p).is_some_and(|n| n != t))
        });
    }
}

#[test]
fn a_condition_is_mailed_once_reminded_and_cleared_through_a_relay_with_tls_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, relay)) = tls_relay(dir.path(), Some(("gateway", "relay-secret"))) else {
        return;
    };
    let password_file = dir.path().join("relay-password");
    std::fs::write(&password_file, "relay-secret\n").unwrap();
    let sb = Sandbox::for_gateway(
        "alerts-auth",
        json!({
            "hostname": "gw.example.org",
            "alerts": {
                "to": [ADMIN],
                "smarthost": {
                    "host": "localhost",
                    "port": relay.port,
                    "tls": "starttls",
                    "ca_file": ca.cert_file,
                    "username": "gateway",
                    "password_file": password_file,
                },
                "check_secs": 5,
                "reminder_secs": 40,
                "archiver_stopped_hours": 1,
            },
        }),
    );

    // The test mail, by the command an administrator runs first.
    let out = sb.run(&["alerts", "test"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Sent \"[Sealpost gw.example.org] Test"));
    assert_eq!(relay.mails().len(), 1);
    let envelope = relay.envelope(1);
    assert_eq!(envelope["tls"], true, "{envelope}");
    assert_eq!(envelope["authenticated"], true, "{envelope}");
    assert_eq!(envelope["mail_from"], "sealpost@gw.example.org");
    assert_eq!(envelope["rcpt_tos"], json!([ADMIN]));

    // Mail the archiver has not collected for two hours.
    let (id, password) = sb.create_mailbox("Journal");
    let secret = "Subject: Merger talks with Contoso\r\nFrom: ceo@example.org\r\n\r\nConfidential figures.\r\n";
    let out = sb.run_with_input(&["mailbox", "deliver", &id], secret.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    sb.age_oldest_message(&id, 2 * 3600);
    let gw = Gateway::start(&sb);
    wait_until("the alert is mailed", || relay.mails().len() >= 2);
    let mails = relay.mails();
    let alert = &mails[1];
    assert_eq!(
        subject(alert),
        "[Sealpost gw.example.org] Attention: the archiver stopped collecting Journal"
    );
    for header in [
        "Auto-Submitted: auto-generated\r\n",
        "Date: ",
        "Message-ID: <",
        "To: admin@example.org\r\n",
    ] {
        assert!(alert.contains(header), "{header}: {alert}");
    }
    assert!(alert.contains(&id), "{alert}");
    for secret in [
        "Merger",
        "Contoso",
        "ceo@example.org",
        "Confidential",
        &password,
        "relay-secret",
    ] {
        assert!(!alert.contains(secret), "{secret} in {alert}");
    }
    // No second mail at the next looks, and none after a restart.
    wait_for_a_look(&sb);
    assert_eq!(relay.mails().len(), 2);
    drop(gw);
    let gw = Gateway::start(&sb);
    wait_for_a_look(&sb);
    assert_eq!(relay.mails().len(), 2, "nothing sent again after a restart");

    // The reminder, reminder_secs (40 s) after the first mail.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while relay.mails().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "no reminder");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        subject(&relay.mails()[2]),
        "[Sealpost gw.example.org] Still: the archiver stopped collecting Journal"
    );
    let out = sb.run(&["status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["alerts"]["active"][format!("archiver:{id}")].is_object(),
        "{report}"
    );

    // The archiver collects: one "Resolved" mail.
    let mut pop3 =
        LineClient::implicit_tls_as(gw.addr("pop3.listen_tls[0]"), &gw.cert, "gw.example.org");
    pop3.read_line();
    pop3.pop3(&format!("USER {id}"));
    assert!(pop3.pop3(&format!("PASS {password}")).starts_with("+OK"));
    assert!(pop3.pop3("DELE 1").starts_with("+OK"));
    assert!(pop3.pop3("QUIT").starts_with("+OK"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !relay
        .mails()
        .iter()
        .any(|m| subject(m).contains("Resolved: the archiver stopped collecting Journal"))
    {
        assert!(std::time::Instant::now() < deadline, "no recovery mail");
        std::thread::sleep(Duration::from_millis(100));
    }
    let resolved = relay
        .mails()
        .iter()
        .filter(|m| subject(m).contains("Resolved"))
        .count();
    assert_eq!(resolved, 1);
    assert!(
        gw.log()
            .contains("alerts: sent \"[Sealpost gw.example.org] Resolved")
    );

    // The gateway dies: the command sealpost-alert@.service runs
    // (OnFailure=) mails the last log lines, without any address.
    drop(gw);
    let log = dir.path().join("journal.txt");
    std::fs::write(
        &log,
        "2026-12-07T05:00:00+0000 gw sealpost[1]: smtp[4F2A] from=<ceo@example.org> rcpt=<mbx-1@gw.example.org> stored\n\
         2026-12-07T05:00:01+0000 gw sealpost[1]: pop3 login anna@example.com%pop.example.com%mbx-1 refused\n\
         2026-12-07T05:00:02+0000 gw sealpost[1]: ERROR cannot open the data directory /var/lib/sealpost: Permission denied\n",
    )
    .unwrap();
    let out = sb.run(&[
        "alerts",
        "failed",
        "sealpost.service",
        "--log-file",
        log.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mails = relay.mails();
    let died = mails.last().unwrap();
    assert_eq!(
        subject(died),
        "[Sealpost gw.example.org] Attention: the gateway stopped (sealpost.service failed)"
    );
    assert!(
        died.contains("ERROR cannot open the data directory /var/lib/sealpost: Permission denied"),
        "{died}"
    );
    assert!(died.contains("from=<…> rcpt=<…>"), "{died}");
    for secret in ["ceo@example.org", "anna@example.com", "mbx-1@"] {
        assert!(!died.contains(secret), "{secret} in {died}");
    }
}

#[test]
fn a_relay_without_auth_takes_alerts_and_one_that_refuses_or_is_gone_shows_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, open)) = tls_relay(dir.path(), None) else {
        return;
    };
    let Some(refusing) = Relay::start(&dir.path().join("refusing"), "refuse", None, None) else {
        return;
    };
    let config = |port: u16, tls: &str| {
        json!({
            "hostname": "gw.example.org",
            // More than any disk: the disk condition holds.
            "limits": { "min_free_bytes": 1_099_511_627_776u64 },
            "alerts": {
                "to": [ADMIN, "second@example.org"],
                "smarthost": {
                    "host": "localhost",
                    "port": port,
                    "tls": tls,
                    "ca_file": ca.cert_file,
                },
                "check_secs": 5,
            },
        })
    };
    // An IP-authenticated relay (a Microsoft 365 connector): TLS, no AUTH.
    let mut open_config = config(open.port, "starttls");
    open_config["hostname"] = json!("localhost");
    open_config["console"] = json!({ "listen": ["127.0.0.1:0"] });
    let sb = Sandbox::for_gateway("alerts-open", open_config);
    let out = sb.run_with_input(
        &["console", "passwd", "--password-file", "-"],
        b"console admin password 1\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let gw = Gateway::start(&sb);
    wait_until("the disk alert", || !open.mails().is_empty());
    let mail = &open.mails()[0];
    assert_eq!(
        subject(mail),
        "[Sealpost localhost] Attention: the disk is nearly full"
    );
    // The console's dashboard shows the condition and the last mail.
    let mut console = support::https::Client::new(gw.addr("console.listen[0]"), &gw.cert);
    assert_eq!(console.login("console admin password 1").status, 303);
    wait_until("the dashboard shows the last mail", || {
        let page = console.get("/");
        page.body.contains("<h2>Alerts</h2>")
            && page.body.contains("the disk is nearly full (since ")
            && page
                .body
                .contains("Last mail sent: [Sealpost localhost] Attention: the disk is nearly full")
    });
    assert!(mail.contains("It is below the reserve"), "{mail}");
    assert_eq!(open.envelope(1)["authenticated"], false);
    assert_eq!(
        open.envelope(1)["rcpt_tos"],
        json!([ADMIN, "second@example.org"])
    );
    drop(gw);

    // A relay that refuses: a clear error, exit 1.
    let refused = Sandbox::for_gateway("alerts-refused", config(refusing.port, "none"));
    let out = refused.run(&["alerts", "test"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("the relay answered RCPT with 550 5.7.1 Relaying denied"),
        "{}",
        stderr(&out)
    );

    // A relay that is not there: WARN, and status says so (exit 4).
    let gone_port = support::postfix::free_port();
    let gone = Sandbox::for_gateway("alerts-gone", config(gone_port, "starttls"));
    let gw = Gateway::start(&gone);
    gw.wait_for_log("alerts: \"[Sealpost gw.example.org] Attention: the disk is nearly full\" could not be sent (1 failure(s) in a row", Duration::from_secs(20));
    // The state is written just after the WARN line.
    wait_until("status says the alerts are undeliverable", || {
        let out = gone.run(&["status"]);
        out.status.code() == Some(4)
            && stdout(&out).contains("alerts undeliverable: the relay failed 1 time(s) in a row")
    });
    let out = gone.run(&["status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["alerts"]["undeliverable"]["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("localhost:{gone_port}"))),
        "{report}"
    );
    assert!(refusing.mails().is_empty());
}

/// Two nodes on one data directory: the node holding the lock sends, so
/// one mail, not two.
#[test]
fn two_nodes_on_one_data_directory_send_one_mail() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, relay)) = tls_relay(dir.path(), None) else {
        return;
    };
    let config = |node: &str| {
        json!({
            "node": node,
            "limits": { "min_free_bytes": 1_099_511_627_776u64 },
            "alerts": {
                "to": [ADMIN],
                "smarthost": { "host": "localhost", "port": relay.port, "ca_file": ca.cert_file },
                "check_secs": 5,
            },
        })
    };
    let a = Sandbox::for_gateway("alerts-node-a", config("a"));
    let mut second = config("b");
    second["data_dir"] = json!(a.data());
    let b = Sandbox::for_gateway("alerts-node-b", second);
    let (ga, gb) = std::thread::scope(|s| {
        let ga = s.spawn(|| Gateway::start(&a));
        let gb = s.spawn(|| Gateway::start(&b));
        (ga.join().unwrap(), gb.join().unwrap())
    });
    wait_until("the disk alert", || !relay.mails().is_empty());
    // Two more looks of each node: still one mail.
    for _ in 0..2 {
        wait_for_a_look(&a);
    }
    assert_eq!(relay.mails().len(), 1, "one mail for the cluster");
    let sent = ga.log().matches("alerts: sent").count() + gb.log().matches("alerts: sent").count();
    assert_eq!(sent, 1);

    // Node b stops: after three looks without it, node a says so.
    drop(gb);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !relay
        .mails()
        .iter()
        .any(|m| subject(m).ends_with("Attention: the node b stopped reporting"))
    {
        assert!(std::time::Instant::now() < deadline, "no mail about node b");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ga.log().contains("alerts: sent"));
}

/// Journal mail that stopped arriving (per mailbox, with an override that
/// turns it off), and a certificate about to expire, each mailed once.
#[test]
fn journal_mail_that_stopped_and_a_certificate_about_to_expire_are_mailed() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, relay)) = tls_relay(dir.path(), None) else {
        return;
    };
    // A certificate with 5 days left, as openssl makes one.
    let (served, served_key) = (dir.path().join("short.pem"), dir.path().join("short.key"));
    let out = support::run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "5",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
        "-keyout",
        served_key.to_str().unwrap(),
        "-out",
        served.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let sb = Sandbox::for_gateway("alerts-conditions", json!({}));
    let (quiet, _) = sb.create_mailbox("Journal");
    let (rare, _) = sb.create_mailbox("Rarely used proxy mailbox");
    let (never, _) = sb.create_mailbox("Never received anything");
    for id in [&quiet, &rare] {
        let out = sb.run_with_input(&["mailbox", "deliver", id], b"Subject: x\r\n\r\ny\r\n");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Two days without a delivery: the marker's time, set back.
    for id in [&quiet, &rare] {
        let marker = sb.mailbox_dir(id).join("last-delivery");
        let back = std::time::SystemTime::now() - Duration::from_secs(48 * 3600);
        std::fs::File::options()
            .write(true)
            .open(&marker)
            .unwrap()
            .set_modified(back)
            .unwrap();
    }
    sb.set_config(
        &["alerts"],
        json!({
            "to": [ADMIN],
            "smarthost": { "host": "localhost", "port": relay.port, "ca_file": ca.cert_file },
            "check_secs": 5,
            "archiver_stopped_hours": 0,
            "journal_silence_hours_for": { rare.clone(): 0 },
        }),
    );
    sb.set_config(
        &["tls"],
        json!({ "cert_file": served, "key_file": served_key }),
    );
    let gw = Gateway::start(&sb);
    wait_until("both alerts", || relay.mails().len() >= 2);
    let subjects: Vec<String> = relay
        .mails()
        .iter()
        .map(|m| subject(m).to_string())
        .collect();
    assert!(
        subjects
            .contains(&"[Sealpost localhost] Attention: no journal mail for Journal".to_string()),
        "{subjects:?}"
    );
    assert!(
        subjects
            .contains(&"[Sealpost localhost] Attention: the certificate expires soon".to_string()),
        "{subjects:?}"
    );
    let silence = relay
        .mails()
        .into_iter()
        .find(|m| subject(m).contains("no journal mail"))
        .unwrap();
    assert!(
        silence.contains(&quiet) && silence.contains("nothing for 48 hours"),
        "{silence}"
    );
    wait_for_a_look(&sb);
    assert_eq!(
        relay.mails().len(),
        2,
        "not the rare one, not the one that never received mail"
    );
    let _ = (never, gw);
}

/// Deliveries refused above `alerts.refused_per_hour`: one alert.
#[test]
fn refused_deliveries_above_the_hourly_rate_are_mailed() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, relay)) = tls_relay(dir.path(), None) else {
        return;
    };
    let sb = Sandbox::for_gateway(
        "alerts-refused-rate",
        json!({
            "alerts": {
                "to": [ADMIN],
                "smarthost": { "host": "localhost", "port": relay.port, "ca_file": ca.cert_file },
                "check_secs": 5,
                "refused_per_hour": 3,
            },
        }),
    );
    let gw = Gateway::start(&sb);
    let mut c = LineClient::implicit_tls(gw.addr("smtp.listen_tls[0]"), &gw.cert);
    support::gateway::expect(&c.smtp_reply(), "220");
    support::gateway::expect(&c.smtp("EHLO sender.example"), "250");
    support::gateway::expect(&c.smtp("MAIL FROM:<a@sender.example>"), "250");
    for n in 0..4 {
        let reply = c.smtp(&format!("RCPT TO:<nobody{n}@localhost>"));
        support::gateway::expect(&reply, "550");
    }
    wait_until("the alert", || !relay.mails().is_empty());
    let mail = &relay.mails()[0];
    assert_eq!(
        subject(mail),
        "[Sealpost localhost] Attention: deliveries are being refused"
    );
    assert!(
        mail.contains("4 deliveries were refused or deferred in the last hour"),
        "{mail}"
    );
    assert!(
        !mail.contains("nobody0") && !mail.contains("a@sender.example"),
        "{mail}"
    );
    assert!(sb.data().join("alerts/nodes/default.json").exists());
}
