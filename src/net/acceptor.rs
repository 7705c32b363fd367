//! One thread polls every listening socket (mio) and hands each accepted
//! connection to a thread of its own. The stop and reload signals arrive in
//! the same poll ([`super::signals`]).

use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::activation::Inherited;
use super::limits::{ConnectionGuard, ConnectionLimits, LimitHit, Pool};
use super::signals::StopAndReload;

/// Stack size of a session thread: sessions stream, they hold no large buffers.
pub const SESSION_STACK_BYTES: usize = 256 * 1024;

const SIGNALS: Token = Token(usize::MAX);

/// A connection handed to a service.
pub struct Accepted {
    /// The socket, in blocking mode.
    pub tcp: TcpStream,
    /// The client.
    pub peer: SocketAddr,
    /// Frees the connection slot when dropped.
    pub guard: ConnectionGuard,
}

/// What runs behind a listener.
pub struct Service {
    /// For logs and thread names: `smtp`, `smtps`, `pop3`, …
    pub name: &'static str,
    /// Written (best effort) before closing a connection over the limits;
    /// empty for implicit-TLS listeners, which cannot speak before the handshake.
    pub busy_reply: Vec<u8>,
    /// Runs the session on its own thread.
    pub handler: Arc<dyn Fn(Accepted) + Send + Sync>,
    /// Whose share of the connection slots it uses.
    pub pool: Pool,
}

/// Flags shared with the signal thread.
#[derive(Default)]
pub struct Control {
    /// Stop accepting and let sessions finish.
    pub shutdown: Arc<AtomicBool>,
    /// Reload the configuration and the certificate.
    pub reload: AtomicBool,
}

/// A listener that could not be opened, with the configuration key it came from.
#[derive(Debug)]
pub struct BindError {
    /// `smtp.listen[0]` and so on.
    pub key: String,
    /// The address.
    pub addr: SocketAddr,
    /// The system's reason.
    pub source: io::Error,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: cannot listen: {}",
            self.key, self.addr, self.source
        )?;
        if self.source.kind() == io::ErrorKind::PermissionDenied {
            write!(f, " (ports below 1024 need root or CAP_NET_BIND_SERVICE)")?;
        }
        Ok(())
    }
}

impl std::error::Error for BindError {}

/// The bound listeners, ready to run.
pub struct Acceptor {
    poll: Poll,
    signals: StopAndReload,
    listeners: Vec<(TcpListener, usize)>,
    /// Each listener's configuration key and bound address.
    bound: Vec<(String, SocketAddr)>,
    services: Vec<Service>,
    limits: Arc<ConnectionLimits>,
    /// Listeners whose backlog could not be emptied (out of descriptors):
    /// mio reports readiness once per edge, so they are retried on a timer.
    backlogged: Vec<usize>,
    last_warning: Option<Instant>,
}

/// How soon a listener whose accept failed is tried again.
const RETRY_ACCEPT: Duration = Duration::from_millis(100);
/// At most one warning about failing accepts per this period.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A non-blocking listening socket on `addr`. An IPv6 socket is IPv6 only
/// (`IPV6_V6ONLY`, RFC 3493 §5.3), as Postfix and Dovecot listen, so that
/// `0.0.0.0:25` and `[::]:25` can both be listed; without it Linux lets the
/// IPv6 wildcard take the IPv4 port too and the second bind fails.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // As std and mio do: a restarted gateway can bind while old
    // connections linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Whether binding `addr` failed because the machine has no IPv6 at all
/// (the IPv6 wildcard only: a specific address that fails is an error).
fn no_ipv6_here(addr: SocketAddr, e: &io::Error) -> bool {
    matches!(addr, SocketAddr::V6(v6) if v6.ip().is_unspecified())
        && e.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

impl Acceptor {
    /// Binds every `(key, address, service index)`; logs the bound address
    /// (useful with port 0).
    pub fn bind(
        bindings: &[(String, SocketAddr, usize)],
        services: Vec<Service>,
        limits: Arc<ConnectionLimits>,
    ) -> Result<Acceptor, BindError> {
        let poll = Poll::new().map_err(|source| BindError {
            key: "acceptor".into(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        let signals =
            StopAndReload::register(poll.registry(), SIGNALS).map_err(|source| BindError {
                key: "signals".into(),
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
        let mut listeners = Vec::new();
        let mut bound = Vec::new();
        let mut inherited = Inherited::take();
        for (key, addr, service) in bindings {
            let fail = |source| BindError {
                key: key.clone(),
                addr: *addr,
                source,
            };
            let claimed = inherited.claim(*addr).map(|l| {
                l.set_nonblocking(true)?;
                Ok(TcpListener::from_std(l))
            });
            let mut listener = match claimed.unwrap_or_else(|| listen(*addr)) {
                Ok(listener) => listener,
                Err(e) if no_ipv6_here(*addr, &e) => {
                    // The installed configuration lists `[::]` beside
                    // `0.0.0.0`; a machine booted with IPv6 off still starts.
                    warn!(
                        "{key} {addr}: IPv6 is not available on this machine ({e}); not listening there"
                    );
                    continue;
                }
                Err(e) => return Err(fail(e)),
            };
            poll.registry()
                .register(&mut listener, Token(listeners.len()), Interest::READABLE)
                .map_err(fail)?;
            let local = listener.local_addr().map_err(fail)?;
            info!("listening on {key} {local} ({})", services[*service].name);
            listeners.push((listener, *service));
            bound.push((key.clone(), local));
        }
        for addr in inherited.unclaimed() {
            warn!(
                "a socket bound to {addr} was passed to the gateway, but no listener of the configuration names it; closed"
            );
        }
        Ok(Acceptor {
            poll,
            signals,
            listeners,
            bound,
            services,
            limits,
            backlogged: Vec::new(),
            last_warning: None,
        })
    }

    /// Every listener's configuration key and the address it is bound to
    /// (port 0 resolved; a skipped IPv6 wildcard absent).
    pub fn bound(&self) -> Vec<(String, SocketAddr)> {
        self.bound.clone()
    }

    /// Accepts until `control.shutdown` is set; `reload` runs on request and
    /// may return new services (the same number, in the same order) for the
    /// listeners. Listeners are closed when this returns; the signals are
    /// handed back, for the drain.
    pub fn run(
        mut self,
        control: &Control,
        mut reload: impl FnMut() -> Option<Vec<Service>>,
    ) -> io::Result<StopAndReload> {
        let mut events = Events::with_capacity(64);
        loop {
            let timeout = (!self.backlogged.is_empty()).then_some(RETRY_ACCEPT);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut ready: Vec<usize> = std::mem::take(&mut self.backlogged);
            for event in events.iter() {
                if event.token() == SIGNALS {
                    self.signals.take(control);
                } else if !ready.contains(&event.token().0) {
                    ready.push(event.token().0);
                }
            }
            for index in ready {
                if !self.accept_all(index) {
                    self.backlogged.push(index);
                }
            }
            if control.reload.swap(false, Ordering::SeqCst)
                && let Some(services) = reload()
            {
                if services.len() == self.services.len() {
                    self.services = services;
                } else {
                    error!("reload built a different set of services; keeping the running ones");
                }
            }
            if control.shutdown.load(Ordering::SeqCst) {
                return Ok(self.signals);
            }
        }
    }

    /// Accepts until the listener's backlog is empty; `false` when an error
    /// (out of file descriptors, say) stopped it first, so that the listener
    /// must be tried again although no new readiness event will come.
    fn accept_all(&mut self, index: usize) -> bool {
        let Some((listener, service)) = self.listeners.get(index) else {
            return true;
        };
        let service = &self.services[*service];
        loop {
            let (stream, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if self.last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        warn!(
                            "{}: accept failed: {e} (connections wait in the backlog; retrying every {} ms)",
                            service.name,
                            RETRY_ACCEPT.as_millis()
                        );
                        self.last_warning = Some(Instant::now());
                    }
                    return false;
                }
            };
            let tcp = TcpStream::from(stream);
            let guard = match self.limits.try_acquire(peer.ip(), service.pool) {
                Ok(guard) => guard,
                Err(hit) => {
                    let which = match hit {
                        LimitHit::Total => "limits.max_connections",
                        LimitHit::ServiceCap => "the service's share of limits.max_connections",
                        LimitHit::PerIp => "limits.max_connections_per_ip",
                    };
                    info!("{}: refused {peer}: {which} reached", service.name);
                    let mut tcp = tcp;
                    let _ = tcp.set_nonblocking(true);
                    let _ = tcp.write(&service.busy_reply);
                    continue;
                }
            };
            if let Err(e) = tcp.set_nonblocking(false) {
                warn!("{}: {peer}: {e}", service.name);
                continue;
            }
            let handler = Arc::clone(&service.handler);
            let accepted = Accepted { tcp, peer, guard };
            let spawned = std::thread::Builder::new()
                .name(format!("{} {peer}", service.name))
                .stack_size(SESSION_STACK_BYTES)
                .spawn(move || {
                    super::log_context::enter(peer);
                    handler(accepted)
                });
            if let Err(e) = spawned {
                error!(
                    "{}: cannot start a session thread for {peer}: {e}",
                    service.name
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_ipv6_family_skips_only_the_ipv6_wildcard() {
        let gone = io::Error::from_raw_os_error(libc::EAFNOSUPPORT);
        let busy = io::Error::from_raw_os_error(libc::EADDRINUSE);
        let wildcard: SocketAddr = "[::]:25".parse().unwrap();
        assert!(no_ipv6_here(wildcard, &gone));
        assert!(!no_ipv6_here(wildcard, &busy));
        assert!(!no_ipv6_here("[2001:db8::1]:25".parse().unwrap(), &gone));
        assert!(!no_ipv6_here("0.0.0.0:25".parse().unwrap(), &gone));
    }

    /// The README's `["0.0.0.0:25", "[::]:25"]`: both wildcards on one port.
    /// (Bound for a moment, never accepting: no traffic reaches them.)
    #[test]
    fn the_ipv4_and_ipv6_wildcards_can_share_a_port() {
        let v6 = match listen("[::]:0".parse().unwrap()) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("SKIPPED: this machine has no IPv6: {e}");
                return;
            }
        };
        assert!(socket2::SockRef::from(&v6).only_v6().unwrap());
        let port = v6.local_addr().unwrap().port();
        let v4 = listen(SocketAddr::from(([0, 0, 0, 0], port)));
        assert!(v4.is_ok(), "{v4:?}");
        assert!(
            !socket2::SockRef::from(&v4.unwrap())
                .only_v6()
                .is_ok_and(|v| v)
        );
    }
}
