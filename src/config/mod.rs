//! `gateway.json`: the model, its defaults and validation.
//!
//! The file is read by serde (`deny_unknown_fields` everywhere), and
//! `serde_path_to_error` names the key of every error, list entries included
//! (`smtp.listen[1]: "localhost:25" is not an address:port …`). Each value
//! with a rule of its own (a range, a host name, an address) is checked by a
//! small `deserialize_with` function that words the error the way an
//! administrator reads it.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crypto::{KdfParams, MEMLIMIT_MIN, OPSLIMIT_MIN};
use crate::net::cidr::Cidr;
use crate::proxy::target::TargetPattern;
use crate::store::flush::FlushPolicy;

mod alerts;
mod certificates;
mod checks;
mod custody;
mod listeners;

pub use alerts::{AlertsConfig, MetricsConfig, RelayTls, Smarthost};
pub use certificates::{
    AcmeConfig, ChallengeChoice, LETS_ENCRYPT, LETS_ENCRYPT_STAGING, MtaStsConfig, StsMode,
};
use checks::*;
pub use custody::{CustodyConfig, TsaConfig};

/// The default configuration file name, looked up in the working directory.
pub const DEFAULT_FILE: &str = "gateway.json";
/// Where an installed gateway keeps its configuration.
pub const INSTALLED_FILE: &str = "/etc/sealpost/gateway.json";
/// The environment variable that names the configuration file.
pub const ENV_VAR: &str = "SEALPOST_CONFIG";

/// Which configuration file to use, in the order Postfix and Dovecot use:
/// `-c FILE` if given, else `$SEALPOST_CONFIG` if set, else
/// `/etc/sealpost/gateway.json` if it exists (an installed system), else
/// `./gateway.json` (a checkout). So a command run on an installed system
/// never picks up some other `gateway.json` lying in the current
/// directory (a checkout, a standby's files). With neither file present it
/// is `./gateway.json`, so the error names the file a newcomer expects.
pub fn locate(flag: Option<&str>, env: Option<&str>, exists: impl Fn(&Path) -> bool) -> PathBuf {
    if let Some(file) = flag.or(env.filter(|v| !v.is_empty())) {
        return PathBuf::from(file);
    }
    let local = PathBuf::from(DEFAULT_FILE);
    let installed = PathBuf::from(INSTALLED_FILE);
    if exists(&installed) { installed } else { local }
}

/// A configuration that could not be loaded, with the file and key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// The dotted key path, empty for the whole file.
    pub key: String,
    /// What is wrong and, where it helps, what is expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The whole gateway configuration, with defaults filled in and paths resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name used in greetings, `Received:` headers and the self-signed certificate.
    #[serde(deserialize_with = "dns_name")]
    pub hostname: String,
    /// Domain of mailbox addresses (`<id>@<mailbox_domain>`).
    #[serde(deserialize_with = "dns_name")]
    pub mailbox_domain: String,
    /// Where mailboxes and the generated certificate live (absolute after loading).
    #[serde(deserialize_with = "path")]
    pub data_dir: PathBuf,
    /// Certificate and key files; both absent means a generated self-signed one.
    pub tls: TlsFiles,
    /// The journal SMTP receiver.
    pub smtp: SmtpConfig,
    /// The POP3 server.
    #[serde(default = "Listeners::pop3")]
    pub pop3: Listeners,
    /// The recording SMTP proxy.
    pub smtp_proxy: SmtpProxyConfig,
    /// The recording POP3 proxy.
    pub pop3_proxy: Pop3ProxyConfig,
    /// Upstream rules shared by both proxies.
    pub proxy: ProxyConfig,
    /// Connection, time and login limits.
    pub limits: Limits,
    /// Argon2id cost for newly wrapped keys.
    pub kdf: KdfConfig,
    /// The HTTPS management console.
    pub console: ConsoleConfig,
    /// Where `serve` listens for `sealpost lockouts` (a Unix socket); `None`
    /// turns it off. Absent means `<data_dir>/control.sock`.
    #[serde(deserialize_with = "optional_path")]
    pub control_socket: Option<PathBuf>,
    /// Load balancers whose connections start with a PROXY protocol header
    /// (HAProxy's `send-proxy` / `send-proxy-v2`) naming the real client;
    /// named as Dovecot names it. Connections from anywhere else must not
    /// carry one.
    #[serde(deserialize_with = "parsed_list")]
    pub haproxy_trusted_networks: Vec<Cidr>,
    /// This gateway's name among several sharing one data directory
    /// (letters, digits, hyphens). `None`: the only gateway on it.
    #[serde(deserialize_with = "optional_node")]
    pub node: Option<String>,
    /// How writes are made durable: `grouped` (one flush of the file system
    /// for every delivery waiting, per file where that cannot be trusted),
    /// or `per_file`, for a data directory on a disk shared with heavy
    /// unrelated writers whose data a file-system flush would write too.
    pub flush: FlushPolicy,
    /// Certificates from an ACME certificate authority; `None` turns it off.
    pub acme: Option<AcmeConfig>,
    /// The MTA-STS policy served over HTTPS (and the TLS-ALPN-01 listener).
    pub mta_sts: MtaStsConfig,
    /// Alerts by email; `None` turns them off.
    pub alerts: Option<AlertsConfig>,
    /// The Prometheus exposition.
    pub metrics: MetricsConfig,
    /// The chain of custody: the log and its RFC 3161 anchors.
    pub custody: CustodyConfig,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            hostname: "localhost".into(),
            mailbox_domain: "localhost".into(),
            data_dir: PathBuf::from("data"),
            tls: TlsFiles::default(),
            smtp: SmtpConfig::default(),
            pop3: Listeners::pop3(),
            smtp_proxy: SmtpProxyConfig::default(),
            pop3_proxy: Pop3ProxyConfig::default(),
            proxy: ProxyConfig::default(),
            limits: Limits::default(),
            kdf: KdfConfig::default(),
            console: ConsoleConfig::default(),
            // An empty path is never read from a file (empty names are
            // refused): it stands for "absent" until data_dir is known.
            control_socket: Some(PathBuf::new()),
            haproxy_trusted_networks: Vec::new(),
            node: None,
            flush: FlushPolicy::Grouped,
            acme: None,
            mta_sts: MtaStsConfig::default(),
            alerts: None,
            metrics: MetricsConfig::default(),
            custody: CustodyConfig::default(),
        }
    }
}

/// Certificate and private key in PEM.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    #[serde(deserialize_with = "optional_path")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(deserialize_with = "optional_path")]
    pub key_file: Option<PathBuf>,
}

/// Listening addresses of one service: `listen` offers STARTTLS/STLS,
/// `listen_tls` speaks TLS from the first byte.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    /// Plain listeners that upgrade with STARTTLS/STLS.
    #[serde(default = "pop3_listen", deserialize_with = "addrs")]
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners.
    #[serde(default = "pop3_listen_tls", deserialize_with = "addrs")]
    pub listen_tls: Vec<SocketAddr>,
}

fn addr_list(texts: &[&str]) -> Vec<SocketAddr> {
    texts.iter().filter_map(|t| t.parse().ok()).collect()
}
fn pop3_listen() -> Vec<SocketAddr> {
    addr_list(&["127.0.0.1:10110"])
}
fn pop3_listen_tls() -> Vec<SocketAddr> {
    addr_list(&["127.0.0.1:10995"])
}

impl Listeners {
    fn pop3() -> Listeners {
        Listeners {
            listen: pop3_listen(),
            listen_tls: pop3_listen_tls(),
        }
    }
}

/// The `smtp` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Plain listeners that upgrade with STARTTLS.
    #[serde(deserialize_with = "addrs")]
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners.
    #[serde(deserialize_with = "addrs")]
    pub listen_tls: Vec<SocketAddr>,
    /// Refuse MAIL before STARTTLS.
    #[serde(deserialize_with = "boolean")]
    pub require_tls: bool,
    /// Largest message accepted, in bytes (announced with SIZE).
    #[serde(deserialize_with = "number::<_, 1024, { 1 << 40 }>")]
    pub max_message_bytes: u64,
    /// Most recipients per transaction.
    #[serde(deserialize_with = "number::<_, 1, 100_000>")]
    pub max_recipients: u64,
    /// Clients allowed to connect; empty means everyone.
    #[serde(deserialize_with = "parsed_list")]
    pub allowed_clients: Vec<Cidr>,
}

impl Default for SmtpConfig {
    fn default() -> SmtpConfig {
        SmtpConfig {
            listen: addr_list(&["127.0.0.1:10025"]),
            listen_tls: addr_list(&["127.0.0.1:10465"]),
            require_tls: true,
            max_message_bytes: 209_715_200,
            max_recipients: 100,
            allowed_clients: Vec::new(),
        }
    }
}

impl SmtpConfig {
    /// The listener pair of this section.
    pub fn listeners(&self) -> Listeners {
        Listeners {
            listen: self.listen.clone(),
            listen_tls: self.listen_tls.clone(),
        }
    }
}

/// The `smtp_proxy` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpProxyConfig {
    /// Plain listeners that upgrade with STARTTLS (like port 587).
    #[serde(deserialize_with = "addrs")]
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners (like port 465).
    #[serde(deserialize_with = "addrs")]
    pub listen_tls: Vec<SocketAddr>,
    /// Largest message a client may send through the proxy, in bytes.
    #[serde(deserialize_with = "number::<_, 1024, { 1 << 40 }>")]
    pub max_message_bytes: u64,
    /// Most recipients per message.
    #[serde(deserialize_with = "number::<_, 1, 100_000>")]
    pub max_recipients: u64,
}

impl Default for SmtpProxyConfig {
    fn default() -> SmtpProxyConfig {
        SmtpProxyConfig {
            listen: addr_list(&["127.0.0.1:20587"]),
            listen_tls: addr_list(&["127.0.0.1:20465"]),
            max_message_bytes: 104_857_600,
            max_recipients: 100,
        }
    }
}

impl SmtpProxyConfig {
    /// The listener pair of this section.
    pub fn listeners(&self) -> Listeners {
        Listeners {
            listen: self.listen.clone(),
            listen_tls: self.listen_tls.clone(),
        }
    }
}

/// The `pop3_proxy` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pop3ProxyConfig {
    /// Plain listeners that upgrade with STLS (like port 110).
    #[serde(deserialize_with = "addrs")]
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners (like port 995).
    #[serde(deserialize_with = "addrs")]
    pub listen_tls: Vec<SocketAddr>,
    /// Largest message the proxy retrieves (and archives) from an upstream.
    #[serde(deserialize_with = "number::<_, 1024, { 1 << 40 }>")]
    pub max_message_bytes: u64,
}

impl Default for Pop3ProxyConfig {
    fn default() -> Pop3ProxyConfig {
        Pop3ProxyConfig {
            listen: addr_list(&["127.0.0.1:20110"]),
            listen_tls: addr_list(&["127.0.0.1:20995"]),
            max_message_bytes: 104_857_600,
        }
    }
}

impl Pop3ProxyConfig {
    /// The listener pair of this section.
    pub fn listeners(&self) -> Listeners {
        Listeners {
            listen: self.listen.clone(),
            listen_tls: self.listen_tls.clone(),
        }
    }
}

/// The `console` section: the web console, HTTPS only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// HTTPS listeners; an empty list turns the console off.
    #[serde(deserialize_with = "addrs")]
    pub listen: Vec<SocketAddr>,
    /// A console session ends after this long without a request.
    #[serde(deserialize_with = "number::<_, 1, 86_400>")]
    pub session_idle_secs: u64,
}

impl Default for ConsoleConfig {
    fn default() -> ConsoleConfig {
        ConsoleConfig {
            listen: addr_list(&["127.0.0.1:8450"]),
            session_idle_secs: 900,
        }
    }
}

/// The `proxy` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Host patterns (`mail.example.com`, `*.example.com`, optional `:port`) a login may name.
    #[serde(deserialize_with = "parsed_list")]
    pub allowed_targets: Vec<TargetPattern>,
    /// Allow upstream addresses in loopback, private and other internal ranges.
    #[serde(deserialize_with = "boolean")]
    pub allow_private_targets: bool,
    /// Extra PEM CA certificates trusted for upstream servers.
    #[serde(deserialize_with = "optional_path")]
    pub extra_ca_file: Option<PathBuf>,
    /// Seconds allowed for connecting to the upstream and completing TLS.
    #[serde(deserialize_with = "number::<_, 1, 3600>")]
    pub connect_timeout_secs: u64,
    /// Upstream ports spoken with implicit TLS; any other port must offer
    /// STARTTLS (SMTP) or STLS (POP3).
    #[serde(deserialize_with = "ports")]
    pub implicit_tls_ports: Vec<u16>,
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig {
            allowed_targets: Vec::new(),
            allow_private_targets: false,
            extra_ca_file: None,
            connect_timeout_secs: 30,
            implicit_tls_ports: vec![465, 995],
        }
    }
}

/// The `limits` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections over all listeners.
    #[serde(deserialize_with = "number::<_, 1, 100_000>")]
    pub max_connections: u64,
    /// Open connections from one client address.
    #[serde(deserialize_with = "number::<_, 1, 100_000>")]
    pub max_connections_per_ip: u64,
    /// Seconds a client has for a whole command line.
    #[serde(deserialize_with = "number::<_, 1, 86_400>")]
    pub command_timeout_secs: u64,
    /// Seconds a session may wait for the next piece of message data.
    #[serde(deserialize_with = "number::<_, 1, 86_400>")]
    pub data_timeout_secs: u64,
    /// A message must arrive at this average rate (bytes per second) once
    /// `data_timeout_secs` have passed.
    #[serde(deserialize_with = "number::<_, 0, { 1 << 30 }>")]
    pub min_data_bytes_per_sec: u64,
    /// Seconds allowed for a whole TLS handshake.
    #[serde(deserialize_with = "number::<_, 1, 3600>")]
    pub tls_handshake_timeout_secs: u64,
    /// When this percentage of `max_connections` is open, idle clients get
    /// `overload_timeout_secs` instead of the usual timeouts.
    #[serde(deserialize_with = "number::<_, 1, 100>")]
    pub overload_percent: u64,
    /// The idle timeout while overloaded.
    #[serde(deserialize_with = "number::<_, 1, 86_400>")]
    pub overload_timeout_secs: u64,
    /// Errors after which a session is closed (`421` / `-ERR`).
    #[serde(deserialize_with = "number::<_, 1, 1_000_000>")]
    pub hard_error_limit: u64,
    /// Errors after which every further error reply is delayed.
    #[serde(deserialize_with = "number::<_, 0, 1_000_000>")]
    pub soft_error_limit: u64,
    /// The delay per error beyond `soft_error_limit`, growing with each.
    #[serde(deserialize_with = "number::<_, 0, 60_000>")]
    pub error_delay_ms: u64,
    /// Longest command line in bytes, CRLF included.
    #[serde(deserialize_with = "number::<_, 512, { 1 << 20 }>")]
    pub max_line_bytes: u64,
    /// Failed logins before an address or mailbox is locked out.
    #[serde(deserialize_with = "number::<_, 1, 1_000_000>")]
    pub max_failed_logins: u64,
    /// Seconds a lockout lasts.
    #[serde(deserialize_with = "number::<_, 0, { 86_400 * 30 }>")]
    pub lockout_secs: u64,
    /// Milliseconds every failed login waits before its answer.
    #[serde(deserialize_with = "number::<_, 0, 60_000>")]
    pub failed_login_delay_ms: u64,
    /// Client addresses never locked out as addresses (the mailbox lockout still applies).
    #[serde(deserialize_with = "parsed_list")]
    pub lockout_exempt_clients: Vec<Cidr>,
    /// Key derivations allowed to run at once.
    #[serde(deserialize_with = "number::<_, 1, 256>")]
    pub max_concurrent_kdf: u64,
    /// Seconds open sessions get to finish after SIGTERM.
    #[serde(deserialize_with = "number::<_, 0, 3600>")]
    pub shutdown_grace_secs: u64,
    /// Free bytes kept on the data directory's file system: below them,
    /// new mail gets a temporary error (`store::reserve`); 0 turns it off.
    #[serde(deserialize_with = "number::<_, 0, 1_099_511_627_776>")]
    pub min_free_bytes: u64,
    /// The same as a percentage of the file system; the larger applies.
    #[serde(deserialize_with = "number::<_, 0, 50>")]
    pub min_free_percent: u64,
    /// Bytes a mailbox may hold waiting for the archiver before its
    /// deliveries get `452 4.2.2` (several tenants on one gateway); 0: no limit.
    #[serde(deserialize_with = "number::<_, 0, 1_099_511_627_776>")]
    pub max_pending_bytes_per_mailbox: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 256,
            max_connections_per_ip: 32,
            command_timeout_secs: 300,
            data_timeout_secs: 180,
            min_data_bytes_per_sec: 500,
            tls_handshake_timeout_secs: 30,
            overload_percent: 80,
            overload_timeout_secs: 10,
            hard_error_limit: 20,
            soft_error_limit: 10,
            error_delay_ms: 1000,
            max_line_bytes: 4096,
            max_failed_logins: 5,
            lockout_secs: 300,
            failed_login_delay_ms: 2000,
            lockout_exempt_clients: Vec::new(),
            max_concurrent_kdf: 2,
            shutdown_grace_secs: 30,
            // 256 MiB: a few hundred journal reports of headroom on a 16 GB
            // SD card, and room for the system's own writes (logs).
            min_free_bytes: 256 * 1024 * 1024,
            min_free_percent: 0,
            max_pending_bytes_per_mailbox: 0,
        }
    }
}

/// The `kdf` section.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KdfConfig {
    /// Argon2id passes.
    #[serde(deserialize_with = "number::<_, OPSLIMIT_MIN, 1000>")]
    pub opslimit: u64,
    /// Argon2id memory in bytes.
    #[serde(deserialize_with = "number::<_, MEMLIMIT_MIN, { 1 << 32 }>")]
    pub memlimit_bytes: u64,
}

impl Default for KdfConfig {
    fn default() -> KdfConfig {
        KdfConfig {
            opslimit: 3,
            memlimit_bytes: 67_108_864,
        }
    }
}

impl KdfConfig {
    /// The parameters as the crypto module takes them.
    pub fn params(&self) -> KdfParams {
        KdfParams {
            opslimit: self.opslimit,
            memlimit: self.memlimit_bytes,
        }
    }
}

/// The sections: each must be a JSON object when given.
const SECTIONS: [&str; 10] = [
    "tls",
    "mta_sts",
    "console",
    "smtp",
    "pop3",
    "smtp_proxy",
    "pop3_proxy",
    "proxy",
    "limits",
    "kdf",
];

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::path::absolute(&base).unwrap_or(base);
        Config::parse(&text, file, &base)
    }

    /// Parses configuration text; relative paths are resolved against `base`.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Config, ConfigError> {
        let error = |key: String, message: String| ConfigError {
            file: file.to_path_buf(),
            key,
            message,
        };
        let value: Value = serde_json::from_str(text)
            .map_err(|e| error(String::new(), format!("not valid JSON: {e}")))?;
        let Value::Object(top) = &value else {
            return Err(error(
                String::new(),
                "the top level must be a JSON object".into(),
            ));
        };
        // serde would take a list for a section too (as a tuple of its fields).
        for section in SECTIONS {
            if let Some(v) = top.get(section).filter(|v| !v.is_object()) {
                return Err(error(
                    section.into(),
                    format!("expected an object, found {}", kind(v)),
                ));
            }
        }
        let mut config: Config = serde_path_to_error::deserialize(value)
            .map_err(|e| error(e.path().to_string(), plain_words(&e.inner().to_string())))?;
        config.resolve_paths(base);
        if config.tls.cert_file.is_some() != config.tls.key_file.is_some() {
            return Err(error(
                "tls.cert_file".into(),
                "cert_file and key_file must be given together (or both null for a generated certificate)".into(),
            ));
        }
        config.check_listeners_unique(file)?;
        config
            .check_acme()
            .and_then(|()| config.alerts.as_ref().map_or(Ok(()), AlertsConfig::check))
            .and_then(|()| config.custody.check())
            .map_err(|(key, message)| error(key, message))?;
        Ok(config)
    }

    /// Relative paths are relative to the configuration file.
    fn resolve_paths(&mut self, base: &Path) {
        self.data_dir = base.join(&self.data_dir);
        if self
            .control_socket
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            let name = match &self.node {
                Some(node) => format!("control-{node}.sock"),
                None => "control.sock".into(),
            };
            self.control_socket = Some(self.data_dir.join(name));
        }
        for path in [
            &mut self.tls.cert_file,
            &mut self.tls.key_file,
            &mut self.proxy.extra_ca_file,
            &mut self.control_socket,
        ]
        .into_iter()
        .flatten()
        {
            *path = base.join(&*path);
        }
        if let Some(ca) = self.acme.as_mut().and_then(|a| a.ca_file.as_mut()) {
            *ca = base.join(&*ca);
        }
        if let Some(alerts) = self.alerts.as_mut() {
            alerts.resolve_paths(base);
        }
        self.custody.resolve_paths(base);
    }

    /// The effective configuration as pretty JSON, in the file's own key names.
    pub fn to_pretty_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests;
