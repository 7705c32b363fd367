//! A scripted upstream server speaking implicit TLS with a certificate from a
//! test CA: for the faults no real server will produce on demand (closing in
//! the middle of a response, answering nonsense).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::ca::TestCa;

/// One accepted connection, after the handshake.
pub struct Peer {
    reader: BufReader<StreamOwned<ServerConnection, TcpStream>>,
}

impl Peer {
    /// Reads one line without its line end; `None` when the client is gone.
    pub fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_string()),
        }
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        let stream = self.reader.get_mut();
        let _ = stream.write_all(bytes);
        let _ = stream.flush();
    }

    /// Ends the connection abruptly (no close_notify).
    pub fn vanish(self) {
        let _ = self
            .reader
            .into_inner()
            .sock
            .shutdown(std::net::Shutdown::Both);
    }
}

/// A listener on 127.0.0.1 running `script` for every connection.
pub struct Scripted {
    addr: SocketAddr,
}

impl Scripted {
    /// Serves `script` over implicit TLS for `localhost`, with a certificate
    /// `ca` issued into `dir`.
    pub fn start(dir: &Path, ca: &TestCa, script: fn(Peer)) -> Scripted {
        let (cert, key) = ca.issue(dir, "scripted", &["localhost"]);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        let config = Arc::new(
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let config = Arc::clone(&config);
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
                    let conn = ServerConnection::new(config).unwrap();
                    let stream = StreamOwned::new(conn, tcp);
                    script(Peer {
                        reader: BufReader::new(stream),
                    });
                });
            }
        });
        Scripted { addr }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}
