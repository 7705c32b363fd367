//! The chain of custody against a real time-stamping authority (`openssl ts
//! -reply` behind `tests/python/tsa_server.py`, with a TSA certificate made
//! here, its timeStamping EKU critical), checked by both verifiers:
//! `sealpost custody verify` and the independent `scripts/verify-custody`
//! (Python's standard library, `openssl ts`, PyNaCl for the plaintext).
//! They must agree on every count of every case.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::gateway::{Gateway, LineClient, expect};
use support::{Sandbox, repo, run_with_timeout, stderr, stdout, wait_until};

const TIMEOUT: Duration = Duration::from_secs(60);

fn openssl(args: &[&str], dir: &Path) {
    let out = run_with_timeout(
        Command::new("openssl").args(args).current_dir(dir),
        b"",
        TIMEOUT,
    );
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

/// A TSA: its CA, its signing certificate, and the HTTP server in `mode`.
struct Tsa {
    dir: PathBuf,
    child: Child,
    port: u16,
}

const TSA_CNF: &str = "[ tsa ]\ndefault_tsa = tsa_config\n[ tsa_config ]\ndir = .\n\
serial = $dir/serial\ncrypto_device = builtin\nsigner_digest = sha256\n\
default_policy = 1.2.3.4.1\ndigests = sha256\naccuracy = secs:1\nordering = no\n\
tsa_name = no\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n\
[ ext_tsa ]\nbasicConstraints = critical,CA:false\nkeyUsage = critical,digitalSignature\n\
extendedKeyUsage = critical,timeStamping\n";

impl Tsa {
    fn start(sb: &Sandbox, mode: &str) -> Tsa {
        let dir = sb.dir.join(format!("tsa-{mode}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("tsa.cnf"), TSA_CNF).unwrap();
        fs::write(dir.join("serial"), "01\n").unwrap();
        for (who, cn) in [("ca", "Test TSA CA"), ("otherca", "Other CA")] {
            let subj = format!("/CN={cn}");
            let (key, pem) = (format!("{who}.key"), format!("{who}.pem"));
            openssl(
                &[
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem,
                    "-subj", &subj, "-days", "30",
                ],
                &dir,
            );
        }
        for (who, ca) in [("tsa", "ca"), ("other", "otherca")] {
            let (key, csr, pem) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.pem"),
            );
            openssl(
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    "/CN=Test TSA",
                ],
                &dir,
            );
            let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
            openssl(
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_pem,
                    "-CAkey",
                    &ca_key,
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "30",
                    "-extfile",
                    "tsa.cnf",
                    "-extensions",
                    "ext_tsa",
                ],
                &dir,
            );
        }
        let port_file = dir.join("port");
        let child = Command::new("python3")
            .arg(repo().join("tests/python/tsa_server.py"))
            .arg(&port_file)
            .arg(&dir)
            .arg(mode)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        wait_until("the TSA listens", || port_file.exists());
        let port = fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Tsa { dir, child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Drop for Tsa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway sandbox whose custody log is anchored by `tsa`, with small
/// segments and the outside copy of the tokens in `<sandbox>/anchors-copy`.
fn sandbox(label: &str, tsa: &Tsa, extra: Value) -> Sandbox {
    let sb = Sandbox::for_gateway(label, json!({ "smtp": { "require_tls": false } }));
    let mut config: Value = serde_json::from_slice(&fs::read(sb.config()).unwrap()).unwrap();
    support::merge(
        &mut config,
        json!({ "custody": {
            "segment_bytes": 4096,
            "tsa": { "url": tsa.url(), "ca_file": tsa.ca(), "timeout_secs": 3 },
            "anchor_copy_dir": sb.dir.join("anchors-copy"),
        }}),
    );
    support::merge(&mut config, extra);
    fs::write(sb.config(), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    sb
}

fn send(gw: &Gateway, to: &str, subject: &str) -> String {
    let mut c = LineClient::plain(gw.addr("smtp.listen[0]"));
    expect(&c.smtp_reply(), "220 ");
    expect(&c.smtp("EHLO custody.example"), "250");
    let body = format!("Subject: {subject}\r\n\r\n..a dot-stuffed line\r\nbody of {subject}\r\n");
    let reply = c.smtp_send("journal@example.org", to, body.as_bytes());
    c.smtp("QUIT");
    reply
}

fn deliver(sb: &Sandbox, id: &str, subject: &str) {
    let body = format!("Subject: {subject}\n\nby the command line\n");
    let out = sb.run_with_input(&["mailbox", "deliver", id], body.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
}

/// poplib retrieves and deletes everything into `out` (the archive's export).
fn retrieve(sb: &Sandbox, gw: &Gateway, id: &str, password: &str, out: &Path) {
    let o = run_with_timeout(
        Command::new("python3")
            .arg(repo().join("tests/python/pop3_fetch.py"))
            .args(["ssl", "localhost"])
            .arg(gw.addr("pop3.listen_tls[0]").port().to_string())
            .arg(&gw.cert)
            .arg(id)
            .arg(sb.password_file(password))
            .arg(out)
            .arg("delete"),
        b"",
        TIMEOUT,
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

/// Both verifiers on `data` with `args`; asserts they agree, returns
/// (exit code, JSON report).
fn verify(sb: &Sandbox, data: &Path, args: &[&str]) -> (i32, Value) {
    let mut config: Value = serde_json::from_slice(&fs::read(sb.config()).unwrap()).unwrap();
    config["data_dir"] = json!(data);
    let file = sb.dir.join(format!(
        "verify-{}.json",
        fs::read_dir(&sb.dir).unwrap().count()
    ));
    fs::write(&file, serde_json::to_vec(&config).unwrap()).unwrap();
    let ours = run_with_timeout(
        Command::new(support::sealpost_bin())
            .args(["custody", "verify", "--json", "-c"])
            .arg(&file)
            .args(args),
        b"",
        TIMEOUT,
    );
    let python = support::python_with_nacl().unwrap_or_else(|| PathBuf::from("python3"));
    let mut independent = Command::new(python);
    independent
        .arg(repo().join("scripts/verify-custody"))
        .arg("--json");
    if let Some(ca) = config["custody"]["tsa"]["ca_file"].as_str() {
        independent.args(["--tsa-ca", ca]);
    }
    if let Some(copy) = config["custody"]["anchor_copy_dir"].as_str() {
        independent.args(["--anchors", copy]);
    }
    let theirs = run_with_timeout(independent.args(args).arg(data), b"", TIMEOUT);
    let parse = |o: &Output, who: &str| -> Value {
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{who}: {e}: {}{}", stdout(o), stderr(o)))
    };
    let (a, b) = (parse(&ours, "sealpost"), parse(&theirs, "verify-custody"));
    assert_eq!(
        a["counts"], b["counts"],
        "the verifiers disagree:\n{a:#}\n{b:#}"
    );
    assert_eq!(a["complete"], b["complete"]);
    assert_eq!(
        ours.status.code(),
        theirs.status.code(),
        "{}",
        stderr(&theirs)
    );
    (ours.status.code().unwrap(), a)
}

fn count(report: &Value, category: &str) -> u64 {
    report["counts"][category].as_u64().unwrap_or(0)
}

fn anchor(sb: &Sandbox) -> String {
    let out = sb.run(&["custody", "anchor"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// A normal day: journal mail, `mailbox deliver`, retrieval with poplib and
/// fetchmail, anchors at an explicit request and at shutdown, a standby's
/// mail merged in and released: both verifiers say complete, the plaintext
/// of every message poplib retrieved is the one the log sealed, and
/// `openssl ts -verify` accepts every token on its own.
#[test]
fn a_normal_day_is_complete_for_both_verifiers() {
    let sb0 = Sandbox::new("custody-tsa", json!({}));
    let tsa = Tsa::start(&sb0, "ok");
    let sb = sandbox("custody-day", &tsa, json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let to = format!("{id}@localhost");
    let gw = Gateway::start(&sb);
    for i in 0..3 {
        expect(&send(&gw, &to, &format!("journal {i}")), "250");
    }
    deliver(&sb, &id, "by pipe");
    assert!(anchor(&sb).contains("Anchored entry"));
    let export = sb.dir.join("export");
    retrieve(&sb, &gw, &id, &password, &export);
    expect(&send(&gw, &to, "journal late"), "250");
    let status = sb.run(&["status"]);
    assert!(
        stdout(&status).contains("Custody:") && stdout(&status).contains("last anchor at entry"),
        "{}",
        stdout(&status)
    );
    assert!(gw.stop().success());

    // The standby's mail, merged in and released.
    let standby = Sandbox::for_gateway("custody-standby", json!({}));
    let public = sb.run(&["mailbox", "export-public", &id]).stdout;
    assert!(
        standby
            .run_with_input(&["mailbox", "import-public", "-"], &public)
            .status
            .success()
    );
    deliver(&standby, &id, "on the standby");
    let merged = sb.run(&["merge", standby.data().to_str().unwrap()]);
    assert!(merged.status.success(), "{}", stderr(&merged));
    let receipt = stdout(&merged)
        .split_whitespace()
        .find(|w| w.ends_with(".json"))
        .expect("the receipt is named")
        .to_string();
    let released = standby.run(&["merge", "--release", &receipt]);
    assert!(released.status.success(), "{}", stderr(&released));
    let (code, report) = verify(&standby, &standby.data(), &[]);
    assert_eq!((code, count(&report, "released")), (0, 1), "{report:#}");

    let (code, report) = verify(
        &sb,
        &sb.data(),
        &[
            "--mailbox",
            &id,
            "--password-file",
            sb.password_file(&password).to_str().unwrap(),
            "--export",
            export.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(count(&report, "retrieved and deleted"), 4);
    assert_eq!(
        count(&report, "present"),
        2,
        "the late one and the merged one"
    );
    assert_eq!(count(&report, "plaintext verified"), 4);
    assert!(
        count(&report, "anchors verified") >= 2,
        "on request and at shutdown"
    );
    assert_eq!(count(&report, "unanchored entries"), 1, "the merge's entry");

    for token in fs::read_dir(sb.data().join("custody/default/anchors")).unwrap() {
        let token = token.unwrap().path();
        let seq: u64 = token
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let line = chain_lines(&sb.data())
            .into_iter()
            .find(|l| l.starts_with(&format!("{{\"seq\":{seq},")))
            .unwrap();
        let hash = line
            .rsplit_once(",\"hash\":\"")
            .unwrap()
            .1
            .trim_end_matches("\"}");
        let out = run_with_timeout(
            Command::new("openssl")
                .args(["ts", "-verify", "-digest", hash, "-in"])
                .arg(&token)
                .arg("-CAfile")
                .arg(tsa.ca()),
            b"",
            TIMEOUT,
        );
        assert!(
            stdout(&out).contains("Verification: OK"),
            "{}",
            stderr(&out)
        );
    }
}

/// Every line of the default node's chain, in order.
fn chain_lines(data: &Path) -> Vec<String> {
    let dir = data.join("custody/default");
    let mut segments: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments
        .iter()
        .flat_map(|p| {
            fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}
