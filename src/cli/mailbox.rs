//! `sealpost mailbox ...`: create, list, show, passwd, reset-password,
//! suspend, resume, update, delete, deliver, export, export-public,
//! import-public.

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
        "create" => create(context, &args),
        "list" => list(context, &args),
        "show" => show(context, &args),
        "passwd" => passwd(context, &args),
        "reset-password" => reset_password(context, &args),
        "suspend" => set_status(context, &args, "suspend", Status::Suspended),
        "resume" => set_status(context, &args, "resume", Status::Active),
        "update" => update(context, &args),
        "delete" => delete(context, &args),
        "deliver" => deliver(context, &args),
        "export" => export(context, &args),
        "export-public" => export_public(context, &args),
        "purge-retired" => purge_retired(context, &args),
        "import-public" => import_public(context, &args),
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

fn create(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "create",
        "--name NAME [options]\n\nCreates a mailbox. A strong password is generated and shown once unless\n--password-file gives one (12+ characters, zxcvbn score 4).",
        args,
        |o| {
            o.optopt(
                "",
                "name",
                "a short name for the mailbox (required)",
                "NAME",
            );
            o.optopt("", "description", "free text", "TEXT");
            o.optopt(
                "",
                "password-file",
                "read the password from FILE (- for standard input)",
                "FILE",
            );
            o.optflag(
                "",
                "json",
                "print {\"id\", \"address\", \"password\"} as JSON",
            );
        },
    )?
    else {
        return Ok(());
    };
    no_positional("create", &m)?;
    let name = m
        .opt_str("name")
        .ok_or_else(|| CliError::usage("mailbox create: --name is required"))?;
    let description = m.opt_str("description").unwrap_or_default();
    let (config, store) = context.open_to_change("mailbox create")?;
    let password = new_password(m.opt_str("password-file"))?;
    let (mailbox, generated) =
        admin::create_mailbox(&store, config.kdf.params(), &name, &description, password)?;
    let id = mailbox.id();
    if m.opt_present("json") {
        let mut out = json!({ "id": id.as_str(), "address": address(&config, id) });
        if let Some(password) = &generated {
            out["password"] = json!(password.expose());
            print_json(&out);
            eprintln!("{LOST_PASSWORD_WARNING}");
        } else {
            print_json(&out);
        }
        return Ok(());
    }
    outln!("Created mailbox {id}");
    outln!("  address:  {}", address(&config, id));
    outln!("  name:     {name}");
    show_generated("password", &generated);
    Ok(())
}

fn newest_text(stats: &crate::store::MailboxStats) -> String {
    stats
        .newest
        .map(timestamp::rfc3339)
        .unwrap_or_else(|| "-".into())
}

fn mailbox_json(config: &Config, mailbox: &Mailbox) -> Result<serde_json::Value, StoreError> {
    let info = mailbox.info();
    let stats = mailbox.stats()?;
    Ok(json!({
        "id": info.id.as_str(),
        "address": address(config, &info.id),
        "name": info.name,
        "description": info.description,
        "status": info.status.as_str(),
        "created": info.created,
        "messages": stats.messages,
        "bytes": stats.bytes,
        "newest": stats.newest.map(timestamp::rfc3339),
        "oldest": stats.oldest.map(timestamp::rfc3339),
        "last_retrieved": stats.last_retrieved.map(timestamp::rfc3339),
        "public_only": mailbox.is_public_only(),
    }))
}

fn list(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "list",
        "[--json]\n\nLists every mailbox.",
        args,
        |o| {
            o.optflag("", "json", "print JSON");
        },
    )?
    else {
        return Ok(());
    };
    no_positional("list", &m)?;
    let (config, store) = context.open()?;
    let mut rows = Vec::new();
    let mut broken = Vec::new();
    for id in store.mailbox_ids()? {
        match store.mailbox(&id).and_then(|mb| mailbox_json(&config, &mb)) {
            Ok(row) => rows.push(row),
            Err(e) => broken.push(e.to_string()),
        }
    }
    if m.opt_present("json") {
        print_json(&json!(rows));
    } else if rows.is_empty() && broken.is_empty() {
        outln!("No mailboxes. Create one with: sealpost mailbox create --name NAME");
    } else {
        outln!(
            "{:<36}  {:<9}  {:>8}  {:>12}  {:<20}  {:<20}  ADDRESS",
            "ID",
            "STATUS",
            "MESSAGES",
            "BYTES",
            "NEWEST",
            "NAME"
        );
        for row in &rows {
            outln!(
                "{:<36}  {:<9}  {:>8}  {:>12}  {:<20}  {:<20}  {}",
                row["id"].as_str().unwrap_or(""),
                row["status"].as_str().unwrap_or(""),
                row["messages"].as_u64().unwrap_or(0),
                row["bytes"].as_u64().unwrap_or(0),
                row["newest"].as_str().unwrap_or("-"),
                row["name"].as_str().unwrap_or(""),
                row["address"].as_str().unwrap_or(""),
            );
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(broken.join("\n")))
    }
}

fn show(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "show",
        "ID [--json]\n\nShows one mailbox.",
        args,
        |o| {
            o.optflag("", "json", "print JSON");
        },
    )?
    else {
        return Ok(());
    };
    let id = one_id("show", &m)?;
    let (config, store) = context.open()?;
    let mailbox = store.mailbox(&id)?;
    let wrapped = match mailbox.wrapped_key() {
        Ok(wrapped) => Some(wrapped),
        Err(StoreError::PublicOnly(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let mut out = mailbox_json(&config, &mailbox)?;
    out["public_key"] = json!(crypto::base64_encode(mailbox.info().public_key.as_bytes()));
    out["kdf"] = json!(wrapped.as_ref().map(|w| {
        json!({ "opslimit": w.params.opslimit, "memlimit_bytes": w.params.memlimit })
    }));
    if m.opt_present("json") {
        print_json(&out);
        return Ok(());
    }
    let stats = mailbox.stats()?;
    let info = mailbox.info();
    outln!("id:          {}", info.id);
    outln!("address:     {}", address(&config, &info.id));
    outln!("name:        {}", info.name);
    outln!("description: {}", info.description);
    outln!("status:      {}", info.status.as_str());
    outln!("created:     {}", info.created);
    outln!(
        "messages:    {} ({} bytes on disk)",
        stats.messages,
        stats.bytes
    );
    outln!("newest:      {}", newest_text(&stats));
    outln!("public key:  {}", out["public_key"].as_str().unwrap_or(""));
    match wrapped {
        Some(w) => outln!(
            "key wrap:    argon2id13, opslimit {}, memlimit {} bytes",
            w.params.opslimit,
            w.params.memlimit
        ),
        None => outln!(
            "key wrap:    none: a standby copy, public key only (mail is stored, never read here)"
        ),
    }
    Ok(())
}

fn export_public(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "export-public",
        "ID > FILE\n\nPrints the mailbox's public half (its mailbox.json: id, name, status,\n\
         public key; never the secret key) for `mailbox import-public` on a standby\n\
         gateway, which can then receive mail for it but never read it.",
        args,
        |_| {},
    )?
    else {
        return Ok(());
    };
    let id = one_id("export-public", &m)?;
    let (_, store) = context.open()?;
    let json = store.mailbox(&id)?.info_json()?;
    super::output::write_bytes(&json);
    outln!();
    Ok(())
}

fn import_public(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "import-public",
        "FILE\n\nCreates a mailbox from another gateway's `mailbox export-public` (- reads\n\
         standard input): same id, address and public key, no secret key. This\n\
         gateway stores mail for it (a lower-priority MX while the primary is\n\
         down); POP3 logins and exports are refused. Move the mail to the primary\n\
         with `sealpost merge`.",
        args,
        |_| {},
    )?
    else {
        return Ok(());
    };
    let [file] = m.free.as_slice() else {
        return Err(CliError::usage(
            "mailbox import-public: give one file (see sealpost mailbox import-public --help)",
        ));
    };
    let mut bytes = Vec::new();
    let read = if file == "-" {
        io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    read.map_err(|e| CliError::failed(format!("cannot read {file}: {e}")))?;
    let (config, store) = context.open_to_change("mailbox import-public")?;
    let mailbox = store.import_public(&bytes)?;
    let id = mailbox.id();
    outln!("Imported mailbox {id} (public key only: this gateway stores its mail, never reads it)");
    outln!("  address:  {}", address(&config, id));
    outln!("  name:     {}", mailbox.info().name);
    Ok(())
}

fn passwd(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "passwd",
        "ID [--password-file OLD] [--new-password-file NEW]\n\nChanges the password: the same key is wrapped again, no message is\nre-encrypted. Without --new-password-file a strong password is generated.",
        args,
        |o| {
            o.optopt(
                "",
                "password-file",
                "the current password (- for standard input)",
                "OLD",
            );
            o.optopt(
                "",
                "new-password-file",
                "the new password (- for standard input)",
                "NEW",
            );
        },
    )?
    else {
        return Ok(());
    };
    let id = one_id("passwd", &m)?;
    let (old_file, new_file) = (m.opt_str("password-file"), m.opt_str("new-password-file"));
    if old_file.as_deref() == Some("-") && new_file.as_deref() == Some("-") {
        return Err(CliError::usage(
            "mailbox passwd: only one password can come from standard input",
        ));
    }
    let (config, store) = context.open_to_change("mailbox passwd")?;
    store.mailbox(&id)?;
    let old = password_from(
        old_file,
        "password-file",
        &format!("Current password for {id}: "),
    )?;
    let new = new_password(new_file)?;
    let generated = admin::change_password(&store, config.kdf.params(), &id, &old, new)?;
    outln!("Password of mailbox {id} changed.");
    show_generated("new password", &generated);
    Ok(())
}

fn reset_password(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "reset-password",
        "ID --force [--new-password-file NEW]\n\nFor a lost password: creates a new key pair. Messages already stored\nwere sealed to the old key and can no longer be read.",
        args,
        |o| {
            o.optflag(
                "",
                "force",
                "go ahead although stored messages become unreadable",
            );
            o.optopt(
                "",
                "new-password-file",
                "the new password (- for standard input)",
                "NEW",
            );
        },
    )?
    else {
        return Ok(());
    };
    let id = one_id("reset-password", &m)?;
    let (config, store) = context.open_to_change("mailbox reset-password")?;
    let count = store.mailbox(&id)?.message_names()?.len();
    if !m.opt_present("force") {
        return Err(CliError::failed(format!(
            "reset-password makes a new key pair for mailbox {id}: the {count} message(s) stored in it\n\
             were sealed to the old key and can then no longer be read with any password.\n\
             If you only want a different password and know the current one, use mailbox passwd.\n\
             Add --force to reset anyway."
        )));
    }
    let new = new_password(m.opt_str("new-password-file"))?;
    let (mailbox, generated) = admin::reset_password(&store, config.kdf.params(), &id, new)?;
    outln!("Mailbox {id} has a new key pair.");
    outln!(
        "The {count} message(s) stored before now were sealed to the old key: they were moved\n\
         aside, where POP3 does not list them, and the old key file is kept in {}.\n\
         Should the old password turn up: sealpost mailbox export {id} --retired --out DIR.\n\
         To delete them: sealpost mailbox purge-retired {id} --force.",
        mailbox.dir().join("retired-keys").display()
    );
    show_generated("new password", &generated);
    Ok(())
}

fn set_status(
    context: &Context,
    args: &[String],
    name: &str,
    status: Status,
) -> Result<(), CliError> {
    let summary = match status {
        Status::Suspended => {
            "ID\n\nRefuses new mail for the mailbox (senders get a temporary error and retry);\nPOP3 retrieval still works."
        }
        Status::Active => "ID\n\nAccepts new mail again.",
    };
    let Some((context, m)) = options(context, name, summary, args, |_| {})? else {
        return Ok(());
    };
    let id = one_id(name, &m)?;
    let (_, store) = context.open_to_change(&format!("mailbox {name}"))?;
    let mut mailbox = store.mailbox(&id)?;
    mailbox.set_status(status)?;
    outln!("Mailbox {id} is now {}.", status.as_str());
    Ok(())
}

fn update(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "update",
        "ID [--name NAME] [--description TEXT]\n\nChanges the name or description.",
        args,
        |o| {
            o.optopt("", "name", "new name", "NAME");
            o.optopt("", "description", "new description", "TEXT");
        },
    )?
    else {
        return Ok(());
    };
    let id = one_id("update", &m)?;
    let (name, description) = (m.opt_str("name"), m.opt_str("description"));
    if name.is_none() && description.is_none() {
        return Err(CliError::usage(
            "mailbox update: give --name and/or --description",
        ));
    }
    let (_, store) = context.open_to_change("mailbox update")?;
    let mut mailbox = store.mailbox(&id)?;
    mailbox.update(name, description)?;
    outln!("Mailbox {id} updated.");
    Ok(())
}

fn delete(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "delete",
        "ID [--force] [--even-if-active]\n\nDeletes a suspended mailbox (suspend it first: a journal rule that still points\n\
         at it then gets a temporary error, not a permanent one that disables the rule).\n\
         One that still holds messages needs --force.",
        args,
        |o| {
            o.optflag("", "force", "delete the stored messages too");
            o.optflag(
                "",
                "even-if-active",
                "delete a mailbox that is not suspended (senders then get 550)",
            );
        },
    )?
    else {
        return Ok(());
    };
    let id = one_id("delete", &m)?;
    let how = Deletion {
        messages_too: m.opt_present("force"),
        even_if_active: m.opt_present("even-if-active"),
    };
    let (_, store) = context.open_to_change("mailbox delete")?;
    if how.even_if_active && store.mailbox(&id)?.info().status == Status::Active {
        eprintln!(
            "sealpost: warning: mailbox {id} is active: from now on, mail to it is refused \
             with 550, and a journal rule that still points at it will be disabled by its sender"
        );
    }
    let removed = store.delete_mailbox(&id, how)?;
    outln!("Mailbox {id} deleted ({removed} message(s) removed).");
    Ok(())
}

fn deliver(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "deliver",
        "ID [--from ADDR] < message\n\nStores one message read from standard input (LF or CRLF line endings).\nExit codes for a Postfix pipe transport: 65 empty message, 67 no such mailbox,\n75 try later.",
        args,
        |o| {
            o.optopt(
                "",
                "from",
                "envelope sender recorded in the metadata",
                "ADDR",
            );
        },
    )?
    else {
        return Ok(());
    };
    // A recipient that is not even a mailbox id is "no such user" to Postfix.
    let id = one_id("deliver", &m).map_err(|e| CliError {
        code: if m.free.len() == 1 { EX_NOUSER } else { e.code },
        message: e.message,
    })?;
    let temporary = |e: StoreError| CliError {
        code: EX_TEMPFAIL,
        message: e.to_string(),
    };
    let (config, store) = context.open().map_err(|e| CliError {
        code: EX_TEMPFAIL,
        message: e.message,
    })?;
    let mailbox = store.mailbox(&id).map_err(|e| match e {
        StoreError::NotFound(_) => CliError {
            code: EX_NOUSER,
            message: e.to_string(),
        },
        other => temporary(other),
    })?;
    if mailbox.info().status == Status::Suspended {
        mailbox.note_refused_delivery();
        return Err(CliError {
            code: EX_TEMPFAIL,
            message: format!("mailbox {id} is suspended and does not take new mail"),
        });
    }
    let spool = store.spool().map_err(temporary)?;
    let mut writer = CrlfWriter::new(spool);
    io::copy(&mut io::stdin().lock(), &mut writer).map_err(|e| CliError {
        code: EX_TEMPFAIL,
        message: format!("cannot store the message: {e}"),
    })?;
    let cannot_store = |e: &dyn std::fmt::Display| CliError {
        code: EX_TEMPFAIL,
        message: format!("cannot store the message: {e}"),
    };
    let spool = writer
        .finish()
        .map_err(|e| cannot_store(&e))?
        .finish()
        .map_err(|e| cannot_store(&e))?;
    if spool.size() == 0 {
        return Err(CliError {
            code: EX_DATAERR,
            message: "the message is empty: nothing was read from standard input".into(),
        });
    }
    let metadata = Metadata {
        received: timestamp::rfc3339(SystemTime::now()),
        source: Source::Cli,
        mail_from: m.opt_str("from").unwrap_or_default(),
        rcpt_to: vec![address(&config, &id)],
        client_ip: None,
        tls: None,
        size: spool.size(),
        upstream: None,
    };
    let names = store
        .deliver(&spool, &[(&mailbox, metadata)])
        .map_err(temporary)?;
    for name in names {
        outln!(
            "Stored message {name} ({} bytes) in mailbox {id}.",
            spool.size()
        );
    }
    Ok(())
}

fn export(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "export",
        "ID [--password-file FILE] [--retired] --out DIR\n\nDecrypts every message to DIR/<uidl>.eml, with its metadata in\nDIR/<uidl>.json. Damaged messages are reported and skipped (exit code 3).\n\
         --retired exports instead the messages a password reset moved aside, with\n\
         the password of their time.",
        args,
        |o| {
            o.optflag(
                "",
                "retired",
                "the messages sealed to retired keys (give the old password)",
            );
            o.optopt(
                "",
                "password-file",
                "the mailbox password (- for standard input)",
                "FILE",
            );
            o.optopt(
                "",
                "out",
                "directory to write to (created if missing)",
                "DIR",
            );
        },
    )?
    else {
        return Ok(());
    };
    let id = one_id("export", &m)?;
    let out = m
        .opt_str("out")
        .ok_or_else(|| CliError::usage("mailbox export: --out DIR is required"))?;
    let (_, store) = context.open()?;
    let mailbox = store.mailbox(&id)?;
    let password = password_from(
        m.opt_str("password-file"),
        "password-file",
        &format!("Password for {id}: "),
    )?;
    let out = Path::new(&out);
    if m.opt_present("retired") {
        return export_retired(&mailbox, &password, out);
    }
    let pair = mailbox.unlock(&password)?;
    private_directory(out)?;
    let messages = mailbox.messages()?;
    let mut damaged = 0;
    for entry in &messages {
        let reader = mailbox.open_message(&entry.name, &pair);
        match export_one(reader, &mailbox.message_path(&entry.name), &entry.name, out) {
            Ok(()) => {}
            Err(ExportError::Damaged(e)) => {
                eprintln!("sealpost: skipped {e}");
                damaged += 1;
            }
            Err(ExportError::Fatal(e)) => return Err(e),
        }
    }
    outln!(
        "Exported {} of {} message(s) from mailbox {id} to {}.",
        messages.len() - damaged,
        messages.len(),
        out.display()
    );
    if damaged > 0 {
        return Err(CliError {
            code: EXIT_DAMAGED,
            message: format!("{damaged} damaged message(s) were skipped"),
        });
    }
    Ok(())
}

/// `mailbox export --retired`: the messages a password reset moved aside,
/// with whichever retired key the (old) password unwraps.
fn export_retired(mailbox: &Mailbox, password: &Password, out: &Path) -> Result<(), CliError> {
    let id = mailbox.id();
    let retired = mailbox.retired_messages()?;
    if retired.is_empty() {
        outln!("Mailbox {id} holds no messages sealed to a retired key.");
        return Ok(());
    }
    let pairs = mailbox.unlock_retired(password)?;
    if pairs.is_empty() {
        return Err(CliError::failed(format!(
            "the password opens none of the retired keys of mailbox {id}"
        )));
    }
    private_directory(out)?;
    let (mut written, mut damaged) = (0, 0);
    for (dir, name) in &retired {
        // The first retired key that opens it; the password may open only some.
        let reader = pairs
            .iter()
            .map(|pair| mailbox.open_retired_message(dir, name, pair))
            .find(Result::is_ok)
            .unwrap_or_else(|| {
                Err(StoreError::Damaged {
                    path: dir.join(name.file_name()),
                    reason: "no retired key that this password opens sealed it".into(),
                })
            });
        match export_one(reader, &dir.join(name.file_name()), name, out) {
            Ok(()) => written += 1,
            Err(ExportError::Damaged(e)) => {
                eprintln!("sealpost: skipped {e}");
                damaged += 1;
            }
            Err(ExportError::Fatal(e)) => return Err(e),
        }
    }
    outln!(
        "Exported {written} of {} message(s) sealed to retired keys from mailbox {id} to {}.",
        retired.len(),
        out.display()
    );
    if damaged > 0 {
        return Err(CliError {
            code: EXIT_DAMAGED,
            message: format!("{damaged} message(s) were skipped"),
        });
    }
    Ok(())
}

fn purge_retired(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "purge-retired",
        "ID --force\n\nDeletes the messages a password reset moved aside (sealed to a retired key;\n\
         export them first with mailbox export --retired if the old password turned up).",
        args,
        |o| {
            o.optflag("", "force", "delete them");
        },
    )?
    else {
        return Ok(());
    };
    let id = one_id("purge-retired", &m)?;
    let (_, store) = context.open_to_change("mailbox purge-retired")?;
    let mailbox = store.mailbox(&id)?;
    let count = mailbox.retired_messages()?.len();
    if !m.opt_present("force") {
        return Err(CliError::failed(format!(
            "mailbox {id} holds {count} message(s) sealed to a retired key; add --force to delete them"
        )));
    }
    let removed = mailbox.purge_retired()?;
    outln!("Deleted {removed} message(s) sealed to a retired key from mailbox {id}.");
    Ok(())
}

/// The export directory: created readable by its owner only, or an existing
/// one that already is. Decrypted mail must not land where others can read it.
fn private_directory(dir: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let fail = |e: io::Error| CliError::failed(format!("{}: cannot create: {e}", dir.display()));
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(CliError::failed(format!(
            "{}: not a directory",
            dir.display()
        ))),
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => Err(CliError::failed(format!(
            "{}: other users can open this directory (mode {:o}); export into a new directory \
             (it is created with mode 700) or run chmod 700 on it first",
            dir.display(),
            meta.permissions().mode() & 0o777
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail),
        Err(e) => Err(fail(e)),
    }
}

/// A file readable by its owner only (one left by an earlier export too).
fn private_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

enum ExportError {
    Damaged(StoreError),
    Fatal(CliError),
}

/// Writes one message via a `.part` file, so a damaged message (detected only
/// at its end) leaves nothing behind.
fn export_one(
    reader: Result<crate::store::message::MessageReader<fs::File>, StoreError>,
    path: &Path,
    name: &crate::store::MessageName,
    out: &Path,
) -> Result<(), ExportError> {
    let mut reader = match reader {
        Ok(r) => r,
        Err(e @ StoreError::Damaged { .. }) => return Err(ExportError::Damaged(e)),
        Err(e) => return Err(ExportError::Fatal(e.into())),
    };
    let eml = out.join(format!("{name}.eml"));
    let part = out.join(format!("{name}.eml.part"));
    let fatal = |path: &Path, e: io::Error| {
        ExportError::Fatal(CliError::failed(format!("{}: {e}", path.display())))
    };
    let file = private_file(&part).map_err(|e| fatal(&part, e))?;
    let mut writer = BufWriter::new(file);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&part);
                return match message_error(path, e) {
                    damaged @ StoreError::Damaged { .. } => Err(ExportError::Damaged(damaged)),
                    other => Err(ExportError::Fatal(other.into())),
                };
            }
        };
        writer.write_all(&buf[..n]).map_err(|e| fatal(&part, e))?;
    }
    writer.flush().map_err(|e| fatal(&part, e))?;
    let meta = serde_json::to_vec_pretty(reader.metadata()).unwrap_or_default();
    let json = out.join(format!("{name}.json"));
    private_file(&json)
        .and_then(|mut f| f.write_all(&meta))
        .map_err(|e| fatal(&json, e))?;
    fs::rename(&part, &eml).map_err(|e| fatal(&eml, e))?;
    Ok(())
}
