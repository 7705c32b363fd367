//! Alerts by email: what `sealpost status` knows, told to the administrator
//! without anyone running it. Each condition is one mail when it starts, a
//! reminder every `alerts.reminder_secs` while it lasts, and one mail when
//! it clears. The state lives in `<data_dir>/alerts/state.json`, so a
//! restart sends nothing again; of the nodes on one data directory, the one
//! holding `alerts/.lock` looks and sends (the conditions come from the
//! shared directory).
//!
//! A mail is plain text in an administrator's words, `Auto-Submitted:
//! auto-generated` (RFC 3834 §5), and never carries message content,
//! correspondents' addresses, passwords or keys: only mailbox ids and
//! names, counts, ages and the gateway's own state.

mod mail;
pub mod send;

pub use mail::{Kind, compose};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use log::{info, warn};
use serde::{Deserialize, Serialize};

use crate::config::{AlertsConfig, Config};
use crate::status::{self, Report};
use crate::store::{Store, durable};
use crate::timestamp;

const DIR: &str = "alerts";
const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = ".lock";
/// The first retry after the relay failed; doubled each time, up to an hour.
const FIRST_RETRY_SECS: u64 = 60;
const MAX_RETRY_SECS: u64 = 3600;

/// One condition that holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Stable key (`archiver:<id>`, `disk`, …).
    pub key: String,
    /// Short title, for the subject.
    pub title: String,
    /// What is wrong and what to do, for the body.
    pub body: String,
}

/// A condition the state remembers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Active {
    /// Its title.
    pub title: String,
    /// Unix time it started.
    pub since: i64,
    /// Unix time of its last mail.
    pub mailed: i64,
}

/// The relay failing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Undeliverable {
    /// Unix time of the first failure in a row.
    pub since: i64,
    /// Failures in a row.
    pub failures: u32,
    /// The last error.
    pub error: String,
    /// Unix time before which nothing is tried.
    pub next_try: i64,
}

/// What `status` and the console show, and what the next look starts from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// The conditions mailed as started and not yet as cleared.
    pub active: BTreeMap<String, Active>,
    /// Unix time and subject of the last mail sent.
    pub last_sent: Option<(i64, String)>,
    /// Set while the relay fails.
    pub undeliverable: Option<Undeliverable>,
}

fn dir(config: &Config) -> PathBuf {
    config.data_dir.join(DIR)
}

/// The state (default when there is none yet).
pub fn state(config: &Config) -> State {
    durable::read_json(&dir(config).join(STATE_FILE))
}

fn save(config: &Config, state: &State) -> Result<(), String> {
    durable::write_json(&dir(config), STATE_FILE, state)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn hours(secs: u64) -> String {
    match secs / 3600 {
        0 => format!("{} min", secs / 60),
        1 => "1 hour".into(),
        h => format!("{h} hours"),
    }
}

const NODES_DIR: &str = "nodes";

/// What each node publishes in `alerts/nodes/<node>.json` at every look,
/// for the node that sends: its count of refused deliveries, sampled over
/// the last hour (the counts live in each gateway's memory).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Published {
    /// Unix time of the last sample.
    pub updated: i64,
    /// (Unix time, deliveries refused since the node started).
    pub samples: Vec<(i64, u64)>,
}

/// Adds this node's sample to `history` (an hour of them) and publishes it.
fn publish(config: &Config, history: &mut Published) {
    let t = now();
    let refused: u64 = crate::metrics::snapshot("refused")
        .iter()
        .map(|(_, _, n)| n)
        .sum();
    history.samples.push((t, refused));
    history.samples.retain(|(at, _)| t - at <= 3600);
    history.updated = t;
    let dir = dir(config).join(NODES_DIR);
    let name = format!("{}.json", config.node.as_deref().unwrap_or("default"));
    let written = durable::create_private_dir(&self::dir(config))
        .and_then(|()| durable::create_private_dir(&dir))
        .and_then(|()| {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, serde_json::to_vec(history).unwrap_or_default())?;
            std::fs::rename(&tmp, dir.join(&name))
        });
    if let Err(e) = written {
        log::debug!("alerts: cannot publish this node's counts: {e}");
    }
}

/// What the nodes published: deliveries refused in the last hour, summed
/// over the live nodes, and a condition for each node that stopped
/// publishing (stopped, or cut off from the shared directory) for three
/// looks.
fn node_conditions(config: &Config, alerts: &AlertsConfig) -> Vec<Condition> {
    let t = now();
    let stale = (alerts.check_secs as i64 * 3).max(15);
    let mut out = Vec::new();
    let mut refused = 0;
    let entries = std::fs::read_dir(dir(config).join(NODES_DIR));
    for entry in entries.into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(node) = file.strip_suffix(".json") else {
            continue;
        };
        let Some(p) = std::fs::read(entry.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Published>(&b).ok())
        else {
            continue;
        };
        if t - p.updated > stale {
            out.push(Condition {
                key: format!("node:{node}"),
                title: format!("the node {node} stopped reporting"),
                body: format!(
                    "The gateway node {node} has not looked at the alerts since {} (every node does every alerts.check_secs). It stopped, or lost the shared data directory: mail the balancer sends there is not taken in.\n\nIf the node was removed on purpose, delete {}.",
                    timestamp::rfc3339(timestamp::from_unix_micros(p.updated.max(0) as u64 * 1_000_000)),
                    entry.path().display()
                ),
            });
            continue;
        }
        refused += match (p.samples.first(), p.samples.last()) {
            (Some(first), Some(last)) => last.1.saturating_sub(first.1),
            _ => 0,
        };
    }
    if alerts.refused_per_hour > 0 && refused > alerts.refused_per_hour {
        out.push(Condition {
            key: "refused".into(),
            title: "deliveries are being refused".into(),
            body: format!(
                "{refused} deliveries were refused or deferred in the last hour (more than alerts.refused_per_hour, {}).\n\nThe gateway's log says why, one line each (result=refused reason=... or result=deferred): a journal rule pointing at a wrong or suspended mailbox, someone trying to relay through it, storage faults, or the disk reserve.",
                alerts.refused_per_hour
            ),
        });
    }
    out
}

/// The conditions that hold in `report`, by the thresholds of `alerts`.
pub fn conditions(report: &Report, alerts: &AlertsConfig) -> Vec<Condition> {
    let mut out = Vec::new();
    let mut add =
        |key: String, title: String, body: String| out.push(Condition { key, title, body });
    for mb in &report.mailboxes {
        let who = format!("mailbox {} ({})", mb.id, mb.name);
        let stopped = alerts.archiver_stopped_hours * 3600;
        if let Some(waited) = mb.oldest_age_secs.filter(|&w| stopped > 0 && w > stopped) {
            add(
                format!("archiver:{}", mb.id),
                format!("the archiver stopped collecting {}", mb.name),
                format!(
                    "{who} holds {} message(s); the oldest has waited {}.\n\nThe archiver (MailStore Server, fetchmail, ...) has not collected them. Check that its job runs and can log in (sealpost status shows the last retrieval). Mail keeps arriving and is kept encrypted until the disk reserve is reached.",
                    mb.pending_messages,
                    hours(waited)
                ),
            );
        }
        let silence = alerts
            .journal_silence_hours_for
            .get(&mb.id)
            .copied()
            .unwrap_or(alerts.journal_silence_hours)
            * 3600;
        if let Some(quiet) = mb
            .last_delivery_age_secs
            .filter(|&q| silence > 0 && q > silence && mb.status == "active")
        {
            add(
                format!("silence:{}", mb.id),
                format!("no journal mail for {}", mb.name),
                format!(
                    "{who} has received nothing for {}, although it received mail before.\n\nMicrosoft 365 turns a journal rule off after about two days of failed deliveries. Check the journal rule and its delivery reports, and that this gateway is reachable on port 25. For a mailbox that rarely receives mail, set alerts.journal_silence_hours_for.",
                    hours(quiet)
                ),
            );
        }
        if mb.refused_while_suspended {
            add(
                format!("suspended:{}", mb.id),
                format!("deliveries to the suspended {}", mb.name),
                format!(
                    "{who} is suspended, but senders still try to deliver to it: they get a temporary error and will give up.\n\nChange the journal rule to another mailbox, or resume this one (sealpost mailbox resume)."
                ),
            );
        }
        if mb.retired_messages > 0 {
            add(
                format!("retired:{}", mb.id),
                format!("mail sealed to a retired key in {}", mb.name),
                format!(
                    "{who} holds {} message(s) sealed to the key of before a password reset. The archiver cannot collect them.\n\nExport them with the old password (sealpost mailbox export --retired), or remove them (sealpost mailbox purge-retired).",
                    mb.retired_messages
                ),
            );
        }
    }
    trust_conditions(report, alerts, &mut add);
    if let Some(d) = report
        .disk
        .as_ref()
        .filter(|d| d.free_bytes < d.reserve_bytes.saturating_mul(2))
    {
        let now = if d.below_reserve {
            "It is below the reserve: new mail is refused with a temporary error now, and senders give up after a day or two."
        } else {
            "Below the reserve, new mail will be refused with a temporary error."
        };
        add(
            "disk".into(),
            "the disk is nearly full".into(),
            format!(
                "The data directory's file system has {} free; the reserve is {}. {now}\n\nMake the archiver collect, or free space on that file system.",
                crate::store::reserve::human(d.free_bytes),
                crate::store::reserve::human(d.reserve_bytes)
            ),
        );
    }
    out
}

/// What others must trust: the certificate, its renewal, the custody anchors.
fn trust_conditions(
    report: &Report,
    alerts: &AlertsConfig,
    add: &mut impl FnMut(String, String, String),
) {
    if let Some(c) = report
        .certificate
        .as_ref()
        .filter(|c| c.days_left < alerts.certificate_days as i64)
    {
        add(
            "certificate".into(),
            "the certificate expires soon".into(),
            format!(
                "The TLS certificate ({}) expires {} ({} day(s) left). Senders that require TLS stop delivering when it has expired.\n\nWith ACME, look at the renewal's error (sealpost status); otherwise install a new certificate (console, or tls.cert_file).",
                c.subject, c.not_after, c.days_left
            ),
        );
    }
    if let Some(error) = report.custody.as_ref().and_then(|c| c.tsa_error.as_ref()) {
        add(
            "custody".into(),
            "the chain of custody cannot be anchored".into(),
            format!(
                "The time-stamping authority (custody.tsa) failed; mail still flows and is logged, but entries since the last anchor could be cut without detection until an anchor succeeds. The error:\n\n  {error}\n\nThe gateway retries by itself; sealpost custody anchor tries again now."
            ),
        );
    }
    if let Some(error) = report.acme.as_ref().and_then(|a| a.last_error.as_ref()) {
        add(
            "acme".into(),
            "the certificate renewal failed".into(),
            format!(
                "Renewing the certificate from the ACME certificate authority failed; the current certificate is still served. The error:\n\n  {error}\n\nThe gateway retries by itself. Check that the challenge's port (80 or 443) is reachable from the internet; sealpost cert renew tries again now."
            ),
        );
    }
}

/// Mails `kind` about one condition now; records the last mail sent, or
/// the relay's failure, in `state`.
fn mail(
    config: &Config,
    alerts: &AlertsConfig,
    state: &mut State,
    kind: Kind,
    title: &str,
    body: &str,
    shutdown: &Arc<AtomicBool>,
) -> Result<(), String> {
    let (subject, message) = compose(config, alerts, kind, title, body);
    match send::send(alerts, &config.hostname, &message, Arc::clone(shutdown)) {
        Ok(()) => {
            info!("alerts: sent \"{subject}\" to {}", alerts.to.join(", "));
            state.last_sent = Some((now(), subject));
            if state.undeliverable.take().is_some() {
                info!("alerts: the relay takes mail again");
            }
            Ok(())
        }
        Err(e) => {
            let failures = state.undeliverable.as_ref().map_or(0, |u| u.failures) + 1;
            let wait = FIRST_RETRY_SECS
                .saturating_mul(1 << failures.saturating_sub(1).min(10))
                .min(MAX_RETRY_SECS);
            warn!(
                "alerts: \"{subject}\" could not be sent ({failures} failure(s) in a row, next try in {wait} s): {e}"
            );
            state.undeliverable = Some(Undeliverable {
                since: state.undeliverable.as_ref().map_or(now(), |u| u.since),
                failures,
                error: e.clone(),
                next_try: now() + wait as i64,
            });
            Err(e)
        }
    }
}

/// One look: the conditions now against the state, and the mails that
/// follow, under the lock so that one node of a cluster sends. Returns
/// the state after it.
pub fn look(config: &Config, store: &Store, shutdown: &Arc<AtomicBool>) -> Option<State> {
    let alerts = config.alerts.as_ref()?;
    let dir = dir(config);
    durable::create_private_dir(&dir).ok()?;
    let lock = durable::open_lock_file(&dir.join(LOCK_FILE)).ok()?;
    if !durable::try_lock_exclusive(&lock).unwrap_or(false) {
        return None;
    }
    let report = status::gather(
        config,
        store,
        Duration::from_secs(alerts.archiver_stopped_hours.max(1) * 3600),
        status::Probe::Serving(&[]),
    );
    let mut holding = conditions(&report, alerts);
    holding.extend(node_conditions(config, alerts));
    let mut state = state(config);
    // Written only when it changes: no flush a minute on an SD card.
    let loaded = state.clone();
    let t = now();
    if state.undeliverable.as_ref().is_some_and(|u| t < u.next_try) {
        return Some(state);
    }
    let reminder = alerts.reminder_secs as i64;
    let mut outcome = Ok(());
    for c in &holding {
        let due = match state.active.get(&c.key) {
            None => Some(Kind::Started),
            Some(a) if t - a.mailed >= reminder => Some(Kind::Reminder),
            Some(_) => None,
        };
        if let Some(kind) = due {
            outcome = mail(
                config, alerts, &mut state, kind, &c.title, &c.body, shutdown,
            );
            if outcome.is_err() {
                break;
            }
            let since = state.active.get(&c.key).map_or(t, |a| a.since);
            state.active.insert(
                c.key.clone(),
                Active {
                    title: c.title.clone(),
                    since,
                    mailed: now(),
                },
            );
        }
    }
    if outcome.is_ok() {
        mail_cleared(config, alerts, &mut state, &holding, shutdown);
    }
    if state != loaded
        && let Err(e) = save(config, &state)
    {
        warn!("alerts: cannot record their state: {e}");
    }
    drop(lock);
    Some(state)
}

/// One "Resolved" mail for each condition in `state` that no longer holds;
/// stops at the first the relay does not take.
fn mail_cleared(
    config: &Config,
    alerts: &AlertsConfig,
    state: &mut State,
    holding: &[Condition],
    shutdown: &Arc<AtomicBool>,
) {
    let cleared: Vec<String> = state
        .active
        .keys()
        .filter(|k| !holding.iter().any(|c| &c.key == *k))
        .cloned()
        .collect();
    for key in cleared {
        let Some(active) = state.active.get(&key).cloned() else {
            continue;
        };
        let since = timestamp::from_unix_micros(active.since.max(0) as u64 * 1_000_000);
        let body = format!(
            "It held from {} to {}.",
            timestamp::rfc3339(since),
            timestamp::rfc3339(SystemTime::now())
        );
        if mail(
            config,
            alerts,
            state,
            Kind::Cleared,
            &active.title,
            &body,
            shutdown,
        )
        .is_err()
        {
            return;
        }
        state.active.remove(&key);
    }
}

/// `sealpost alerts test`: one test mail now.
pub fn test(config: &Config) -> Result<String, String> {
    let alerts = configured(config)?;
    send_now(
        config,
        alerts,
        Kind::Test,
        "test",
        &format!(
            "It went through {}:{} to {}.",
            alerts.smarthost.host,
            alerts.smarthost.port,
            alerts.to.join(", ")
        ),
    )
}

/// Looks every `alerts.check_secs` until the gateway stops.
pub fn spawn(config: Config, store: Store, shutdown: Arc<AtomicBool>) -> std::io::Result<()> {
    let Some(every) = config
        .alerts
        .as_ref()
        .map(|a| Duration::from_secs(a.check_secs))
    else {
        return Ok(());
    };
    std::thread::Builder::new()
        .name("alerts".into())
        .spawn(move || {
            let mut history = Published::default();
            while !shutdown.load(Ordering::Relaxed) {
                publish(&config, &mut history);
                look(&config, &store, &shutdown);
                let until = std::time::Instant::now() + every;
                while std::time::Instant::now() < until && !shutdown.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })?;
    Ok(())
}

/// The log lines an alert may carry: anything between angle brackets
/// (envelope addresses, Message-IDs) and any word with an `@` (addresses,
/// proxy login names) replaced, so that no correspondent's address leaves
/// in a mail.
pub fn redact(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        match rest[open..].find('>') {
            Some(close) => {
                out.push_str("<…>");
                rest = &rest[open + close + 1..];
            }
            None => {
                out.push_str("<…");
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.split(' ')
        .map(|w| if w.contains('@') { "[address]" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `sealpost alerts failed UNIT`: run by `sealpost-alert@.service`, which
/// the main unit names in `OnFailure=`: a running gateway cannot report
/// that it failed to start or died, so this mails it, with the last log
/// `lines` (redacted).
pub fn failed(config: &Config, unit: &str, lines: &[String]) -> Result<String, String> {
    let alerts = configured(config)?;
    let log: Vec<String> = lines.iter().map(|l| format!("  {}", redact(l))).collect();
    let body = format!(
        "The service {unit} failed: the gateway did not start, or it stopped. While it is down, senders get no answer and retry; Microsoft 365 gives up after about a day.\n\nLook at: systemctl status {unit}; journalctl -u {unit}. The last lines of its log:\n\n{}",
        if log.is_empty() {
            "  (none could be read)".to_string()
        } else {
            log.join("\n")
        }
    );
    let title = format!("the gateway stopped ({unit} failed)");
    send_now(config, alerts, Kind::Started, &title, &body)
}

fn configured(config: &Config) -> Result<&AlertsConfig, String> {
    config
        .alerts
        .as_ref()
        .ok_or_else(|| "alerts are not configured (the alerts section of gateway.json)".into())
}

/// Composes and sends one mail now, outside the running gateway's looks
/// (`alerts test`, `alerts failed`); its subject.
fn send_now(
    config: &Config,
    alerts: &AlertsConfig,
    kind: Kind,
    title: &str,
    body: &str,
) -> Result<String, String> {
    let (subject, message) = compose(config, alerts, kind, title, body);
    let never = Arc::new(AtomicBool::new(false));
    send::send(alerts, &config.hostname, &message, never)?;
    Ok(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_lose_every_address_before_they_are_mailed() {
        assert_eq!(
            redact("smtp from=<a@b.example> rcpt=<c@d.example> size=10 <unclosed@x"),
            "smtp from=<…> rcpt=<…> size=10 <…"
        );
        assert_eq!(
            redact("login anna@example.com%pop.example.com%mbx-1 refused"),
            "login [address] refused"
        );
        assert_eq!(redact("nothing to hide"), "nothing to hide");
    }

    #[test]
    fn a_failing_time_stamping_authority_is_a_condition() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let store = Store::open(&config.data_dir).unwrap();
        let probe = status::Probe::Serving(&[]);
        let quiet = status::gather(&config, &store, Duration::from_secs(3600), probe);
        let found = conditions(&quiet, &AlertsConfig::default());
        assert!(!found.iter().any(|c| c.key == "custody"));
        let chain = crate::store::custody::chain_dir(&config.data_dir, "default");
        std::fs::create_dir_all(&chain).unwrap();
        std::fs::write(
            chain.join("tsa-state.json"),
            r#"{"error":"custody.tsa.url tsa.example:80: connection refused"}"#,
        )
        .unwrap();
        let report = status::gather(&config, &store, Duration::from_secs(3600), probe);
        let found = conditions(&report, &AlertsConfig::default());
        let custody = found
            .iter()
            .find(|c| c.key == "custody")
            .expect("a condition");
        assert!(
            custody.body.contains("connection refused"),
            "{}",
            custody.body
        );
    }

    #[test]
    fn a_mail_is_auto_submitted_plain_text_with_crlf_lines() {
        let config = Config {
            hostname: "gw.example.org".into(),
            ..Config::default()
        };
        let alerts = AlertsConfig {
            to: vec!["it@example.org".into()],
            ..AlertsConfig::default()
        };
        let (subject, mail) = compose(
            &config,
            &alerts,
            Kind::Cleared,
            "the disk is nearly full",
            "Line one.\nLine two.",
        );
        assert_eq!(
            subject,
            "[Sealpost gw.example.org] Resolved: the disk is nearly full"
        );
        let text = String::from_utf8(mail).unwrap();
        assert!(
            text.contains("\r\nAuto-Submitted: auto-generated\r\n"),
            "{text}"
        );
        assert!(
            text.starts_with("From: Sealpost <sealpost@gw.example.org>\r\n"),
            "{text}"
        );
        assert!(
            !text.replace("\r\n", "").contains('\n'),
            "only CRLF line ends"
        );
        assert!(
            text.contains("\r\n\r\nThis no longer needs attention"),
            "{text}"
        );
    }
}
