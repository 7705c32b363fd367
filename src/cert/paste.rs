//! A certificate chain and key as an administrator pastes them into the
//! console: checked block by block, refused with a reason in the
//! administrator's words, and re-encoded so that exactly what was checked
//! is what gets written (nothing else that came with the paste).
//!
//! PEM's framing is RFC 7468; its labels are read here by hand because the
//! PEM parser (rustls-pki-types) silently skips labels it does not know,
//! and an `ENCRYPTED PRIVATE KEY`, or a key pasted among the certificates,
//! must be refused by name, not ignored.

use rustls_pki_types::pem::{self, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate, X509Version};

use crate::crypto;
use crate::net::tls::TlsError;

/// A chain and its key, checked block by block.
pub struct Paste {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The one private key.
    pub key: PrivateKeyDer<'static>,
}

fn refuse(why: impl Into<String>) -> TlsError {
    TlsError(why.into())
}

/// The labels of the `-----BEGIN …-----` lines in `text`, in order, and
/// whether a block carries the legacy `Proc-Type: 4,ENCRYPTED` header.
fn labels(text: &str) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            out.push((label.to_owned(), false));
        } else if line.starts_with("Proc-Type:")
            && line.contains("ENCRYPTED")
            && let Some(last) = out.last_mut()
        {
            last.1 = true;
        }
    }
    out
}

const KEY_LABELS: [&str; 3] = ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"];

fn is_key_label(label: &str) -> bool {
    label.ends_with("PRIVATE KEY")
}

/// Every supported PEM section of `text`, decoded.
fn sections(text: &str, field: &str) -> Result<Vec<(SectionKind, Vec<u8>)>, TlsError> {
    let mut reader = text.as_bytes();
    let mut out = Vec::new();
    loop {
        match pem::from_buf(&mut reader) {
            Ok(Some(section)) => out.push(section),
            Ok(None) => return Ok(out),
            Err(e) => {
                return Err(refuse(format!(
                    "the {field} field is not valid PEM ({e}); paste the blocks as they are, \
                     from -----BEGIN to -----END"
                )));
            }
        }
    }
}

/// Checks the certificate field and the key field of a paste.
pub fn parse(cert_pem: &str, key_pem: &str) -> Result<Paste, TlsError> {
    let cert_labels = labels(cert_pem);
    if cert_labels.is_empty() {
        return Err(refuse(
            "the certificate field holds no certificate: paste the PEM blocks that begin with \
             -----BEGIN CERTIFICATE-----",
        ));
    }
    for (label, _) in &cert_labels {
        if is_key_label(label) {
            return Err(refuse(
                "the certificate field holds a private key: paste only the certificates there \
                 (-----BEGIN CERTIFICATE-----), and the key in the key field",
            ));
        }
        if label != "CERTIFICATE" {
            return Err(refuse(format!(
                "the certificate field holds a {label} block: paste only certificates there \
                 (-----BEGIN CERTIFICATE-----)"
            )));
        }
    }
    let key_labels = labels(key_pem);
    match key_labels.as_slice() {
        [] => {
            return Err(refuse(
                "the key field holds no private key: paste the block that begins with \
                 -----BEGIN PRIVATE KEY----- (or RSA PRIVATE KEY, EC PRIVATE KEY)",
            ));
        }
        [(label, encrypted)] => {
            if label == "ENCRYPTED PRIVATE KEY" || *encrypted {
                return Err(refuse(
                    "the private key is encrypted with a passphrase; paste it decrypted \
                     (openssl pkey -in key.pem -out plain.pem asks for the passphrase once)",
                ));
            }
            if label == "CERTIFICATE" {
                return Err(refuse(
                    "the key field holds a certificate: paste the private key there, and the \
                     certificates in the certificate field",
                ));
            }
            if !KEY_LABELS.contains(&label.as_str()) {
                return Err(refuse(format!(
                    "the key field holds a {label} block, not a private key"
                )));
            }
        }
        more => {
            return Err(refuse(format!(
                "the key field holds {} blocks; paste only the one private key of the certificate",
                more.len()
            )));
        }
    }
    let chain: Vec<CertificateDer<'static>> = sections(cert_pem, "certificate")?
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    if chain.len() != cert_labels.len() {
        return Err(refuse(
            "a certificate block cannot be decoded; paste the blocks as they are",
        ));
    }
    check_chain(&chain)?;
    let key = sections(key_pem, "key")?
        .into_iter()
        .find_map(|(kind, der)| match kind {
            SectionKind::PrivateKey => Some(PrivateKeyDer::Pkcs8(der.into())),
            SectionKind::RsaPrivateKey => Some(PrivateKeyDer::Pkcs1(der.into())),
            SectionKind::EcPrivateKey => Some(PrivateKeyDer::Sec1(der.into())),
            _ => None,
        })
        .ok_or_else(|| refuse("the private key block cannot be decoded"))?;
    Ok(Paste { chain, key })
}

/// Each certificate must be X.509 version 3 and issued by the next one:
/// leaf first, then its issuers, as TLS sends them (RFC 8446 §4.4.2).
fn check_chain(chain: &[CertificateDer<'_>]) -> Result<(), TlsError> {
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| {
            refuse(format!(
                "certificate {} is not a valid X.509 certificate: {e}",
                i + 1
            ))
        })?;
        if cert.version() != X509Version::V3 {
            return Err(refuse(format!(
                "certificate {} ({}) is an X.509 version {} certificate; TLS clients accept only \
                 version 3: issue it again (with openssl, add a subjectAltName extension)",
                i + 1,
                cert.subject(),
                cert.version().0 + 1
            )));
        }
        parsed.push(cert);
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        let (cert, next) = (&pair[0], &pair[1]);
        if cert.issuer() == next.subject() {
            continue;
        }
        let is_ca = |c: &X509Certificate<'_>| {
            c.basic_constraints()
                .ok()
                .flatten()
                .is_some_and(|bc| bc.value.ca)
        };
        let reversed = next.issuer() == cert.subject() || is_ca(cert);
        return Err(refuse(if reversed || is_ca(next) {
            format!(
                "the chain is not in order: certificate {} ({}) did not issue certificate {} \
                 (issued by {}); paste the server's certificate first, then the certificate \
                 that issued it, and so on",
                i + 2,
                next.subject(),
                i + 1,
                cert.issuer()
            )
        } else {
            format!(
                "the certificate field holds two server certificates ({} and {}); paste one, \
                 followed only by the certificates that issued it",
                cert.subject(),
                next.subject()
            )
        }));
    }
    Ok(())
}

/// The paste, re-encoded as PEM: the chain, then the key. Only what was
/// checked; nothing else that came with the paste.
pub fn encode(paste: &Paste) -> String {
    let mut out = String::new();
    for cert in &paste.chain {
        block(&mut out, "CERTIFICATE", cert.as_ref());
    }
    let label = match &paste.key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    block(&mut out, label, paste.key.secret_der());
    out
}

/// One RFC 7468 block: base64 in lines of 64 characters.
fn block(out: &mut String, label: &str, der: &[u8]) {
    let mut b64 = crypto::base64_encode(der);
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    zeroize::Zeroize::zeroize(&mut b64);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA, a leaf it issued, and their keys, as PEM.
    struct Made {
        ca: String,
        leaf: String,
        leaf_key: String,
        other_key: String,
        other_leaf: String,
    }

    fn made() -> Made {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let named = |name: &str| {
            let mut params = rcgen::CertificateParams::new(vec![name.into()]).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params
        };
        let leaf = named("gw.example").signed_by(&leaf_key, &issuer).unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        let other_leaf = named("other.example").self_signed(&other_key).unwrap();
        Made {
            ca: ca.pem(),
            leaf: leaf.pem(),
            leaf_key: leaf_key.serialize_pem(),
            other_key: other_key.serialize_pem(),
            other_leaf: other_leaf.pem(),
        }
    }

    /// Made with `openssl x509 -req` and no extensions: X.509 version 1.
    const V1_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBJTCBzQIUXnq2qbLLh3EdKV9B9viQMm4xfnkwCgYIKoZIzj0EAwIwFTETMBEG\nA1UEAwwKdjEuZXhhbXBsZTAgFw0yNjEyMDYyMDU2MjBaGA8yMTI2MTExMjIwNTYy\nMFowFTETMBEGA1UEAwwKdjEuZXhhbXBsZTBZMBMGByqGSM49AgEGCCqGSM49AwEH\nA0IABK7/1lO1mUDpFhgsMTmSPWqP23R3stWvgtANtL7GfuAD+wZVlOjKgYZqDvdi\n4IQ61fV+IUwKcZnfd+4iUsSEMI4wCgYIKoZIzj0EAwIDRwAwRAIgeQwCvKOg6jRD\nlNhKf8LsTktElNPOhRDmvHzR3netVrwCIGVJk+rF92XRcZ6Og16hSunor7DONr5Z\n6ixitimn6+wu\n-----END CERTIFICATE-----\n";
    const V1_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgCkJQcw8cf+0DsOVH\nFPTn+uqzMjK+wg9pFloppaq225mhRANCAASu/9ZTtZlA6RYYLDE5kj1qj9t0d7LV\nr4LQDbS+xn7gA/sGVZToyoGGag73YuCEOtX1fiFMCnGZ33fuIlLEhDCO\n-----END PRIVATE KEY-----\n";

    fn refused(cert: &str, key: &str, why: &str) {
        let e = parse(cert, key).err().expect("refused").to_string();
        assert!(e.contains(why), "expected {why:?}: {e}");
        assert!(
            !e.contains("Error") && !e.contains("Other("),
            "debug text: {e}"
        );
    }

    #[test]
    fn a_good_chain_and_key_are_re_encoded_and_nothing_else() {
        let m = made();
        let paste = parse(
            &format!("Bag Attributes: junk\n{}{}", m.leaf, m.ca),
            &m.leaf_key,
        )
        .unwrap();
        assert_eq!(paste.chain.len(), 2);
        let pem = encode(&paste);
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(pem.matches("PRIVATE KEY-----").count(), 2);
        assert!(!pem.contains("Bag"));
        // What was written parses back to the same.
        let again = parse(
            &pem[..pem.find("-----BEGIN PRIVATE KEY").unwrap()],
            &pem[pem.find("-----BEGIN PRIVATE KEY").unwrap()..],
        )
        .unwrap();
        assert_eq!(again.chain, paste.chain);
    }

    #[test]
    fn every_bad_paste_is_refused_in_words() {
        let m = made();
        refused(
            &format!("{}{}", m.leaf, m.other_key),
            &m.leaf_key,
            "the certificate field holds a private key",
        );
        refused(
            &m.leaf,
            &format!("{}{}", m.leaf_key, m.other_key),
            "the key field holds 2 blocks",
        );
        refused(
            &format!("{}{}", m.leaf, m.other_leaf),
            &m.leaf_key,
            "holds two server certificates",
        );
        refused(
            &format!("{}{}", m.ca, m.leaf),
            &m.leaf_key,
            "the chain is not in order",
        );
        refused(
            &m.leaf,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "encrypted with a passphrase",
        );
        refused(
            &m.leaf,
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nMIIB\n-----END RSA PRIVATE KEY-----\n",
            "encrypted with a passphrase",
        );
        refused(&m.leaf, &m.leaf, "the key field holds a certificate");
        refused(V1_CERT, V1_KEY, "X.509 version 1 certificate");
        refused("hello", &m.leaf_key, "holds no certificate");
        refused(&m.leaf, "", "holds no private key");
    }
}
