//! The installed layout: scripts/install into a throwaway root (never the
//! machine's own), the systemd unit checked by systemd-analyze (verify, and
//! its security exposure), reinstalling over an edited configuration,
//! scripts/uninstall keeping the archive, and the Debian package built by
//! `cargo deb` inspected with dpkg-deb. Nothing is started.

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use support::{Sandbox, is_root, peer, repo, run, sealpost_bin, stderr, stdout};

/// A throwaway root with what useradd --prefix and systemd-analyze --root
/// need: the account files, the distribution's units, and /bin/kill.
fn throwaway_root(sb: &Sandbox) -> PathBuf {
    let root = sb.dir.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    for file in ["passwd", "group", "shadow", "gshadow"] {
        let host = Path::new("/etc").join(file);
        if host.exists() {
            fs::copy(&host, root.join("etc").join(file)).unwrap();
        }
    }
    add_systemd_basics(&root);
    root
}

fn add_systemd_basics(root: &Path) {
    fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    fs::create_dir_all(root.join("bin")).unwrap();
    let out = run(Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(root.join("usr/lib/systemd/")));
    assert!(out.status.success(), "{}", stderr(&out));
    fs::copy("/bin/kill", root.join("bin/kill")).unwrap();
}

fn script(name: &str, args: &[&str]) -> Output {
    run(Command::new(repo().join("scripts").join(name)).args(args))
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// uid of `sealpost` and gid of its group inside `root`.
fn sealpost_ids(root: &Path) -> (u32, u32) {
    let field = |file: &str| {
        let text = fs::read_to_string(root.join("etc").join(file)).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sealpost:"))
            .collect();
        assert_eq!(lines.len(), 1, "one sealpost entry in {file}: {lines:?}");
        lines[0].split(':').nth(2).unwrap().parse::<u32>().unwrap()
    };
    (field("passwd"), field("group"))
}

/// `systemd-analyze verify` passes without a single warning.
fn verify_unit(analyze: &Path, root: &Path, unit: &str) {
    let out = run(Command::new(analyze)
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(unit));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), "", "systemd-analyze verify warned");
}

fn root_or_skip() -> bool {
    if is_root() {
        return true;
    }
    support::missing_peer::<()>("installing a service needs root").is_some()
}

#[test]
fn install_into_a_throwaway_root_then_uninstall_keeping_the_archive() {
    if !root_or_skip() {
        return;
    }
    let (Some(analyze), Some(_)) = (
        peer("systemd-analyze", &["systemd-analyze"]),
        peer("useradd", &["useradd", "/usr/sbin/useradd"]),
    ) else {
        return;
    };
    let sb = Sandbox::new("install", json!({}));
    let root = throwaway_root(&sb);
    let root_arg = root.to_str().unwrap();
    let bin = sealpost_bin();
    let out = script(
        "install",
        &["--root", root_arg, "--binary", bin.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let binary = root.join("usr/local/bin/sealpost");
    assert_eq!(mode(&binary), 0o755);
    assert_eq!(fs::read(&binary).unwrap(), fs::read(&bin).unwrap());
    let (uid, gid) = sealpost_ids(&root);
    let data = root.join("var/lib/sealpost");
    let meta = fs::metadata(&data).unwrap();
    assert_eq!((meta.uid(), meta.gid(), mode(&data)), (uid, gid, 0o750));
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains(&format!(
            "sealpost:x:{uid}:{gid}:Sealpost archiving gateway:/var/lib/sealpost:/usr/sbin/nologin"
        )),
        "{passwd}"
    );

    // The configuration: production defaults, readable by the service only.
    let config = root.join("etc/sealpost/gateway.json");
    let meta = fs::metadata(&config).unwrap();
    assert_eq!((meta.uid(), meta.gid(), mode(&config)), (0, gid, 0o640));
    let text = fs::read_to_string(&config).unwrap();
    assert!(!text.contains("@HOSTNAME@"), "{text}");
    let out = run(Command::new(&bin)
        .arg("-c")
        .arg(&config)
        .arg("check-config"));
    assert!(out.status.success(), "{}", stderr(&out));
    let effective: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(effective["data_dir"], "/var/lib/sealpost");
    for (section, key, port) in [
        ("smtp", "listen", 25),
        ("smtp", "listen_tls", 465),
        ("pop3", "listen", 110),
        ("pop3", "listen_tls", 995),
        ("smtp_proxy", "listen", 587),
    ] {
        assert_eq!(
            effective[section][key],
            json!([format!("0.0.0.0:{port}"), format!("[::]:{port}")]),
            "{section}.{key}"
        );
    }

    // The unit: where the binary is, sandboxed, and clean for systemd.
    let unit = root.join("etc/systemd/system/sealpost.service");
    assert_eq!(mode(&unit), 0o644);
    let text = fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/sealpost -c /etc/sealpost/gateway.json serve",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "User=sealpost",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/sealpost",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    verify_unit(&analyze, &root, "/etc/systemd/system/sealpost.service");
    // The failure alert the unit names in OnFailure=, for the failed
    // sealpost.service as systemd would instantiate it.
    assert!(
        text.lines()
            .any(|l| l == "OnFailure=sealpost-alert@%n.service")
    );
    let alert =
        fs::read_to_string(root.join("etc/systemd/system/sealpost-alert@.service")).unwrap();
    assert!(
        alert.lines().any(|l| l
            == "ExecStart=/usr/local/bin/sealpost -c /etc/sealpost/gateway.json alerts failed %i"),
        "{alert}"
    );
    verify_unit(
        &analyze,
        &root,
        "/etc/systemd/system/sealpost-alert@sealpost.service.service",
    );
    let out = run(Command::new(&analyze)
        .args(["security", "--offline=yes"])
        .arg(format!("--root={root_arg}"))
        .arg("sealpost.service"));
    let report = stdout(&out) + &stderr(&out);
    let score: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for sealpost.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    eprintln!("systemd-analyze security sealpost.service: {score} (0 best, 10 worst)");
    assert!(score <= 2.0, "exposure {score}:\n{report}");

    // Installing again keeps an edited configuration and the one user.
    fs::write(&config, text_with_edit(&config)).unwrap();
    let edited = fs::read(&config).unwrap();
    let out = script(
        "install",
        &["--root", root_arg, "--binary", bin.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("kept the existing"),
        "{}",
        stdout(&out)
    );
    assert_eq!(fs::read(&config).unwrap(), edited);
    assert_eq!(sealpost_ids(&root), (uid, gid));

    // Mail in the data directory survives an uninstall.
    fs::write(data.join("keep-me"), b"archive").unwrap();
    let out = script("uninstall", &["--root", root_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!binary.exists() && !unit.exists());
    assert!(
        !root
            .join("etc/systemd/system/sealpost-alert@.service")
            .exists()
    );
    assert_eq!(fs::read(data.join("keep-me")).unwrap(), b"archive");
    assert_eq!(fs::read(&config).unwrap(), edited);
    assert_eq!(sealpost_ids(&root), (uid, gid));

    let out = script("install", &["--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown argument --frobnicate"));
    assert!(script("install", &["--help"]).status.success());
}

/// The configuration with `hostname` changed, as an administrator edits it.
fn text_with_edit(config: &Path) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(&fs::read(config).unwrap()).unwrap();
    value["hostname"] = json!("archive.example.org");
    serde_json::to_vec_pretty(&value).unwrap()
}

#[test]
fn the_debian_package_has_the_installed_layout_and_its_maintainer_scripts() {
    let (Some(_), Some(dpkg_deb), Some(analyze)) = (
        peer("cargo-deb", &["cargo-deb"]),
        peer("dpkg-deb", &["dpkg-deb"]),
        peer("systemd-analyze", &["systemd-analyze"]),
    ) else {
        return;
    };
    let sb = Sandbox::new("deb", json!({}));
    let deb = sb.dir.join("sealpost.deb");
    // From the binary the tests run (--profile dev): the layout is what is
    // checked here; a release package is `cargo deb`.
    let out = run(Command::new("cargo")
        .args(["deb", "--no-build", "--profile", "dev", "--fast", "-o"])
        .arg(&deb)
        .current_dir(repo()));
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run(Command::new(&dpkg_deb).arg("-c").arg(&deb));
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = stdout(&out);
    for (path, perms) in [
        ("./usr/bin/sealpost", "-rwxr-xr-x"),
        ("./usr/lib/systemd/system/sealpost.service", "-rw-r--r--"),
        (
            "./usr/lib/systemd/system/sealpost-alert@.service",
            "-rw-r--r--",
        ),
        ("./usr/share/sealpost/gateway.json", "-rw-r--r--"),
        ("./usr/share/sealpost/sealpost-setup", "-rwxr-xr-x"),
        ("./usr/share/doc/sealpost/README.md", "-rw-r--r--"),
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(perms) && l.ends_with(&format!(" {path}"))),
            "{perms} {path} in\n{listing}"
        );
    }
    let out = run(Command::new(&dpkg_deb).arg("-I").arg(&deb));
    let info = stdout(&out);
    for needle in [
        "Package: sealpost",
        "Section: mail",
        "postinst",
        "prerm",
        "postrm",
    ] {
        assert!(info.contains(needle), "{needle} in\n{info}");
    }

    // The control scripts are ours, and postinst sets up as scripts/install does.
    let control = sb.dir.join("control");
    let out = run(Command::new(&dpkg_deb).arg("-e").arg(&deb).arg(&control));
    assert!(out.status.success(), "{}", stderr(&out));
    let postinst = fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains(
            "/usr/share/sealpost/sealpost-setup --template /usr/share/sealpost/gateway.json"
        ),
        "{postinst}"
    );
    assert!(mode(&control.join("postinst")) & 0o111 != 0);

    // The unpacked package's unit verifies against its own binary.
    let unpacked = sb.dir.join("unpacked");
    let out = run(Command::new(&dpkg_deb).arg("-x").arg(&deb).arg(&unpacked));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read(unpacked.join("usr/lib/systemd/system/sealpost.service")).unwrap(),
        fs::read(repo().join("packaging/sealpost.service")).unwrap()
    );
    add_systemd_basics(&unpacked);
    verify_unit(
        &analyze,
        &unpacked,
        "/usr/lib/systemd/system/sealpost.service",
    );
}

#[test]
fn setup_warns_when_the_machine_name_is_not_fully_qualified() {
    if !root_or_skip() {
        return;
    }
    for (name, warned) in [("vm", true), ("archive.example.org", false)] {
        let sb = Sandbox::new("setup-hostname", json!({}));
        let root = throwaway_root(&sb);
        // A `hostname` that answers `name`, first on the PATH.
        let bin = sb.dir.join("fake-bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("hostname"), format!("#!/bin/sh\necho {name}\n")).unwrap();
        fs::set_permissions(bin.join("hostname"), fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = run(Command::new(repo().join("packaging/sealpost-setup"))
            .arg("--template")
            .arg(repo().join("packaging/gateway.json"))
            .arg("--root")
            .arg(&root)
            .env("PATH", path));
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            stderr(&out).contains("is not a fully qualified domain name"),
            warned,
            "{name}: {}",
            stderr(&out)
        );
        let config = fs::read_to_string(root.join("etc/sealpost/gateway.json")).unwrap();
        assert!(config.contains(&format!("\"{name}\"")), "{config}");
    }
}
