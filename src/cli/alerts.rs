//! `sealpost alerts test`: one test mail through the configured relay, so
//! an administrator knows alerts reach them before one is needed.

use getopts::Options;

use super::{CliError, Context, context_with, parse_options};

const SUMMARY: &str = "test\n\n\
Sends one test mail to alerts.to through alerts.smarthost, now, and says\n\
whether the relay took it (exit 0) or why not (exit 1).";

/// Runs `sealpost alerts …`.
pub fn run(context: &Context, args: Vec<String>) -> Result<(), CliError> {
    let mut opts = Options::new();
    let Some(m) = parse_options("alerts", SUMMARY, &mut opts, &args)? else {
        return Ok(());
    };
    match m
        .free
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["test"] => {
            let config = context_with(context, &m).config()?;
            let subject = crate::alerts::test(&config)
                .map_err(|e| CliError::failed(format!("the test mail was not sent: {e}")))?;
            outln!("Sent \"{subject}\".");
            Ok(())
        }
        _ => Err(CliError::usage(
            "alerts takes one command: test (see sealpost alerts --help)",
        )),
    }
}
