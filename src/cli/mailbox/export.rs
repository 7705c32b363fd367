//! `mailbox export` (also `--retired`) and `mailbox purge-retired`.

use super::*;

pub(super) fn export(context: &Context, args: &[String]) -> Result<(), CliError> {
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

pub(super) fn purge_retired(context: &Context, args: &[String]) -> Result<(), CliError> {
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
