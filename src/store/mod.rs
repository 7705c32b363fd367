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
pub mod custody;
pub mod durable;
pub mod flush;
pub mod ids;
pub mod mailbox;
pub mod merge;
pub mod message;
pub mod reserve;
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
            } else if let Ok(id) = name.parse::<MailboxId>() {
                let tmp = path.join(mailbox::TMP_DIR);
                durable::remove_unlocked_files(&tmp).map_err(io_error(&tmp, "cannot clean up"))?;
                if let Ok(mailbox) = self.mailbox(&id) {
                    mailbox.finish_interrupted_removals()?;
                }
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
        let mailbox = result?;
        let detail = wrapped
            .is_none()
            .then_some("a standby's copy: public key only");
        mailbox.record_admin(&[(custody::Event::MailboxCreated, None, detail)])?;
        Ok(mailbox)
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
        let names: Vec<String> = mailbox
            .message_names()?
            .iter()
            .map(MessageName::file_name)
            .chain(
                mailbox
                    .retired_messages()?
                    .iter()
                    .map(|(_, n)| n.file_name()),
            )
            .collect();
        let mut entries = mailbox::removed_entries(&names, "deleted with the mailbox");
        entries.push((custody::Event::MailboxDeleted, None, None));
        mailbox.record_admin(&entries)?;
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
        // Every copy in place first, then made durable: copies on one file
        // system share one flush.
        let mut placed = Vec::with_capacity(pending.len());
        for message in pending {
            match message.place() {
                Ok(p) => placed.push(p),
                Err(e) => {
                    placed.into_iter().for_each(mailbox::Placed::revoke);
                    return Err(e);
                }
            }
        }
        let mut committed = Vec::with_capacity(placed.len());
        let mut failed = None;
        for message in placed {
            match failed {
                Some(_) => message.revoke(),
                None => match message.make_durable() {
                    Ok(c) => committed.push(c),
                    Err(e) => failed = Some(e),
                },
            }
        }
        if let Some(e) = failed {
            committed
                .into_iter()
                .for_each(mailbox::CommittedMessage::revoke);
            return Err(e);
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
mod tests;
