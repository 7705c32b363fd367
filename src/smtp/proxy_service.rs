//! The recording SMTP proxy wired to the real world: logins parsed and
//! checked against the store, the throttle and the target policy; upstream
//! sessions over verified TLS; copies through the spool into the mailbox.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;

use log::{info, warn};

use super::proxy::{CopySink, LoginFailure, PreparedCopy, ProxySession, Relay, Settings, Upstream};
use super::upstream::{OpenError, SendOutcome, SmtpUpstream, UpReply, UpstreamSetup};
use crate::auth::LoginThrottle;
use crate::crypto::Password;
use crate::net::acceptor::Accepted;
use crate::net::driver::SessionEnv;
use crate::proxy::login_name;
use crate::store::mailbox::PendingMessage;
use crate::store::{Mailbox, MailboxId, Metadata, Spool, SpoolWriter, Status, Store, StoreError};

/// Shared by every proxy session.
pub struct ProxyContext {
    /// Where copies go.
    pub store: Store,
    /// Target policy, TLS client, timeouts.
    pub upstream: UpstreamSetup,
    /// Failure delays and lockouts (shared with POP3).
    pub throttle: Arc<LoginThrottle>,
}

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
        let ctx = &self.ctx;
        let client = self.client;
        let parsed = login_name::parse(name);
        let mailbox = parsed.as_ref().ok().map(|l| l.mailbox.clone());
        if let Err(why) = ctx.throttle.check(client, mailbox.as_ref()) {
            info!("smtp proxy {client}: login {name:?} refused: locked out ({why:?})");
            return Err(LoginFailure::Temporary);
        }
        let refuse = |why: String, mailbox: Option<&MailboxId>| {
            info!("smtp proxy {client}: login {name:?} refused: {why}");
            ctx.throttle.failed(client, mailbox);
            Err(LoginFailure::Refused)
        };
        let login = match parsed {
            Ok(login) => login,
            Err(why) => return refuse(format!("invalid login name: {why}"), None),
        };
        match ctx.store.mailbox(&login.mailbox) {
            Ok(m) if m.info().status == Status::Active => {}
            Ok(_) => return refuse("the mailbox is suspended".into(), mailbox.as_ref()),
            Err(StoreError::NotFound(_)) => {
                return refuse("no such mailbox".into(), mailbox.as_ref());
            }
            Err(e) => {
                warn!(
                    "smtp proxy {client}: cannot open mailbox {}: {e}",
                    login.mailbox
                );
                return Err(LoginFailure::Temporary);
            }
        }
        match SmtpUpstream::open(&ctx.upstream, &login, &password) {
            Ok(up) => {
                ctx.throttle.succeeded(client, &login.mailbox);
                info!(
                    "smtp proxy {client}: logged in as {} at {} for {}",
                    login.remote_user, login.target, login.mailbox
                );
                Ok((login.mailbox, up))
            }
            Err(OpenError::AuthFailed(why)) => refuse(
                format!("the upstream refused the credentials: {why}"),
                mailbox.as_ref(),
            ),
            Err(OpenError::Refused(why)) => refuse(why, mailbox.as_ref()),
            Err(OpenError::Unavailable(why)) => {
                warn!("smtp proxy {client}: login {name:?}: {why}");
                Err(LoginFailure::Temporary)
            }
        }
    }

    fn start_copy(&mut self, mailbox: &MailboxId) -> Result<Box<dyn CopySink>, String> {
        let mailbox = self.ctx.store.mailbox(mailbox).map_err(|e| e.to_string())?;
        let spool = self.ctx.store.spool().map_err(|e| e.to_string())?;
        Ok(Box::new(StoreCopy { mailbox, spool }))
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

struct StoreCopy {
    mailbox: Mailbox,
    spool: SpoolWriter,
}

impl Write for StoreCopy {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.spool.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.spool.flush()
    }
}

impl CopySink for StoreCopy {
    fn prepare(self: Box<Self>, metadata: Metadata) -> Result<Box<dyn PreparedCopy>, String> {
        let spool = self.spool.finish().map_err(|e| format!("spool: {e}"))?;
        let pending = self
            .mailbox
            .prepare(&spool, &metadata)
            .map_err(|e| e.to_string())?;
        Ok(Box::new(StoredCopy { spool, pending }))
    }
}

struct StoredCopy {
    spool: Spool,
    pending: PendingMessage,
}

impl PreparedCopy for StoredCopy {
    fn message(&self) -> io::Result<Box<dyn Read>> {
        Ok(Box::new(self.spool.reader()?))
    }

    fn commit(self: Box<Self>) -> Result<String, String> {
        self.pending
            .commit()
            .map(|c| c.name().to_string())
            .map_err(|e| e.to_string())
    }
}

/// Everything a proxy session needs, shared by all of them.
pub struct SmtpProxyService {
    /// Protocol settings.
    pub settings: Settings,
    /// Store, upstream setup, throttle.
    pub context: Arc<ProxyContext>,
    /// Certificate, timeouts, shutdown flag.
    pub env: SessionEnv,
}

impl SmtpProxyService {
    /// Runs one client connection to its end.
    pub fn run(&self, accepted: Accepted, implicit_tls: bool) {
        let Some(mut opened) = self.env.open(accepted, implicit_tls, "smtp proxy") else {
            return;
        };
        let peer = opened.conn.peer();
        let relay = StoreRelay {
            ctx: Arc::clone(&self.context),
            client: peer.ip(),
        };
        let mut session = ProxySession::new(self.settings.clone(), relay, peer.ip(), opened.tls);
        let end = self.env.drive(&mut opened.conn, &mut session);
        info!("smtp proxy {peer}: {end}");
        opened.conn.close();
    }
}
