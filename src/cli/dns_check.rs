//! `sealpost dns --check`: each record `sealpost dns` prints, looked up
//! through the system's resolver and compared, and whether MTA-STS enforce
//! mode is safe (RFC 8461 §4.2: a sender enforcing the policy delivers
//! only to an MX that serves a certificate from a CA it trusts, for the
//! MX's own name; a listed MX that does not, such as a standby with a
//! self-signed certificate, would stop receiving mail).
//!
//! Exit 0 when every record is published and current (and enforce mode,
//! if configured, is safe); 1 otherwise, after every line is printed.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use super::CliError;
use super::dns::{Entry, Record};
use crate::acme::mta_sts;
use crate::config::{Config, StsMode};
use crate::outbound::dns::{self, Answer};
use crate::outbound::mx_tls;

/// The whole check's deadline.
const DEADLINE: Duration = Duration::from_secs(60);

/// What was found for one record.
enum Verdict {
    /// Published as it should be.
    Ok(String),
    /// Not published.
    Missing(String),
    /// Published with other data.
    Stale(String),
}

fn list<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn txt_with(owner: &str, prefix: &str, deadline: Instant) -> Result<Vec<String>, String> {
    Ok(dns::query(owner, RecordType::TXT, deadline)?
        .into_iter()
        .filter_map(|a| match a {
            Answer::Txt(t) if t.starts_with(prefix) => Some(t),
            _ => None,
        })
        .collect())
}

/// The verdict on one record.
fn verdict(owner: &str, record: &Record, deadline: Instant) -> Result<Verdict, String> {
    Ok(match record {
        Record::Mx(_, exchange) => mx_verdict(owner, exchange, deadline)?,
        Record::Address(ip) => {
            let found = dns::addresses(owner, deadline)?;
            if found.contains(ip) {
                Verdict::Ok(String::new())
            } else if found.is_empty() {
                Verdict::Missing(String::new())
            } else {
                Verdict::Stale(format!("resolves to {}", list(&found)))
            }
        }
        Record::Cname(target) => {
            let (found, theirs) = (
                dns::addresses(owner, deadline)?,
                dns::addresses(target, deadline)?,
            );
            if found.is_empty() {
                Verdict::Missing("senders cannot fetch the policy".into())
            } else if found.iter().any(|ip| theirs.contains(ip)) {
                Verdict::Ok(format!("resolves to {}, as {target} does", list(&found)))
            } else {
                Verdict::Stale(format!(
                    "resolves to {}, but {target} to {}",
                    list(&found),
                    list(&theirs)
                ))
            }
        }
        Record::StsId(id) => match txt_with(owner, "v=STSv1", deadline)?.as_slice() {
            [] => Verdict::Missing("senders do not look for the policy".into()),
            [one] if one.split(';').any(|f| f.trim() == format!("id={id}")) => {
                Verdict::Ok(String::new())
            }
            [one] => Verdict::Stale(format!(
                "published {one:?}: senders that cached an older policy do not fetch this one"
            )),
            _ => Verdict::Stale(
                "more than one v=STSv1 record: senders then ignore them (RFC 8461 §3.1)".into(),
            ),
        },
        Record::TlsRpt(rua) => match txt_with(owner, "v=TLSRPTv1", deadline)?.as_slice() {
            [] => Verdict::Missing(String::new()),
            [one] if one.contains(&format!("rua={rua}")) => Verdict::Ok(String::new()),
            other => Verdict::Stale(format!("published {}", list(other))),
        },
        Record::Tlsa(digest, next) => tlsa_verdict(owner, digest, *next, deadline)?,
    })
}

fn mx_verdict(owner: &str, exchange: &str, deadline: Instant) -> Result<Verdict, String> {
    let published: Vec<String> = dns::query(owner, RecordType::MX, deadline)?
        .into_iter()
        .filter_map(|a| match a {
            Answer::Mx(p, e) => Some(format!("{p} {e}")),
            _ => None,
        })
        .collect();
    let verdict = if published
        .iter()
        .any(|p| p.split(' ').nth(1) == Some(exchange))
    {
        Verdict::Ok(String::new())
    } else if published.is_empty() {
        Verdict::Missing("the domain has no MX: senders try its A record".into())
    } else {
        Verdict::Missing(format!("the MX records are {}", list(&published)))
    };
    Ok(verdict)
}

fn tlsa_verdict(
    owner: &str,
    digest: &str,
    next: bool,
    deadline: Instant,
) -> Result<Verdict, String> {
    let found: Vec<Answer> = dns::query(owner, RecordType::TLSA, deadline)?;
    let wanted = Answer::Tlsa(3, 1, 1, digest.to_string());
    let verdict = if found.contains(&wanted) {
        Verdict::Ok(String::new())
    } else if next {
        Verdict::Missing(
            "publish it and wait at least its TTL before sealpost cert renew --rotate-key".into(),
        )
    } else if found.is_empty() {
        Verdict::Missing("optional: for senders that use DANE".into())
    } else {
        Verdict::Stale(
            "the published TLSA records do not match the served key: senders that use DANE refuse delivery".into(),
        )
    };
    Ok(verdict)
}

/// Whether every address of every MX of the policy passes
/// [`mx_tls::check`]; the problems found.
fn enforce_problems(config: &Config, deadline: Instant) -> Result<Vec<String>, String> {
    let roots = mx_tls::system_roots()?;
    let mut problems = Vec::new();
    for mx in mta_sts::mx_names(config) {
        let addrs: Vec<IpAddr> = match dns::addresses(&mx, deadline) {
            Ok(a) if a.is_empty() => {
                problems.push(format!("{mx} has no address"));
                continue;
            }
            Ok(a) => a,
            Err(e) => {
                problems.push(format!("{mx}: {e}"));
                continue;
            }
        };
        for ip in addrs {
            if let Err(e) = mx_tls::check(&mx, ip, 25, &config.hostname, &roots, deadline) {
                problems.push(format!("{mx} ({ip}): {e}"));
            }
        }
    }
    Ok(problems)
}

/// Runs the check; prints one line per record, then the verdict on
/// enforce mode.
pub fn check(config: &Config, wanted: &[Entry]) -> Result<(), CliError> {
    let deadline = Instant::now() + DEADLINE;
    let mut bad = 0;
    let has_address = wanted
        .iter()
        .any(|e| matches!(e, Entry::Record(_, Record::Address(_))));
    if !has_address {
        let host = config.hostname.trim_end_matches('.');
        match dns::addresses(host, deadline) {
            Ok(found) if !found.is_empty() => {
                outln!("ok       {host} A/AAAA: resolves to {}", list(&found));
            }
            Ok(_) => {
                bad += 1;
                outln!("MISSING  {host} A/AAAA: the name does not resolve");
            }
            Err(e) => {
                bad += 1;
                outln!("FAILED   {host} A/AAAA: {e}");
            }
        }
    }
    for entry in wanted {
        let Entry::Record(owner, record) = entry else {
            continue;
        };
        let zone = entry.zone();
        let (word, why) = match verdict(owner, record, deadline) {
            Ok(Verdict::Ok(why)) => ("ok", why),
            Ok(Verdict::Missing(why)) => ("MISSING", why),
            Ok(Verdict::Stale(why)) => ("STALE", why),
            Err(e) => ("FAILED", e),
        };
        let optional = matches!(record, Record::Tlsa(_, false)) && word == "MISSING";
        if word != "ok" && !optional {
            bad += 1;
        }
        if why.is_empty() {
            outln!("{word:<8} {zone}");
        } else {
            outln!("{word:<8} {zone}  ({why})");
        }
    }
    if mta_sts::policy(config).is_some() {
        let mode = config.mta_sts.mode;
        match enforce_problems(config, deadline) {
            Ok(problems) if problems.is_empty() => outln!(
                "enforce mode is safe: every MX serves a certificate from a trusted CA for its name on port 25"
            ),
            Ok(problems) => {
                outln!("enforce mode is NOT safe: senders enforcing it would not deliver to:");
                for p in &problems {
                    outln!("  {p}");
                }
                if mode == StsMode::Enforce {
                    bad += 1;
                    outln!("mta_sts.mode is enforce: set it to testing until every MX passes");
                } else {
                    outln!("keep mta_sts.mode at {} until every MX passes", mode.name());
                }
            }
            Err(e) => {
                bad += 1;
                outln!("FAILED   enforce mode: {e}");
            }
        }
    }
    if bad > 0 {
        return Err(CliError::failed(format!(
            "{bad} problem(s) in DNS: publish or correct the records above"
        )));
    }
    Ok(())
}
