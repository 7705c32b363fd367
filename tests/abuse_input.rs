//! Attack: garbage on every listener, before and after TLS. Each input gets
//! a clear reply or a close, never a panic or a hang, and once the
//! connections are gone the gateway's threads and memory are back where
//! they started.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use support::gateway::{Gateway, Stream, client_hello, tls};
use support::{Sandbox, getrandom, wait_until};

#[derive(Clone, Copy, Debug)]
enum Proto {
    Smtp,
    Pop3,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Plain listener, garbage before any upgrade.
    Plain,
    /// Plain listener, garbage after STARTTLS/STLS.
    Upgraded,
    /// Implicit-TLS listener, garbage after the handshake.
    Implicit,
}

/// What a garbage input did to one connection.
#[derive(Debug)]
struct Outcome {
    replied: Vec<u8>,
    closed: bool,
}

/// Reads until the gateway closes, or until it has answered and then gone
/// quiet (it waits for the next command): never longer than 30 s.
fn collect(stream: &mut dyn Read, tcp: &TcpStream) -> Outcome {
    tcp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut replied = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => {
                return Outcome {
                    replied,
                    closed: true,
                };
            }
            Ok(n) => replied.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if replied.ends_with(b"\n") {
                    return Outcome {
                        replied,
                        closed: false,
                    };
                }
            }
            Err(_) => {
                return Outcome {
                    replied,
                    closed: true,
                };
            }
        }
        assert!(
            Instant::now() < deadline,
            "no reply and no close within 30 s"
        );
    }
}

/// Reads one line (the greeting, the answer to STARTTLS) from a plain socket.
fn line(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\n") {
        if tcp.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        out.push(byte[0]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens a connection in `mode` and sends `input` over it (inside TLS where
/// the mode has TLS).
fn attack(gw: &Gateway, addr: SocketAddr, proto: Proto, mode: Mode, input: &[u8]) -> Outcome {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let clone = tcp.try_clone().unwrap();
    let mut stream: Box<dyn Stream> = match mode {
        Mode::Plain => Box::new(tcp.try_clone().unwrap()),
        Mode::Implicit => Box::new(tls(tcp.try_clone().unwrap(), &gw.cert)),
        Mode::Upgraded => {
            line(&mut tcp);
            let upgrade: &[u8] = match proto {
                Proto::Smtp => b"EHLO attacker.example\r\n",
                Proto::Pop3 => b"",
            };
            tcp.write_all(upgrade).unwrap();
            if matches!(proto, Proto::Smtp) {
                while !line(&mut tcp).starts_with("250 ") {}
            }
            tcp.write_all(match proto {
                Proto::Smtp => b"STARTTLS\r\n",
                Proto::Pop3 => b"STLS\r\n",
            })
            .unwrap();
            let answer = line(&mut tcp);
            assert!(
                answer.starts_with("220") || answer.starts_with("+OK"),
                "{answer}"
            );
            Box::new(tls(tcp.try_clone().unwrap(), &gw.cert))
        }
    };
    // Whatever is written, in pieces; the gateway may close half-way.
    for piece in input.chunks(64 * 1024) {
        if stream
            .write_all(piece)
            .and_then(|()| stream.flush())
            .is_err()
        {
            break;
        }
    }
    collect(&mut stream, &clone)
}

/// Raw bytes on a fresh TCP connection (no TLS from us at all).
fn raw(addr: SocketAddr, input: &[u8], then_close: bool) -> Outcome {
    let mut tcp = TcpStream::connect(addr).unwrap();
    let _ = tcp.write_all(input);
    if then_close {
        let _ = tcp.shutdown(std::net::Shutdown::Write);
    }
    let clone = tcp.try_clone().unwrap();
    collect(&mut tcp, &clone)
}

/// Every input in every mode on one service's listeners; returns the cases run.
fn attack_service(gw: &Gateway, service: &str, proto: Proto, inputs: &[(&str, Vec<u8>)]) -> usize {
    let mut cases = 0;
    let plain = gw.addr(&format!("{service}.listen[0]"));
    let implicit = gw.addr(&format!("{service}.listen_tls[0]"));
    for (what, input) in inputs {
        for (mode, addr) in [
            (Mode::Plain, plain),
            (Mode::Upgraded, plain),
            (Mode::Implicit, implicit),
        ] {
            let outcome = attack(gw, addr, proto, mode, input);
            assert!(
                outcome.closed || !outcome.replied.is_empty(),
                "{service} {mode:?} {what}: neither a reply nor a close"
            );
            cases += 1;
        }
    }
    // Plaintext where a handshake belongs, and a handshake cut short.
    let outcome = raw(implicit, b"EHLO plain.example\r\nUSER x\r\n", false);
    assert!(
        outcome.closed,
        "{service}: plaintext on the TLS port was not closed"
    );
    let hello = client_hello();
    let outcome = raw(implicit, &hello[..hello.len() / 2], true);
    assert!(
        outcome.closed,
        "{service}: a truncated handshake was not closed"
    );
    cases + 2
}

#[test]
fn garbage_on_every_listener_gets_a_reply_or_a_close_and_leaves_nothing_behind() {
    let sb = Sandbox::for_gateway(
        "input-garbage",
        json!({
            // A partial line is waited for until its deadline: keep it short.
            "limits": { "error_delay_ms": 0, "command_timeout_secs": 2 },
            "pop3_proxy": { "listen": ["127.0.0.1:0"], "listen_tls": ["127.0.0.1:0"] },
        }),
    );
    let gw = Gateway::start(&sb);
    let services = [
        ("smtp", Proto::Smtp),
        ("pop3", Proto::Pop3),
        ("smtp_proxy", Proto::Smtp),
        ("pop3_proxy", Proto::Pop3),
    ];
    // Warm up every listener once, then take the baseline.
    for (service, _) in services {
        raw(gw.addr(&format!("{service}.listen[0]")), b"QUIT\r\n", false);
    }
    wait_until("the warm-up sessions end", || gw.threads() <= 6);
    let baseline_threads = gw.threads();
    let baseline_rss = gw.rss_kib();

    let mut random = vec![0u8; 64 * 1024];
    getrandom(&mut random);
    let mut long_line = vec![b'A'; 1 << 20];
    long_line.extend_from_slice(b"\r\n");
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("NUL bytes", vec![0u8; 4096]),
        (
            "non-UTF-8",
            b"\xff\xfe\xfd garbage \xc3\x28\r\nNOOP \x80\r\n".to_vec(),
        ),
        ("a 1 MiB line", long_line),
        ("10,000 pipelined commands", b"NOOP\r\n".repeat(10_000)),
        ("a TLS ClientHello", client_hello()),
    ];
    // One thread per service: the partial-line cases wait for their deadline.
    let cases: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = services
            .iter()
            .map(|&(service, proto)| {
                let (gw, inputs) = (&gw, &inputs);
                scope.spawn(move || attack_service(gw, service, proto, inputs))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(cases, 4 * (6 * 3 + 2));

    assert!(!gw.log().contains("panicked"), "{}", gw.log());
    // At most the baseline: it may still have counted a warm-up session
    // that ended after it was taken (seen on a loaded machine).
    wait_until("every session thread has ended", || {
        gw.threads() <= baseline_threads
    });
    let rss = gw.rss_kib();
    println!(
        "threads {baseline_threads} -> {}, RSS {baseline_rss} KiB -> {rss} KiB",
        gw.threads()
    );
    assert!(
        rss <= baseline_rss + 8 * 1024,
        "RSS grew from {baseline_rss} KiB to {rss} KiB"
    );
    // And it still works.
    let out = raw(gw.addr("smtp.listen[0]"), b"QUIT\r\n", false);
    assert!(String::from_utf8_lossy(&out.replied).contains("221 2.0.0"));
}
