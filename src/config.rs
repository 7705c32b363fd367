//! `gateway.json`: the model, its defaults and validation.
//!
//! The file is read as JSON and walked by hand rather than with derived
//! deserialisation, so that every error names the key it is about
//! (`smtp.max_recipients: expected a whole number from 1 to 100000`) and
//! unknown keys are refused wherever they appear.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::crypto::{KdfParams, MEMLIMIT_MIN, OPSLIMIT_MIN};
use crate::net::cidr::Cidr;
use crate::proxy::target::TargetPattern;

/// The default configuration file name, looked up in the working directory.
pub const DEFAULT_FILE: &str = "gateway.json";

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
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Name used in greetings, `Received:` headers and the self-signed certificate.
    pub hostname: String,
    /// Domain of mailbox addresses (`<id>@<mailbox_domain>`).
    pub mailbox_domain: String,
    /// Where mailboxes and the generated certificate live (absolute after loading).
    pub data_dir: PathBuf,
    /// Certificate and key files; both absent means a generated self-signed one.
    pub tls: TlsFiles,
    /// The journal SMTP receiver.
    pub smtp: SmtpConfig,
    /// The POP3 server.
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
    /// Where `serve` listens for `sealpost lockouts` (a Unix socket); `None` turns it off.
    pub control_socket: Option<PathBuf>,
}

/// Certificate and private key in PEM.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// Listening addresses of one service: `listen` offers STARTTLS/STLS,
/// `listen_tls` speaks TLS from the first byte.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Listeners {
    /// Plain listeners that upgrade with STARTTLS/STLS.
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners.
    pub listen_tls: Vec<SocketAddr>,
}

/// The `smtp` section.
#[derive(Debug, Clone, Serialize)]
pub struct SmtpConfig {
    /// Plain listeners that upgrade with STARTTLS.
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners.
    pub listen_tls: Vec<SocketAddr>,
    /// Refuse MAIL before STARTTLS.
    pub require_tls: bool,
    /// Largest message accepted, in bytes (announced with SIZE).
    pub max_message_bytes: u64,
    /// Most recipients per transaction.
    pub max_recipients: u64,
    /// Clients allowed to connect; empty means everyone.
    pub allowed_clients: Vec<Cidr>,
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
#[derive(Debug, Clone, Serialize)]
pub struct SmtpProxyConfig {
    /// Plain listeners that upgrade with STARTTLS (like port 587).
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners (like port 465).
    pub listen_tls: Vec<SocketAddr>,
    /// Largest message a client may send through the proxy, in bytes.
    pub max_message_bytes: u64,
    /// Most recipients per message.
    pub max_recipients: u64,
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
#[derive(Debug, Clone, Serialize)]
pub struct Pop3ProxyConfig {
    /// Plain listeners that upgrade with STLS (like port 110).
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners (like port 995).
    pub listen_tls: Vec<SocketAddr>,
    /// Largest message the proxy retrieves (and archives) from an upstream.
    pub max_message_bytes: u64,
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

/// The `proxy` section.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyConfig {
    /// Host patterns (`mail.example.com`, `*.example.com`, optional `:port`) a login may name.
    pub allowed_targets: Vec<TargetPattern>,
    /// Allow upstream addresses in loopback, private and other internal ranges.
    pub allow_private_targets: bool,
    /// Extra PEM CA certificates trusted for upstream servers.
    pub extra_ca_file: Option<PathBuf>,
    /// Seconds allowed for connecting to the upstream and completing TLS.
    pub connect_timeout_secs: u64,
    /// Upstream ports spoken with implicit TLS; any other port must offer
    /// STARTTLS (SMTP) or STLS (POP3).
    pub implicit_tls_ports: Vec<u16>,
}

/// The `limits` section.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Open connections over all listeners.
    pub max_connections: u64,
    /// Open connections from one client address.
    pub max_connections_per_ip: u64,
    /// Seconds a client has for a whole command line.
    pub command_timeout_secs: u64,
    /// Seconds a session may wait for the next piece of message data.
    pub data_timeout_secs: u64,
    /// A message must arrive at this average rate (bytes per second) once
    /// `data_timeout_secs` have passed.
    pub min_data_bytes_per_sec: u64,
    /// Seconds allowed for a whole TLS handshake.
    pub tls_handshake_timeout_secs: u64,
    /// When this percentage of `max_connections` is open, idle clients get
    /// `overload_timeout_secs` instead of the usual timeouts.
    pub overload_percent: u64,
    /// The idle timeout while overloaded.
    pub overload_timeout_secs: u64,
    /// Errors after which a session is closed (`421` / `-ERR`).
    pub hard_error_limit: u64,
    /// Errors after which every further error reply is delayed.
    pub soft_error_limit: u64,
    /// The delay per error beyond `soft_error_limit`, growing with each.
    pub error_delay_ms: u64,
    /// Longest command line in bytes, CRLF included.
    pub max_line_bytes: u64,
    /// Failed logins before an address or mailbox is locked out.
    pub max_failed_logins: u64,
    /// Seconds a lockout lasts.
    pub lockout_secs: u64,
    /// Milliseconds every failed login waits before its answer.
    pub failed_login_delay_ms: u64,
    /// Client addresses never locked out as addresses (the mailbox lockout still applies).
    pub lockout_exempt_clients: Vec<Cidr>,
    /// Key derivations allowed to run at once.
    pub max_concurrent_kdf: u64,
    /// Seconds open sessions get to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
}

/// The `kdf` section.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct KdfConfig {
    /// Argon2id passes.
    pub opslimit: u64,
    /// Argon2id memory in bytes.
    pub memlimit_bytes: u64,
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
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            key: String::new(),
            message: format!("not valid JSON: {e}"),
        })?;
        let mut top = Section::root(file, &value)?;
        let hostname = top.host_name("hostname", "localhost")?;
        let mailbox_domain = top.host_name("mailbox_domain", "localhost")?;
        let data_dir = base.join(top.string("data_dir", "data")?);

        let mut tls = top.section("tls")?;
        let tls_files = TlsFiles {
            cert_file: tls.opt_path("cert_file", base)?,
            key_file: tls.opt_path("key_file", base)?,
        };
        if tls_files.cert_file.is_some() != tls_files.key_file.is_some() {
            return Err(tls.error(
                "cert_file",
                "cert_file and key_file must be given together (or both null for a generated certificate)",
            ));
        }
        tls.finish()?;

        let mut s = top.section("smtp")?;
        let smtp = SmtpConfig {
            listen: s.addrs("listen", &["127.0.0.1:10025"])?,
            listen_tls: s.addrs("listen_tls", &["127.0.0.1:10465"])?,
            require_tls: s.bool("require_tls", true)?,
            max_message_bytes: s.number("max_message_bytes", 209_715_200, 1024, 1 << 40)?,
            max_recipients: s.number("max_recipients", 100, 1, 100_000)?,
            allowed_clients: s.cidrs("allowed_clients")?,
        };
        s.finish()?;

        let pop3 = top.listeners("pop3", "127.0.0.1:10110", "127.0.0.1:10995")?;
        let mut sp = top.section("smtp_proxy")?;
        let smtp_proxy = SmtpProxyConfig {
            listen: sp.addrs("listen", &["127.0.0.1:20587"])?,
            listen_tls: sp.addrs("listen_tls", &["127.0.0.1:20465"])?,
            max_message_bytes: sp.number("max_message_bytes", 104_857_600, 1024, 1 << 40)?,
            max_recipients: sp.number("max_recipients", 100, 1, 100_000)?,
        };
        sp.finish()?;
        let mut pp = top.section("pop3_proxy")?;
        let pop3_proxy = Pop3ProxyConfig {
            listen: pp.addrs("listen", &["127.0.0.1:20110"])?,
            listen_tls: pp.addrs("listen_tls", &["127.0.0.1:20995"])?,
            max_message_bytes: pp.number("max_message_bytes", 104_857_600, 1024, 1 << 40)?,
        };
        pp.finish()?;

        let mut p = top.section("proxy")?;
        let proxy = ProxyConfig {
            allowed_targets: p.patterns("allowed_targets")?,
            allow_private_targets: p.bool("allow_private_targets", false)?,
            extra_ca_file: p.opt_path("extra_ca_file", base)?,
            connect_timeout_secs: p.number("connect_timeout_secs", 30, 1, 3600)?,
            implicit_tls_ports: p.ports("implicit_tls_ports", &[465, 995])?,
        };
        p.finish()?;

        let mut l = top.section("limits")?;
        let limits = Limits {
            max_connections: l.number("max_connections", 256, 1, 100_000)?,
            max_connections_per_ip: l.number("max_connections_per_ip", 32, 1, 100_000)?,
            command_timeout_secs: l.number("command_timeout_secs", 300, 1, 86_400)?,
            data_timeout_secs: l.number("data_timeout_secs", 180, 1, 86_400)?,
            min_data_bytes_per_sec: l.number("min_data_bytes_per_sec", 500, 0, 1 << 30)?,
            tls_handshake_timeout_secs: l.number("tls_handshake_timeout_secs", 30, 1, 3600)?,
            overload_percent: l.number("overload_percent", 80, 1, 100)?,
            overload_timeout_secs: l.number("overload_timeout_secs", 10, 1, 86_400)?,
            hard_error_limit: l.number("hard_error_limit", 20, 1, 1_000_000)?,
            soft_error_limit: l.number("soft_error_limit", 10, 0, 1_000_000)?,
            error_delay_ms: l.number("error_delay_ms", 1000, 0, 60_000)?,
            max_line_bytes: l.number("max_line_bytes", 4096, 512, 1 << 20)?,
            max_failed_logins: l.number("max_failed_logins", 5, 1, 1_000_000)?,
            lockout_secs: l.number("lockout_secs", 300, 0, 86_400 * 30)?,
            failed_login_delay_ms: l.number("failed_login_delay_ms", 2000, 0, 60_000)?,
            lockout_exempt_clients: l.cidrs("lockout_exempt_clients")?,
            max_concurrent_kdf: l.number("max_concurrent_kdf", 2, 1, 256)?,
            shutdown_grace_secs: l.number("shutdown_grace_secs", 30, 0, 3600)?,
        };
        l.finish()?;

        let mut k = top.section("kdf")?;
        let kdf = KdfConfig {
            opslimit: k.number("opslimit", 3, OPSLIMIT_MIN, 1000)?,
            memlimit_bytes: k.number("memlimit_bytes", 67_108_864, MEMLIMIT_MIN, 1 << 32)?,
        };
        k.finish()?;
        let control_socket = match top.get("control_socket") {
            None => Some(data_dir.join("control.sock")),
            Some(_) => top.opt_path("control_socket", base)?,
        };
        top.finish()?;

        let config = Config {
            hostname,
            mailbox_domain,
            data_dir,
            tls: tls_files,
            smtp,
            pop3,
            smtp_proxy,
            pop3_proxy,
            proxy,
            limits,
            kdf,
            control_socket,
        };
        config.check_listeners_unique(file)?;
        Ok(config)
    }

    /// Every listener of every service with its key, in a stable order.
    pub fn all_listeners(&self) -> Vec<(String, SocketAddr)> {
        let sections = [
            ("smtp", self.smtp.listeners()),
            ("pop3", self.pop3.clone()),
            ("smtp_proxy", self.smtp_proxy.listeners()),
            ("pop3_proxy", self.pop3_proxy.listeners()),
        ];
        let mut out = Vec::new();
        for (name, l) in sections {
            for (i, a) in l.listen.iter().enumerate() {
                out.push((format!("{name}.listen[{i}]"), *a));
            }
            for (i, a) in l.listen_tls.iter().enumerate() {
                out.push((format!("{name}.listen_tls[{i}]"), *a));
            }
        }
        out
    }

    fn check_listeners_unique(&self, file: &Path) -> Result<(), ConfigError> {
        let mut seen: HashMap<SocketAddr, String> = HashMap::new();
        // Port 0 (any free port, for tests) never collides.
        for (key, addr) in self
            .all_listeners()
            .into_iter()
            .filter(|(_, a)| a.port() != 0)
        {
            if let Some(first) = seen.get(&addr) {
                return Err(ConfigError {
                    file: file.to_path_buf(),
                    key,
                    message: format!("{addr} is already used by {first}"),
                });
            }
            seen.insert(addr, key);
        }
        Ok(())
    }

    /// The effective configuration as pretty JSON, in the file's own key names.
    pub fn to_pretty_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

impl Serialize for TargetPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One JSON object being read, remembering which keys were used.
struct Section<'a> {
    file: &'a Path,
    path: String,
    map: Option<&'a Map<String, Value>>,
    used: BTreeSet<&'static str>,
}

impl<'a> Section<'a> {
    fn root(file: &'a Path, value: &'a Value) -> Result<Section<'a>, ConfigError> {
        match value {
            Value::Object(map) => Ok(Section {
                file,
                path: String::new(),
                map: Some(map),
                used: BTreeSet::new(),
            }),
            _ => Err(ConfigError {
                file: file.to_path_buf(),
                key: String::new(),
                message: "the top level must be a JSON object".into(),
            }),
        }
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            key: self.key_path(key),
            message: message.into(),
        }
    }

    /// The value of `key`, or `None` when it is absent (null counts as present).
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.insert(key);
        self.map.and_then(|m| m.get(key))
    }

    fn section(&mut self, key: &'static str) -> Result<Section<'a>, ConfigError> {
        let path = self.key_path(key);
        match self.get(key) {
            None => Ok(Section {
                file: self.file,
                path,
                map: None,
                used: BTreeSet::new(),
            }),
            Some(Value::Object(map)) => Ok(Section {
                file: self.file,
                path,
                map: Some(map),
                used: BTreeSet::new(),
            }),
            Some(other) => {
                Err(self.error(key, format!("expected an object, found {}", kind(other))))
            }
        }
    }

    fn listeners(
        &mut self,
        key: &'static str,
        listen: &str,
        listen_tls: &str,
    ) -> Result<Listeners, ConfigError> {
        let mut s = self.section(key)?;
        let listeners = Listeners {
            listen: s.addrs("listen", &[listen])?,
            listen_tls: s.addrs("listen_tls", &[listen_tls])?,
        };
        s.finish()?;
        Ok(listeners)
    }

    fn string(&mut self, key: &'static str, default: &str) -> Result<String, ConfigError> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(Value::String(_)) => Err(self.error(key, "must not be empty")),
            Some(other) => {
                Err(self.error(key, format!("expected a string, found {}", kind(other))))
            }
        }
    }

    fn host_name(&mut self, key: &'static str, default: &str) -> Result<String, ConfigError> {
        let name = self.string(key, default)?;
        let valid = crate::net::is_dns_name(&name);
        if valid {
            Ok(name.to_ascii_lowercase())
        } else {
            Err(self.error(key, format!("{name:?} is not a valid DNS name")))
        }
    }

    fn opt_path(&mut self, key: &'static str, base: &Path) -> Result<Option<PathBuf>, ConfigError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(base.join(s))),
            Some(other) => Err(self.error(
                key,
                format!("expected a file name or null, found {}", kind(other)),
            )),
        }
    }

    fn bool(&mut self, key: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.error(
                key,
                format!("expected true or false, found {}", kind(other)),
            )),
        }
    }

    fn number(
        &mut self,
        key: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let value = match self.get(key) {
            None => return Ok(default),
            Some(v) => v,
        };
        match value.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.error(
                key,
                format!("expected a whole number from {min} to {max}, found {value}"),
            )),
        }
    }

    fn array(&mut self, key: &'static str) -> Result<Option<&'a Vec<Value>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(self.error(key, format!("expected a list, found {}", kind(other)))),
        }
    }

    fn strings(&mut self, key: &'static str) -> Result<Vec<String>, ConfigError> {
        let Some(items) = self.array(key)? else {
            return Ok(Vec::new());
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
                other => Err(self.error(
                    &format!("{key}[{i}]"),
                    format!("expected a non-empty string, found {}", kind(other)),
                )),
            })
            .collect()
    }

    fn addrs(
        &mut self,
        key: &'static str,
        default: &[&str],
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        let texts = match self.array(key)? {
            None => default.iter().map(|s| s.to_string()).collect(),
            Some(_) => self.strings(key)?,
        };
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse::<SocketAddr>().map_err(|_| {
                    self.error(
                        &format!("{key}[{i}]"),
                        format!("{text:?} is not an address:port such as \"127.0.0.1:25\" or \"[::]:25\""),
                    )
                })
            })
            .collect()
    }

    fn ports(&mut self, key: &'static str, default: &[u16]) -> Result<Vec<u16>, ConfigError> {
        let Some(items) = self.array(key)? else {
            return Ok(default.to_vec());
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item.as_u64() {
                Some(n @ 1..=65535) => Ok(n as u16),
                _ => Err(self.error(
                    &format!("{key}[{i}]"),
                    format!("expected a port from 1 to 65535, found {item}"),
                )),
            })
            .collect()
    }

    fn patterns(&mut self, key: &'static str) -> Result<Vec<TargetPattern>, ConfigError> {
        let texts = self.strings(key)?;
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse::<TargetPattern>()
                    .map_err(|e| self.error(&format!("{key}[{i}]"), e))
            })
            .collect()
    }

    fn cidrs(&mut self, key: &'static str) -> Result<Vec<Cidr>, ConfigError> {
        let texts = self.strings(key)?;
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse::<Cidr>()
                    .map_err(|e| self.error(&format!("{key}[{i}]"), e))
            })
            .collect()
    }

    /// Refuses keys nobody asked for: a typo must not silently fall back to a default.
    fn finish(self) -> Result<(), ConfigError> {
        let Some(map) = self.map else {
            return Ok(());
        };
        for key in map.keys() {
            if !self.used.contains(key.as_str()) {
                let known: Vec<&str> = self.used.iter().copied().collect();
                return Err(self.error(
                    key,
                    format!("unknown key (known here: {})", known.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("gateway.json"), Path::new("/etc/sealpost"))
    }

    fn error_of(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_shipped_file_parses_to_the_documented_defaults() {
        let shipped = include_str!("../gateway.json");
        let config = parse(shipped).unwrap();
        let empty = parse("{}").unwrap();
        assert_eq!(config.to_pretty_json(), empty.to_pretty_json());
        assert_eq!(config.smtp.listen, vec!["127.0.0.1:10025".parse().unwrap()]);
        assert_eq!(config.limits.max_concurrent_kdf, 2);
        assert_eq!(config.kdf.memlimit_bytes, 64 << 20);
        assert!(config.smtp.require_tls);
    }

    #[test]
    fn a_relative_data_dir_is_relative_to_the_config_file() {
        let config = parse(r#"{"data_dir": "var/data"}"#).unwrap();
        assert_eq!(config.data_dir, Path::new("/etc/sealpost/var/data"));
        let config = parse(r#"{"data_dir": "/srv/sealpost"}"#).unwrap();
        assert_eq!(config.data_dir, Path::new("/srv/sealpost"));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        assert!(
            error_of(r#"{"smtp": {"max_recipient": 5}}"#)
                .contains("smtp.max_recipient: unknown key")
        );
        assert!(error_of(r#"{"colour": "blue"}"#).contains("colour: unknown key"));
    }

    #[test]
    fn wrong_types_name_the_key_and_the_expectation() {
        let e = error_of(r#"{"smtp": {"max_recipients": "ten"}}"#);
        assert!(
            e.contains("smtp.max_recipients: expected a whole number from 1 to 100000"),
            "{e}"
        );
        let e = error_of(r#"{"smtp": {"require_tls": "yes"}}"#);
        assert!(
            e.contains("smtp.require_tls: expected true or false"),
            "{e}"
        );
        let e = error_of(r#"{"pop3": []}"#);
        assert!(e.contains("pop3: expected an object"), "{e}");
        let e = error_of(r#"{"tls": {"cert_file": 5}}"#);
        assert!(
            e.contains("tls.cert_file: expected a file name or null"),
            "{e}"
        );
    }

    #[test]
    fn impossible_values_are_refused() {
        assert!(
            error_of(r#"{"limits": {"max_connections": 0}}"#).contains("limits.max_connections")
        );
        assert!(error_of(r#"{"kdf": {"memlimit_bytes": 1024}}"#).contains("kdf.memlimit_bytes"));
        assert!(error_of(r#"{"kdf": {"opslimit": -1}}"#).contains("kdf.opslimit"));
        assert!(
            error_of(r#"{"hostname": "bad host"}"#)
                .contains("hostname: \"bad host\" is not a valid DNS name")
        );
        assert!(error_of(r#"{"data_dir": ""}"#).contains("data_dir: must not be empty"));
    }

    #[test]
    fn unparsable_addresses_name_the_list_entry() {
        let e = error_of(r#"{"smtp": {"listen": ["127.0.0.1:10025", "localhost:25"]}}"#);
        assert!(
            e.contains("smtp.listen[1]: \"localhost:25\" is not an address:port"),
            "{e}"
        );
        let e = error_of(r#"{"smtp": {"allowed_clients": ["10.0.0.0/40"]}}"#);
        assert!(e.contains("smtp.allowed_clients[0]"), "{e}");
    }

    #[test]
    fn an_empty_listen_list_turns_the_listener_off() {
        let config = parse(r#"{"pop3": {"listen": []}}"#).unwrap();
        assert!(config.pop3.listen.is_empty());
        assert_eq!(config.pop3.listen_tls.len(), 1);
    }

    #[test]
    fn two_services_cannot_share_an_address() {
        let e = error_of(r#"{"pop3": {"listen": ["127.0.0.1:10025"]}}"#);
        assert!(
            e.contains("pop3.listen[0]: 127.0.0.1:10025 is already used by smtp.listen[0]"),
            "{e}"
        );
    }

    #[test]
    fn allowed_targets_are_patterns_and_bad_ones_name_their_entry() {
        let config =
            parse(r#"{"proxy": {"allowed_targets": ["*.example.com", "smtp.office365.com:587"]}}"#)
                .unwrap();
        assert!(config.proxy.allowed_targets[0].matches("mail.example.com", 25));
        assert!(
            config
                .to_pretty_json()
                .contains("\"smtp.office365.com:587\"")
        );
        let e = error_of(r#"{"proxy": {"allowed_targets": ["ok.example.com", "bad host"]}}"#);
        assert!(e.contains("proxy.allowed_targets[1]"), "{e}");
    }

    #[test]
    fn implicit_tls_ports_are_ports_and_bad_ones_name_their_entry() {
        let config = parse(r#"{"proxy": {"implicit_tls_ports": [465, 2465]}}"#).unwrap();
        assert_eq!(config.proxy.implicit_tls_ports, [465, 2465]);
        assert_eq!(parse("{}").unwrap().proxy.implicit_tls_ports, [465, 995]);
        for bad in ["[0]", "[70000]", "[\"465\"]", "465"] {
            let e = error_of(&format!(r#"{{"proxy": {{"implicit_tls_ports": {bad}}}}}"#));
            assert!(e.contains("proxy.implicit_tls_ports"), "{bad}: {e}");
        }
    }

    #[test]
    fn certificate_and_key_come_together() {
        let e = error_of(r#"{"tls": {"cert_file": "cert.pem"}}"#);
        assert!(
            e.contains("tls.cert_file: cert_file and key_file must be given together"),
            "{e}"
        );
        let config = parse(r#"{"tls": {"cert_file": "c.pem", "key_file": "k.pem"}}"#).unwrap();
        assert_eq!(
            config.tls.cert_file.unwrap(),
            Path::new("/etc/sealpost/c.pem")
        );
    }

    #[test]
    fn the_hardening_keys_have_their_defaults_and_name_bad_entries() {
        let config = parse("{}").unwrap();
        assert_eq!(config.limits.hard_error_limit, 20);
        assert_eq!(config.limits.min_data_bytes_per_sec, 500);
        assert_eq!(config.pop3_proxy.max_message_bytes, 104_857_600);
        assert_eq!(
            config.control_socket.unwrap(),
            Path::new("/etc/sealpost/data/control.sock")
        );
        assert!(
            parse(r#"{"control_socket": null}"#)
                .unwrap()
                .control_socket
                .is_none()
        );
        let e = error_of(r#"{"limits": {"lockout_exempt_clients": ["192.0.2.9", "archiver"]}}"#);
        assert!(e.contains("limits.lockout_exempt_clients[1]"), "{e}");
        let e = error_of(r#"{"limits": {"overload_percent": 0}}"#);
        assert!(
            e.contains("limits.overload_percent: expected a whole number from 1 to 100"),
            "{e}"
        );
        let e = error_of(r#"{"pop3_proxy": {"max_message_bytes": 10}}"#);
        assert!(e.contains("pop3_proxy.max_message_bytes"), "{e}");
    }

    #[test]
    fn invalid_json_is_reported_with_its_position() {
        let e = error_of("{\"hostname\": }");
        assert!(e.starts_with("gateway.json: not valid JSON"), "{e}");
        assert!(e.contains("line 1"), "{e}");
        assert!(error_of("[1]").contains("top level must be a JSON object"));
    }
}
