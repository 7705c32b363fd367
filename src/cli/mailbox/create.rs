//! `mailbox create`.

use super::*;

pub(super) fn create(context: &Context, args: &[String]) -> Result<(), CliError> {
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
