//! `sealpost lockouts`: list and end the login lockouts of a running gateway
//! (through its control socket), without a restart.

use getopts::Options;

use super::{CliError, Context, context_with, parse_options};
use crate::control::{self, ClientError};

const SUMMARY: &str = "[list] [--json]\n       sealpost lockouts clear (ADDRESS | MAILBOX_ID | --all)\n\n\
Lists the client addresses and mailboxes a running gateway has locked out\n\
after too many failed logins (each service counts its own), or ends such\n\
lockouts at once. Talks to the gateway through its control_socket.";

/// Runs `sealpost lockouts …`.
pub fn run(context: &Context, args: Vec<String>) -> Result<(), CliError> {
    let mut opts = Options::new();
    opts.optflag("", "json", "print the list as JSON");
    opts.optflag("", "all", "with clear: end every lockout");
    let Some(m) = parse_options("lockouts", SUMMARY, &mut opts, &args)? else {
        return Ok(());
    };
    let context = context_with(context, &m);
    let config = context.config()?;
    let socket = config.control_socket.ok_or_else(|| {
        CliError::failed(
            "control_socket is null in the configuration: lockouts cannot be reached (restarting the gateway ends them all)",
        )
    })?;
    let failed = |e: ClientError| match e {
        ClientError::NotRunning(why) | ClientError::Refused(why) => CliError::failed(why),
    };
    let words: Vec<&str> = m.free.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] | ["list"] => {
            let lockouts = control::lockouts(&socket).map_err(failed)?;
            if m.opt_present("json") {
                let json = serde_json::to_string_pretty(&lockouts)
                    .map_err(|e| CliError::failed(e.to_string()))?;
                outln!("{json}");
            } else if lockouts.is_empty() {
                outln!("No lockouts.");
            } else {
                outln!(
                    "{:<12} {:<45} {:>8} {:>10}",
                    "SERVICE",
                    "LOCKED OUT",
                    "FAILURES",
                    "ENDS IN"
                );
                for l in &lockouts {
                    outln!(
                        "{:<12} {:<45} {:>8} {:>9}s",
                        l.service,
                        l.subject,
                        l.failures,
                        l.remaining_secs
                    );
                }
            }
            Ok(())
        }
        ["clear"] if m.opt_present("all") => clear(&socket, "all", failed),
        ["clear", target] if !m.opt_present("all") => clear(&socket, target, failed),
        ["clear", ..] => Err(CliError::usage(
            "lockouts clear: give one ADDRESS or MAILBOX_ID, or --all (see sealpost lockouts --help)",
        )),
        [other, ..] => Err(CliError::usage(format!(
            "lockouts: unknown subcommand {other:?} (see sealpost lockouts --help)"
        ))),
    }
}

fn clear(
    socket: &std::path::Path,
    target: &str,
    failed: impl Fn(ClientError) -> CliError,
) -> Result<(), CliError> {
    let ended = control::unlock(socket, target).map_err(failed)?;
    outln!("Ended {ended} lockout(s).");
    Ok(())
}
