//! Attack: holding connections open by sending one byte at a time (a
//! "slowloris"). Every wait is a deadline: a whole command line, a whole TLS
//! handshake, a message at a minimum average rate. When slots run short, idle
//! clients get a short deadline, so a well-behaved sender gets through.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use support::Sandbox;
use support::gateway::{Gateway, LineClient, client_hello, connect_from, expect};

/// Sends `bytes` one at a time every `every`, from a thread, until the
/// gateway closes the connection; then reports how many it sent and what
/// the gateway said.
struct Trickler {
    sent: Arc<AtomicUsize>,
    closed: Arc<AtomicBool>,
    said: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Trickler {
    fn start(mut tcp: TcpStream, prelude: &[u8], bytes: Vec<u8>, every: Duration) -> Trickler {
        let sent = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let said = Arc::new(std::sync::Mutex::new(Vec::new()));
        tcp.write_all(prelude).unwrap();
        let mut reader = tcp.try_clone().unwrap();
        let (said2, closed2) = (said.clone(), closed.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                said2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            closed2.store(true, Ordering::SeqCst);
        });
        let (sent2, closed3) = (sent.clone(), closed.clone());
        std::thread::spawn(move || {
            for b in bytes.iter().cycle() {
                if closed3.load(Ordering::SeqCst) || tcp.write_all(&[*b]).is_err() {
                    break;
                }
                sent2.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(every);
            }
        });
        Trickler { sent, closed, said }
    }

    /// Waits (up to 60 s) for the gateway to close; returns what it said
    /// and how many bytes had been trickled by then.
    fn wait_closed(&self) -> (String, usize) {
        support::wait_until("the gateway closes the trickling connection", || {
            self.closed.load(Ordering::SeqCst)
        });
        (
            String::from_utf8_lossy(&self.said.lock().unwrap()).into_owned(),
            self.sent.load(Ordering::SeqCst),
        )
    }
}

fn journal(label: &str, limits: serde_json::Value) -> (Sandbox, Gateway, String) {
    let sb = Sandbox::for_gateway(
        label,
        json!({ "limits": limits, "smtp": { "require_tls": false } }),
    );
    let (id, _) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    (sb, gw, id)
}

fn tcp(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).unwrap()
}

#[test]
fn a_command_line_trickled_byte_by_byte_ends_at_its_deadline() {
    let (_sb, gw, _) = journal("slow-command", json!({ "command_timeout_secs": 2 }));
    let t = Trickler::start(
        tcp(gw.addr("smtp.listen[0]")),
        b"",
        b"NOOOOOOOOOOOOOOOOP".to_vec(),
        Duration::from_millis(200),
    );
    let (said, sent) = t.wait_closed();
    assert!(said.starts_with("220 "), "{said}");
    assert!(said.contains("421 4.4.2"), "{said}");
    // Two seconds at five bytes a second: never the dozens a timeout per
    // read would have let through.
    assert!(sent < 25, "{sent} bytes trickled before the deadline");
}

#[test]
fn a_pop3_command_trickled_byte_by_byte_ends_at_its_deadline() {
    let (_sb, gw, _) = journal("slow-pop3", json!({ "command_timeout_secs": 2 }));
    let t = Trickler::start(
        tcp(gw.addr("pop3.listen[0]")),
        b"",
        b"CAPAAAAAAAAAAAAAAAAAAAAAAA".to_vec(),
        Duration::from_millis(200),
    );
    let (said, sent) = t.wait_closed();
    assert!(said.contains("-ERR [SYS/TEMP] Idle too long"), "{said}");
    assert!(sent < 25, "{sent}");
}

#[test]
fn message_data_below_the_minimum_rate_ends_at_its_deadline() {
    let (sb, gw, id) = journal(
        "slow-data",
        json!({ "data_timeout_secs": 1, "min_data_bytes_per_sec": 100 }),
    );
    // Ten bytes a second, never a pause longer than the data timeout: only
    // the rate can end it.
    let prelude = format!(
        "EHLO slow.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<{id}@localhost>\r\nDATA\r\n"
    );
    let t = Trickler::start(
        tcp(gw.addr("smtp.listen[0]")),
        prelude.as_bytes(),
        b"Subject: slow\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n".to_vec(),
        Duration::from_millis(100),
    );
    let (said, sent) = t.wait_closed();
    assert!(said.contains("354 "), "{said}");
    assert!(said.contains("421 4.4.2"), "{said}");
    assert!(sent < 60, "{sent}");
    assert!(sb.message_files(&id).is_empty());
    gw.wait_for_no_spool();
}

#[test]
fn a_tls_handshake_trickled_byte_by_byte_ends_at_its_deadline() {
    let (_sb, gw, _) = journal("slow-tls", json!({ "tls_handshake_timeout_secs": 2 }));
    let hello = client_hello();
    assert!(hello.len() > 100);
    // Implicit TLS.
    let t = Trickler::start(
        tcp(gw.addr("smtp.listen_tls[0]")),
        b"",
        hello.clone(),
        Duration::from_millis(100),
    );
    let (_, sent) = t.wait_closed();
    assert!(sent < hello.len(), "{sent} of {} bytes", hello.len());
    // After STARTTLS.
    let t = Trickler::start(
        tcp(gw.addr("smtp.listen[0]")),
        b"EHLO slow.example\r\nSTARTTLS\r\n",
        hello.clone(),
        Duration::from_millis(100),
    );
    let (said, sent) = t.wait_closed();
    assert!(said.contains("220 2.0.0"), "{said}");
    assert!(sent < hello.len(), "{sent} of {} bytes", hello.len());
}

#[test]
fn slow_clients_cannot_hold_every_slot_from_a_well_behaved_sender() {
    // Six slots, all taken by tricklers from three addresses; the gateway is
    // overloaded from half of them, and then idle clients get one second.
    let (sb, gw, id) = journal(
        "slow-slots",
        json!({
            "max_connections": 6,
            "max_connections_per_ip": 6,
            "overload_percent": 50,
            "overload_timeout_secs": 1,
        }),
    );
    let addr = gw.addr("smtp.listen[0]");
    let tricklers: Vec<Trickler> = (0..6)
        .map(|i| {
            Trickler::start(
                connect_from(addr, &format!("127.0.0.{}", 2 + i % 3)),
                b"",
                b"HELOOOOOOOOOOOOOOOOOOOOOOOOOO".to_vec(),
                Duration::from_millis(300),
            )
        })
        .collect();
    // The sender retries, as a real one does after a 421.
    let mut attempts = 0;
    let delivered = loop {
        attempts += 1;
        assert!(attempts < 300, "the well-behaved sender never got a slot");
        let mut c = LineClient::plain(addr);
        if !c.smtp_reply().starts_with("220") {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        expect(&c.smtp("EHLO good.example"), "250");
        expect(&c.smtp("MAIL FROM:<a@example.org>"), "250");
        expect(&c.smtp(&format!("RCPT TO:<{id}@localhost>")), "250");
        expect(&c.smtp("DATA"), "354");
        break c.smtp("Subject: through\r\n\r\nbody\r\n.");
    };
    expect(&delivered, "250 2.0.0");
    assert_eq!(sb.message_files(&id).len(), 1);
    // The slots came from tricklers cut off with the overload deadline
    // (the rest keep the normal one once the pressure is gone).
    let cut: Vec<String> = tricklers
        .iter()
        .filter(|t| t.closed.load(Ordering::SeqCst))
        .map(|t| String::from_utf8_lossy(&t.said.lock().unwrap()).into_owned())
        .collect();
    assert!(!cut.is_empty());
    for said in cut {
        assert!(said.contains("421 4.4.2"), "{said}");
    }
}

#[test]
fn a_flood_of_one_service_leaves_every_other_service_its_share() {
    // 32 slots. Guaranteed: journal SMTP 8, POP3 3, SMTP proxy 3, the
    // console 2 (and at most 2); 16 are shared.
    let sb = Sandbox::for_gateway(
        "pool-shares",
        json!({
            "limits": { "max_connections": 32, "max_connections_per_ip": 100 },
            "smtp": { "require_tls": false },
            "console": { "listen": ["127.0.0.1:0"] },
        }),
    );
    let (id, _) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    // Connections that never start their TLS handshake, to the console,
    // and connections that never say a word, to the SMTP proxy.
    let console: Vec<TcpStream> = (0..40).map(|_| tcp(gw.addr("console.listen[0]"))).collect();
    let proxy: Vec<TcpStream> = (0..40)
        .map(|_| tcp(gw.addr("smtp_proxy.listen[0]")))
        .collect();
    gw.wait_for_log_count("console: refused", 38, Duration::from_secs(30));
    gw.wait_for_log_count("smtp-proxy: refused", 40 - 19, Duration::from_secs(30));
    // Journal SMTP and POP3 still answer at once, with their own shares.
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    expect(&c.smtp_reply(), "220 ");
    expect(&c.smtp("EHLO journal.example"), "250");
    let sent = c.smtp_send(
        "journal@example.org",
        &format!("{id}@localhost"),
        b"Subject: through the flood\r\n\r\nbody\r\n",
    );
    expect(&sent, "250 2.0.0");
    let mut pop3 = LineClient::plain(gw.addr("pop3.listen[0]"));
    let greeting = pop3.read_line().unwrap();
    assert!(greeting.starts_with("+OK"), "{greeting}");
    assert!(
        gw.log()
            .contains("the service's share of limits.max_connections")
    );
    drop((console, proxy));
}
