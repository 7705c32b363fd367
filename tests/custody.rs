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
    /// `None` (SKIPPED, a failure under CI) without openssl.
    fn start(sb: &Sandbox, mode: &str) -> Option<Tsa> {
        support::peer("openssl", &["openssl"])?;
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
        Some(Tsa { dir, child, port })
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
    let o = support::poplib_fetch_all(sb, gw, id, password, out);
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
    let Some(fetchmail_bin) = support::peer("fetchmail", &["fetchmail"]) else {
        return;
    };
    let sb0 = Sandbox::new("custody-tsa", json!({}));
    let Some(tsa) = Tsa::start(&sb0, "ok") else {
        return;
    };
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
    // fetchmail takes the next two; its copies, without the Received:
    // header it adds, join the archive's export.
    for i in 0..2 {
        expect(&send(&gw, &to, &format!("for fetchmail {i}")), "250");
    }
    let fetched = fetchmail(&fetchmail_bin, &sb, &gw, &id, &password);
    assert_eq!(fetched.len(), 2);
    for (i, m) in fetched.iter().enumerate() {
        fs::write(export.join(format!("fetchmail-{i}.eml")), m).unwrap();
    }
    expect(&send(&gw, &to, "journal late"), "250");
    let status = sb.run(&["status"]);
    assert!(
        stdout(&status).contains("Custody:") && stdout(&status).contains("last anchor at entry"),
        "{}",
        stdout(&status)
    );
    assert!(gw.stop().success());

    merge_a_standby(&sb, &id);

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

    tokens_verify_with_openssl(&sb, &tsa);
}

/// A standby takes a message for `id`; it is merged into `sb` and released
/// on the standby, whose verify then says complete.
fn merge_a_standby(sb: &Sandbox, id: &str) {
    // The standby's mail, merged in and released.
    let standby = Sandbox::for_gateway("custody-standby", json!({}));
    let public = sb.run(&["mailbox", "export-public", id]).stdout;
    assert!(
        standby
            .run_with_input(&["mailbox", "import-public", "-"], &public)
            .status
            .success()
    );
    deliver(&standby, id, "on the standby");
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
}

/// `openssl ts -verify`, on its own, accepts every token of `sb`'s chain
/// for the hash of the entry it names.
fn tokens_verify_with_openssl(sb: &Sandbox, tsa: &Tsa) {
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

/// fetchmail retrieves and deletes everything; the messages it delivered,
/// without the Received: header it adds (LF line ends, as its MDA gets them).
fn fetchmail(bin: &Path, sb: &Sandbox, gw: &Gateway, id: &str, password: &str) -> Vec<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let home = sb.dir.join("fetchmail");
    let (mda, out_dir) = support::fetchmail_mda(&home);
    let rc = home.join("fetchmailrc");
    fs::write(
        &rc,
        format!(
            "set no syslog\npoll 127.0.0.1 service {port} protocol pop3 auth password\n  \
             user \"{id}\" password \"{password}\" ssl sslcertfile \"{cert}\" sslcertck sslcommonname localhost\n  \
             no keep no rewrite mda \"{mda}\"\n",
            port = gw.addr("pop3.listen_tls[0]").port(),
            cert = gw.cert.display(),
        ),
    )
    .unwrap();
    fs::set_permissions(&rc, fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_with_timeout(
        Command::new(bin)
            .arg("-f")
            .arg(&rc)
            .args(["--nodetach", "--pidfile"])
            .arg(home.join("fetchmail.pid"))
            .env("FETCHMAILHOME", &home),
        b"",
        TIMEOUT,
    );
    assert!(
        out.status.success(),
        "fetchmail: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let mut files: Vec<PathBuf> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| without_first_field(&fs::read(p).unwrap()))
        .collect()
}

/// A message without its first header field and that field's folded
/// lines, whatever its line ends.
fn without_first_field(m: &[u8]) -> Vec<u8> {
    let mut from = 0;
    loop {
        let nl = from
            + m[from..]
                .iter()
                .position(|&b| b == b'\n')
                .expect("a header line");
        if !matches!(m.get(nl + 1), Some(b' ' | b'\t')) {
            return m[nl + 1..].to_vec();
        }
        from = nl + 1;
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

fn copy_data(sb: &Sandbox, name: &str) -> PathBuf {
    let to = sb.dir.join(name);
    let out = run_with_timeout(
        Command::new("cp").arg("-a").arg(sb.data()).arg(&to),
        b"",
        TIMEOUT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    to
}

/// The chain's segment files of a data directory, in order.
fn segment_files(data: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = fs::read_dir(data.join("custody/default"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    s.sort();
    s
}

/// Rewrites the chain of `data` as `edit` wants its lines.
fn rewrite(data: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let files = segment_files(data);
    let mut lines: Vec<(PathBuf, String)> = files
        .iter()
        .flat_map(|p| {
            fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| (p.clone(), l.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut text: Vec<String> = lines.iter().map(|(_, l)| l.clone()).collect();
    edit(&mut text);
    lines.truncate(text.len());
    for f in &files {
        fs::write(f, "").unwrap();
    }
    for ((file, _), line) in lines.iter().zip(text) {
        let mut old = fs::read_to_string(file).unwrap();
        old.push_str(&line);
        old.push('\n');
        fs::write(file, old).unwrap();
    }
}

fn present_file(data: &Path, id: &str) -> PathBuf {
    fs::read_dir(data.join("mailboxes").join(id).join("messages"))
        .unwrap()
        .next()
        .expect("a message is present")
        .unwrap()
        .path()
}

/// The chain every tampering case starts from: mail retrieved, anchored on
/// request and at shutdown, and three entries after the last anchor.
fn tamper_base(tsa: &Tsa) -> (Sandbox, String, usize) {
    let sb = sandbox("custody-tamper", tsa, json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    let to = format!("{id}@localhost");
    let gw = Gateway::start(&sb);
    for i in 0..6 {
        expect(&send(&gw, &to, &format!("first {i}")), "250");
    }
    retrieve(&sb, &gw, &id, &password, &sb.dir.join("export"));
    anchor(&sb);
    for i in 0..6 {
        expect(&send(&gw, &to, &format!("second {i}")), "250");
    }
    assert!(gw.stop().success(), "anchors at shutdown");
    for i in 0..3 {
        deliver(&sb, &id, &format!("unanchored {i}"));
    }
    let (code, base) = verify(&sb, &sb.data(), &[]);
    assert_eq!(code, 0, "{base:#}");
    assert_eq!(count(&base, "present"), 9);
    assert_eq!(count(&base, "unanchored entries"), 3);
    assert!(
        segment_files(&sb.data()).len() >= 3,
        "4 KiB segments rotate"
    );
    let total = count(&base, "entries") as usize;
    (sb, id, total)
}

/// Edits entry `from` (its time) and re-hashes and re-links every entry
/// from there on, as an attacker who knows the format would.
fn edit_and_rehash(lines: &mut [String], from: usize) {
    let mut prev: Option<String> = None;
    for line in lines.iter_mut().skip(from) {
        let (body, _) = line.rsplit_once(",\"hash\":\"").unwrap();
        let mut body = body.replacen("\"time\":\"2", "\"time\":\"1", 1);
        if let Some(p) = &prev {
            let at = body.find(",\"prev\":\"").unwrap() + ",\"prev\":\"".len();
            body.replace_range(at..at + 64, p);
        }
        let hash = sealpost::crypto::hex(&sealpost::crypto::sha256(format!("{body}}}").as_bytes()));
        *line = format!("{body},\"hash\":\"{hash}\"}}");
        prev = Some(hash);
    }
}

/// The first stored entry's file name made a path out of the data directory.
fn a_path_for_a_name(lines: &mut [String]) {
    let stored = lines.iter().position(|l| l.contains("\"stored\"")).unwrap();
    let file = lines[stored].split("\"file\":\"").nth(1).unwrap();
    let file = file.split('"').next().unwrap().to_owned();
    lines[stored] = lines[stored].replace(&file, "../../../../etc/hostname");
}

/// Each kind of tampering, on a copy of one chain, reported exactly by
/// both verifiers; a cut after the last anchor is the one thing that goes
/// unnoticed, and the report said beforehand how many entries it exposed.
#[test]
fn tampering_is_reported_exactly() {
    let sb0 = Sandbox::new("custody-tsa2", json!({}));
    let Some(tsa) = Tsa::start(&sb0, "ok") else {
        return;
    };
    let (sb, id, total) = tamper_base(&tsa);

    let case = |name: &str, tamper: &dyn Fn(&Path)| -> Value {
        let data = copy_data(&sb, name);
        tamper(&data);
        let (code, report) = verify(&sb, &data, &[]);
        println!("{name}: {}", report["lines"]);
        assert!(
            code == 1 || name == "cut-after-anchor",
            "{name}: exit {code}"
        );
        report
    };
    let r = case("deleted-file", &|d| {
        fs::remove_file(present_file(d, &id)).unwrap()
    });
    assert_eq!(count(&r, "missing without a hand-over"), 1);
    assert_eq!(count(&r, "present"), 8);

    let r = case("changed-byte", &|d| {
        let f = present_file(d, &id);
        let mut bytes = fs::read(&f).unwrap();
        let n = bytes.len() - 5;
        bytes[n] ^= 1;
        fs::write(&f, bytes).unwrap();
    });
    assert_eq!(count(&r, "altered files"), 1);

    let r = case("edited-entry", &|d| {
        rewrite(d, |lines| {
            lines[5] = lines[5].replacen("\"time\":\"2", "\"time\":\"1", 1)
        });
    });
    assert_eq!(
        (count(&r, "altered entries"), count(&r, "broken links")),
        (1, 0)
    );

    // Edited, then every later entry re-hashed and re-linked: the chain is
    // consistent again, and only the anchors stamped since tell.
    let r = case("rewritten-after-an-edit", &|d| {
        rewrite(d, |lines| edit_and_rehash(lines, 4))
    });
    assert_eq!(
        count(&r, "altered entries") + count(&r, "broken links"),
        0,
        "{r:#}"
    );
    assert!(count(&r, "bad anchors") >= 1, "{r:#}");

    let r = case("a-path-for-a-name", &|d| {
        rewrite(d, |l| a_path_for_a_name(l.as_mut_slice()))
    });
    assert_eq!(count(&r, "unreadable lines"), 1, "{r:#}");

    let r = case("reordered", &|d| rewrite(d, |lines| lines.swap(6, 7)));
    assert_eq!(count(&r, "out of order"), 1, "{r:#}");
    assert_eq!(count(&r, "gaps") + count(&r, "altered entries"), 0);

    let r = case("segment-removed", &|d| {
        fs::remove_file(&segment_files(d)[1]).unwrap()
    });
    assert_eq!(count(&r, "gaps"), 1, "{r:#}");

    let r = case("cut-before-anchor", &|d| {
        rewrite(d, |lines| lines.truncate(total - 5))
    });
    assert_eq!(count(&r, "anchors beyond the chain"), 1, "{r:#}");

    let r = case("cut-after-anchor", &|d| {
        rewrite(d, |lines| lines.truncate(total - 3))
    });
    assert_eq!(r["complete"], true, "not detectable: {r:#}");
    assert_eq!(count(&r, "unanchored entries"), 0);

    let r = case("token-replaced", &|d| {
        let anchors = d.join("custody/default/anchors");
        let mut tokens: Vec<PathBuf> = fs::read_dir(&anchors)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        tokens.sort();
        assert!(tokens.len() >= 2, "{tokens:?}");
        fs::copy(&tokens[0], &tokens[1]).unwrap();
    });
    assert_eq!(count(&r, "bad anchors"), 1, "{r:#}");
}

/// A failed flush (the group commit's injected error) leaves an abandoned
/// message, a password reset and a forced delete messages removed by the
/// administrator: none is missing.
#[test]
fn abandoned_and_removed_messages_are_not_missing() {
    let Some(shim) = support::slowflush_shim() else {
        return;
    };
    let sb0 = Sandbox::new("custody-tsa3", json!({}));
    let Some(tsa) = Tsa::start(&sb0, "ok") else {
        return;
    };
    let sb = sandbox("custody-states", &tsa, json!({}));
    let (id, _) = sb.create_mailbox("Journal");
    let (other, _) = sb.create_mailbox("Other");
    let fail = sb.dir.join("fail-flushes");
    let gw = Gateway::start_with(&sb, |c| {
        c.env("LD_PRELOAD", &shim)
            .env("SLOWFLUSH_MS", "1")
            .env("SLOWFLUSH_LOCK", sb.dir.join("flush.lock"))
            .env("SLOWFLUSH_FAIL", &fail);
    });
    expect(&send(&gw, &format!("{id}@localhost"), "kept"), "250");
    fs::write(&fail, "").unwrap();
    expect(&send(&gw, &format!("{id}@localhost"), "flush fails"), "451");
    fs::remove_file(&fail).unwrap();
    expect(
        &send(&gw, &format!("{other}@localhost"), "to be deleted"),
        "250",
    );
    assert!(gw.stop().success());
    let out = sb.run(&["mailbox", "reset-password", &id, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sb.run(&["mailbox", "delete", &other, "--force", "--even-if-active"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, r) = verify(&sb, &sb.data(), &[]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(count(&r, "abandoned"), 1, "{r:#}");
    assert_eq!(count(&r, "removed by the administrator"), 2, "{r:#}");
    assert_eq!(count(&r, "missing without a hand-over"), 0);
}

/// Backup, more mail (anchored), the data directory wiped and restored:
/// the next start writes a "restored" entry, both verifiers report the
/// restore, and the outside copy of the tokens shows the anchors lost.
#[test]
fn a_restore_is_reported_with_the_anchors_it_lost() {
    let sb0 = Sandbox::new("custody-tsa4", json!({}));
    let Some(tsa) = Tsa::start(&sb0, "ok") else {
        return;
    };
    let sb = sandbox("custody-restore", &tsa, json!({}));
    let (id, _) = sb.create_mailbox("Journal");
    let to = format!("{id}@localhost");
    let gw = Gateway::start(&sb);
    for i in 0..3 {
        expect(&send(&gw, &to, &format!("before {i}")), "250");
    }
    assert!(gw.stop().success());
    let dest = sb.dir.join("backups");
    let out = sb.run(&["backup", dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let gw = Gateway::start(&sb);
    for i in 0..3 {
        expect(&send(&gw, &to, &format!("after {i}")), "250");
    }
    assert!(gw.stop().success(), "anchored at shutdown");
    let (code, r) = verify(&sb, &sb.data(), &[]);
    assert_eq!((code, count(&r, "present")), (0, 6), "{r:#}");
    // A closed segment never changes: the next snapshot links it, as it
    // links message files; the active one is a copy.
    for i in 0..4 {
        deliver(&sb, &id, &format!("rotates the segment {i}"));
    }
    let again = sb.dir.join("backups-twice");
    for _ in 0..2 {
        let out = sb.run(&["backup", again.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let segments = segment_files(&again.join("latest"));
    assert!(segments.len() >= 2, "{segments:?}");
    let links = |p: &Path| std::os::unix::fs::MetadataExt::nlink(&fs::metadata(p).unwrap());
    assert_eq!(links(&segments[0]), 2, "the closed segment is shared");
    assert_eq!(
        links(segments.last().unwrap()),
        1,
        "the active one is copied"
    );

    fs::remove_dir_all(sb.data()).unwrap();
    let out = run_with_timeout(
        Command::new("cp")
            .arg("-a")
            .arg(dest.join("latest/"))
            .arg(sb.data()),
        b"",
        TIMEOUT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let gw = Gateway::start(&sb);
    gw.wait_for_log("restored from snapshot", TIMEOUT);
    drop(gw);
    let (code, r) = verify(&sb, &sb.data(), &[]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(count(&r, "restores"), 1, "{r:#}");
    assert_eq!(count(&r, "present"), 3, "{r:#}");
    assert!(count(&r, "anchors lost") >= 1, "{r:#}");
    let lines = r["lines"].to_string();
    assert!(lines.contains("restored from snapshot"), "{lines}");
}

/// Two nodes on one data directory: two chains, one verify, complete; a
/// message stored through one node and retrieved through the other.
#[test]
fn two_nodes_keep_two_chains_and_one_verify_is_complete() {
    let sb0 = Sandbox::new("custody-tsa5", json!({}));
    let Some(tsa) = Tsa::start(&sb0, "ok") else {
        return;
    };
    let a = sandbox("custody-node-a", &tsa, json!({ "node": "a" }));
    let b = sandbox(
        "custody-node-b",
        &tsa,
        json!({ "node": "b", "data_dir": a.data(), "custody": { "anchor_copy_dir": a.dir.join("anchors-copy") } }),
    );
    // b's own view of the shared directory (its certificate is there).
    std::os::unix::fs::symlink(a.data(), b.data()).unwrap();
    let (id, password) = a.create_mailbox("Journal");
    let to = format!("{id}@localhost");
    let (ga, gb) = (Gateway::start(&a), Gateway::start(&b));
    for i in 0..3 {
        expect(&send(&ga, &to, &format!("via a {i}")), "250");
        expect(&send(&gb, &to, &format!("via b {i}")), "250");
    }
    retrieve(&b, &gb, &id, &password, &b.dir.join("export"));
    expect(&send(&ga, &to, "late"), "250");
    assert!(ga.stop().success() && gb.stop().success());
    let nodes: Vec<String> = fs::read_dir(a.data().join("custody"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(
        nodes.contains(&"a".into()) && nodes.contains(&"b".into()),
        "{nodes:?}"
    );
    let (code, r) = verify(&a, &a.data(), &[]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(count(&r, "retrieved and deleted"), 6, "{r:#}");
    assert_eq!(count(&r, "present"), 1, "{r:#}");
    assert!(
        count(&r, "anchors verified") >= 2,
        "each node anchored: {r:#}"
    );
}

/// A TSA that answers garbage, a huge body, with a certificate the gateway
/// does not trust, or a trickle: each a clear error naming the TSA, the
/// anchor not kept, `status` says so (exit 4), and mail keeps flowing.
#[test]
fn a_hostile_tsa_is_reported_and_never_blocks_mail() {
    let sb0 = Sandbox::new("custody-tsa6", json!({}));
    for (mode, says) in [
        ("garbage", "not valid DER"),
        ("huge", "custody.tsa.url"),
        ("wrongcert", "not trusted for time-stamping"),
        ("trickle", "custody.tsa.url"),
    ] {
        let Some(tsa) = Tsa::start(&sb0, mode) else {
            return;
        };
        // The CA the gateway trusts is the real one, not the signer's.
        let sb = sandbox(&format!("custody-hostile-{mode}"), &tsa, json!({}));
        let (id, _) = sb.create_mailbox("Journal");
        let gw = Gateway::start(&sb);
        expect(&send(&gw, &format!("{id}@localhost"), "before"), "250");
        let started = std::time::Instant::now();
        let out = sb.run(&["custody", "anchor"]);
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", stdout(&out));
        assert!(stderr(&out).contains(says), "{mode}: {}", stderr(&out));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{mode}: bounded"
        );
        assert!(
            !sb.data()
                .join("custody/default/anchors")
                .read_dir()
                .unwrap()
                .any(|_| true)
        );
        expect(&send(&gw, &format!("{id}@localhost"), "after"), "250");
        let status = sb.run(&["status"]);
        assert_eq!(status.status.code(), Some(4), "{mode}: {}", stdout(&status));
        assert!(
            stdout(&status).contains("cannot be anchored"),
            "{}",
            stdout(&status)
        );
        drop(gw);
    }
}

/// A torn last entry (a crash in the middle of a write) is cut back to the
/// last whole one at the next start, with a WARN line; the chain goes on
/// and verifies.
#[test]
fn a_torn_last_entry_is_cut_back_at_start() {
    let sb = Sandbox::for_gateway("custody-torn", json!({ "smtp": { "require_tls": false } }));
    let (id, _) = sb.create_mailbox("Journal");
    let to = format!("{id}@localhost");
    let gw = Gateway::start(&sb);
    expect(&send(&gw, &to, "before the crash"), "250");
    assert!(gw.stop().success());
    let last = segment_files(&sb.data()).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    bytes.extend_from_slice(b"{\"seq\":3,\"time\":\"2026-");
    fs::write(&last, bytes).unwrap();
    let gw = Gateway::start(&sb);
    gw.wait_for_log("was torn", TIMEOUT);
    assert!(gw.log().contains("WARN"), "{}", gw.log());
    expect(&send(&gw, &to, "after the restart"), "250");
    assert!(gw.stop().success());
    let (code, r) = verify(&sb, &sb.data(), &[]);
    assert_eq!((code, count(&r, "present")), (0, 2), "{r:#}");
}

/// Bad use of the custody commands: a clear message and the documented
/// exit code, nothing written.
#[test]
fn custody_commands_refuse_bad_use_clearly() {
    let sb = Sandbox::new("custody-cli", json!({}));
    let out = sb.run(&["custody", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("anchor or verify"),
        "{}",
        stderr(&out)
    );
    let out = sb.run(&["custody", "verify", "--mailbox", "mbx-0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("go together"), "{}", stderr(&out));
    let out = sb.run(&["custody", "anchor"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no time-stamping authority"),
        "{}",
        stderr(&out)
    );
    let missing = sb.dir.join("no-such-ca.pem");
    let out = sb.run(&["custody", "verify", "--tsa-ca", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such-ca.pem"), "{}", stderr(&out));
    // An empty data directory is complete: nothing was stored.
    let out = sb.run(&["custody", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}
