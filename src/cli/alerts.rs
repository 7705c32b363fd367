//! `sealpost alerts test`: one test mail through the configured relay, so
//! an administrator knows alerts reach them before one is needed.
//! `sealpost alerts failed UNIT`: what `sealpost-alert@.service` runs when
//! the gateway's unit failed (its `OnFailure=`).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use getopts::Options;

use super::{CliError, Context, context_with, parse_options};

const SUMMARY: &str = "test | failed UNIT [--log-file FILE] [--lines N]\n\n\
test: sends one test mail to alerts.to through alerts.smarthost now, and\n\
says whether the relay took it (exit 0) or why not (exit 1).\n\
failed UNIT: mails that the systemd unit UNIT failed, with the last lines of\n\
its log (journalctl, or FILE), addresses removed; run by\n\
sealpost-alert@.service, which sealpost.service names in OnFailure=.";

/// How long journalctl may take.
const JOURNALCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// The last `n` lines of `unit`'s journal, by journalctl under a timeout.
fn journal(unit: &str, n: usize) -> Result<Vec<String>, String> {
    let mut child = Command::new("journalctl")
        .args(["--no-pager", "--quiet", "--output", "short-iso", "--lines"])
        .arg(n.to_string())
        .arg("--unit")
        .arg(unit)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("journalctl: {e}"))?;
    let out = child.stdout.take().ok_or("journalctl: no output")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.take(1 << 20).read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + JOURNALCTL_TIMEOUT;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("journalctl did not finish in time".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = reader.join().unwrap_or_default();
    Ok(text.lines().map(str::to_string).collect())
}

/// Runs `sealpost alerts …`.
pub fn run(context: &Context, args: Vec<String>) -> Result<(), CliError> {
    let mut opts = Options::new();
    opts.optopt(
        "",
        "log-file",
        "read the log lines from FILE instead of journalctl",
        "FILE",
    );
    opts.optopt("", "lines", "how many lines of the log to send (40)", "N");
    let Some(m) = parse_options("alerts", SUMMARY, &mut opts, &args)? else {
        return Ok(());
    };
    let config = || context_with(context, &m).config();
    let subject = match m
        .free
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["test"] => crate::alerts::test(&config()?),
        ["failed", unit] => {
            let n = match m.opt_str("lines") {
                None => 40,
                Some(n) => n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| CliError::usage("--lines takes a number from 1 to 1000"))?,
            };
            let lines = match m.opt_str("log-file") {
                Some(file) => std::fs::read_to_string(&file)
                    .map(|t| {
                        let all: Vec<String> = t.lines().map(str::to_string).collect();
                        all[all.len().saturating_sub(n)..].to_vec()
                    })
                    .map_err(|e| CliError::failed(format!("{file}: {e}")))?,
                // Without its log the mail still goes out.
                None => journal(unit, n).unwrap_or_else(|e| vec![format!("({e})")]),
            };
            crate::alerts::failed(&config()?, unit, &lines)
        }
        _ => {
            return Err(CliError::usage(
                "alerts takes a command: test, or failed UNIT (see sealpost alerts --help)",
            ));
        }
    }
    .map_err(|e| CliError::failed(format!("the mail was not sent: {e}")))?;
    outln!("Sent \"{subject}\".");
    Ok(())
}
