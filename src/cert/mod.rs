//! Which certificate the gateway serves: the configured files, or a
//! self-signed certificate generated under `<data_dir>/tls/` on first start.

mod paste;

use std::path::{Path, PathBuf};

use log::{info, warn};
use serde::Serialize;
use x509_parser::extensions::GeneralName;

use crate::config::Config;
use crate::net::tls::{self, TlsError};
use crate::store::durable;

/// A certificate installed from the web console: chain and key in one file
/// under `<data_dir>/tls/`, so that one rename replaces both.
const INSTALLED: &str = "installed.pem";

fn installed(config: &Config) -> PathBuf {
    config.data_dir.join("tls").join(INSTALLED)
}

/// The certificate file the gateway serves (the configured one, else one
/// installed from the console, else the generated one), without generating
/// anything.
pub fn in_use(config: &Config) -> PathBuf {
    match &config.tls.cert_file {
        Some(cert) if config.tls.key_file.is_some() => cert.clone(),
        _ if installed(config).exists() => installed(config),
        _ if config.acme.is_some() && crate::acme::cert_path(config).exists() => {
            crate::acme::cert_path(config)
        }
        _ => config.data_dir.join("tls").join("cert.pem"),
    }
}

/// What an administrator compares with what a client shows on first connect.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The file.
    pub file: PathBuf,
    /// The subject's distinguished name.
    pub subject: String,
    /// The subject alternative names (DNS names and IP addresses).
    pub names: Vec<String>,
    /// Valid from, RFC 3339.
    pub not_before: String,
    /// Valid until, RFC 3339.
    pub not_after: String,
    /// Whole days until `not_after` (negative once expired).
    pub days_left: i64,
    /// SHA-256 of the leaf certificate, as the gateway logs it.
    pub sha256: String,
    /// Issued by itself (the generated one, or another self-signed one),
    /// not by a certificate authority.
    pub self_signed: bool,
}

/// Reads the leaf certificate of `file`.
pub fn summary(file: &Path) -> Result<Summary, TlsError> {
    let chain = tls::load_certs(file)?;
    summary_of(chain[0].as_ref(), file)
}

/// The summary of the DER certificate `der`, to be kept in `file`.
fn summary_of(der: &[u8], file: &Path) -> Result<Summary, TlsError> {
    let bad = |e: &dyn std::fmt::Display| TlsError(format!("{}: {e}", file.display()));
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(&e))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_string()),
                GeneralName::IPAddress(bytes) => names.push(ip_text(bytes)),
                _ => {}
            }
        }
    }
    let time = |t: x509_parser::time::ASN1Time| {
        jiff::Timestamp::from_second(t.timestamp())
            .map(|ts| ts.to_string())
            .unwrap_or_else(|_| t.to_string())
    };
    let not_after = cert.validity().not_after.timestamp();
    let now = jiff::Timestamp::now().as_second();
    Ok(Summary {
        file: file.to_path_buf(),
        subject: cert.subject().to_string(),
        names,
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        days_left: (not_after - now).div_euclid(86_400),
        sha256: tls::fingerprint(der),
        self_signed: cert.issuer() == cert.subject(),
    })
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).unwrap_or_default()).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap_or_default()).to_string(),
        _ => format!("{bytes:02x?}"),
    }
}

/// Warns when the certificate in use expires within this many days.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// Whether the certificate in use is a certificate authority's, and valid
/// now: then the console may ask browsers for HTTPS only (HSTS).
pub fn ca_signed_in_use(config: &Config) -> bool {
    summary(&in_use(config)).is_ok_and(|s| !s.self_signed && s.days_left >= 0)
}

/// Logs a warning when the certificate in use is near its end.
pub fn warn_if_expiring(config: &Config) {
    match summary(&in_use(config)) {
        Ok(s) if s.days_left < EXPIRY_WARNING_DAYS => warn!(
            "TLS certificate {} expires {} ({} day(s) left): renew it and reload (SIGHUP)",
            s.file.display(),
            s.not_after,
            s.days_left
        ),
        Ok(_) => {}
        Err(e) => warn!("cannot read the TLS certificate for its expiry: {e}"),
    }
}

/// The names the generated certificate is made for, one a line, beside it.
const NAMES_FILE: &str = "names.txt";

/// A generated self-signed certificate is made again when fewer days than
/// this are left (at a start or a reload).
pub const SELF_SIGNED_RENEW_DAYS: i64 = 30;

/// What `serve` will do about its certificate, worked out without
/// changing anything.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Serve these files: the configured ones, one installed from the
    /// console, or a generated pair that still carries the right names.
    Use(PathBuf, PathBuf),
    /// Generate a self-signed pair under `dir` for `names` (`why`: first
    /// start, or the names it must carry changed).
    Generate {
        /// "generate" or "regenerate (its names changed)".
        why: &'static str,
        /// `<data_dir>/tls`.
        dir: PathBuf,
        /// The names it will carry.
        names: Vec<String>,
    },
}

/// Works out which certificate `serve` will use, reading files only.
pub fn plan(config: &Config) -> Plan {
    if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
        return Plan::Use(cert.clone(), key.clone());
    }
    let installed = installed(config);
    if installed.exists() {
        return Plan::Use(installed.clone(), installed);
    }
    // After the console's, before the self-signed one: a reload never
    // falls back to self-signed while an issued certificate is on disk.
    let acme = crate::acme::cert_path(config);
    if config.acme.is_some() && acme.exists() {
        return Plan::Use(acme.clone(), acme);
    }
    let dir = config.data_dir.join("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let names = names(config);
    let recorded = std::fs::read_to_string(dir.join(NAMES_FILE)).ok();
    let wanted = names.join("\n") + "\n";
    match (cert.exists() && key.exists(), recorded) {
        (false, _) => Plan::Generate {
            why: "generate",
            dir,
            names,
        },
        (true, Some(recorded)) if recorded != wanted => Plan::Generate {
            why: "regenerate (its names changed)",
            dir,
            names,
        },
        (true, Some(_)) if summary(&cert).is_ok_and(|s| s.days_left < SELF_SIGNED_RENEW_DAYS) => {
            Plan::Generate {
                why: "regenerate (it expires soon)",
                dir,
                names,
            }
        }
        // Made before the names were recorded: kept (a new certificate
        // would surprise clients that trust this one).
        (true, _) => Plan::Use(cert, key),
    }
}

/// Checks the certificate as `serve` would load it, creating and changing
/// nothing (for `check-config`, which may run as another user than the
/// gateway): loads the files `serve` would use, or says that it would
/// generate or regenerate its self-signed certificate. Fails where `serve`
/// would.
pub fn check(config: &Config) -> Result<String, TlsError> {
    match plan(config) {
        Plan::Use(cert, key) => {
            tls::TlsServer::load(&cert, &key)?;
            let s = summary(&cert)?;
            let mut text = format!(
                "certificate {}: {}, names {}, valid until {}",
                cert.display(),
                s.subject,
                s.names.join(", "),
                s.not_after
            );
            if s.days_left < 0 {
                text.push_str(" (EXPIRED)");
            }
            Ok(text)
        }
        Plan::Generate { why, dir, names } => Ok(format!(
            "serve will {why} a self-signed certificate for {} in {}",
            names.join(", "),
            dir.display()
        )),
    }
}

/// The certificate and key files to serve. Without configured files, the
/// self-signed pair under `<data_dir>/tls/` is generated on first start and
/// again whenever the names it must carry change: the `hostname` and every
/// specific listen address (as IP SANs; `0.0.0.0` and `[::]` name nothing).
/// With `node` set, the hostname alone.
pub fn files(config: &Config) -> Result<(PathBuf, PathBuf), TlsError> {
    if let Plan::Use(cert, key) = plan(config)
        && (config.tls.cert_file.is_some()
            || cert == installed(config)
            || cert == crate::acme::cert_path(config))
    {
        return Ok((cert, key));
    }
    let dir = config.data_dir.join("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    // Gateways sharing the data directory (nodes) may start together: one
    // generates while the others wait here, then find its certificate.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&dir)
        .map_err(|e| TlsError(format!("{}: {e}", dir.display())))?;
    let lock_path = dir.join(".generate.lock");
    let lock = durable::open_lock_file(&lock_path)
        .and_then(|file| file.lock().map(|()| file))
        .map_err(|e| TlsError(format!("{}: {e}", lock_path.display())))?;
    let names = names(config);
    let wanted = names.join("\n") + "\n";
    // Again under the lock: another node may have generated it meanwhile.
    let why = match plan(config) {
        Plan::Use(cert, key) => {
            if std::fs::read_to_string(dir.join(NAMES_FILE)).is_err() {
                record(&dir, &wanted)?;
            }
            return Ok((cert, key));
        }
        Plan::Generate { why, .. } => why,
    };
    generate(&dir, &names)?;
    record(&dir, &wanted)?;
    drop(lock);
    match why.strip_prefix("regenerate ") {
        // Clients that pinned the old certificate (fetchmail's
        // sslfingerprint, an archiver that was told to trust it) must be
        // told: they will refuse the new one until they trust it.
        Some(reason) => warn!(
            "regenerated the self-signed certificate for {} in {} {reason}: clients that pinned the old one must trust the new one (its SHA-256 follows)",
            names.join(", "),
            cert.display()
        ),
        None => info!(
            "generated a self-signed certificate for {} in {}",
            names.join(", "),
            cert.display()
        ),
    }
    Ok((cert, key))
}

/// The hostname, then the distinct specific listen addresses. Nodes of a
/// cluster share one certificate and each listens on its own addresses, so
/// theirs names the hostname alone (the name the balancer is reached by).
fn names(config: &Config) -> Vec<String> {
    let mut names = vec![config.hostname.clone()];
    if config.node.is_some() {
        return names;
    }
    for (_, addr) in config.all_listeners() {
        let ip = addr.ip().to_string();
        if !addr.ip().is_unspecified() && !names.contains(&ip) {
            names.push(ip);
        }
    }
    names
}

fn record(dir: &Path, names: &str) -> Result<(), TlsError> {
    durable::replace_file(dir, NAMES_FILE, names.as_bytes())
        .map_err(|e| TlsError(format!("{}: {e}", dir.join(NAMES_FILE).display())))
}

/// What installing a certificate did.
pub struct Installed {
    /// The configuration to serve from now on.
    pub server: rustls::ServerConfig,
    /// The certificate.
    pub summary: Summary,
    /// Whether it names the `hostname` that clients connect to.
    pub names_hostname: bool,
}

/// Installs a certificate chain and its private key, in PEM as pasted into
/// the console, as the one to serve: checked block by block (`paste`), to
/// go together and to be valid now, then re-encoded (the chain and the one
/// key, nothing else from the paste) into `<data_dir>/tls/installed.pem`
/// (0600) in one durable replace, so that the next start and every reload
/// load exactly what was checked. Refused when the configuration names
/// `tls.cert_file`, which stays the administrator's to change.
pub fn install(config: &Config, cert_pem: &str, key_pem: &str) -> Result<Installed, TlsError> {
    if let Some(file) = &config.tls.cert_file {
        return Err(TlsError(format!(
            "this gateway serves tls.cert_file {} from its configuration: replace that file and tls.key_file, then reload",
            file.display()
        )));
    }
    let checked = paste::parse(cert_pem, key_pem)?;
    let server = tls::server_config_for(checked.chain.clone(), checked.key.clone_key())?;
    let file = installed(config);
    let summary = summary_of(checked.chain[0].as_ref(), &file)?;
    if summary.days_left < 0 {
        return Err(TlsError(format!(
            "the certificate expired on {}",
            summary.not_after
        )));
    }
    let starts = summary.not_before.parse::<jiff::Timestamp>();
    if starts.is_ok_and(|t| t > jiff::Timestamp::now()) {
        return Err(TlsError(format!(
            "the certificate is valid only from {}",
            summary.not_before
        )));
    }
    // Exactly what was checked, re-encoded: the chain and its one key.
    let mut pem = paste::encode(&checked);
    let dir = config.data_dir.join("tls");
    durable::replace_file(&dir, INSTALLED, pem.as_bytes())
        .map_err(|e| TlsError(format!("{}: {e}", file.display())))?;
    zeroize::Zeroize::zeroize(&mut pem);
    let names_hostname = summary
        .names
        .iter()
        .any(|n| n.eq_ignore_ascii_case(&config.hostname));
    Ok(Installed {
        server,
        summary,
        names_hostname,
    })
}

/// Removes a certificate installed from the console (the generated one is
/// served again); returns whether there was one.
pub fn uninstall(config: &Config) -> Result<bool, TlsError> {
    let file = installed(config);
    match std::fs::remove_file(&file) {
        Ok(()) => {
            let dir = config.data_dir.join("tls");
            durable::sync_dir(&dir).map_err(|e| TlsError(format!("{}: {e}", dir.display())))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(TlsError(format!("{}: {e}", file.display()))),
    }
}

/// Whether the certificate served is one installed from the console.
pub fn is_installed(config: &Config) -> bool {
    config.tls.cert_file.is_none() && installed(config).exists()
}

fn generate(dir: &Path, names: &[String]) -> Result<(), TlsError> {
    let fail =
        |what: &str, e: std::io::Error| TlsError(format!("{}: {e}", dir.join(what).display()));
    let (cert, key) = tls::self_signed(names)?;
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)
        .map_err(|e| fail("", e))?;
    // The key first: a certificate without its key would be useless.
    durable::replace_file(dir, "key.pem", key.as_bytes()).map_err(|e| fail("key.pem", e))?;
    durable::replace_file(dir, "cert.pem", cert.as_bytes()).map_err(|e| fail("cert.pem", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn config_in(dir: &Path, extra: &str) -> Config {
        let text = format!(r#"{{"hostname": "gw.example", "data_dir": "data" {extra}}}"#);
        Config::parse(&text, &dir.join("gateway.json"), dir).unwrap()
    }

    /// A certificate for `name` valid from `from` to `until` (Unix seconds):
    /// (certificate PEM, key PEM).
    fn made(name: &str, from: i64, until: i64) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(1970, 1, 1) + time_offset(from);
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + time_offset(until);
        let key = rcgen::KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn time_offset(secs: i64) -> std::time::Duration {
        std::time::Duration::from_secs(secs.max(0) as u64)
    }

    #[test]
    fn an_installed_certificate_is_checked_first_and_then_served_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "");
        let (generated, _) = files(&config).unwrap();
        let now = jiff::Timestamp::now().as_second();
        let (good, good_key) = made("gw.example", now - 3600, now + 90 * 86_400);
        let (_, other_key) = made("gw.example", now - 3600, now + 90 * 86_400);
        let (expired, expired_key) = made("gw.example", now - 90 * 86_400, now - 86_400);
        let (early, early_key) = made("gw.example", now + 86_400, now + 90 * 86_400);
        let refusals = [
            (
                good.as_str(),
                other_key.as_str(),
                "does not belong to the certificate",
            ),
            ("hello", good_key.as_str(), "holds no certificate"),
            (good.as_str(), "", "holds no private key"),
            (expired.as_str(), expired_key.as_str(), "expired"),
            (early.as_str(), early_key.as_str(), "valid only from"),
        ];
        for (cert, key, why) in refusals {
            let e = install(&config, cert, key).err().unwrap().to_string();
            assert!(e.contains(why), "{why}: {e}");
            assert!(!is_installed(&config));
            assert_eq!(in_use(&config), generated);
        }
        let installed = install(&config, &good, &good_key).unwrap();
        assert!(installed.names_hostname);
        assert!(is_installed(&config));
        let (cert, key) = files(&config).unwrap();
        assert_eq!(
            (cert.clone(), key.clone()),
            (in_use(&config), in_use(&config))
        );
        assert_eq!(summary(&cert).unwrap().sha256, installed.summary.sha256);
        tls::TlsServer::load(&cert, &key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&cert).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(uninstall(&config).unwrap());
        assert!(!uninstall(&config).unwrap());
        assert_eq!(files(&config).unwrap().0, generated);

        let configured = config_in(
            dir.path(),
            r#", "tls": {"cert_file": "c.pem", "key_file": "k.pem"}"#,
        );
        let e = install(&configured, &good, &good_key)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("tls.cert_file"), "{e}");
    }

    #[test]
    fn a_self_signed_certificate_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "");
        let (cert, key) = files(&config).unwrap();
        let pem = fs::read(&cert).unwrap();
        assert_eq!(files(&config).unwrap(), (cert.clone(), key.clone()));
        assert_eq!(fs::read(&cert).unwrap(), pem, "the certificate is reused");
        tls::TlsServer::load(&cert, &key).unwrap();
    }

    #[test]
    fn a_self_signed_certificate_is_valid_for_two_years_and_made_again_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "");
        let (cert, key) = files(&config).unwrap();
        let days = summary(&cert).unwrap().days_left;
        assert!((728..=tls::SELF_SIGNED_DAYS).contains(&days), "{days}");
        // One that has ten days left, for the same names: made again.
        let now = jiff::Timestamp::now().as_second();
        let (pem, key_pem) = made("gw.example", now - 86_400, now + 10 * 86_400);
        fs::write(&cert, pem).unwrap();
        fs::write(&key, key_pem).unwrap();
        let left = summary(&cert).unwrap().days_left;
        assert!(
            (9..=10).contains(&left),
            "the test's own certificate: {left}"
        );
        assert!(matches!(
            plan(&config),
            Plan::Generate {
                why: "regenerate (it expires soon)",
                ..
            }
        ));
        files(&config).unwrap();
        assert!(summary(&cert).unwrap().days_left >= 728);
        tls::TlsServer::load(&cert, &key).unwrap();
    }

    #[test]
    fn a_change_of_hostname_or_listen_address_regenerates_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = files(&config_in(dir.path(), "")).unwrap();
        let first = fs::read(&cert).unwrap();
        let names = || fs::read_to_string(dir.path().join("data/tls/names.txt")).unwrap();
        assert!(names().starts_with("gw.example\n"), "{}", names());
        let renamed = config_in(dir.path(), "").clone();
        let renamed = Config {
            hostname: "mx.example".into(),
            ..renamed
        };
        files(&renamed).unwrap();
        let second = fs::read(&cert).unwrap();
        assert_ne!(second, first, "a new hostname, a new certificate");
        assert!(names().starts_with("mx.example\n"), "{}", names());
        let listening = config_in(
            dir.path(),
            r#", "smtp": {"listen": ["192.0.2.7:25", "0.0.0.0:2525"]}"#,
        );
        let listening = Config {
            hostname: "mx.example".into(),
            ..listening
        };
        files(&listening).unwrap();
        assert_ne!(fs::read(&cert).unwrap(), second);
        assert!(names().contains("192.0.2.7\n"), "{}", names());
        assert!(!names().contains("0.0.0.0"), "{}", names());
    }

    #[test]
    fn a_certificate_made_before_names_were_recorded_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "");
        let (cert, _) = files(&config).unwrap();
        let pem = fs::read(&cert).unwrap();
        fs::remove_file(dir.path().join("data/tls/names.txt")).unwrap();
        files(&config).unwrap();
        assert_eq!(fs::read(&cert).unwrap(), pem);
        assert!(dir.path().join("data/tls/names.txt").exists());
    }

    #[test]
    fn the_summary_shows_names_validity_and_the_fingerprint_the_gateway_logs() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), r#", "smtp": {"listen": ["192.0.2.7:25"]}"#);
        let (cert, key) = files(&config).unwrap();
        assert_eq!(in_use(&config), cert);
        let s = summary(&cert).unwrap();
        assert!(s.subject.contains("CN=gw.example"), "{}", s.subject);
        assert!(s.names.contains(&"gw.example".to_string()), "{:?}", s.names);
        assert!(s.names.contains(&"192.0.2.7".to_string()), "{:?}", s.names);
        assert!(s.days_left > EXPIRY_WARNING_DAYS, "{}", s.days_left);
        // What the gateway logs at start and at each reload.
        let logged = tls::fingerprint(&tls::load_certs(&cert).unwrap()[0]);
        assert_eq!(s.sha256, logged);
        assert!(tls::TlsServer::load(&cert, &key).is_ok());
        let junk = dir.path().join("junk.pem");
        fs::write(&junk, b"not a certificate").unwrap();
        assert!(summary(&junk).is_err());
    }

    #[test]
    fn a_certificate_near_its_end_counts_its_days_left() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["gw.example".to_string()]).unwrap();
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
        params.not_after = (now + std::time::Duration::from_secs(5 * 86_400 + 3_600)).into();
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let file = dir.path().join("soon.pem");
        fs::write(&file, pem).unwrap();
        let s = summary(&file).unwrap();
        assert_eq!(s.days_left, 5);
        assert!(s.days_left < EXPIRY_WARNING_DAYS);
    }

    #[test]
    fn configured_files_are_used_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(
            dir.path(),
            r#", "tls": {"cert_file": "c.pem", "key_file": "k.pem"}"#,
        );
        let (cert, key) = files(&config).unwrap();
        assert_eq!(cert, dir.path().join("c.pem"));
        assert_eq!(key, dir.path().join("k.pem"));
        assert!(!dir.path().join("data/tls").exists());
    }
}
