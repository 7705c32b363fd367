//! The Debian packages, as a Raspberry Pi owner gets them: `scripts/package`
//! builds amd64, arm64 and armhf into `target/packages/` (`scripts/test`
//! runs it before the suite). Each package names its architecture and
//! exactly the dependencies its binary needs; each is unpacked and its
//! `sealpost serve` run (the ARM ones under qemu-user, called explicitly,
//! as binfmt_misc may be absent) with a test configuration; Python's
//! smtplib delivers over STARTTLS and poplib retrieves over implicit TLS,
//! and the bytes must come back as sent. The manual pages are generated
//! from the README and name every command and configuration key.

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::gateway::Gateway;
use support::{Sandbox, missing_peer, peer, repo, run, stderr, stdout};

/// What every package depends on, exactly (see Cargo.toml).
const DEPENDS: &str = "adduser | passwd, libc6 (>= 2.34)";
/// The newest glibc symbol version a binary may need for that Depends.
const GLIBC: (u32, u32) = (2, 34);

/// Debian architecture, the emulator (none: native), its library root.
const ARCHES: [(&str, Option<&str>, &str); 3] = [
    ("amd64", None, "/"),
    ("arm64", Some("qemu-aarch64"), "/usr/aarch64-linux-gnu"),
    ("armhf", Some("qemu-arm"), "/usr/arm-linux-gnueabihf"),
];

/// The package built for `arch`, or a skip (a failure under CI).
fn package(arch: &str) -> Option<PathBuf> {
    let dir = repo().join("target/packages");
    let found = fs::read_dir(&dir).ok().and_then(|entries| {
        entries
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("sealpost_") && name.ends_with(&format!("_{arch}.deb"))
            })
            .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
    });
    found.or_else(|| {
        missing_peer(&format!(
            "no {arch} package in target/packages (scripts/test runs scripts/package --profile package-test)"
        ))
    })
}

fn field(deb: &Path, name: &str) -> String {
    let out = run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name));
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

/// Unpacks `deb` into `dir`; returns the path of its binary.
fn unpack(deb: &Path, dir: &Path) -> PathBuf {
    let out = run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir));
    assert!(out.status.success(), "{}", stderr(&out));
    dir.join("usr/bin/sealpost")
}

/// The glibc symbol versions a binary needs (readelf reads every ELF
/// architecture).
fn glibc_versions(binary: &Path) -> BTreeSet<(u32, u32)> {
    let out = run(Command::new("readelf")
        .arg("--dyn-syms")
        .arg("-W")
        .arg(binary));
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .split("GLIBC_")
        .skip(1)
        .filter_map(|rest| {
            let version: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .collect()
}

#[test]
fn each_package_names_its_architecture_and_exactly_what_its_binary_needs() {
    for (arch, _, _) in ARCHES {
        let Some(deb) = package(arch) else { continue };
        assert_eq!(field(&deb, "Architecture"), arch, "{}", deb.display());
        assert_eq!(field(&deb, "Depends"), DEPENDS, "{}", deb.display());
        let unpacked = tempfile::tempdir().unwrap();
        let binary = unpack(&deb, unpacked.path());
        let versions = glibc_versions(&binary);
        let newest = versions.iter().max().copied().unwrap_or_default();
        assert!(
            newest <= GLIBC,
            "{arch}: the binary needs GLIBC_{}.{}, the package promises {DEPENDS}",
            newest.0,
            newest.1
        );
        // Stripped with the target's own strip.
        let out = run(Command::new("readelf").arg("-S").arg("-W").arg(&binary));
        assert!(
            !stdout(&out).contains(".debug_info"),
            "{arch}: not stripped"
        );
        for doc in [
            "README.md",
            "SECURITY.md",
            "raspberry-pi.md",
            "examples/getmailrc",
        ] {
            assert!(
                unpacked
                    .path()
                    .join("usr/share/doc/sealpost")
                    .join(doc)
                    .exists(),
                "{arch}: {doc}"
            );
        }
        for man in ["man8/sealpost.8.gz", "man5/gateway.json.5.gz"] {
            assert!(
                unpacked.path().join("usr/share/man").join(man).exists(),
                "{arch}: {man}"
            );
        }
    }
}

/// Runs the unpacked binary (under its emulator) with `args`.
fn command(emulator: Option<&str>, libs: &str, binary: &Path) -> Command {
    match emulator {
        None => Command::new(binary),
        Some(qemu) => {
            let mut c = Command::new(qemu);
            c.arg("-L").arg(libs).arg(binary);
            c
        }
    }
}

#[test]
fn each_package_serves_mail_under_emulation() {
    let Some(python) = peer("python3", &["python3"]) else {
        return;
    };
    for (arch, emulator, libs) in ARCHES {
        let Some(deb) = package(arch) else { continue };
        if let Some(qemu) = emulator
            && peer(qemu, &[qemu]).is_none()
        {
            continue;
        }
        let sb = Sandbox::for_gateway(&format!("package-{arch}"), json!({}));
        let binary = unpack(&deb, &sb.dir.join("root"));
        let run_cli = |args: &[&str]| {
            support::run(
                command(emulator, libs, &binary)
                    .arg("-c")
                    .arg(sb.config())
                    .args(args),
            )
        };
        let out = run_cli(&["mailbox", "create", "--name", "Journal", "--json"]);
        assert!(out.status.success(), "{arch}: {}", stderr(&out));
        let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let (id, password) = (
            created["id"].as_str().unwrap().to_owned(),
            created["password"].as_str().unwrap().to_owned(),
        );
        let gw = Gateway::start_program(&sb, command(emulator, libs, &binary), |_| {});
        let message = b"From: journal@example.org\r\nTo: archive@example.org\r\nSubject: from a Pi\r\n\r\nThe bytes come back as sent.\r\n";
        let file = sb.dir.join("message.eml");
        fs::write(&file, message).unwrap();
        let out = support::run(
            Command::new(&python)
                .arg(repo().join("tests/python/smtp_send.py"))
                .args(["starttls", "localhost"])
                .arg(gw.addr("smtp.listen[0]").port().to_string())
                .arg(&gw.cert)
                .arg("sender@example.org")
                .arg(&file)
                .args(["--to", &format!("{id}@localhost")]),
        );
        assert!(
            out.status.success(),
            "{arch}: smtplib: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let fetched = sb.dir.join("fetched");
        let out = support::run(
            Command::new(&python)
                .arg(repo().join("tests/python/pop3_fetch.py"))
                .args(["ssl", "localhost"])
                .arg(gw.addr("pop3.listen_tls[0]").port().to_string())
                .arg(&gw.cert)
                .arg(&id)
                .arg(sb.password_file(&password))
                .arg(&fetched)
                .arg("delete"),
        );
        assert!(
            out.status.success(),
            "{arch}: poplib: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let got = fs::read(fetched.join("1.eml")).unwrap();
        assert!(
            got.ends_with(message),
            "{arch}: the message came back changed:\n{}",
            String::from_utf8_lossy(&got)
        );
        assert!(gw.stop().success(), "{arch}");
    }
}

/// Every word of a roff page, without font escapes.
fn man_text(path: &str) -> String {
    fs::read_to_string(repo().join(path))
        .unwrap()
        .replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "")
        .replace("\\-", "-")
}

/// The leaves of a JSON object as dotted keys.
fn keys(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                keys(&key, v, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn the_manual_pages_come_from_the_readme_and_name_every_command_and_key() {
    let Some(python) = peer("python3", &["python3"]) else {
        return;
    };
    let out = run(Command::new(python)
        .arg(repo().join("scripts/man"))
        .arg("--check"));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let sealpost = man_text("packaging/man/sealpost.8");
    let sb = Sandbox::new("man-pages", json!({}));
    let mut commands = Vec::new();
    for (args, block) in [
        (&["--help"][..], "Commands:"),
        (&["mailbox", "--help"], "Commands:"),
    ] {
        let help = stdout(&sb.run(args));
        let listed = help.split(block).nth(1).unwrap();
        for line in listed.lines().skip(1) {
            let Some(word) = line.split_whitespace().next() else {
                break;
            };
            if !line.starts_with("  ") {
                break;
            }
            let prefix = if args[0] == "mailbox" { "mailbox " } else { "" };
            commands.push(format!("{prefix}{word}"));
        }
    }
    assert!(commands.len() > 15, "{commands:?}");
    for command in commands.iter().filter(|c| c.as_str() != "help") {
        assert!(
            sealpost.contains(command.as_str()),
            "sealpost(8) lacks {command}"
        );
    }
    let gateway = man_text("packaging/man/gateway.json.5");
    let out = sb.run(&["check-config"]);
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut all = Vec::new();
    keys("", &config, &mut all);
    assert!(all.len() > 40, "{all:?}");
    for key in all {
        assert!(gateway.contains(&key), "gateway.json(5) lacks {key}");
    }
}

#[test]
fn lintian_finds_nothing_to_warn_about_in_any_package() {
    let Some(lintian) = peer("lintian", &["lintian"]) else {
        return;
    };
    for (arch, _, _) in ARCHES {
        let Some(deb) = package(arch) else { continue };
        let out = support::run(
            Command::new(&lintian)
                .arg("--fail-on")
                .arg("warning")
                .arg(&deb),
        );
        assert!(
            out.status.success(),
            "{arch}: lintian:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        for line in stdout(&out).lines() {
            assert!(
                !(line.starts_with("E:") || line.starts_with("W:")),
                "{arch}: {line}"
            );
        }
    }
}

/// A throwaway Debian root (the essential packages plus adduser, which
/// scripts/test makes with mmdebstrap into `target/test-root/`), unpacked
/// for one test and removed on drop: the package's scripts create a user,
/// write /etc/sealpost and would bind real ports, so they never run on this
/// machine's own root. dpkg runs in it inside a network namespace with only
/// loopback, so nothing it starts can reach beyond the machine.
struct Throwaway {
    root: PathBuf,
    netns: support::netns::LoopbackOnly,
}

impl Throwaway {
    fn new(dir: &Path) -> Option<Throwaway> {
        let tarball = repo().join("target/test-root/bookworm.tar");
        if !support::is_root() {
            return missing_peer("a throwaway root needs root");
        }
        if !tarball.exists() {
            return missing_peer(&format!(
                "{} is missing (scripts/test makes it with mmdebstrap)",
                tarball.display()
            ));
        }
        let root = dir.join("root");
        fs::create_dir_all(&root).unwrap();
        let out = support::run(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-xf")
                .arg(&tarball),
        );
        assert!(out.status.success(), "tar: {}", stderr(&out));
        Some(Throwaway {
            root,
            netns: support::netns::LoopbackOnly::new(),
        })
    }

    /// Runs `args` inside the root (chroot, in the loopback-only namespace).
    fn run(&self, args: &[&str]) -> std::process::Output {
        support::run(self.netns.command("chroot").arg(&self.root).args(args))
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

#[test]
fn the_package_installs_upgrades_removes_and_purges_in_a_throwaway_root() {
    let Some(deb) = package("amd64") else { return };
    if peer("cargo-deb", &["cargo-deb"]).is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(root) = Throwaway::new(work.path()) else {
        return;
    };
    // The same binary re-packaged with a newer version: an upgrade.
    let upgrade_dir = work.path().join("upgrade");
    let out = support::run(
        Command::new("cargo")
            .args([
                "deb",
                "--no-build",
                "--no-strip",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--profile",
                "package-test",
                "--deb-version",
                "0.1.1-1",
                "--output",
            ])
            .arg(&upgrade_dir)
            .current_dir(repo()),
    );
    assert!(out.status.success(), "cargo deb: {}", stderr(&out));
    fs::copy(&deb, root.path("/tmp/sealpost-old.deb")).unwrap();
    fs::copy(
        upgrade_dir.join("sealpost_0.1.1-1_amd64.deb"),
        root.path("/tmp/sealpost-new.deb"),
    )
    .unwrap();

    let out = root.run(&["dpkg", "-i", "/tmp/sealpost-old.deb"]);
    assert!(
        out.status.success(),
        "install: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("systemd is not running here"),
        "{}",
        stderr(&out)
    );
    let config = root.path("/etc/sealpost/gateway.json");
    let original = fs::read_to_string(&config).unwrap();
    let meta = fs::metadata(&config).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert!(root.run(&["getent", "passwd", "sealpost"]).status.success());
    let out = root.run(&[
        "sealpost",
        "-c",
        "/etc/sealpost/gateway.json",
        "check-config",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The administrator edits the configuration; mail is in the data directory.
    let mut value: serde_json::Value = serde_json::from_str(&original).unwrap();
    value["hostname"] = json!("archive.example.org");
    let edited = serde_json::to_string_pretty(&value).unwrap() + "\n";
    assert_ne!(edited, original);
    fs::write(&config, &edited).unwrap();
    let mail = root.path("/var/lib/sealpost/kept-mail");
    fs::write(&mail, b"archive").unwrap();

    let out = root.run(&["dpkg", "-i", "/tmp/sealpost-new.deb"]);
    assert!(
        out.status.success(),
        "upgrade: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        edited,
        "edits survive, unasked"
    );
    assert!(mail.exists());
    let out = root.run(&["dpkg-query", "-W", "-f", "${Version}", "sealpost"]);
    assert_eq!(stdout(&out), "0.1.1-1");

    let out = root.run(&["dpkg", "-r", "sealpost"]);
    assert!(out.status.success(), "remove: {}", stderr(&out));
    assert!(!root.path("/usr/bin/sealpost").exists());
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        edited,
        "remove keeps the configuration"
    );
    assert!(mail.exists());

    let out = root.run(&["dpkg", "-P", "sealpost"]);
    assert!(out.status.success(), "purge: {}", stderr(&out));
    assert!(!config.exists(), "purge removes the configuration");
    assert!(mail.exists(), "purge never deletes mail");
}
