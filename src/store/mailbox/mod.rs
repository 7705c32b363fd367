//! One mailbox directory: `mailbox.json`, `secret-key.json`, `tmp/`, `messages/`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use log::warn;
use serde::{Deserialize, Serialize};

use super::beneath;
use super::ids::{MailboxId, MessageName};
use super::message::{self, MessageReader, Metadata};
use super::sealed::damage_of;
use super::spool::Spool;
use super::{StoreError, custody, durable, flush, io_error};
use crate::crypto::{self, KdfParams, KeyPair, Password, PublicKey, WrappedKey};
use crate::timestamp;

pub(super) const INFO_FILE: &str = "mailbox.json";
pub(super) const KEY_FILE: &str = "secret-key.json";
pub(super) const TMP_DIR: &str = "tmp";
pub(super) const MESSAGES_DIR: &str = "messages";
/// Messages a POP3 QUIT is removing: moved here out of `messages/`, then
/// made durable by one flush, then unlinked. A flush that fails puts them
/// back; whatever a crash leaves here is removed at the next start (the
/// client asked for their deletion, and had retrieved them).
pub(super) const REMOVING_DIR: &str = "removing";
const LOCK_FILE: &str = "lock";
/// Its modification time is the last POP3 login (`sealpost status`).
const RETRIEVED_FILE: &str = "last-retrieval";
/// Its modification time is the last delivery refused because the mailbox
/// is suspended: a journal rule still points at it.
const REFUSED_FILE: &str = "last-refused-while-suspended";
/// Its modification time is the last delivery into the mailbox (the
/// alerts' "journal mail stopped"); it outlives the messages themselves.
const DELIVERED_FILE: &str = "last-delivery";
/// Those times are recorded at most this often: no write, and no flush,
/// per message; a crash may lose the last minute of them.
const MARKER_GRANULARITY: std::time::Duration = std::time::Duration::from_secs(60);

/// Sets the modification time of the marker `dir/name` to now, unless it
/// is less than [`MARKER_GRANULARITY`] old.
pub(super) fn touch_marker(dir: &Path, name: &str) -> std::io::Result<()> {
    let path = dir.join(name);
    let now = SystemTime::now();
    let recent = fs::symlink_metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d < MARKER_GRANULARITY));
    if recent {
        return Ok(());
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .and_then(|f| f.set_modified(now))
}
/// The data directory a mailbox directory (`<data_dir>/mailboxes/<id>`) is in.
pub(super) fn data_root(mailbox_dir: &Path) -> &Path {
    mailbox_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(mailbox_dir)
}

/// The mailbox id a mailbox directory is named after.
pub(super) fn mailbox_id_of(mailbox_dir: &Path) -> String {
    mailbox_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A custody entry of the administrator's: the event, the message file, a detail.
pub type AdminEntry<'a> = (custody::Event, Option<&'a str>, Option<&'a str>);

/// "removed" entries for these message files, saying how.
pub fn removed_entries<'a>(files: &'a [String], how: &'a str) -> Vec<AdminEntry<'a>> {
    files
        .iter()
        .map(|f| (custody::Event::Removed, Some(f.as_str()), Some(how)))
        .collect()
}

pub(super) const RETIRED_DIR: &str = "retired-keys";
/// Present in a standby's copy of a mailbox (`import-public`): it has no
/// secret key by design. Without it, a missing key file is damage.
pub(super) const PUBLIC_ONLY_FILE: &str = "public-only";
pub(super) const POP3_INDEX_DIR: &str = "pop3-index";
/// Messages sealed to a key that a password reset retired:
/// `retired/<stamp>/messages/`, with the retired public key in
/// `retired/<stamp>/public-key` and its wrapped secret key in
/// `retired-keys/<stamp>.json`. POP3 never lists them (the file format
/// carries no key id, and trying keys at login would undo the login times
/// of big mailboxes, so the place is the mark); `mailbox export --retired`
/// reads them with the old password, `mailbox purge-retired` removes them.
pub(super) const RETIRED_MESSAGES_DIR: &str = "retired";
const RETIRED_PUBLIC_KEY: &str = "public-key";
/// Locked shared while a delivery moves its message into `messages/`, and
/// exclusively while a password reset changes the keys and moves the
/// messages aside: a delivery sealed to the old key that finishes after
/// the reset sees the new key and goes among the retired messages.
const KEYS_LOCK: &str = "keys.lock";
/// `mailbox.json` and `secret-key.json` are a few hundred bytes; a larger
/// one is not ours.
const MAX_SMALL_FILE: u64 = 64 * 1024;

mod pending;
mod removal;
mod retired;

pub use pending::{CommittedMessage, PendingMessage, Placed};

/// Whether a mailbox takes new mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepts mail.
    Active,
    /// Refuses new mail with a temporary error; POP3 retrieval still works.
    Suspended,
}

impl Status {
    /// `active` or `suspended`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Suspended => "suspended",
        }
    }
}

/// What `mailbox.json` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    /// The id, equal to the directory name.
    pub id: MailboxId,
    /// A short human name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Active or suspended.
    pub status: Status,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Messages are sealed to this key.
    pub public_key: PublicKey,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InfoFile {
    id: String,
    name: String,
    description: String,
    status: Status,
    created: String,
    public_key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    kdf: String,
    opslimit: u64,
    memlimit: u64,
    salt: String,
    nonce: String,
    wrapped_key: String,
}

const KDF_NAME: &str = "argon2id13";

/// Parses and checks the contents of a `mailbox.json` read from `path`.
pub(super) fn parse_info(text: &[u8], path: &Path) -> Result<MailboxInfo, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file: InfoFile = serde_json::from_slice(text).map_err(|e| corrupt(e.to_string()))?;
    let id: MailboxId = file.id.parse().map_err(corrupt)?;
    check_label("name", &file.name, 200, true)?;
    check_label("description", &file.description, 2000, false)?;
    let key = crypto::base64_decode_exact::<32>(&file.public_key)
        .map_err(|e| corrupt(format!("public_key: {e}")))?;
    Ok(MailboxInfo {
        id,
        name: file.name,
        description: file.description,
        status: file.status,
        created: file.created,
        public_key: PublicKey::from_bytes(&key).map_err(|e| corrupt(e.to_string()))?,
    })
}

/// Checks a mailbox name or description: printable, bounded.
pub fn check_label(what: &str, text: &str, max: usize, required: bool) -> Result<(), StoreError> {
    if required && text.trim().is_empty() {
        return Err(StoreError::Invalid(format!("the {what} must not be empty")));
    }
    if text.chars().count() > max {
        return Err(StoreError::Invalid(format!(
            "the {what} is longer than {max} characters"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "the {what} must not contain control characters"
        )));
    }
    Ok(())
}

/// A message file in `messages/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEntry {
    /// The message's name: its UIDL and, for newer files, its size.
    pub name: MessageName,
    /// Size of the encrypted file.
    pub file_bytes: u64,
}

/// Totals for `mailbox list`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxStats {
    /// Messages stored.
    pub messages: usize,
    /// Bytes on disk (encrypted files).
    pub bytes: u64,
    /// When the newest message was stored.
    pub newest: Option<SystemTime>,
    /// When the oldest message was stored: mail waiting this long means the
    /// archiver is not collecting.
    pub oldest: Option<SystemTime>,
    /// The last POP3 login to the mailbox, if any was recorded.
    pub last_retrieved: Option<SystemTime>,
    /// What `messages/` holds that is not a regular file (a directory, a
    /// FIFO, a link), each named with its kind: never read, counted by
    /// `sealpost status`.
    pub strays: Vec<String>,
}

/// An open mailbox directory.
#[derive(Debug, Clone)]
pub struct Mailbox {
    dir: PathBuf,
    info: MailboxInfo,
}

impl Mailbox {
    /// Writes a complete new mailbox into `dir` (which must be empty).
    /// Without `wrapped` the mailbox holds only its public key (a standby's copy).
    pub(super) fn initialise(
        dir: &Path,
        info: MailboxInfo,
        wrapped: Option<&WrappedKey>,
    ) -> Result<Mailbox, StoreError> {
        for sub in [TMP_DIR, MESSAGES_DIR] {
            let path = dir.join(sub);
            durable::create_private_dir(&path)
                .map_err(io_error(&path, "cannot create directory"))?;
        }
        let mailbox = Mailbox {
            dir: dir.to_path_buf(),
            info,
        };
        match wrapped {
            Some(wrapped) => mailbox.write_key_file(wrapped)?,
            None => durable::replace_file(
                dir,
                PUBLIC_ONLY_FILE,
                b"A standby copy: this gateway stores mail for the mailbox and cannot read it.\n",
            )
            .map_err(io_error(&dir.join(PUBLIC_ONLY_FILE), "cannot write"))?,
        }
        mailbox.write_info()?;
        Ok(mailbox)
    }

    /// Reads `dir/mailbox.json` and checks it belongs to `id`.
    pub(super) fn load(dir: PathBuf, id: &MailboxId) -> Result<Mailbox, StoreError> {
        let path = dir.join(INFO_FILE);
        let text = beneath::read_regular(&path, MAX_SMALL_FILE).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::NotFound(id.clone())
            } else {
                io_error(&path, "cannot read")(e)
            }
        })?;
        let info = parse_info(&text, &path)?;
        if &info.id != id {
            return Err(StoreError::Corrupt {
                path,
                reason: format!("it names mailbox {}, not {id}", info.id),
            });
        }
        Ok(Mailbox { dir, info })
    }

    /// `mailbox.json` as it is on disk: what `mailbox export-public` prints.
    pub fn info_json(&self) -> Result<Vec<u8>, StoreError> {
        let path = self.dir.join(INFO_FILE);
        beneath::read_regular(&path, MAX_SMALL_FILE).map_err(io_error(&path, "cannot read"))
    }

    /// Whether this is a standby's copy, which holds only the public key.
    pub fn is_public_only(&self) -> bool {
        self.dir.join(PUBLIC_ONLY_FILE).exists()
    }

    fn write_info(&self) -> Result<(), StoreError> {
        let file = InfoFile {
            id: self.info.id.to_string(),
            name: self.info.name.clone(),
            description: self.info.description.clone(),
            status: self.info.status,
            created: self.info.created.clone(),
            public_key: crypto::base64_encode(self.info.public_key.as_bytes()),
        };
        let json =
            serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Invalid(e.to_string()))?;
        durable::replace_file(&self.dir, INFO_FILE, &json)
            .map_err(io_error(&self.dir.join(INFO_FILE), "cannot write"))
    }

    fn write_key_file(&self, wrapped: &WrappedKey) -> Result<(), StoreError> {
        let file = KeyFile {
            kdf: KDF_NAME.into(),
            opslimit: wrapped.params.opslimit,
            memlimit: wrapped.params.memlimit,
            salt: crypto::base64_encode(&wrapped.salt),
            nonce: crypto::base64_encode(&wrapped.nonce),
            wrapped_key: crypto::base64_encode(&wrapped.wrapped),
        };
        let json =
            serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Invalid(e.to_string()))?;
        durable::replace_file(&self.dir, KEY_FILE, &json)
            .map_err(io_error(&self.dir.join(KEY_FILE), "cannot write"))
    }

    /// The contents of `mailbox.json`.
    pub fn info(&self) -> &MailboxInfo {
        &self.info
    }

    /// The mailbox id.
    pub fn id(&self) -> &MailboxId {
        &self.info.id
    }

    /// The mailbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory it is in.
    pub fn root(&self) -> &Path {
        data_root(&self.dir)
    }

    /// Appends a custody entry about this mailbox (or, with `file`, one of
    /// its messages).
    pub fn record(
        &self,
        event: custody::Event,
        file: Option<&str>,
        detail: Option<&str>,
    ) -> io::Result<()> {
        let mut entry = custody::Entry::new(event).mailbox(self.id().as_str());
        entry.file = file.map(str::to_owned);
        entry.detail = detail.map(str::to_owned);
        custody::append(self.root(), entry).map(|_| ())
    }

    /// Changes the name and/or description.
    pub fn update(
        &mut self,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<(), StoreError> {
        if let Some(name) = &name {
            check_label("name", name, 200, true)?;
        }
        if let Some(description) = &description {
            check_label("description", description, 2000, false)?;
        }
        let mut info = self.info.clone();
        info.name = name.unwrap_or(info.name);
        info.description = description.unwrap_or(info.description);
        self.replace_info(info)
    }

    /// Suspends or resumes the mailbox.
    pub fn set_status(&mut self, status: Status) -> Result<(), StoreError> {
        let info = MailboxInfo {
            status,
            ..self.info.clone()
        };
        self.replace_info(info)?;
        let event = match status {
            Status::Active => custody::Event::MailboxResumed,
            Status::Suspended => custody::Event::MailboxSuspended,
        };
        self.record_admin(&[(event, None, None)])
    }

    /// Appends the administrator's entries and flushes them (no delivery's
    /// flush follows an administrator's command).
    pub fn record_admin(&self, entries: &[AdminEntry<'_>]) -> Result<(), StoreError> {
        let path = self.root().join(custody::DIR);
        for (event, file, detail) in entries {
            self.record(*event, *file, *detail)
                .map_err(io_error(&path, "cannot write the custody log"))?;
        }
        custody::sync(self.root()).map_err(io_error(&path, "cannot sync"))
    }

    fn replace_info(&mut self, info: MailboxInfo) -> Result<(), StoreError> {
        let old = std::mem::replace(&mut self.info, info);
        self.write_info().inspect_err(|_| self.info = old)
    }

    /// Reads `secret-key.json`.
    pub fn wrapped_key(&self) -> Result<WrappedKey, StoreError> {
        let path = self.dir.join(KEY_FILE);
        read_key_file(&path).map_err(|e| match e {
            StoreError::Io { source, .. }
                if source.kind() == io::ErrorKind::NotFound && self.is_public_only() =>
            {
                StoreError::PublicOnly(self.info.id.clone())
            }
            e => e,
        })
    }

    /// Unwraps the secret key with the mailbox password.
    pub fn unlock(&self, password: &Password) -> Result<KeyPair, StoreError> {
        let wrapped = self.wrapped_key()?;
        crypto::unwrap_secret_key(&wrapped, password, &self.info.public_key).map_err(|e| match e {
            crypto::CryptoError::WrongPassword => StoreError::WrongPassword(self.info.id.clone()),
            crypto::CryptoError::KeyMismatch => StoreError::Corrupt {
                path: self.dir.join(KEY_FILE),
                reason: "the secret key does not belong to the public key in mailbox.json".into(),
            },
            other => StoreError::Crypto(other),
        })
    }

    /// Stores the same secret key wrapped under a new password.
    pub fn replace_wrapped_key(&self, wrapped: &WrappedKey) -> Result<(), StoreError> {
        self.write_key_file(wrapped)
    }

    /// The stored messages, oldest first.
    pub fn messages(&self) -> Result<Vec<MessageEntry>, StoreError> {
        self.entries_of(self.message_names()?)
    }

    /// The file sizes of `names` (those deleted meanwhile left out).
    fn entries_of(&self, names: Vec<MessageName>) -> Result<Vec<MessageEntry>, StoreError> {
        let dir = self.dir.join(MESSAGES_DIR);
        names
            .into_iter()
            .map(|name| {
                let path = dir.join(name.file_name());
                match fs::symlink_metadata(&path) {
                    Ok(meta) => Ok(Some(MessageEntry {
                        name,
                        file_bytes: meta.len(),
                    })),
                    // Retrieved and deleted since the listing.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io_error(&path, "cannot stat")(e)),
                }
            })
            .filter_map(Result::transpose)
            .collect()
    }

    /// The names of the stored messages, oldest first, from the directory
    /// listing alone: no file is opened or even stat'ed (the entry's type
    /// comes with the listing), so a POP3 login to a mailbox of 100,000
    /// messages reads one directory, cold cache or not. Anything in
    /// `messages/` that is not a regular file is skipped with a warning.
    pub fn message_names(&self) -> Result<Vec<MessageName>, StoreError> {
        let (names, strays) = self.scan_messages()?;
        for stray in strays {
            warn!("mailbox {}: skipped {stray}", self.info.id);
        }
        Ok(names)
    }

    fn scan_messages(&self) -> Result<(Vec<MessageName>, Vec<String>), StoreError> {
        let dir = self.dir.join(MESSAGES_DIR);
        let mut names = Vec::new();
        let mut strays = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir, "cannot list"))? {
            let entry = entry.map_err(io_error(&dir, "cannot list"))?;
            let kind = match entry.file_type() {
                Ok(kind) => kind,
                // Retrieved and deleted since the listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&entry.path(), "cannot stat")(e)),
            };
            if !kind.is_file() {
                let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                    continue;
                };
                let kind = rustix::fs::FileType::from_raw_mode(meta.mode());
                strays.push(format!(
                    "{} (a {}, not a message file)",
                    entry.path().display(),
                    beneath::kind_name(kind)
                ));
                continue;
            }
            if let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(MessageName::from_file_name)
            {
                names.push(name);
            }
        }
        names.sort();
        strays.sort();
        Ok((names, strays))
    }

    /// Count, bytes and newest time of the stored messages.
    pub fn stats(&self) -> Result<MailboxStats, StoreError> {
        // One listing for the messages and the stray entries both.
        let (names, strays) = self.scan_messages()?;
        let messages = self.entries_of(names)?;
        Ok(MailboxStats {
            strays,
            messages: messages.len(),
            bytes: messages.iter().map(|m| m.file_bytes).sum(),
            newest: messages.last().map(|m| m.name.stored_at()),
            oldest: messages.first().map(|m| m.name.stored_at()),
            last_retrieved: fs::metadata(self.dir.join(RETRIEVED_FILE))
                .and_then(|m| m.modified())
                .ok(),
        })
    }

    /// Records that a delivery was refused because the mailbox is suspended,
    /// as the modification time of a marker file, at most once a minute.
    /// Best effort: a failure only loses the hint.
    pub fn note_refused_delivery(&self) {
        if let Err(e) = touch_marker(&self.dir, REFUSED_FILE) {
            warn!(
                "{}: cannot record a refused delivery: {e}",
                self.dir.join(REFUSED_FILE).display()
            );
        }
    }

    /// When a message was last delivered into it (to the minute).
    pub fn last_delivery(&self) -> Option<SystemTime> {
        fs::symlink_metadata(self.dir.join(DELIVERED_FILE))
            .and_then(|m| m.modified())
            .ok()
    }

    /// When a delivery was last refused because the mailbox is suspended.
    pub fn last_refused_delivery(&self) -> Option<SystemTime> {
        fs::symlink_metadata(self.dir.join(REFUSED_FILE))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Records a POP3 login now, as the modification time of a marker file.
    pub fn mark_retrieved(&self) -> Result<(), StoreError> {
        let path = self.dir.join(RETRIEVED_FILE);
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .map_err(io_error(&path, "cannot record the POP3 retrieval"))
    }

    /// The size of a stored message's (encrypted) file, not following a link.
    pub fn message_file_size(&self, name: &MessageName) -> Result<u64, StoreError> {
        let path = self.message_path(name);
        fs::symlink_metadata(&path)
            .map(|m| m.len())
            .map_err(io_error(&path, "cannot stat"))
    }

    /// The path of a stored message.
    pub fn message_path(&self, name: &MessageName) -> PathBuf {
        self.dir.join(MESSAGES_DIR).join(name.file_name())
    }

    /// Opens a stored message for reading; damage is reported with the file name.
    pub fn open_message(
        &self,
        name: &MessageName,
        pair: &KeyPair,
    ) -> Result<MessageReader<File>, StoreError> {
        let path = self.message_path(name);
        let file = beneath::open_regular(&path).map_err(io_error(&path, "cannot open"))?;
        MessageReader::open(file, pair).map_err(|e| message_error(&path, e))
    }

    fn index_entry(&self, parts: &[&str]) -> PathBuf {
        let hash = crypto::index_hash(&self.info.public_key, parts);
        self.dir.join(POP3_INDEX_DIR).join(crypto::hex(&hash))
    }

    /// Whether a message identified by `parts` (upstream account, host, UIDL)
    /// was archived by the POP3 proxy. The index holds only keyed hashes.
    pub fn is_indexed(&self, parts: &[&str]) -> bool {
        self.index_entry(parts).exists()
    }

    /// Records durably that the message identified by `parts` is archived.
    pub fn add_to_index(&self, parts: &[&str]) -> Result<(), StoreError> {
        let dir = self.dir.join(POP3_INDEX_DIR);
        durable::create_private_dir(&dir).map_err(io_error(&dir, "cannot create directory"))?;
        let entry = self.index_entry(parts);
        // The entry is an empty file: syncing the directory makes it durable.
        match durable::create_new_private_file(&entry) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(io_error(&entry, "cannot create")(e)),
        }
        durable::sync_dir(&dir).map_err(io_error(&dir, "cannot sync"))
    }

    /// Takes the mailbox's exclusive lock (one POP3 session, or a deletion).
    /// The kernel releases it if the process dies.
    pub fn try_lock(&self) -> Result<MailboxLock, StoreError> {
        let path = self.dir.join(LOCK_FILE);
        let file = durable::open_lock_file(&path).map_err(io_error(&path, "cannot open"))?;
        match durable::try_lock_exclusive(&file) {
            Ok(true) => Ok(MailboxLock { _file: file }),
            Ok(false) => Err(StoreError::InUse(self.info.id.clone())),
            Err(e) => Err(io_error(&path, "cannot lock")(e)),
        }
    }
}

/// Moves messages taken out of `messages/` back where they were.
/// Reads a `secret-key.json` (current or retired).
fn read_key_file(path: &Path) -> Result<WrappedKey, StoreError> {
    let text =
        beneath::read_regular(path, MAX_SMALL_FILE).map_err(io_error(path, "cannot read"))?;
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file: KeyFile = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
    if file.kdf != KDF_NAME {
        return Err(corrupt(format!(
            "unknown kdf {:?} (expected {KDF_NAME})",
            file.kdf
        )));
    }
    let field = |name: &str, e: crypto::CryptoError| corrupt(format!("{name}: {e}"));
    Ok(WrappedKey {
        params: KdfParams {
            opslimit: file.opslimit,
            memlimit: file.memlimit,
        },
        salt: crypto::base64_decode_exact(&file.salt).map_err(|e| field("salt", e))?,
        nonce: crypto::base64_decode_exact(&file.nonce).map_err(|e| field("nonce", e))?,
        wrapped: crypto::base64_decode_exact(&file.wrapped_key)
            .map_err(|e| field("wrapped_key", e))?,
    })
}

/// Maps an error from reading a message file to damage or plain I/O.
pub fn message_error(path: &Path, e: io::Error) -> StoreError {
    match damage_of(&e) {
        Some(damage) => StoreError::Damaged {
            path: path.to_path_buf(),
            reason: damage.to_string(),
        },
        None => io_error(path, "cannot read")(e),
    }
}

/// Held while a session owns the mailbox.
#[derive(Debug)]
pub struct MailboxLock {
    _file: File,
}
