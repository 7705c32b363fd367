//! Which certificate the gateway serves: the configured files, or a
//! self-signed certificate generated under `<data_dir>/tls/` on first start.

use std::path::{Path, PathBuf};

use log::info;

use crate::config::Config;
use crate::net::tls::{self, TlsError};
use crate::store::durable;

/// The certificate and key files to serve, generating the self-signed pair
/// when none is configured and none was generated before.
pub fn files(config: &Config) -> Result<(PathBuf, PathBuf), TlsError> {
    if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
        return Ok((cert.clone(), key.clone()));
    }
    let dir = config.data_dir.join("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !(cert.exists() && key.exists()) {
        generate(&dir, &config.hostname)?;
        info!(
            "generated a self-signed certificate for {} in {}",
            config.hostname,
            cert.display()
        );
    }
    Ok((cert, key))
}

fn generate(dir: &Path, hostname: &str) -> Result<(), TlsError> {
    let fail =
        |what: &str, e: std::io::Error| TlsError(format!("{}: {e}", dir.join(what).display()));
    let (cert, key) = tls::self_signed(hostname)?;
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
