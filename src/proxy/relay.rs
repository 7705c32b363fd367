//! What both recording proxies need from the gateway, behind one trait
//! ([`Relay`]) so that their machines can be tested without sockets or disks:
//! the local checks of a login before anything is sent upstream, the
//! accounting of its outcome, the copies, and the POP3 proxy's archive index.
//! These are the protocols' own types; the store behind them is
//! [`super::store_relay`]'s.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::Duration;

use super::login_name::ProxyLogin;
use super::upstream::{Dialer, OpenError};
use crate::auth::Attempt;
use crate::crypto::Password;
use crate::failure::Failure;
use crate::store::MailboxId;

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

    /// The login and the attempt that counts it, once the upstream answered.
    pub fn into_parts(self) -> (ProxyLogin, Option<Attempt>) {
        (self.login, self.attempt)
    }
}

/// What a copy records about its message, beside the message itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFacts {
    /// The envelope sender (the SMTP proxy; empty for POP3).
    pub mail_from: String,
    /// The recipients the upstream accepted, Bcc included (the SMTP proxy).
    pub rcpt_to: Vec<String>,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The client connection's TLS version.
    pub tls: Option<String>,
    /// The message's size in bytes.
    pub size: u64,
    /// For the POP3 proxy: the upstream account and the message's UIDL.
    pub upstream: Option<Fetched>,
}

/// Where the POP3 proxy fetched a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Login name at the upstream server.
    pub user: String,
    /// Upstream host and port.
    pub host: String,
    /// The upstream's UIDL of the message (empty if it offers none).
    pub uidl: String,
}

/// A copy being written: the message goes in through `Write`.
pub trait CopySink: Write {
    /// Completes the copy in the mailbox's `tmp/` and makes it durable.
    fn prepare(self: Box<Self>, facts: CopyFacts) -> Result<Box<dyn PreparedCopy>, Failure>;
}

/// A durable copy not yet visible.
pub trait PreparedCopy {
    /// The message, to send upstream.
    fn message(&self) -> io::Result<Box<dyn Read>>;
    /// Makes the copy visible; returns its name.
    fn commit(self: Box<Self>) -> Result<String, Failure>;
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
    fn start_copy(&mut self, mailbox: &MailboxId) -> Result<Box<dyn CopySink>, Failure>;
    /// Whether the disk is below its reserve (`store::reserve`): nothing
    /// is relayed that could not be archived.
    fn below_reserve(&mut self) -> bool;
    /// Whether the message `key` names was archived in `mailbox` before.
    fn is_archived(&mut self, mailbox: &MailboxId, key: &[&str]) -> bool;
    /// Records durably that the message `key` names is archived in `mailbox`.
    fn mark_archived(&mut self, mailbox: &MailboxId, key: &[&str]) -> Result<(), Failure>;
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
