//! Attack: turning the proxies against the internal network (SSRF), with
//! every spelling of an internal address, and using them as a fast port
//! scanner.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::gateway::{Gateway, LineClient};
use support::postfix::refused_port;
use support::recorder::Recorder;
use support::{Sandbox, wait_until};

fn b64(bytes: &[u8]) -> String {
    sealpost::crypto::base64_encode(bytes)
}

/// Logs in through the SMTP proxy as `user%target%mailbox`; returns the reply.
fn proxy_login(gw: &Gateway, target: &str, id: &str) -> String {
    let mut c = LineClient::implicit_tls(gw.addr("smtp_proxy.listen_tls[0]"), &gw.cert);
    c.smtp_reply();
    c.smtp("EHLO client.example");
    let token = b64(format!("\0anna%{target}%{id}\0pw").as_bytes());
    c.smtp(&format!("AUTH PLAIN {token}"))
}

#[test]
fn no_spelling_of_an_internal_address_is_ever_connected_to() {
    // Everything below leads to 127.0.0.1 one way or another.
    let recorder = Recorder::on("127.0.0.1");
    let port = recorder.addr().port();
    let literal_targets = [
        "[::127.0.0.1]",                          // IPv4-compatible
        "[::ffff:127.0.0.1]",                     // IPv4-mapped
        "[::ffff:0:127.0.0.1]",                   // IPv4-translated
        "[2002:7f00:1::1]",                       // 6to4
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]", // Teredo
        "[64:ff9b::127.0.0.1]",                   // NAT64
        "127.0.0.1",
    ];
    let numeric_names = ["2130706433", "0x7f000001", "127.1", "0177.0.0.1", "0x7f.1"];
    // The allow-list names every literal, so only the address check stands
    // between the login and the connection.
    let allowed: Vec<String> = literal_targets.iter().map(|t| t.to_string()).collect();
    let sb = Sandbox::for_gateway(
        "ssrf-forms",
        json!({
            "limits": { "max_failed_logins": 1000 },
            "proxy": { "allowed_targets": allowed, "allow_private_targets": false },
        }),
    );
    let (id, _) = sb.create_mailbox("Office");
    let gw = Gateway::start(&sb);
    for target in literal_targets.iter().chain(&numeric_names) {
        let reply = proxy_login(&gw, &format!("{target}:{port}"), &id);
        assert!(reply.starts_with("535 5.7.8"), "{target}: {reply}");
    }
    assert_eq!(
        recorder.connections(),
        0,
        "an internal address was connected to"
    );
    // The refusal is logged as the reply goes out: wait for the last line.
    support::wait_until("every refusal is logged", || {
        gw.log().matches("is not a host name").count() >= numeric_names.len()
    });
    let log = gw.log();
    for target in literal_targets {
        let ip = target.trim_matches(['[', ']']);
        let bare: std::net::IpAddr = ip.parse().unwrap();
        assert!(
            log.contains(&format!("{bare} is in ")),
            "{target} was not refused by the address check:\n{log}"
        );
    }
    assert_eq!(
        log.matches("is not a host name").count(),
        numeric_names.len(),
        "{log}"
    );

    // The same gateway with private targets allowed connects: the check
    // above was the one that refused.
    drop(gw);
    let sb2 = Sandbox::for_gateway(
        "ssrf-control",
        json!({ "proxy": { "allowed_targets": ["127.0.0.1"], "allow_private_targets": true } }),
    );
    let (id2, _) = sb2.create_mailbox("Office");
    let gw2 = Gateway::start(&sb2);
    proxy_login(&gw2, &format!("127.0.0.1:{port}"), &id2);
    wait_until("the allowed login connects", || recorder.connections() == 1);
}

#[test]
fn unreachable_upstreams_are_answered_slowly_and_lock_the_scanner_out() {
    // A closed port answers at once: without throttling, the proxy would
    // scan ports as fast as a client can ask.
    let (_held, closed) = refused_port();
    let sb = Sandbox::for_gateway(
        "ssrf-scan",
        json!({
            "limits": { "failed_login_delay_ms": 400, "max_failed_logins": 3, "lockout_secs": 600 },
            "proxy": { "allowed_targets": ["127.0.0.1"], "allow_private_targets": true },
        }),
    );
    let (id, _) = sb.create_mailbox("Office");
    let gw = Gateway::start(&sb);
    for _ in 0..3 {
        let started = Instant::now();
        let reply = proxy_login(&gw, &format!("127.0.0.1:{closed}"), &id);
        assert!(reply.starts_with("454 4.7.0"), "{reply}");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "a temporary failure was answered without the failure delay"
        );
    }
    // The scanning address is now locked out, whatever port it names next.
    let reply = proxy_login(&gw, "127.0.0.1:1", &id);
    assert!(reply.starts_with("454 4.7.0"), "{reply}");
    assert!(gw.log().contains("locked out (Address)"), "{}", gw.log());
}
