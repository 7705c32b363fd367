//! The recording SMTP proxy wired to the real world: logins checked and
//! copies made by the shared [`StoreRelay`], upstream effects performed by
//! the driver.

use std::sync::Arc;

use super::proxy::{ProxySession, Settings};
use crate::net::acceptor::Accepted;
use crate::net::driver::SessionEnv;
use crate::proxy::store_relay::{ProxyContext, StoreRelay};

const SERVICE: &str = "smtp proxy";

/// Everything a proxy session needs, shared by all of them.
pub struct SmtpProxyService {
    /// Protocol settings.
    pub settings: Settings,
    /// Store, dialer, this proxy's throttle.
    pub context: Arc<ProxyContext>,
    /// Certificate, timeouts, shutdown flag.
    pub env: SessionEnv,
}

impl SmtpProxyService {
    /// Runs one client connection to its end.
    pub fn run(&self, accepted: Accepted, implicit_tls: bool) {
        self.env
            .serve(accepted, implicit_tls, SERVICE, |peer, tls| {
                let relay = StoreRelay::new(Arc::clone(&self.context), SERVICE, peer.ip());
                ProxySession::new(self.settings.clone(), relay, peer.ip(), tls)
            });
    }
}
