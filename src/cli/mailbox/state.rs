//! `mailbox suspend`, `resume`, `update` and `delete`.

use super::*;

pub(super) fn set_status(
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

pub(super) fn update(context: &Context, args: &[String]) -> Result<(), CliError> {
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

pub(super) fn delete(context: &Context, args: &[String]) -> Result<(), CliError> {
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
