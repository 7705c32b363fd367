//! Abuse: the administrator's own commands, mistyped or misplaced. A
//! changing command says which gateway it acts on before it acts; a closed
//! standard output is a normal end, with the exit code the command would
//! have had; a control socket path that names some other file does not
//! delete it.

// System calls the standard library does not offer (signals, pipes,
// namespaces, resource limits), each block with its SAFETY comment.
#![allow(unsafe_code)]

mod support;

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use serde_json::json;
use support::{PROGRAM_TIMEOUT, Sandbox, sealpost_bin, stderr};

/// Runs `sealpost -c <config> <args>` with a standard output whose reading
/// end is already closed, so that every write fails with EPIPE.
fn run_with_closed_stdout(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both were just returned by pipe2 and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let child = Command::new("timeout")
        .arg(PROGRAM_TIMEOUT.as_secs().to_string())
        .arg(sealpost_bin())
        .arg("-c")
        .arg(sb.config())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_standard_output_ends_a_command_quietly_with_its_own_exit_code() {
    let sb = Sandbox::new("closed-stdout", json!({}));
    let (id, _) = sb.create_mailbox("Journal");
    let out = sb.run_with_input(&["mailbox", "deliver", &id], b"Subject: x\r\n\r\nx\r\n");
    assert!(out.status.success(), "{}", stderr(&out));
    sb.age_oldest_message(&id, 3 * 24 * 3600);
    // status finds old mail (and no gateway running): exit 4 either way.
    let open = sb.run(&["status", "--json"]);
    assert_eq!(open.status.code(), Some(4), "{}", stderr(&open));
    for args in [
        &["status", "--json"][..],
        &["status"],
        &["status", "--prometheus"],
    ] {
        let out = run_with_closed_stdout(&sb, args);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
        assert!(!stderr(&out).contains("Broken pipe"), "{}", stderr(&out));
    }
    for args in [
        &["mailbox", "list"][..],
        &["mailbox", "list", "--json"],
        &["mailbox", "show", &id],
        &["mailbox", "export-public", &id],
        &["check-config"],
        &["--help"],
    ] {
        let out = run_with_closed_stdout(&sb, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
}

#[test]
fn every_changing_command_names_its_configuration_and_data_directory_first() {
    let sb = Sandbox::new("names-target", json!({}));
    let (id, _) = sb.create_mailbox("Journal");
    let config = sb.config().display().to_string();
    let data = sb.data().display().to_string();
    let backup_dir = sb.dir.join("backups");
    let named = |args: &[&str]| {
        let out = sb.run(args);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("configuration {config}, data directory {data}")),
            "{args:?} does not say what it acts on: {err}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("data directory"),
            "{args:?}: standard output stays clean"
        );
    };
    named(&["mailbox", "suspend", &id]);
    named(&["mailbox", "resume", &id]);
    named(&["mailbox", "update", &id, "--name", "Renamed"]);
    named(&["backup", backup_dir.to_str().unwrap()]);
    named(&["merge", sb.dir.join("nowhere").to_str().unwrap()]);
    let public = sb.dir.join("public.json");
    fs::write(&public, sb.run(&["mailbox", "export-public", &id]).stdout).unwrap();
    named(&["mailbox", "import-public", public.to_str().unwrap()]);
    named(&["mailbox", "reset-password", &id]);
    named(&["mailbox", "delete", &id, "--force"]);
    let pw = sb.password_file("correct horse battery staple 1xY!");
    named(&["console", "passwd", "--password-file", pw.to_str().unwrap()]);
    // A read-only command stays quiet.
    let out = sb.run(&["mailbox", "list"]);
    assert!(!stderr(&out).contains("data directory"), "{}", stderr(&out));
}

#[test]
fn a_control_socket_path_naming_a_file_is_refused_and_the_file_kept() {
    let sb = Sandbox::for_gateway("control-file", json!({}));
    let path = sb.dir.join("precious.txt");
    fs::write(&path, b"an administrator's notes").unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(sb.config()).unwrap()).unwrap();
    config["control_socket"] = json!(path.to_str().unwrap());
    fs::write(sb.config(), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let out = sb.run(&["serve"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("regular file at this path, not a socket"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(&path).unwrap(), b"an administrator's notes");
}

#[test]
fn a_suspended_mailbox_needs_attention_only_while_deliveries_still_reach_it() {
    let sb = Sandbox::new("suspended-attention", json!({}));
    let (id, _) = sb.create_mailbox("Journal");
    assert!(sb.run(&["mailbox", "suspend", &id]).status.success());
    // Kept suspended on purpose, nothing arriving: all well.
    let out = sb.run(&["status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !report["attention"].to_string().contains(&id),
        "{}",
        report["attention"]
    );
    // A journal rule still points at it: the refused delivery is noticed.
    let out = sb.run_with_input(&["mailbox", "deliver", &id], b"Subject: x\r\n\r\nx\r\n");
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    let out = sb.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let attention = report["attention"].to_string();
    assert!(
        attention.contains(&id) && attention.contains("a journal rule still points at it"),
        "{attention}"
    );
}
