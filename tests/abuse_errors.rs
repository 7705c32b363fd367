//! Attack: an endless stream of invalid commands. After
//! `limits.hard_error_limit` errors every service says goodbye and closes;
//! beyond `limits.soft_error_limit` each error reply comes later than the last.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::Sandbox;
use support::gateway::{Gateway, LineClient};

fn gateway(label: &str, limits: serde_json::Value) -> (Sandbox, Gateway) {
    let sb = Sandbox::for_gateway(
        label,
        json!({
            "limits": limits,
            "pop3_proxy": { "listen": ["127.0.0.1:0"], "listen_tls": [] },
        }),
    );
    let gw = Gateway::start(&sb);
    (sb, gw)
}

/// Sends `count` garbage lines in one go and reads everything until the close.
fn flood(addr: std::net::SocketAddr, count: usize) -> String {
    let mut c = LineClient::plain(addr);
    c.send_raw(&b"XYZZY plugh\r\n".repeat(count));
    let mut all = String::new();
    while let Some(line) = c.read_line() {
        all.push_str(&line);
    }
    all
}

#[test]
fn every_plain_listener_closes_after_the_hard_error_limit() {
    let (_sb, gw) = gateway(
        "errors-limit",
        json!({ "hard_error_limit": 5, "error_delay_ms": 0 }),
    );
    for (key, error, goodbye) in [
        ("smtp.listen[0]", "500 5.5.2", "421 4.7.0"),
        ("smtp_proxy.listen[0]", "500 5.5.2", "421 4.7.0"),
        (
            "pop3.listen[0]",
            "-ERR Unknown command",
            "-ERR [SYS/TEMP] Too many errors",
        ),
        (
            "pop3_proxy.listen[0]",
            "-ERR Unknown command",
            "-ERR [SYS/TEMP] Too many errors",
        ),
    ] {
        let all = flood(gw.addr(key), 50);
        assert_eq!(all.matches(error).count(), 5, "{key}: {all}");
        let last = all.lines().last().unwrap();
        assert!(
            last.starts_with(goodbye),
            "{key}: the close comes last: {all}"
        );
    }
}

#[test]
fn errors_beyond_the_soft_limit_are_answered_later_and_later() {
    let (_sb, gw) = gateway(
        "errors-delay",
        json!({ "soft_error_limit": 2, "hard_error_limit": 100, "error_delay_ms": 150 }),
    );
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    c.smtp_reply();
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        assert!(c.smtp("XYZZY").starts_with("500"));
        times.push(started.elapsed());
    }
    // Errors 3, 4 and 5 owe 150, 300 and 450 ms.
    assert!(times[2] >= Duration::from_millis(150), "{times:?}");
    assert!(times[3] >= Duration::from_millis(300), "{times:?}");
    assert!(times[4] >= Duration::from_millis(450), "{times:?}");
}

#[test]
fn ten_thousand_pipelined_good_commands_are_all_answered() {
    let (_sb, gw) = gateway("errors-pipeline", json!({}));
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    c.smtp_reply();
    c.send_raw(&b"NOOP\r\n".repeat(10_000));
    for i in 0..10_000 {
        let reply = c.smtp_reply();
        assert!(reply.starts_with("250 2.0.0"), "reply {i}: {reply}");
    }
    assert!(c.smtp("QUIT").starts_with("221"));
}
