//! A throwaway certificate authority for the tests' upstream servers.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA whose certificate the test gives the gateway as `proxy.extra_ca_file`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate file.
    pub cert_file: PathBuf,
}

impl TestCa {
    /// A new CA; its certificate is written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_file = dir.join(format!("{name}-ca.pem"));
        fs::create_dir_all(dir).unwrap();
        fs::write(&cert_file, cert.pem()).unwrap();
        TestCa {
            issuer: Issuer::new(params, key),
            cert_file,
        }
    }

    /// Issues a server certificate for `names`; returns (certificate file, key file).
    pub fn issue(&self, dir: &Path, label: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_file, key_file) = (
            dir.join(format!("{label}.pem")),
            dir.join(format!("{label}.key")),
        );
        fs::write(&cert_file, cert.pem()).unwrap();
        fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}
