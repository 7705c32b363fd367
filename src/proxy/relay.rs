//! What both recording proxies need from the gateway, behind one trait
//! ([`Relay`]) so that their machines can be tested without sockets or disks:
//! the local checks of a login before anything is sent upstream, the
//! accounting of its outcome, the copies, and the POP3 proxy's archive index.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};

use super::login_name::{self, ProxyLogin};
use super::upstream::{Dialer, OpenError};
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

/// A refused login and how long its answer waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// What the client is told.
    pub failure: LoginFailure,
    /// The failed-login delay (none for a lockout).
    pub delay: Duration,
}

/// A proxy login that passed every local check: the name parsed, no control
/// character anywhere, the mailbox exists and takes mail, and the attempt is
/// counted in flight. The upstream clients take only this, so nothing
/// unchecked can reach an upstream.
pub struct Authorized {
    /// The parsed login name.
    pub login: ProxyLogin,
    password: Password,
    attempt: Option<Attempt>,
}

impl Authorized {
    /// A login whose attempt is counted by `attempt` (`None` in tests).
    pub fn new(login: ProxyLogin, password: Password, attempt: Option<Attempt>) -> Authorized {
        Authorized {
            login,
            password,
            attempt,
        }
    }

    /// The password to present upstream.
    pub fn password(&self) -> &Password {
        &self.password
    }
}

/// A copy being written: the message goes in through `Write`.
pub trait CopySink: Write {
    /// Completes the copy in the mailbox's `tmp/` and makes it durable.
    fn prepare(self: Box<Self>, metadata: Metadata) -> Result<Box<dyn PreparedCopy>, StoreError>;
}

/// A durable copy not yet visible.
pub trait PreparedCopy {
    /// The message, to send upstream.
    fn message(&self) -> io::Result<Box<dyn Read>>;
    /// Makes the copy visible; returns its name.
    fn commit(self: Box<Self>) -> Result<String, StoreError>;
}

/// What a proxy session needs of the gateway.
pub trait Relay {
    /// The local checks of a login, before anything is sent upstream.
    fn authorize(&mut self, name: &str, password: Password) -> Result<Authorized, Refusal>;
    /// How to reach upstream servers.
    fn dialer(&self) -> &Dialer;
    /// The upstream login ended: counts it, logs it, and says what the
    /// client is told and after what delay.
    fn finish_login(
        &mut self,
        authorized: Authorized,
        outcome: Result<(), OpenError>,
    ) -> Result<ProxyLogin, Refusal>;
    /// Starts a copy for `mailbox`.
    fn start_copy(&mut self, mailbox: &MailboxId) -> Result<Box<dyn CopySink>, StoreError>;
    /// Whether the message `key` names was archived in `mailbox` before.
    fn is_archived(&mut self, mailbox: &MailboxId, key: &[&str]) -> bool;
    /// Records durably that the message `key` names is archived in `mailbox`.
    fn mark_archived(&mut self, mailbox: &MailboxId, key: &[&str]) -> Result<(), StoreError>;
}

/// Shared by every session of one proxy.
pub struct ProxyContext {
    /// Where copies go.
    pub store: Store,
    /// How upstreams are reached.
    pub dialer: Dialer,
    /// This proxy's failure delays and lockouts (each service counts its own).
    pub throttle: Arc<LoginThrottle>,
}

/// The [`Relay`] of one client connection, over the store.
pub struct StoreRelay {
    ctx: Arc<ProxyContext>,
    service: &'static str,
    client: IpAddr,
    /// The mailbox of the login, opened once.
    mailbox: Option<Mailbox>,
}

impl StoreRelay {
    /// The relay of a client at `client` of `service` (`smtp proxy`, `pop3 proxy`).
    pub fn new(ctx: Arc<ProxyContext>, service: &'static str, client: IpAddr) -> StoreRelay {
        StoreRelay {
            ctx,
            service,
            client,
            mailbox: None,
        }
    }

    fn refuse(&self, attempt: Attempt, name: &str, why: &str) -> Refusal {
        info!(
            "{} {}: login {name:?} refused: {why}",
            self.service, self.client
        );
        Refusal {
            failure: LoginFailure::Refused,
            delay: attempt.failed(),
        }
    }

    fn mailbox(&mut self, id: &MailboxId) -> Result<&Mailbox, StoreError> {
        if self.mailbox.as_ref().is_none_or(|m| m.id() != id) {
            self.mailbox = Some(self.ctx.store.mailbox(id)?);
        }
        Ok(self.mailbox.as_ref().expect("opened just now"))
    }
}

impl Relay for StoreRelay {
    fn authorize(&mut self, name: &str, password: Password) -> Result<Authorized, Refusal> {
        let (service, client) = (self.service, self.client);
        let parsed = login_name::parse(name);
        let mailbox = parsed.as_ref().ok().map(|l| l.mailbox.clone());
        let attempt = self
            .ctx
            .throttle
            .begin(client, mailbox.as_ref())
            .map_err(|why| {
                warn!("{service} {client}: login {name:?} refused: locked out ({why:?})");
                Refusal {
                    failure: LoginFailure::Temporary,
                    delay: Duration::ZERO,
                }
            })?;
        // Checked before parsing, so the log names the real reason.
        if auth::has_control_characters(name) || auth::has_control_characters(password.expose()) {
            return Err(self.refuse(
                attempt,
                name,
                "control characters in the login name or password",
            ));
        }
        let login = match parsed {
            Ok(login) => login,
            Err(why) => {
                return Err(self.refuse(attempt, name, &format!("invalid login name: {why}")));
            }
        };
        // Read afresh: a mailbox suspended a moment ago takes no more mail.
        self.mailbox = None;
        match self.mailbox(&login.mailbox).map(|m| m.info().status) {
            Ok(Status::Active) => Ok(Authorized::new(login, password, Some(attempt))),
            Ok(_) => Err(self.refuse(attempt, name, "the mailbox is suspended")),
            Err(StoreError::NotFound(_)) => Err(self.refuse(attempt, name, "no such mailbox")),
            Err(e) => {
                warn!(
                    "{service} {client}: cannot open mailbox {}: {e}",
                    login.mailbox
                );
                Err(Refusal {
                    failure: LoginFailure::Temporary,
                    delay: Duration::ZERO,
                })
            }
        }
    }

    fn dialer(&self) -> &Dialer {
        &self.ctx.dialer
    }

    fn finish_login(
        &mut self,
        authorized: Authorized,
        outcome: Result<(), OpenError>,
    ) -> Result<ProxyLogin, Refusal> {
        let Authorized { login, attempt, .. } = authorized;
        let name = format!("{}%{}%{}", login.remote_user, login.target, login.mailbox);
        let Some(attempt) = attempt else {
            return outcome.map(|()| login).map_err(|_| Refusal {
                failure: LoginFailure::Refused,
                delay: Duration::ZERO,
            });
        };
        match outcome {
            Ok(()) => {
                attempt.succeeded();
                info!(
                    "{} {}: logged in as {} at {} for {}",
                    self.service, self.client, login.remote_user, login.target, login.mailbox
                );
                Ok(login)
            }
            Err(e @ (OpenError::AuthFailed(_) | OpenError::Refused(_))) => {
                Err(self.refuse(attempt, &name, &e.to_string()))
            }
            Err(OpenError::Unavailable(why)) => {
                warn!("{} {}: login {name:?}: {why}", self.service, self.client);
                Err(Refusal {
                    failure: LoginFailure::Temporary,
                    delay: attempt.unavailable(),
                })
            }
        }
    }

    fn start_copy(&mut self, mailbox: &MailboxId) -> Result<Box<dyn CopySink>, StoreError> {
        let mailbox = self.mailbox(mailbox)?.clone();
        let spool = self.ctx.store.spool()?;
        Ok(Box::new(StoreCopy { mailbox, spool }))
    }

    fn is_archived(&mut self, mailbox: &MailboxId, key: &[&str]) -> bool {
        // Unknown means "archive again": a duplicate copy, never a lost one.
        self.mailbox(mailbox).is_ok_and(|m| m.is_indexed(key))
    }

    fn mark_archived(&mut self, mailbox: &MailboxId, key: &[&str]) -> Result<(), StoreError> {
        let (service, client) = (self.service, self.client);
        self.mailbox(mailbox)?.add_to_index(key).inspect_err(|e| {
            warn!("{service} {client}: cannot record an archived message in {mailbox}: {e}");
        })
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
    fn prepare(self: Box<Self>, metadata: Metadata) -> Result<Box<dyn PreparedCopy>, StoreError> {
        let spool = self.spool.finish()?;
        let pending = self.mailbox.prepare(&spool, &metadata)?;
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

    fn commit(self: Box<Self>) -> Result<String, StoreError> {
        self.pending.commit().map(|c| c.name().to_string())
    }
}

/// What the two proxies' session tests share: a dialer for one allowed
/// host, and the login steps of a fake [`Relay`].
#[cfg(test)]
pub(crate) mod testing {
    use std::time::Duration;

    use super::*;
    use crate::proxy::login_name::Target;
    use crate::proxy::target::TargetPolicy;
    use crate::proxy::upstream::UpstreamTls;

    /// A dialer allowed to reach `host` only, speaking implicit TLS on `port`.
    pub fn dialer(host: &str, implicit_tls_port: u16) -> Dialer {
        Dialer {
            policy: TargetPolicy {
                allowed: vec![host.parse().unwrap()],
                allow_private: true,
            },
            tls: UpstreamTls::new(None).unwrap(),
            hostname: "gw.example".into(),
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(5),
            implicit_tls_ports: vec![implicit_tls_port],
        }
    }

    /// Records the login and answers it: `failure` refuses it, otherwise
    /// it is authorized for anna at `host:port` and the tests' mailbox.
    pub fn authorize(
        logins: &mut Vec<(String, String)>,
        failure: Option<LoginFailure>,
        (name, password): (&str, Password),
        (host, port): (&str, Option<u16>),
        mailbox: &str,
    ) -> Result<Authorized, Refusal> {
        logins.push((name.to_string(), password.expose().to_string()));
        if let Some(failure) = failure {
            return Err(Refusal {
                failure,
                delay: Duration::ZERO,
            });
        }
        let login = ProxyLogin {
            remote_user: "anna".into(),
            target: Target {
                host: host.into(),
                port,
            },
            mailbox: mailbox.parse().unwrap(),
        };
        Ok(Authorized::new(login, password, None))
    }

    /// The upstream's verdict as a fake relay reports it: unavailable is
    /// temporary, anything else refused, without delay.
    pub fn finish_login(
        authorized: Authorized,
        outcome: Result<(), OpenError>,
    ) -> Result<ProxyLogin, Refusal> {
        let failure = match outcome {
            Ok(()) => return Ok(authorized.login),
            Err(OpenError::Unavailable(_)) => LoginFailure::Temporary,
            Err(_) => LoginFailure::Refused,
        };
        Err(Refusal {
            failure,
            delay: Duration::ZERO,
        })
    }
}
