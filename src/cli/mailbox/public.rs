//! `mailbox export-public` and `mailbox import-public`: a mailbox's public half, for a standby.

use super::*;

pub(super) fn export_public(context: &Context, args: &[String]) -> Result<(), CliError> {
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
    crate::cli::output::write_bytes(&json);
    outln!();
    Ok(())
}

pub(super) fn import_public(context: &Context, args: &[String]) -> Result<(), CliError> {
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
