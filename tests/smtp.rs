//! The journal SMTP receiver over real sockets and real TLS (a rustls
//! client): both listener kinds, every reply an MTA can get, limits,
//! timeouts, signals and a full disk.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use serde_json::json;
use support::gateway::{Gateway, LineClient, code, expect};
use support::{Sandbox, fixture, stderr, without_first_headers};

/// A gateway with one mailbox: (sandbox, gateway, id, password).
fn journal(label: &str, extra: serde_json::Value) -> (Sandbox, Gateway, String, String) {
    let sb = Sandbox::for_gateway(label, extra);
    let (id, password) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    (sb, gw, id, password)
}

/// Greeting, EHLO, STARTTLS, handshake, EHLO again.
fn starttls_client(gw: &Gateway) -> LineClient {
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    expect(&c.smtp_reply(), "220 localhost ESMTP");
    let ehlo = c.smtp("EHLO client.example");
    assert!(
        ehlo.contains("250-STARTTLS") || ehlo.contains("250 STARTTLS"),
        "{ehlo}"
    );
    expect(&c.smtp("STARTTLS"), "220 2.0.0");
    let mut c = c.start_tls(&gw.cert);
    let ehlo = c.smtp("EHLO client.example");
    assert!(
        !ehlo.contains("STARTTLS"),
        "STARTTLS is not offered inside TLS"
    );
    c
}

fn implicit_client(gw: &Gateway) -> LineClient {
    let mut c = LineClient::implicit_tls(gw.addr("smtp.listen_tls[0]"), &gw.cert);
    expect(&c.smtp_reply(), "220 ");
    expect(&c.smtp("EHLO client.example"), "250 ");
    c
}

/// Dot-stuffs a message for DATA.
fn stuffed(message: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(message.len() + 16);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

/// MAIL, RCPTs, DATA, message; returns the final reply.
fn send(c: &mut LineClient, from: &str, to: &[&str], message: &[u8]) -> String {
    expect(&c.smtp(&format!("MAIL FROM:<{from}>")), "250 2.1.0");
    for rcpt in to {
        expect(&c.smtp(&format!("RCPT TO:<{rcpt}>")), "250 2.1.5");
    }
    expect(&c.smtp("DATA"), "354");
    c.send_raw(&stuffed(message));
    c.smtp_reply()
}

/// The message with the gateway's `Received:` header removed.
fn without_received(stored: &[u8]) -> &[u8] {
    without_first_headers(stored, 1)
}

#[test]
fn starttls_listener_stores_a_message_readable_with_export() {
    let (sb, gw, id, password) = journal("smtp-happy", json!({}));
    let mut c = starttls_client(&gw);
    let message = fixture("m365-journal-report.eml");
    let reply = send(
        &mut c,
        "journal@contoso.example",
        &[&format!("{id}@localhost")],
        &message,
    );
    expect(&reply, "250 2.0.0 Ok: queued as ");
    expect(&c.smtp("QUIT"), "221 2.0.0");
    let exported = sb.export(&id, &password);
    assert_eq!(exported.len(), 1);
    let (_, body, meta) = &exported[0];
    assert!(
        without_received(body) == message.as_slice(),
        "the stored message differs"
    );
    assert_eq!(meta["source"], "smtp");
    assert_eq!(meta["mail_from"], "journal@contoso.example");
    assert_eq!(meta["rcpt_to"], json!([format!("{id}@localhost")]));
    assert_eq!(meta["client_ip"], "127.0.0.1");
    assert_eq!(meta["tls"], "TLSv1.3");
    assert_eq!(meta["size"], body.len());
    let received = String::from_utf8_lossy(&body[..body.len() - message.len()]).into_owned();
    assert!(received.contains("with ESMTPS id"), "{received}");
    assert!(
        received.contains("(using TLSv1.3 with cipher"),
        "{received}"
    );
}

#[test]
fn implicit_tls_listener_stores_a_message() {
    let (sb, gw, id, password) = journal("smtp-implicit", json!({}));
    let mut c = implicit_client(&gw);
    let message = fixture("utf8-headers.eml");
    let to = format!("{id}@localhost");
    expect(
        &c.smtp("MAIL FROM:<jürgen@bücher.example> SMTPUTF8 BODY=8BITMIME"),
        "250 2.1.0",
    );
    expect(&c.smtp(&format!("RCPT TO:<{to}>")), "250 2.1.5");
    expect(&c.smtp("DATA"), "354");
    c.send_raw(&stuffed(&message));
    expect(&c.smtp_reply(), "250 2.0.0");
    let exported = sb.export(&id, &password);
    assert!(without_received(&exported[0].1) == message.as_slice());
    assert_eq!(exported[0].2["mail_from"], "jürgen@bücher.example");
}

#[test]
fn mail_before_starttls_is_530_when_tls_is_required() {
    let (_sb, gw, _, _) = journal("smtp-530", json!({}));
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    c.smtp_reply();
    c.smtp("EHLO client.example");
    expect(&c.smtp("MAIL FROM:<a@example.org>"), "530 5.7.0");
}

#[test]
fn commands_injected_after_starttls_are_not_executed_inside_tls() {
    let (_sb, gw, id, _) = journal("smtp-inject", json!({}));
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    c.smtp_reply();
    c.smtp("EHLO client.example");
    c.send_raw(
        format!("STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<{id}@localhost>\r\n")
            .as_bytes(),
    );
    expect(&c.smtp_reply(), "220 2.0.0");
    let mut c = c.start_tls(&gw.cert);
    expect(&c.smtp("EHLO client.example"), "250 ");
    // Had the injected MAIL been executed, this RCPT would be accepted.
    expect(&c.smtp(&format!("RCPT TO:<{id}@localhost>")), "503 5.5.1");
}

#[test]
fn recipients_unknown_foreign_suspended_and_too_many() {
    let (sb, gw, id, _) = journal("smtp-rcpt", json!({ "smtp": { "max_recipients": 2 } }));
    let (other, _) = sb.create_mailbox("Other");
    let mut c = implicit_client(&gw);
    expect(&c.smtp("MAIL FROM:<a@example.org>"), "250 2.1.0");
    expect(
        &c.smtp("RCPT TO:<mbx-00000000000000000000000000000000@localhost>"),
        "550 5.1.1",
    );
    expect(&c.smtp("RCPT TO:<not-a-mailbox@localhost>"), "550 5.1.1");
    expect(&c.smtp(&format!("RCPT TO:<{id}@example.net>")), "550 5.7.1");
    let out = sb.run(&["mailbox", "suspend", &other]);
    assert!(out.status.success(), "{}", stderr(&out));
    expect(
        &c.smtp(&format!("RCPT TO:<{other}@localhost>")),
        "450 4.2.1",
    );
    sb.run(&["mailbox", "resume", &other]);
    expect(
        &c.smtp(&format!("RCPT TO:<{}@LOCALHOST>", id.to_uppercase())),
        "250 2.1.5",
    );
    expect(
        &c.smtp(&format!("RCPT TO:<{other}@localhost>")),
        "250 2.1.5",
    );
    expect(
        &c.smtp(&format!("RCPT TO:<{other}@localhost>")),
        "452 4.5.3",
    );
}

#[test]
fn one_message_to_two_mailboxes_is_one_copy_each_sealed_to_its_own_key() {
    let (sb, gw, a, password_a) = journal("smtp-multi", json!({}));
    let (b, password_b) = sb.create_mailbox("Second");
    let mut c = implicit_client(&gw);
    let message = b"Subject: for both\r\n\r\nshared body\r\n";
    let reply = send(
        &mut c,
        "x@example.org",
        &[
            &format!("{a}@localhost"),
            &format!("{b}@localhost"),
            &format!("{a}@localhost"),
        ],
        message,
    );
    expect(&reply, "250 2.0.0");
    let (ea, eb) = (sb.export(&a, &password_a), sb.export(&b, &password_b));
    assert_eq!(
        (ea.len(), eb.len()),
        (1, 1),
        "one copy per mailbox, even with a repeated recipient"
    );
    assert_eq!(without_received(&ea[0].1), message);
    assert_eq!(without_received(&eb[0].1), message);
    // Each copy lists only its own mailbox's addresses.
    assert_eq!(eb[0].2["rcpt_to"], json!([format!("{b}@localhost")]));
    // A's copy cannot be opened with B's key.
    let a_file = &sb.message_files(&a)[0];
    fs::copy(
        a_file,
        sb.mailbox_dir(&b)
            .join("messages")
            .join(a_file.file_name().unwrap()),
    )
    .unwrap();
    let pw = sb.password_file(&password_b);
    let out = sb.run_export(&b, &pw, sb.dir.join("xb"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn pipelined_transactions_are_answered_in_order() {
    let (sb, gw, id, password) = journal("smtp-pipe", json!({}));
    let mut c = implicit_client(&gw);
    let mut batch = String::new();
    for i in 0..5 {
        batch.push_str(&format!(
            "MAIL FROM:<s{i}@example.org>\r\nRCPT TO:<{id}@localhost>\r\nDATA\r\n"
        ));
        batch.push_str(&format!("Subject: {i}\r\n\r\nbody {i}\r\n.\r\n"));
    }
    batch.push_str("QUIT\r\n");
    c.send_raw(batch.as_bytes());
    let mut codes = Vec::new();
    loop {
        let reply = c.smtp_reply();
        if reply.is_empty() {
            break;
        }
        codes.push(code(&reply));
    }
    let mut expected: Vec<u16> = std::iter::repeat_n([250, 250, 354, 250], 5)
        .flatten()
        .collect();
    expected.push(221);
    assert_eq!(codes, expected);
    let exported = sb.export(&id, &password);
    let subjects: Vec<String> = exported
        .iter()
        .map(|(_, b, _)| {
            String::from_utf8_lossy(without_received(b))
                .lines()
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        subjects,
        [
            "Subject: 0",
            "Subject: 1",
            "Subject: 2",
            "Subject: 3",
            "Subject: 4"
        ]
    );
}

#[test]
fn bdat_chunks_over_a_socket() {
    let (sb, gw, id, password) = journal("smtp-bdat", json!({}));
    let mut c = implicit_client(&gw);
    let message = fixture("long-lines.eml");
    let (first, second) = message.split_at(1234);
    expect(&c.smtp("MAIL FROM:<a@example.org>"), "250 2.1.0");
    expect(&c.smtp(&format!("RCPT TO:<{id}@localhost>")), "250 2.1.5");
    c.send_raw(format!("BDAT {}\r\n", first.len()).as_bytes());
    c.send_raw(first);
    expect(&c.smtp_reply(), "250 2.0.0");
    c.send_raw(format!("BDAT {} LAST\r\n", second.len()).as_bytes());
    c.send_raw(second);
    expect(&c.smtp_reply(), "250 2.0.0 Ok: queued");
    assert!(without_received(&sb.export(&id, &password)[0].1) == message.as_slice());
}

#[test]
fn declared_and_actual_sizes_over_the_limit_are_552() {
    let (sb, gw, id, _) = journal(
        "smtp-size",
        json!({ "smtp": { "max_message_bytes": 10000 } }),
    );
    let mut c = implicit_client(&gw);
    assert!(c.smtp("EHLO again").contains("SIZE 10000"));
    expect(&c.smtp("MAIL FROM:<a@example.org> SIZE=10001"), "552 5.3.4");
    expect(&c.smtp("MAIL FROM:<a@example.org> SIZE=100"), "250 2.1.0");
    expect(&c.smtp(&format!("RCPT TO:<{id}@localhost>")), "250 2.1.5");
    expect(&c.smtp("DATA"), "354");
    let big = vec![b'y'; 20_000];
    let mut message = b"Subject: too big\r\n\r\n".to_vec();
    for line in big.chunks(78) {
        message.extend_from_slice(line);
        message.extend_from_slice(b"\r\n");
    }
    c.send_raw(&stuffed(&message));
    expect(&c.smtp_reply(), "552 5.3.4");
    expect(&c.smtp("NOOP"), "250 2.0.0");
    assert!(sb.message_files(&id).is_empty());
}

#[test]
fn an_over_long_command_line_is_500_5_5_2() {
    let (_sb, gw, _, _) = journal("smtp-long", json!({ "limits": { "max_line_bytes": 600 } }));
    let mut c = implicit_client(&gw);
    expect(&c.smtp(&format!("NOOP {}", "x".repeat(5000))), "500 5.5.2");
    expect(&c.smtp("NOOP"), "250 2.0.0");
}

#[test]
fn smuggled_messages_are_rejected_whole_over_the_wire() {
    let (sb, gw, id, _) = journal("smtp-smuggle", json!({}));
    let mut c = implicit_client(&gw);
    expect(&c.smtp("MAIL FROM:<a@example.org>"), "250 2.1.0");
    expect(&c.smtp(&format!("RCPT TO:<{id}@localhost>")), "250 2.1.5");
    expect(&c.smtp("DATA"), "354");
    c.send_raw(format!("Subject: one\r\n\r\nbody\n.\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<{id}@localhost>\r\nDATA\r\nSubject: smuggled\r\n\r\n.\r\n").as_bytes());
    expect(&c.smtp_reply(), "550 5.6.0");
    expect(&c.smtp("NOOP"), "250 2.0.0");
    assert!(sb.message_files(&id).is_empty());
}

#[test]
fn the_allowed_clients_list_refuses_others_with_554() {
    let (_sb, gw, _, _) = journal(
        "smtp-allowed",
        json!({ "smtp": { "allowed_clients": ["192.0.2.0/24"] } }),
    );
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    expect(&c.smtp_reply(), "554 5.7.1");
    assert!(c.closed());
    let (_sb2, gw2, _, _) = journal(
        "smtp-allowed2",
        json!({ "smtp": { "allowed_clients": ["127.0.0.0/8"] } }),
    );
    let mut c = LineClient::plain(gw2.addr("smtp.listen[0]"));
    expect(&c.smtp_reply(), "220 ");
}

#[test]
fn connections_over_the_per_ip_limit_get_421_4_7_0() {
    let (_sb, gw, _, _) = journal(
        "smtp-conn",
        json!({ "limits": { "max_connections_per_ip": 2 } }),
    );
    let mut first = LineClient::plain(gw.addr("smtp.listen[0]"));
    let mut second = LineClient::plain(gw.addr("smtp.listen[0]"));
    expect(&first.smtp_reply(), "220 ");
    expect(&second.smtp_reply(), "220 ");
    let mut third = LineClient::plain(gw.addr("smtp.listen[0]"));
    expect(&third.smtp_reply(), "421 4.7.0");
    assert!(third.closed());
    expect(&first.smtp("QUIT"), "221 ");
    assert!(first.closed());
    // The slot is free again once the first session ended.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = LineClient::plain(gw.addr("smtp.listen[0]"));
        let reply = again.smtp_reply();
        if reply.starts_with("220") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot was never released: {reply}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn connections_over_the_total_limit_get_421_4_7_0() {
    let (_sb, gw, _, _) = journal("smtp-total", json!({ "limits": { "max_connections": 1 } }));
    let mut first = LineClient::plain(gw.addr("smtp.listen[0]"));
    expect(&first.smtp_reply(), "220 ");
    let mut second = LineClient::plain(gw.addr("smtp.listen[0]"));
    expect(&second.smtp_reply(), "421 4.7.0");
}

#[test]
fn an_idle_client_is_dropped_after_the_command_timeout() {
    let (_sb, gw, _, _) = journal(
        "smtp-cmdtimeout",
        json!({ "limits": { "command_timeout_secs": 1 } }),
    );
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    expect(&c.smtp_reply(), "220 ");
    let started = Instant::now();
    expect(&c.smtp_reply(), "421 4.4.2");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(c.closed());
}

#[test]
fn a_stalled_data_transfer_times_out_and_stores_nothing() {
    let (sb, gw, id, _) = journal(
        "smtp-datatimeout",
        json!({ "limits": { "data_timeout_secs": 1 } }),
    );
    let mut c = implicit_client(&gw);
    expect(&c.smtp("MAIL FROM:<a@example.org>"), "250 2.1.0");
    expect(&c.smtp(&format!("RCPT TO:<{id}@localhost>")), "250 2.1.5");
    expect(&c.smtp("DATA"), "354");
    c.send_raw(b"Subject: half a message\r\n\r\nand then silen");
    expect(&c.smtp_reply(), "421 4.4.2");
    assert!(sb.message_files(&id).is_empty());
    assert!(sb.tmp_is_empty(&id));
}

#[test]
fn a_dropped_connection_during_data_stores_nothing() {
    let (sb, gw, id, _) = journal("smtp-drop", json!({}));
    {
        let mut c = implicit_client(&gw);
        expect(&c.smtp("MAIL FROM:<a@example.org>"), "250 2.1.0");
        expect(&c.smtp(&format!("RCPT TO:<{id}@localhost>")), "250 2.1.5");
        expect(&c.smtp("DATA"), "354");
        c.send_raw(b"Subject: cut off\r\n\r\nhalf");
    }
    gw.wait_for_log(
        "client disconnected during message data; nothing stored",
        Duration::from_secs(10),
    );
    assert!(sb.message_files(&id).is_empty());
    gw.wait_for_no_spool();
}

#[test]
fn sigterm_stops_accepting_tells_idle_sessions_and_exits_0() {
    let (_sb, gw, _, _) = journal("smtp-sigterm", json!({}));
    let mut idle = implicit_client(&gw);
    let addr = gw.addr("smtp.listen[0]");
    let status = gw.stop();
    assert_eq!(status.code(), Some(0));
    expect(&idle.smtp_reply(), "421 4.3.2");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the listener is closed"
    );
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let (sb, gw, _, _) = journal("smtp-sighup", json!({}));
    let mut open = implicit_client(&gw);
    // Replace the generated certificate with a new one for the same name.
    let (cert, key) = (
        sb.data().join("tls/cert.pem"),
        sb.data().join("tls/key.pem"),
    );
    let old_cert = fs::read(&cert).unwrap();
    let other = Sandbox::for_gateway("smtp-sighup-other", json!({}));
    let other_gw = Gateway::start(&other);
    drop(other_gw);
    fs::copy(other.data().join("tls/cert.pem"), &cert).unwrap();
    fs::copy(other.data().join("tls/key.pem"), &key).unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_for_log("configuration reloaded", Duration::from_secs(10));
    // The open session goes on; a new one is served with the new certificate.
    expect(&open.smtp("NOOP"), "250 2.0.0");
    let mut fresh = LineClient::implicit_tls(gw.addr("smtp.listen_tls[0]"), &cert);
    expect(&fresh.smtp_reply(), "220 ");
    assert_ne!(fs::read(&cert).unwrap(), old_cert);

    // A broken certificate is refused and the current one stays in use.
    fs::write(&cert, b"not a certificate").unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_for_log(
        "reload failed, keeping the running configuration",
        Duration::from_secs(10),
    );
    fs::copy(other.data().join("tls/cert.pem"), sb.dir.join("good.pem")).unwrap();
    let mut still =
        LineClient::implicit_tls(gw.addr("smtp.listen_tls[0]"), &sb.dir.join("good.pem"));
    expect(&still.smtp_reply(), "220 ");
}

/// Rewrites the sandbox's `gateway.json` with `change` applied.
fn edit_config(sb: &Sandbox, change: impl FnOnce(&mut serde_json::Value)) {
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(sb.config()).unwrap()).unwrap();
    change(&mut config);
    fs::write(sb.config(), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// SIGHUP re-reads all of gateway.json, as `postfix reload` does: settings
/// apply to new sessions, a listener change waits for a restart, and an
/// invalid file keeps the running configuration.
#[test]
fn sighup_reloads_the_whole_configuration() {
    let sb = Sandbox::for_gateway("smtp-reload", json!({}));
    let (id, _) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    let rcpt = |to: &str| {
        let mut c = implicit_client(&gw);
        expect(&c.smtp("MAIL FROM:<r@example.org>"), "250");
        c.smtp(&format!("RCPT TO:<{to}>"))
    };
    let reloads = std::cell::Cell::new(0);
    let hup = |needle: &str| {
        reloads.set(reloads.get() + 1);
        gw.signal(libc::SIGHUP);
        gw.wait_for_log_count("SIGHUP: reloading", reloads.get(), Duration::from_secs(10));
        gw.wait_for_log(needle, Duration::from_secs(10));
    };
    expect(&rcpt(&format!("{id}@localhost")), "250");
    let mut open = implicit_client(&gw);

    edit_config(&sb, |c| {
        c["mailbox_domain"] = json!("archive.example");
        c["smtp"]["listen"] = json!(["127.0.0.1:0", "127.0.0.2:0"]);
    });
    hup("configuration reloaded");
    assert!(
        gw.log().contains(
            "a listen address changed: it takes effect after a restart (systemctl restart sealpost)"
        ),
        "{}",
        gw.log()
    );
    expect(&rcpt(&format!("{id}@localhost")), "550 5.7.1");
    expect(&rcpt(&format!("{id}@archive.example")), "250");
    expect(&open.smtp("NOOP"), "250");

    let valid = fs::read(sb.config()).unwrap();
    fs::write(sb.config(), b"{ \"mailbox_domain\": ").unwrap();
    hup("reload failed, keeping the running configuration");
    expect(&rcpt(&format!("{id}@archive.example")), "250");

    fs::write(sb.config(), valid).unwrap();
    edit_config(&sb, |c| {
        c["smtp"]["allowed_clients"] = json!(["192.0.2.0/24"])
    });
    hup("configuration reloaded");
    gw.wait_for_log_count("configuration reloaded", 2, Duration::from_secs(10));
    let mut refused = LineClient::implicit_tls(gw.addr("smtp.listen_tls[0]"), &gw.cert);
    expect(&refused.smtp_reply(), "554 5.7.1");
    expect(&open.smtp("NOOP"), "250");
    assert!(!gw.log().contains("panicked"));
}

/// Under systemd (`Type=notify`) the gateway says READY=1 once every
/// listener is bound, RELOADING=1 then READY=1 around a reload, and
/// STOPPING=1 on the way out (sd_notify(3)).
#[test]
fn systemd_is_told_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let sb = Sandbox::for_gateway("smtp-notify", json!({}));
    let socket_path = sb.dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let gw = Gateway::start_with(&sb, |c| {
        c.env("NOTIFY_SOCKET", &socket_path);
    });
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1\n");
    // Ready means bound: a client is served at once.
    expect(&implicit_client(&gw).smtp("NOOP"), "250");
    gw.signal(libc::SIGHUP);
    assert_eq!(next(), "RELOADING=1\n");
    assert_eq!(next(), "READY=1\n");
    gw.signal(libc::SIGTERM);
    assert_eq!(next(), "STOPPING=1\n");
}

#[test]
fn a_bad_certificate_file_stops_start_up_with_a_clear_error() {
    let sb = Sandbox::for_gateway(
        "smtp-badcert",
        json!({ "tls": { "cert_file": "missing.pem", "key_file": "missing.key" } }),
    );
    let out = sb.run(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.pem"), "{}", stderr(&out));
}

/// Refusals an administrator must see: a journal rule pointing at a wrong
/// address, a suspended mailbox, a sender that skips STARTTLS.
#[test]
fn refused_recipients_and_mail_before_tls_each_leave_a_log_line() {
    let sb = Sandbox::for_gateway("smtp-refusal-logs", json!({}));
    let (id, _) = sb.create_mailbox("Journal");
    let (suspended, _) = sb.create_mailbox("Old");
    assert!(sb.run(&["mailbox", "suspend", &suspended]).status.success());
    let gw = Gateway::start(&sb);
    let wait = |needle: &str| gw.wait_for_log(needle, std::time::Duration::from_secs(10));
    let mut plain = LineClient::plain(gw.addr("smtp.listen[0]"));
    plain.smtp_reply();
    plain.smtp("EHLO logs.example");
    expect(&plain.smtp("MAIL FROM:<early@example.org>"), "530");
    wait("from=<early@example.org> result=refused reply=530 reason=no-tls");
    let mut c = LineClient::implicit_tls(gw.addr("smtp.listen_tls[0]"), &gw.cert);
    c.smtp_reply();
    c.smtp("EHLO logs.example");
    expect(&c.smtp("MAIL FROM:<j@example.org>"), "250");
    let wrong = "mbx-00000000000000000000000000000000@localhost";
    expect(&c.smtp(&format!("RCPT TO:<{wrong}>")), "550 5.1.1");
    wait(&format!(
        "rcpt=<{wrong}> result=refused reply=550 reason=unknown"
    ));
    expect(
        &c.smtp(&format!("RCPT TO:<{id}@elsewhere.example>")),
        "550 5.7.1",
    );
    wait(&format!(
        "rcpt=<{id}@elsewhere.example> result=refused reply=550 reason=not-local"
    ));
    expect(
        &c.smtp(&format!("RCPT TO:<{suspended}@localhost>")),
        "450 4.2.1",
    );
    wait(&format!(
        "rcpt=<{suspended}@localhost> result=refused reply=450 reason=suspended"
    ));
    // Every line of the TLS session carries its client address and port and
    // one session id, from the handshake to the end.
    let client = format!("client={}", c.local_addr());
    expect(&c.smtp("QUIT"), "221");
    wait(&format!("{client} smtp {}: closed", c.local_addr()));
    let log = gw.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&client)).collect();
    let session = |line: &str| {
        line.split_whitespace()
            .find(|w| w.starts_with("session="))
            .map(str::to_owned)
    };
    assert!(lines.len() >= 5, "{lines:#?}");
    assert!(lines[0].contains("connected (TLS"), "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| session(l).is_some() && session(l) == session(lines[0])),
        "{lines:#?}"
    );
    for needle in ["reason=unknown", "reason=not-local", "reason=suspended"] {
        assert!(
            lines.iter().any(|l| l.contains(needle)),
            "{needle}: {lines:#?}"
        );
    }
    // The plain session before it had a session of its own.
    let plain_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reason=no-tls"))
        .collect();
    assert_eq!(plain_lines.len(), 1, "{log}");
    assert_ne!(session(plain_lines[0]), session(lines[0]));
    assert!(
        plain_lines[0].contains(&format!("client={}", plain.local_addr())),
        "{log}"
    );
}

#[test]
fn a_second_gateway_on_the_same_data_directory_refuses_to_start() {
    // No control socket: the data directory's own lock is what refuses.
    let sb = Sandbox::for_gateway("smtp-twice", json!({ "control_socket": null }));
    let gw = Gateway::start(&sb);
    let out = sb.run(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    let expected = format!(
        "another Sealpost gateway (pid {}) is already serving this data directory",
        gw.pid()
    );
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    // The first one is untouched.
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    expect(&c.smtp_reply(), "220 ");
}

#[test]
fn a_port_in_use_is_a_clear_error_naming_the_key() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let sb = Sandbox::for_gateway(
        "smtp-busy",
        json!({ "smtp": { "listen": [format!("127.0.0.1:{port}")] } }),
    );
    let out = sb.run(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("smtp.listen[0] 127.0.0.1:{port}: cannot listen")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_full_disk_is_a_temporary_451_and_leaves_nothing_behind() {
    let sb = Sandbox::for_gateway("smtp-full", json!({}));
    let Some(_mount) = sb.full_disk("2m") else {
        return;
    };
    let (id, password) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    let mut c = implicit_client(&gw);
    // The 3 MB attachment cannot fit on a 2 MiB file system.
    let reply = send(
        &mut c,
        "a@example.org",
        &[&format!("{id}@localhost")],
        &fixture("attachment-3mb.eml"),
    );
    expect(&reply, "451 4.3.0");
    // The session goes on, and a small message still fits once space is back.
    let reply = send(
        &mut c,
        "a@example.org",
        &[&format!("{id}@localhost")],
        b"Subject: small\r\n\r\nfits\r\n",
    );
    expect(&reply, "250 2.0.0");
    assert_eq!(sb.message_files(&id).len(), 1);
    assert!(sb.tmp_is_empty(&id));
    gw.wait_for_no_spool();
    assert_eq!(sb.export(&id, &password).len(), 1);
    drop(c);
    drop(gw);
}

#[test]
fn a_transfer_in_progress_at_sigterm_completes_within_the_grace_period() {
    let (sb, mut gw, id, password) = journal(
        "smtp-grace",
        json!({ "limits": { "shutdown_grace_secs": 20 } }),
    );
    let mut c = implicit_client(&gw);
    expect(&c.smtp("MAIL FROM:<a@example.org>"), "250 2.1.0");
    expect(&c.smtp(&format!("RCPT TO:<{id}@localhost>")), "250 2.1.5");
    expect(&c.smtp("DATA"), "354");
    c.send_raw(b"Subject: in flight\r\n\r\nfirst half, ");
    gw.signal(libc::SIGTERM);
    gw.wait_for_log(
        "open sessions get the grace period",
        Duration::from_secs(10),
    );
    c.send_raw(b"second half\r\n.\r\n");
    expect(&c.smtp_reply(), "250 2.0.0");
    // Idle again: the session is told the gateway is going away.
    expect(&c.smtp_reply(), "421 4.3.2");
    assert_eq!(gw.wait(Duration::from_secs(30)).code(), Some(0));
    let exported = sb.export(&id, &password);
    assert!(without_received(&exported[0].1).ends_with(b"first half, second half\r\n"));
}

#[test]
fn a_client_that_never_starts_its_tls_handshake_is_dropped() {
    let (_sb, gw, _, _) = journal(
        "smtp-handshake",
        json!({ "limits": { "tls_handshake_timeout_secs": 1 } }),
    );
    let mut silent = std::net::TcpStream::connect(gw.addr("smtp.listen_tls[0]")).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut silent, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the gateway closes the connection");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    gw.wait_for_log("TLS handshake failed", Duration::from_secs(5));
}

/// Socket activation (sd_listen_fds(3)): a socket bound by whoever starts
/// the gateway, at the address a listener names, is used instead of a new
/// one; a passed socket no listener names is closed, with a warning.
#[test]
fn a_socket_handed_over_is_used_and_one_no_listener_names_is_reported() {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (named, stray) = (bind(), bind());
    let addr = named.local_addr().unwrap();
    let sb = Sandbox::for_gateway(
        "smtp-activation",
        json!({ "smtp": { "listen": [addr.to_string()], "listen_tls": [] } }),
    );
    let gw = Gateway::start_handing(&sb, &[&named, &stray]);
    assert_eq!(gw.addr("smtp.listen[0]"), addr);
    // Our copy of the socket is still open: only the gateway accepts on it,
    // so the greeting proves the gateway serves the socket it was handed.
    let mut c = LineClient::plain(addr);
    expect(&c.smtp_reply(), "220 ");
    expect(&c.smtp("QUIT"), "221");
    gw.wait_for_log(
        &format!(
            "a socket bound to {} was passed to the gateway, but no listener of the configuration names it",
            stray.local_addr().unwrap()
        ),
        Duration::from_secs(5),
    );
}
