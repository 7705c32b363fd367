//! Real senders deliver to the journal receiver: Python's smtplib, swaks,
//! Perl's Net::SMTP (BDAT) and a throwaway Postfix relaying to the gateway.
//! Every message is then decrypted with `mailbox export` and compared byte
//! for byte, apart from the `Received:` headers added on the way.

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::gateway::Gateway;
use support::postfix::Postfix;
use support::{Sandbox, fixture, peer, repo, stderr, stdout, without_first_headers};

fn journal(label: &str) -> (Sandbox, Gateway, String, String) {
    let sb = Sandbox::for_gateway(label, json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let gw = Gateway::start(&sb);
    (sb, gw, id, password)
}

fn write_fixture(sb: &Sandbox, name: &str) -> std::path::PathBuf {
    let path = sb.dir.join(name);
    std::fs::write(&path, fixture(name)).unwrap();
    path
}

fn smtplib(python: &Path, mode: &str, port: u16, cert: &Path, to: &str, file: &Path, utf8: bool) {
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("tests/python/smtp_send.py"))
        .args([mode, "localhost", &port.to_string()])
        .arg(cert)
        .arg("sender@example.org")
        .arg(file)
        .args(["--to", to]);
    if utf8 {
        cmd.arg("--smtputf8");
    }
    let out = support::run(&mut cmd);
    assert!(
        out.status.success(),
        "smtplib {mode}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn python_smtplib_starttls_implicit_tls_and_smtputf8() {
    let Some(python) = peer("python3", &["python3"]) else {
        return;
    };
    let (sb, gw, id, password) = journal("interop-smtplib");
    let to = format!("{id}@localhost");
    let starttls = gw.addr("smtp.listen[0]").port();
    let implicit = gw.addr("smtp.listen_tls[0]").port();
    let sent = [
        ("starttls", starttls, "m365-journal-report.eml", false),
        ("ssl", implicit, "attachment-3mb.eml", false),
        ("starttls", starttls, "utf8-headers.eml", true),
        ("ssl", implicit, "long-lines.eml", false),
    ];
    for (mode, port, name, utf8) in sent {
        smtplib(
            &python,
            mode,
            port,
            &gw.cert,
            &to,
            &write_fixture(&sb, name),
            utf8,
        );
    }
    let exported = sb.export(&id, &password);
    assert_eq!(exported.len(), sent.len());
    for ((_, body, meta), (_, _, name, _)) in exported.iter().zip(sent) {
        assert!(
            without_first_headers(body, 1) == fixture(name).as_slice(),
            "{name} differs"
        );
        assert_eq!(meta["mail_from"], "sender@example.org");
        assert_eq!(meta["tls"], "TLSv1.3");
    }
}

#[test]
fn python_smtplib_without_tls_is_refused_when_tls_is_required() {
    let Some(python) = peer("python3", &["python3"]) else {
        return;
    };
    let (sb, gw, id, _) = journal("interop-smtplib-plain");
    let file = write_fixture(&sb, "m365-journal-report.eml");
    let out = support::run(
        Command::new(&python)
            .arg(repo().join("tests/python/smtp_send.py"))
            .args([
                "plain",
                "localhost",
                &gw.addr("smtp.listen[0]").port().to_string(),
            ])
            .arg(&gw.cert)
            .arg("sender@example.org")
            .arg(&file)
            .args(["--to", &format!("{id}@localhost")]),
    );
    assert!(!out.status.success());
    assert!(stdout(&out).contains("530"), "{}", stdout(&out));
    assert!(sb.message_files(&id).is_empty());
}

fn swaks(swaks: &Path, args: &[&str]) -> String {
    let out = support::run(Command::new(swaks).args(args));
    let transcript = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "swaks failed:\n{transcript}");
    transcript
}

#[test]
fn swaks_with_starttls_pipelining_and_an_attachment() {
    let Some(swaks_bin) = peer("swaks", &["swaks"]) else {
        return;
    };
    let (sb, gw, id, password) = journal("interop-swaks");
    let to = format!("{id}@localhost");
    let server = gw.addr("smtp.listen[0]").to_string();
    let cert = gw.cert.to_str().unwrap().to_string();
    let m365 = write_fixture(&sb, "m365-journal-report.eml");
    let data = format!("@{}", m365.display());
    let transcript = swaks(
        &swaks_bin,
        &[
            "--server",
            &server,
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            &cert,
            "--tls-sni",
            "localhost",
            "--from",
            "journal@contoso.example",
            "--to",
            &to,
            "--data",
            &data,
        ],
    );
    assert!(
        transcript.contains("250 2.0.0 Ok: queued as"),
        "{transcript}"
    );

    let transcript = swaks(
        &swaks_bin,
        &[
            "--server",
            &server,
            "--tls",
            "--pipeline",
            "--from",
            "a@example.org",
            "--to",
            &to,
            "--data",
            &data,
        ],
    );
    // Pipelined: MAIL, RCPT and DATA go out before the first of their replies comes back.
    let data_sent = transcript.find("~> DATA").expect("DATA in the transcript");
    let mail_answered = transcript
        .find("<~  250 2.1.0")
        .expect("MAIL reply in the transcript");
    assert!(
        data_sent < mail_answered,
        "swaks did not pipeline:\n{transcript}"
    );

    let attachment = write_fixture(&sb, "long-lines.eml");
    let attach = format!("@{}", attachment.display());
    let implicit = gw.addr("smtp.listen_tls[0]").to_string();
    swaks(
        &swaks_bin,
        &[
            "--server",
            &implicit,
            "--tlsc",
            "--from",
            "b@example.org",
            "--to",
            &to,
            "--attach-type",
            "application/octet-stream",
            "--attach",
            &attach,
        ],
    );

    let exported = sb.export(&id, &password);
    assert_eq!(exported.len(), 3);
    // swaks ends --data with one CRLF more than the file has.
    let mut sent = fixture("m365-journal-report.eml");
    sent.extend_from_slice(b"\r\n");
    assert!(without_first_headers(&exported[0].1, 1) == sent.as_slice());
    assert!(without_first_headers(&exported[1].1, 1) == sent.as_slice());
    let with_attachment = String::from_utf8_lossy(&exported[2].1).into_owned();
    assert!(
        with_attachment.contains("Content-Type: application/octet-stream"),
        "the attachment part is there"
    );
    assert_eq!(exported[2].2["mail_from"], "b@example.org");
}

#[test]
fn perl_net_smtp_sends_with_bdat_chunks() {
    let Some(perl) = peer("perl", &["perl"]) else {
        return;
    };
    let has_ssl = support::run(Command::new(&perl).args(["-MIO::Socket::SSL", "-e", "1"]))
        .status
        .success();
    if !has_ssl {
        support::missing_peer::<()>("Perl IO::Socket::SSL is not installed (run scripts/test)");
        return;
    }
    let (sb, gw, id, password) = journal("interop-bdat");
    let file = write_fixture(&sb, "attachment-3mb.eml");
    let out = support::run(
        Command::new(&perl)
            .arg(repo().join("tests/perl/bdat_send.pl"))
            .arg(gw.addr("smtp.listen[0]").port().to_string())
            .arg(&gw.cert)
            .args(["perl@example.org", &format!("{id}@localhost")])
            .arg(&file)
            .arg("1000000"),
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("chunks: 4"), "{}", stdout(&out));
    // The wire trace shows the chunks really went as BDAT.
    let trace = stderr(&out);
    assert_eq!(
        trace
            .lines()
            .filter(|l| l.ends_with(">>> BDAT 1000000"))
            .count(),
        3,
        "{trace}"
    );
    assert!(
        trace.lines().any(|l| l.ends_with(">>> BDAT 228980 LAST")),
        "{trace}"
    );
    assert!(!trace.contains(">>> DATA"), "{trace}");
    let exported = sb.export(&id, &password);
    assert!(without_first_headers(&exported[0].1, 1) == fixture("attachment-3mb.eml").as_slice());
}

#[test]
fn postfix_relays_journal_mail_over_tls() {
    let Some(python) = peer("python3", &["python3"]) else {
        return;
    };
    let (sb, gw, id, password) = journal("interop-postfix");
    let relay = gw.addr("smtp.listen[0]");
    let main_extra = format!(
        "relayhost = [{}]:{}\nsmtp_tls_security_level = encrypt\nsmtpd_relay_restrictions = permit_mynetworks, reject\n",
        relay.ip(),
        relay.port()
    );
    let started = Postfix::start_on(&sb.dir.join("postfix"), &main_extra, 1, |ports| {
        format!("127.0.0.1:{} inet n - n - - smtpd", ports[0])
    });
    let Some((postfix, ports)) = started else {
        return;
    };
    let smtpd_port = ports[0];
    postfix.wait_listening(format!("127.0.0.1:{smtpd_port}").parse().unwrap());
    let names = support::FIXTURES;
    for name in names {
        // Into Postfix over plain SMTP on loopback; Postfix relays to the gateway over TLS.
        smtplib(
            &python,
            "plain",
            smtpd_port,
            &gw.cert,
            &format!("{id}@localhost"),
            &write_fixture(&sb, name),
            name.starts_with("utf8"),
        );
    }
    // Postfix logs `status=sent` only after the gateway's 250, a moment
    // after the file is stored: wait for both.
    let sent = || {
        postfix
            .log()
            .matches("status=sent (250 2.0.0 Ok: queued as")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while sb.message_files(&id).len() < names.len() || sent() < names.len() {
        assert!(
            Instant::now() < deadline,
            "Postfix did not deliver everything:\n{}\n{}",
            postfix.log(),
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = postfix.log();
    assert_eq!(
        log.matches("status=sent (250 2.0.0 Ok: queued as").count(),
        names.len(),
        "{log}"
    );
    let exported = sb.export(&id, &password);
    let mut bodies: Vec<Vec<u8>> = exported
        .iter()
        .map(|(_, body, meta)| {
            assert_eq!(meta["tls"], "TLSv1.3", "Postfix used TLS");
            // Ours, then the one Postfix's smtpd added.
            without_first_headers(body, 2).to_vec()
        })
        .collect();
    let mut expected: Vec<Vec<u8>> = names.iter().map(|n| fixture(n)).collect();
    bodies.sort();
    expected.sort();
    assert!(
        bodies == expected,
        "a message changed on its way through Postfix and the gateway"
    );
}
