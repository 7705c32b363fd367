//! [`SessionEnv`]: opening a session (the PROXY header, implicit TLS), the
//! surroundings the loop needs, and the whole session from accept to close.

use super::*;

/// What every session of every service shares.
#[derive(Clone)]
pub struct SessionEnv {
    /// The server certificate.
    pub tls: Arc<TlsServer>,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Set when the gateway is stopping.
    pub shutdown: Arc<AtomicBool>,
    /// The connection counts, which say when the gateway is overloaded.
    pub limits: Arc<ConnectionLimits>,
    /// Load balancers whose connections start with a PROXY header
    /// (`haproxy_trusted_networks`).
    pub proxy_trusted: Arc<Vec<Cidr>>,
    /// The service's share of the connection slots, whose use says when
    /// its idle clients get the overload deadlines.
    pub pool: Pool,
    /// Clients whose failed TLS handshake is a warning, not news: the
    /// journal senders of `smtp.allowed_clients` (from anyone else it is
    /// INFO, as scanners hit 465 and 995 all day).
    pub expected_clients: Arc<Vec<Cidr>>,
}

/// An accepted connection, ready for its protocol.
pub struct Opened {
    /// The connection (already TLS on implicit-TLS listeners).
    pub conn: Connection,
    /// The TLS parameters when TLS is on.
    pub tls: Option<TlsInfo>,
    /// Keeps the connection counted until the session ends.
    pub guard: ConnectionGuard,
}

/// How an end reason says that a TLS handshake failed.
pub(super) const HANDSHAKE_FAILED: &str = "TLS handshake";

impl SessionEnv {
    /// Whether `peer` is one of the clients whose failures are warnings.
    fn is_expected(&self, peer: std::net::SocketAddr) -> bool {
        self.expected_clients.iter().any(|c| c.contains(peer.ip()))
    }

    /// The same surroundings for a service of `pool`.
    pub fn for_pool(&self, pool: Pool) -> SessionEnv {
        SessionEnv {
            pool,
            ..self.clone()
        }
    }

    /// Wraps an accepted socket and, on an implicit-TLS listener, completes the
    /// handshake; `None` (logged) when that fails.
    pub fn open(&self, accepted: Accepted, implicit_tls: bool, service: &str) -> Option<Opened> {
        let Accepted {
            tcp,
            peer,
            mut guard,
        } = accepted;
        let deadline = Instant::now() + self.timeouts.handshake;
        let peer = match self.client_behind(&tcp, peer, &mut guard, deadline) {
            Ok(client) => client,
            Err(why) => {
                info!("{service} {peer}: refused: {why}");
                return None;
            }
        };
        let mut conn = Connection::new(tcp, peer, Arc::clone(&self.shutdown));
        let mut tls = None;
        if implicit_tls {
            match conn.start_tls(self.tls.current(), deadline) {
                Ok(info) => tls = Some(info),
                Err(e) => {
                    crate::metrics::tls_failed(self.pool.name());
                    if self.is_expected(peer) {
                        warn!("{service} {peer}: TLS handshake failed: {e}");
                    } else {
                        info!("{service} {peer}: TLS handshake failed: {e}");
                    }
                    return None;
                }
            }
        }
        let connected = format!(
            "{service} {peer}: connected{}",
            tls.as_ref()
                .map(|t| format!(" ({} {})", t.version, t.cipher))
                .unwrap_or_default()
        );
        debug!("{connected}");
        conn.announce_on_input(connected);
        Some(Opened { conn, tls, guard })
    }

    /// The client of a connection: for a trusted load balancer the one its
    /// PROXY header names (read before anything else, by the handshake
    /// deadline), counted against its own per-address limit and tagged on
    /// every log line from here on; for anyone else the connection's own
    /// address, and a PROXY header from them is refused.
    fn client_behind(
        &self,
        tcp: &std::net::TcpStream,
        peer: SocketAddr,
        guard: &mut ConnectionGuard,
        deadline: Instant,
    ) -> Result<SocketAddr, String> {
        if !self.proxy_trusted.iter().any(|c| c.contains(peer.ip())) {
            let start = sent_already(tcp).map_err(|e| e.to_string())?;
            return if proxy_header::looks_like_header(&start) {
                Err("a PROXY header from outside haproxy_trusted_networks".into())
            } else {
                Ok(peer)
            };
        }
        let mut src = DeadlineSocket { tcp, deadline };
        let client = match proxy_header::read_header(&mut src) {
            Ok(Some(client)) => client,
            // LOCAL: the balancer's own health check.
            Ok(None) => return Ok(peer),
            Err(e) => return Err(e.to_string()),
        };
        guard
            .count_as(client.ip())
            .map_err(|_| format!("{client}: limits.max_connections_per_ip reached"))?;
        info!("{peer}: PROXY header: client {client}");
        log_context::set_client(client);
        Ok(client)
    }

    /// Runs `protocol` over `conn` until either side ends it; returns why.
    pub fn drive(&self, conn: &mut Connection, protocol: &mut dyn Protocol) -> String {
        let mut upstream = UpstreamLink::watching(Arc::clone(&self.shutdown));
        drive(conn, &mut upstream, protocol, self)
    }

    /// A whole session: opens the connection, builds the protocol for the
    /// client (address, TLS if implicit), runs it, closes, and logs why it ended.
    /// Returns the protocol, for anything else the caller wants to log.
    pub fn serve<P: Protocol>(
        &self,
        accepted: Accepted,
        implicit_tls: bool,
        service: &str,
        make: impl FnOnce(std::net::SocketAddr, Option<TlsInfo>) -> P,
    ) -> Option<P> {
        let mut opened = self.open(accepted, implicit_tls, service)?;
        let peer = opened.conn.peer();
        let mut protocol = make(peer, opened.tls.take());
        let end = self.drive(&mut opened.conn, &mut protocol);
        let heard = opened.conn.heard_from_client();
        opened.conn.close();
        if end.contains(HANDSHAKE_FAILED) && self.is_expected(peer) {
            warn!("{service} {peer}: {end}");
        } else if heard {
            info!("{service} {peer}: {end}");
        } else {
            // Connected and left without a word: a probe.
            debug!("{service} {peer}: {end}");
        }
        Some(protocol)
    }

    fn overloaded(&self) -> bool {
        self.limits.overloaded(self.pool)
    }

    /// Sleeps `delay` in slices, giving up early when the gateway stops.
    fn hold_back(&self, delay: Duration) {
        let until = Instant::now() + delay;
        while !self.shutdown.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(250)));
        }
    }
}

/// What the loop needs of the gateway around it.
pub trait Surroundings {
    /// The time limits.
    fn timeouts(&self) -> Timeouts;
    /// Whether most connection slots are taken.
    fn overloaded(&self) -> bool;
    /// The certificate configuration for a STARTTLS/STLS upgrade.
    fn tls_config(&self) -> Arc<ServerConfig>;
    /// Sleeps `delay`, giving up early when the gateway stops.
    fn hold_back(&self, delay: Duration);
}

/// What a client sent before the greeting, without taking it: mail
/// clients wait for the server, so only a load balancer's header is there.
/// An error means the socket could not be put back in blocking mode.
fn sent_already(tcp: &std::net::TcpStream) -> io::Result<Vec<u8>> {
    let mut start = [0u8; 16];
    tcp.set_nonblocking(true)?;
    let peeked = tcp.peek(&mut start);
    tcp.set_nonblocking(false)?;
    Ok(peeked.map_or_else(|_| Vec::new(), |n| start[..n].to_vec()))
}

impl Surroundings for SessionEnv {
    fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn overloaded(&self) -> bool {
        SessionEnv::overloaded(self)
    }

    fn tls_config(&self) -> Arc<ServerConfig> {
        self.tls.current()
    }

    fn hold_back(&self, delay: Duration) {
        SessionEnv::hold_back(self, delay);
    }
}
