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
        let logins = Arc::clone(&self.logins);
        let served = self.env.serve(accepted, implicit_tls, "pop3", |peer, tls| {
            Session::new(
                self.settings.clone(),
                StoreLogin::new(logins, peer.ip()),
                tls,
            )
        });
        if let Some(user) = served.as_ref().and_then(|s| s.user()) {
            info!("pop3: session of {user} ended");
        }
    }
}
