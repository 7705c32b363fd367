//! `sealpost backup DEST` and `sealpost merge STANDBY_DATA_DIR`.

use getopts::Options;

use super::{CliError, Context, context_with, parse_options};
use crate::store::backup;

const BACKUP: &str = "DEST [--keep N]\n\n\
Copies the data directory into DEST/<UTC time>/ while the gateway runs and\n\
receives mail: every message, the key files, the certificate. Messages the\n\
previous snapshot holds are hard-linked, not copied, so a daily run costs\n\
only the new mail. DEST/latest names the newest complete snapshot; only the\n\
newest N are kept (default 7). Restore: stop the gateway, then\n\
cp -a DEST/latest/. <data_dir>/ (see the README, \"Backup and restore\").";

const MERGE: &str = "STANDBY_DATA_DIR\n\n\
Moves the messages a standby gateway received (its data directory, or a copy\n\
of it) into this gateway's mailboxes with the same id and public key. Each\n\
message is stored durably here before it is removed there, so running it\n\
again never gives the archiver a message twice.";

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
    let (_, store) = context.open()?;
    let report = backup::backup(&store, std::path::Path::new(dest), keep)?;
    println!(
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
    let Some(m) = parse_options("merge", MERGE, &mut opts, &args)? else {
        return Ok(());
    };
    let [standby] = m.free.as_slice() else {
        return Err(CliError::usage(
            "merge: give the standby's data directory (see sealpost merge --help)",
        ));
    };
    let context = context_with(context, &m);
    let (_, store) = context.open()?;
    let report = backup::merge(&store, std::path::Path::new(standby))?;
    println!(
        "Merged {} message(s); {} were here already",
        report.moved, report.present
    );
    for why in &report.skipped {
        eprintln!("sealpost: skipped mailbox {why}");
    }
    if report.skipped.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "{} mailbox(es) not merged",
            report.skipped.len()
        )))
    }
}
