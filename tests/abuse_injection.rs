//! Attack: smuggling commands to a provider through the proxies' logins.
//!
//! A CR LF inside a password (or a user name) would end the upstream's
//! command line early: `secret\r\nDELE 1\r\nQUIT` makes a provider delete a
//! message that was never archived. Every control character anywhere in a
//! login is refused with the generic login error, before anything is sent
//! upstream, on every path: both proxies, USER/PASS, AUTH PLAIN and AUTH
//! LOGIN, initial responses and continuation lines.

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]

mod support;

use serde_json::json;
use support::gateway::{Gateway, LineClient, code};
use support::recorder::Recorder;
use support::upstreams::{FIXTURES_STORED, POP3_PASSWORD, POP3_USER, Pop3Upstream};
use support::{Sandbox, wait_until};

fn b64(bytes: &[u8]) -> String {
    sealpost::crypto::base64_encode(bytes)
}

#[test]
fn a_password_carrying_pop3_commands_never_reaches_the_provider() {
    let sb = Sandbox::for_gateway(
        "inject-dovecot",
        json!({ "pop3_proxy": { "listen": [], "listen_tls": ["127.0.0.1:0"] } }),
    );
    let Some(upstream) = Pop3Upstream::start(&sb.dir.join("upstream"), true) else {
        return;
    };
    sb.configure_proxy(&upstream.ca.cert_file, upstream.implicit, json!({}));
    let (id, _) = sb.create_mailbox("Office");
    let gw = Gateway::start(&sb);
    let login = format!("{POP3_USER}%localhost:{}%{id}", upstream.implicit);
    let addr = gw.addr("pop3_proxy.listen_tls[0]");

    // The real password, then commands: delete message 1 and leave.
    let smuggled = format!("{POP3_PASSWORD}\r\nDELE 1\r\nQUIT");
    let mut c = LineClient::implicit_tls(addr, &gw.cert);
    c.read_line();
    let token = b64(format!("\0{login}\0{smuggled}").as_bytes());
    assert_eq!(
        c.pop3(&format!("AUTH PLAIN {token}")),
        "-ERR [AUTH] Invalid login\r\n"
    );
    // The same with a bare CR inside a PASS line.
    assert!(c.pop3(&format!("USER {login}")).starts_with("+OK"));
    assert_eq!(
        c.pop3(&format!("PASS {POP3_PASSWORD}\rDELE 1\rQUIT")),
        "-ERR [AUTH] Invalid login\r\n"
    );
    assert_eq!(upstream.stored(), FIXTURES_STORED, "nothing was deleted");
    assert!(
        !upstream.dovecot.log().contains(POP3_USER),
        "the provider never saw a login:\n{}",
        upstream.dovecot.log()
    );

    // The account is intact: the clean password logs in and sees every message.
    assert!(c.pop3(&format!("USER {login}")).starts_with("+OK"));
    assert!(c.pop3(&format!("PASS {POP3_PASSWORD}")).starts_with("+OK"));
    assert!(
        c.pop3("STAT")
            .starts_with(&format!("+OK {FIXTURES_STORED} ")),
    );
    assert!(c.pop3("QUIT").starts_with("+OK"));
    assert_eq!(upstream.stored(), FIXTURES_STORED);
}

/// The gateway with both proxies pointed at `recorder` (as `localhost`).
fn gateway_toward(recorder: &Recorder, label: &str) -> (Sandbox, Gateway, String) {
    let sb = Sandbox::for_gateway(
        label,
        json!({
            "pop3_proxy": { "listen": [], "listen_tls": ["127.0.0.1:0"] },
            "limits": { "max_failed_logins": 1000 },
            "proxy": {
                "allowed_targets": ["localhost"],
                "allow_private_targets": true,
                "implicit_tls_ports": [recorder.addr().port()],
                "connect_timeout_secs": 2,
            },
        }),
    );
    let (id, _) = sb.create_mailbox("Office");
    let gw = Gateway::start(&sb);
    (sb, gw, id)
}

#[test]
fn control_characters_anywhere_in_a_login_are_refused_generically_and_nothing_is_sent_upstream() {
    let recorder = Recorder::on("127.0.0.1");
    let (_sb, gw, id) = gateway_toward(&recorder, "inject-every-path");
    let port = recorder.addr().port();
    let name = format!("anna%localhost:{port}%{id}");
    let evil_names = [
        format!("anna\r\nRSET%localhost:{port}%{id}"),
        format!("anna\0%localhost:{port}%{id}"),
        format!("anna%local\u{1}host:{port}%{id}"),
        format!("anna%localhost:{port}%{id}\u{7f}"),
        format!("anna%localhost:{port}%{id}\u{85}"),
    ];
    let evil_passwords = ["pw\r\nDELE 1", "pw\0", "pw\nQUIT", "\u{1b}[0m"];

    let smtp = gw.addr("smtp_proxy.listen_tls[0]");
    let smtp_session = || {
        let mut c = LineClient::implicit_tls(smtp, &gw.cert);
        c.smtp_reply();
        assert_eq!(code(&c.smtp("EHLO client.example")), 250);
        c
    };
    let mut attempts = 0;
    let mut refused = |reply: String, what: &str| {
        attempts += 1;
        assert!(
            reply.starts_with("535 5.7.8 ") || reply.starts_with("-ERR [AUTH] Invalid login"),
            "{what}: {reply:?}"
        );
    };
    // NUL separates the fields of a PLAIN response (RFC 4616), so a NUL
    // inside one makes the response malformed: that is its answer there.
    let malformed = |reply: String, what: &str| {
        assert!(
            reply.starts_with("501 5.5.2 ") || reply.starts_with("-ERR [AUTH] Malformed PLAIN"),
            "{what}: {reply:?}"
        );
    };
    let mut cases: Vec<(String, String)> = evil_names
        .iter()
        .map(|n| (n.clone(), "pw".to_string()))
        .collect();
    cases.extend(evil_passwords.iter().map(|p| (name.clone(), p.to_string())));
    for (user, password) in &cases {
        let what = format!("{user:?} / {password:?}");
        let plain = b64(format!("\0{user}\0{password}").as_bytes());
        let nul = user.contains('\0') || password.contains('\0');
        let mut c = smtp_session();
        // AUTH PLAIN with an initial response...
        let reply = c.smtp(&format!("AUTH PLAIN {plain}"));
        if nul {
            malformed(reply, &what)
        } else {
            refused(reply, &what)
        }
        // ...and as a continuation line.
        assert_eq!(code(&c.smtp("AUTH PLAIN")), 334);
        let reply = c.smtp(&plain);
        if nul {
            malformed(reply, &what)
        } else {
            refused(reply, &what)
        }
        // AUTH LOGIN with the user as initial response, then the password.
        assert_eq!(
            code(&c.smtp(&format!("AUTH LOGIN {}", b64(user.as_bytes())))),
            334
        );
        refused(c.smtp(&b64(password.as_bytes())), &what);
        // AUTH LOGIN with both as continuation lines.
        assert_eq!(code(&c.smtp("AUTH LOGIN")), 334);
        assert_eq!(code(&c.smtp(&b64(user.as_bytes()))), 334);
        refused(c.smtp(&b64(password.as_bytes())), &what);

        let mut p = LineClient::implicit_tls(gw.addr("pop3_proxy.listen_tls[0]"), &gw.cert);
        p.read_line();
        let reply = p.pop3(&format!("AUTH PLAIN {plain}"));
        if nul {
            malformed(reply, &what)
        } else {
            refused(reply, &what)
        }
        assert_eq!(p.pop3("AUTH PLAIN"), "+ \r\n");
        let reply = p.pop3(&plain);
        if nul {
            malformed(reply, &what)
        } else {
            refused(reply, &what)
        }
        // USER/PASS: a raw line cannot hold CR or LF (they end it), but every
        // other control character can.
        if !user.contains(['\r', '\n']) && !password.contains(['\r', '\n']) {
            assert!(p.pop3(&format!("USER {user}")).starts_with("+OK"));
            refused(p.pop3(&format!("PASS {password}")), &what);
        }
    }
    assert!(attempts >= cases.len() * 2);
    assert_eq!(recorder.connections(), 0, "a login reached the upstream");
    assert!(recorder.received().is_empty());

    // The recorder does see a clean login: the check above could fail.
    let mut c = smtp_session();
    let reply = c.smtp(&format!(
        "AUTH PLAIN {}",
        b64(format!("\0{name}\0pw").as_bytes())
    ));
    assert!(
        reply.starts_with("454 ") || reply.starts_with("535 "),
        "{reply}"
    );
    wait_until("the clean login reaches the upstream", || {
        recorder.connections() == 1
    });
}
