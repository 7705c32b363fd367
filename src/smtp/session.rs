//! The socket side of a journal SMTP connection: reading with the command
//! and data timeouts, writing replies, upgrading to TLS. All protocol rules
//! live in [`super::server`].

use std::net::IpAddr;

use log::info;

use super::delivery::StoreBackend;
use super::server::{Backend, Session, Settings, TlsInfo};
use crate::net::acceptor::Accepted;
use crate::net::cidr::Cidr;
use crate::net::driver::{Protocol, SessionEnv, Step};
use crate::store::Store;

/// Everything a journal SMTP session needs, shared by all of them.
pub struct SmtpService {
    /// Protocol settings.
    pub settings: Settings,
    /// The mailbox store.
    pub store: Store,
    /// Domain of mailbox addresses.
    pub mailbox_domain: String,
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
        let Some(mut opened) = self.env.open(accepted, implicit_tls, "smtp") else {
            return;
        };
        let peer = opened.conn.peer();
        let backend = StoreBackend::new(self.store.clone(), &self.mailbox_domain);
        let mut session = Session::new(self.settings.clone(), backend, peer.ip(), opened.tls);
        if !self.allowed(peer.ip()) {
            info!("smtp {peer}: refused, not in smtp.allowed_clients");
            let mut out = Vec::new();
            session.refusal().write_to(&mut out);
            opened.conn.say_goodbye(&out);
            opened.conn.close();
            return;
        }
        let end = self.env.drive(&mut opened.conn, &mut session);
        info!("smtp {peer}: {end}");
        opened.conn.close();
    }
}

impl<B: Backend> Protocol for Session<B> {
    fn greeting(&mut self, out: &mut Vec<u8>) {
        Session::greeting(self).write_to(out);
    }

    fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        Session::receive(self, input, out)
    }

    fn tls_started(&mut self, tls: TlsInfo) {
        Session::tls_started(self, tls);
    }

    fn is_idle(&self) -> bool {
        Session::is_idle(self)
    }

    fn has_partial_command(&self) -> bool {
        Session::has_partial_command(self)
    }

    fn has_pending_input(&self) -> bool {
        Session::has_pending_input(self)
    }

    fn take_delay(&mut self) -> std::time::Duration {
        Session::take_delay(self)
    }

    fn expecting_data(&self) -> bool {
        Session::expecting_data(self)
    }

    fn timed_out(&mut self, out: &mut Vec<u8>) {
        self.timeout_reply().write_to(out);
    }

    fn shutting_down(&mut self, out: &mut Vec<u8>) {
        self.shutdown_reply().write_to(out);
    }
}
