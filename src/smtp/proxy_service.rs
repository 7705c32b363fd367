//! The recording SMTP proxy wired to the real world: logins checked by the
//! shared [`ProxyContext`], upstream sessions over verified TLS, copies
//! through the spool into the mailbox.

use std::io::Read;
use std::net::IpAddr;
use std::sync::Arc;

use super::proxy::{ProxySession, Relay, Settings, Upstream};
use super::upstream::{SendOutcome, SmtpUpstream, UpReply};
use crate::crypto::Password;
use crate::net::acceptor::Accepted;
use crate::net::driver::SessionEnv;
use crate::proxy::relay::{CopySink, LoginFailure, ProxyContext};
use crate::store::MailboxId;

const SERVICE: &str = "smtp proxy";

/// The [`Relay`] of one client connection.
pub struct StoreRelay {
    ctx: Arc<ProxyContext>,
    client: IpAddr,
}

impl Relay for StoreRelay {
    type Up = SmtpUpstream;

    fn login(
        &mut self,
        name: &str,
        password: Password,
    ) -> Result<(MailboxId, SmtpUpstream), LoginFailure> {
        let (login, up) =
            self.ctx
                .login(SERVICE, self.client, name, password, SmtpUpstream::open)?;
        Ok((login.mailbox, up))
    }

    fn start_copy(&mut self, mailbox: &MailboxId) -> Result<Box<dyn CopySink>, String> {
        self.ctx.start_copy(mailbox)
    }
}

impl Upstream for SmtpUpstream {
    fn supports(&self, keyword: &str) -> bool {
        SmtpUpstream::supports(self, keyword)
    }

    fn command(&mut self, line: &str) -> Result<UpReply, String> {
        SmtpUpstream::command(self, line).map_err(|e| e.to_string())
    }

    fn send_message(&mut self, message: &mut dyn Read) -> SendOutcome {
        SmtpUpstream::send_message(self, message)
    }
}

/// Everything a proxy session needs, shared by all of them.
pub struct SmtpProxyService {
    /// Protocol settings.
    pub settings: Settings,
    /// Store, upstream setup, this proxy's throttle.
    pub context: Arc<ProxyContext>,
    /// Certificate, timeouts, shutdown flag.
    pub env: SessionEnv,
}

impl SmtpProxyService {
    /// Runs one client connection to its end.
    pub fn run(&self, accepted: Accepted, implicit_tls: bool) {
        self.env
            .serve(accepted, implicit_tls, SERVICE, |peer, tls| {
                let relay = StoreRelay {
                    ctx: Arc::clone(&self.context),
                    client: peer.ip(),
                };
                ProxySession::new(self.settings.clone(), relay, peer.ip(), tls)
            });
    }
}
