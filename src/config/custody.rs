//! The `custody` section: the chain-of-custody log and its anchors, RFC
//! 3161 time-stamps from a time-stamping authority.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checks::*;

/// The time-stamping authority.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TsaConfig {
    /// Where time-stamp requests are posted (RFC 3161 section 3.4);
    /// `http://` is allowed, as the token is signed.
    pub url: String,
    /// The CA certificate(s) the TSA's signing certificate must chain to
    /// (PEM); also the HTTPS trust for an `https://` URL.
    #[serde(deserialize_with = "optional_path")]
    pub ca_file: Option<PathBuf>,
    /// Seconds one request may take.
    #[serde(deserialize_with = "number::<_, 1, 300>")]
    pub timeout_secs: u64,
}

impl Default for TsaConfig {
    fn default() -> TsaConfig {
        TsaConfig {
            url: String::new(),
            ca_file: None,
            timeout_secs: 30,
        }
    }
}

/// The `custody` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CustodyConfig {
    /// Whether the log is kept (on by default).
    #[serde(deserialize_with = "boolean")]
    pub log: bool,
    /// A segment is closed when it reaches this size (and at midnight UTC).
    #[serde(deserialize_with = "number::<_, 4096, 1073741824>")]
    pub segment_bytes: u64,
    /// The time-stamping authority; `None`: no anchors.
    pub tsa: Option<TsaConfig>,
    /// Seconds between two anchors (and one at shutdown): entries after
    /// the last anchor can be cut without detection.
    #[serde(deserialize_with = "number::<_, 60, 604800>")]
    pub anchor_interval_secs: u64,
    /// A second copy of every token, outside the data directory, so that a
    /// restored backup cannot silently erase anchors.
    #[serde(deserialize_with = "optional_path")]
    pub anchor_copy_dir: Option<PathBuf>,
}

impl Default for CustodyConfig {
    fn default() -> CustodyConfig {
        CustodyConfig {
            log: true,
            segment_bytes: 16 * 1024 * 1024,
            tsa: None,
            anchor_interval_secs: 3600,
            anchor_copy_dir: None,
        }
    }
}

impl CustodyConfig {
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        let tsa_ca = self.tsa.as_mut().and_then(|t| t.ca_file.as_mut());
        for path in [tsa_ca, self.anchor_copy_dir.as_mut()]
            .into_iter()
            .flatten()
        {
            *path = base.join(&*path);
        }
    }

    /// The cross-checks: (key, message) of the first problem.
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        let Some(tsa) = &self.tsa else {
            return Ok(());
        };
        let refuse = |key: &str, message: String| Err((format!("custody.tsa.{key}"), message));
        if !self.log {
            return refuse("url", "anchors need the log: custody.log is false".into());
        }
        if let Err(e) = crate::outbound::Url::parse(&tsa.url) {
            return refuse("url", e.to_string());
        }
        if tsa.ca_file.is_none() {
            return refuse(
                "ca_file",
                "the TSA's CA certificate is needed to check its tokens".into(),
            );
        }
        Ok(())
    }
}
