//! The `alerts` section: who is told by email when something needs
//! attention, through which relay, and the thresholds of each condition;
//! and the `metrics` section, where the Prometheus exposition is served.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checks::*;

/// How the gateway talks to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RelayTls {
    /// STARTTLS, required, with a verified certificate (port 587 or 25).
    #[default]
    #[serde(rename = "starttls")]
    StartTls,
    /// Implicit TLS with a verified certificate (port 465).
    #[serde(rename = "implicit")]
    Implicit,
    /// No TLS: only for a local MTA on a loopback address.
    #[serde(rename = "none")]
    None,
}

/// The relay alerts are sent through.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Smarthost {
    /// Its name or address (a loopback address for a local MTA).
    pub host: String,
    /// Its port.
    #[serde(deserialize_with = "port")]
    pub port: u16,
    /// `starttls`, `implicit` or `none`.
    pub tls: RelayTls,
    /// Extra CA certificates trusted for it (besides the Mozilla roots).
    #[serde(deserialize_with = "optional_path")]
    pub ca_file: Option<PathBuf>,
    /// The AUTH user; `None` for a relay that authenticates by address
    /// (a Microsoft 365 connector, Google's SMTP relay, a local MTA).
    pub username: Option<String>,
    /// A file holding the AUTH password (one line), readable only by the
    /// service user.
    #[serde(deserialize_with = "optional_path")]
    pub password_file: Option<PathBuf>,
    /// Seconds each exchange with the relay may take.
    #[serde(deserialize_with = "number::<_, 1, 300>")]
    pub timeout_secs: u64,
}

impl Default for Smarthost {
    fn default() -> Smarthost {
        Smarthost {
            host: String::new(),
            port: 587,
            tls: RelayTls::StartTls,
            ca_file: None,
            username: None,
            password_file: None,
            timeout_secs: 30,
        }
    }
}

/// The `alerts` section; absent (or `null`) turns alerts off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Who is told.
    pub to: Vec<String>,
    /// The sender; empty: `sealpost@<hostname>`.
    pub from: String,
    /// The relay.
    pub smarthost: Smarthost,
    /// Seconds between two looks at the conditions.
    #[serde(deserialize_with = "number::<_, 5, 3600>")]
    pub check_secs: u64,
    /// Seconds between reminders while a condition lasts (a day).
    #[serde(deserialize_with = "number::<_, 10, 31_536_000>")]
    pub reminder_secs: u64,
    /// The archiver stopped: mail waited longer than this (0: off).
    #[serde(deserialize_with = "number::<_, 0, 8760>")]
    pub archiver_stopped_hours: u64,
    /// Journal mail stopped: a mailbox that received mail before has
    /// received nothing for this long (0: off).
    #[serde(deserialize_with = "number::<_, 0, 8760>")]
    pub journal_silence_hours: u64,
    /// The same per mailbox id, overriding it (0: off for that mailbox,
    /// say a rarely used proxy mailbox).
    pub journal_silence_hours_for: BTreeMap<String, u64>,
    /// The certificate expires within this many days.
    #[serde(deserialize_with = "number::<_, 1, 365>")]
    pub certificate_days: u64,
    /// Deliveries refused or deferred (unknown mailbox, relaying, a
    /// suspended mailbox, a storage fault, the disk reserve) in the last
    /// hour, over every node, above which an alert goes out (0: off).
    #[serde(deserialize_with = "number::<_, 0, 1_000_000>")]
    pub refused_per_hour: u64,
}

impl Default for AlertsConfig {
    fn default() -> AlertsConfig {
        AlertsConfig {
            to: Vec::new(),
            from: String::new(),
            smarthost: Smarthost::default(),
            check_secs: 60,
            reminder_secs: 86_400,
            archiver_stopped_hours: 24,
            journal_silence_hours: 24,
            journal_silence_hours_for: BTreeMap::new(),
            certificate_days: 14,
            refused_per_hour: 50,
        }
    }
}

fn is_address(a: &str) -> bool {
    a.split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && crate::net::is_dns_name(d.trim_end_matches('.')))
        && !a
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c))
}

impl AlertsConfig {
    /// Relative paths are relative to the configuration file.
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        for path in [
            &mut self.smarthost.ca_file,
            &mut self.smarthost.password_file,
        ]
        .into_iter()
        .flatten()
        {
            *path = base.join(&*path);
        }
    }

    /// The cross-checks: (key, message) of the first problem.
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        let refuse = |key: &str, message: String| Err((format!("alerts.{key}"), message));
        if self.to.is_empty() {
            return refuse("to", "name at least one address to tell".into());
        }
        if let Some(bad) = self.to.iter().find(|a| !is_address(a)) {
            return refuse("to", format!("{bad:?} is not an email address"));
        }
        if !self.from.is_empty() && !is_address(&self.from) {
            return refuse("from", format!("{:?} is not an email address", self.from));
        }
        let relay = &self.smarthost;
        if relay.host.is_empty() {
            return refuse(
                "smarthost.host",
                "name the relay (a host on a loopback address for the machine's own MTA)".into(),
            );
        }
        let loopback = relay.host == "localhost"
            || relay
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if relay.tls == RelayTls::None && !loopback {
            return refuse(
                "smarthost.tls",
                "none is only for a local MTA on a loopback address: use starttls or implicit"
                    .into(),
            );
        }
        match (&relay.username, &relay.password_file) {
            (Some(_), None) => refuse(
                "smarthost.password_file",
                "a username needs its password_file".into(),
            ),
            (None, Some(_)) => refuse(
                "smarthost.username",
                "a password_file needs its username".into(),
            ),
            (Some(_), Some(_)) if relay.tls == RelayTls::None => refuse(
                "smarthost.tls",
                "a password is never sent without TLS: use starttls or implicit".into(),
            ),
            _ => Ok(()),
        }
    }

    /// The sender address.
    pub fn sender(&self, hostname: &str) -> String {
        if self.from.is_empty() {
            format!("sealpost@{hostname}")
        } else {
            self.from.clone()
        }
    }
}

/// The `metrics` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Plain-HTTP listeners of `/metrics`; empty (the default) turns them
    /// off. Loopback, or firewalled to the Prometheus server.
    #[serde(deserialize_with = "addrs")]
    pub listen: Vec<SocketAddr>,
}
