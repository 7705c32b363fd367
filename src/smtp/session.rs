//! The socket side of a journal SMTP connection: reading with the command
//! and data timeouts, writing replies, upgrading to TLS. All protocol rules
//! live in [`super::server`].

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use log::{debug, info, warn};

use super::delivery::StoreBackend;
use super::server::{Session, Settings, Signal};
use crate::net::acceptor::Accepted;
use crate::net::cidr::Cidr;
use crate::net::conn::{Connection, Input};
use crate::net::tls::TlsServer;
use crate::store::Store;

/// Everything a journal SMTP session needs, shared by all of them.
pub struct SmtpService {
    /// Protocol settings.
    pub settings: Settings,
    /// The mailbox store.
    pub store: Store,
    /// Domain of mailbox addresses.
    pub mailbox_domain: String,
    /// Server certificate.
    pub tls: Arc<TlsServer>,
    /// Who may connect; empty means everyone.
    pub allowed_clients: Vec<Cidr>,
    /// RFC 5321 section 4.5.3.2 command timeout.
    pub command_timeout: Duration,
    /// Timeout while reading message data.
    pub data_timeout: Duration,
    /// TLS handshake timeout.
    pub handshake_timeout: Duration,
    /// Set when the gateway is stopping.
    pub shutdown: Arc<AtomicBool>,
}

impl SmtpService {
    fn allowed(&self, ip: IpAddr) -> bool {
        self.allowed_clients.is_empty() || self.allowed_clients.iter().any(|c| c.contains(ip))
    }

    /// Runs one connection to its end. `implicit_tls` for `listen_tls` listeners.
    pub fn run(&self, accepted: Accepted, implicit_tls: bool) {
        let Accepted { tcp, peer, guard } = accepted;
        let _guard = guard;
        let mut conn = Connection::new(tcp, peer, Arc::clone(&self.shutdown), self.command_timeout);
        let mut tls = None;
        if implicit_tls {
            match conn.start_tls(self.tls.current(), self.handshake_timeout) {
                Ok(info) => tls = Some(info),
                Err(e) => {
                    info!("smtps {peer}: TLS handshake failed: {e}");
                    return;
                }
            }
        }
        let backend = StoreBackend::new(self.store.clone(), &self.mailbox_domain);
        let mut session = Session::new(self.settings.clone(), backend, peer.ip(), tls);
        let mut out = Vec::new();
        if !self.allowed(peer.ip()) {
            info!("smtp {peer}: refused, not in smtp.allowed_clients");
            session.refusal().write_to(&mut out);
            let _ = conn.send(&out);
            conn.close();
            return;
        }
        info!(
            "smtp {peer}: connected{}",
            session
                .tls()
                .map(|t| format!(" ({} {})", t.version, t.cipher))
                .unwrap_or_default()
        );
        session.greeting().write_to(&mut out);
        let mut buf = vec![0u8; 64 * 1024];
        let end = loop {
            if let Err(e) = conn.send(&out) {
                break format!("write failed: {e}");
            }
            out.clear();
            let timeout = if session.expecting_data() {
                self.data_timeout
            } else {
                self.command_timeout
            };
            let n = match conn.read_input(&mut buf, timeout, session.is_idle()) {
                Ok(Input::Data(n)) => n,
                Ok(Input::Closed) if session.expecting_data() => {
                    break "client disconnected during message data; nothing stored".into();
                }
                Ok(Input::Closed) => break "client disconnected".into(),
                Ok(Input::TimedOut) => {
                    session.timeout_reply().write_to(&mut out);
                    let _ = conn.send(&out);
                    break "timed out".into();
                }
                Ok(Input::ShuttingDown) => {
                    session.shutdown_reply().write_to(&mut out);
                    let _ = conn.send(&out);
                    break "gateway shutting down".into();
                }
                Err(e) => break format!("read failed: {e}"),
            };
            match session.receive(&buf[..n], &mut out) {
                Signal::Continue => {}
                Signal::Close => {
                    let _ = conn.send(&out);
                    break "closed".into();
                }
                Signal::StartTls => {
                    // Bytes the client sent after STARTTLS in the same packet
                    // are not fed on: RFC 3207 section 4.2 (STARTTLS injection).
                    if let Err(e) = conn.send(&out) {
                        break format!("write failed: {e}");
                    }
                    out.clear();
                    match conn.start_tls(self.tls.current(), self.handshake_timeout) {
                        Ok(info) => {
                            debug!("smtp {peer}: STARTTLS {} {}", info.version, info.cipher);
                            session.tls_started(info);
                        }
                        Err(e) => {
                            warn!("smtp {peer}: STARTTLS handshake failed: {e}");
                            return;
                        }
                    }
                }
            }
        };
        info!("smtp {peer}: {end}");
        conn.close();
    }
}
