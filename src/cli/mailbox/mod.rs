//! `sealpost mailbox ...`: create, list, show, passwd, reset-password,
//! suspend, resume, update, delete, deliver, export, export-public,
//! import-public.

mod create;
mod deliver;
mod export;
mod list;
mod password;
mod public;
mod state;

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::time::SystemTime;

use getopts::{Matches, Options};
use serde_json::json;

use super::crlf::CrlfWriter;
use super::password_input::{password_from, read_password_file};
use super::{CliError, Context, EXIT_DAMAGED, context_with, parse_options};
use crate::admin::{self, NewPassword};
use crate::config::Config;
use crate::crypto::{self, Password};
use crate::store::mailbox::message_error;
use crate::store::{Deletion, Mailbox, MailboxId, Metadata, Source, Status, StoreError};
use crate::timestamp;

const USAGE: &str = "\
Usage: sealpost mailbox <command> [options]

Commands:
  create --name NAME [--description TEXT] [--password-file FILE] [--json]
  list [--json]
  show ID [--json]
  passwd ID [--password-file OLD] [--new-password-file NEW]
  reset-password ID --force [--new-password-file NEW]
  suspend ID
  resume ID
  update ID [--name NAME] [--description TEXT]
  delete ID [--force] [--even-if-active]   (a suspended mailbox)
  deliver ID [--from ADDR] < message
  export ID [--password-file FILE] [--retired] --out DIR
  purge-retired ID --force
  export-public ID > FILE
  import-public FILE

Password files: the first line is the password; - reads standard input.
Each command takes --help.";

/// sysexits EX_DATAERR: the input is bad; Postfix bounces.
const EX_DATAERR: i32 = 65;
/// sysexits EX_NOUSER: Postfix bounces.
const EX_NOUSER: i32 = 67;
/// sysexits EX_TEMPFAIL: Postfix tries again later.
const EX_TEMPFAIL: i32 = 75;

/// Dispatches `mailbox <command>`.
pub fn run(context: &Context, mut args: Vec<String>) -> Result<(), CliError> {
    if args.is_empty() {
        return Err(CliError::usage(format!(
            "mailbox: no command given\n{USAGE}"
        )));
    }
    let command = args.remove(0);
    match command.as_str() {
        "-h" | "--help" | "help" => {
            outln!("{USAGE}");
            Ok(())
        }
        "create" => create::create(context, &args),
        "list" => list::list(context, &args),
        "show" => list::show(context, &args),
        "passwd" => password::passwd(context, &args),
        "reset-password" => password::reset_password(context, &args),
        "suspend" => state::set_status(context, &args, "suspend", Status::Suspended),
        "resume" => state::set_status(context, &args, "resume", Status::Active),
        "update" => state::update(context, &args),
        "delete" => state::delete(context, &args),
        "deliver" => deliver::deliver(context, &args),
        "export" => export::export(context, &args),
        "export-public" => public::export_public(context, &args),
        "purge-retired" => export::purge_retired(context, &args),
        "import-public" => public::import_public(context, &args),
        other => Err(CliError::usage(format!(
            "mailbox: unknown command {other:?} (see sealpost mailbox --help)"
        ))),
    }
}

/// Parses options for `mailbox <name>`; `None` when help was printed.
fn options(
    context: &Context,
    name: &str,
    summary: &str,
    args: &[String],
    define: impl FnOnce(&mut Options),
) -> Result<Option<(Context, Matches)>, CliError> {
    let mut opts = Options::new();
    define(&mut opts);
    let command = format!("mailbox {name}");
    Ok(parse_options(&command, summary, &mut opts, args)?.map(|m| (context_with(context, &m), m)))
}

/// Exactly one positional argument: the mailbox id.
fn one_id(name: &str, m: &Matches) -> Result<MailboxId, CliError> {
    match m.free.as_slice() {
        [id] => id
            .parse()
            .map_err(|e: String| CliError::usage(format!("mailbox {name}: {e}"))),
        [] => Err(CliError::usage(format!(
            "mailbox {name}: give the mailbox id (see sealpost mailbox {name} --help)"
        ))),
        [_, extra, ..] => Err(CliError::usage(format!(
            "mailbox {name}: unexpected argument {extra:?}"
        ))),
    }
}

fn no_positional(name: &str, m: &Matches) -> Result<(), CliError> {
    super::no_arguments(&format!("mailbox {name}"), m)
}

fn address(config: &Config, id: &MailboxId) -> String {
    format!("{id}@{}", config.mailbox_domain)
}

fn print_json(value: &serde_json::Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

const LOST_PASSWORD_WARNING: &str = "\
Write this password down now: it is shown only once and cannot be recovered.
Without it, the mail stored in this mailbox can never be read, by anyone.";

/// The password from `file`, else one to generate.
fn new_password(file: Option<String>) -> Result<NewPassword, CliError> {
    Ok(match file {
        Some(path) => NewPassword::Chosen(read_password_file(&path)?),
        None => NewPassword::Generate,
    })
}

/// Prints a generated password once, with the warning.
fn show_generated(label: &str, password: &Option<Password>) {
    if let Some(password) = password {
        outln!("  {label}: {}", password.expose());
        outln!();
        outln!("{LOST_PASSWORD_WARNING}");
    }
}
