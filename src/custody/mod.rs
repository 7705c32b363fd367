//! The chain of custody's anchors and checks: RFC 3161 time-stamps of each
//! node's head hash (`tsa`), the anchoring thread with its back-off, what
//! `status` and the console show of a chain, and `sealpost custody verify`
//! (`verify`). The log itself is the store's (`store::custody`).
//!
//! What an anchor proves: the chain up to the entry it stamps existed at
//! the TSA's time. Entries after the last anchor can be cut without
//! detection; `custody.anchor_interval_secs` trades the TSA's cost against
//! that window.

pub mod tsa;
pub mod verify;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};
use serde::{Deserialize, Serialize};

use crate::config::{Config, TsaConfig};
use crate::outbound::{Endpoint, Payload, http};
use crate::store::{custody, durable};
use crate::timestamp;

/// The node's anchoring state: `custody/<node>/tsa-state.json`.
const STATE_FILE: &str = "tsa-state.json";
/// The first retry after a failure; doubled up to the interval.
const FIRST_RETRY: Duration = Duration::from_secs(60);

/// What `status` and the console show of this node's chain.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainState {
    /// The last entry written.
    pub head: u64,
    /// The last entry anchored, and when (the TSA's time).
    pub anchored: Option<u64>,
    /// When the last anchor was made (RFC 3339).
    pub anchored_at: Option<String>,
    /// Entries written since the last anchor.
    pub unanchored: u64,
    /// The last TSA failure, while it lasts.
    pub tsa_error: Option<String>,
    /// When the failing TSA is tried again (RFC 3339).
    pub retry_at: Option<String>,
}

/// Failure state kept between runs (written only when it changes).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct TsaState {
    error: Option<String>,
    retry_at: Option<String>,
    anchored_at: Option<String>,
}

/// The anchors of a chain directory: (seq, path), oldest first.
pub fn anchors(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    custody::numbered(dir, ".tsr")
}

/// This node's chain as `status` shows it; `None` when the log is off.
pub fn chain_state(config: &Config) -> Option<ChainState> {
    if !config.custody.log {
        return None;
    }
    let node = config.node.as_deref().unwrap_or(custody::DEFAULT_NODE);
    let dir = custody::chain_dir(&config.data_dir, node);
    let head = custody::head(&dir).ok().flatten().map_or(0, |(s, _)| s);
    let anchored = anchors(&dir.join(custody::ANCHORS_DIR))
        .ok()
        .and_then(|a| a.last().map(|(s, _)| *s));
    let state: TsaState = durable::read_json(&dir.join(STATE_FILE));
    Some(ChainState {
        head,
        anchored,
        anchored_at: state.anchored_at,
        unanchored: head - anchored.unwrap_or(0).min(head),
        tsa_error: state.error,
        retry_at: state.retry_at,
    })
}

/// The anchoring thread of one node.
#[derive(Clone)]
pub struct Anchorer {
    config: Config,
    tsa: TsaConfig,
    dir: PathBuf,
    node: String,
}

impl Anchorer {
    /// `None` when no TSA is configured.
    pub fn new(config: &Config) -> Option<Anchorer> {
        let tsa = config.custody.tsa.clone().filter(|_| config.custody.log)?;
        let node = config
            .node
            .clone()
            .unwrap_or_else(|| custody::DEFAULT_NODE.into());
        Some(Anchorer {
            dir: custody::chain_dir(&config.data_dir, &node),
            config: config.clone(),
            tsa,
            node,
        })
    }

    /// Anchors every `anchor_interval_secs` (sooner after a failure's
    /// back-off) until `shutdown`, then once more; returns that last
    /// anchor's thread to join after the sessions have drained.
    pub fn spawn(self, shutdown: Arc<AtomicBool>) -> io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("custody-anchor".into())
            .spawn(move || {
                let interval = Duration::from_secs(self.config.custody.anchor_interval_secs);
                let mut wait = interval;
                let mut failures = 0u32;
                loop {
                    let until = Instant::now() + wait;
                    while Instant::now() < until && !shutdown.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    if shutdown.load(Ordering::Relaxed) {
                        break;
                    }
                    match self.anchor_now() {
                        Ok(_) => {
                            failures = 0;
                            wait = interval;
                        }
                        Err(_) => {
                            failures += 1;
                            wait = retry_after(failures, interval);
                            self.note_retry(wait);
                        }
                    }
                }
            })
    }

    /// The anchor at shutdown (after the sessions drained): the last
    /// entries of this run are stamped too.
    pub fn at_shutdown(&self) {
        if self.anchor_now().is_ok() {
            info!("custody: anchored at shutdown");
        }
    }

    /// Stamps the head if it is not stamped yet. `Ok(None)`: nothing new.
    pub fn anchor_now(&self) -> Result<Option<u64>, String> {
        let result = self.try_anchor();
        match &result {
            Ok(Some(seq)) => {
                info!("custody: entry {seq} of node {} anchored", self.node);
                let at = timestamp::rfc3339(SystemTime::now());
                self.update_state(|s| {
                    *s = TsaState {
                        anchored_at: Some(at),
                        ..TsaState::default()
                    }
                });
            }
            Ok(None) => {}
            Err(e) => {
                warn!("custody: cannot anchor: {e}");
                self.update_state(|s| s.error = Some(e.clone()));
            }
        }
        result
    }

    fn try_anchor(&self) -> Result<Option<u64>, String> {
        let Some((seq, hash)) = custody::head(&self.dir).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let anchors_dir = self.dir.join(custody::ANCHORS_DIR);
        let last = anchors(&anchors_dir).map_err(|e| e.to_string())?;
        if last.last().is_some_and(|(s, _)| *s >= seq) {
            return Ok(None);
        }
        let digest: [u8; 32] = hex_bytes(&hash).ok_or("the head hash is not hex")?;
        let response = self.stamp(&digest)?;
        let name = format!("{seq:012}.tsr");
        durable::create_private_dir(&anchors_dir).map_err(|e| e.to_string())?;
        durable::replace_file(&anchors_dir, &name, &response)
            .map_err(|e| format!("{}: {e}", anchors_dir.display()))?;
        if let Some(copy) = &self.config.custody.anchor_copy_dir {
            let to = copy.join(&self.node);
            let name = format!(
                "{seq:012}-{}.tsr",
                timestamp::unix_micros(SystemTime::now())
            );
            durable::create_private_dir(copy)
                .and_then(|()| durable::create_private_dir(&to))
                .and_then(|()| durable::replace_file(&to, &name, &response))
                .map_err(|e| format!("the copy in {}: {e}", to.display()))?;
        }
        Ok(Some(seq))
    }

    /// One exchange with the TSA, the token checked before it is kept.
    fn stamp(&self, digest: &[u8; 32]) -> Result<Vec<u8>, String> {
        let endpoint = Endpoint::new(
            "custody.tsa.url",
            &self.tsa.url,
            self.tsa.ca_file.as_deref(),
            Payload::Signed,
            Duration::from_secs(self.tsa.timeout_secs),
            // Its own flag: the anchor at shutdown runs after the stop.
            Arc::new(AtomicBool::new(false)),
        )
        .map_err(|e| e.to_string())?;
        let (request, _nonce) = tsa::request(digest);
        let response = http::exchange(
            &endpoint,
            "POST",
            &endpoint.url,
            &[("Content-Type", "application/timestamp-query")],
            &request,
        )
        .map_err(|e| e.to_string())?;
        let what = format!("custody.tsa.url {}", endpoint.url.authority());
        if response.status != 200 {
            return Err(format!(
                "{what}: HTTP {}: {}",
                response.status,
                response.body_excerpt()
            ));
        }
        let ca = self
            .tsa
            .ca_file
            .as_ref()
            .map(fs::read)
            .transpose()
            .map_err(|e| format!("custody.tsa.ca_file: {e}"))?
            .unwrap_or_default();
        let token = tsa::token_of_response(&response.body).map_err(|e| format!("{what}: {e}"))?;
        let stamp = tsa::check_token(token, &ca).map_err(|e| format!("{what}: {e}"))?;
        if stamp.digest != digest {
            return Err(format!("{what}: the token stamps another hash"));
        }
        Ok(response.body)
    }

    fn note_retry(&self, wait: Duration) {
        let at = timestamp::rfc3339(SystemTime::now() + wait);
        self.update_state(|s| s.retry_at = Some(at));
    }

    /// Reads the state once, changes it, and writes it only if it changed:
    /// no write per look on an SD card.
    fn update_state(&self, change: impl FnOnce(&mut TsaState)) {
        let path = self.dir.join(STATE_FILE);
        let before: TsaState = durable::read_json(&path);
        let mut after = before.clone();
        change(&mut after);
        if after != before
            && let Err(e) = durable::write_json(&self.dir, STATE_FILE, &after)
        {
            warn!("custody: {e}");
        }
    }
}

/// The wait after `failures` failures in a row: a minute, doubling, never
/// longer than the interval.
fn retry_after(failures: u32, interval: Duration) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(interval)
}

/// 64 hex digits as 32 bytes.
pub fn hex_bytes(hex: &str) -> Option<[u8; 32]> {
    crate::crypto::unhex(hex)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_tsa_is_retried_after_a_minute_doubling_up_to_the_interval() {
        let hour = Duration::from_secs(3600);
        let waits: Vec<u64> = (1..=8).map(|n| retry_after(n, hour).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(retry_after(1000, hour), hour);
    }

    #[test]
    fn hex_bytes_reads_exactly_64_hex_digits() {
        assert_eq!(hex_bytes(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(hex_bytes("ab"), None);
        assert_eq!(hex_bytes(&"zz".repeat(32)), None);
    }
}
