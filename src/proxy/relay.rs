//! What both recording proxies need from the gateway: checking a login
//! before anything is sent upstream, counting failures, and writing copies
//! into the mailbox through the spool.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;

use log::{info, warn};

use super::login_name::{self, ProxyLogin};
use super::upstream::{OpenError, UpstreamSetup};
use crate::auth::LoginThrottle;
use crate::store::mailbox::PendingMessage;
use crate::store::{Mailbox, MailboxId, Metadata, Spool, SpoolWriter, Status, Store, StoreError};

/// Why a proxy login failed, as the client will see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// Permanent: bad name, unknown or suspended mailbox, target refused,
    /// TLS refused, upstream refused the credentials.
    Refused,
    /// Temporary: the upstream is unreachable, or too many failures.
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

/// Shared by every session of a proxy.
pub struct ProxyContext {
    /// Where copies go.
    pub store: Store,
    /// Target policy, TLS client, timeouts.
    pub upstream: UpstreamSetup,
    /// Failure delays and lockouts (shared with POP3).
    pub throttle: Arc<LoginThrottle>,
}

impl ProxyContext {
    /// Parses the login name and checks the client's lockout and the
    /// mailbox (exists, active) before anything goes upstream.
    pub fn authorize(
        &self,
        service: &str,
        client: IpAddr,
        name: &str,
    ) -> Result<ProxyLogin, LoginFailure> {
        let parsed = login_name::parse(name);
        let mailbox = parsed.as_ref().ok().map(|l| l.mailbox.clone());
        if let Err(why) = self.throttle.check(client, mailbox.as_ref()) {
            info!("{service} {client}: login {name:?} refused: locked out ({why:?})");
            return Err(LoginFailure::Temporary);
        }
        let login = match parsed {
            Ok(login) => login,
            Err(why) => {
                return Err(self.refuse(
                    service,
                    client,
                    name,
                    &format!("invalid login name: {why}"),
                    None,
                ));
            }
        };
        match self.store.mailbox(&login.mailbox) {
            Ok(m) if m.info().status == Status::Active => Ok(login),
            Ok(_) => Err(self.refuse(
                service,
                client,
                name,
                "the mailbox is suspended",
                mailbox.as_ref(),
            )),
            Err(StoreError::NotFound(_)) => {
                Err(self.refuse(service, client, name, "no such mailbox", mailbox.as_ref()))
            }
            Err(e) => {
                warn!(
                    "{service} {client}: cannot open mailbox {}: {e}",
                    login.mailbox
                );
                Err(LoginFailure::Temporary)
            }
        }
    }

    fn refuse(
        &self,
        service: &str,
        client: IpAddr,
        name: &str,
        why: &str,
        mailbox: Option<&MailboxId>,
    ) -> LoginFailure {
        info!("{service} {client}: login {name:?} refused: {why}");
        self.throttle.failed(client, mailbox);
        LoginFailure::Refused
    }

    /// Turns the result of opening the upstream session into the login's
    /// outcome, counting failures and logging the reason.
    pub fn opened<T>(
        &self,
        service: &str,
        client: IpAddr,
        login: &ProxyLogin,
        name: &str,
        result: Result<T, OpenError>,
    ) -> Result<T, LoginFailure> {
        match result {
            Ok(session) => {
                self.throttle.succeeded(client, &login.mailbox);
                info!(
                    "{service} {client}: logged in as {} at {} for {}",
                    login.remote_user, login.target, login.mailbox
                );
                Ok(session)
            }
            Err(OpenError::AuthFailed(why)) => Err(self.refuse(
                service,
                client,
                name,
                &format!("the upstream refused the credentials: {why}"),
                Some(&login.mailbox),
            )),
            Err(OpenError::Refused(why)) => {
                Err(self.refuse(service, client, name, &why, Some(&login.mailbox)))
            }
            Err(OpenError::Unavailable(why)) => {
                warn!("{service} {client}: login {name:?}: {why}");
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
