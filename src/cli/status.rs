//! `sealpost status`: listeners, certificate and mailboxes, and whether any
//! of it needs attention (exit 4), for an administrator, cron or monitoring.

use std::time::Duration;

use getopts::Options;

use super::{CliError, Context, EXIT_ATTENTION, context_with, no_arguments, parse_options};
use crate::status::{self, Report};

const SUMMARY: &str = "[--json | --prometheus] [--max-age HOURS]\n\n\
Shows whether the gateway runs and its listeners answer, the certificate and\n\
its expiry, and for each mailbox the mail waiting (count, bytes, age of the\n\
oldest) and the last POP3 retrieval. Works whether or not the gateway runs.\n\
Exits 4 when something needs attention: a listener that does not answer, a\n\
certificate expiring within 14 days, or mail waiting longer than --max-age\n\
(an archiver that stopped collecting). Run it from cron or a monitoring\n\
system; --prometheus writes node_exporter's textfile format.";

/// Runs `sealpost status`.
pub fn run(context: &Context, args: Vec<String>) -> Result<(), CliError> {
    let mut opts = Options::new();
    opts.optflag("", "json", "print as JSON");
    opts.optflag(
        "",
        "prometheus",
        "print Prometheus text format (node_exporter textfile collector)",
    );
    opts.optopt(
        "",
        "max-age",
        "mail waiting longer than this needs attention (default 24)",
        "HOURS",
    );
    let Some(m) = parse_options("status", SUMMARY, &mut opts, &args)? else {
        return Ok(());
    };
    no_arguments("status", &m)?;
    if m.opt_present("json") && m.opt_present("prometheus") {
        return Err(CliError::usage(
            "status: give --json or --prometheus, not both",
        ));
    }
    let max_age = match m.opt_str("max-age") {
        None => status::DEFAULT_MAX_PENDING_AGE,
        Some(text) => match text.parse::<u64>() {
            Ok(hours) if (1..=24 * 365).contains(&hours) => Duration::from_secs(hours * 3600),
            _ => {
                return Err(CliError::usage(format!(
                    "status: --max-age {text:?}: give whole hours from 1 to 8760"
                )));
            }
        },
    };
    let context = context_with(context, &m);
    let (config, store) = context.open()?;
    let report = status::gather(&config, &store, max_age, status::Probe::Connect);
    if m.opt_present("json") {
        let json =
            serde_json::to_string_pretty(&report).map_err(|e| CliError::failed(e.to_string()))?;
        outln!("{json}");
    } else if m.opt_present("prometheus") {
        out!("{}", report.to_prometheus());
    } else {
        print_text(&report);
    }
    if report.attention.is_empty() {
        Ok(())
    } else {
        Err(CliError {
            code: EXIT_ATTENTION,
            message: format!("{} problem(s) need attention", report.attention.len()),
        })
    }
}

/// Whole hours and minutes, for people.
fn duration(secs: u64) -> String {
    match secs {
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 48 * 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} days", s / 86400),
    }
}

fn print_text(report: &Report) {
    match report.gateway_pid {
        Some(pid) => outln!("Gateway:     running (pid {pid})"),
        None => outln!("Gateway:     not running"),
    }
    outln!("Listeners:");
    for l in &report.listeners {
        let state = match l.answers {
            Some(true) => "answers",
            Some(false) => "DOES NOT ANSWER",
            None => "port 0 (a free port, see the gateway's log)",
        };
        outln!("  {:<24} {:<24} {state}", l.key, l.address.to_string());
    }
    match (&report.certificate, &report.certificate_error) {
        (Some(c), _) => {
            outln!("Certificate: {}", c.subject);
            outln!("  names:     {}", c.names.join(", "));
            outln!("  expires:   {} ({} days left)", c.not_after, c.days_left);
            outln!("  SHA-256:   {}", c.sha256);
        }
        (None, Some(e)) => outln!("Certificate: {e}"),
        (None, None) => outln!("Certificate: none"),
    }
    print_custody(report);
    if let Some(d) = &report.disk {
        outln!(
            "Disk:        {} free of {}, reserve {}{}",
            crate::store::reserve::human(d.free_bytes),
            crate::store::reserve::human(d.total_bytes),
            crate::store::reserve::human(d.reserve_bytes),
            if d.below_reserve {
                " (BELOW: new mail is refused)"
            } else {
                ""
            }
        );
    }
    if report.mailboxes.is_empty() {
        outln!("Mailboxes:   none");
    } else {
        outln!(
            "{:<36}  {:<9}  {:>7}  {:>12}  {:<14}  {:<14}  NAME",
            "MAILBOX",
            "STATUS",
            "PENDING",
            "BYTES",
            "OLDEST WAITS",
            "LAST RETRIEVAL"
        );
        for mb in &report.mailboxes {
            outln!(
                "{:<36}  {:<9}  {:>7}  {:>12}  {:<14}  {:<14}  {}",
                mb.id,
                mb.status,
                mb.pending_messages,
                mb.pending_bytes,
                mb.oldest_age_secs.map_or("-".into(), duration),
                mb.last_retrieved_age_secs
                    .map_or("never".into(), |a| format!("{} ago", duration(a))),
                mb.name
            );
        }
    }
    for mb in report.mailboxes.iter().filter(|m| m.retired_messages > 0) {
        outln!(
            "Mailbox {}: {} message(s) sealed to a retired key (a password reset): \
             sealpost mailbox export {} --retired, or purge-retired",
            mb.id,
            mb.retired_messages,
            mb.id
        );
    }
    if report.attention.is_empty() {
        outln!("All well.");
    } else {
        outln!("Needs attention:");
        for line in &report.attention {
            outln!("  - {line}");
        }
    }
}

/// The custody line: entries, the last anchor, entries since.
fn print_custody(report: &Report) {
    if let Some(c) = &report.custody {
        outln!(
            "Custody:     {} entries, {}, {} since",
            c.head,
            match (c.anchored, &c.anchored_at) {
                (Some(seq), Some(at)) => format!("last anchor at entry {seq} ({at})"),
                (Some(seq), None) => format!("last anchor at entry {seq}"),
                _ => "no anchor yet".to_string(),
            },
            c.unanchored
        );
    }
}
