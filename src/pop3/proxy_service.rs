//! The recording POP3 proxy wired to the real world: logins checked by the
//! shared [`ProxyContext`], upstream sessions over verified TLS, copies and
//! the archive index in the mailbox.

use std::net::IpAddr;
use std::sync::Arc;

use log::warn;

use super::proxy::{Account, Pop3ProxySession, Relay, Settings, Upstream};
use super::upstream::{DEFAULT_PORT, Pop3Upstream};
use crate::crypto::Password;
use crate::net::acceptor::Accepted;
use crate::net::driver::SessionEnv;
use crate::proxy::login_name::Target;
use crate::proxy::relay::{CopySink, LoginFailure, ProxyContext};
use crate::store::{Mailbox, MailboxId};

const SERVICE: &str = "pop3 proxy";

/// The [`Relay`] of one client connection.
pub struct StoreRelay {
    ctx: Arc<ProxyContext>,
    client: IpAddr,
    mailbox: Option<Mailbox>,
}

impl StoreRelay {
    /// The index key of a message: the account's identity and its UIDL.
    fn index_parts<'a>(account: &'a Account, uidl: &'a str) -> [&'a str; 3] {
        [&account.user, &account.host, uidl]
    }

    /// The key earlier versions wrote, with the port in the host: still
    /// honoured, so an upgrade archives nothing twice.
    fn legacy_index_parts<'a>(account: &'a Account, uidl: &'a str) -> [&'a str; 3] {
        [&account.user, &account.server, uidl]
    }
}

impl Relay for StoreRelay {
    type Up = Pop3Upstream;

    fn login(
        &mut self,
        name: &str,
        password: Password,
    ) -> Result<(Account, Pop3Upstream), LoginFailure> {
        let (login, up) =
            self.ctx
                .login(SERVICE, self.client, name, password, Pop3Upstream::open)?;
        self.mailbox = self.ctx.store.mailbox(&login.mailbox).ok();
        let server = Target {
            port: Some(login.target.port.unwrap_or(DEFAULT_PORT)),
            ..login.target.clone()
        }
        .to_string();
        let account = Account {
            mailbox: login.mailbox,
            user: login.remote_user,
            // Lowercase already (the login name parser made it so).
            host: login.target.host,
            server,
        };
        Ok((account, up))
    }

    fn is_archived(&mut self, account: &Account, uidl: &str) -> bool {
        // Unknown means "archive again": a duplicate copy, never a lost one.
        self.mailbox.as_ref().is_some_and(|m| {
            m.is_indexed(&Self::index_parts(account, uidl))
                || m.is_indexed(&Self::legacy_index_parts(account, uidl))
        })
    }

    fn start_copy(&mut self, mailbox: &MailboxId) -> Result<Box<dyn CopySink>, String> {
        self.ctx.start_copy(mailbox)
    }

    fn mark_archived(&mut self, account: &Account, uidl: &str) -> Result<(), String> {
        let mailbox = self
            .mailbox
            .as_ref()
            .ok_or("the mailbox could not be opened")?;
        mailbox
            .add_to_index(&Self::index_parts(account, uidl))
            .map_err(|e| {
                warn!(
                    "{SERVICE}: cannot record an archived message in {}: {e}",
                    mailbox.id()
                );
                e.to_string()
            })
    }
}

impl Upstream for Pop3Upstream {
    fn command(&mut self, line: &str) -> Result<String, String> {
        Pop3Upstream::command(self, line).map_err(|e| e.to_string())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        Pop3Upstream::read(self, buf).map_err(|e| e.to_string())
    }

    fn unread(&mut self, bytes: &[u8]) {
        Pop3Upstream::unread(self, bytes);
    }
}

/// Everything a POP3 proxy session needs, shared by all of them.
pub struct Pop3ProxyService {
    /// Protocol settings.
    pub settings: Settings,
    /// Store, upstream setup, this proxy's throttle.
    pub context: Arc<ProxyContext>,
    /// Certificate, timeouts, shutdown flag.
    pub env: SessionEnv,
}

impl Pop3ProxyService {
    /// Runs one client connection to its end.
    pub fn run(&self, accepted: Accepted, implicit_tls: bool) {
        self.env
            .serve(accepted, implicit_tls, SERVICE, |peer, tls| {
                let relay = StoreRelay {
                    ctx: Arc::clone(&self.context),
                    client: peer.ip(),
                    mailbox: None,
                };
                Pop3ProxySession::new(relay, self.settings.clone(), peer.ip(), tls)
            });
    }
}
