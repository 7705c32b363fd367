//! The `acme` and `mta_sts` sections: certificates that renew themselves,
//! and the MTA-STS policy the gateway serves (RFC 8461).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::checks::*;

/// Let's Encrypt's production directory, the documented value.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory, for a first try.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Which challenge proves the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ChallengeChoice {
    /// HTTP-01 when `acme.http_listen` is set, else TLS-ALPN-01 on `mta_sts.listen`.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// HTTP-01 on `acme.http_listen` (port 80 from the internet).
    #[serde(rename = "http-01")]
    Http01,
    /// TLS-ALPN-01 on `mta_sts.listen` (port 443 from the internet).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

/// The `acme` section; absent (or `null`) turns ACME off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// The ACME directory URL.
    pub directory: String,
    /// An address the certificate authority may write to (optional).
    pub contact: Option<String>,
    /// Agreement to the certificate authority's terms of service; ACME
    /// stays off until it is `true`.
    #[serde(deserialize_with = "boolean")]
    pub agree_to_terms: bool,
    /// The names; empty means `hostname`, plus `mta-sts.<mailbox_domain>`
    /// when the MTA-STS policy is served.
    #[serde(deserialize_with = "dns_names")]
    pub names: Vec<String>,
    /// Extra CA certificates trusted for the ACME server (a private one).
    #[serde(deserialize_with = "optional_path")]
    pub ca_file: Option<PathBuf>,
    /// `auto`, `http-01` or `tls-alpn-01`.
    pub challenge: ChallengeChoice,
    /// The HTTP-01 listeners (port 80 in production); empty turns HTTP-01 off.
    #[serde(deserialize_with = "addrs")]
    pub http_listen: Vec<SocketAddr>,
    /// Seconds before the first retry after a failure; each further
    /// failure doubles it, up to 12 hours.
    #[serde(deserialize_with = "number::<_, 1, 43_200>")]
    pub retry_secs: u64,
    /// Seconds each exchange with the ACME server may take.
    #[serde(deserialize_with = "number::<_, 1, 600>")]
    pub timeout_secs: u64,
}

impl Default for AcmeConfig {
    fn default() -> AcmeConfig {
        AcmeConfig {
            directory: LETS_ENCRYPT.into(),
            contact: None,
            agree_to_terms: false,
            names: Vec::new(),
            ca_file: None,
            challenge: ChallengeChoice::Auto,
            http_listen: Vec::new(),
            retry_secs: 600,
            timeout_secs: 30,
        }
    }
}

/// The MTA-STS policy mode (RFC 8461 §3.2), or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum StsMode {
    /// No policy is served; `mta_sts.listen` answers TLS-ALPN-01 only.
    #[serde(rename = "off")]
    Off,
    /// Senders report failures but deliver anyway.
    #[default]
    #[serde(rename = "testing")]
    Testing,
    /// Senders deliver only over verified TLS to a listed MX.
    #[serde(rename = "enforce")]
    Enforce,
    /// The policy is withdrawn (RFC 8461 §8.3).
    #[serde(rename = "none")]
    None,
}

impl StsMode {
    /// As the policy writes it.
    pub fn name(self) -> &'static str {
        match self {
            StsMode::Off => "off",
            StsMode::Testing => "testing",
            StsMode::Enforce => "enforce",
            StsMode::None => "none",
        }
    }
}

/// The `mta_sts` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MtaStsConfig {
    /// HTTPS listeners (port 443 in production): the policy at
    /// `/.well-known/mta-sts.txt`, and TLS-ALPN-01.
    #[serde(deserialize_with = "addrs")]
    pub listen: Vec<SocketAddr>,
    /// `testing`, `enforce`, `none`, or `off` (no policy served).
    pub mode: StsMode,
    /// Every MX of the mailbox domain, the standby's included; empty means
    /// `hostname` alone.
    #[serde(deserialize_with = "dns_names")]
    pub mx: Vec<String>,
    /// How long senders may cache the policy (RFC 8461 §3.2: at most a year).
    #[serde(deserialize_with = "number::<_, 86_400, 31_557_600>")]
    pub max_age_secs: u64,
    /// Where TLS reports go (RFC 8460), `mailto:` or `https:`; printed by
    /// `sealpost dns` as the `_smtp._tls` record.
    pub tls_rpt: Option<String>,
}

impl Default for MtaStsConfig {
    fn default() -> MtaStsConfig {
        MtaStsConfig {
            listen: Vec::new(),
            mode: StsMode::Testing,
            mx: Vec::new(),
            max_age_secs: 604_800,
            tls_rpt: None,
        }
    }
}

impl MtaStsConfig {
    /// Whether a policy is served.
    pub fn serves_policy(&self) -> bool {
        !self.listen.is_empty() && self.mode != StsMode::Off
    }
}

fn dns_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items: Vec<serde_json::Value> = Deserialize::deserialize(d)?;
    items
        .into_iter()
        .map(|item| {
            let name = non_empty_string(item).map_err(de::Error::custom)?;
            if crate::net::is_dns_name(&name) {
                Ok(name.to_ascii_lowercase())
            } else {
                Err(de::Error::custom(format!(
                    "{name:?} is not a valid DNS name"
                )))
            }
        })
        .collect()
}

impl super::Config {
    /// Cross-checks `acme` with the rest: (key, message) of the first problem.
    pub(super) fn check_acme(&self) -> Result<(), (String, String)> {
        let Some(acme) = &self.acme else {
            return Ok(());
        };
        let refuse = |key: &str, message: String| Err((format!("acme.{key}"), message));
        if self.tls.cert_file.is_some() {
            return refuse(
                "directory",
                "acme and tls.cert_file exclude each other: the gateway would never serve what ACME issues (remove one of them)".into(),
            );
        }
        match crate::outbound::Url::parse(&acme.directory) {
            Ok(url) if url.https => {}
            Ok(_) => return refuse("directory", "the ACME directory must be https://".into()),
            Err(e) => return refuse("directory", e.to_string()),
        }
        if !acme.agree_to_terms {
            return refuse(
                "agree_to_terms",
                format!(
                    "must be true: read the certificate authority's terms of service (linked from {}) and agree to them here",
                    acme.directory
                ),
            );
        }
        if let Some(contact) = &acme.contact
            && (!contact.contains('@')
                || contact.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return refuse("contact", format!("{contact:?} is not an email address"));
        }
        let http = !acme.http_listen.is_empty();
        let https = !self.mta_sts.listen.is_empty();
        match acme.challenge {
            ChallengeChoice::Http01 if !http => refuse(
                "http_listen",
                "http-01 needs a listener here (port 80 from the internet)".into(),
            ),
            ChallengeChoice::TlsAlpn01 if !https => refuse(
                "challenge",
                "tls-alpn-01 needs mta_sts.listen (port 443 from the internet)".into(),
            ),
            ChallengeChoice::Auto if !http && !https => refuse(
                "http_listen",
                "ACME needs acme.http_listen (HTTP-01, port 80) or mta_sts.listen (TLS-ALPN-01, port 443)".into(),
            ),
            _ => Ok(()),
        }
    }
}
