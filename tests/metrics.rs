//! The `metrics` listener, scraped by a real Prometheus (Debian's
//! `prometheus`, a private instance on a free loopback port with a
//! one-target scrape configuration) and its exposition validated by
//! `promtool check metrics`; hostile requests are answered and closed
//! under the deadline.

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::gateway::{Gateway, LineClient, expect};
use support::{Sandbox, peer, run_with_timeout, stderr, stdout, wait_until};

/// A private Prometheus, killed on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 GET (the connection closes after it); the status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut tcp) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut bytes = Vec::new();
    let _ = tcp.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The value of the sample of `line_start` in `exposition`.
fn sample(exposition: &str, line_start: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn prometheus_scrapes_the_gateway_and_promtool_accepts_the_exposition() {
    let (Some(prometheus), Some(promtool)) = (
        peer("prometheus", &["prometheus", "/usr/bin/prometheus"]),
        peer("promtool", &["promtool", "/usr/bin/promtool"]),
    ) else {
        return;
    };
    let sb = Sandbox::for_gateway(
        "metrics",
        json!({
            "metrics": { "listen": ["127.0.0.1:0"] },
            "limits": { "tls_handshake_timeout_secs": 3 },
        }),
    );
    let (id, _) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    let metrics = gw.addr("metrics.listen[0]");

    // Traffic: one stored message, one refused recipient, one failed login.
    let mut c = LineClient::implicit_tls(gw.addr("smtp.listen_tls[0]"), &gw.cert);
    expect(&c.smtp_reply(), "220");
    expect(&c.smtp("EHLO client.example"), "250");
    let reply = c.smtp_send(
        "journal@example.org",
        &format!("{id}@localhost"),
        b"Subject: counted\r\n\r\nbody\r\n",
    );
    expect(&reply, "250");
    expect(&c.smtp("MAIL FROM:<a@example.org>"), "250");
    expect(&c.smtp("RCPT TO:<nobody@localhost>"), "550");
    let mut pop3 = LineClient::implicit_tls(gw.addr("pop3.listen_tls[0]"), &gw.cert);
    pop3.read_line();
    pop3.pop3(&format!("USER {id}"));
    assert!(pop3.pop3("PASS wrong").starts_with("-ERR"));
    drop(pop3);

    let (status, body) = get(metrics, "/metrics");
    assert_eq!(status, 200, "{body}");
    for line in [
        "# HELP sealpost_messages_stored_total Messages stored, by source.",
        "# TYPE sealpost_messages_stored_total counter",
        "sealpost_messages_stored_total{source=\"journal\"} 1",
        "sealpost_deliveries_refused_total{service=\"smtp\",reason=\"unknown\"} 1",
        "sealpost_logins_total{service=\"pop3\",result=\"failed\"} 1",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} in\n{body}");
    }
    let pending = format!("sealpost_mailbox_pending_messages{{mailbox=\"{id}\"}} ");
    assert_eq!(sample(&body, &pending), Some(1.0), "{body}");
    assert_eq!(sample(&body, "sealpost_kdf_max "), Some(2.0), "{body}");
    assert_eq!(
        sample(&body, "sealpost_attention "),
        Some(0.0),
        "every bound listener is serving: {body}"
    );
    assert!(
        sample(&body, "sealpost_disk_free_bytes ").unwrap() > 0.0,
        "{body}"
    );
    let entries = sample(&body, "sealpost_custody_entries ").unwrap();
    assert!(entries > 0.0, "the mailbox and its mail are logged: {body}");
    assert_eq!(
        sample(&body, "sealpost_custody_unanchored_entries "),
        Some(entries),
        "no TSA, no anchor"
    );
    assert!(!body.contains("# EOF"), "the classic text format: {body}");
    let out = run_with_timeout(
        Command::new(&promtool).args(["check", "metrics"]),
        body.as_bytes(),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "promtool: {}{}\n{body}",
        stdout(&out),
        stderr(&out)
    );

    // A real Prometheus scrapes it every second.
    let dir = tempfile::tempdir().unwrap();
    let port = support::postfix::free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sealpost\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Prometheus(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let api = SocketAddr::from(([127, 0, 0, 1], port));
    let query = |q: &str| -> serde_json::Value {
        let (status, body) = get(api, &format!("/api/v1/query?query={q}"));
        if status != 200 {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&body).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let answer = query("sealpost_messages_stored_total");
        if let Some(v) = answer["data"]["result"][0]["value"][1].as_str() {
            break v.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never had the series: {answer}\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(stored, "1");
    let up = query("up");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    let pending = query(&format!(
        "sealpost_mailbox_pending_messages%7Bmailbox%3D%22{id}%22%7D"
    ));
    assert_eq!(pending["data"]["result"][0]["value"][1], "1", "{pending}");

    // Hostile requests: answered and closed under the deadline.
    assert_eq!(get(metrics, "/").0, 404);
    assert_eq!(get(metrics, "/metrics/../../etc/passwd").0, 404);
    let mut tcp = TcpStream::connect(metrics).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
    let mut tcp = TcpStream::connect(metrics).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = tcp.write_all(
        format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(100_000)
        )
        .as_bytes(),
    );
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let started = Instant::now();
    let mut slow = TcpStream::connect(metrics).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "closed after {took:?}");
    wait_until("the gateway still answers", || {
        get(metrics, "/metrics").0 == 200
    });
    assert!(!gw.log().contains("panicked"));
}
