//! Copies of the store that stay readable: `sealpost backup` takes a
//! consistent snapshot while the gateway runs (`sealpost merge`, which
//! moves a standby gateway's messages into this one, is in `merge.rs`).
//!
//! Both rest on the store's one rule: a message file is written in `tmp/`
//! and renamed into `messages/` whole, and never changes afterwards. So a
//! file seen in `messages/` can be copied at any time, and a copy already
//! taken never needs taking again.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use log::warn;

use super::mailbox::{
    INFO_FILE, KEY_FILE, MESSAGES_DIR, POP3_INDEX_DIR, PUBLIC_ONLY_FILE, RETIRED_DIR,
    RETIRED_MESSAGES_DIR, TMP_DIR,
};
use super::{MAILBOXES_DIR, Mailbox, Store, StoreError, beneath, custody, durable, io_error};

/// What the data directory's `tls/` holds: the generated certificate.
const TLS_DIR: &str = "tls";
/// In the backup directory: the name of the newest complete snapshot.
const LATEST: &str = "latest";
/// A snapshot being written; renamed to its own name once complete.
const PARTIAL: &str = ".partial-";

/// What one backup did.
#[derive(Debug, Default)]
pub struct BackupReport {
    /// The new snapshot: a data directory as it was.
    pub snapshot: PathBuf,
    /// Mailboxes in it.
    pub mailboxes: usize,
    /// Message files in it.
    pub messages: usize,
    /// Of those, hard links to the previous snapshot (nothing copied).
    pub linked: usize,
    /// Bytes copied.
    pub copied_bytes: u64,
    /// Old snapshots removed to keep the count.
    pub pruned: usize,
}

/// A directory readable by its owner only (mail and keys are in it).
fn private_dir(path: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_error(path, "cannot create directory"))
}

/// Snapshot names: UTC time, sortable, valid as file names.
fn snapshot_name(dest: &Path) -> String {
    let base = jiff::Timestamp::try_from(SystemTime::now())
        .map(|t| t.strftime("%Y-%m-%dT%H%M%SZ").to_string())
        .unwrap_or_else(|_| "snapshot".into());
    let mut name = base.clone();
    let mut n = 1;
    while dest.join(&name).exists() {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

fn is_snapshot_name(name: &str) -> bool {
    name.len() >= 18 && name.as_bytes()[..4].iter().all(u8::is_ascii_digit) && name.contains('T')
}

/// Copies `from` to `to`, or hard-links it from `previous` when the
/// previous snapshot holds the same immutable file. `Ok(None)` when `from`
/// vanished meanwhile (a message retrieved and deleted during the backup).
/// `from` is opened as every stored file is (no link followed, no blocking
/// open, a regular file only): a FIFO or a directory where a file belongs
/// is skipped with a warning, never waited on.
fn copy_or_link(
    from: &Path,
    to: &Path,
    previous: Option<&Path>,
) -> Result<Option<(bool, u64)>, StoreError> {
    let source = match beneath::open_regular(from) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if beneath::as_wrong_kind(&e).is_some() => {
            warn!("backup: skipped {e}");
            return Ok(None);
        }
        Err(e) => return Err(io_error(from, "cannot open")(e)),
    };
    let len = source
        .metadata()
        .map_err(io_error(from, "cannot read"))?
        .len();
    if let Some(old) = previous
        && fs::symlink_metadata(old).is_ok_and(|m| m.is_file() && m.len() == len)
        && fs::hard_link(old, to).is_ok()
    {
        return Ok(Some((true, 0)));
    }
    let mut out = durable::create_new_private_file(to).map_err(io_error(to, "cannot create"))?;
    let bytes = io::copy(&mut &source, &mut out).map_err(io_error(to, "cannot copy"))?;
    Ok(Some((false, bytes)))
}

/// Copies the small files of a directory (key files, index entries), if it exists.
fn copy_dir_files(from: &Path, to: &Path) -> Result<(), StoreError> {
    let entries = match fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(from, "cannot list")(e)),
    };
    private_dir(to)?;
    for entry in entries {
        let entry = entry.map_err(io_error(from, "cannot list"))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            copy_or_link(&entry.path(), &to.join(entry.file_name()), None)?;
        }
    }
    Ok(())
}

/// Copies every node's custody chain and anchors, and leaves the marker
/// from which the gateway restored from this snapshot writes a "restored"
/// entry at its next start. A closed segment never changes again: it is
/// hard-linked from the previous snapshot when that holds it whole, as
/// message files are; the active one is copied up to its last whole entry.
/// Nothing is flushed here: the snapshot is flushed once, whole.
fn copy_custody(
    root: &Path,
    partial: &Path,
    previous: Option<&Path>,
    snapshot: &str,
) -> Result<(), StoreError> {
    let to_root = partial.join(custody::DIR);
    let mut heads = serde_json::Map::new();
    for node in custody::nodes(root).map_err(io_error(root, "cannot list"))? {
        let from = custody::chain_dir(root, &node);
        let to = to_root.join(&node);
        private_dir(&to)?;
        let old = previous.map(|p| p.join(custody::DIR).join(&node));
        let segments = custody::segments(&from).map_err(io_error(&from, "cannot list"))?;
        for (i, (_, path)) in segments.iter().enumerate() {
            let name = path.file_name().unwrap_or_default();
            if i + 1 < segments.len() {
                let old = old.as_ref().map(|o| o.join(name));
                copy_or_link(path, &to.join(name), old.as_deref())?;
            } else {
                copy_whole_entries(path, &to.join(name))?;
            }
        }
        copy_dir_files(
            &from.join(custody::ANCHORS_DIR),
            &to.join(custody::ANCHORS_DIR),
        )?;
        let head = custody::head(&to).map_err(io_error(&to, "cannot read"))?;
        heads.insert(node, head.map_or(0, |(seq, _)| seq).into());
    }
    private_dir(&to_root)?;
    let marker = serde_json::json!({
        "snapshot": snapshot,
        "taken": crate::timestamp::rfc3339(SystemTime::now()),
        "heads": heads,
    });
    durable::replace_file(
        &to_root,
        custody::RESTORED_MARKER,
        marker.to_string().as_bytes(),
    )
    .map_err(io_error(
        &to_root.join(custody::RESTORED_MARKER),
        "cannot write",
    ))
}

/// Copies the active segment `from` (a regular file, never a link) to `to`
/// up to its last whole entry: an append in progress is left out.
fn copy_whole_entries(from: &Path, to: &Path) -> Result<(), StoreError> {
    let mut bytes = Vec::new();
    beneath::open_regular(from)
        .and_then(|mut f| io::Read::read_to_end(&mut f, &mut bytes))
        .map_err(io_error(from, "cannot read"))?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    durable::create_new_private_file(to)
        .and_then(|mut f| io::Write::write_all(&mut f, &bytes[..whole]))
        .map_err(io_error(to, "cannot write"))
}

/// Copies one mailbox into `to`. Messages first, keys after: a message is
/// sealed to the key current when it was stored, and a key replaced during
/// the backup is kept under `retired-keys/`, which is copied last. So every
/// message in the snapshot has its key in the snapshot too.
fn copy_mailbox(
    mailbox: &Mailbox,
    to: &Path,
    previous: Option<&Path>,
    report: &mut BackupReport,
) -> Result<(), StoreError> {
    let messages = to.join(MESSAGES_DIR);
    private_dir(&messages)?;
    private_dir(&to.join(TMP_DIR))?;
    for entry in mailbox.messages()? {
        let file = entry.name.file_name();
        let old = previous.map(|p| p.join(MESSAGES_DIR).join(&file));
        let from = mailbox.dir().join(MESSAGES_DIR).join(&file);
        if let Some((linked, bytes)) = copy_or_link(&from, &messages.join(&file), old.as_deref())? {
            report.messages += 1;
            report.linked += usize::from(linked);
            report.copied_bytes += bytes;
        }
    }
    // Messages a password reset moved aside, each set with its public key.
    let retired = mailbox.dir().join(RETIRED_MESSAGES_DIR);
    if let Ok(sets) = fs::read_dir(&retired) {
        for set in sets {
            let set = set.map_err(io_error(&retired, "cannot list"))?;
            if !set.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let into = to.join(RETIRED_MESSAGES_DIR).join(set.file_name());
            copy_dir_files(&set.path().join(MESSAGES_DIR), &into.join(MESSAGES_DIR))?;
            copy_dir_files(&set.path(), &into)?;
        }
    }
    // Not `last-retrieval`: its time would become the backup's.
    for file in [INFO_FILE, KEY_FILE, PUBLIC_ONLY_FILE] {
        copy_or_link(&mailbox.dir().join(file), &to.join(file), None)?;
    }
    for dir in [RETIRED_DIR, POP3_INDEX_DIR] {
        copy_dir_files(&mailbox.dir().join(dir), &to.join(dir))?;
    }
    Ok(())
}

/// Writes everything under `dir` to the disk (syncfs(2)).
fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    let handle = fs::File::open(dir).map_err(io_error(dir, "cannot open"))?;
    rustix::fs::syncfs(&handle).map_err(|e| io_error(dir, "cannot sync")(e.into()))
}

/// Takes a snapshot of `store` into `dest/<UTC time>/`, a directory laid out
/// as a data directory (restore by copying it back with `cp -a`). Message
/// files the previous snapshot already holds are hard-linked, not copied,
/// so a daily backup costs only the new mail. `tmp/`, the spool, locks and
/// the control socket are left out. `dest/latest` names the newest complete
/// snapshot; snapshots beyond the newest `keep` are removed.
pub fn backup(store: &Store, dest: &Path, keep: usize) -> Result<BackupReport, StoreError> {
    if keep == 0 {
        return Err(StoreError::Invalid("keep at least one snapshot".into()));
    }
    // Checked before anything is created: a backup inside the data
    // directory would copy itself.
    let root = fs::canonicalize(store.root()).map_err(io_error(store.root(), "cannot open"))?;
    let inside = |path: &Path| {
        StoreError::Invalid(format!(
            "{}: the backup must be outside the data directory {}",
            path.display(),
            root.display()
        ))
    };
    let wanted = std::path::absolute(dest).map_err(io_error(dest, "cannot open"))?;
    if wanted.starts_with(&root) || root.starts_with(&wanted) {
        return Err(inside(&wanted));
    }
    private_dir(dest)?;
    // Again with symbolic links resolved.
    let dest = fs::canonicalize(dest).map_err(io_error(dest, "cannot open"))?;
    if dest.starts_with(&root) {
        return Err(inside(&dest));
    }
    let previous = fs::read_link(dest.join(LATEST))
        .ok()
        .map(|name| dest.join(name))
        .filter(|p| p.is_dir());
    let name = snapshot_name(&dest);
    let partial = dest.join(format!("{PARTIAL}{name}"));
    let _ = fs::remove_dir_all(&partial);
    private_dir(&partial.join(MAILBOXES_DIR))?;
    let mut report = BackupReport::default();
    for id in store.mailbox_ids()? {
        let mailbox = match store.mailbox(&id) {
            Ok(mailbox) => mailbox,
            // Deleted while the backup ran.
            Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let rel = Path::new(MAILBOXES_DIR).join(id.as_str());
        let old = previous.as_ref().map(|p| p.join(&rel));
        copy_mailbox(&mailbox, &partial.join(&rel), old.as_deref(), &mut report)?;
        report.mailboxes += 1;
    }
    copy_dir_files(&store.root().join(TLS_DIR), &partial.join(TLS_DIR))?;
    // Last, so that every message stored before it is in the snapshot.
    copy_custody(store.root(), &partial, previous.as_deref(), &name)?;
    if let Some(hash) = store.console_password_hash()? {
        let file = super::CONSOLE_PASSWORD_FILE;
        durable::replace_file(&partial, file, format!("{hash}\n").as_bytes())
            .map_err(io_error(&partial.join(file), "cannot write"))?;
    }
    sync_tree(&partial)?;
    let snapshot = dest.join(&name);
    fs::rename(&partial, &snapshot).map_err(io_error(&snapshot, "cannot create"))?;
    let link = dest.join(format!("{LATEST}.new"));
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&name, &link).map_err(io_error(&link, "cannot create"))?;
    fs::rename(&link, dest.join(LATEST)).map_err(io_error(&link, "cannot rename"))?;
    durable::sync_dir(&dest).map_err(io_error(&dest, "cannot sync"))?;
    report.snapshot = snapshot;
    report.pruned = prune(&dest, keep)?;
    Ok(report)
}

/// Removes all but the newest `keep` snapshots, and what an interrupted
/// backup left behind; returns how many snapshots went.
fn prune(dest: &Path, keep: usize) -> Result<usize, StoreError> {
    let mut snapshots = Vec::new();
    for entry in fs::read_dir(dest).map_err(io_error(dest, "cannot list"))? {
        let entry = entry.map_err(io_error(dest, "cannot list"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(PARTIAL) {
            let _ = fs::remove_dir_all(entry.path());
        } else if is_snapshot_name(&name) && entry.file_type().is_ok_and(|t| t.is_dir()) {
            snapshots.push(name);
        }
    }
    snapshots.sort();
    let excess = snapshots.len().saturating_sub(keep);
    for name in &snapshots[..excess] {
        let path = dest.join(name);
        fs::remove_dir_all(&path).map_err(io_error(&path, "cannot remove"))?;
    }
    Ok(excess)
}
