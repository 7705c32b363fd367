//! The socket side of a POP3 connection; the protocol lives in [`super::server`].

use std::sync::Arc;

use log::info;

use super::maildrop::{LoginContext, StoreLogin};
use super::server::{Session, Settings};
use crate::net::acceptor::Accepted;
use crate::net::driver::SessionEnv;

/// Everything a POP3 session needs, shared by all of them.
pub struct Pop3Service {
    /// Protocol settings.
    pub settings: Settings,
    /// Store, throttle and KDF cap for logins.
    pub logins: Arc<LoginContext>,
    /// Certificate, timeouts, shutdown flag.
    pub env: SessionEnv,
}

impl Pop3Service {
    /// Runs one connection to its end. `implicit_tls` for `listen_tls` listeners.
    pub fn run(&self, accepted: Accepted, implicit_tls: bool) {
        let Some(mut opened) = self.env.open(accepted, implicit_tls, "pop3") else {
            return;
        };
        let peer = opened.conn.peer();
        let backend = StoreLogin::new(Arc::clone(&self.logins), peer.ip());
        let mut session = Session::new(self.settings.clone(), backend, opened.tls);
        let end = self.env.drive(&mut opened.conn, &mut session);
        info!(
            "pop3 {peer}: {} ({end})",
            session.user().unwrap_or("not logged in")
        );
        opened.conn.close();
    }
}
