//! The PROXY protocol behind a load balancer: from `haproxy_trusted_networks`
//! a connection must start with a header, and the client it names is the
//! one the gateway sees everywhere (allow-lists, `Received:`, stored
//! metadata, logs, per-address limits); from anywhere else a header is
//! refused. Against raw headers of both versions and a real HAProxy with
//! `send-proxy-v2`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::json;
use support::Sandbox;
use support::gateway::{Gateway, LineClient, expect};
use support::haproxy::Haproxy;

/// A gateway behind a balancer at 127.0.0.1; mail is accepted only from
/// 192.0.2.0/24, which no test connection really comes from.
fn behind_balancer(label: &str) -> (Sandbox, Gateway, String) {
    let sb = Sandbox::for_gateway(
        label,
        json!({
            "haproxy_trusted_networks": ["127.0.0.1/32"],
            "smtp": { "require_tls": false, "allowed_clients": ["192.0.2.0/24", "127.0.0.2/32"] },
            "limits": { "tls_handshake_timeout_secs": 2 },
        }),
    );
    let (id, _) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    (sb, gw, id)
}

/// A plain SMTP connection that first sends `header`.
fn with_header(gw: &Gateway, header: &[u8]) -> LineClient {
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    c.send_raw(header);
    c
}

fn deliver(c: &mut LineClient, id: &str) {
    expect(&c.smtp_reply(), "220 ");
    expect(&c.smtp("EHLO balanced.example"), "250");
    let reply = c.smtp_send(
        "j@example.org",
        &format!("{id}@localhost"),
        b"Subject: behind a balancer\r\n\r\nbody\r\n",
    );
    expect(&reply, "250");
    c.smtp("QUIT");
}

fn v2_tcp4(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&25u16.to_be_bytes());
    h
}

#[test]
fn the_client_a_trusted_balancer_names_is_the_client_everywhere() {
    let (sb, gw, id) = behind_balancer("pp-trusted");
    let mut c = with_header(&gw, b"PROXY TCP4 192.0.2.9 127.0.0.1 40001 25\r\n");
    deliver(&mut c, &id);
    let mut c = with_header(&gw, &v2_tcp4([192, 0, 2, 10], 40002));
    deliver(&mut c, &id);
    gw.wait_for_log("client=192.0.2.10:40002", Duration::from_secs(10));
    let log = gw.log();
    assert!(
        log.contains("PROXY header: client 192.0.2.9:40001"),
        "{log}"
    );
    assert_eq!(sb.message_files(&id).len(), 2);

    // Not from 192.0.2.0/24: the allow-list sees the named client.
    let mut c = with_header(&gw, b"PROXY TCP4 198.51.100.7 127.0.0.1 40003 25\r\n");
    expect(&c.smtp_reply(), "554 5.7.1");
    // A LOCAL header (the balancer's health check) leaves its own address,
    // which the allow-list refuses too.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let mut c = with_header(&gw, &local);
    expect(&c.smtp_reply(), "554 5.7.1");
}

#[test]
fn the_stored_message_and_its_received_header_name_the_real_client() {
    let sb = Sandbox::for_gateway(
        "pp-received",
        json!({ "haproxy_trusted_networks": ["127.0.0.1/32"], "smtp": { "require_tls": false } }),
    );
    let (id, password) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    let mut c = with_header(&gw, b"PROXY TCP6 2001:db8::9 ::1 40001 25\r\n");
    deliver(&mut c, &id);
    let stored = sb.export(&id, &password);
    assert_eq!(stored.len(), 1);
    let (_, body, meta) = &stored[0];
    assert_eq!(meta["client_ip"], "2001:db8::9");
    let text = String::from_utf8_lossy(body);
    let received = text.lines().next().unwrap();
    assert!(received.contains("2001:db8::9"), "{received}");
}

#[test]
fn a_trusted_connection_without_a_header_is_refused_by_the_deadline() {
    let (_sb, gw, _) = behind_balancer("pp-missing");
    // Says nothing: no header within limits.tls_handshake_timeout_secs.
    let mut silent = TcpStream::connect(gw.addr("smtp.listen[0]")).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        silent.read(&mut buf).unwrap(),
        0,
        "closed without a greeting"
    );
    // Says something else first.
    let mut c = with_header(&gw, b"EHLO no-header.example\r\n");
    c.set_timeout(Duration::from_secs(20));
    assert_eq!(c.read_line(), None);
    gw.wait_for_log("refused: no PROXY protocol header", Duration::from_secs(10));
    gw.wait_for_log(
        "refused: PROXY protocol header not received",
        Duration::from_secs(10),
    );
}

#[test]
fn a_header_from_outside_the_trusted_networks_is_refused() {
    let sb = Sandbox::for_gateway(
        "pp-untrusted",
        json!({ "haproxy_trusted_networks": ["10.0.0.0/8"], "smtp": { "require_tls": false } }),
    );
    sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    // The header is in the gateway's socket before its session thread looks
    // (a balancer sends it at once); should the thread ever look first, the
    // connection is greeted instead, so try a few connections.
    let refused = (0..5).any(|_| {
        let mut c = TcpStream::connect(gw.addr("smtp.listen[0]")).unwrap();
        c.write_all(b"PROXY TCP4 192.0.2.9 127.0.0.1 40001 25\r\n")
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 64];
        // Closed (or reset, the header unread) without a greeting.
        !matches!(c.read(&mut buf), Ok(n) if n > 0)
    });
    assert!(refused, "no connection with a header was refused");
    gw.wait_for_log(
        "refused: a PROXY header from outside haproxy_trusted_networks",
        Duration::from_secs(10),
    );
    assert!(!gw.log().contains("client=192.0.2.9"), "{}", gw.log());
    // Without a header, the same client is served.
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    expect(&c.smtp_reply(), "220 ");
}

#[test]
fn through_a_real_haproxy_with_send_proxy_v2() {
    let (sb, gw, id) = behind_balancer("pp-haproxy");
    let config = |ports: &[u16]| {
        format!(
            "frontend smtp\n  bind 127.0.0.1:{}\n  default_backend gateway\n\
             backend gateway\n  server gw1 {} send-proxy-v2\n",
            ports[0],
            gw.addr("smtp.listen[0]")
        )
    };
    let Some((_haproxy, ports)) = Haproxy::start_on(&sb.dir, 1, config) else {
        return;
    };
    let front: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    // From 127.0.0.2: HAProxy itself connects from 127.0.0.1.
    let mut c = LineClient::plain_from(front, Some("127.0.0.2"));
    let client = c.local_addr();
    deliver(&mut c, &id);
    gw.wait_for_log(
        &format!("PROXY header: client {client}"),
        Duration::from_secs(10),
    );
    assert!(
        gw.log().contains(&format!("client={client} smtp")),
        "{}",
        gw.log()
    );
    assert_eq!(sb.message_files(&id).len(), 1);
}
