//! Certificates from an ACME certificate authority (RFC 8555), ordered,
//! renewed and served by the gateway itself.
//!
//! Files, all in `<data_dir>/tls/` (0600), so that `sealpost backup` copies
//! them with the rest of that directory's top level:
//! - `acme-account.pem`: the account key;
//! - `acme-key.pem`: the certificate key, kept across renewals so that a
//!   published TLSA record stays valid; `acme-next-key.pem` is the next
//!   one during a rollover (`sealpost cert next-key`);
//! - `acme.pem`: the issued chain and its key in one file, written in one
//!   durable replace, so that a reader never sees a chain without its key;
//! - `acme-state.json`: the last attempt, the last error, the back-off and
//!   the orders of the last day, for `status` and the console;
//! - `acme-renew-now`: asks every node's renewer for an order now.
//!
//! The renewer runs on every node: it orders under `.acme.lock` (only one
//! node at a time), and each node loads a new `acme.pem` it did not write
//! itself at its next look (3 s while another node orders, else at most
//! 30 s).

pub mod challenge;
pub mod client;
pub mod jws;
pub mod listener;
pub mod mta_sts;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{info, warn};
use serde::{Deserialize, Serialize};

use crate::config::{ChallengeChoice, Config};
use crate::outbound::{Endpoint, Payload};
use crate::store::durable;
use challenge::Challenges;
use client::ChallengeKind;
use jws::AccountKey;

/// The served chain and its key.
pub const CERT_FILE: &str = "acme.pem";
const KEY_FILE: &str = "acme-key.pem";
/// The next certificate key, during a key rollover.
pub const NEXT_KEY_FILE: &str = "acme-next-key.pem";
const ACCOUNT_FILE: &str = "acme-account.pem";
const STATE_FILE: &str = "acme-state.json";
const RENEW_NOW_FILE: &str = "acme-renew-now";
const LOCK_FILE: &str = ".acme.lock";
/// The longest wait between two attempts after failures (12 hours).
pub const MAX_BACKOFF_SECS: u64 = 12 * 3600;
/// Orders per name per day (Let's Encrypt allows 5 duplicate certificates a week, and 300 new orders per 3 hours).
pub const MAX_ORDERS_PER_DAY: usize = 5;
/// How often the renewer looks at the certificate and the state.
const TICK: Duration = Duration::from_secs(30);
/// How soon it looks again while another node is ordering.
const OTHERS_TICK_SECS: i64 = 3;

fn tls_dir(config: &Config) -> PathBuf {
    config.data_dir.join("tls")
}

/// `<data_dir>/tls/acme.pem`.
pub fn cert_path(config: &Config) -> PathBuf {
    tls_dir(config).join(CERT_FILE)
}

/// The certificate key's file, and the next key's.
pub fn key_paths(config: &Config) -> (PathBuf, PathBuf) {
    (
        tls_dir(config).join(KEY_FILE),
        tls_dir(config).join(NEXT_KEY_FILE),
    )
}

/// The names to order: `acme.names`, else the hostname plus
/// `mta-sts.<mailbox_domain>` when the policy is served.
pub fn names(config: &Config) -> Vec<String> {
    let Some(acme) = &config.acme else {
        return Vec::new();
    };
    if !acme.names.is_empty() {
        return acme.names.clone();
    }
    let mut names = vec![config.hostname.clone()];
    if config.mta_sts.serves_policy() {
        let sts = format!("mta-sts.{}", config.mailbox_domain);
        if !names.contains(&sts) {
            names.push(sts);
        }
    }
    names
}

/// Which challenge proves the names.
pub fn challenge_kind(config: &Config) -> Option<ChallengeKind> {
    let acme = config.acme.as_ref()?;
    Some(match acme.challenge {
        ChallengeChoice::Http01 => ChallengeKind::Http01,
        ChallengeChoice::TlsAlpn01 => ChallengeKind::TlsAlpn01,
        ChallengeChoice::Auto if !acme.http_listen.is_empty() => ChallengeKind::Http01,
        ChallengeChoice::Auto => ChallengeKind::TlsAlpn01,
    })
}

/// What the renewer did last, as `status` and the console show it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The names of the last order.
    pub names: Vec<String>,
    /// The challenge of the last order.
    pub challenge: Option<String>,
    /// Unix time of the last attempt.
    pub last_attempt: Option<i64>,
    /// Unix time of the last certificate issued.
    pub last_success: Option<i64>,
    /// Why the last attempt failed; `None` after a success.
    pub last_error: Option<String>,
    /// Failures in a row.
    pub failures: u32,
    /// Unix time before which no new attempt is made (the back-off).
    pub next_attempt: Option<i64>,
    /// Unix times of the orders of the last day.
    pub orders: Vec<i64>,
}

/// The renewer's state (default when there is none yet).
pub fn state(config: &Config) -> State {
    durable::read_json(&tls_dir(config).join(STATE_FILE))
}

fn save_state(config: &Config, state: &State) -> Result<(), String> {
    durable::write_json(&tls_dir(config), STATE_FILE, state)
}

/// Asks every node's renewer for an order at its next look (`sealpost cert
/// renew`, the console's "Renew now"); `rotate`: with the next key.
pub fn request_renewal(config: &Config, rotate: bool) -> Result<(), String> {
    let dir = tls_dir(config);
    durable::create_private_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let what: &[u8] = if rotate { b"rotate-key\n" } else { b"renew\n" };
    durable::replace_file(&dir, RENEW_NOW_FILE, what)
        .map_err(|e| format!("{}: {e}", dir.join(RENEW_NOW_FILE).display()))
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The wait after `failures` failures in a row: `first`, doubled each time,
/// at most [`MAX_BACKOFF_SECS`].
pub fn backoff(first: u64, failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(20);
    first.saturating_mul(1 << doublings).min(MAX_BACKOFF_SECS)
}

/// The served ACME certificate: (not before, not after, names, SHA-256).
pub fn served(config: &Config) -> Option<(i64, i64, Vec<String>, String)> {
    let chain = crate::net::tls::load_certs(&cert_path(config)).ok()?;
    let der = chain[0].as_ref();
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
        names,
        crate::net::tls::fingerprint(der),
    ))
}

/// When a certificate valid from `from` to `until` falls due: a third of its
/// lifetime left (Let's Encrypt's advice; RFC 9773's renewal information
/// would refine it, and Pebble 2.4 has none).
pub fn renewal_time(from: i64, until: i64) -> i64 {
    until - (until - from).max(1) / 3
}

/// Why the certificate must be ordered now, if it must.
fn why_due(config: &Config, asked: bool) -> Option<String> {
    if asked {
        return Some("a renewal was asked for".into());
    }
    let Some((from, until, served_names, _)) = served(config) else {
        return Some("there is no ACME certificate yet".into());
    };
    let wanted = names(config);
    if wanted.iter().any(|n| !served_names.contains(n)) {
        return Some(format!("its names changed to {}", wanted.join(", ")));
    }
    if now() >= renewal_time(from, until) {
        return Some(format!(
            "a third of its lifetime is left (it ends {})",
            jiff::Timestamp::from_second(until)
                .map(|t| t.to_string())
                .unwrap_or_default()
        ));
    }
    None
}

/// Runs the renewer on every node until the gateway stops.
pub struct Renewer {
    config: Config,
    endpoint: Endpoint,
    challenges: Arc<Challenges>,
    /// Serves a new certificate file on every listener.
    on_new: Box<dyn Fn(&Path) + Send>,
    shutdown: Arc<AtomicBool>,
    /// The SHA-256 of the ACME certificate this node serves.
    loaded: std::cell::RefCell<Option<String>>,
    /// When the renewal request this node last looked at was made.
    asked_seen: std::cell::Cell<Option<std::time::SystemTime>>,
    /// Another node held the lock at the last look: it is ordering, and
    /// its certificate is looked for again soon.
    others_ordering: std::cell::Cell<bool>,
}

impl Renewer {
    /// A renewer for `config` (which has an `acme` section).
    pub fn new(
        config: &Config,
        challenges: Arc<Challenges>,
        shutdown: Arc<AtomicBool>,
        on_new: Box<dyn Fn(&Path) + Send>,
    ) -> Result<Renewer, String> {
        let acme = config.acme.as_ref().ok_or("ACME is off")?;
        let endpoint = Endpoint::new(
            "acme.directory",
            &acme.directory,
            acme.ca_file.as_deref(),
            Payload::Unsigned,
            Duration::from_secs(acme.timeout_secs),
            Arc::clone(&shutdown),
        )
        .map_err(|e| e.to_string())?;
        Ok(Renewer {
            config: config.clone(),
            endpoint,
            challenges,
            on_new,
            shutdown,
            loaded: std::cell::RefCell::new(served(config).map(|s| s.3)),
            asked_seen: std::cell::Cell::new(None),
            others_ordering: std::cell::Cell::new(false),
        })
    }

    /// Starts the renewer's thread.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("acme".into())
            .spawn(move || self.run())
    }

    fn run(self) {
        let mut quiet_until = Instant::now();
        while !self.shutdown.load(Ordering::Relaxed) {
            if crate::cert::is_installed(&self.config) {
                if Instant::now() >= quiet_until {
                    info!("ACME is off while a certificate installed from the console is served");
                    quiet_until = Instant::now() + Duration::from_secs(24 * 3600);
                }
            } else {
                self.asked_seen.set(self.asked_at());
                self.look();
                // Another node may have renewed: serve its certificate.
                let now_served = served(&self.config).map(|s| s.3);
                if now_served.is_some() && now_served != *self.loaded.borrow() {
                    (self.on_new)(&cert_path(&self.config));
                    *self.loaded.borrow_mut() = now_served;
                }
            }
            let until = Instant::now() + self.next_look();
            let mut ticks = 0u32;
            while Instant::now() < until && !self.shutdown.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                ticks += 1;
                // A new request (`cert renew`, "Renew now") is looked at
                // within a second; one this node already looked at (held
                // back by the daily cap or another node's lock) waits.
                if ticks.is_multiple_of(5)
                    && self
                        .asked_at()
                        .is_some_and(|t| Some(t) != self.asked_seen.get())
                {
                    break;
                }
            }
        }
    }

    /// When the pending renewal request was made, if there is one.
    fn asked_at(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(tls_dir(&self.config).join(RENEW_NOW_FILE))
            .and_then(|m| m.modified())
            .ok()
    }

    /// How long until the next look: [`TICK`], or less when a renewal or
    /// a retry falls due sooner (a short-lived certificate, a short
    /// back-off).
    fn next_look(&self) -> Duration {
        let t = now();
        let mut at = t + TICK.as_secs() as i64;
        if self.others_ordering.get() {
            at = at.min(t + OTHERS_TICK_SECS);
        }
        if let Some((from, until, _, _)) = served(&self.config) {
            at = at.min(renewal_time(from, until));
        }
        if let Some(next) = state(&self.config).next_attempt {
            at = at.min(next);
        }
        Duration::from_secs(at.saturating_sub(t).clamp(1, TICK.as_secs() as i64) as u64)
    }

    /// Orders if due, allowed by the back-off and the daily cap, and no
    /// other node is ordering.
    fn look(&self) {
        self.others_ordering.set(false);
        let dir = tls_dir(&self.config);
        let asked = std::fs::read_to_string(dir.join(RENEW_NOW_FILE)).ok();
        let Some(why) = why_due(&self.config, asked.is_some()) else {
            return;
        };
        let mut state = state(&self.config);
        let t = now();
        if asked.is_none() && state.next_attempt.is_some_and(|next| t < next) {
            return;
        }
        state.orders.retain(|o| t - o < 86_400);
        if state.orders.len() >= MAX_ORDERS_PER_DAY {
            // Said once per request, and once when a due renewal meets it.
            if asked.is_some() || state.next_attempt.is_none_or(|next| t >= next) {
                let _ = std::fs::remove_file(dir.join(RENEW_NOW_FILE));
                state.next_attempt = state.orders.iter().min().map(|o| o + 86_400);
                warn!(
                    "ACME: {MAX_ORDERS_PER_DAY} orders in the last 24 hours: the next waits until {} (the certificate authority's rate limits)",
                    jiff::Timestamp::from_second(state.next_attempt.unwrap_or(t))
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                );
                let _ = save_state(&self.config, &state);
            }
            return;
        }
        if durable::create_private_dir(&dir).is_err() {
            return;
        }
        let Ok(lock) = durable::open_lock_file(&dir.join(LOCK_FILE)) else {
            return;
        };
        if !durable::try_lock_exclusive(&lock).unwrap_or(false) {
            self.others_ordering.set(true);
            return;
        }
        // Under the lock, again: another node may have just renewed.
        let asked = std::fs::read_to_string(dir.join(RENEW_NOW_FILE)).ok();
        let Some(why) = why_due(&self.config, asked.is_some()).map(|_| why) else {
            return;
        };
        let rotate = asked.as_deref().is_some_and(|a| a.trim() == "rotate-key");
        self.attempt(&why, rotate, state);
        drop(lock);
    }

    fn attempt(&self, why: &str, rotate: bool, mut state: State) {
        let names = names(&self.config);
        let kind = challenge_kind(&self.config).unwrap_or(ChallengeKind::Http01);
        info!(
            "ACME: ordering a certificate for {} from {} ({why}), proving it by {}",
            names.join(", "),
            self.endpoint.url.authority(),
            kind.name()
        );
        let t = now();
        state.orders.push(t);
        state.last_attempt = Some(t);
        state.names = names.clone();
        state.challenge = Some(kind.name().into());
        let _ = save_state(&self.config, &state);
        match self.order(&names, kind, rotate) {
            Ok(fingerprint) => {
                info!(
                    "ACME: certificate for {} issued and served (SHA-256 {fingerprint})",
                    names.join(", ")
                );
                state.last_success = Some(now());
                state.last_error = None;
                state.failures = 0;
                state.next_attempt = None;
                let _ = std::fs::remove_file(tls_dir(&self.config).join(RENEW_NOW_FILE));
            }
            Err(e) => {
                state.failures += 1;
                let retry_secs = self.config.acme.as_ref().map_or(600, |a| a.retry_secs);
                let wait = backoff(retry_secs, state.failures);
                state.next_attempt = Some(now() + wait as i64);
                warn!(
                    "ACME: the order for {} failed ({} in a row), the current certificate stays; next try in {wait} s: {e}",
                    names.join(", "),
                    state.failures
                );
                state.last_error = Some(e);
                // Asked once: the back-off decides from now on.
                let _ = std::fs::remove_file(tls_dir(&self.config).join(RENEW_NOW_FILE));
            }
        }
        if let Err(e) = save_state(&self.config, &state) {
            warn!("ACME: cannot record its state: {e}");
        }
    }

    /// One whole order: keys, account, challenges, finalization, the
    /// checked chain written and served. Returns its SHA-256.
    fn order(&self, names: &[String], kind: ChallengeKind, rotate: bool) -> Result<String, String> {
        let dir = tls_dir(&self.config);
        let account_pem = key_file(&dir, ACCOUNT_FILE)?;
        let account = AccountKey::from_pem(&account_pem)
            .map_err(|e| format!("{}: {e}", dir.join(ACCOUNT_FILE).display()))?;
        let key_name = if rotate && dir.join(NEXT_KEY_FILE).exists() {
            NEXT_KEY_FILE
        } else {
            KEY_FILE
        };
        let key_pem = key_file(&dir, key_name)?;
        let key = rcgen::KeyPair::from_pem(&key_pem)
            .map_err(|e| format!("{}: {e}", dir.join(key_name).display()))?;
        let csr = rcgen::CertificateParams::new(names.to_vec())
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| format!("cannot make the certificate request: {e}"))?;
        let acme = self.config.acme.as_ref().ok_or("ACME is off")?;
        // What the CA said or did, named by the server it came from (the
        // transport's errors name it already).
        let from_ca = |e: crate::outbound::OutboundError| {
            if e.0.starts_with(self.endpoint.what) {
                e.0
            } else {
                format!(
                    "{} {}: {}",
                    self.endpoint.what,
                    self.endpoint.url.authority(),
                    e.0
                )
            }
        };
        let mut client = client::Client::open(&self.endpoint, &account).map_err(from_ca)?;
        client.account(acme.contact.as_deref()).map_err(from_ca)?;
        let chain = client
            .order(names, kind, &*self.challenges, csr.der())
            .map_err(from_ca)?;
        let fingerprint = self.install(&chain, &key_pem, names)?;
        if key_name == NEXT_KEY_FILE {
            std::fs::rename(dir.join(NEXT_KEY_FILE), dir.join(KEY_FILE))
                .and_then(|()| durable::sync_dir(&dir))
                .map_err(|e| format!("{}: {e}", dir.join(KEY_FILE).display()))?;
            info!("ACME: the next key is now the certificate key: remove the old TLSA record");
        }
        Ok(fingerprint)
    }

    /// Checks the chain against the key and the names, writes it with the
    /// key in one durable replace, and serves it.
    fn install(&self, chain_pem: &str, key_pem: &str, names: &[String]) -> Result<String, String> {
        let mut chain = Vec::new();
        for item in rustls_pki_types::pem::PemObject::pem_slice_iter(chain_pem.as_bytes()) {
            let cert: rustls_pki_types::CertificateDer<'static> =
                item.map_err(|e| format!("the certificate is not PEM: {e}"))?;
            chain.push(cert);
        }
        if chain.is_empty() {
            return Err("the ACME server sent no certificate".into());
        }
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(
            rcgen::KeyPair::from_pem(key_pem)
                .map_err(|e| e.to_string())?
                .serialize_der()
                .into(),
        );
        crate::net::tls::server_config_for(chain.clone(), key)
            .map_err(|e| format!("the issued certificate does not fit its key: {e}"))?;
        let mut text = chain_pem.trim_end().to_string();
        text.push('\n');
        text.push_str(key_pem);
        let dir = tls_dir(&self.config);
        durable::replace_file(&dir, CERT_FILE, text.as_bytes())
            .map_err(|e| format!("{}: {e}", dir.join(CERT_FILE).display()))?;
        let (_, _, got, fingerprint) =
            served(&self.config).ok_or("the written certificate cannot be read back")?;
        if let Some(missing) = names.iter().find(|n| !got.contains(n)) {
            return Err(format!("the issued certificate does not name {missing}"));
        }
        (self.on_new)(&cert_path(&self.config));
        *self.loaded.borrow_mut() = Some(fingerprint.clone());
        Ok(fingerprint)
    }
}

/// The PEM key in `dir/name`, generated (0600, durably) if there is none.
fn key_file(dir: &Path, name: &str) -> Result<String, String> {
    match std::fs::read_to_string(dir.join(name)) {
        Ok(pem) => Ok(pem),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pem = AccountKey::generate_pem()?;
            durable::create_private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            durable::replace_file(dir, name, pem.as_bytes())
                .map_err(|e| format!("{}: {e}", dir.join(name).display()))?;
            info!("ACME: generated {}", dir.join(name).display());
            Ok(pem)
        }
        Err(e) => Err(format!("{}: {e}", dir.join(name).display())),
    }
}

/// Makes the next certificate key for a rollover (if there is none), and
/// returns its PEM, for `sealpost dns` to print its TLSA record.
pub fn make_next_key(config: &Config) -> Result<String, String> {
    key_file(&tls_dir(config), NEXT_KEY_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_the_first_wait_up_to_twelve_hours() {
        assert_eq!(backoff(600, 1), 600);
        assert_eq!(backoff(600, 2), 1200);
        assert_eq!(backoff(600, 3), 2400);
        assert_eq!(backoff(600, 8), MAX_BACKOFF_SECS);
        assert_eq!(backoff(600, 1000), MAX_BACKOFF_SECS);
        assert_eq!(backoff(2, 3), 8);
    }

    #[test]
    fn names_default_to_the_hostname_and_the_policy_host() {
        let mut config = Config {
            hostname: "mx.example.org".into(),
            mailbox_domain: "archive.example.org".into(),
            ..Config::default()
        };
        assert!(names(&config).is_empty());
        config.acme = Some(crate::config::AcmeConfig::default());
        assert_eq!(names(&config), ["mx.example.org"]);
        config.mta_sts.listen = vec!["127.0.0.1:0".parse().unwrap()];
        assert_eq!(
            names(&config),
            ["mx.example.org", "mta-sts.archive.example.org"]
        );
        config.mta_sts.mode = crate::config::StsMode::Off;
        assert_eq!(names(&config), ["mx.example.org"]);
        assert_eq!(challenge_kind(&config), Some(ChallengeKind::TlsAlpn01));
    }
}
