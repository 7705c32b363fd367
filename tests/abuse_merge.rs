//! Abuse: `sealpost merge` and `merge --release` against a hostile or
//! mistaken standby. A standby's directory that leads back into the
//! primary's own (a symbolic link at any level, a bind mount, a tarball
//! that carries a link) must never make merge delete the primary's mail;
//! links inside a standby must neither pull an outside file in nor let
//! merge delete one; and the hand-over receipt deletes on the standby
//! exactly what the primary made durable, where the content still matches.

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use support::{Sandbox, is_root, missing_peer, run, stderr, stdout};

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: journal@example.org\r\nTo: archive@example.org\r\nSubject: {subject}\r\n\r\nBody of {subject}.\r\n"
    )
    .into_bytes()
}

fn deliver(sb: &Sandbox, id: &str, subject: &str) {
    let out = sb.run_with_input(&["mailbox", "deliver", id], &message(subject));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A primary with one mailbox holding `n` messages, and a standby that
/// holds the same mailbox's public half.
fn primary_and_standby(label: &str, n: usize) -> (Sandbox, Sandbox, String) {
    let primary = Sandbox::new(&format!("{label}-primary"), json!({}));
    let (id, _) = primary.create_mailbox("Journal");
    for i in 0..n {
        deliver(&primary, &id, &format!("primary-{i}"));
    }
    let public = primary.run(&["mailbox", "export-public", &id]).stdout;
    let standby = Sandbox::new(&format!("{label}-standby"), json!({}));
    let out = standby.run_with_input(&["mailbox", "import-public", "-"], &public);
    assert!(out.status.success(), "{}", stderr(&out));
    (primary, standby, id)
}

fn merge(primary: &Sandbox, dir: &Path) -> std::process::Output {
    primary.run(&["merge", dir.to_str().unwrap()])
}

/// The merge was refused or skipped (exit 1), and the primary's mail is whole.
#[track_caller]
fn refused_and_intact(out: &std::process::Output, primary: &Sandbox, id: &str, n: usize) {
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(out), stderr(out));
    assert_eq!(primary.message_files(id).len(), n, "{}", stderr(out));
}

#[test]
fn a_standby_mailbox_that_is_a_link_to_the_primarys_own_is_refused() {
    let (primary, standby, id) = primary_and_standby("merge-link-mbx", 21);
    let mbx = standby.mailbox_dir(&id);
    fs::remove_dir_all(&mbx).unwrap();
    symlink(primary.mailbox_dir(&id), &mbx).unwrap();
    let out = merge(&primary, &standby.data());
    refused_and_intact(&out, &primary, &id, 21);
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
}

#[test]
fn a_standby_whose_mailboxes_dir_links_to_the_primarys_is_refused() {
    let (primary, standby, id) = primary_and_standby("merge-link-dir", 3);
    let mailboxes = standby.data().join("mailboxes");
    fs::remove_dir_all(&mailboxes).unwrap();
    symlink(primary.data().join("mailboxes"), &mailboxes).unwrap();
    let out = merge(&primary, &standby.data());
    refused_and_intact(&out, &primary, &id, 3);
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
}

#[test]
fn a_standby_path_that_is_the_primarys_whole_tree_is_refused() {
    let (primary, standby, id) = primary_and_standby("merge-link-tree", 23);
    let alias = standby.dir.join("alias");
    symlink(primary.data(), &alias).unwrap();
    let out = merge(&primary, &alias);
    refused_and_intact(&out, &primary, &id, 23);
    assert!(
        stderr(&out).contains("this gateway's own data directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bind_mount_of_the_primarys_mailbox_is_refused() {
    if !is_root() {
        missing_peer::<()>("a bind mount needs root");
        return;
    }
    let Some(unshare) = support::peer("unshare (util-linux)", &["unshare"]) else {
        return;
    };
    let (primary, standby, id) = primary_and_standby("merge-bind", 5);
    let mbx = standby.mailbox_dir(&id);
    // In a mount namespace of its own, so the mount ends with the command.
    let script = format!(
        "mount --bind '{}' '{}' && exec '{}' -c '{}' merge '{}'",
        primary.mailbox_dir(&id).display(),
        mbx.display(),
        support::sealpost_bin().display(),
        primary.config().display(),
        standby.data().display()
    );
    let out = run(Command::new("timeout")
        .arg("60")
        .arg(unshare)
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(script));
    refused_and_intact(&out, &primary, &id, 5);
    assert!(
        stderr(&out).contains("is this gateway's own mailbox"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_tarball_that_carries_a_link_to_the_primary_is_refused() {
    let (primary, standby, id) = primary_and_standby("merge-tar", 4);
    // The README's hand-over, with a standby whose mailbox is a link.
    let staging = standby.dir.join("staging");
    fs::create_dir_all(staging.join("mailboxes")).unwrap();
    symlink(
        primary.mailbox_dir(&id),
        staging.join("mailboxes").join(&id),
    )
    .unwrap();
    let tarball = standby.dir.join("standby.tar");
    let out = run(Command::new("tar")
        .arg("-C")
        .arg(&staging)
        .arg("-cf")
        .arg(&tarball)
        .arg("mailboxes"));
    assert!(out.status.success(), "{}", stderr(&out));
    let unpacked = standby.dir.join("sealpost-standby");
    fs::create_dir_all(&unpacked).unwrap();
    let out = run(Command::new("tar")
        .arg("-C")
        .arg(&unpacked)
        .arg("-xf")
        .arg(&tarball));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        fs::symlink_metadata(unpacked.join("mailboxes").join(&id))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let out = merge(&primary, &unpacked);
    refused_and_intact(&out, &primary, &id, 4);
}

/// A file outside both gateways, named like a message.
fn outside_file(sb: &Sandbox, name: &str) -> PathBuf {
    let dir = sb.dir.join("outside");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, b"not mail, and not the standby's to give").unwrap();
    path
}

#[test]
fn a_linked_message_in_a_standby_pulls_nothing_in() {
    let (primary, standby, id) = primary_and_standby("merge-link-msg", 1);
    deliver(&standby, &id, "standby-0");
    let name = "1700000000000000-00000000000000aa,S=10.msg";
    let outside = outside_file(&standby, name);
    symlink(
        &outside,
        standby.mailbox_dir(&id).join("messages").join(name),
    )
    .unwrap();
    let out = merge(&primary, &standby.data());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    // The real standby message came over; the link's target did not.
    assert_eq!(primary.message_files(&id).len(), 2);
    assert!(
        !primary
            .mailbox_dir(&id)
            .join("messages")
            .join(name)
            .exists()
    );
    assert!(outside.exists());
}

#[test]
fn a_linked_messages_dir_in_a_standby_lets_nothing_outside_be_deleted() {
    let (primary, standby, id) = primary_and_standby("merge-link-msgs", 1);
    let name = "1700000000000000-00000000000000bb,S=10.msg";
    let outside = outside_file(&standby, name);
    let messages = standby.mailbox_dir(&id).join("messages");
    fs::remove_dir_all(&messages).unwrap();
    symlink(outside.parent().unwrap(), &messages).unwrap();
    let out = merge(&primary, &standby.data());
    refused_and_intact(&out, &primary, &id, 1);
    assert!(outside.exists(), "merge deleted a file outside the standby");
}

#[test]
fn the_receipt_releases_exactly_what_was_merged_and_only_on_the_standby() {
    let (primary, standby, id) = primary_and_standby("merge-receipt", 1);
    for i in 0..4 {
        deliver(&standby, &id, &format!("standby-{i}"));
    }
    // The hand-over: a copy of the standby's mailboxes on the primary.
    let copy = primary.dir.join("sealpost-standby");
    let out = run(Command::new("cp").arg("-a").arg(standby.data()).arg(&copy));
    assert!(out.status.success(), "{}", stderr(&out));
    // One more message reaches the standby after the copy was taken: the
    // receipt does not name it, so release must keep it.
    deliver(&standby, &id, "standby-late");

    let out = merge(&primary, &copy);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Merged 4 message(s)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains(&format!("data directory {}", primary.data().display())),
        "merge names the data directory it acts on: {}",
        stderr(&out)
    );
    assert_eq!(primary.message_files(&id).len(), 5);
    let receipt_line = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("Receipt: ").map(str::to_owned))
        .expect("a receipt");
    let receipt = PathBuf::from(receipt_line);
    let parsed: serde_json::Value = serde_json::from_slice(&fs::read(&receipt).unwrap()).unwrap();
    assert_eq!(parsed["messages"].as_array().unwrap().len(), 4);

    // Released on the primary by mistake: refused, nothing removed.
    let out = primary.run(&["merge", "--release", receipt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("made the receipt"),
        "{}",
        stderr(&out)
    );
    assert_eq!(primary.message_files(&id).len(), 5);

    // The archiver takes everything on the primary; then a second copy of
    // the (not yet released) standby is merged: nothing is delivered twice.
    for f in primary.message_files(&id) {
        fs::remove_file(f).unwrap();
    }
    let copy2 = primary.dir.join("sealpost-standby-2");
    let out = run(Command::new("cp").arg("-a").arg(standby.data()).arg(&copy2));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = merge(&primary, &copy2);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Merged 1 message(s); 0 were here already; 4 were merged before"),
        "{}",
        stdout(&out)
    );
    assert_eq!(primary.message_files(&id).len(), 1, "only the late one");

    // On the standby, one named file has changed meanwhile: it is kept.
    let files = standby.message_files(&id);
    assert_eq!(files.len(), 5);
    let changed = files
        .iter()
        .find(|f| {
            parsed["messages"][0]["file"].as_str().unwrap()
                == f.file_name().unwrap().to_str().unwrap()
        })
        .unwrap()
        .clone();
    let mut bytes = fs::read(&changed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&changed, bytes).unwrap();
    let out = standby.run(&["merge", "--release", receipt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("Released 3 message file(s)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("differs from the receipt"),
        "{}",
        stderr(&out)
    );
    let left: Vec<PathBuf> = standby.message_files(&id);
    assert_eq!(left.len(), 2, "the changed one and the late one: {left:?}");
    assert!(left.contains(&changed));
    // Run again: nothing more goes.
    let out = standby.run(&["merge", "--release", receipt.to_str().unwrap()]);
    assert!(stdout(&out).contains("Released 0"), "{}", stdout(&out));
    assert_eq!(standby.message_files(&id).len(), 2);
}

#[test]
fn a_release_receipt_that_is_not_one_is_refused() {
    let sb = Sandbox::new("merge-bad-receipt", json!({}));
    let bad = sb.dir.join("receipt.json");
    fs::write(&bad, br#"{"kind":"sealpost-merge-receipt","id":"ab","created":"x","messages":[{"mailbox":"../../etc","file":"passwd","sha256":"00"}]}"#).unwrap();
    let out = sb.run(&["merge", "--release", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("mailbox \"../../etc\""),
        "{}",
        stderr(&out)
    );
    let out = sb.run(&["merge", "--release", sb.dir.join("none").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}
