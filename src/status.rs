//! What needs an administrator's attention: `sealpost status` prints it and
//! exits non-zero when something does, so that cron or a monitoring system
//! can run it. The failure administrators miss is an archiver that stopped
//! collecting: Microsoft 365 gives up on a journal report after about a day
//! of `4xx`, and mail nobody retrieves piles up unseen. So mail waiting longer
//! than a threshold counts, as does a certificate near its end.
//!
//! Works whether or not the gateway runs: it reads the store and the
//! certificate, and checks each listener by connecting to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::cert::{self, EXPIRY_WARNING_DAYS};
use crate::config::Config;
use crate::store::{self, Mailbox, Status, Store, StoreError};
use crate::timestamp;

/// How long a listener may take to accept the check's connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A suspended mailbox that refused a delivery within this window needs
/// attention: a journal rule still points at it. One kept suspended on
/// purpose, with nothing arriving, is no alarm.
pub const SUSPENDED_ATTEMPT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The default for how long mail may wait before it needs attention.
pub const DEFAULT_MAX_PENDING_AGE: Duration = Duration::from_secs(24 * 3600);

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When it was taken.
    pub checked_at: String,
    /// The pid of the gateway serving the data directory, if one does.
    pub gateway_pid: Option<u32>,
    /// Every configured listener.
    pub listeners: Vec<Listener>,
    /// The certificate in use.
    pub certificate: Option<cert::Summary>,
    /// Why it cannot be read (none yet before the first start, say).
    pub certificate_error: Option<String>,
    /// What the ACME renewer did last, when `acme` is configured.
    pub acme: Option<crate::acme::State>,
    /// The data directory's file system against the disk reserve (`None`
    /// when it cannot be read).
    pub disk: Option<Disk>,
    /// The alerts' state, when `alerts` is configured: the conditions
    /// mailed, the last mail sent, and whether the relay fails.
    pub alerts: Option<crate::alerts::State>,
    /// This node's custody chain: the last anchor and the entries since.
    pub custody: Option<crate::custody::ChainState>,
    /// Every mailbox.
    pub mailboxes: Vec<MailboxStatus>,
    /// The mail age threshold in force, seconds.
    pub max_pending_age_secs: u64,
    /// What needs attention, one sentence each; empty when all is well.
    pub attention: Vec<String>,
}

/// Free space on the data directory's file system against the reserve.
#[derive(Debug, Serialize)]
pub struct Disk {
    /// Bytes available to the service user.
    pub free_bytes: u64,
    /// The file system's size.
    pub total_bytes: u64,
    /// The reserve (`limits.min_free_bytes`, `limits.min_free_percent`).
    pub reserve_bytes: u64,
    /// Below the reserve: new mail is refused with a temporary error.
    pub below_reserve: bool,
}

/// The alerts' state, and a sentence when the relay fails.
fn alerts_status(config: &Config, attention: &mut Vec<String>) -> Option<crate::alerts::State> {
    let alerts = config.alerts.as_ref().map(|_| crate::alerts::state(config));
    if let Some(u) = alerts.as_ref().and_then(|a| a.undeliverable.as_ref()) {
        attention.push(format!(
            "alerts undeliverable: the relay failed {} time(s) in a row since {}: {}",
            u.failures,
            timestamp::rfc3339(timestamp::from_unix_micros(
                u.since.max(0) as u64 * 1_000_000
            )),
            u.error
        ));
    }
    alerts
}

/// The disk against the reserve, and a sentence when below it.
fn disk_status(config: &Config, attention: &mut Vec<String>) -> Option<Disk> {
    let l = &config.limits;
    let space =
        crate::store::reserve::measure(&config.data_dir, l.min_free_bytes, l.min_free_percent)
            .ok()?;
    if space.below() {
        attention.push(format!(
            "the data directory's file system has {} free, below the reserve of {}: new mail is refused with a temporary error (452) until the archiver collects or space is freed",
            crate::store::reserve::human(space.free),
            crate::store::reserve::human(space.reserve)
        ));
    }
    Some(Disk {
        free_bytes: space.free,
        total_bytes: space.total,
        reserve_bytes: space.reserve,
        below_reserve: space.below(),
    })
}

/// One listener and whether it answered.
#[derive(Debug, Serialize)]
pub struct Listener {
    /// `smtp.listen[0]` and so on.
    pub key: String,
    /// The configured address.
    pub address: SocketAddr,
    /// Whether a TCP connection to it succeeded (`None` for port 0, which
    /// only the log of the running gateway can tell).
    pub answers: Option<bool>,
}

/// One mailbox's state.
#[derive(Debug, Serialize)]
pub struct MailboxStatus {
    /// Mailbox id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `active` or `suspended`.
    pub status: String,
    /// Messages waiting to be retrieved.
    pub pending_messages: usize,
    /// Their size on disk.
    pub pending_bytes: u64,
    /// How long the oldest of them has waited, seconds.
    pub oldest_age_secs: Option<u64>,
    /// When it was last logged in to over POP3 (RFC 3339).
    pub last_retrieved: Option<String>,
    /// Seconds since then.
    pub last_retrieved_age_secs: Option<u64>,
    /// Entries in `messages/` that are not regular files (skipped).
    pub stray_entries: usize,
    /// Messages a password reset moved aside (sealed to a retired key).
    pub retired_messages: usize,
    /// Seconds since the last delivery into it (to the minute), if any.
    pub last_delivery_age_secs: Option<u64>,
    /// Suspended, and deliveries to it were refused within
    /// [`SUSPENDED_ATTEMPT_WINDOW`]: a journal rule still points at it.
    pub refused_while_suspended: bool,
}

fn age(time: SystemTime, now: SystemTime) -> u64 {
    now.duration_since(time).unwrap_or_default().as_secs()
}

/// Where to connect to check a listener: a wildcard is checked on loopback.
fn target(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Whether a listener answers. An implicit-TLS listener (`…listen_tls`,
/// the console) gets a whole handshake and a close_notify, so that the
/// gateway sees a client that came and left without a word (logged at
/// DEBUG), not a failed handshake: a cron job running `status` every few
/// minutes must not fill the log with false failures.
fn answers(key: &str, address: SocketAddr) -> bool {
    let Ok(tcp) = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) else {
        return false;
    };
    if !(key.contains("listen_tls[") || key.starts_with("console.")) {
        return true;
    }
    crate::net::tls::probe_handshake(tcp, CONNECT_TIMEOUT).is_ok()
}

/// How the listeners are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe<'a> {
    /// Connect to each (the CLI, from outside the gateway).
    Connect,
    /// The gateway asking about itself, with what it bound (configuration
    /// key, address): those are served, any other is not listening
    /// (connecting would only start sessions).
    Serving(&'a [(String, SocketAddr)]),
}

/// Takes the report. `max_pending_age`: mail waiting longer needs attention.
pub fn gather(config: &Config, store: &Store, max_pending_age: Duration, probe: Probe) -> Report {
    let now = SystemTime::now();
    let mut attention = Vec::new();
    let gateway_pid = store::serving_pid(&config.data_dir, config.node.as_deref());
    let listeners: Vec<Listener> = config
        .all_listeners()
        .into_iter()
        .map(|(key, address)| {
            let (address, answers) = match probe {
                Probe::Serving(bound) => match bound.iter().find(|(k, _)| *k == key) {
                    Some((_, local)) => (*local, Some(true)),
                    None => (address, Some(false)),
                },
                Probe::Connect => (
                    address,
                    (address.port() != 0).then(|| answers(&key, target(address))),
                ),
            };
            if answers == Some(false) {
                attention.push(format!("{key} {address} does not answer"));
            }
            Listener {
                key,
                address,
                answers,
            }
        })
        .collect();
    let file = cert::in_use(config);
    let certificate = cert::summary(&file).map_err(|e| e.to_string());
    match &certificate {
        Ok(s) if s.days_left < EXPIRY_WARNING_DAYS => attention.push(format!(
            "the TLS certificate {} expires {} ({} day(s) left)",
            s.file.display(),
            s.not_after,
            s.days_left
        )),
        Ok(_) => {}
        // No certificate yet is normal before the first start.
        Err(_) if !file.exists() && config.tls.cert_file.is_none() => {}
        Err(e) => attention.push(format!("the TLS certificate cannot be read: {e}")),
    }
    let acme = acme_status(config, &mut attention);
    let disk = disk_status(config, &mut attention);
    let alerts = alerts_status(config, &mut attention);
    let custody = crate::custody::chain_state(config);
    if let Some(e) = custody.as_ref().and_then(|c| c.tsa_error.as_ref()) {
        attention.push(format!("the custody log cannot be anchored: {e}"));
    }
    let mut mailboxes = Vec::new();
    match store.mailbox_ids() {
        Err(e) => attention.push(format!("the mailboxes cannot be listed: {e}")),
        Ok(ids) => {
            for id in ids {
                match store
                    .mailbox(&id)
                    .and_then(|mb| mailbox_status(&mb, now, max_pending_age))
                {
                    Ok((status, warnings)) => {
                        attention.extend(warnings);
                        mailboxes.push(status);
                    }
                    Err(e) => attention.push(format!("mailbox {id} cannot be read: {e}")),
                }
            }
        }
    }
    Report {
        checked_at: timestamp::rfc3339(now),
        gateway_pid,
        listeners,
        certificate: certificate.as_ref().ok().cloned(),
        certificate_error: certificate.err(),
        acme,
        disk,
        custody,
        alerts,
        mailboxes,
        max_pending_age_secs: max_pending_age.as_secs(),
        attention,
    }
}

/// The ACME renewer's state, and a sentence when its last attempt failed.
fn acme_status(config: &Config, attention: &mut Vec<String>) -> Option<crate::acme::State> {
    let acme = config.acme.as_ref().map(|_| crate::acme::state(config));
    if let Some(state) = &acme
        && let Some(error) = &state.last_error
    {
        let next = state
            .next_attempt
            .and_then(|t| jiff::Timestamp::from_second(t).ok())
            .map(|t| format!(", next try {t}"))
            .unwrap_or_default();
        attention.push(format!(
            "the ACME certificate renewal failed ({} time(s) in a row{next}); the current certificate is still served: {error}",
            state.failures
        ));
    }
    acme
}

/// One mailbox's state, and the sentences saying why it needs attention if
/// it does (mail waiting longer than `max_pending_age`, entries in
/// `messages/` that are not message files).
pub fn mailbox_status(
    mailbox: &Mailbox,
    now: SystemTime,
    max_pending_age: Duration,
) -> Result<(MailboxStatus, Vec<String>), StoreError> {
    let stats = mailbox.stats()?;
    let id = mailbox.id();
    let oldest_age_secs = stats.oldest.map(|t| age(t, now));
    let strays = &stats.strays;
    let mut warnings: Vec<String> = oldest_age_secs
        .filter(|&a| a > max_pending_age.as_secs())
        .map(|waited| {
            let advice = if mailbox.is_public_only() {
                "a standby copy: merge it into the primary (sealpost merge)"
            } else {
                "is the archiver collecting?"
            };
            format!(
                "mailbox {id} ({}): the oldest of {} message(s) has waited {} h; {advice}",
                mailbox.info().name,
                stats.messages,
                waited / 3600
            )
        })
        .into_iter()
        .collect();
    let refused_while_suspended = mailbox.info().status == Status::Suspended
        && mailbox
            .last_refused_delivery()
            .is_some_and(|r| age(r, now) < SUSPENDED_ATTEMPT_WINDOW.as_secs());
    if refused_while_suspended && let Some(refused) = mailbox.last_refused_delivery() {
        warnings.push(format!(
            "mailbox {id} ({}) is suspended, but deliveries to it were refused in the last {} h \
             (the last at {}): a journal rule still points at it; change the rule, or resume \
             the mailbox",
            mailbox.info().name,
            SUSPENDED_ATTEMPT_WINDOW.as_secs() / 3600,
            timestamp::rfc3339(refused)
        ));
    }
    if !strays.is_empty() {
        warnings.push(format!(
            "mailbox {id} ({}): {} entr{} in messages/ that {} not message files, skipped: {}; \
             move {} out of the mailbox",
            mailbox.info().name,
            strays.len(),
            if strays.len() == 1 { "y" } else { "ies" },
            if strays.len() == 1 { "is" } else { "are" },
            strays.join(", "),
            if strays.len() == 1 { "it" } else { "them" },
        ));
    }
    let status = MailboxStatus {
        id: id.as_str().to_owned(),
        name: mailbox.info().name.clone(),
        status: mailbox.info().status.as_str().to_owned(),
        pending_messages: stats.messages,
        pending_bytes: stats.bytes,
        oldest_age_secs,
        last_retrieved: stats.last_retrieved.map(timestamp::rfc3339),
        last_retrieved_age_secs: stats.last_retrieved.map(|t| age(t, now)),
        stray_entries: strays.len(),
        retired_messages: mailbox.retired_messages()?.len(),
        last_delivery_age_secs: mailbox.last_delivery().map(|t| age(t, now)),
        refused_while_suspended,
    };
    Ok((status, warnings))
}

/// Escapes a Prometheus label value (exposition format: `\`, `"`, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric with its help and type lines, in the exposition format.
fn metric(out: &mut String, name: &str, help: &str, samples: Vec<(String, f64)>) {
    out.push_str(&format!(
        "# HELP sealpost_{name} {help}\n# TYPE sealpost_{name} gauge\n"
    ));
    for (labels, value) in samples {
        out.push_str(&format!("sealpost_{name}{labels} {value}\n"));
    }
}

impl Report {
    /// The report in Prometheus' text exposition format, for node_exporter's
    /// textfile collector. Every metric is a gauge.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let up = f64::from(u8::from(self.gateway_pid.is_some()));
        metric(
            &mut out,
            "up",
            "1 if a gateway is serving the data directory.",
            vec![(String::new(), up)],
        );
        metric(
            &mut out,
            "listener_up",
            "1 if the listener accepted a connection.",
            self.listeners
                .iter()
                .filter_map(|l| {
                    let up = l.answers?;
                    Some((
                        format!("{{key=\"{}\",address=\"{}\"}}", label(&l.key), l.address),
                        f64::from(u8::from(up)),
                    ))
                })
                .collect(),
        );
        if let Some(c) = &self.certificate {
            metric(
                &mut out,
                "certificate_days_left",
                "Days until the TLS certificate expires.",
                vec![(String::new(), c.days_left as f64)],
            );
        }
        if let Some(d) = &self.disk {
            metric(
                &mut out,
                "disk_free_bytes",
                "Bytes free on the data directory's file system.",
                vec![(String::new(), d.free_bytes as f64)],
            );
            metric(
                &mut out,
                "disk_reserve_bytes",
                "The disk reserve: below it, new mail gets a temporary error.",
                vec![(String::new(), d.reserve_bytes as f64)],
            );
        }
        self.mailbox_metrics(&mut out);
        metric(
            &mut out,
            "attention",
            "Number of problems that need an administrator.",
            vec![(String::new(), self.attention.len() as f64)],
        );
        out
    }

    /// The metrics labelled by mailbox.
    fn mailbox_metrics(&self, out: &mut String) {
        let per_mailbox = |value: &dyn Fn(&MailboxStatus) -> Option<f64>| {
            self.mailboxes
                .iter()
                .filter_map(|m| {
                    Some((
                        format!("{{mailbox=\"{}\",name=\"{}\"}}", m.id, label(&m.name)),
                        value(m)?,
                    ))
                })
                .collect::<Vec<_>>()
        };
        metric(
            out,
            "mailbox_pending_messages",
            "Messages waiting to be retrieved.",
            per_mailbox(&|m| Some(m.pending_messages as f64)),
        );
        metric(
            out,
            "mailbox_pending_bytes",
            "Bytes waiting to be retrieved (encrypted, on disk).",
            per_mailbox(&|m| Some(m.pending_bytes as f64)),
        );
        metric(
            out,
            "mailbox_oldest_pending_age_seconds",
            "How long the oldest waiting message has waited.",
            per_mailbox(&|m| m.oldest_age_secs.map(|a| a as f64)),
        );
        metric(
            out,
            "mailbox_last_retrieval_age_seconds",
            "Seconds since the last POP3 login to the mailbox.",
            per_mailbox(&|m| m.last_retrieved_age_secs.map(|a| a as f64)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_labels_are_escaped_and_wildcards_are_checked_on_loopback() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(
            target("0.0.0.0:25".parse().unwrap()),
            "127.0.0.1:25".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            target("[::]:25".parse().unwrap()),
            "[::1]:25".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            target("192.0.2.1:25".parse().unwrap()),
            "192.0.2.1:25".parse::<SocketAddr>().unwrap()
        );
    }
}
