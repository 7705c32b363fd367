//! `sealpost custody verify`: every node's chain walked and its hashes,
//! links and anchors checked; every message stored put in exactly one
//! state; with a mailbox's password and an export from the archive, each
//! retrieved message's plaintext digest compared.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::{anchors, hex_bytes, tsa};
use crate::crypto::{self, KeyPair};
use crate::store::custody::{self, Entry, Event, GENESIS};
use crate::store::{MailboxId, MessageName, Store, beneath};

/// What the checks found, by category.
#[derive(Debug, Default)]
pub struct Report {
    /// Counts by category (see [`PROBLEMS`] for those that fail).
    pub counts: BTreeMap<&'static str, u64>,
    /// One line per problem or notable event.
    pub lines: Vec<String>,
}

/// The categories that make the verdict "not complete" (exit 1).
pub const PROBLEMS: [&str; 13] = [
    "altered entries",
    "broken links",
    "gaps",
    "out of order",
    "unreadable lines",
    "bad anchors",
    "anchors beyond the chain",
    "anchors lost",
    "missing without a hand-over",
    "altered files",
    "restores",
    "plaintext mismatches",
    "plaintext not in the export",
];

impl Report {
    fn add(&mut self, category: &'static str, line: Option<String>) {
        *self.counts.entry(category).or_default() += 1;
        if let Some(line) = line {
            self.lines.push(line);
        }
    }

    /// Whether every check passed.
    pub fn complete(&self) -> bool {
        PROBLEMS
            .iter()
            .all(|p| self.counts.get(p).copied().unwrap_or(0) == 0)
    }
}

/// What to check besides the chains.
#[derive(Default)]
pub struct Options {
    /// The TSA's CA certificates (PEM); `None`: anchors are not checked.
    pub tsa_ca: Option<Vec<u8>>,
    /// The outside copy of the tokens.
    pub anchor_copy: Option<PathBuf>,
    /// A mailbox, its unlocked keys (current and retired) and the digests
    /// of an archive's export (CRLF line ends).
    pub plaintext: Option<(String, Vec<KeyPair>, HashSet<[u8; 32]>)>,
}

/// One message's story across every chain.
#[derive(Default)]
struct Story {
    stored: Option<Entry>,
    /// (time, node, seq, event, entry)
    events: Vec<(String, String, u64, Entry)>,
    retrieved: bool,
}

/// Runs every check on the data directory of `store`.
pub fn verify(store: &Store, options: &Options) -> Result<Report, String> {
    let root = store.root();
    let mut report = Report::default();
    let mut stories: HashMap<(String, String), Story> = HashMap::new();
    let nodes = custody::nodes(root).map_err(|e| format!("{}: {e}", root.display()))?;
    for node in &nodes {
        let dir = custody::chain_dir(root, node);
        let chain = walk(node, &dir, &mut report)?;
        check_anchors(node, &dir, &chain, options, &mut report);
        for (entry, _) in chain.into_values() {
            if entry.event == Event::Restored {
                report.add(
                    "restores",
                    Some(format!(
                        "node {node}, entry {}: {}; whatever the chain held after that snapshot was rolled back",
                        entry.seq,
                        entry.detail.as_deref().unwrap_or("restored")
                    )),
                );
            }
            let (Some(mailbox), Some(file)) = (entry.mailbox.clone(), entry.file.clone()) else {
                continue;
            };
            let story = stories.entry((mailbox, file)).or_default();
            match entry.event {
                Event::Stored => story.stored = Some(entry),
                Event::Retrieved => story.retrieved = true,
                _ => story
                    .events
                    .push((entry.time.clone(), node.clone(), entry.seq, entry)),
            }
        }
    }
    check_messages(store, &mut stories, options, &mut report);
    Ok(report)
}

/// A chain's entries with their hashes, by seq.
type Chain = BTreeMap<u64, (Entry, String)>;

/// Reads one chain: every line parsed and hashed; then, in seq order,
/// every link checked and every run of missing entries counted as a gap.
/// An entry whose seq is lower than one before it in the files is out of
/// order (two entries swapped count once).
fn walk(node: &str, dir: &Path, report: &mut Report) -> Result<Chain, String> {
    let mut chain = Chain::new();
    let mut highest = 0u64;
    let segments = custody::segments(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (_, path) in segments {
        let mut text = Vec::new();
        crate::store::beneath::open_regular(&path)
            .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut text))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for line in String::from_utf8_lossy(&text).lines() {
            let read = match custody::parse_line(line) {
                Ok(read) => read,
                Err(e) => {
                    report.add(
                        "unreadable lines",
                        Some(format!("node {node}, {}: {e}", path.display())),
                    );
                    continue;
                }
            };
            let seq = read.entry.seq;
            // A name is a name: never a path into someone else's files.
            let names = [&read.entry.mailbox, &read.entry.file];
            if names.into_iter().flatten().any(|n| !plain_name(n)) {
                report.add(
                    "unreadable lines",
                    Some(format!("node {node}, entry {seq}: a name that is a path")),
                );
                continue;
            }
            if !read.hash_ok {
                report.add(
                    "altered entries",
                    Some(format!(
                        "node {node}, entry {seq}: does not match its hash (edited)"
                    )),
                );
            }
            if seq < highest {
                report.add(
                    "out of order",
                    Some(format!(
                        "node {node}: entry {seq} comes after entry {highest}"
                    )),
                );
            }
            highest = highest.max(seq);
            *report.counts.entry("entries").or_default() += 1;
            chain.insert(seq, (read.entry, read.hash));
        }
    }
    let mut prev: Option<(u64, &String)> = None;
    for (seq, (entry, hash)) in &chain {
        let (last_seq, last_hash) = prev.map_or((0, GENESIS), |(s, h)| (s, h.as_str()));
        if *seq != last_seq + 1 {
            report.add(
                "gaps",
                Some(format!(
                    "node {node}: entries {} to {} are missing",
                    last_seq + 1,
                    seq - 1
                )),
            );
        } else if entry.prev != last_hash {
            report.add(
                "broken links",
                Some(format!(
                    "node {node}, entry {seq}: does not follow the entry before it"
                )),
            );
        }
        prev = Some((*seq, hash));
    }
    Ok(chain)
}

fn check_anchors(node: &str, dir: &Path, chain: &Chain, options: &Options, report: &mut Report) {
    let head = chain.keys().last().copied().unwrap_or(0);
    let here = anchors(&dir.join(custody::ANCHORS_DIR)).unwrap_or_default();
    let last = here
        .iter()
        .filter(|(s, _)| *s <= head)
        .map(|(s, _)| *s)
        .max();
    *report.counts.entry("unanchored entries").or_default() += head - last.unwrap_or(0);
    for (seq, path) in &here {
        check_anchor(node, *seq, path, chain, options, false, report);
    }
    if let Some(copy) = &options.anchor_copy {
        let kept: HashSet<Vec<u8>> = here.iter().filter_map(|(_, p)| fs::read(p).ok()).collect();
        for (seq, path) in anchors(&copy.join(node)).unwrap_or_default() {
            if fs::read(&path).is_ok_and(|t| kept.contains(&t)) {
                continue;
            }
            if !check_anchor(node, seq, &path, chain, options, true, report) {
                report.add(
                    "anchors lost",
                    Some(format!(
                        "node {node}: the anchor of entry {seq} is in {} but not in the data directory",
                        copy.display()
                    )),
                );
            }
        }
    }
}

/// Checks one token against the chain; returns whether it reported one.
fn check_anchor(
    node: &str,
    seq: u64,
    path: &Path,
    chain: &Chain,
    options: &Options,
    copy: bool,
    report: &mut Report,
) -> bool {
    let Some(ca) = &options.tsa_ca else {
        return false;
    };
    let head = chain.keys().last().copied().unwrap_or(0);
    let stamp = fs::read(path).map_err(|e| e.to_string()).and_then(|resp| {
        let token = tsa::token_of_response(&resp)?.to_vec();
        tsa::check_token(&token, ca)
    });
    let stamp = match stamp {
        Ok(stamp) => stamp,
        Err(e) => {
            report.add(
                "bad anchors",
                Some(format!("node {node}, {}: {e}", path.display())),
            );
            return true;
        }
    };
    match chain.get(&seq) {
        None => report.add(
            if copy { "anchors lost" } else { "anchors beyond the chain" },
            Some(format!(
                "node {node}: entry {seq} was anchored at {} but the chain ends at entry {head}: entries were cut",
                stamp.gen_time
            )),
        ),
        Some((_, hash)) if hex_bytes(hash).is_some_and(|h| h[..] == stamp.digest[..]) => {
            if copy {
                return false;
            }
            report.add("anchors verified", None);
        }
        Some(_) => report.add(
            if copy { "anchors lost" } else { "bad anchors" },
            Some(format!(
                "node {node}: entry {seq} was anchored at {} with another hash: the chain was rewritten or rolled back since",
                stamp.gen_time
            )),
        ),
    }
    true
}

/// Whether `name` is one file name (no `/`, not `.` or `..`, not empty).
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Where a stored message file is now: the mailbox's own `messages/`, or
/// among the messages of a retired key (the store's lookups, so the
/// layout is written once).
fn find_file(store: &Store, mailbox: &str, file: &str) -> Option<PathBuf> {
    let id: MailboxId = mailbox.parse().ok()?;
    let name = MessageName::from_file_name(file)?;
    let mailbox = store.mailbox(&id).ok()?;
    let current = mailbox.message_path(&name);
    if fs::symlink_metadata(&current).is_ok_and(|m| m.is_file()) {
        return Some(current);
    }
    mailbox
        .retired_messages()
        .ok()?
        .into_iter()
        .find(|(_, n)| *n == name)
        .map(|(dir, n)| dir.join(n.file_name()))
}

/// Every message file in the mailboxes' `messages/`, as POP3 lists them.
fn present_files(store: &Store) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for id in store.mailbox_ids().unwrap_or_default() {
        let names = store.mailbox(&id).and_then(|m| m.message_names());
        for name in names.unwrap_or_default() {
            out.push((id.to_string(), name.file_name()));
        }
    }
    out
}

fn check_messages(
    store: &Store,
    stories: &mut HashMap<(String, String), Story>,
    options: &Options,
    report: &mut Report,
) {
    let mut keys: Vec<_> = stories.keys().cloned().collect();
    keys.sort();
    for key in keys {
        let story = stories.get_mut(&key).expect("listed above");
        let Some(stored) = story.stored.clone() else {
            report.add("events for messages stored before the log", None);
            continue;
        };
        story
            .events
            .sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        let last = story
            .events
            .iter()
            .rev()
            .map(|(_, _, _, e)| e)
            .next()
            .filter(|e| e.event != Event::DeletionUndone);
        let (mailbox, file) = &key;
        match last.map(|e| (e.event, e)) {
            Some((Event::Deleted, e)) if e.retrieved == Some(true) => {
                report.add("retrieved and deleted", None);
            }
            Some((Event::Deleted, _)) => report.add("deleted without retrieval", None),
            Some((Event::Released, _)) => report.add("released", None),
            Some((Event::Abandoned, _)) => report.add("abandoned", None),
            Some((Event::Removed, _)) => report.add("removed by the administrator", None),
            _ => match find_file(store, mailbox, file) {
                None => report.add(
                    "missing without a hand-over",
                    Some(format!(
                        "{mailbox}/{file}: stored, never handed over, and gone"
                    )),
                ),
                Some(path) => {
                    let digest = beneath::open_regular(&path)
                        .and_then(crypto::sha256_of)
                        .ok();
                    if digest.map(|d| crypto::hex(&d)) == stored.sha256 {
                        report.add("present", None);
                    } else {
                        report.add(
                            "altered files",
                            Some(format!("{mailbox}/{file}: differs from what was stored")),
                        );
                    }
                }
            },
        }
        if story.retrieved {
            check_plaintext(mailbox, file, &stored, options, report);
        }
    }
    // Files no entry knows of (stored before the log was kept).
    let known: HashSet<&(String, String)> = stories
        .iter()
        .filter(|(_, s)| s.stored.is_some())
        .map(|(k, _)| k)
        .collect();
    for (id, name) in present_files(store) {
        if !known.contains(&(id.clone(), name.clone())) {
            report.add(
                "files not in the log",
                Some(format!(
                    "{id}/{name}: present, but no entry says it was stored"
                )),
            );
        }
    }
}

fn check_plaintext(
    mailbox: &str,
    file: &str,
    stored: &Entry,
    options: &Options,
    report: &mut Report,
) {
    let Some((id, keys, export)) = &options.plaintext else {
        return;
    };
    if id != mailbox {
        return;
    }
    let Some(sealed) = stored
        .sealed_message_sha256
        .as_deref()
        .and_then(|b| crypto::base64_decode(b).ok())
    else {
        report.add("retrieved without a sealed digest (merged in)", None);
        return;
    };
    let digest = keys
        .iter()
        .find_map(|pair| crypto::open_sealed(&sealed, pair).ok());
    match digest.and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok()) {
        Some(d) if export.contains(&d) => report.add("plaintext verified", None),
        Some(_) => report.add(
            "plaintext not in the export",
            Some(format!(
                "{mailbox}/{file}: retrieved, but no exported message has its digest"
            )),
        ),
        None => report.add(
            "plaintext mismatches",
            Some(format!(
                "{mailbox}/{file}: its sealed digest does not open with this mailbox's keys"
            )),
        ),
    }
}

/// The digest of an exported message as POP3 served it: every line end
/// made CRLF (an export with bare LF line ends is normalised; CRLF stays).
pub fn export_digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 40);
    let mut prev = 0u8;
    for &b in bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    crypto::sha256(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_with_lf_line_ends_has_the_served_digest() {
        let served = b"Subject: a\r\n\r\nbody\r\n";
        assert_eq!(export_digest(served), crypto::sha256(served));
        assert_eq!(
            export_digest(b"Subject: a\n\nbody\n"),
            crypto::sha256(served)
        );
    }
}
