//! The [`Relay`] of the real gateway: logins checked against the store and
//! the proxy's throttle, copies sealed into the mailbox, the POP3 proxy's
//! archive index kept in it. A service: it wires the protocols' traits to
//! the store, and maps the store's errors to the protocols' [`Failure`].

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use log::{info, warn};

use super::login_name::{self, ProxyLogin};
use super::relay::{Authorized, CopyFacts, CopySink, LoginFailure, PreparedCopy, Refusal, Relay};
use super::upstream::{Dialer, OpenError};
use crate::auth::{self, Attempt, LoginThrottle};
use crate::crypto::Password;
use crate::failure::Failure;
use crate::store::mailbox::PendingMessage;
use crate::store::message::UpstreamOrigin;
use crate::store::reserve::DiskReserve;
use crate::store::{
    Mailbox, MailboxId, Metadata, Source, Spool, SpoolWriter, Status, Store, StoreError,
};
use crate::timestamp;

/// Shared by every session of one proxy.
pub struct ProxyContext {
    /// Where copies go.
    pub store: Store,
    /// How upstreams are reached.
    pub dialer: Dialer,
    /// This proxy's failure delays and lockouts (each service counts its own).
    pub throttle: Arc<LoginThrottle>,
    /// What its copies record as their source.
    pub source: Source,
    /// The disk reserve.
    pub reserve: Arc<DiskReserve>,
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
        let (login, attempt) = authorized.into_parts();
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

    fn below_reserve(&mut self) -> bool {
        self.ctx.reserve.below().is_some()
    }

    fn start_copy(&mut self, mailbox: &MailboxId) -> Result<Box<dyn CopySink>, Failure> {
        if let Some(space) = self.ctx.reserve.below() {
            return Err(Failure::Temporary(format!(
                "the disk is below its reserve ({} free, {} kept)",
                crate::store::reserve::human(space.free),
                crate::store::reserve::human(space.reserve)
            )));
        }
        let mailbox = self.mailbox(mailbox)?.clone();
        let spool = self.ctx.store.spool()?;
        Ok(Box::new(StoreCopy {
            mailbox,
            spool,
            source: self.ctx.source,
        }))
    }

    fn is_archived(&mut self, mailbox: &MailboxId, key: &[&str]) -> bool {
        // Unknown means "archive again": a duplicate copy, never a lost one.
        self.mailbox(mailbox).is_ok_and(|m| m.is_indexed(key))
    }

    fn mark_archived(&mut self, mailbox: &MailboxId, key: &[&str]) -> Result<(), Failure> {
        let (service, client) = (self.service, self.client);
        let recorded = self.mailbox(mailbox).and_then(|m| m.add_to_index(key));
        recorded.map_err(|e| {
            warn!("{service} {client}: cannot record an archived message in {mailbox}: {e}");
            Failure::from(e)
        })
    }
}

struct StoreCopy {
    mailbox: Mailbox,
    spool: SpoolWriter,
    source: Source,
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
    fn prepare(self: Box<Self>, facts: CopyFacts) -> Result<Box<dyn PreparedCopy>, Failure> {
        let metadata = Metadata {
            received: timestamp::rfc3339(SystemTime::now()),
            source: self.source,
            mail_from: facts.mail_from,
            rcpt_to: facts.rcpt_to,
            client_ip: Some(facts.client_ip.to_string()),
            tls: facts.tls,
            size: facts.size,
            upstream: facts.upstream.map(|f| UpstreamOrigin {
                user: f.user,
                host: f.host,
                uidl: f.uidl,
            }),
        };
        let spool = self.spool.finish()?;
        let mut pending = self.mailbox.prepare(&spool, &metadata)?;
        // Durable before anything is sent upstream (the flush is shared
        // with every other writer waiting, as a journal delivery's is).
        pending.make_durable()?;
        let (source, size) = (metadata.source, metadata.size);
        Ok(Box::new(StoredCopy {
            spool,
            pending,
            source,
            size,
        }))
    }
}

struct StoredCopy {
    spool: Spool,
    pending: PendingMessage,
    source: Source,
    size: u64,
}

impl PreparedCopy for StoredCopy {
    fn message(&self) -> io::Result<Box<dyn Read>> {
        Ok(Box::new(self.spool.reader()?))
    }

    fn commit(self: Box<Self>) -> Result<String, Failure> {
        let committed = self.pending.commit()?;
        let source = match self.source {
            Source::SmtpProxy => "smtp-proxy",
            Source::Pop3Proxy => "pop3-proxy",
            Source::Smtp => "journal",
            Source::Cli => "cli",
        };
        crate::metrics::stored(source, self.size);
        Ok(committed.name().to_string())
    }
}
