//! `sealpost backup DEST` and `sealpost merge STANDBY_DATA_DIR`.

use std::path::Path;

use getopts::Options;

use super::{CliError, Context, context_with, parse_options};
use crate::store::{backup, merge};

const BACKUP: &str = "DEST [--keep N]\n\n\
Copies the data directory into DEST/<UTC time>/ while the gateway runs and\n\
receives mail: every message, the key files, the certificate. Messages the\n\
previous snapshot holds are hard-linked, not copied, so a daily run costs\n\
only the new mail. DEST/latest names the newest complete snapshot; only the\n\
newest N are kept (default 7). Restore: stop the gateway, then\n\
cp -a DEST/latest/. <data_dir>/ (see the README, \"Backup and restore\").";

const MERGE: &str = "STANDBY_DATA_DIR | --release RECEIPT\n\n\
On the primary: moves the messages a standby gateway received (a copy of its\n\
data directory) into this gateway's mailboxes with the same id and public\n\
key. Each message is stored durably here before it is removed from the copy,\n\
and is written into a receipt (data_dir/merge-receipts/ID.json: mailbox, file\n\
name, SHA-256). Running it again never gives the archiver a message twice.\n\
The standby's directory is not trusted: no symbolic link in it is followed,\n\
only regular files are read, and a path that leads back into this gateway's\n\
own data directory is refused.\n\n\
On the standby: --release RECEIPT deletes exactly the files the receipt names,\n\
each only where its content still matches; nothing else. It is refused on\n\
the gateway that wrote the receipt.";

/// Runs `sealpost backup …`.
pub fn run_backup(context: &Context, args: Vec<String>) -> Result<(), CliError> {
    let mut opts = Options::new();
    opts.optopt("", "keep", "snapshots to keep (default 7)", "N");
    let Some(m) = parse_options("backup", BACKUP, &mut opts, &args)? else {
        return Ok(());
    };
    let [dest] = m.free.as_slice() else {
        return Err(CliError::usage(
            "backup: give the backup directory (see sealpost backup --help)",
        ));
    };
    let keep = match m.opt_str("keep") {
        None => 7,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| {
                CliError::usage(format!(
                    "backup: --keep {text:?}: give a whole number from 1"
                ))
            })?,
    };
    let context = context_with(context, &m);
    let (_, store) = context.open_to_change("backup")?;
    let report = backup::backup(&store, Path::new(dest), keep)?;
    outln!(
        "Snapshot {}: {} mailbox(es), {} message(s) ({} linked from the previous snapshot, {} bytes copied); {} old snapshot(s) removed",
        report.snapshot.display(),
        report.mailboxes,
        report.messages,
        report.linked,
        report.copied_bytes,
        report.pruned
    );
    Ok(())
}

/// Runs `sealpost merge …`.
pub fn run_merge(context: &Context, args: Vec<String>) -> Result<(), CliError> {
    let mut opts = Options::new();
    opts.optopt(
        "",
        "release",
        "on the standby: delete the files a receipt names",
        "RECEIPT",
    );
    let Some(m) = parse_options("merge", MERGE, &mut opts, &args)? else {
        return Ok(());
    };
    if let Some(receipt) = m.opt_str("release") {
        if let Some(extra) = m.free.first() {
            return Err(CliError::usage(format!(
                "merge: --release takes the receipt alone, not {extra:?} (see sealpost merge --help)"
            )));
        }
        let context = context_with(context, &m);
        let (_, store) = context.open_to_change("merge --release")?;
        let report = merge::release(&store, Path::new(&receipt))?;
        outln!(
            "Released {} message file(s); {} were gone already",
            report.released,
            report.gone
        );
        for why in &report.kept {
            eprintln!("sealpost: kept {why}");
        }
        return if report.kept.is_empty() {
            Ok(())
        } else {
            Err(CliError::failed(format!(
                "{} file(s) named in the receipt were kept",
                report.kept.len()
            )))
        };
    }
    let [standby] = m.free.as_slice() else {
        return Err(CliError::usage(
            "merge: give the standby's data directory (see sealpost merge --help)",
        ));
    };
    let context = context_with(context, &m);
    let (_, store) = context.open_to_change("merge")?;
    let report = merge::merge(&store, Path::new(standby))?;
    outln!(
        "Merged {} message(s); {} were here already; {} were merged before",
        report.moved,
        report.present,
        report.merged_before
    );
    if let Some(receipt) = &report.receipt {
        outln!("Receipt: {}", receipt.display());
        outln!(
            "Copy it to the standby and run there: sealpost merge --release {}",
            receipt
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
    }
    for why in &report.refused {
        eprintln!("sealpost: {why}");
    }
    for why in &report.skipped {
        eprintln!("sealpost: skipped mailbox {why}");
    }
    if report.skipped.is_empty() && report.refused.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "{} mailbox(es) not merged, {} file(s) left alone",
            report.skipped.len(),
            report.refused.len()
        )))
    }
}
