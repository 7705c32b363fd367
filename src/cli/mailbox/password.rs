//! `mailbox passwd` and `mailbox reset-password`.

use super::*;

pub(super) fn passwd(context: &Context, args: &[String]) -> Result<(), CliError> {
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

pub(super) fn reset_password(context: &Context, args: &[String]) -> Result<(), CliError> {
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
