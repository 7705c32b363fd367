//! `sealpost console passwd`: sets the web console's administrator password.

use getopts::Options;

use super::password_input::password_from;
use super::{CliError, Context, context_with, parse_options};
use crate::admin::{self, AdminError};

const SUMMARY: &str = "passwd [--password-file FILE]\n\n\
Sets the password of the web console's administrator (asked for on the\n\
terminal, or the first line of FILE; - is standard input). It must be at\n\
least 12 characters and hard to guess. Stored as an Argon2id hash in\n\
data_dir/console-password; a running gateway uses it at once, and every\n\
console session opened under the old password ends.";

/// Runs `sealpost console …`.
pub fn run(context: &Context, args: Vec<String>) -> Result<(), CliError> {
    let mut opts = Options::new();
    opts.optopt(
        "",
        "password-file",
        "the new password (- for standard input)",
        "FILE",
    );
    let Some(m) = parse_options("console", SUMMARY, &mut opts, &args)? else {
        return Ok(());
    };
    let words: Vec<&str> = m.free.iter().map(String::as_str).collect();
    if words != ["passwd"] {
        return Err(CliError::usage(
            "console: the command is `console passwd` (see sealpost console --help)",
        ));
    }
    let context = context_with(context, &m);
    let (config, store) = context.open_to_change("console passwd")?;
    let password = password_from(
        m.opt_str("password-file"),
        "password-file",
        "New console administrator password: ",
    )?;
    if m.opt_str("password-file").is_none() {
        let again = password_from(None, "password-file", "Repeat it: ")?;
        if again.expose() != password.expose() {
            return Err(CliError::failed(
                "the two passwords differ; nothing changed",
            ));
        }
    }
    admin::set_console_password(&store, config.kdf.params(), &password).map_err(|e| match e {
        AdminError::WeakPassword(why) => CliError::failed(format!("{why}; nothing changed")),
        e => CliError::from(e),
    })?;
    let listen: Vec<String> = config
        .console
        .listen
        .iter()
        .map(|a| a.to_string())
        .collect();
    outln!("Console administrator password set.");
    if listen.is_empty() {
        outln!("The console is off (console.listen is empty).");
    } else {
        outln!(
            "Log in at https://{} (console.listen).",
            listen.join(", https://")
        );
    }
    Ok(())
}
