//! The client examples in docs/examples/, run as shipped: fetchmail over
//! POP3S and STLS, getmail over POP3S, msmtp over SMTPS and STARTTLS. Only
//! what names this machine is replaced (host, ports, mailbox, password,
//! paths); every example trusts the certificate `sealpost cert show --pem`
//! printed. The guide in docs/clients.md must quote each example verbatim.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::gateway::Gateway;
use support::{Sandbox, fixture, is_root, peer, repo, run, run_with_timeout, stderr, stdout};

const EXAMPLE_ID: &str = "mbx-2a20342e96294505a35eb5c8364eb67c";
const EXAMPLE_CERT: &str = "/etc/sealpost/client/sealpost.pem";

fn example(name: &str) -> String {
    fs::read_to_string(repo().join("docs/examples").join(name)).unwrap()
}

/// A gateway with one mailbox holding two fixture messages, and the
/// certificate as `cert show --pem` prints it.
struct Setup {
    sb: Sandbox,
    gw: Gateway,
    id: String,
    password: String,
    pem: PathBuf,
}

fn setup(label: &str, messages: usize) -> Setup {
    let sb = Sandbox::for_gateway(label, json!({}));
    let (id, password) = sb.create_mailbox("Journal");
    for name in support::FIXTURES.iter().take(messages) {
        let out = sb.run_with_input(&["mailbox", "deliver", &id], &fixture(name));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let gw = Gateway::start(&sb);
    let out = sb.run(&["cert", "show", "--pem"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("-----BEGIN CERTIFICATE-----\n"));
    let pem = sb.dir.join("sealpost.pem");
    fs::write(&pem, &out.stdout).unwrap();
    Setup {
        sb,
        gw,
        id,
        password,
        pem,
    }
}

impl Setup {
    /// The example with this machine's names in place of the examples'.
    fn localise(&self, text: &str, ports: &[(&str, String)]) -> String {
        let mut text = text
            .replace("gateway.example.org", "localhost")
            .replace(EXAMPLE_ID, &self.id)
            .replace("PASSWORD", &self.password)
            .replace(EXAMPLE_CERT, self.pem.to_str().unwrap());
        for (from, to) in ports {
            assert!(text.contains(from), "{from:?} in\n{text}");
            text = text.replace(from, to);
        }
        text
    }

    fn port(&self, key: &str) -> String {
        self.gw.addr(key).port().to_string()
    }
}

fn write_private(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn the_guide_quotes_every_example() {
    let guide = fs::read_to_string(repo().join("docs/clients.md")).unwrap();
    for name in [
        "fetchmailrc-pop3s",
        "fetchmailrc-stls",
        "getmailrc",
        "msmtprc-smtps",
        "msmtprc-starttls",
    ] {
        assert!(
            guide.contains(&example(name)),
            "docs/clients.md does not quote docs/examples/{name} verbatim"
        );
    }
}

#[test]
fn fetchmail_examples_collect_and_delete_over_pop3s_and_stls() {
    let Some(fetchmail) = peer("fetchmail", &["fetchmail"]) else {
        return;
    };
    for (name, key, port) in [
        ("fetchmailrc-pop3s", "pop3.listen_tls[0]", "service 995 "),
        ("fetchmailrc-stls", "pop3.listen[0]", "service 110 "),
    ] {
        let s = setup(&format!("guide-{name}"), 2);
        let home = s.sb.dir.join("fetchmail");
        fs::create_dir_all(&home).unwrap();
        // The example's own MDA, as shipped: the shell writes each message
        // into $HOME/archive/.
        let out_dir = home.join("archive");
        let text = s.localise(
            &example(name),
            &[(port, format!("service {} ", s.port(key)))],
        );
        let rc = home.join("fetchmailrc");
        write_private(&rc, &text);
        let out = run(Command::new(&fetchmail)
            .arg("-f")
            .arg(&rc)
            .args(["--nodetach", "-v", "--pidfile"])
            .arg(home.join("fetchmail.pid"))
            .env("FETCHMAILHOME", &home)
            .env("HOME", &home));
        assert!(
            out.status.success(),
            "{name}:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 2, "{name}");
        assert!(s.sb.message_files(&s.id).is_empty(), "{name} deletes");
        if name.ends_with("stls") {
            s.gw.wait_for_log("pop3 ", std::time::Duration::from_secs(5));
            assert!(
                stdout(&out).contains("STLS") || stderr(&out).contains("STLS"),
                "fetchmail used STLS:\n{}",
                stdout(&out)
            );
        }
    }
}

#[test]
fn the_getmail_example_collects_into_a_maildir_and_deletes() {
    let Some(getmail) = peer("getmail", &["getmail"]) else {
        return;
    };
    let s = setup("guide-getmail", 2);
    let dir = s.sb.dir.join("getmail");
    let maildir = dir.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let mut text = s.localise(
        &example("getmailrc"),
        &[
            (
                "port = 995",
                format!("port = {}", s.port("pop3.listen_tls[0]")),
            ),
            (
                "path = ~/Maildir/",
                format!("path = {}/", maildir.display()),
            ),
        ],
    );
    if is_root() {
        // getmail refuses to deliver as root; it can switch to another user.
        fs::set_permissions(&s.sb.dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&s.pem, fs::Permissions::from_mode(0o644)).unwrap();
        let chown = run(Command::new("chown").args(["-R", "nobody"]).arg(&maildir));
        assert!(chown.status.success());
        text = text.replace("[options]", "user = nobody\n\n[options]");
    }
    write_private(&dir.join("getmailrc"), &text);
    let out = run(Command::new(getmail)
        .args(["--rcfile", "getmailrc", "--getmaildir"])
        .arg(&dir));
    let transcript = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        out.status.success() && !transcript.contains("error"),
        "{transcript}"
    );
    assert_eq!(fs::read_dir(maildir.join("new")).unwrap().count(), 2);
    for entry in fs::read_dir(maildir.join("new")).unwrap() {
        let text = fs::read_to_string(entry.unwrap().path()).unwrap();
        // delivered_to = false, received = false: nothing of getmail's on top.
        let headers = text.split("\n\n").next().unwrap_or("");
        assert!(!headers.contains("Delivered-To:"), "{headers}");
        assert!(!headers.contains("by getmail"), "{headers}");
    }
    assert!(s.sb.message_files(&s.id).is_empty());
}

#[test]
fn msmtp_examples_deliver_journal_mail_over_smtps_and_starttls() {
    let Some(msmtp) = peer("msmtp", &["msmtp"]) else {
        return;
    };
    let s = setup("guide-msmtp", 0);
    for (n, (name, key, port)) in [
        ("msmtprc-smtps", "smtp.listen_tls[0]", "port 465"),
        ("msmtprc-starttls", "smtp.listen[0]", "port 25"),
    ]
    .into_iter()
    .enumerate()
    {
        let text = s.localise(&example(name), &[(port, format!("port {}", s.port(key)))]);
        let rc = s.sb.dir.join(name);
        write_private(&rc, &text);
        let out = run_with_timeout(
            Command::new(&msmtp)
                .arg("-C")
                .arg(&rc)
                .arg(format!("{}@localhost", s.id)),
            &fixture("utf8-headers.eml"),
            support::PROGRAM_TIMEOUT,
        );
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(s.sb.message_files(&s.id).len(), n + 1, "{name} delivered");
    }
    let stored = s.sb.export(&s.id, &s.password);
    assert!(
        stored.iter().all(|(_, _, meta)| meta["tls"].is_string()),
        "{stored:?}"
    );
}

/// The README's quick start, pasted into bash in a scratch checkout: only
/// the build is skipped (the binary under test stands in for the release
/// one) and the POP3 port is a free one.
#[test]
fn the_readme_quick_start_works_when_pasted() {
    let (Some(bash), Some(_)) = (peer("bash", &["bash"]), peer("python3", &["python3"])) else {
        return;
    };
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme.split("## Quick start\n").nth(1).unwrap();
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .unwrap();
    // The script binds the port it names, so another process may take it
    // first: then it runs again on another.
    let (sb, out) = support::on_free_ports(1, |ports, attempt| {
        let port = ports[0].to_string();
        let script = block
            .replace("cargo build --release\n", "")
            .replace(
                "sealpost=$PWD/target/release/sealpost",
                &format!("sealpost={}", support::sealpost_bin().display()),
            )
            .replace(" 10995 ", &format!(" {port} "));
        assert!(script.contains(&port), "the quick start names port 10995");
        let sb = Sandbox::new(&format!("quickstart-{attempt}"), json!({}));
        // The shipped gateway.json with every listener on a free port: only the
        // POP3 one is fixed, since the script names it.
        let mut config: serde_json::Value =
            serde_json::from_slice(&fs::read(repo().join("gateway.json")).unwrap()).unwrap();
        for section in ["smtp", "pop3", "smtp_proxy", "pop3_proxy"] {
            for key in ["listen", "listen_tls"] {
                config[section][key] = json!(["127.0.0.1:0"]);
            }
        }
        config["pop3"]["listen_tls"] = json!([format!("127.0.0.1:{port}")]);
        config["console"]["listen"] = json!(["127.0.0.1:0"]);
        config["kdf"] = json!({ "opslimit": 1, "memlimit_bytes": 8 * 1024 * 1024 });
        fs::write(sb.config(), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        fs::create_dir_all(sb.dir.join("tests")).unwrap();
        for dir in ["fixtures", "python"] {
            std::os::unix::fs::symlink(
                repo().join("tests").join(dir),
                sb.dir.join("tests").join(dir),
            )
            .unwrap();
        }
        let out = run_with_timeout(
            Command::new(&bash)
                .args(["-e", "-c", &format!("{script}\nwait")])
                .current_dir(&sb.dir),
            b"",
            support::PROGRAM_TIMEOUT,
        );
        let said = format!("{}{}", stdout(&out), stderr(&out));
        match out.status.success() || !support::says_port_taken(&said) {
            true => Ok((sb, out)),
            false => Err(support::PortTaken),
        }
    });
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let retrieved = fs::read(sb.dir.join("retrieved/1.eml")).unwrap();
    let original = fixture("m365-journal-report.eml");
    assert!(
        support::contains(&retrieved, &original[..200]),
        "the journal report came back"
    );
    assert!(stdout(&out).contains("mailbox mbx-"), "{}", stdout(&out));
}

#[test]
fn the_nftables_example_is_valid_and_lets_ipv6_neighbour_discovery_through() {
    let Some(nft) = peer("nft (nftables)", &["nft", "/usr/sbin/nft"]) else {
        return;
    };
    let Some(unshare) = peer("unshare (util-linux)", &["unshare"]) else {
        return;
    };
    if !is_root() {
        support::missing_peer::<()>("nft --check needs root");
        return;
    }
    let doc = fs::read_to_string(repo().join("docs/dns-and-firewall.md")).unwrap();
    let after = doc.split("Example with nftables").nth(1).unwrap();
    let block = after.split("```\n").nth(1).unwrap();
    // A drop policy without neighbour discovery breaks IPv6 (RFC 4890).
    assert!(block.contains("policy drop"), "{block}");
    for needed in [
        "nd-neighbor-solicit",
        "nd-neighbor-advert",
        "packet-too-big",
    ] {
        assert!(block.contains(needed), "{needed} in\n{block}");
    }
    let file = std::env::temp_dir().join(format!("sealpost-nft-{}.nft", std::process::id()));
    fs::write(&file, block).unwrap();
    // Checked only (-c), in a network namespace of its own: nothing of this
    // machine's firewall is touched.
    let out = run(Command::new(unshare)
        .arg("--net")
        .arg(nft)
        .arg("-c")
        .arg("-f")
        .arg(&file));
    let _ = fs::remove_file(&file);
    assert!(
        out.status.success(),
        "nft -c:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}
