//! `sealpost custody verify`: the chain of custody checked, by category;
//! `sealpost custody anchor`: this node's chain time-stamped now.

use std::collections::HashSet;
use std::fs;

use getopts::Options;

use super::{CliError, Context, EXIT_FAILURE, context_with, parse_options};
use crate::custody::verify::{self, PROBLEMS};
use crate::store::MailboxId;

const SUMMARY: &str = "anchor | verify [--tsa-ca FILE] [--anchors DIR] [--mailbox ID --password-file FILE --export DIR] [--json]\n\n\
Walks every node's custody chain in the data directory: every hash, every\n\
link, every anchor against the TSA's certificate (custody.tsa.ca_file, or\n\
--tsa-ca), and the outside copy of the anchors (custody.anchor_copy_dir, or\n\
--anchors). Puts every message stored in one state: present with the same\n\
file digest, retrieved and deleted, deleted without retrieval, released,\n\
abandoned, removed by the administrator; anything else is missing without a\n\
hand-over. With a mailbox's password and a directory of .eml files exported\n\
from the archive, checks each retrieved message's plaintext digest.\n\n\
anchor: time-stamps this node's chain now (custody.tsa), as the gateway\n\
does every custody.anchor_interval_secs and at shutdown; exit 1 if the TSA\n\
fails.\n\n\
verify exit codes: 0 complete; 1 a problem found (each category counted below);\n\
2 usage; 3 the chain or a file cannot be read.";

/// Runs `sealpost custody …`.
pub fn run(context: &Context, args: Vec<String>) -> Result<(), CliError> {
    let mut opts = Options::new();
    opts.optopt("", "tsa-ca", "the TSA's CA certificate(s), PEM", "FILE");
    opts.optopt("", "anchors", "the outside copy of the anchors", "DIR");
    opts.optopt(
        "",
        "mailbox",
        "the mailbox whose plaintext is checked",
        "ID",
    );
    opts.optopt("", "password-file", "that mailbox's password", "FILE");
    opts.optopt(
        "",
        "export",
        "a directory of .eml files from the archive",
        "DIR",
    );
    opts.optflag("", "json", "the counts and lines as JSON");
    let Some(m) = parse_options("custody", SUMMARY, &mut opts, &args)? else {
        return Ok(());
    };
    let (config, store) = match m.free.as_slice() {
        [c] if c == "verify" => context_with(context, &m).open()?,
        [c] if c == "anchor" => return anchor(&context_with(context, &m).open()?.0),
        _ => {
            return Err(CliError::usage(
                "custody takes a command: anchor or verify (see sealpost custody --help)",
            ));
        }
    };
    let options = options(&config, &store, &m)?;
    let report = verify::verify(&store, &options).map_err(cannot)?;
    print(&report, m.opt_present("json"));
    match report.complete() {
        true => Ok(()),
        false => Err(CliError {
            code: EXIT_FAILURE,
            message: String::new(),
        }),
    }
}

/// A problem reading what verify needs: exit 3.
fn cannot(e: String) -> CliError {
    CliError {
        code: super::EXIT_DAMAGED,
        message: e,
    }
}

/// `custody anchor`: this node's chain stamped now.
fn anchor(config: &crate::config::Config) -> Result<(), CliError> {
    let anchorer = crate::custody::Anchorer::new(config).ok_or_else(|| {
        CliError::failed("no time-stamping authority is configured (custody.tsa)")
    })?;
    match anchorer.anchor_now().map_err(CliError::failed)? {
        Some(seq) => outln!("Anchored entry {seq}."),
        None => outln!("Nothing new to anchor."),
    }
    Ok(())
}

/// What verify checks besides the chains, from the options and the
/// configuration.
fn options(
    config: &crate::config::Config,
    store: &crate::store::Store,
    m: &getopts::Matches,
) -> Result<verify::Options, CliError> {
    let tsa_ca = m
        .opt_str("tsa-ca")
        .map(std::path::PathBuf::from)
        .or_else(|| config.custody.tsa.as_ref().and_then(|t| t.ca_file.clone()));
    let mut options = verify::Options {
        tsa_ca: tsa_ca
            .map(|p| fs::read(&p).map_err(|e| cannot(format!("{}: {e}", p.display()))))
            .transpose()?,
        anchor_copy: m
            .opt_str("anchors")
            .map(Into::into)
            .or(config.custody.anchor_copy_dir.clone()),
        plaintext: None,
    };
    match (
        m.opt_str("mailbox"),
        m.opt_str("password-file"),
        m.opt_str("export"),
    ) {
        (None, None, None) => {}
        (Some(id), Some(password), Some(export)) => {
            let id: MailboxId = id
                .parse()
                .map_err(|e| CliError::usage(format!("--mailbox: {e}")))?;
            let mailbox = store.mailbox(&id)?;
            let password = super::password_input::read_password_file(&password)?;
            let mut keys = vec![mailbox.unlock(&password)?];
            keys.extend(mailbox.unlock_retired(&password).unwrap_or_default());
            let mut digests = HashSet::new();
            let list = fs::read_dir(&export).map_err(|e| cannot(format!("{export}: {e}")))?;
            for item in list.flatten() {
                if item.path().extension().is_some_and(|e| e == "eml") {
                    let bytes = fs::read(item.path())
                        .map_err(|e| cannot(format!("{}: {e}", item.path().display())))?;
                    digests.insert(verify::export_digest(&bytes));
                }
            }
            options.plaintext = Some((id.to_string(), keys, digests));
        }
        _ => {
            return Err(CliError::usage(
                "--mailbox, --password-file and --export go together",
            ));
        }
    }
    Ok(options)
}

/// The report, as text or JSON.
fn print(report: &verify::Report, json: bool) {
    if json {
        let json = serde_json::json!({
            "complete": report.complete(),
            "counts": report.counts,
            "lines": report.lines,
        });
        outln!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    } else {
        for line in &report.lines {
            outln!("{line}");
        }
        for (category, count) in &report.counts {
            let mark = if PROBLEMS.contains(category) && *count > 0 {
                "  <- problem"
            } else {
                ""
            };
            outln!("{category}: {count}{mark}");
        }
        outln!(
            "{}",
            if report.complete() {
                "complete: every message stored is accounted for"
            } else {
                "NOT complete: see the problems above"
            }
        );
    }
}
