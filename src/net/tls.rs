//! The server certificate: loaded from PEM files, or generated self-signed on
//! first start; reloadable without dropping connections (SIGHUP).

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use log::info;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::version::{TLS12, TLS13};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::crypto;
use crate::store::durable;

/// Why no server certificate could be set up.
#[derive(Debug)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The one cryptographic backend: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Colon-separated uppercase hex SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    crypto::sha256(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Where the certificate comes from.
#[derive(Debug, Clone)]
enum Source {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    Generated {
        cert: PathBuf,
        key: PathBuf,
        hostname: String,
    },
}

/// The current server TLS configuration, swapped atomically on reload.
pub struct TlsServer {
    current: RwLock<Arc<ServerConfig>>,
    source: Source,
}

impl TlsServer {
    /// Loads the configured certificate, or generates (first start) or
    /// reuses a self-signed one under `data_dir/tls/`.
    pub fn load(config: &Config) -> Result<TlsServer, TlsError> {
        let source = match (&config.tls.cert_file, &config.tls.key_file) {
            (Some(cert), Some(key)) => Source::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => {
                let dir = config.data_dir.join("tls");
                Source::Generated {
                    cert: dir.join("cert.pem"),
                    key: dir.join("key.pem"),
                    hostname: config.hostname.clone(),
                }
            }
        };
        if let Source::Generated {
            cert,
            key,
            hostname,
        } = &source
            && !(cert.exists() && key.exists())
        {
            generate_self_signed(cert, key, hostname)?;
            info!(
                "generated a self-signed certificate for {hostname} in {}",
                cert.display()
            );
        }
        let (config, fp) = build(&source)?;
        info!(
            "TLS certificate {} (SHA-256 {fp})",
            source.cert_path().display()
        );
        Ok(TlsServer {
            current: RwLock::new(Arc::new(config)),
            source,
        })
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the certificate and key again; on failure the old ones stay.
    pub fn reload(&self) -> Result<String, TlsError> {
        let (config, fp) = build(&self.source)?;
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::new(config),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(config),
        }
        Ok(fp)
    }

    /// The certificate file in use.
    pub fn cert_path(&self) -> &Path {
        self.source.cert_path()
    }
}

impl Source {
    fn cert_path(&self) -> &Path {
        match self {
            Source::Files { cert, .. } | Source::Generated { cert, .. } => cert,
        }
    }

    fn key_path(&self) -> &Path {
        match self {
            Source::Files { key, .. } | Source::Generated { key, .. } => key,
        }
    }
}

fn build(source: &Source) -> Result<(ServerConfig, String), TlsError> {
    let (cert_path, key_path) = (source.cert_path(), source.key_path());
    let certs = load_certs(cert_path)?;
    let key = load_key(key_path)?;
    let fp = fingerprint(&certs[0]);
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| TlsError(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError(format!(
                "certificate file {} and key file {} do not go together: {e}",
                cert_path.display(),
                key_path.display()
            ))
        })?;
    Ok((config, fp))
}

/// Reads a PEM certificate chain, leaf first.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = fs::read(path)
        .map_err(|e| TlsError(format!("certificate file {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError(format!(
                "certificate file {}: not valid PEM: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "certificate file {}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes =
        fs::read(path).map_err(|e| TlsError(format!("key file {}: {e}", path.display())))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            TlsError(format!("key file {}: no private key found", path.display()))
        }
        other => TlsError(format!(
            "key file {}: not a valid PEM private key: {other}",
            path.display()
        )),
    })
}

fn generate_self_signed(cert: &Path, key: &Path, hostname: &str) -> Result<(), TlsError> {
    let fail = |what: &Path, e: io::Error| TlsError(format!("{}: {e}", what.display()));
    let mut params = rcgen::CertificateParams::new(vec![hostname.to_string()])
        .map_err(|e| TlsError(format!("cannot make a certificate for {hostname}: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Sealpost self-signed");
    let signing_key = rcgen::KeyPair::generate()
        .map_err(|e| TlsError(format!("cannot generate a TLS key: {e}")))?;
    let certificate = params
        .self_signed(&signing_key)
        .map_err(|e| TlsError(format!("cannot sign the certificate: {e}")))?;
    let dir = cert.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    let key_name = key
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("key.pem");
    let cert_name = cert
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("cert.pem");
    // The key first: a certificate without its key would be useless.
    durable::replace_file(dir, key_name, signing_key.serialize_pem().as_bytes())
        .map_err(|e| fail(key, e))?;
    durable::replace_file(dir, cert_name, certificate.pem().as_bytes())
        .map_err(|e| fail(cert, e))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A server configuration with a fresh self-signed certificate.
    pub(crate) fn server_config() -> Arc<ServerConfig> {
        let dir = tempfile::tempdir().unwrap();
        let server = TlsServer::load(&config_in(dir.path(), "")).unwrap();
        server.current()
    }

    fn config_in(dir: &Path, extra: &str) -> Config {
        let text = format!(r#"{{"hostname": "gw.example", "data_dir": "data" {extra}}}"#);
        Config::parse(&text, &dir.join("gateway.json"), dir).unwrap()
    }

    #[test]
    fn a_self_signed_certificate_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "");
        let first = TlsServer::load(&config).unwrap();
        let pem = fs::read(first.cert_path()).unwrap();
        TlsServer::load(&config).unwrap();
        assert_eq!(
            fs::read(first.cert_path()).unwrap(),
            pem,
            "the certificate is reused"
        );
        let certs = load_certs(first.cert_path()).unwrap();
        assert_eq!(fingerprint(&certs[0]).len(), 32 * 3 - 1);
    }

    #[test]
    fn a_missing_or_keyless_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(
            dir.path(),
            r#", "tls": {"cert_file": "c.pem", "key_file": "k.pem"}"#,
        );
        let err = TlsServer::load(&config).err().unwrap().to_string();
        assert!(
            err.contains("certificate file") && err.contains("c.pem"),
            "{err}"
        );

        let generated = TlsServer::load(&config_in(dir.path(), "")).unwrap();
        fs::copy(generated.cert_path(), dir.path().join("c.pem")).unwrap();
        fs::write(
            dir.path().join("k.pem"),
            fs::read(generated.cert_path()).unwrap(),
        )
        .unwrap();
        let err = TlsServer::load(&config).err().unwrap().to_string();
        assert!(err.contains("k.pem: no private key found"), "{err}");
    }

    #[test]
    fn a_failed_reload_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let server = TlsServer::load(&config_in(dir.path(), "")).unwrap();
        let before = Arc::as_ptr(&server.current());
        fs::write(server.cert_path(), b"garbage").unwrap();
        assert!(server.reload().is_err());
        assert_eq!(Arc::as_ptr(&server.current()), before);
    }
}
