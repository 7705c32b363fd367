//! The journal SMTP service: who may connect, and the store behind the
//! protocol. The protocol rules live in [`super::server`], the socket side
//! in the driver.

use std::net::IpAddr;
use std::sync::Arc;

use log::info;

use super::delivery::StoreBackend;
use super::server::{Session, Settings};
use crate::net::acceptor::Accepted;
use crate::net::cidr::Cidr;
use crate::net::driver::SessionEnv;
use crate::store::Store;
use crate::store::reserve::DiskReserve;

/// Everything a journal SMTP session needs, shared by all of them.
pub struct SmtpService {
    /// Protocol settings.
    pub settings: Settings,
    /// The mailbox store.
    pub store: Store,
    /// Domain of mailbox addresses.
    pub mailbox_domain: String,
    /// The disk reserve: below it, MAIL and RCPT get `452 4.3.1`.
    pub reserve: Arc<DiskReserve>,
    /// `limits.max_pending_bytes_per_mailbox` (0: none).
    pub max_pending_bytes: u64,
    /// Who may connect; empty means everyone.
    pub allowed_clients: Vec<Cidr>,
    /// Certificate, timeouts (RFC 5321 section 4.5.3.2), shutdown flag.
    pub env: SessionEnv,
}

impl SmtpService {
    fn allowed(&self, ip: IpAddr) -> bool {
        self.allowed_clients.is_empty() || self.allowed_clients.iter().any(|c| c.contains(ip))
    }

    /// Runs one connection to its end. `implicit_tls` for `listen_tls` listeners.
    pub fn run(&self, accepted: Accepted, implicit_tls: bool) {
        self.env.serve(accepted, implicit_tls, "smtp", |peer, tls| {
            let mut backend = StoreBackend::new(
                self.store.clone(),
                &self.mailbox_domain,
                Arc::clone(&self.reserve),
            );
            backend.max_pending_bytes = self.max_pending_bytes;
            let session = Session::new(self.settings.clone(), backend, peer.ip(), tls);
            if self.allowed(peer.ip()) {
                return session;
            }
            info!("smtp {peer}: refused, not in smtp.allowed_clients");
            session.refusing()
        });
    }
}
