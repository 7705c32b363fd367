use std::io::{Read, Write};

use super::*;
use crate::crypto::{self, KdfParams, KeyPair, Password};

const FAST: KdfParams = KdfParams {
    opslimit: 1,
    memlimit: 8 * 1024 * 1024,
};

fn new_mailbox(store: &Store, password: &str) -> (Mailbox, KeyPair) {
    let pair = KeyPair::generate().unwrap();
    let wrapped = crypto::wrap_secret_key(&pair, &Password::new(password.into()), FAST).unwrap();
    let mailbox = store
        .create_mailbox("Journal", "", pair.public().clone(), &wrapped)
        .unwrap();
    (mailbox, pair)
}

fn metadata() -> Metadata {
    Metadata {
        received: "2026-11-22T19:20:32Z".into(),
        source: Source::Cli,
        mail_from: "a@example.com".into(),
        rcpt_to: vec![],
        client_ip: None,
        tls: None,
        size: 0,
        upstream: None,
    }
}

fn spool_of(store: &Store, body: &[u8]) -> Spool {
    let mut w = store.spool().unwrap();
    w.write_all(body).unwrap();
    w.finish().unwrap()
}

fn read_back(mailbox: &Mailbox, pair: &KeyPair, name: &MessageName) -> (Metadata, Vec<u8>) {
    let mut reader = mailbox.open_message(name, pair).unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    (reader.metadata().clone(), out)
}

#[test]
fn a_created_mailbox_has_the_documented_layout() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (mailbox, _) = new_mailbox(&store, "pw");
    let root = dir.path().join("mailboxes").join(mailbox.id().as_str());
    for file in ["mailbox.json", "secret-key.json"] {
        assert!(root.join(file).is_file(), "{file}");
    }
    assert!(root.join("tmp").is_dir() && root.join("messages").is_dir());
    let info: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("mailbox.json")).unwrap()).unwrap();
    assert_eq!(info["status"], "active");
    assert_eq!(info["id"], mailbox.id().as_str());
    let key: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("secret-key.json")).unwrap()).unwrap();
    assert_eq!(key["kdf"], "argon2id13");
    assert_eq!(key["memlimit"], 8 * 1024 * 1024);
    assert_eq!(
        crypto::base64_decode_exact::<48>(key["wrapped_key"].as_str().unwrap())
            .unwrap()
            .len(),
        48
    );
    assert_eq!(store.mailbox_ids().unwrap(), vec![mailbox.id().clone()]);
}

#[test]
fn delivery_to_several_mailboxes_seals_one_copy_to_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, pair_a) = new_mailbox(&store, "a");
    let (b, pair_b) = new_mailbox(&store, "b");
    let body = b"Subject: x\r\n\r\nhello\r\n";
    let names = store
        .deliver(
            &spool_of(&store, body),
            &[(&a, metadata()), (&b, metadata())],
        )
        .unwrap();
    let (meta, bytes) = read_back(&a, &pair_a, &names[0]);
    assert_eq!(bytes, body);
    assert_eq!(meta.size, body.len() as u64);
    assert_eq!(read_back(&b, &pair_b, &names[1]).1, body);
    assert!(b.open_message(&names[1], &pair_a).is_err());
    assert!(fs::read_dir(a.dir().join("tmp")).unwrap().next().is_none());
}

#[test]
fn a_failed_delivery_leaves_nothing_visible_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, _) = new_mailbox(&store, "a");
    let (b, _) = new_mailbox(&store, "b");
    // The second mailbox's tmp/ cannot take files.
    fs::remove_dir(b.dir().join("tmp")).unwrap();
    let result = store.deliver(
        &spool_of(&store, b"x\r\n"),
        &[(&a, metadata()), (&b, metadata())],
    );
    assert!(matches!(result, Err(StoreError::Io { .. })));
    assert!(a.messages().unwrap().is_empty());
    assert!(fs::read_dir(a.dir().join("tmp")).unwrap().next().is_none());
}

#[test]
fn leftovers_in_tmp_are_removed_by_the_clean_up_not_by_opening() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, _) = new_mailbox(&store, "a");
    fs::write(a.dir().join("tmp").join("1-0123456789abcdef.msg"), b"half").unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(fs::read_dir(a.dir().join("tmp")).unwrap().next().is_some());
    store.remove_leftovers().unwrap();
    assert!(fs::read_dir(a.dir().join("tmp")).unwrap().next().is_none());
}

#[test]
fn the_password_unlocks_and_a_wrong_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, pair) = new_mailbox(&store, "right");
    let unlocked = a.unlock(&Password::new("right".into())).unwrap();
    assert_eq!(unlocked.public(), pair.public());
    assert!(matches!(
        a.unlock(&Password::new("wrong".into())),
        Err(StoreError::WrongPassword(_))
    ));
}

#[test]
fn a_corrupt_key_file_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, _) = new_mailbox(&store, "pw");
    fs::write(a.dir().join("secret-key.json"), b"{\"kdf\": 1}").unwrap();
    let err = a.unlock(&Password::new("pw".into())).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("secret-key.json"));
}

#[test]
fn only_a_suspended_mailbox_is_deleted_and_one_with_messages_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, _) = new_mailbox(&store, "pw");
    store
        .deliver(&spool_of(&store, b"x\r\n"), &[(&a, metadata())])
        .unwrap();
    let mut a = a;
    assert!(matches!(
        store.delete_mailbox(a.id(), Deletion::default()),
        Err(StoreError::Active(_))
    ));
    a.set_status(Status::Suspended).unwrap();
    assert!(matches!(
        store.delete_mailbox(a.id(), Deletion::default()),
        Err(StoreError::NotEmpty(_, 1))
    ));
    let all = Deletion {
        messages_too: true,
        even_if_active: false,
    };
    assert_eq!(store.delete_mailbox(a.id(), all).unwrap(), 1);
    assert!(matches!(
        store.mailbox(a.id()),
        Err(StoreError::NotFound(_))
    ));
    assert!(store.mailbox_ids().unwrap().is_empty());
}

#[test]
fn a_reset_moves_the_old_messages_aside_and_a_late_delivery_joins_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (mut a, old_pair) = new_mailbox(&store, "old password");
    store
        .deliver(&spool_of(&store, b"before\r\n"), &[(&a, metadata())])
        .unwrap();
    // A delivery sealed to the old key, not yet committed.
    let late = a
        .prepare(&spool_of(&store, b"late\r\n"), &metadata())
        .unwrap();
    // A POP3 session holds the mailbox: no reset under it.
    let session = a.try_lock().unwrap();
    let new_pair = KeyPair::generate().unwrap();
    let wrapped =
        crypto::wrap_secret_key(&new_pair, &Password::new("new password".into()), FAST).unwrap();
    assert!(matches!(
        a.reset_keys(new_pair.public().clone(), &wrapped),
        Err(StoreError::InUse(_))
    ));
    drop(session);
    assert_eq!(
        a.reset_keys(new_pair.public().clone(), &wrapped).unwrap(),
        1
    );
    assert!(a.message_names().unwrap().is_empty());
    late.commit().unwrap();
    assert!(
        a.message_names().unwrap().is_empty(),
        "not among the current"
    );
    let retired = a.retired_messages().unwrap();
    assert_eq!(retired.len(), 2);
    // The old password opens them; the new mail is readable with the new one.
    let pairs = a
        .unlock_retired(&Password::new("old password".into()))
        .unwrap();
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].public(), old_pair.public());
    for (dir, name) in &retired {
        let mut reader = a.open_retired_message(dir, name, &pairs[0]).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert!(out == b"before\r\n" || out == b"late\r\n");
    }
    let a = store.mailbox(a.id()).unwrap();
    let names = store
        .deliver(&spool_of(&store, b"after\r\n"), &[(&a, metadata())])
        .unwrap();
    assert_eq!(read_back(&a, &new_pair, &names[0]).1, b"after\r\n");
    assert_eq!(a.purge_retired().unwrap(), 2);
    assert!(a.retired_messages().unwrap().is_empty());
    assert_eq!(a.message_names().unwrap().len(), 1);
}

#[test]
fn a_locked_mailbox_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, _) = new_mailbox(&store, "pw");
    let lock = a.try_lock().unwrap();
    assert!(matches!(a.try_lock(), Err(StoreError::InUse(_))));
    let all = Deletion {
        messages_too: true,
        even_if_active: true,
    };
    assert!(matches!(
        store.delete_mailbox(a.id(), all),
        Err(StoreError::InUse(_))
    ));
    drop(lock);
    assert!(a.try_lock().is_ok());
}

#[test]
fn a_damaged_message_does_not_affect_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, pair) = new_mailbox(&store, "pw");
    let mut names = Vec::new();
    for body in [&b"one\r\n"[..], b"two\r\n", b"three\r\n"] {
        names.extend(
            store
                .deliver(&spool_of(&store, body), &[(&a, metadata())])
                .unwrap(),
        );
    }
    let victim = a.message_path(&names[1]);
    let mut bytes = fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&victim, bytes).unwrap();
    assert_eq!(read_back(&a, &pair, &names[0]).1, b"one\r\n");
    assert_eq!(read_back(&a, &pair, &names[2]).1, b"three\r\n");
    let mut reader = a.open_message(&names[1], &pair).unwrap();
    let err = reader.read_to_end(&mut Vec::new()).unwrap_err();
    let err = mailbox::message_error(&victim, err);
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
}

#[test]
fn the_pop3_index_remembers_hashes_not_uidls() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, _) = new_mailbox(&store, "pw");
    let parts = [
        "anna@example.com",
        "pop.example.com:995",
        "UID-visible-1234",
    ];
    assert!(!a.is_indexed(&parts));
    a.add_to_index(&parts).unwrap();
    a.add_to_index(&parts).unwrap();
    assert!(a.is_indexed(&parts));
    assert!(!a.is_indexed(&["anna@example.com", "pop.example.com:995", "UID-other"]));
    let reopened = store.mailbox(a.id()).unwrap();
    assert!(reopened.is_indexed(&parts), "the index survives");
    for file in walk(dir.path()) {
        let name = file.to_string_lossy().into_owned();
        assert!(
            !name.contains("UID-visible") && !name.contains("pop.example.com"),
            "{name}"
        );
        assert!(
            !fs::read(&file)
                .unwrap()
                .windows(11)
                .any(|w| w == b"UID-visible")
        );
    }
}

#[test]
fn suspend_and_update_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (mut a, _) = new_mailbox(&store, "pw");
    a.set_status(Status::Suspended).unwrap();
    a.update(Some("Archive".into()), Some("all mail".into()))
        .unwrap();
    let again = store.mailbox(a.id()).unwrap();
    assert_eq!(again.info().status, Status::Suspended);
    assert_eq!(again.info().name, "Archive");
    assert!(a.update(Some(" ".into()), None).is_err());
    assert!(a.update(None, Some("tab\tin".into())).is_err());
}

#[test]
fn no_plaintext_of_a_message_lands_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, _) = new_mailbox(&store, "pw");
    let body = b"From: secret-sender@example.org\r\nSubject: Quarterly secret plans\r\n\r\nThe body is secret too.\r\n";
    let mut meta = metadata();
    meta.mail_from = "secret-sender@example.org".into();
    store
        .deliver(&spool_of(&store, body), &[(&a, meta)])
        .unwrap();
    for needle in [&b"secret-sender"[..], b"Quarterly", b"body is secret"] {
        for file in walk(dir.path()) {
            let bytes = fs::read(&file).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} in {}",
                String::from_utf8_lossy(needle),
                file.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
