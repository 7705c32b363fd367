//! `sealpost dns --check` against a resolver the test controls: dnsmasq
//! serving the records on port 53 of a network namespace of the test's own,
//! found through that namespace's resolv.conf (`ip netns exec`), as the
//! system resolver is on a real machine. A primary and a standby gateway
//! listen on port 25 there, so that the check can see whether each MX
//! serves a certificate a sender enforcing MTA-STS accepts.

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]

mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::ca::TestCa;
use support::gateway::Gateway;
use support::netns::LoopbackOnly;
use support::{Sandbox, peer, run_with_timeout, sealpost_bin, stderr, stdout};

/// Removes `/etc/netns/<name>/` on drop.
struct NetnsEtc(PathBuf);

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A dnsmasq answering only from its command line, killed on drop.
struct Dnsmasq(Child);

impl Dnsmasq {
    /// Starts it on 127.0.0.1:53 of the calling thread's namespace.
    fn start(program: &Path, records: &[String], log: &Path) -> Dnsmasq {
        let child = Command::new(program)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                // The zone is local: a name or type it has no record for
                // is NXDOMAIN or NODATA, as from a real authority, not
                // REFUSED for want of an upstream server.
                "--local=/example.test/",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--port=53",
                "--pid-file=",
                "--user=root",
                "--log-facility=-",
                "--log-queries",
            ])
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start dnsmasq");
        let mut dnsmasq = Dnsmasq(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = SocketAddr::from(([127, 0, 0, 1], 53));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline && dnsmasq.0.try_wait().unwrap().is_none(),
                "dnsmasq did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        dnsmasq
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dnsmasq options publishing what `sealpost dns` printed, except the
/// lines `skip` matches; the two gateways' addresses as host records.
fn publish(printed: &str, skip: &[&str], replace: &[(&str, &str)]) -> Vec<String> {
    let mut out = vec![
        "--host-record=mail.example.test,127.0.0.1".to_string(),
        "--host-record=standby.example.test,127.0.0.2".to_string(),
    ];
    for line in printed.lines().filter(|l| !l.starts_with(';')) {
        if skip.iter().any(|s| line.contains(s)) {
            continue;
        }
        let mut line = line.to_string();
        for (from, to) in replace {
            line = line.replace(from, to);
        }
        let fields: Vec<&str> = line.splitn(5, ' ').collect();
        let [owner, _ttl, "IN", kind, data] = fields.as_slice() else {
            panic!("{line}");
        };
        let owner = owner.trim_end_matches('.');
        out.push(match *kind {
            "MX" => {
                let (preference, exchange) = data.split_once(' ').unwrap();
                format!(
                    "--mx-host={owner},{},{preference}",
                    exchange.trim_end_matches('.')
                )
            }
            "CNAME" => format!("--cname={owner},{}", data.trim_end_matches('.')),
            "TXT" => format!("--txt-record={owner},{}", data.trim_matches('"')),
            // RFC 6698 §2.1: usage, selector, matching type, then the data.
            "TLSA" => {
                let digest = data.strip_prefix("3 1 1 ").unwrap();
                format!("--dns-rr={owner},52,030101{digest}")
            }
            other => panic!("unexpected record {other} in {line}"),
        });
    }
    out
}

#[test]
fn dns_check_finds_missing_and_stale_records_and_says_when_enforce_is_safe() {
    let Some(dnsmasq) = peer("dnsmasq", &["dnsmasq", "/usr/sbin/dnsmasq"]) else {
        return;
    };
    if !support::is_root() || peer("ip (iproute2)", &["ip"]).is_none() {
        support::missing_peer::<()>(
            "a network namespace of the test's own needs root and iproute2",
        );
        return;
    }
    let netns = LoopbackOnly::new();
    let etc = NetnsEtc(Path::new("/etc/netns").join(&netns.name));
    std::fs::create_dir_all(&etc.0).unwrap();
    std::fs::write(etc.0.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    // From here on this thread, and every process it starts, lives in the
    // namespace, where port 25 and 53 are free.
    netns.enter_this_thread();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "public");
    let (cert, key) = ca.issue(
        dir.path(),
        "primary",
        &["mail.example.test", "mta-sts.example.test"],
    );
    let primary = Sandbox::for_gateway(
        "dns-check-primary",
        json!({
            "hostname": "mail.example.test",
            "mailbox_domain": "example.test",
            "smtp": { "listen": ["127.0.0.1:25"], "listen_tls": [] },
            "tls": { "cert_file": cert, "key_file": key },
            "mta_sts": {
                "listen": ["127.0.0.1:443"],
                "mx": ["mail.example.test", "standby.example.test"],
                "tls_rpt": "mailto:tls-reports@example.test",
            },
        }),
    );
    let standby = Sandbox::for_gateway(
        "dns-check-standby",
        json!({
            "hostname": "standby.example.test",
            "mailbox_domain": "example.test",
            "smtp": { "listen": ["127.0.0.2:25"], "listen_tls": [] },
        }),
    );
    let _primary_gw = Gateway::start(&primary);
    let standby_gw = Gateway::start(&standby);
    let out = primary.run(&["dns"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let check = || {
        run_with_timeout(
            netns
                .command(sealpost_bin())
                .arg("-c")
                .arg(primary.config())
                .args(["dns", "--check"])
                .env("SSL_CERT_FILE", &ca.cert_file),
            b"",
            Duration::from_secs(120),
        )
    };
    let log = dir.path().join("dnsmasq.log");

    // Everything published; the standby's certificate is self-signed.
    let server = Dnsmasq::start(&dnsmasq, &publish(&printed, &[], &[]), &log);
    let out = check();
    let report = stdout(&out);
    assert!(
        out.status.success(),
        "{report}{}\n{}",
        stderr(&out),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for record in [
        "example.test. 3600 IN MX 10 mail.example.test.",
        "example.test. 3600 IN MX 20 standby.example.test.",
        "mta-sts.example.test. 3600 IN CNAME mail.example.test.",
        "_mta-sts.example.test. 3600 IN TXT \"v=STSv1; id=",
        "_smtp._tls.example.test. 3600 IN TXT \"v=TLSRPTv1; rua=mailto:tls-reports@example.test\"",
        "_25._tcp.mail.example.test. 3600 IN TLSA 3 1 1 ",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("ok ") && l.contains(record)),
            "{record}:\n{report}"
        );
    }
    assert!(
        report.contains("ok       mail.example.test A/AAAA: resolves to 127.0.0.1"),
        "{report}"
    );
    assert!(report.contains("enforce mode is NOT safe"), "{report}");
    assert!(
        report.contains("standby.example.test (127.0.0.2): TLS handshake failed"),
        "{report}"
    );
    assert!(
        !report.contains("mail.example.test (127.0.0.1)"),
        "the primary passes: {report}"
    );
    assert!(report.contains("keep mta_sts.mode at testing"), "{report}");
    drop(server);

    // A stale policy id, the standby's MX missing, a TLSA record for
    // another key.
    let printed_id = printed
        .lines()
        .find_map(|l| l.split("id=").nth(1))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let other_digest = "ab".repeat(32);
    let tlsa_line = printed
        .lines()
        .find(|l| l.contains(" TLSA 3 1 1 "))
        .unwrap();
    let served_digest = tlsa_line.rsplit(' ').next().unwrap();
    let server = Dnsmasq::start(
        &dnsmasq,
        &publish(
            &printed,
            &["MX 20 standby"],
            &[
                (&printed_id, "0123456789abcdef0123"),
                (served_digest, &other_digest),
            ],
        ),
        &log,
    );
    let out = check();
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}{}", stderr(&out));
    assert!(
        report.contains(
            "MISSING  example.test. 3600 IN MX 20 standby.example.test.  (the MX records are 10 mail.example.test)"
        ),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("STALE    _mta-sts.example.test.")
                && l.contains("published \"v=STSv1; id=0123456789abcdef0123\"")),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("STALE    _25._tcp.mail.example.test.")
                && l.contains("do not match the served key")),
        "{report}"
    );
    assert!(
        stderr(&out).contains("3 problem(s) in DNS"),
        "{}",
        stderr(&out)
    );
    drop(server);

    // The standby gets a certificate from the CA: enforce is safe.
    drop(standby_gw);
    let (cert, key) = ca.issue(dir.path(), "standby", &["standby.example.test"]);
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(standby.config()).unwrap()).unwrap();
    config["tls"] = json!({ "cert_file": cert, "key_file": key });
    std::fs::write(
        standby.config(),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    let _standby_gw = Gateway::start(&standby);
    let _server = Dnsmasq::start(&dnsmasq, &publish(&printed, &[], &[]), &log);
    let out = check();
    let report = stdout(&out);
    assert!(out.status.success(), "{report}{}", stderr(&out));
    assert!(
        report.contains(
            "enforce mode is safe: every MX serves a certificate from a trusted CA for its name on port 25"
        ),
        "{report}"
    );
    assert!(
        !report.contains("MISSING") && !report.contains("STALE"),
        "{report}"
    );
}
