//! Challenge answers, kept in the data directory so that every node of a
//! cluster answers them, whichever orders: the balancer may send the
//! certificate authority's request to any node.
//!
//! - HTTP-01 (RFC 8555 §8.3): `<data_dir>/acme/http-01/<token>` holds the
//!   key authorization, served at `/.well-known/acme-challenge/<token>`.
//! - TLS-ALPN-01 (RFC 8737 §3): `<data_dir>/acme/tls-alpn-01/<name>` holds
//!   the SHA-256 of the key authorization; a handshake that offers only
//!   `acme-tls/1` with that SNI gets a self-signed certificate for the name
//!   with the critical `acmeIdentifier` extension (OID 1.3.6.1.5.5.7.1.31)
//!   holding that digest, made by rcgen (`new_acme_identifier`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::client::{ChallengeKind, Publish};
use crate::store::durable;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The challenge answers under `<data_dir>/acme`.
pub struct Challenges {
    dir: PathBuf,
    /// Validation certificates made, by (name, digest).
    made: Mutex<HashMap<(String, String), Arc<CertifiedKey>>>,
}

impl fmt::Debug for Challenges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Challenges({})", self.dir.display())
    }
}

fn token_is_safe(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn name_is_safe(name: &str) -> bool {
    crate::net::is_dns_name(name)
}

impl Challenges {
    /// The answers of the data directory `data_dir`.
    pub fn new(data_dir: &Path) -> Challenges {
        Challenges {
            dir: data_dir.join("acme"),
            made: Mutex::default(),
        }
    }

    fn kind_dir(&self, kind: ChallengeKind) -> PathBuf {
        self.dir.join(kind.name())
    }

    /// The key authorization to serve for an HTTP-01 `token`, if published.
    pub fn http_answer(&self, token: &str) -> Option<String> {
        if !token_is_safe(token) {
            return None;
        }
        std::fs::read_to_string(self.kind_dir(ChallengeKind::Http01).join(token)).ok()
    }

    /// The validation certificate for `name`, if a TLS-ALPN-01 challenge
    /// for it is published.
    pub fn alpn_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        if !name_is_safe(&name) {
            return None;
        }
        let digest =
            std::fs::read_to_string(self.kind_dir(ChallengeKind::TlsAlpn01).join(&name)).ok()?;
        let digest = digest.trim().to_string();
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cert) = made.get(&(name.clone(), digest.clone())) {
            return Some(Arc::clone(cert));
        }
        let cert = Arc::new(validation_certificate(&name, &digest).ok()?);
        made.clear();
        made.insert((name, digest), Arc::clone(&cert));
        Some(cert)
    }
}

/// RFC 8737 §3: a certificate for exactly `name`, with the critical
/// acmeIdentifier extension holding the key authorization's SHA-256.
fn validation_certificate(name: &str, digest_hex: &str) -> Result<CertifiedKey, String> {
    let digest = crate::crypto::unhex(digest_hex)
        .filter(|d| d.len() == 32)
        .ok_or("a bad digest")?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(&digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = crate::net::tls::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

impl Publish for Challenges {
    fn publish(
        &self,
        kind: ChallengeKind,
        name: &str,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), String> {
        let dir = self.kind_dir(kind);
        let fail = |e: std::io::Error| format!("{}: {e}", dir.display());
        durable::create_private_dir(&self.dir).map_err(fail)?;
        durable::create_private_dir(&dir).map_err(fail)?;
        let (file, content) = match kind {
            ChallengeKind::Http01 if token_is_safe(token) => {
                (token.to_string(), key_authorization.to_string())
            }
            ChallengeKind::TlsAlpn01 if name_is_safe(name) => (
                name.to_ascii_lowercase(),
                crate::crypto::hex(
                    ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes())
                        .as_ref(),
                ),
            ),
            _ => return Err(format!("refusing to publish a challenge for {name:?}")),
        };
        durable::replace_file(&dir, &file, content.as_bytes()).map_err(fail)
    }

    fn withdraw(&self, kind: ChallengeKind, name: &str, token: &str) {
        let file = match kind {
            ChallengeKind::Http01 => token.to_string(),
            ChallengeKind::TlsAlpn01 => name.to_ascii_lowercase(),
        };
        if token_is_safe(&file) || name_is_safe(&file) {
            let _ = std::fs::remove_file(self.kind_dir(kind).join(file));
        }
    }
}

/// The certificate resolver of the HTTPS listener: a TLS-ALPN-01
/// validation certificate for a handshake that offers `acme-tls/1`, the
/// served certificate (`inner`) otherwise, and nothing (a failed
/// handshake) when there is no policy to serve.
#[derive(Debug)]
pub struct AlpnResolver {
    /// The certificate served to everyone else; `None` when this listener
    /// only answers TLS-ALPN-01.
    pub inner: Option<Arc<dyn ResolvesServerCert>>,
    /// The published challenges.
    pub challenges: Arc<Challenges>,
}

impl ResolvesServerCert for AlpnResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name()?;
            let served = self.challenges.alpn_certificate(name);
            match &served {
                Some(_) => log::info!("TLS-ALPN-01: validation certificate served for {name}"),
                None => log::info!("TLS-ALPN-01: no challenge published for {name}"),
            }
            return served;
        }
        self.inner.as_ref()?.resolve(hello)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_published_withdrawn_and_only_for_safe_names() {
        let dir = tempfile::tempdir().unwrap();
        let c = Challenges::new(dir.path());
        c.publish(
            ChallengeKind::Http01,
            "mail.example",
            "tok_1-A",
            "tok_1-A.thumb",
        )
        .unwrap();
        assert_eq!(c.http_answer("tok_1-A").as_deref(), Some("tok_1-A.thumb"));
        assert_eq!(c.http_answer("../etc/passwd"), None);
        assert_eq!(c.http_answer("missing"), None);
        assert!(c.publish(ChallengeKind::Http01, "x", "../up", "k").is_err());
        c.withdraw(ChallengeKind::Http01, "mail.example", "tok_1-A");
        assert_eq!(c.http_answer("tok_1-A"), None);

        c.publish(ChallengeKind::TlsAlpn01, "Mail.Example", "t", "t.thumb")
            .unwrap();
        let cert = c
            .alpn_certificate("mail.example")
            .expect("a validation certificate");
        let (_, x509) = x509_parser::parse_x509_certificate(cert.cert[0].as_ref()).unwrap();
        let ext = x509
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        let digest = ring::digest::digest(&ring::digest::SHA256, b"t.thumb");
        // An OCTET STRING of 32 bytes: tag 0x04, length 0x20, the digest.
        assert_eq!(&ext.value[..2], &[0x04, 0x20]);
        assert_eq!(&ext.value[2..], digest.as_ref());
        assert!(c.alpn_certificate("other.example").is_none());
        assert!(
            c.publish(ChallengeKind::TlsAlpn01, "not a name", "t", "k")
                .is_err()
        );
    }
}
