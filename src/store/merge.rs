//! `sealpost merge`: a standby gateway's messages moved into this one, and
//! `sealpost merge --release`: the standby lets go of exactly those.
//!
//! The standby's directory is not trusted. It may be a copy unpacked from a
//! tarball, a mount of the standby, or the work of an attacker who took the
//! standby (which by design holds no secret key). So:
//!
//! - It is walked through open directory descriptors ([`Beneath`]): no
//!   symbolic link anywhere in it is followed, even if it changes during
//!   the merge, and only regular files are read.
//! - Before a mailbox is merged, a uniquely named marker file is created in
//!   this gateway's directory and looked for under the standby's path; a
//!   bind mount or a second NFS mount of this gateway's own directory shows
//!   it, even where device and inode numbers differ. Device and inode are
//!   compared too, and a standby file that is this gateway's own file is
//!   never removed.
//! - A standby file is removed only after this gateway's copy (a different
//!   file, with the same content) is durable, and only through the
//!   standby directory's descriptor.
//!
//! Every message made durable here is written into a receipt
//! (`data_dir/merge-receipts/<id>.json`): mailbox, file name and SHA-256.
//! Run on the standby, `merge --release RECEIPT` deletes exactly those
//! files, where the content still matches. The receipts also remember what
//! was merged, so a second merge of the same files (the standby not yet
//! released, the archiver having taken the first copies) delivers nothing
//! twice.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::FileType;
use serde::{Deserialize, Serialize};

use super::beneath::{self, Beneath};
use super::mailbox::{self, INFO_FILE, MESSAGES_DIR, TMP_DIR};
use super::{
    MAILBOXES_DIR, MailboxId, MessageName, Store, StoreError, custody, durable, flush, io_error,
};
use crate::crypto;
use crate::timestamp;

/// In the data directory: the receipts of the merges this gateway made.
pub const RECEIPTS_DIR: &str = "merge-receipts";
/// A receipt larger than this is not a receipt.
const MAX_RECEIPT: u64 = 256 * 1024 * 1024;
/// A standby's `mailbox.json` larger than this is not one.
const MAX_INFO: u64 = 64 * 1024;

/// What one merge did.
#[derive(Debug, Default)]
pub struct MergeReport {
    /// Messages copied into this gateway's mailboxes.
    pub moved: usize,
    /// Messages this gateway held already, with the same content.
    pub present: usize,
    /// Messages an earlier merge delivered already (perhaps retrieved since).
    pub merged_before: usize,
    /// Mailboxes not merged, with the reason.
    pub skipped: Vec<String>,
    /// Entries left alone, with the reason (links, FIFOs, differing copies).
    pub refused: Vec<String>,
    /// The receipt written for `merge --release`, if anything was merged.
    pub receipt: Option<PathBuf>,
    /// The receipt's id, chosen at the start (the custody entries name it).
    pub receipt_id: String,
}

/// One message in a receipt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReceiptEntry {
    /// The mailbox id.
    pub mailbox: String,
    /// The message file name.
    pub file: String,
    /// SHA-256 of the file as stored (the sealed file), hex.
    pub sha256: String,
}

/// What `sealpost merge` writes, and `merge --release` reads.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Receipt {
    /// Always `sealpost-merge-receipt`.
    kind: String,
    /// Random; the file is `merge-receipts/<id>.json` on the gateway that
    /// merged, which is how `--release` knows it is on the wrong machine.
    id: String,
    /// When, RFC 3339.
    created: String,
    /// Every message made durable here (or already here, same content).
    messages: Vec<ReceiptEntry>,
}

const RECEIPT_KIND: &str = "sealpost-merge-receipt";

fn invalid(why: String) -> StoreError {
    StoreError::Invalid(why)
}

/// Maps a walk error: an entry of the wrong kind is a refusal with its
/// reason, anything else an I/O error on `path`.
fn walk_error(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |e| match beneath::as_wrong_kind(&e) {
        Some(wrong) => StoreError::Invalid(wrong.to_string()),
        None => StoreError::Io {
            path,
            op,
            source: e,
        },
    }
}

/// Whether `theirs` is `ours` under another name: the same device and
/// inode, or a fresh marker created in `ours` appears in `theirs` (two
/// mounts of one export may differ in device number).
fn same_directory(ours: &Path, theirs: &Beneath) -> Result<bool, StoreError> {
    let meta = fs::metadata(ours).map_err(io_error(ours, "cannot open"))?;
    let their_id = theirs
        .identity()
        .map_err(io_error(theirs.path(), "cannot open"))?;
    if (meta.dev(), meta.ino()) == their_id {
        return Ok(true);
    }
    let marker = format!(".merge-probe-{}", crypto::random_hex(16));
    let path = ours.join(&marker);
    durable::create_new_private_file(&path).map_err(io_error(&path, "cannot create"))?;
    let seen = theirs.contains(&marker);
    let _ = fs::remove_file(&path);
    seen.map_err(io_error(theirs.path(), "cannot look into"))
}

fn receipts_dir(store: &Store) -> PathBuf {
    store.root().join(RECEIPTS_DIR)
}

/// Every message the receipts of earlier merges name: (mailbox, file) → SHA-256.
fn earlier_merges(store: &Store) -> Result<HashMap<(String, String), String>, StoreError> {
    let dir = receipts_dir(store);
    let mut out = HashMap::new();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_error(&dir, "cannot list")(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error(&dir, "cannot list"))?;
        if !entry.file_name().to_string_lossy().ends_with(".json") {
            continue;
        }
        let receipt = read_receipt(&entry.path())?;
        for m in receipt.messages {
            out.insert((m.mailbox, m.file), m.sha256);
        }
    }
    Ok(out)
}

fn read_receipt(path: &Path) -> Result<Receipt, StoreError> {
    let text = beneath::read_regular(path, MAX_RECEIPT).map_err(walk_error(path, "cannot read"))?;
    let receipt: Receipt = serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("not a merge receipt: {e}"),
    })?;
    if receipt.kind != RECEIPT_KIND || receipt.id.is_empty() {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: "not a merge receipt".into(),
        });
    }
    if !receipt.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: "the receipt id is not hex".into(),
        });
    }
    Ok(receipt)
}

/// Moves the messages of a standby gateway's data directory `standby` into
/// the mailboxes of `store` with the same id and public key, as described
/// in the module documentation, and writes the receipt.
pub fn merge(store: &Store, standby: &Path) -> Result<MergeReport, StoreError> {
    let root = Beneath::open(standby).map_err(io_error(standby, "cannot open"))?;
    if same_directory(store.root(), &root)? {
        return Err(invalid(format!(
            "{}: the standby's data directory is this gateway's own data directory {}",
            standby.display(),
            store.root().display()
        )));
    }
    let mailboxes = root
        .dir(MAILBOXES_DIR)
        .map_err(walk_error(&standby.join(MAILBOXES_DIR), "cannot open"))?;
    if same_directory(&store.root().join(MAILBOXES_DIR), &mailboxes)? {
        return Err(invalid(format!(
            "{}: the standby's mailboxes directory is this gateway's own",
            mailboxes.path().display()
        )));
    }
    let earlier = earlier_merges(store)?;
    let mut report = MergeReport {
        receipt_id: crypto::random_hex(16),
        ..MergeReport::default()
    };
    let mut receipt = Vec::new();
    let entries = mailboxes
        .entries()
        .map_err(io_error(mailboxes.path(), "cannot list"))?;
    for (name, kind) in entries {
        let Ok(id) = name.parse::<MailboxId>() else {
            continue;
        };
        match pair(store, &mailboxes, &name, kind, &id)? {
            Ok((ours, their_messages)) => {
                merge_mailbox(&their_messages, &ours, &earlier, &mut receipt, &mut report)?;
            }
            Err(skipped) => report.skipped.push(skipped),
        }
    }
    if !receipt.is_empty() {
        report.receipt = Some(write_receipt(store, &report.receipt_id, receipt)?);
    }
    Ok(report)
}

/// The standby's mailbox `id` and ours, paired when they may be merged:
/// a real directory on the standby, its `mailbox.json` naming it, the same
/// public key on both sides, and neither it nor its `messages/` ours under
/// another path. Otherwise why not, for the report.
fn pair(
    store: &Store,
    mailboxes: &Beneath,
    name: &str,
    kind: FileType,
    id: &MailboxId,
) -> Result<Result<(super::Mailbox, Beneath), String>, StoreError> {
    if kind != FileType::Directory {
        return Ok(Err(format!(
            "{id}: the standby's entry is a {}, not a directory; not merged",
            beneath::kind_name(kind)
        )));
    }
    let theirs = match mailboxes.dir(name) {
        Ok(dir) => dir,
        Err(e) => {
            return Ok(Err(format!("{id}: {e}")));
        }
    };
    let info = theirs
        .file(INFO_FILE)
        .and_then(|f| beneath::read_bounded(f, MAX_INFO))
        .map_err(walk_error(&theirs.path().join(INFO_FILE), "cannot read"))
        .and_then(|text| mailbox::parse_info(&text, &theirs.path().join(INFO_FILE)));
    let info = match info {
        Ok(info) if info.id == *id => info,
        Ok(info) => {
            return Ok(Err(format!("{id}: its mailbox.json names {}", info.id)));
        }
        Err(e) => {
            return Ok(Err(format!("{id}: {e}")));
        }
    };
    let ours = match store.mailbox(id) {
        Ok(ours) => ours,
        Err(StoreError::NotFound(_)) => {
            return Ok(Err(format!("{id}: no such mailbox on this gateway")));
        }
        Err(e) => return Err(e),
    };
    if ours.info().public_key != info.public_key {
        return Ok(Err(format!(
            "{id}: the public keys differ (was its password reset?); not merged"
        )));
    }
    if same_directory(ours.dir(), &theirs)? {
        return Ok(Err(format!(
            "{id}: the standby's mailbox {} is this gateway's own mailbox (a link or a mount); not merged",
            theirs.path().display()
        )));
    }
    let their_messages = match theirs.dir(MESSAGES_DIR) {
        Ok(dir) => dir,
        Err(e) => {
            return Ok(Err(format!("{id}: {e}")));
        }
    };
    if same_directory(&ours.dir().join(MESSAGES_DIR), &their_messages)? {
        return Ok(Err(format!(
            "{id}: the standby's messages/ is this gateway's own; not merged"
        )));
    }
    Ok(Ok((ours, their_messages)))
}

fn identity(file: &fs::File) -> io::Result<beneath::Identity> {
    file.metadata().map(|m| (m.dev(), m.ino()))
}

fn merge_mailbox(
    theirs: &Beneath,
    ours: &super::Mailbox,
    earlier: &HashMap<(String, String), String>,
    receipt: &mut Vec<ReceiptEntry>,
    report: &mut MergeReport,
) -> Result<(), StoreError> {
    let id = ours.id().to_string();
    let our_dir = ours.dir().join(MESSAGES_DIR);
    let mine = Beneath::open(&our_dir).map_err(io_error(&our_dir, "cannot open"))?;
    // Before the first copy is written: a grouped flush that fails from now
    // on fails this merge too.
    let durability = flush::begin(&our_dir).map_err(io_error(&our_dir, "cannot open"))?;
    let per_file = matches!(durability, flush::Durability::PerFile);
    let mut done = Vec::new();
    let entries = theirs
        .entries()
        .map_err(io_error(theirs.path(), "cannot list"))?;
    for (name, kind) in entries {
        if MessageName::from_file_name(&name).is_none() {
            continue;
        }
        let file = (name.as_str(), kind, per_file);
        let Some(digest) = merge_file(theirs, &mine, ours, earlier, file, report)? else {
            continue;
        };
        done.push(name.clone());
        receipt.push(ReceiptEntry {
            mailbox: id.clone(),
            file: name,
            sha256: digest,
        });
    }
    // One flush makes every copy and rename above durable (the file
    // system's grouped flush, or the directory's fsync where each file was
    // flushed on its own); only then does the standby let go of its copies.
    match durability {
        flush::Durability::PerFile => mine.sync(),
        flush::Durability::Grouped(ticket) => ticket.wait(),
    }
    .map_err(io_error(&our_dir, "cannot sync"))?;
    for name in &done {
        match theirs.remove(name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&theirs.path().join(name), "cannot remove")(e)),
        }
    }
    theirs
        .sync()
        .map_err(io_error(theirs.path(), "cannot sync"))
}

/// One standby message file: moved in, found already here, or delivered by
/// an earlier merge (its SHA-256, for the receipt), or left alone and
/// reported (`None`).
fn merge_file(
    theirs: &Beneath,
    mine: &Beneath,
    ours: &super::Mailbox,
    earlier: &HashMap<(String, String), String>,
    (name, kind, per_file): (&str, FileType, bool),
    report: &mut MergeReport,
) -> Result<Option<String>, StoreError> {
    let id = ours.id().to_string();
    let our_dir = ours.dir().join(MESSAGES_DIR);
    let shown = theirs.path().join(name);
    if kind != FileType::RegularFile {
        report.refused.push(format!(
            "{}: is a {}, not a message file; left alone",
            shown.display(),
            beneath::kind_name(kind)
        ));
        return Ok(None);
    }
    let file = match theirs.file(name) {
        Ok(file) => file,
        Err(e) if beneath::as_wrong_kind(&e).is_some() => {
            report.refused.push(e.to_string());
            return Ok(None);
        }
        // Gone since the listing.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&shown, "cannot open")(e)),
    };
    let their_identity = identity(&file).map_err(io_error(&shown, "cannot stat"))?;
    let digest = if mine
        .contains(name)
        .map_err(io_error(&our_dir, "cannot look into"))?
    {
        let own = mine
            .file(name)
            .map_err(walk_error(&our_dir.join(name), "cannot open"))?;
        if identity(&own).map_err(io_error(&our_dir, "cannot stat"))? == their_identity {
            report.refused.push(format!(
                "{}: is this gateway's own message file; left alone",
                shown.display()
            ));
            return Ok(None);
        }
        let ours_digest =
            crypto::sha256_of(own).map_err(io_error(&our_dir.join(name), "cannot read"))?;
        let theirs_digest = crypto::sha256_of(file).map_err(io_error(&shown, "cannot read"))?;
        if ours_digest != theirs_digest {
            report.refused.push(format!(
                "{}: differs from this gateway's file of the same name; left alone",
                shown.display()
            ));
            return Ok(None);
        }
        report.present += 1;
        crypto::hex(&theirs_digest)
    } else if let Some(before) = earlier.get(&(id.clone(), name.to_string())) {
        let digest =
            crypto::hex(&crypto::sha256_of(file).map_err(io_error(&shown, "cannot read"))?);
        if &digest != before {
            report.refused.push(format!(
                "{}: an earlier merge delivered a different file of this name; left alone",
                shown.display()
            ));
            return Ok(None);
        }
        report.merged_before += 1;
        digest
    } else {
        let (digest, size) = copy_in(file, ours.dir(), name, per_file)?;
        report.moved += 1;
        // Before the merge's flush, which covers it with the copy.
        let mut entry = custody::Entry::new(custody::Event::Stored).message(&id, name);
        entry.source = Some("merge".into());
        entry.size = Some(size);
        entry.sha256 = Some(crypto::hex(&digest));
        entry.detail = Some(format!("merged in, receipt {}", report.receipt_id));
        custody::append(ours.root(), entry)
            .map_err(io_error(&ours.root().join(custody::DIR), "cannot write"))?;
        crypto::hex(&digest)
    };
    Ok(Some(digest))
}

/// Copies an open standby file into the mailbox `dir` as a delivery does:
/// `tmp/`, fsync, rename into `messages/` (the caller syncs the directory).
/// `per_file`: fsync the copy itself (otherwise the caller's grouped flush
/// covers it).
fn copy_in(
    file: fs::File,
    dir: &Path,
    name: &str,
    per_file: bool,
) -> Result<([u8; 32], u64), StoreError> {
    let tmp = dir.join(TMP_DIR).join(name);
    let target = dir.join(MESSAGES_DIR).join(name);
    let out = durable::create_new_private_file(&tmp).map_err(io_error(&tmp, "cannot create"))?;
    // Locked like a delivery's file, so a gateway starting meanwhile does
    // not take it for a crash leftover.
    durable::try_lock_exclusive(&out).map_err(io_error(&tmp, "cannot lock"))?;
    let written = (|| {
        let mut writer = io::BufWriter::with_capacity(128 * 1024, &out);
        let digest = crypto::copy_with_sha256(file, &mut writer)?;
        writer.flush()?;
        drop(writer);
        if per_file {
            out.sync_all()?;
        }
        Ok((digest, out.metadata()?.len()))
    })();
    let digest = match written {
        Ok(digest) => digest,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(&tmp, "cannot copy")(e));
        }
    };
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&target, "cannot store")(e));
    }
    Ok(digest)
}

fn write_receipt(
    store: &Store,
    id: &str,
    messages: Vec<ReceiptEntry>,
) -> Result<PathBuf, StoreError> {
    let dir = receipts_dir(store);
    durable::create_private_dir(&dir).map_err(io_error(&dir, "cannot create directory"))?;
    let receipt = Receipt {
        kind: RECEIPT_KIND.into(),
        id: id.to_owned(),
        created: timestamp::rfc3339(SystemTime::now()),
        messages,
    };
    let json =
        serde_json::to_vec_pretty(&receipt).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let name = format!("{}.json", receipt.id);
    durable::replace_file(&dir, &name, &json)
        .map_err(io_error(&dir.join(&name), "cannot write"))?;
    Ok(dir.join(name))
}

/// A receipt's messages by mailbox, each name checked.
fn by_mailbox(
    messages: Vec<ReceiptEntry>,
    receipt_path: &Path,
) -> Result<BTreeMap<MailboxId, Vec<(MessageName, String)>>, StoreError> {
    let mut by_mailbox: BTreeMap<MailboxId, Vec<(MessageName, String)>> = BTreeMap::new();
    for m in messages {
        let id: MailboxId = m.mailbox.parse().map_err(|e| StoreError::Corrupt {
            path: receipt_path.to_path_buf(),
            reason: format!("mailbox {:?}: {e}", m.mailbox),
        })?;
        let name = MessageName::from_file_name(&m.file).ok_or_else(|| StoreError::Corrupt {
            path: receipt_path.to_path_buf(),
            reason: format!("{:?} is not a message file name", m.file),
        })?;
        by_mailbox.entry(id).or_default().push((name, m.sha256));
    }
    Ok(by_mailbox)
}

/// What `merge --release` did on the standby.
#[derive(Debug, Default)]
pub struct ReleaseReport {
    /// Files deleted: their content matched the receipt.
    pub released: usize,
    /// Files the receipt names that were gone already.
    pub gone: usize,
    /// Files kept, with the reason (changed content, a link, a FIFO).
    pub kept: Vec<String>,
}

/// On the standby: deletes exactly the message files `receipt_path` names,
/// each only where its SHA-256 still matches, walking the data directory
/// as a merge does (no link followed, only regular files). Refused on the
/// gateway that wrote the receipt, where those names are its own copies.
pub fn release(store: &Store, receipt_path: &Path) -> Result<ReleaseReport, StoreError> {
    let receipt = read_receipt(receipt_path)?;
    let own = receipts_dir(store).join(format!("{}.json", receipt.id));
    if fs::symlink_metadata(&own).is_ok() {
        return Err(invalid(format!(
            "{}: this gateway ({}) made the receipt, and the files it names are its own \
             copies; run merge --release on the standby",
            receipt_path.display(),
            store.root().display()
        )));
    }
    let by_mailbox = by_mailbox(receipt.messages, receipt_path)?;
    let root = Beneath::open(store.root()).map_err(io_error(store.root(), "cannot open"))?;
    let mailboxes = root
        .dir(MAILBOXES_DIR)
        .map_err(walk_error(&store.root().join(MAILBOXES_DIR), "cannot open"))?;
    let mut report = ReleaseReport::default();
    let log = store.root().join(custody::DIR);
    for (id, files) in by_mailbox {
        // Each file let go, here or by the merge itself through a mount of
        // this directory ("gone"), leaves this node's chain as released.
        let release_entry = |file: &str| {
            let entry = custody::Entry::new(custody::Event::Released)
                .message(id.as_str(), file)
                .detail(format!("receipt {}", receipt.id));
            custody::append(store.root(), entry)
                .map(|_| ())
                .map_err(io_error(&log, "cannot write"))
        };
        let messages = match mailboxes
            .dir(id.as_str())
            .and_then(|dir| dir.dir(MESSAGES_DIR))
        {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                for (name, _) in &files {
                    release_entry(&name.file_name())?;
                }
                report.gone += files.len();
                continue;
            }
            Err(e) => {
                report.kept.push(format!("mailbox {id}: {e}"));
                continue;
            }
        };
        for (name, expected) in files {
            let file_name = name.file_name();
            let shown = messages.path().join(&file_name);
            let file = match messages.file(&file_name) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    release_entry(&file_name)?;
                    report.gone += 1;
                    continue;
                }
                Err(e) if beneath::as_wrong_kind(&e).is_some() => {
                    report.kept.push(e.to_string());
                    continue;
                }
                Err(e) => return Err(io_error(&shown, "cannot open")(e)),
            };
            let digest = crypto::sha256_of(file).map_err(io_error(&shown, "cannot read"))?;
            if crypto::hex(&digest) != expected.to_ascii_lowercase() {
                report.kept.push(format!(
                    "{}: its content differs from the receipt's; kept",
                    shown.display()
                ));
                continue;
            }
            release_entry(&file_name)?;
            messages
                .remove(&file_name)
                .map_err(io_error(&shown, "cannot remove"))?;
            report.released += 1;
        }
        messages
            .sync()
            .map_err(io_error(messages.path(), "cannot sync"))?;
    }
    custody::sync(store.root()).map_err(io_error(&log, "cannot sync"))?;
    Ok(report)
}
