//! The `sealpost` command line: parsing, dispatch and exit codes.
//!
//! Exit codes: 0 success, 1 the command failed, 2 usage error,
//! 3 `mailbox export` finished but skipped damaged messages, 4 `status`
//! found something that needs attention.
//! `mailbox deliver` uses the sysexits codes a Postfix pipe transport
//! understands (67 no such mailbox, 75 try again later).

/// `print!` that ends quietly on a closed standard output (see `output`).
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::output::write(format_args!($($arg)*)) };
}

/// `println!` that ends quietly on a closed standard output (see `output`).
macro_rules! outln {
    () => { $crate::cli::output::write(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod alerts;
mod backup;
mod cert;
mod console;
mod crlf;
mod custody;
mod dns;
mod dns_check;
mod identity;
mod lockouts;
mod mailbox;
mod output;
mod password_input;
mod status;

use std::fmt;
use std::path::{Path, PathBuf};

use getopts::{Options, ParsingStyle};

use crate::config::{self, Config};
use crate::store::{Store, StoreError};

/// A command's failure: what to print and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// Process exit code.
    pub code: i32,
    /// One or more lines for standard error.
    pub message: String,
}

impl CliError {
    /// A failed command (exit code 1).
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError {
            code: EXIT_FAILURE,
            message: message.into(),
        }
    }

    /// A usage error (exit code 2).
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<crate::admin::AdminError> for CliError {
    fn from(e: crate::admin::AdminError) -> CliError {
        match e {
            crate::admin::AdminError::WeakPassword(why) => CliError::failed(format!(
                "{why} (without a new password file, a strong one is generated)"
            )),
            e => CliError::failed(e.to_string()),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> CliError {
        CliError::failed(e.to_string())
    }
}

/// The command failed.
pub const EXIT_FAILURE: i32 = 1;
/// The command line was wrong.
pub const EXIT_USAGE: i32 = 2;
/// An export skipped damaged messages.
pub const EXIT_DAMAGED: i32 = 3;
/// `status` found something that needs attention.
pub const EXIT_ATTENTION: i32 = 4;

const USAGE: &str = "\
Usage: sealpost [-c FILE] <command> [options]

An email archiving gateway: an SMTP journal receiver and a POP3 server in
front of an encrypted mailbox store, plus recording SMTP and POP3 proxies.

Commands:
  serve            run the gateway
  check-config     validate the configuration and print the effective values
  mailbox ...      manage mailboxes (sealpost mailbox --help)
  lockouts ...     list or end login lockouts of the running gateway
  cert show        the served certificate: subject, names, validity, SHA-256
  cert renew       ask the running gateway for a new ACME certificate now
  cert next-key    make the next certificate key of a key rollover
  dns              the DNS records to publish (MX, MTA-STS, TLS-RPT, TLSA)
  alerts test      send one test alert mail through the configured relay
  custody verify   check the chain of custody: hashes, anchors, every message accounted for
  custody anchor   time-stamp this node's custody chain now
  console passwd   set the web console's administrator password
  status           listeners, certificate, mail waiting; exit 4 if something
                   needs attention (for cron and monitoring)
  backup DEST      a consistent, incremental snapshot of the data directory
  merge DIR        move a standby gateway's messages into this one
  help             this text

Global options:
  -c, --config FILE   configuration file (default: $SEALPOST_CONFIG, else
                      /etc/sealpost/gateway.json if present (an installed
                      system), else ./gateway.json (a checkout))
  -h, --help          show help
  -V, --version       show the version

Commands that change or remove data name the configuration file and data
directory they act on, on standard error, before they act.
Every command takes --help. Logging follows RUST_LOG (default: info for serve).";

/// Runs the command line `args` (without the program name); returns the exit code.
pub fn run(args: Vec<String>) -> i32 {
    match dispatch(args) {
        Ok(()) => 0,
        Err(e) => {
            for line in e.message.lines() {
                eprintln!("sealpost: {line}");
            }
            if e.message.contains("Permission denied") && !e.message.contains(&identity::hint()) {
                eprintln!("sealpost: {}", identity::hint().trim());
            }
            e.code
        }
    }
}

/// What every command gets: where the configuration is.
pub struct Context {
    config_file: PathBuf,
}

impl Context {
    /// Loads and validates the configuration.
    pub fn config(&self) -> Result<Config, CliError> {
        Config::load(&self.config_file).map_err(|e| CliError::failed(e.to_string()))
    }

    /// Loads the configuration and opens the store it names, as the data
    /// directory's owner when run as root (see `identity`).
    pub fn open(&self) -> Result<(Config, Store), CliError> {
        let config = self.config()?;
        crate::gateway::apply_store_settings(&config);
        identity::become_data_owner(&config.data_dir)?;
        let store = Store::open(&config.data_dir)?;
        Ok((config, store))
    }

    /// [`Context::open`] for a command that changes or removes data: first
    /// names, on standard error, the configuration file and the data
    /// directory it acts on, so that acting on the wrong gateway is seen
    /// before it happens. Standard output stays clean for `--json`.
    pub fn open_to_change(&self, command: &str) -> Result<(Config, Store), CliError> {
        let config = self.config()?;
        let file = std::path::absolute(&self.config_file).unwrap_or(self.config_file.clone());
        eprintln!(
            "sealpost {command}: configuration {}, data directory {}",
            file.display(),
            config.data_dir.display()
        );
        crate::gateway::apply_store_settings(&config);
        identity::become_data_owner(&config.data_dir)?;
        let store = Store::open(&config.data_dir)?;
        Ok((config, store))
    }
}

fn dispatch(args: Vec<String>) -> Result<(), CliError> {
    let mut opts = Options::new();
    opts.parsing_style(ParsingStyle::StopAtFirstFree);
    opts.optopt("c", "config", "configuration file", "FILE");
    opts.optflag("h", "help", "show help");
    opts.optflag("V", "version", "show the version");
    let matches = opts
        .parse(&args)
        .map_err(|e| CliError::usage(format!("{e} (see sealpost --help)")))?;
    if matches.opt_present("V") {
        outln!("sealpost {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let mut rest = matches.free.clone();
    if matches.opt_present("h") || rest.is_empty() {
        if rest.is_empty() && !matches.opt_present("h") {
            return Err(CliError::usage(format!("no command given\n{USAGE}")));
        }
        outln!("{USAGE}");
        return Ok(());
    }
    let command = rest.remove(0);
    let context = Context {
        config_file: config::locate(
            matches.opt_str("c").as_deref(),
            std::env::var(config::ENV_VAR).ok().as_deref(),
            Path::is_file,
        ),
    };
    match command.as_str() {
        "help" => {
            outln!("{USAGE}");
            Ok(())
        }
        "check-config" => check_config(&context, rest),
        "serve" => serve(&context, rest),
        "mailbox" => mailbox::run(&context, rest),
        "lockouts" => lockouts::run(&context, rest),
        "cert" => cert::run(&context, rest),
        "dns" => dns::run(&context, rest),
        "alerts" => alerts::run(&context, rest),
        "custody" => custody::run(&context, rest),
        "console" => console::run(&context, rest),
        "status" => status::run(&context, rest),
        "backup" => backup::run_backup(&context, rest),
        "merge" => backup::run_merge(&context, rest),
        other => Err(CliError::usage(format!(
            "unknown command {other:?} (see sealpost --help)"
        ))),
    }
}

/// Parses a command's own options; `-c/--config` is accepted here too.
pub(crate) fn parse_options(
    command: &str,
    summary: &str,
    opts: &mut Options,
    args: &[String],
) -> Result<Option<getopts::Matches>, CliError> {
    opts.optflag("h", "help", "show this help");
    opts.optopt(
        "c",
        "config",
        "configuration file (default: $SEALPOST_CONFIG, then /etc/sealpost/gateway.json, then ./gateway.json)",
        "FILE",
    );
    let matches = opts
        .parse(args)
        .map_err(|e| CliError::usage(format!("{command}: {e} (see sealpost {command} --help)")))?;
    if matches.opt_present("h") {
        outln!(
            "{}",
            opts.usage(&format!("Usage: sealpost {command} {summary}"))
        );
        return Ok(None);
    }
    Ok(Some(matches))
}

/// The context to use, honouring a `-c` given after the command.
pub(crate) fn context_with(context: &Context, matches: &getopts::Matches) -> Context {
    Context {
        config_file: matches
            .opt_str("c")
            .map(PathBuf::from)
            .unwrap_or_else(|| context.config_file.clone()),
    }
}

fn check_config(context: &Context, args: Vec<String>) -> Result<(), CliError> {
    let mut opts = Options::new();
    let Some(m) = parse_options(
        "check-config",
        "\n\nValidates the configuration and prints the effective values as JSON. Checks the\n\
         certificate as serve would load it (as the data directory's owner), creating\n\
         nothing: fails where serve would, and says when serve would generate one.",
        &mut opts,
        &args,
    )?
    else {
        return Ok(());
    };
    no_arguments("check-config", &m)?;
    let context = context_with(context, &m);
    let config = context.config()?;
    // The certificate as serve would load it: as the data directory's
    // owner (the user serve runs as), reading files only.
    identity::become_data_owner(&config.data_dir)?;
    let certificate = crate::cert::check(&config).map_err(|e| {
        CliError::failed(format!(
            "{}: the configuration is valid, but serve would fail: {e}",
            context.config_file.display()
        ))
    })?;
    outln!("{}", config.to_pretty_json());
    eprintln!("{}: configuration is valid", context.config_file.display());
    eprintln!("{certificate}");
    Ok(())
}

fn serve(context: &Context, args: Vec<String>) -> Result<(), CliError> {
    let mut opts = Options::new();
    let Some(m) = parse_options("serve", "\n\nRuns the gateway.", &mut opts, &args)? else {
        return Ok(());
    };
    no_arguments("serve", &m)?;
    let context = context_with(context, &m);
    let config = context.config()?;
    identity::refuse_root_serve(&config.data_dir)?;
    crate::gateway::serve(config, &context.config_file).map_err(CliError::failed)
}

/// Refuses stray positional arguments.
pub(crate) fn no_arguments(command: &str, m: &getopts::Matches) -> Result<(), CliError> {
    match m.free.first() {
        None => Ok(()),
        Some(extra) => Err(CliError::usage(format!(
            "{command}: unexpected argument {extra:?} (see sealpost {command} --help)"
        ))),
    }
}
