//! Attack: guessing passwords, in parallel and in floods, and locking out
//! the people who belong. Each service counts its own failures, attempts in
//! flight count as failures until they end, an administrator can list and
//! end lockouts, and a trusted archiver address can be exempted from the
//! address lockout.

mod support;

use std::sync::{Arc, Barrier};

use serde_json::json;
use support::gateway::{Gateway, LineClient};
use support::{Sandbox, stderr, stdout, wait_until};

fn pop3_login(gw: &Gateway, from: &str, user: &str, password: &str) -> String {
    let addr = gw.addr("pop3.listen[0]");
    let mut c = LineClient::plain_from(addr, Some(from));
    c.read_line();
    assert!(c.pop3("STLS").starts_with("+OK"));
    let mut c = c.start_tls(&gw.cert);
    c.pop3(&format!("USER {user}"));
    let answer = c.pop3(&format!("PASS {password}"));
    c.pop3("QUIT");
    answer
}

#[test]
fn thirty_parallel_wrong_passwords_from_one_address_are_checked_five_at_a_time() {
    let sb = Sandbox::for_gateway("logins-parallel", json!({}));
    let (id, _) = sb.create_mailbox("Journal");
    let gw = Arc::new(Gateway::start(&sb));
    let barrier = Arc::new(Barrier::new(30));
    let handles: Vec<_> = (0..30)
        .map(|_| {
            let (gw, barrier, id) = (gw.clone(), barrier.clone(), id.clone());
            std::thread::spawn(move || {
                let mut c = LineClient::implicit_tls(gw.addr("pop3.listen_tls[0]"), &gw.cert);
                c.read_line();
                c.pop3(&format!("USER {id}"));
                barrier.wait();
                c.pop3("PASS wrong password")
            })
        })
        .collect();
    let answers: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let checked = answers
        .iter()
        .filter(|a| a.contains("[AUTH] Invalid login"))
        .count();
    let refused = answers
        .iter()
        .filter(|a| a.contains("[LOGIN-DELAY]"))
        .count();
    assert_eq!((checked, refused), (5, 25), "{answers:?}");
    assert_eq!(gw.log().matches("failed login for").count(), 5);
}

#[test]
fn failed_proxy_logins_do_not_lock_the_archiver_out() {
    // An office behind one NAT address: a mail client with an expired
    // provider password fails again and again through the proxy.
    let sb = Sandbox::for_gateway("logins-services", json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    for _ in 0..8 {
        let mut c = LineClient::implicit_tls(gw.addr("smtp_proxy.listen_tls[0]"), &gw.cert);
        c.smtp_reply();
        c.smtp("EHLO client.example");
        let token = sealpost::crypto::base64_encode(
            format!("\0anna%mail.example.com%{id}\0expired").as_bytes(),
        );
        let reply = c.smtp(&format!("AUTH PLAIN {token}"));
        assert!(
            reply.starts_with("535") || reply.starts_with("454"),
            "{reply}"
        );
    }
    assert!(gw.log().contains("smtp proxy 127.0.0.1: login"));
    // The archiver, same address, same mailbox, its own service: unaffected.
    assert!(pop3_login(&gw, "127.0.0.1", &id, &password).starts_with("+OK"));
}

fn sealpost(sb: &Sandbox, args: &[&str]) -> (bool, String, String) {
    let out = sb.run(args);
    (out.status.success(), stdout(&out), stderr(&out))
}

#[test]
fn an_administrator_lists_and_ends_lockouts_without_a_restart() {
    let sb = Sandbox::for_gateway(
        "logins-admin",
        json!({ "limits": { "max_failed_logins": 3 } }),
    );
    let (id, password) = sb.create_mailbox("Journal");
    let (ok, out, err) = sealpost(&sb, &["lockouts"]);
    assert!(
        !ok && err.contains("is `sealpost serve` running"),
        "{out}{err}"
    );
    let gw = Gateway::start(&sb);
    assert_eq!(sealpost(&sb, &["lockouts"]).1.trim(), "No lockouts.");
    for _ in 0..3 {
        assert!(pop3_login(&gw, "127.0.0.2", &id, "guess").contains("[AUTH]"));
    }
    assert!(pop3_login(&gw, "127.0.0.2", &id, &password).contains("[LOGIN-DELAY]"));
    assert!(pop3_login(&gw, "127.0.0.3", &id, &password).contains("[LOGIN-DELAY]"));

    let (ok, out, _) = sealpost(&sb, &["lockouts", "--json"]);
    assert!(ok, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let subjects: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["subject"].as_str().unwrap())
        .collect();
    assert!(subjects.contains(&"address 127.0.0.2"), "{out}");
    assert!(
        subjects.contains(&format!("mailbox {id}").as_str()),
        "{out}"
    );
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["service"] == "pop3")
    );
    let (_, table, _) = sealpost(&sb, &["lockouts"]);
    assert!(table.contains("address 127.0.0.2"), "{table}");

    // Ending the address lockout leaves the mailbox lockout.
    let (ok, out, _) = sealpost(&sb, &["lockouts", "clear", "127.0.0.2"]);
    assert!(ok && out.contains("Ended 1 lockout"), "{out}");
    assert!(pop3_login(&gw, "127.0.0.2", &id, &password).contains("[LOGIN-DELAY]"));
    let (ok, out, _) = sealpost(&sb, &["lockouts", "clear", &id]);
    assert!(ok && out.contains("Ended 1 lockout"), "{out}");
    assert!(pop3_login(&gw, "127.0.0.2", &id, &password).starts_with("+OK"));
    // Usage errors are clear.
    let out = sb.run(&["lockouts", "clear"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let (ok, _, err) = sealpost(&sb, &["lockouts", "clear", "nobody"]);
    assert!(
        !ok && err.contains("neither an IP address nor a mailbox id"),
        "{err}"
    );
}

#[test]
fn a_trusted_archiver_address_is_exempt_from_the_address_lockout_only() {
    let sb = Sandbox::for_gateway(
        "logins-exempt",
        json!({ "limits": { "max_failed_logins": 3, "lockout_exempt_clients": ["127.0.0.5"] } }),
    );
    let (id, password) = sb.create_mailbox("Journal");
    let (other, _) = sb.create_mailbox("Other");
    let gw = Gateway::start(&sb);
    for i in 0..6 {
        let unknown = format!("mbx-{i:032x}");
        assert!(pop3_login(&gw, "127.0.0.5", &unknown, "guess").contains("[AUTH]"));
    }
    assert!(pop3_login(&gw, "127.0.0.5", &id, &password).starts_with("+OK"));
    // The same failures from anywhere else lock the address out.
    for i in 0..3 {
        pop3_login(&gw, "127.0.0.6", &format!("mbx-{i:032x}"), "guess");
    }
    assert!(pop3_login(&gw, "127.0.0.6", &id, &password).contains("[LOGIN-DELAY]"));
    // The mailbox lockout still applies to the exempt address.
    for _ in 0..3 {
        pop3_login(&gw, "127.0.0.5", &other, "guess");
    }
    assert!(pop3_login(&gw, "127.0.0.5", &other, "guess").contains("[LOGIN-DELAY]"));
}

#[test]
fn a_login_flood_stays_within_the_kdf_memory_and_the_right_password_works_after_the_lockout() {
    // The default key derivation (64 MiB, 3 passes), two at a time.
    let sb = Sandbox::for_gateway(
        "logins-flood",
        json!({
            "kdf": { "opslimit": 3, "memlimit_bytes": 64 * 1024 * 1024 },
            "limits": { "max_concurrent_kdf": 2, "lockout_secs": 3 },
        }),
    );
    let (id, password) = sb.create_mailbox("Journal");
    let gw = Arc::new(Gateway::start(&sb));
    let before = gw.peak_rss_kib() / 1024;
    // Twenty-four addresses, each guessing once: every guess is checked.
    let handles: Vec<_> = (0..24)
        .map(|i| {
            let gw = gw.clone();
            let target = format!("mbx-{i:032x}");
            std::thread::spawn(move || pop3_login(&gw, &format!("127.0.1.{}", i + 1), &target, "x"))
        })
        .collect();
    for h in handles {
        let answer = h.join().unwrap();
        assert!(answer.contains("[AUTH] Invalid login"), "{answer}");
    }
    let peak = gw.peak_rss_kib() / 1024;
    // Two 64 MiB derivations plus the gateway itself: a few MiB of slack.
    let bound = 2 * 64 + before + 16;
    assert!(
        peak <= bound,
        "peak RSS {peak} MiB over {bound} MiB (before: {before} MiB)"
    );
    println!("login flood: peak RSS {peak} MiB, before {before} MiB, bound {bound} MiB");

    // Lock the real mailbox out, then wait for the lockout to end.
    for _ in 0..5 {
        pop3_login(&gw, "127.0.0.9", &id, "guess");
    }
    assert!(pop3_login(&gw, "127.0.0.9", &id, &password).contains("[LOGIN-DELAY]"));
    wait_until("the lockout ends and the right password works", || {
        pop3_login(&gw, "127.0.0.9", &id, &password).starts_with("+OK")
    });
}

/// Asks the running gateway's control socket for its key-derivation figures.
fn kdf_usage(sb: &Sandbox) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let mut stream =
        std::os::unix::net::UnixStream::connect(sb.data().join("control.sock")).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"KDF\n").unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
    answer["kdf"].clone()
}

#[test]
fn key_derivations_are_capped_for_the_whole_gateway_across_services_and_reloads() {
    // Derivations that take a moment (32 MiB, 2 passes), so that they overlap.
    let sb = Sandbox::for_gateway(
        "kdf-global",
        json!({
            "kdf": { "opslimit": 2, "memlimit_bytes": 32 * 1024 * 1024 },
            "limits": { "max_concurrent_kdf": 2, "max_failed_logins": 1000 },
            "console": { "listen": ["127.0.0.1:0"] },
        }),
    );
    let (id, _) = sb.create_mailbox("Journal");
    let out = sb.run_with_input(
        &["console", "passwd", "--password-file", "-"],
        b"Tangerine-Orbit-Glacier-42\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let gw = Arc::new(Gateway::start(&sb));
    let start = Arc::new(Barrier::new(13));
    let mut handles = Vec::new();
    // POP3 logins and console logins at once, all with wrong passwords (each
    // still costs a whole derivation).
    for _ in 0..6 {
        let (gw, start, id) = (gw.clone(), start.clone(), id.clone());
        handles.push(std::thread::spawn(move || {
            start.wait();
            pop3_login(&gw, "127.0.0.1", &id, "not the password");
        }));
    }
    for _ in 0..6 {
        let (gw, start) = (gw.clone(), start.clone());
        handles.push(std::thread::spawn(move || {
            start.wait();
            let mut client = support::https::Client::new(gw.addr("console.listen[0]"), &gw.cert);
            client.login("not the administrator password");
        }));
    }
    // And a reload while they run: the cap is the gateway's, not a service's.
    start.wait();
    gw.signal(libc::SIGHUP);
    for h in handles {
        h.join().unwrap();
    }
    gw.wait_for_log("configuration reloaded", std::time::Duration::from_secs(30));
    let usage = kdf_usage(&sb);
    assert_eq!(usage["max"], 2, "{usage}");
    assert_eq!(usage["in_flight"], 0, "{usage}");
    // Twelve derivations queued: two ran at once, never more.
    assert_eq!(usage["peak"], 2, "{usage}");
}
