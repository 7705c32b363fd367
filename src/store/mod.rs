//! The encrypted mailbox store. It knows directories, files and the message
//! format; it knows nothing of protocols.
//!
//! ```text
//! <data_dir>/mailboxes/<id>/mailbox.json
//! <data_dir>/mailboxes/<id>/secret-key.json
//! <data_dir>/mailboxes/<id>/tmp/         files being written; leftovers removed when serve starts
//! <data_dir>/mailboxes/<id>/messages/    one immutable file per message
//! <data_dir>/spool/                      messages being received (anonymous files)
//! ```

pub mod backup;
pub mod beneath;
pub mod durable;
pub mod ids;
pub mod mailbox;
pub mod merge;
pub mod message;
pub mod sealed;
pub mod spool;

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use ids::{MailboxId, MessageName};
pub use mailbox::{Mailbox, MailboxInfo, MailboxLock, MailboxStats, MessageEntry, Status};
pub use message::{Metadata, Source};
pub use spool::{Spool, SpoolWriter};

use crate::crypto::{CryptoError, PublicKey, WrappedKey};
use crate::timestamp;

/// Everything the store can fail with, worded for a mail administrator.
#[derive(Debug)]
pub enum StoreError {
    /// No mailbox with this id.
    NotFound(MailboxId),
    /// The password does not unlock the mailbox key.
    WrongPassword(MailboxId),
    /// A file or directory operation failed.
    Io {
        /// What it was done to.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The system's reason.
        source: io::Error,
    },
    /// A mailbox or key file cannot be understood.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A message file cannot be read to its end.
    Damaged {
        /// The message file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The mailbox still holds messages.
    NotEmpty(MailboxId, usize),
    /// Another session holds the mailbox.
    InUse(MailboxId),
    /// The mailbox must be suspended first.
    Active(MailboxId),
    /// A value given by the user is not acceptable.
    Invalid(String),
    /// A cryptographic operation failed.
    Crypto(CryptoError),
    /// The mailbox holds only its public key here (a standby's copy): mail
    /// can be stored for it but not read.
    PublicOnly(MailboxId),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(id) => write!(f, "mailbox {id} does not exist"),
            StoreError::WrongPassword(id) => write!(f, "wrong password for mailbox {id}"),
            StoreError::Io { path, op, source } => write!(f, "{}: {op}: {source}", path.display()),
            StoreError::Corrupt { path, reason } => {
                write!(f, "{}: the file is not valid: {reason}", path.display())
            }
            StoreError::Damaged { path, reason } => {
                write!(f, "{}: damaged message file: {reason}", path.display())
            }
            StoreError::NotEmpty(id, n) => write!(
                f,
                "mailbox {id} still holds {n} message(s); add --force to delete them with it"
            ),
            StoreError::InUse(id) => write!(f, "mailbox {id} is in use by another session"),
            StoreError::Active(id) => write!(
                f,
                "mailbox {id} is active: suspend it first (sealpost mailbox suspend {id}), so \
                 that senders whose journal rule still points at it get a temporary error \
                 while the rule is changed, not a permanent one"
            ),
            StoreError::Invalid(why) => f.write_str(why),
            StoreError::Crypto(e) => e.fmt(f),
            StoreError::PublicOnly(id) => write!(
                f,
                "mailbox {id} holds only its public key on this gateway (a standby copy): \
                 its mail can be read only on the gateway that holds its secret key"
            ),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// Whether trying again later cannot help: the mailbox does not exist
    /// (any more), or the request itself is wrong. Everything else (a full
    /// disk, a permission, a damaged file) is worth a retry, and so a
    /// temporary `4xx` for a sender.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound(_)
                | StoreError::Invalid(_)
                | StoreError::NotEmpty(..)
                | StoreError::Active(_)
                | StoreError::PublicOnly(_)
        )
    }
}

impl From<StoreError> for crate::failure::Failure {
    /// What a protocol machine learns of a store error: its text, and
    /// whether retrying can help.
    fn from(e: StoreError) -> crate::failure::Failure {
        match e.is_permanent() {
            true => crate::failure::Failure::Permanent(e.to_string()),
            false => crate::failure::Failure::Temporary(e.to_string()),
        }
    }
}

/// Wraps an I/O error with its path and operation.
pub(crate) fn io_error(
    path: &Path,
    op: &'static str,
) -> impl FnOnce(io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |source| StoreError::Io { path, op, source }
}

const MAILBOXES_DIR: &str = "mailboxes";
/// The console administrator's Argon2id hash (`sealpost console passwd`).
pub(crate) const CONSOLE_PASSWORD_FILE: &str = "console-password";
const SPOOL_DIR: &str = "spool";
const SERVE_LOCK: &str = "serve.lock";
const CREATING: &str = ".creating";
const DELETING: &str = ".deleting";
/// A half-created mailbox older than this is a crash leftover.
const STALE_STAGING: Duration = Duration::from_secs(600);

/// The data directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store under `data_dir`. Nothing is
    /// removed: read-only commands work without write access, and a CLI
    /// command never cleans up under a running gateway.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let store = Store {
            root: data_dir.to_path_buf(),
        };
        for dir in [
            store.root.clone(),
            store.mailboxes_dir(),
            store.root.join(SPOOL_DIR),
        ] {
            fs::create_dir_all(&dir).map_err(io_error(&dir, "cannot create directory"))?;
        }
        Ok(store)
    }

    /// Checks that every directory the gateway writes to takes a new file:
    /// the data directory, the spool, the mailboxes directory, and each
    /// mailbox's `tmp/` and `messages/`. Run before `serve` says ready, so
    /// that an unwritable directory stops start-up, named, instead of
    /// answering every message with a 451. (Only `serve` runs it: read-only
    /// commands need no write access.)
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let mut dirs = vec![
            self.root.clone(),
            self.root.join(SPOOL_DIR),
            self.mailboxes_dir(),
        ];
        for id in self.mailbox_ids()? {
            let dir = self.mailboxes_dir().join(id.as_str());
            dirs.push(dir.join(mailbox::TMP_DIR));
            dirs.push(dir.join(mailbox::MESSAGES_DIR));
        }
        for dir in dirs {
            let probe = dir.join(format!(".write-check-{}", std::process::id()));
            durable::create_new_private_file(&probe)
                .and_then(|_| match fs::remove_file(&probe) {
                    // Another node starting on the same data directory
                    // cleaned up `tmp/` meanwhile and took the probe with
                    // it: the directory took the file, which is the point.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    other => other,
                })
                .map_err(io_error(&dir, "the gateway cannot write here"))?;
        }
        Ok(())
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn mailboxes_dir(&self) -> PathBuf {
        self.root.join(MAILBOXES_DIR)
    }

    /// Removes what crashed writers left behind: unlocked spool and `tmp/`
    /// files, half-created and half-deleted mailboxes. `serve` runs it at
    /// start-up, holding the data directory's lock.
    pub fn remove_leftovers(&self) -> Result<(), StoreError> {
        let spool = self.root.join(SPOOL_DIR);
        durable::remove_unlocked_files(&spool).map_err(io_error(&spool, "cannot clean up"))?;
        let dir = self.mailboxes_dir();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir, "cannot list"))? {
            let entry = entry.map_err(io_error(&dir, "cannot list"))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(DELETING)
                || (name.ends_with(CREATING) && is_older_than(&path, STALE_STAGING))
            {
                let _ = fs::remove_dir_all(&path);
            } else if name.parse::<MailboxId>().is_ok() {
                let tmp = path.join(mailbox::TMP_DIR);
                durable::remove_unlocked_files(&tmp).map_err(io_error(&tmp, "cannot clean up"))?;
            }
        }
        Ok(())
    }

    /// Creates a mailbox. It appears whole or not at all.
    pub fn create_mailbox(
        &self,
        name: &str,
        description: &str,
        public_key: PublicKey,
        wrapped: &WrappedKey,
    ) -> Result<Mailbox, StoreError> {
        mailbox::check_label("name", name, 200, true)?;
        mailbox::check_label("description", description, 2000, false)?;
        let info = MailboxInfo {
            id: MailboxId::generate(),
            name: name.to_string(),
            description: description.to_string(),
            status: Status::Active,
            created: timestamp::rfc3339(SystemTime::now()),
            public_key,
        };
        self.install_mailbox(info, Some(wrapped))
    }

    /// Writes a mailbox whole under a staging name, then renames it into
    /// place: it appears whole or not at all.
    fn install_mailbox(
        &self,
        info: MailboxInfo,
        wrapped: Option<&WrappedKey>,
    ) -> Result<Mailbox, StoreError> {
        let id = info.id.clone();
        let dest = self.mailboxes_dir().join(id.as_str());
        if dest.exists() {
            return Err(StoreError::Invalid(format!(
                "mailbox {id} already exists on this gateway"
            )));
        }
        let staging = self.mailboxes_dir().join(format!("{id}{CREATING}"));
        durable::create_private_dir(&staging)
            .map_err(io_error(&staging, "cannot create directory"))?;
        let result = Mailbox::initialise(&staging, info, wrapped).and_then(|_| {
            fs::rename(&staging, &dest).map_err(io_error(&dest, "cannot create"))?;
            let dir = self.mailboxes_dir();
            durable::sync_dir(&dir).map_err(io_error(&dir, "cannot sync"))?;
            Mailbox::load(dest, &id)
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result
    }

    /// Creates a mailbox from another gateway's `mailbox.json` (`mailbox
    /// export-public`): the same id and public key, and no secret key. This
    /// gateway can then store mail for it (a standby MX) but never read it.
    pub fn import_public(&self, info_json: &[u8]) -> Result<Mailbox, StoreError> {
        let info = mailbox::parse_info(info_json, Path::new("the imported file"))?;
        self.install_mailbox(info, None)
    }

    /// Opens a mailbox by id.
    pub fn mailbox(&self, id: &MailboxId) -> Result<Mailbox, StoreError> {
        Mailbox::load(self.mailboxes_dir().join(id.as_str()), id)
    }

    /// The ids of all mailboxes, sorted.
    pub fn mailbox_ids(&self) -> Result<Vec<MailboxId>, StoreError> {
        let dir = self.mailboxes_dir();
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir, "cannot list"))? {
            let entry = entry.map_err(io_error(&dir, "cannot list"))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<MailboxId>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Deletes a mailbox. Only a suspended one, unless `how.even_if_active`:
    /// a journal rule still pointing at a deleted mailbox gets `550` and
    /// the sender disables the rule, whereas a suspended one answers `4xx`
    /// while the rule is changed (as MailStore Gateway does). One holding
    /// messages only with `how.messages_too`. Refused while a session
    /// holds the mailbox.
    pub fn delete_mailbox(&self, id: &MailboxId, how: Deletion) -> Result<usize, StoreError> {
        let mailbox = self.mailbox(id)?;
        if mailbox.info().status == Status::Active && !how.even_if_active {
            return Err(StoreError::Active(id.clone()));
        }
        let _lock = mailbox.try_lock()?;
        // Those a password reset moved aside count too: deleting them loses them.
        let count = mailbox.message_names()?.len() + mailbox.retired_messages()?.len();
        if count > 0 && !how.messages_too {
            return Err(StoreError::NotEmpty(id.clone(), count));
        }
        // Renamed first so that the mailbox disappears at once, whole.
        let doomed = self.mailboxes_dir().join(format!("{id}{DELETING}"));
        fs::rename(mailbox.dir(), &doomed).map_err(io_error(mailbox.dir(), "cannot delete"))?;
        let dir = self.mailboxes_dir();
        durable::sync_dir(&dir).map_err(io_error(&dir, "cannot sync"))?;
        fs::remove_dir_all(&doomed).map_err(io_error(&doomed, "cannot remove"))?;
        Ok(count)
    }

    /// The console administrator's password hash, if one was set.
    pub fn console_password_hash(&self) -> Result<Option<String>, StoreError> {
        let path = self.root.join(CONSOLE_PASSWORD_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned()).filter(|h| !h.is_empty())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path, "cannot read")(e)),
        }
    }

    /// Sets the console administrator's password hash (replaced whole, 0600).
    pub fn set_console_password_hash(&self, hash: &str) -> Result<(), StoreError> {
        durable::replace_file(
            &self.root,
            CONSOLE_PASSWORD_FILE,
            format!("{hash}\n").as_bytes(),
        )
        .map_err(io_error(
            &self.root.join(CONSOLE_PASSWORD_FILE),
            "cannot write",
        ))
    }

    /// Starts receiving a message.
    pub fn spool(&self) -> Result<SpoolWriter, StoreError> {
        let dir = self.root.join(SPOOL_DIR);
        SpoolWriter::create(&dir).map_err(io_error(&dir, "cannot create a spool file"))
    }

    /// Stores one received message into every mailbox given, each copy sealed
    /// to its own key with its own metadata. Either every copy is durable and
    /// visible, or none is.
    pub fn deliver(
        &self,
        spool: &Spool,
        copies: &[(&Mailbox, Metadata)],
    ) -> Result<Vec<MessageName>, StoreError> {
        let pending = copies
            .iter()
            .map(|(mailbox, metadata)| mailbox.prepare(spool, metadata))
            .collect::<Result<Vec<_>, _>>()?;
        let mut committed = Vec::with_capacity(pending.len());
        for message in pending {
            match message.commit() {
                Ok(c) => committed.push(c),
                Err(e) => {
                    committed
                        .into_iter()
                        .for_each(mailbox::CommittedMessage::revoke);
                    return Err(e);
                }
            }
        }
        Ok(committed.iter().map(|c| c.name().clone()).collect())
    }
}

/// How far [`Store::delete_mailbox`] may go.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deletion {
    /// Delete the messages nobody retrieved too.
    pub messages_too: bool,
    /// Delete a mailbox that is not suspended (the CLI's explicit override).
    pub even_if_active: bool,
}

/// Held by the one gateway serving a data directory; the kernel releases it
/// when the process ends, however it ends.
#[derive(Debug)]
pub struct ServingLock {
    _file: fs::File,
}

/// Takes `<data_dir>/serve.lock` (creating the directory if needed), so that
/// a second `sealpost serve` on the same data directory refuses to start
/// instead of sharing mailboxes, locks and clean-ups with the first.
///
/// Several gateways may share one data directory (a cluster on a shared
/// file system), each under its own `node` name: each then holds
/// `serve-<node>.lock`, and only a second gateway with the same name refuses.
pub fn lock_for_serving(data_dir: &Path, node: Option<&str>) -> Result<ServingLock, StoreError> {
    fs::create_dir_all(data_dir).map_err(io_error(data_dir, "cannot create directory"))?;
    let path = data_dir.join(serve_lock_name(node));
    let mut file = durable::open_lock_file(&path).map_err(io_error(&path, "cannot open"))?;
    if !durable::try_lock_exclusive(&file).map_err(io_error(&path, "cannot lock"))? {
        let holder = fs::read_to_string(&path).unwrap_or_default();
        let holder = holder.trim();
        let who = if holder.is_empty() {
            String::new()
        } else {
            format!(" (pid {holder})")
        };
        return Err(StoreError::Invalid(format!(
            "{}: another Sealpost gateway{who} is already serving this data directory",
            data_dir.display()
        )));
    }
    // Who holds it, for the message above; the lock is what counts.
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(ServingLock { _file: file })
}

/// The gateway serving `data_dir`, as `serve.lock` names it, if that process
/// is alive and is a Sealpost. Reads only: the lock itself is not touched,
/// so a gateway starting at this moment is never refused because of it.
pub fn serving_pid(data_dir: &Path, node: Option<&str>) -> Option<u32> {
    let pid: u32 = fs::read_to_string(data_dir.join(serve_lock_name(node)))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "sealpost").then_some(pid)
}

fn serve_lock_name(node: Option<&str>) -> String {
    match node {
        Some(node) => format!("serve-{node}.lock"),
        None => SERVE_LOCK.into(),
    }
}

fn is_older_than(path: &Path, age: Duration) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|elapsed| elapsed > age)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::crypto::{self, KdfParams, KeyPair, Password};

    const FAST: KdfParams = KdfParams {
        opslimit: 1,
        memlimit: 8 * 1024 * 1024,
    };

    fn new_mailbox(store: &Store, password: &str) -> (Mailbox, KeyPair) {
        let pair = KeyPair::generate().unwrap();
        let wrapped =
            crypto::wrap_secret_key(&pair, &Password::new(password.into()), FAST).unwrap();
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
            crypto::wrap_secret_key(&new_pair, &Password::new("new password".into()), FAST)
                .unwrap();
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
}
