//! The recording POP3 proxy wired to the real world: logins checked, copies
//! made and the archive index kept by the shared [`StoreRelay`], upstream
//! effects performed by the driver.

use std::sync::Arc;

use super::proxy::{Pop3ProxySession, Settings};
use crate::net::acceptor::Accepted;
use crate::net::driver::SessionEnv;
use crate::proxy::store_relay::{ProxyContext, StoreRelay};

const SERVICE: &str = "pop3 proxy";

/// Everything a POP3 proxy session needs, shared by all of them.
pub struct Pop3ProxyService {
    /// Protocol settings.
    pub settings: Settings,
    /// Store, dialer, this proxy's throttle.
    pub context: Arc<ProxyContext>,
    /// Certificate, timeouts, shutdown flag.
    pub env: SessionEnv,
}

impl Pop3ProxyService {
    /// Runs one client connection to its end.
    pub fn run(&self, accepted: Accepted, implicit_tls: bool) {
        self.env
            .serve(accepted, implicit_tls, SERVICE, |peer, tls| {
                let relay = StoreRelay::new(Arc::clone(&self.context), SERVICE, peer.ip());
                Pop3ProxySession::new(relay, self.settings.clone(), peer.ip(), tls)
            });
    }
}
