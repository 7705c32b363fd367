//! What both recording proxies need from the gateway: checking a login
//! before anything is sent upstream, counting failures, and writing copies
//! into the mailbox through the spool.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;

use log::{info, warn};

use super::login_name::{self, ProxyLogin};
use super::upstream::{OpenError, UpstreamSetup};
use crate::auth::{self, Attempt, LoginThrottle};
use crate::crypto::Password;
use crate::store::mailbox::PendingMessage;
use crate::store::{Mailbox, MailboxId, Metadata, Spool, SpoolWriter, Status, Store, StoreError};

/// Why a proxy login failed, as the client will see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// Permanent: bad name, unknown or suspended mailbox, target refused,
    /// TLS refused, upstream refused the credentials.
    Refused,
    /// Temporary: the upstream is unreachable, the store cannot be read, or
    /// too many failures.
    Temporary,
}

/// A copy being written: the message goes in through `Write`.
pub trait CopySink: Write {
    /// Completes the copy in the mailbox's `tmp/` and makes it durable.
    fn prepare(self: Box<Self>, metadata: Metadata) -> Result<Box<dyn PreparedCopy>, String>;
}

/// A durable copy not yet visible.
pub trait PreparedCopy {
    /// The message, to send upstream.
    fn message(&self) -> io::Result<Box<dyn Read>>;
    /// Makes the copy visible; returns its name.
    fn commit(self: Box<Self>) -> Result<String, String>;
}

/// Shared by every session of one proxy.
pub struct ProxyContext {
    /// Where copies go.
    pub store: Store,
    /// Target policy, TLS client, timeouts.
    pub upstream: UpstreamSetup,
    /// This proxy's failure delays and lockouts (each service counts its own).
    pub throttle: Arc<LoginThrottle>,
}

/// A proxy login that passed every local check: the name parsed, no control
/// character anywhere, the mailbox exists and takes mail. The upstream
/// clients take only this, so nothing unchecked can reach an upstream.
pub struct Authorized {
    /// The parsed login name.
    pub login: ProxyLogin,
    password: Password,
}

impl Authorized {
    /// The password to present upstream.
    pub fn password(&self) -> &Password {
        &self.password
    }
}

impl ProxyContext {
    /// A whole proxy login: checks the name, the password and the mailbox
    /// before anything is sent upstream, then opens the upstream session
    /// with `open`. Every refusal counts toward this proxy's lockouts and
    /// waits the failure delay; a temporary upstream failure counts against
    /// the client address (so the proxy is no fast port scanner).
    pub fn login<T>(
        &self,
        service: &str,
        client: IpAddr,
        name: &str,
        password: Password,
        open: impl FnOnce(&UpstreamSetup, &Authorized) -> Result<T, OpenError>,
    ) -> Result<(ProxyLogin, T), LoginFailure> {
        let parsed = login_name::parse(name);
        let mailbox = parsed.as_ref().ok().map(|l| l.mailbox.clone());
        let attempt = match self.throttle.begin(client, mailbox.as_ref()) {
            Ok(attempt) => attempt,
            Err(why) => {
                info!("{service} {client}: login {name:?} refused: locked out ({why:?})");
                return Err(LoginFailure::Temporary);
            }
        };
        let refuse = |attempt: Attempt<'_>, why: &str| {
            info!("{service} {client}: login {name:?} refused: {why}");
            std::thread::sleep(attempt.failed());
            LoginFailure::Refused
        };
        // Checked before parsing, so the log names the real reason.
        if auth::has_control_characters(name) || auth::has_control_characters(password.expose()) {
            return Err(refuse(
                attempt,
                "control characters in the login name or password",
            ));
        }
        let login = match parsed {
            Ok(login) => login,
            Err(why) => return Err(refuse(attempt, &format!("invalid login name: {why}"))),
        };
        match self.store.mailbox(&login.mailbox) {
            Ok(m) if m.info().status == Status::Active => {}
            Ok(_) => return Err(refuse(attempt, "the mailbox is suspended")),
            Err(StoreError::NotFound(_)) => return Err(refuse(attempt, "no such mailbox")),
            Err(e) => {
                warn!(
                    "{service} {client}: cannot open mailbox {}: {e}",
                    login.mailbox
                );
                return Err(LoginFailure::Temporary);
            }
        }
        let authorized = Authorized { login, password };
        match open(&self.upstream, &authorized) {
            Ok(session) => {
                attempt.succeeded();
                let login = authorized.login;
                info!(
                    "{service} {client}: logged in as {} at {} for {}",
                    login.remote_user, login.target, login.mailbox
                );
                Ok((login, session))
            }
            Err(OpenError::AuthFailed(why)) => Err(refuse(
                attempt,
                &format!("the upstream refused the credentials: {why}"),
            )),
            Err(OpenError::Refused(why)) => Err(refuse(attempt, &why)),
            Err(OpenError::Unavailable(why)) => {
                warn!("{service} {client}: login {name:?}: {why}");
                std::thread::sleep(attempt.unavailable());
                Err(LoginFailure::Temporary)
            }
        }
    }

    /// Starts a copy for `mailbox`.
    pub fn start_copy(&self, mailbox: &MailboxId) -> Result<Box<dyn CopySink>, String> {
        let mailbox = self.store.mailbox(mailbox).map_err(|e| e.to_string())?;
        let spool = self.store.spool().map_err(|e| e.to_string())?;
        Ok(Box::new(StoreCopy { mailbox, spool }))
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
