//! The POP3 server over real sockets and real TLS (a rustls client): both
//! listener kinds, logins, lockouts, the KDF cap, IN-USE, the snapshot rule,
//! damaged files, and QUIT against a dropped connection.

mod support;

use std::fs;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;
use support::gateway::{Gateway, LineClient};
use support::{Sandbox, fixture, stderr};

/// A gateway with one mailbox holding `messages`: (sandbox, gateway, id, password).
fn mailbox_with(
    label: &str,
    extra: serde_json::Value,
    messages: &[&[u8]],
) -> (Sandbox, Gateway, String, String) {
    let sb = Sandbox::for_gateway(label, extra);
    let (id, password) = sb.create_mailbox("Journal");
    for m in messages {
        deliver(&sb, &id, m);
    }
    let gw = Gateway::start(&sb);
    (sb, gw, id, password)
}

fn deliver(sb: &Sandbox, id: &str, message: &[u8]) {
    let out = sb.run_with_input(&["mailbox", "deliver", id], message);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[track_caller]
fn ok(status: &str) {
    assert!(status.starts_with("+OK"), "expected +OK, got {status:?}");
}

/// Connects to the STLS listener from loopback address `source` and upgrades.
fn stls_client_from(gw: &Gateway, source: &str) -> LineClient {
    let mut c = LineClient::plain_from(gw.addr("pop3.listen[0]"), Some(source));
    ok(&c.read_line().unwrap());
    ok(&c.pop3("STLS"));
    c.start_tls(&gw.cert)
}

fn implicit_client(gw: &Gateway) -> LineClient {
    let mut c = LineClient::implicit_tls(gw.addr("pop3.listen_tls[0]"), &gw.cert);
    ok(&c.read_line().unwrap());
    c
}

fn login(c: &mut LineClient, id: &str, password: &str) -> String {
    let user = c.pop3(&format!("USER {id}"));
    if !user.starts_with("+OK") {
        return user;
    }
    c.pop3(&format!("PASS {password}"))
}

#[test]
fn stls_listener_login_and_retrieval() {
    let message = fixture("m365-journal-report.eml");
    let (_sb, gw, id, password) = mailbox_with("pop3-stls", json!({}), &[&message]);
    let mut c = LineClient::plain(gw.addr("pop3.listen[0]"));
    ok(&c.read_line().unwrap());
    let (status, capa) = c.pop3_multi("CAPA");
    ok(&status);
    assert!(String::from_utf8_lossy(&capa).contains("STLS\r\n"));
    ok(&c.pop3("STLS"));
    let mut c = c.start_tls(&gw.cert);
    let (_, capa) = c.pop3_multi("CAPA");
    let capa = String::from_utf8_lossy(&capa).into_owned();
    for cap in [
        "TOP",
        "USER",
        "UIDL",
        "RESP-CODES",
        "PIPELINING",
        "SASL PLAIN",
        "IMPLEMENTATION Sealpost",
    ] {
        assert!(capa.contains(&format!("{cap}\r\n")), "{cap} in {capa}");
    }
    ok(&login(&mut c, &id, &password));
    assert_eq!(c.pop3("STAT"), format!("+OK 1 {}\r\n", message.len()));
    let (status, body) = c.pop3_multi("RETR 1");
    assert_eq!(status, format!("+OK {} octets\r\n", message.len()));
    assert!(
        body == message,
        "RETR must return the delivered message exactly"
    );
    ok(&c.pop3("QUIT"));
}

#[test]
fn implicit_tls_listener_with_auth_plain_and_the_domain_in_the_login() {
    let (_sb, gw, id, password) =
        mailbox_with("pop3-implicit", json!({}), &[b"Subject: a\r\n\r\nx\r\n"]);
    let mut c = implicit_client(&gw);
    let response =
        sealpost::crypto::base64_encode(format!("\0{id}@localhost\0{password}").as_bytes());
    ok(&c.pop3(&format!("AUTH PLAIN {response}")));
    let (status, uidl) = c.pop3_multi("UIDL");
    ok(&status);
    assert!(String::from_utf8_lossy(&uidl).starts_with("1 "));
}

#[test]
fn login_before_tls_is_refused_without_revealing_anything() {
    let (_sb, gw, id, password) = mailbox_with("pop3-plain", json!({}), &[]);
    let mut c = LineClient::plain(gw.addr("pop3.listen[0]"));
    c.read_line();
    let known = c.pop3(&format!("USER {id}"));
    let unknown = c.pop3("USER mbx-00000000000000000000000000000000");
    assert!(
        known.starts_with("-ERR [AUTH]") && known.contains("TLS is required"),
        "{known}"
    );
    assert_eq!(known, unknown);
    assert!(
        c.pop3(&format!("PASS {password}"))
            .starts_with("-ERR [AUTH]")
    );
    assert!(c.pop3("AUTH PLAIN").starts_with("-ERR [AUTH]"));
}

#[test]
fn unknown_mailboxes_and_wrong_passwords_look_the_same() {
    // A 64 MiB derivation: its memory shows in the gateway's peak RSS.
    let kdf = json!({ "kdf": { "opslimit": 1, "memlimit_bytes": 64 * 1024 * 1024 } });
    let (_sb, gw, id, _) = mailbox_with("pop3-same", kdf, &[]);
    let before = gw.peak_rss_kib() / 1024;
    assert!(before < 40, "peak RSS {before} MiB before any login");
    let mut c = implicit_client(&gw);
    let unknown = login(
        &mut c,
        "mbx-00000000000000000000000000000000",
        "not the password",
    );
    // An unknown mailbox cost a full key derivation, as a real one does:
    // its answer's timing does not tell that the mailbox does not exist.
    let after = gw.peak_rss_kib() / 1024;
    assert!(after >= before + 60, "peak RSS {before} -> {after} MiB");
    let wrong = login(&mut c, &id, "not the password");
    let garbage = login(&mut c, "journal", "x");
    assert_eq!(wrong, "-ERR [AUTH] Invalid login\r\n");
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, garbage);
}

#[test]
fn failed_logins_are_delayed_and_then_the_address_is_locked_out() {
    let extra = json!({ "limits": { "max_failed_logins": 3, "lockout_secs": 600, "failed_login_delay_ms": 300 } });
    let (_sb, gw, id, password) = mailbox_with("pop3-lockout", extra, &[]);
    let mut c = implicit_client(&gw);
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(
            login(&mut c, "mbx-00000000000000000000000000000000", "guess"),
            "-ERR [AUTH] Invalid login\r\n"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "the failure was not delayed"
        );
    }
    // Now even the right password is refused from this address, without trying.
    let status = login(&mut c, &id, &password);
    assert!(status.starts_with("-ERR [LOGIN-DELAY]"), "{status}");
    // Another address is not affected.
    let mut other = stls_client_from(&gw, "127.0.0.2");
    ok(&login(&mut other, &id, &password));
}

#[test]
fn a_mailbox_under_attack_from_several_addresses_is_locked_out() {
    let extra = json!({ "limits": { "max_failed_logins": 2, "lockout_secs": 600 } });
    let (_sb, gw, id, password) = mailbox_with("pop3-mblock", extra, &[]);
    for source in ["127.0.0.2", "127.0.0.3"] {
        let mut c = stls_client_from(&gw, source);
        assert!(login(&mut c, &id, "wrong").starts_with("-ERR [AUTH]"));
    }
    let mut c = stls_client_from(&gw, "127.0.0.4");
    assert!(login(&mut c, &id, &password).starts_with("-ERR [LOGIN-DELAY]"));
}

#[test]
fn many_parallel_logins_all_complete_under_the_kdf_cap() {
    // The lockout is not what this test is about (tests/abuse_logins.rs is).
    let extra = json!({
        "limits": { "max_concurrent_kdf": 2, "max_failed_logins": 100 },
        "kdf": { "opslimit": 1, "memlimit_bytes": 16 * 1024 * 1024 },
    });
    let sb = Sandbox::for_gateway("pop3-kdfcap", extra);
    let mailboxes: Vec<(String, String)> = (0..6)
        .map(|i| sb.create_mailbox(&format!("M{i}")))
        .collect();
    let gw = Arc::new(Gateway::start(&sb));
    let barrier = Arc::new(Barrier::new(12));
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let (gw, barrier) = (Arc::clone(&gw), Arc::clone(&barrier));
            let (id, password) = mailboxes[i % 6].clone();
            let password = if i < 6 {
                password
            } else {
                "wrong password".to_string()
            };
            std::thread::spawn(move || {
                let mut c = implicit_client(&gw);
                barrier.wait();
                let status = login(&mut c, &id, &password);
                c.pop3("QUIT");
                status
            })
        })
        .collect();
    let results: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, status) in results.iter().enumerate() {
        if i < 6 {
            assert!(status.starts_with("+OK"), "login {i}: {status}");
        } else {
            assert_eq!(status, "-ERR [AUTH] Invalid login\r\n", "login {i}");
        }
    }
    // Twelve 16 MiB derivations at once would need 192 MiB; two at a time stay far below.
    let peak = gw.peak_rss_kib() / 1024;
    assert!(peak < 100, "peak RSS {peak} MiB: the KDF cap did not hold");
}

#[test]
fn a_second_session_on_the_same_mailbox_is_in_use() {
    let (_sb, gw, id, password) = mailbox_with("pop3-inuse", json!({}), &[b"x\r\n"]);
    let mut first = implicit_client(&gw);
    ok(&login(&mut first, &id, &password));
    let mut second = implicit_client(&gw);
    let status = login(&mut second, &id, &password);
    assert!(status.starts_with("-ERR [IN-USE]"), "{status}");
    // Both the login and the refusal leave a line an administrator can read.
    gw.wait_for_log(
        &format!("{id} logged in, 1 message(s), "),
        std::time::Duration::from_secs(10),
    );
    gw.wait_for_log(
        &format!("login for {id} refused: [IN-USE]"),
        std::time::Duration::from_secs(10),
    );
    ok(&first.pop3("QUIT"));
    assert!(first.closed());
    let mut third = implicit_client(&gw);
    ok(&login(&mut third, &id, &password));
}

#[test]
fn the_listing_is_the_snapshot_taken_at_login() {
    let (sb, gw, id, password) =
        mailbox_with("pop3-snapshot", json!({}), &[b"Subject: old\r\n\r\nx\r\n"]);
    let mut c = implicit_client(&gw);
    ok(&login(&mut c, &id, &password));
    deliver(&sb, &id, b"Subject: new\r\n\r\ny\r\n");
    assert_eq!(
        c.pop3("STAT"),
        "+OK 1 19\r\n",
        "only the message present at login"
    );
    ok(&c.pop3("DELE 1"));
    ok(&c.pop3("QUIT"));
    let mut again = implicit_client(&gw);
    ok(&login(&mut again, &id, &password));
    let (_, body) = again.pop3_multi("RETR 1");
    assert_eq!(
        body, b"Subject: new\r\n\r\ny\r\n",
        "the new message shows in the next session"
    );
    assert_eq!(again.pop3("STAT"), "+OK 1 19\r\n");
}

#[test]
fn a_damaged_message_in_the_middle_is_sys_perm_and_the_others_come_through() {
    let (sb, gw, id, password) = mailbox_with(
        "pop3-damaged",
        json!({}),
        &[
            b"Subject: 1\r\n\r\none\r\n",
            &fixture("attachment-3mb.eml"),
            b"Subject: 3\r\n\r\nthree\r\n",
        ],
    );
    let victim = sb.message_files(&id)[1].clone();
    let mut bytes = fs::read(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    fs::write(&victim, bytes).unwrap();
    let mut c = implicit_client(&gw);
    ok(&login(&mut c, &id, &password));
    let total = "Subject: 1\r\n\r\none\r\n".len()
        + fixture("attachment-3mb.eml").len()
        + "Subject: 3\r\n\r\nthree\r\n".len();
    assert_eq!(
        c.pop3("STAT"),
        format!("+OK 3 {total}\r\n"),
        "the damaged message is listed with its size"
    );
    let (_, one) = c.pop3_multi("RETR 1");
    assert_eq!(one, b"Subject: 1\r\n\r\none\r\n");
    let status = c.pop3("RETR 2");
    assert!(status.starts_with("-ERR [SYS/PERM]"), "{status}");
    let (_, three) = c.pop3_multi("RETR 3");
    assert_eq!(three, b"Subject: 3\r\n\r\nthree\r\n");
    ok(&c.pop3("NOOP"));
    let name = victim.file_name().unwrap().to_str().unwrap().to_string();
    gw.wait_for_log(&name, Duration::from_secs(5));
}

#[test]
fn deletions_happen_only_at_quit_never_on_a_dropped_connection() {
    let (sb, gw, id, password) = mailbox_with("pop3-quit", json!({}), &[b"a\r\n", b"b\r\n"]);
    {
        let mut c = implicit_client(&gw);
        ok(&login(&mut c, &id, &password));
        ok(&c.pop3("DELE 1"));
        ok(&c.pop3("DELE 2"));
        // Dropped without QUIT.
    }
    // The mailbox lock is released once the session has ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        let mut c = implicit_client(&gw);
        let status = login(&mut c, &id, &password);
        if status.starts_with("+OK") {
            break c;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(sb.message_files(&id).len(), 2, "nothing was deleted");
    ok(&c.pop3("DELE 1"));
    assert_eq!(
        c.pop3("QUIT"),
        "+OK Sealpost signing off (1 messages deleted)\r\n"
    );
    assert_eq!(sb.message_files(&id).len(), 1);
}

#[test]
fn top_over_the_wire() {
    let message = b"Subject: top\r\nX-Second: header\r\n\r\n.one\r\ntwo\r\nthree\r\n";
    let (_sb, gw, id, password) = mailbox_with("pop3-top", json!({}), &[message]);
    let mut c = implicit_client(&gw);
    ok(&login(&mut c, &id, &password));
    let (_, top) = c.pop3_multi("TOP 1 1");
    assert_eq!(top, b"Subject: top\r\nX-Second: header\r\n\r\n.one\r\n");
}

#[test]
fn an_idle_session_times_out() {
    let (_sb, gw, _, _) = mailbox_with(
        "pop3-timeout",
        json!({ "limits": { "command_timeout_secs": 1 } }),
        &[],
    );
    let mut c = implicit_client(&gw);
    let status = c.read_line().unwrap();
    assert!(status.starts_with("-ERR [SYS/TEMP]"), "{status}");
    assert!(c.closed());
}

#[test]
fn connections_over_the_limit_get_an_error() {
    let (_sb, gw, _, _) = mailbox_with(
        "pop3-limit",
        json!({ "limits": { "max_connections_per_ip": 1 } }),
        &[],
    );
    let mut first = LineClient::plain(gw.addr("pop3.listen[0]"));
    ok(&first.read_line().unwrap());
    let mut second = LineClient::plain(gw.addr("pop3.listen[0]"));
    let status = second.read_line().unwrap();
    assert!(
        status.starts_with("-ERR [SYS/TEMP] Too many connections"),
        "{status}"
    );
}

/// `sealpost status` against a stopped and a running gateway: listeners,
/// mail waiting, the last retrieval, and exit 4 when mail waited too long.
#[test]
fn status_shows_what_needs_attention_and_exits_4_for_it() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let smtp = free.local_addr().unwrap();
    drop(free);
    let sb = Sandbox::for_gateway("pop3-status", json!({ "smtp": { "listen": [smtp] } }));
    let (id, password) = sb.create_mailbox("Journal <Ltd>");
    deliver(&sb, &id, &fixture("utf8-headers.eml"));
    let status = |args: &[&str]| {
        let mut all = vec!["status"];
        all.extend_from_slice(args);
        sb.run(&all)
    };

    // Stopped: the listener does not answer.
    let out = status(&[]);
    assert_eq!(out.status.code(), Some(4), "{}", support::stdout(&out));
    let text = support::stdout(&out);
    assert!(text.contains("Gateway:     not running"), "{text}");
    assert!(
        text.contains(&format!("smtp.listen[0]           {smtp}")),
        "{text}"
    );
    assert!(text.contains("DOES NOT ANSWER"), "{text}");
    assert!(
        stderr(&out).contains("1 problem(s) need attention"),
        "{}",
        stderr(&out)
    );

    let gw = Gateway::start(&sb);
    let out = status(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", support::stdout(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["gateway_pid"], gw.pid());
    assert_eq!(report["listeners"][0]["answers"], true);
    assert_eq!(
        report["certificate"]["days_left"].as_i64().map(|d| d > 14),
        Some(true)
    );
    let mailbox = &report["mailboxes"][0];
    assert_eq!(mailbox["id"], id.as_str());
    assert_eq!(mailbox["pending_messages"], 1);
    assert!(mailbox["pending_bytes"].as_u64().unwrap() > 0);
    assert!(mailbox["oldest_age_secs"].as_u64().unwrap() < 600);
    assert_eq!(mailbox["last_retrieved"], serde_json::Value::Null);

    // Mail that has waited two days: the archiver stopped collecting.
    sb.age_oldest_message(&id, 2 * 86_400);
    let out = status(&[]);
    assert_eq!(out.status.code(), Some(4));
    let text = support::stdout(&out);
    assert!(
        text.contains("the oldest of 1 message(s) has waited 48 h; is the archiver collecting?"),
        "{text}"
    );
    assert_eq!(status(&["--max-age", "72"]).status.code(), Some(0));

    // A POP3 login is the last retrieval.
    let mut c = implicit_client(&gw);
    ok(&login(&mut c, &id, &password));
    ok(&c.pop3("QUIT"));
    let out = status(&["--prometheus", "--max-age", "72"]);
    assert_eq!(out.status.code(), Some(0));
    let metrics = support::stdout(&out);
    let labels = format!("{{mailbox=\"{id}\",name=\"Journal <Ltd>\"}}");
    for needle in [
        "sealpost_up 1\n".to_string(),
        format!("sealpost_listener_up{{key=\"smtp.listen[0]\",address=\"{smtp}\"}} 1\n"),
        format!("sealpost_mailbox_pending_messages{labels} 1\n"),
        format!("sealpost_mailbox_last_retrieval_age_seconds{labels} "),
        "# TYPE sealpost_attention gauge\nsealpost_attention 0\n".to_string(),
    ] {
        assert!(metrics.contains(&needle), "{needle:?} in\n{metrics}");
    }
    let out = status(&["--json", "--prometheus"]);
    assert_eq!(out.status.code(), Some(2));
    let out = status(&["--max-age", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("whole hours"), "{}", stderr(&out));
}
