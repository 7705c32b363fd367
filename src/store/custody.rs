//! The chain of custody: each node's append-only log of what happened to
//! every message, one JSON line per event, each line holding the hash of
//! the one before it.
//!
//! ```text
//! <data_dir>/custody/<node>/<first seq, 12 digits>-<YYYYMMDD>.log   segments
//! <data_dir>/custody/<node>/anchors/<seq, 12 digits>.tsr           RFC 3161 responses
//! <data_dir>/custody/<node>/.lock                                  appenders take turns
//! <data_dir>/custody/restored-from                                 left by `sealpost restore`
//! ```
//!
//! A line is the entry's JSON (fields in a fixed order, `prev` last) with
//! `,"hash":"<hex>"` inserted before its closing brace; the hash is the
//! SHA-256 of the line without it. Whoever verifies removes that member and
//! hashes what is left: no canonical JSON is needed, only the bytes.
//!
//! Why hand-written and not a crate: the format is ours (the design makes
//! the on-disk format ours), and `scripts/verify-custody` reads it with the
//! Python standard library alone.
//!
//! Appends are single `write(2)`s to a file opened with `O_APPEND`, under
//! a `flock` of `.lock` (the gateway and the command line on one node take
//! turns) and this process's mutex. They are not flushed here: a "stored"
//! entry is written before the message's grouped flush begins, on the same
//! file system, so that one flush makes both durable. Where files are
//! flushed one by one the entry is flushed on its own.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use log::warn;
use serde::{Deserialize, Serialize};

use super::{durable, flush};
use crate::crypto;
use crate::timestamp;

/// The custody directory under the data directory.
pub const DIR: &str = "custody";
/// Each node's anchors, under its chain's directory.
pub const ANCHORS_DIR: &str = "anchors";
/// Left by a restore; the next start writes a "restored" entry.
pub const RESTORED_MARKER: &str = "restored-from";
/// `prev` of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// A node's chain directory when the gateway has no `node` name.
pub const DEFAULT_NODE: &str = "default";
const LOCK_FILE: &str = ".lock";
/// Where the hash member starts in a line; see the module comment.
pub const HASH_MEMBER: &str = ",\"hash\":\"";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// A message was stored (`source` says how; `merge` for a standby's).
    Stored,
    /// POP3 sent a message whole (`session` names the session).
    Retrieved,
    /// A POP3 QUIT removed it (`retrieved` says whether it was sent first).
    Deleted,
    /// The removal's flush failed: the message is back.
    DeletionUndone,
    /// Written but never acknowledged (its flush failed, or another copy of
    /// the same delivery did): taken back, the sender sends again.
    Abandoned,
    /// `merge --release` on a standby removed it after the primary's receipt.
    Released,
    /// Removed by the administrator (`detail` says how).
    Removed,
    /// A mailbox was created.
    MailboxCreated,
    /// A mailbox was suspended.
    MailboxSuspended,
    /// A mailbox was resumed.
    MailboxResumed,
    /// A mailbox was deleted.
    MailboxDeleted,
    /// A mailbox's password was reset (its messages moved aside).
    MailboxReset,
    /// The data directory was restored from a snapshot (`detail`).
    Restored,
}

/// One line of the log. The field order is the line's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 1, 2, … without gaps, per node.
    pub seq: u64,
    /// When it was written (RFC 3339, UTC).
    pub time: String,
    /// What happened.
    pub event: Event,
    /// How a stored message arrived (`smtp`, `smtp-proxy`, `pop3-proxy`,
    /// `cli`, `merge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The mailbox id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// The message file's name (its UIDL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Bytes of the message file as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-256 of the message file as stored (lowercase hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The SHA-256 of the message as POP3 serves it, sealed to the
    /// mailbox's public key (`crypto_box_seal`, base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_message_sha256: Option<String>,
    /// The POP3 session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// For `deleted`: whether it was retrieved in that session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieved: Option<bool>,
    /// A receipt's name, a snapshot, how the administrator removed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The previous entry's hash ([`GENESIS`] for the first).
    pub prev: String,
}

impl Entry {
    /// An entry for `event`; [`append`] fills in seq, time and prev.
    pub fn new(event: Event) -> Entry {
        Entry {
            seq: 0,
            time: String::new(),
            event,
            source: None,
            mailbox: None,
            file: None,
            size: None,
            sha256: None,
            sealed_message_sha256: None,
            session: None,
            retrieved: None,
            detail: None,
            prev: String::new(),
        }
    }

    /// About this message of this mailbox.
    pub fn message(mut self, mailbox: &str, file: &str) -> Entry {
        self.mailbox = Some(mailbox.to_owned());
        self.file = Some(file.to_owned());
        self
    }

    /// About this mailbox.
    pub fn mailbox(mut self, mailbox: &str) -> Entry {
        self.mailbox = Some(mailbox.to_owned());
        self
    }

    /// With this detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Entry {
        self.detail = Some(detail.into());
        self
    }

    /// The line as written (without its newline) and its hash.
    pub fn line(&self) -> (String, String) {
        let body = serde_json::to_string(self).expect("an entry always serialises");
        let hash = crypto::hex(&crypto::sha256(body.as_bytes()));
        let line = format!("{}{HASH_MEMBER}{hash}\"}}", &body[..body.len() - 1]);
        (line, hash)
    }
}

/// A line read back: the entry, the hash it carries, and whether that hash
/// is the hash of the rest of the line.
pub struct ReadLine {
    /// The entry.
    pub entry: Entry,
    /// The hash written in the line.
    pub hash: String,
    /// Whether it matches the line.
    pub hash_ok: bool,
}

/// Parses one line (without its newline).
pub fn parse_line(line: &str) -> Result<ReadLine, String> {
    let (body, tail) = line
        .rsplit_once(HASH_MEMBER)
        .ok_or_else(|| "no hash in the line".to_string())?;
    let hash = tail
        .strip_suffix("\"}")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| "the hash is not where it belongs".to_string())?;
    let body = format!("{body}}}");
    let entry: Entry = serde_json::from_str(&body).map_err(|e| format!("not an entry: {e}"))?;
    let hash_ok = crypto::hex(&crypto::sha256(body.as_bytes())) == hash;
    Ok(ReadLine {
        entry,
        hash: hash.to_owned(),
        hash_ok,
    })
}

/// What this process writes: whether the log is kept, this node's name,
/// when a segment is full.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `custody.log`.
    pub enabled: bool,
    /// The node's chain directory name.
    pub node: String,
    /// `custody.segment_bytes`.
    pub segment_bytes: u64,
}

static SETTINGS: LazyLock<Mutex<Settings>> = LazyLock::new(|| {
    Mutex::new(Settings {
        enabled: true,
        node: DEFAULT_NODE.into(),
        segment_bytes: 16 * 1024 * 1024,
    })
});

static WRITERS: LazyLock<Mutex<HashMap<PathBuf, Arc<Mutex<Writer>>>>> =
    LazyLock::new(Mutex::default);

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets what this process writes, once at start.
pub fn configure(enabled: bool, node: Option<&str>, segment_bytes: u64) {
    *locked(&SETTINGS) = Settings {
        enabled,
        node: node.unwrap_or(DEFAULT_NODE).to_owned(),
        segment_bytes: segment_bytes.max(4096),
    };
    locked(&WRITERS).clear();
}

/// This process's settings.
pub fn settings() -> Settings {
    locked(&SETTINGS).clone()
}

/// The chain directory of `node` under the data directory `root`.
pub fn chain_dir(root: &Path, node: &str) -> PathBuf {
    root.join(DIR).join(node)
}

/// Appends `entry` to this node's chain under `root`, unless the log is
/// off. Returns the entry as written.
pub fn append(root: &Path, entry: Entry) -> io::Result<Option<Entry>> {
    let settings = settings();
    if !settings.enabled {
        return Ok(None);
    }
    let dir = chain_dir(root, &settings.node);
    let writer = {
        let mut all = locked(&WRITERS);
        match all.get(&dir) {
            Some(w) => Arc::clone(w),
            None => {
                let w = Arc::new(Mutex::new(Writer::open(&dir)?));
                all.insert(dir.clone(), Arc::clone(&w));
                w
            }
        }
    };
    let mut writer = locked(&writer);
    writer
        .append(entry, settings.segment_bytes)
        .map(Some)
        .map_err(|e| io::Error::new(e.kind(), format!("custody log {}: {e}", dir.display())))
}

/// Flushes this node's chain (after an administrator's entries, which no
/// delivery's flush follows).
pub fn sync(root: &Path) -> io::Result<()> {
    let settings = settings();
    let dir = chain_dir(root, &settings.node);
    let writer = locked(&WRITERS).get(&dir).cloned();
    match writer {
        Some(w) => match &locked(&w).active {
            Some(active) => active.file.sync_data(),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// Opens this node's chain now (checking its last line), so that a torn
/// entry is cut back at start rather than at the first delivery.
pub fn open_at_start(root: &Path) -> io::Result<()> {
    let settings = settings();
    if !settings.enabled {
        return Ok(());
    }
    let dir = chain_dir(root, &settings.node);
    let writer = Writer::open(&dir)?;
    locked(&WRITERS).insert(dir, Arc::new(Mutex::new(writer)));
    Ok(())
}

/// At start: if the data directory was restored from a snapshot (the
/// marker `sealpost backup` leaves in it), writes the "restored" entry into
/// this node's chain and removes the marker. Returns the entry's detail.
pub fn note_restore(root: &Path) -> io::Result<Option<String>> {
    let marker = root.join(DIR).join(RESTORED_MARKER);
    let text = match fs::read_to_string(&marker) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let info: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let detail = format!(
        "restored from snapshot {} taken {}",
        info["snapshot"].as_str().unwrap_or("(unknown)"),
        info["taken"].as_str().unwrap_or("(unknown)")
    );
    append(root, Entry::new(Event::Restored).detail(&detail))?;
    sync(root)?;
    fs::remove_file(&marker)?;
    durable::sync_dir(&root.join(DIR))?;
    Ok(Some(detail))
}

/// A chain's segment files, oldest first: (first seq, path).
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    numbered(dir, ".log")
}

/// The files of `dir` named `<seq>[-<anything>]<suffix>`, by seq: the
/// segments (`<first seq>-<day>.log`) and the anchors (`<seq>.tsr`, and
/// `<seq>-<micros>.tsr` in the outside copy, where a token is never
/// overwritten because a restore reuses sequence numbers).
pub fn numbered(dir: &Path, suffix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let list = match fs::read_dir(dir) {
        Ok(list) => list,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for item in list {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        if let Some(seq) = name
            .strip_suffix(suffix)
            .and_then(|n| n.split('-').next())
            .and_then(|seq| seq.parse::<u64>().ok())
        {
            out.push((seq, item.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The node chains under `root`.
pub fn nodes(root: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    match fs::read_dir(root.join(DIR)) {
        Ok(list) => {
            for item in list {
                let item = item?;
                if item.file_type()?.is_dir() {
                    out.push(item.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

/// The last whole entry of a chain: (seq, hash), or `None` for no entry.
pub fn head(dir: &Path) -> io::Result<Option<(u64, String)>> {
    for (_, path) in segments(dir)?.iter().rev() {
        let tail = read_tail(path)?;
        let whole = match tail.iter().rposition(|&b| b == b'\n') {
            Some(end) => &tail[..end],
            None => continue,
        };
        let start = whole.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let text = String::from_utf8_lossy(&whole[start..]);
        let read = parse_line(&text).map_err(|e| {
            io::Error::other(format!(
                "{}: the last entry cannot be read ({e}): the chain cannot be continued",
                path.display()
            ))
        })?;
        return Ok(Some((read.entry.seq, read.hash)));
    }
    Ok(None)
}

/// The last 64 KiB of a file (entries are far shorter).
fn read_tail(path: &Path) -> io::Result<Vec<u8>> {
    // A regular file only: a FIFO or a link planted here is refused, never
    // waited on or followed.
    let mut file = super::beneath::open_regular(path)?;
    let len = file.metadata()?.len();
    let from = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    Ok(tail)
}

/// Cuts a torn last line (a crash in the middle of a write) back to the
/// last whole entry. Returns the bytes cut.
fn cut_torn_tail(path: &Path) -> io::Result<u64> {
    let tail = read_tail(path)?;
    if tail.is_empty() || tail.ends_with(b"\n") {
        return Ok(0);
    }
    let len = fs::metadata(path)?.len();
    let keep = match tail.iter().rposition(|&b| b == b'\n') {
        Some(p) => len - tail.len() as u64 + p as u64 + 1,
        None if len == tail.len() as u64 => 0,
        None => {
            return Err(io::Error::other(format!(
                "{}: its last 64 KiB hold no whole entry",
                path.display()
            )));
        }
    };
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(len - keep)
}

/// One node's appender.
struct Writer {
    dir: PathBuf,
    lock: File,
    active: Option<Active>,
    seq: u64,
    head: String,
    /// The directory's modification time when we last looked.
    dir_time: SystemTime,
}

/// The segment being written.
struct Active {
    file: File,
    len: u64,
    day: String,
}

impl Writer {
    fn open(dir: &Path) -> io::Result<Writer> {
        for d in [dir.parent().unwrap_or(dir), dir, &dir.join(ANCHORS_DIR)] {
            durable::create_private_dir(d)?;
        }
        let lock = durable::open_lock_file(&dir.join(LOCK_FILE))?;
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            lock,
            active: None,
            seq: 0,
            head: GENESIS.into(),
            dir_time: SystemTime::UNIX_EPOCH,
        };
        writer.lock.lock()?;
        let result = writer.rescan(true);
        let _ = writer.lock.unlock();
        result.map(|()| writer)
    }

    /// Finds the chain's head and active segment (after another process
    /// appended, or at open, when a torn last line is cut).
    fn rescan(&mut self, repair: bool) -> io::Result<()> {
        let segments = segments(&self.dir)?;
        if repair && let Some((_, last)) = segments.last() {
            let cut = cut_torn_tail(last)?;
            if cut > 0 {
                warn!(
                    "custody: the last entry of {} was torn ({cut} bytes, a crash during a write): cut back to the last whole entry",
                    last.display()
                );
            }
        }
        self.dir_time = fs::metadata(&self.dir)?.modified()?;
        let (seq, head) = head(&self.dir)?.unwrap_or((0, GENESIS.into()));
        self.seq = seq;
        self.head = head;
        self.active = match segments.last() {
            Some((_, path)) => {
                let file = OpenOptions::new()
                    .append(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)?;
                let len = file.metadata()?.len();
                let day = day_of(path);
                Some(Active { file, len, day })
            }
            None => None,
        };
        Ok(())
    }

    /// Whether another process appended or rotated since we last looked
    /// (a rotation creates a file: the directory's time changes).
    fn stale(&self) -> io::Result<bool> {
        if fs::metadata(&self.dir)?.modified()? != self.dir_time {
            return Ok(true);
        }
        Ok(match &self.active {
            Some(active) => active.file.metadata()?.len() != active.len,
            None => false,
        })
    }

    fn append(&mut self, mut entry: Entry, segment_bytes: u64) -> io::Result<Entry> {
        self.lock.lock()?;
        let result = (|| {
            if self.stale()? {
                self.rescan(false)?;
            }
            entry.seq = self.seq + 1;
            entry.time = timestamp::rfc3339(SystemTime::now());
            entry.prev = self.head.clone();
            let (line, hash) = entry.line();
            let today = entry.time.get(..10).unwrap_or("").replace('-', "");
            let full = self
                .active
                .as_ref()
                .is_none_or(|a| a.len > 0 && (a.len >= segment_bytes || a.day != today));
            if full {
                let path = self.dir.join(segment_name(entry.seq, &today));
                let file = OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)?;
                if flush::flushed_per_file(&self.dir)? {
                    durable::sync_dir(&self.dir)?;
                }
                self.dir_time = fs::metadata(&self.dir)?.modified()?;
                self.active = Some(Active {
                    file,
                    len: 0,
                    day: today,
                });
            }
            let active = self.active.as_mut().expect("a segment was opened above");
            let bytes = format!("{line}\n");
            if let Err(e) = active.file.write_all(bytes.as_bytes()) {
                // Never leave half a line for the next entry to follow.
                let _ = active.file.set_len(active.len);
                return Err(e);
            }
            if flush::flushed_per_file(&self.dir)? {
                active.file.sync_data()?;
            }
            active.len += bytes.len() as u64;
            self.seq = entry.seq;
            self.head = hash;
            Ok(entry)
        })();
        let _ = self.lock.unlock();
        result
    }
}

/// A segment's file name.
pub fn segment_name(first: u64, day: &str) -> String {
    format!("{first:012}-{day}.log")
}

/// The day in a segment's name (`YYYYMMDD`).
fn day_of(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.split_once('-'))
        .map(|(_, day)| day.to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(dir: &Path) -> Vec<ReadLine> {
        let mut out = Vec::new();
        for (_, path) in segments(dir).unwrap() {
            for line in fs::read_to_string(path).unwrap().lines() {
                out.push(parse_line(line).unwrap());
            }
        }
        out
    }

    #[test]
    fn entries_chain_hash_and_rotate() {
        let root = tempfile::tempdir().unwrap();
        let dir = chain_dir(root.path(), "t");
        let mut writer = Writer::open(&dir).unwrap();
        for i in 0..5 {
            let entry = Entry::new(Event::Stored).message("mbx-1", &format!("m{i}"));
            writer.append(entry, 400).unwrap();
        }
        let lines = read_all(&dir);
        assert_eq!(lines.len(), 5);
        assert!(
            segments(&dir).unwrap().len() > 1,
            "400-byte segments rotate"
        );
        let mut prev = GENESIS.to_string();
        for (i, l) in lines.iter().enumerate() {
            assert!(l.hash_ok);
            assert_eq!(l.entry.seq, i as u64 + 1);
            assert_eq!(l.entry.prev, prev);
            prev = l.hash.clone();
        }
        // A second writer (another process) continues the same chain.
        let mut other = Writer::open(&dir).unwrap();
        other
            .append(Entry::new(Event::MailboxCreated), 400)
            .unwrap();
        writer
            .append(Entry::new(Event::MailboxCreated), 400)
            .unwrap();
        let lines = read_all(&dir);
        assert_eq!(lines.last().unwrap().entry.seq, 7);
        assert_eq!(lines[6].entry.prev, lines[5].hash);
    }

    #[test]
    fn an_edited_line_no_longer_matches_its_hash() {
        let (line, _) = Entry::new(Event::Stored).message("mbx-1", "m").line();
        assert!(parse_line(&line).unwrap().hash_ok);
        let edited = line.replace("\"m\"", "\"n\"");
        assert!(!parse_line(&edited).unwrap().hash_ok);
        assert!(parse_line("{\"seq\":1}").is_err());
    }

    #[test]
    fn a_torn_last_line_is_cut_back_at_open() {
        let root = tempfile::tempdir().unwrap();
        let dir = chain_dir(root.path(), "t");
        let mut writer = Writer::open(&dir).unwrap();
        writer.append(Entry::new(Event::Stored), 1 << 20).unwrap();
        writer.append(Entry::new(Event::Stored), 1 << 20).unwrap();
        let (_, path) = segments(&dir).unwrap().pop().unwrap();
        let whole = fs::read(&path).unwrap();
        fs::write(&path, &whole[..whole.len() - 10]).unwrap();
        let mut again = Writer::open(&dir).unwrap();
        assert_eq!(again.seq, 1);
        again.append(Entry::new(Event::Stored), 1 << 20).unwrap();
        let lines = read_all(&dir);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].entry.prev, lines[0].hash);
    }
}
