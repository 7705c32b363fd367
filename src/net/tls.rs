//! The server certificate: loaded from PEM files, or generated self-signed on
//! first start; reloadable without dropping connections (SIGHUP).

use std::fmt;
use std::fs;
use std::path::Path;
use std::sync::{Arc, RwLock};

use log::info;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::version::{TLS12, TLS13};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::crypto;

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

/// The server TLS configuration. A reload builds a new one (with the
/// services); a certificate installed from the console replaces it in
/// place. Sessions keep the one they started with.
pub struct TlsServer {
    config: RwLock<Arc<ServerConfig>>,
}

impl TlsServer {
    /// Loads the certificate chain and key from PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsServer, TlsError> {
        let certs = load_certs(cert)?;
        let key_der = parse_key(&read(key, "key file")?, key)?;
        let fingerprint = fingerprint(&certs[0]);
        let config = server_config(certs, key_der).map_err(|e| {
            TlsError(format!(
                "certificate file {} and key file {}: {}",
                cert.display(),
                key.display(),
                explain(&e)
            ))
        })?;
        info!("TLS certificate {} (SHA-256 {fingerprint})", cert.display());
        Ok(TlsServer {
            config: RwLock::new(Arc::new(config)),
        })
    }

    /// The configuration handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Serves what `other` serves from the next handshake on.
    pub fn replace_with(&self, other: &TlsServer) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = other.current();
    }

    /// Serves `config` from the next handshake on, on every listener.
    pub fn replace(&self, config: ServerConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }
}

/// A server configuration for a checked certificate chain and its key,
/// with a refusal in an administrator's words.
pub fn server_config_for(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    server_config(certs, key).map_err(|e| TlsError(explain(&e)))
}

/// What rustls' refusal of a certificate and key means, in words an
/// administrator can act on (its `Debug` text, `KeyMismatch` or
/// `Other(OtherError(UnsupportedCertVersion))`, is for developers).
pub fn explain(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error, InconsistentKeys};
    match e {
        Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            "the private key does not belong to the certificate: paste the key the \
             certificate was issued for"
                .into()
        }
        Error::InconsistentKeys(InconsistentKeys::Unknown) => {
            "the private key cannot be checked against the certificate".into()
        }
        Error::InvalidCertificate(CertificateError::BadEncoding) => {
            "the certificate is not a valid X.509 certificate".into()
        }
        Error::InvalidCertificate(CertificateError::Other(other)) => {
            let text = other.to_string();
            if text.contains("UnsupportedCertVersion") {
                "the certificate is not X.509 version 3, which TLS clients require".into()
            } else {
                format!("the certificate cannot be used ({text})")
            }
        }
        Error::InvalidCertificate(other) => format!("the certificate cannot be used: {other}"),
        Error::General(text) if text.contains("private key") => {
            "the private key is of a kind TLS cannot use here (RSA, ECDSA P-256/P-384 or \
             Ed25519 are accepted)"
                .into()
        }
        other => format!("the certificate and key cannot be used: {other}"),
    }
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS13, &TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))
}

/// Reads a PEM certificate chain, leaf first (other PEM sections, a key
/// that shares the file, are skipped).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(&read(path, "certificate file")?, path)
}

fn parse_certs(bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
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

fn parse_key(bytes: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            TlsError(format!("key file {}: no private key found", path.display()))
        }
        other => TlsError(format!(
            "key file {}: not a valid PEM private key: {other}",
            path.display()
        )),
    })
}

/// Days a generated self-signed certificate is valid.
pub const SELF_SIGNED_DAYS: i64 = 730;

/// A self-signed certificate for `names` (the first is also the common
/// name), for a start without a configured one: (certificate PEM, key PEM).
pub fn self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let hostname = names.first().map(String::as_str).unwrap_or("localhost");
    // rcgen makes a name that parses as an IP address an IP SAN.
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| TlsError(format!("cannot make a certificate for {hostname}: {e}")))?;
    // Valid from yesterday (clocks differ) for SELF_SIGNED_DAYS: long enough
    // to leave alone, short enough that the expiry warnings and
    // `sealpost status` mean something (rcgen's default runs to 4096).
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let day = |offset: i64| {
        let d = today.saturating_add(jiff::Span::new().days(offset));
        rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8)
    };
    params.not_before = day(-1);
    params.not_after = day(SELF_SIGNED_DAYS);
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
    Ok((certificate.pem(), signing_key.serialize_pem()))
}

/// Accepts any server certificate: for [`probe_handshake`] only, which
/// checks that a listener completes a handshake and sends nothing.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Completes a TLS handshake as a client on `tcp` and closes it cleanly
/// (close_notify): `sealpost status` checking that an implicit-TLS listener
/// answers. Every read and write waits at most `each`. The certificate is
/// not checked: nothing is sent but the handshake.
pub fn probe_handshake(tcp: std::net::TcpStream, each: std::time::Duration) -> std::io::Result<()> {
    use std::io::Write;
    let provider = provider();
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("sealpost-status.invalid")
        .map_err(std::io::Error::other)?;
    let conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    tcp.set_read_timeout(Some(each))?;
    tcp.set_write_timeout(Some(each))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    // A handshake is a few round trips; a listener that takes more is not answering.
    for _ in 0..16 {
        if !stream.conn.is_handshaking() {
            stream.conn.send_close_notify();
            let _ = stream.flush();
            return Ok(());
        }
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the TLS handshake did not finish",
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh self-signed certificate and key written into `dir`.
    pub(crate) fn write_self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = self_signed(&["gw.example".into()]).unwrap();
        let paths = (dir.join("cert.pem"), dir.join("key.pem"));
        fs::write(&paths.0, cert).unwrap();
        fs::write(&paths.1, key).unwrap();
        paths
    }

    /// A server configuration with a fresh self-signed certificate.
    pub(crate) fn server_config() -> Arc<ServerConfig> {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_self_signed(dir.path());
        TlsServer::load(&cert, &key).unwrap().current()
    }

    #[test]
    fn a_self_signed_certificate_is_for_its_name_and_has_a_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = write_self_signed(dir.path());
        let certs = load_certs(&cert).unwrap();
        assert_eq!(fingerprint(&certs[0]).len(), 32 * 3 - 1);
        let text = fs::read_to_string(&cert).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"));
    }

    #[test]
    fn a_missing_or_keyless_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let err = TlsServer::load(&c, &k).err().unwrap().to_string();
        assert!(
            err.contains("certificate file") && err.contains("c.pem"),
            "{err}"
        );
        let (cert, _) = write_self_signed(dir.path());
        fs::copy(&cert, &c).unwrap();
        fs::write(&k, fs::read(&cert).unwrap()).unwrap();
        let err = TlsServer::load(&c, &k).err().unwrap().to_string();
        assert!(err.contains("k.pem: no private key found"), "{err}");
    }
}
