//! ACME against Let's Encrypt's test server (Debian's Pebble, with its mock
//! DNS mapping every name to loopback): issuance by HTTP-01 and by
//! TLS-ALPN-01, every listener serving the issued certificate from the next
//! handshake, the MTA-STS policy fetched with curl against it, renewal of a
//! short-lived certificate without a restart or a dropped session, and a
//! certificate authority that goes away.

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]

mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::gateway::{Gateway, LineClient, try_tls_as};
use support::pebble::Pebble;
use support::{Sandbox, run, stderr, stdout, wait_until};

const HOST: &str = "mail.example.test";
const STS_HOST: &str = "mta-sts.example.test";

/// A gateway configured for `pebble`, proving its names by `challenge`.
fn sandbox(label: &str, pebble: &Pebble, challenge: &str, retry_secs: u64) -> Sandbox {
    Sandbox::for_gateway(
        label,
        json!({
            "hostname": HOST,
            "mailbox_domain": "example.test",
            "console": { "listen": ["127.0.0.1:0"] },
            "acme": {
                "directory": pebble.directory,
                "ca_file": pebble.ca_file,
                "agree_to_terms": true,
                "contact": "postmaster@example.test",
                "challenge": challenge,
                "http_listen": [format!("127.0.0.1:{}", pebble.http_port)],
                "retry_secs": retry_secs,
                "timeout_secs": 10,
            },
            "mta_sts": {
                "listen": [format!("127.0.0.1:{}", pebble.tls_port)],
                "mode": "testing",
                "mx": [HOST, "standby.example.test"],
            },
        }),
    )
}

/// The leaf certificate `addr` serves to a client asking for `name`,
/// verified against `root` (panics when it does not verify).
fn served_leaf(addr: SocketAddr, name: &str, root: &Path) -> Vec<u8> {
    try_served_leaf(addr, name, root).unwrap_or_else(|e| panic!("{addr} as {name}: {e}"))
}

fn try_served_leaf(addr: SocketAddr, name: &str, root: &Path) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let stream = try_tls_as(tcp, root, name)?;
    Ok(stream.conn.peer_certificates().unwrap()[0].to_vec())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02X}");
        s
    })
}

fn curl_policy(port: u16, root: &Path) -> std::process::Output {
    run(Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "20", "--resolve"])
        .arg(format!("{STS_HOST}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(root)
        .arg(format!("https://{STS_HOST}:{port}/.well-known/mta-sts.txt")))
}

#[test]
fn issues_by_http01_then_by_tls_alpn01_and_every_listener_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pebble) = Pebble::start(&dir.path().join("pebble"), 7 * 86_400) else {
        return;
    };
    let sb = sandbox("acme-issue", &pebble, "http-01", 600);
    let gw = Gateway::start(&sb);
    gw.wait_for_log("ACME: certificate for", Duration::from_secs(90));
    let log = gw.log();
    for name in [HOST, STS_HOST] {
        assert!(
            log.contains(&format!("ACME: proving {name} by http-01")),
            "{log}"
        );
    }
    // Each name was fetched from the HTTP-01 listener by Pebble itself.
    let fetched = log
        .lines()
        .filter(|l| l.contains("acme-http ") && l.contains("GET /.well-known/acme-challenge/"))
        .filter(|l| l.ends_with(" 200"))
        .count();
    assert!(fetched >= 2, "{log}");
    let root = pebble.root(&dir.path().join("root.pem"));
    let https = SocketAddr::from(([127, 0, 0, 1], pebble.tls_port));
    let first = served_leaf(gw.addr("smtp.listen_tls[0]"), HOST, &root);
    for key in [
        "pop3.listen_tls[0]",
        "smtp_proxy.listen_tls[0]",
        "console.listen[0]",
    ] {
        assert_eq!(served_leaf(gw.addr(key), HOST, &root), first, "{key}");
    }
    assert_eq!(served_leaf(https, STS_HOST, &root), first);
    // STARTTLS too.
    let mut smtp = LineClient::plain(gw.addr("smtp.listen[0]"));
    smtp.smtp_reply();
    smtp.smtp("EHLO client.example");
    let (cert, key) = (
        sb.data().join("tls/acme.pem"),
        sb.data().join("tls/acme-key.pem"),
    );
    for file in [&cert, &key, &sb.data().join("tls/acme-account.pem")] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }

    // The MTA-STS policy, through curl, verified against Pebble's root.
    let out = curl_policy(pebble.tls_port, &root);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "version: STSv1\r\nmode: testing\r\nmx: {HOST}\r\nmx: standby.example.test\r\nmax_age: 604800\r\n"
        )
    );
    // Anything else is a 404.
    let out = run(Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
            "--resolve",
        ])
        .arg(format!("{STS_HOST}:{}:127.0.0.1", pebble.tls_port))
        .arg("--cacert")
        .arg(&root)
        .arg(format!("https://{STS_HOST}:{}/etc/passwd", pebble.tls_port)));
    assert_eq!(stdout(&out), "404");

    // sealpost dns: the TLSA record is the served key's, as openssl sees it.
    let out = sb.run(&["dns"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = stdout(&out);
    let tlsa = records
        .lines()
        .find(|l| l.starts_with("_25._tcp.mail.example.test. 3600 IN TLSA 3 1 1 "))
        .unwrap_or_else(|| panic!("{records}"));
    let pipeline = format!(
        "openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform DER | sha256sum",
        cert.display()
    );
    let openssl = run(Command::new("sh").arg("-c").arg(&pipeline));
    let digest = stdout(&openssl)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(digest.len(), 64, "{}", stderr(&openssl));
    assert!(tlsa.ends_with(&digest), "{tlsa} vs {digest}");
    assert!(
        records.contains("example.test. 3600 IN MX 10 mail.example.test."),
        "{records}"
    );
    assert!(
        records.contains("example.test. 3600 IN MX 20 standby.example.test."),
        "{records}"
    );
    let policy_id = |records: &str| {
        records
            .lines()
            .find(|l| l.starts_with("_mta-sts.example.test. 3600 IN TXT \"v=STSv1; id="))
            .unwrap_or_else(|| panic!("{records}"))
            .to_string()
    };
    let testing_id = policy_id(&records);

    // sealpost backup copies the account key, the certificate key and the chain.
    let dest = dir.path().join("backups");
    let out = sb.run(&["backup", dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let snapshot = std::fs::canonicalize(dest.join("latest")).unwrap();
    for file in ["acme.pem", "acme-key.pem", "acme-account.pem"] {
        assert_eq!(
            std::fs::read(snapshot.join("tls").join(file)).unwrap(),
            std::fs::read(sb.data().join("tls").join(file)).unwrap(),
            "{file}"
        );
    }

    // The status shows what ACME did, and nothing needs attention.
    let out = sb.run(&["status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["acme"]["failures"], 0, "{report}");
    assert_eq!(report["certificate"]["self_signed"], false, "{report}");

    // Now by TLS-ALPN-01, on the HTTPS listener alone: a renewal asked for.
    drop(gw);
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sb.config()).unwrap()).unwrap();
    config["acme"]["challenge"] = json!("tls-alpn-01");
    config["acme"]["http_listen"] = json!([]);
    config["mta_sts"]["mode"] = json!("enforce");
    std::fs::write(sb.config(), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let out = sb.run(&["cert", "renew"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A new account: Pebble may reuse the first account's valid
    // authorizations, and then no TLS-ALPN-01 validation would happen.
    std::fs::remove_file(sb.data().join("tls/acme-account.pem")).unwrap();
    let gw = Gateway::start(&sb);
    // Served from the start: the issued certificate, not a self-signed one.
    assert_eq!(
        served_leaf(gw.addr("pop3.listen_tls[0]"), HOST, &root),
        first
    );
    gw.wait_for_log("ACME: certificate for", Duration::from_secs(90));
    let log = gw.log();
    for name in [HOST, STS_HOST] {
        assert!(
            log.contains(&format!("ACME: proving {name} by tls-alpn-01")),
            "{log}"
        );
        assert!(
            log.contains(&format!("ACME: {name} proven by tls-alpn-01")),
            "{log}"
        );
        assert!(
            log.contains(&format!(
                "TLS-ALPN-01: validation certificate served for {name}"
            )),
            "{log}"
        );
    }
    let second = served_leaf(gw.addr("pop3.listen_tls[0]"), HOST, &root);
    assert_ne!(
        second, first,
        "a new certificate is served without a restart"
    );
    assert_eq!(served_leaf(https, STS_HOST, &root), second);
    // The key was kept (a published TLSA record stays valid).
    // The policy changed, and with it its id.
    let out = curl_policy(pebble.tls_port, &root);
    assert!(
        stdout(&out).contains("mode: enforce\r\n"),
        "{}",
        stdout(&out)
    );
    let enforce_id = policy_id(&stdout(&sb.run(&["dns"])));
    assert_ne!(enforce_id, testing_id);
    let spki = |der: &[u8]| {
        let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
        c.public_key().raw.to_vec()
    };
    assert_eq!(spki(&first), spki(&second));
    eprintln!("issued {} then {}", sha256_hex(&first), sha256_hex(&second));
    // Pebble's side: every authorization of both orders validated anew
    // (no reuse), HTTP-01 fetched from the gateway's listener.
    let pebble_log = pebble.log();
    assert_eq!(
        pebble_log
            .matches("set VALID by completed challenge")
            .count(),
        4,
        "{pebble_log}"
    );
    assert!(
        pebble_log.contains(&format!("Attempting to validate w/ HTTP: http://{HOST}:")),
        "{pebble_log}"
    );
}

#[test]
fn a_short_certificate_is_renewed_without_a_restart_and_a_lost_ca_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut pebble) = Pebble::start(&dir.path().join("pebble"), 45) else {
        return;
    };
    let sb = sandbox("acme-renew", &pebble, "http-01", 1);
    let gw = Gateway::start(&sb);
    gw.wait_for_log("ACME: certificate for", Duration::from_secs(90));
    let root = pebble.root(&dir.path().join("root.pem"));
    let pop3 = gw.addr("pop3.listen_tls[0]");
    let first = served_leaf(pop3, HOST, &root);
    // A session open across the swap.
    let mut open = LineClient::implicit_tls_as(pop3, &root, HOST);
    assert!(open.read_line().unwrap().starts_with("+OK"));
    // A third of 45 s left: renewed at about 30 s, by the running gateway.
    gw.wait_for_log_count("ACME: certificate for", 2, Duration::from_secs(90));
    let log = gw.log();
    assert!(log.contains("a third of its lifetime is left"), "{log}");
    let second = served_leaf(pop3, HOST, &root);
    assert_ne!(first, second);
    assert!(
        open.pop3("CAPA").starts_with("+OK"),
        "the open session goes on"
    );

    // The certificate authority goes away: the next renewal fails, again
    // and again with a growing back-off, and the old certificate stays.
    pebble.stop();
    let out = sb.run(&["cert", "renew"]);
    assert!(out.status.success(), "{}", stderr(&out));
    gw.wait_for_log("failed (2 in a row)", Duration::from_secs(90));
    let log = gw.log();
    assert!(
        log.contains("failed (1 in a row), the current certificate stays; next try in 1 s"),
        "{log}"
    );
    assert!(
        log.contains("failed (2 in a row), the current certificate stays; next try in 2 s"),
        "{log}"
    );
    assert_eq!(served_leaf(pop3, HOST, &root), second);
    let out = sb.run(&["status"]);
    assert_eq!(out.status.code(), Some(4), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("the ACME certificate renewal failed"),
        "{}",
        stdout(&out)
    );
    wait_until("the state records the failures", || {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(sb.data().join("tls/acme-state.json")).unwrap())
                .unwrap();
        state["failures"].as_u64() >= Some(2)
            && state["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("acme.directory"))
    });
}

/// Removes `/etc/netns/<name>/` (the namespace's own resolv.conf) on drop.
struct NetnsEtc(std::path::PathBuf);

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The independent MTA-STS client (postfix-mta-sts-resolver's
/// `mta-sts-query`) fetches and parses the policy, in a network namespace
/// of the test's own: it has no option for a DNS server, a CA or a port, so
/// challtestsrv answers on port 53 there (through the namespace's own
/// resolv.conf), the MTA-STS listener is on 443, and `SSL_CERT_FILE` is
/// Pebble's root. The certificate is proven by TLS-ALPN-01 on that same
/// port, then its key rolled over.
#[test]
fn an_independent_mta_sts_client_reads_the_served_policy_and_the_key_rolls_over() {
    let Some(query) = support::peer("mta-sts-query", &["mta-sts-query"]) else {
        return;
    };
    if !support::is_root() || support::peer("ip (iproute2)", &["ip"]).is_none() {
        support::missing_peer::<()>(
            "a network namespace of the test's own needs root and iproute2",
        );
        return;
    }
    let netns = support::netns::LoopbackOnly::new();
    let etc = NetnsEtc(Path::new("/etc/netns").join(&netns.name));
    std::fs::create_dir_all(&etc.0).unwrap();
    std::fs::write(etc.0.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    // From here on this thread, and every process and thread it starts,
    // lives in the namespace: Pebble, the gateway, curl, the queries.
    netns.enter_this_thread();
    let dir = tempfile::tempdir().unwrap();
    let fixed = support::pebble::Fixed {
        dns: Some(53),
        tls: Some(443),
    };
    let Some(pebble) = Pebble::start_with(&dir.path().join("pebble"), 7 * 86_400, fixed) else {
        return;
    };
    let sb = sandbox("acme-sts-query", &pebble, "tls-alpn-01", 600);
    let gw = Gateway::start(&sb);
    gw.wait_for_log("ACME: certificate for", Duration::from_secs(90));
    assert!(
        gw.log()
            .contains(&format!("ACME: {STS_HOST} proven by tls-alpn-01"))
    );
    let root = pebble.root(&dir.path().join("root.pem"));
    let first = served_leaf(gw.addr("pop3.listen_tls[0]"), HOST, &root);

    // The TXT record `sealpost dns` prints, published in the mock DNS.
    let records = stdout(&sb.run(&["dns"]));
    let txt = records
        .lines()
        .find_map(|l| l.strip_prefix("_mta-sts.example.test. 3600 IN TXT "))
        .unwrap_or_else(|| panic!("{records}"))
        .split(';')
        .take(2)
        .collect::<Vec<_>>()
        .join(";");
    let txt = txt.trim_matches('"').trim().to_string();
    let id = txt
        .strip_prefix("v=STSv1; id=")
        .unwrap_or_else(|| panic!("{txt}"))
        .to_string();
    pebble.set_txt("_mta-sts.example.test", &txt);
    let ask = |known: Option<&str>| {
        let mut command = netns.command(&query);
        command.args(["-v", "error", "example.test"]);
        if let Some(known) = known {
            command.arg(known);
        }
        command.env("SSL_CERT_FILE", &root);
        let out = support::run_with_timeout(&mut command, b"", Duration::from_secs(60));
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        stdout(&out)
    };
    let answer = ask(None);
    assert!(answer.contains("STSFetchResult.VALID"), "{answer}");
    assert!(answer.contains(&format!("'{id}'")), "{answer}");
    assert!(answer.contains("'mode': 'testing'"), "{answer}");
    assert!(
        answer.contains(&format!("'mx': ['{HOST}', 'standby.example.test']")),
        "{answer}"
    );
    assert!(answer.contains("'max_age': "), "{answer}");
    // With the id it already knows, the client does not fetch again.
    let again = ask(Some(&id));
    assert!(again.contains("STSFetchResult.NOT_CHANGED"), "{again}");

    // Key rollover: the next key made, its TLSA record printed beside the
    // current one, then the certificate ordered with it.
    let out = sb.run(&["cert", "next-key"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tlsa = |records: &str| -> Vec<String> {
        records
            .lines()
            .filter(|l| l.starts_with("_25._tcp.mail.example.test. 3600 IN TLSA 3 1 1 "))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .collect()
    };
    let during = tlsa(&stdout(&sb.run(&["dns"])));
    assert_eq!(during.len(), 2, "the current key and the next: {during:?}");
    let out = sb.run(&["cert", "renew", "--rotate-key"]);
    assert!(out.status.success(), "{}", stderr(&out));
    gw.wait_for_log_count("ACME: certificate for", 2, Duration::from_secs(90));
    gw.wait_for_log(
        "the next key is now the certificate key",
        Duration::from_secs(10),
    );
    let second = served_leaf(gw.addr("pop3.listen_tls[0]"), HOST, &root);
    let spki = |der: &[u8]| {
        let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
        sha256_hex(c.public_key().raw).to_ascii_lowercase()
    };
    assert_ne!(spki(&first), spki(&second), "a new key is served");
    assert_eq!(spki(&first), during[0].to_ascii_lowercase());
    assert_eq!(spki(&second), during[1].to_ascii_lowercase());
    let after = tlsa(&stdout(&sb.run(&["dns"])));
    assert_eq!(after, vec![during[1].clone()], "only the new key now");
    assert!(!sb.data().join("tls/acme-next-key.pem").exists());
}

/// Two nodes on one data directory behind a balancer that sends the CA's
/// HTTP-01 requests to each in turn: one order per renewal, the other node
/// answers the challenges it did not publish, and both serve the result.
#[test]
fn two_nodes_order_once_answer_each_others_challenges_and_serve_the_same_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pebble) = Pebble::start(&dir.path().join("pebble"), 7 * 86_400) else {
        return;
    };
    let ports = [support::postfix::free_port(), support::postfix::free_port()];
    let balancer = format!(
        "frontend acme\n  bind 127.0.0.1:{}\n  default_backend nodes\nbackend nodes\n  balance roundrobin\n  server a 127.0.0.1:{}\n  server b 127.0.0.1:{}\n",
        pebble.http_port, ports[0], ports[1]
    );
    let front = SocketAddr::from(([127, 0, 0, 1], pebble.http_port));
    let Some(_haproxy) = support::haproxy::Haproxy::start(dir.path(), &balancer, front) else {
        return;
    };
    let a = sandbox("acme-node-a", &pebble, "http-01", 1);
    let node = |sb: &Sandbox, name: &str, port: u16, data: Option<&Sandbox>| {
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(sb.config()).unwrap()).unwrap();
        config["node"] = json!(name);
        config["acme"]["http_listen"] = json!([format!("127.0.0.1:{port}")]);
        config["mta_sts"]["listen"] = json!([]);
        if let Some(first) = data {
            config["data_dir"] = json!(first.data());
        }
        std::fs::write(sb.config(), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    };
    node(&a, "a", ports[0], None);
    let b = sandbox("acme-node-b", &pebble, "http-01", 1);
    node(&b, "b", ports[1], Some(&a));
    let (ga, gb) = std::thread::scope(|s| {
        let ga = s.spawn(|| Gateway::start(&a));
        let gb = s.spawn(|| Gateway::start(&b));
        (ga.join().unwrap(), gb.join().unwrap())
    });
    let orders = || {
        ga.log().matches("ACME: ordering a certificate").count()
            + gb.log().matches("ACME: ordering a certificate").count()
    };
    let issued = || {
        ga.log().matches("ACME: certificate for").count()
            + gb.log().matches("ACME: certificate for").count()
    };
    wait_until("one node has the certificate", || issued() == 1);
    let root = pebble.root(&dir.path().join("root.pem"));
    let (ordered, other) = if ga.log().contains("ACME: certificate for") {
        (&ga, &gb)
    } else {
        (&gb, &ga)
    };
    let answered = |gw: &Gateway| {
        gw.log()
            .lines()
            .filter(|l| l.contains("GET /.well-known/acme-challenge/") && l.ends_with(" 200"))
            .count()
    };
    assert!(answered(ordered) >= 1, "{}", ordered.log());
    assert!(
        answered(other) >= 1,
        "the node that did not order answered a challenge: {}",
        other.log()
    );
    // Both serve it (the other node within its next look).
    let first = served_leaf(ordered.addr("pop3.listen_tls[0]"), HOST, &root);
    wait_until("the other node serves the certificate", || {
        try_served_leaf(other.addr("pop3.listen_tls[0]"), HOST, &root).ok() == Some(first.clone())
    });
    assert_eq!(orders(), 1, "one order for the cluster");

    // A renewal asked of the cluster: still one order, both serve it.
    let out = a.run(&["cert", "renew"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the renewed certificate", || issued() == 2);
    let second = served_leaf(ordered.addr("pop3.listen_tls[0]"), HOST, &root);
    let second = if second == first {
        served_leaf(other.addr("pop3.listen_tls[0]"), HOST, &root)
    } else {
        second
    };
    assert_ne!(second, first);
    for gw in [&ga, &gb] {
        wait_until("both nodes serve the renewed certificate", || {
            served_leaf(gw.addr("pop3.listen_tls[0]"), HOST, &root) == second
        });
    }
    assert_eq!(orders(), 2, "one order per renewal");
}
