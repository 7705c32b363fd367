//! The socket loop shared by the line protocols (SMTP, POP3, and the proxies'
//! client sides): read with the command or data timeout, feed the I/O-free
//! protocol, write its replies, stream long responses, upgrade to TLS.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use log::{debug, info};
use rustls::ServerConfig;

use super::acceptor::Accepted;
use super::conn::{Connection, Input, TlsInfo};
use super::limits::ConnectionGuard;
use super::tls::TlsServer;

/// A long response the protocol produces piece by piece (a POP3 RETR).
pub trait Outgoing {
    /// Appends the next piece to `out`; `Ok(false)` once everything is out.
    fn next_chunk(&mut self, out: &mut Vec<u8>) -> io::Result<bool>;
}

/// What the loop does after feeding input.
pub enum Step {
    /// Write the replies and read more.
    Continue,
    /// Write the replies, drop every buffered input byte, start TLS, then call
    /// [`Protocol::tls_started`].
    StartTls,
    /// Write the replies, then stream this response, then go on.
    Stream(Box<dyn Outgoing>),
    /// Write the replies and close.
    Close,
}

/// An I/O-free line protocol: bytes in, replies out.
pub trait Protocol {
    /// The greeting, written first.
    fn greeting(&mut self, out: &mut Vec<u8>);
    /// Feeds bytes (possibly none, to process input it still holds).
    fn receive(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step;
    /// Whether complete commands are waiting to be processed without reading.
    fn has_pending_input(&self) -> bool {
        false
    }
    /// TLS is up: forget everything learnt before (RFC 3207 4.2, RFC 2595 4).
    fn tls_started(&mut self, tls: TlsInfo);
    /// Nothing in progress: a shutdown may interrupt the wait for input.
    fn is_idle(&self) -> bool;
    /// Inside message data: the data timeout applies.
    fn expecting_data(&self) -> bool;
    /// The goodbye when the client was silent too long.
    fn timed_out(&mut self, out: &mut Vec<u8>);
    /// The goodbye when the gateway is stopping.
    fn shutting_down(&mut self, out: &mut Vec<u8>);
}

/// The timeouts of a session.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Waiting for the next command.
    pub command: Duration,
    /// Waiting for message data.
    pub data: Duration,
    /// Completing a TLS handshake.
    pub handshake: Duration,
}

/// What every session of every service shares.
#[derive(Clone)]
pub struct SessionEnv {
    /// The server certificate.
    pub tls: Arc<TlsServer>,
    /// Command, data and handshake timeouts.
    pub timeouts: Timeouts,
    /// Set when the gateway is stopping.
    pub shutdown: Arc<AtomicBool>,
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

impl SessionEnv {
    /// Wraps an accepted socket and, on an implicit-TLS listener, completes the
    /// handshake; `None` (logged) when that fails.
    pub fn open(&self, accepted: Accepted, implicit_tls: bool, service: &str) -> Option<Opened> {
        let Accepted { tcp, peer, guard } = accepted;
        let mut conn =
            Connection::new(tcp, peer, Arc::clone(&self.shutdown), self.timeouts.command);
        let mut tls = None;
        if implicit_tls {
            match conn.start_tls(self.tls.current(), self.timeouts.handshake) {
                Ok(info) => tls = Some(info),
                Err(e) => {
                    info!("{service} {peer}: TLS handshake failed: {e}");
                    return None;
                }
            }
        }
        info!(
            "{service} {peer}: connected{}",
            tls.as_ref()
                .map(|t| format!(" ({} {})", t.version, t.cipher))
                .unwrap_or_default()
        );
        Some(Opened { conn, tls, guard })
    }

    /// Runs `protocol` over `conn` until either side ends it; returns why.
    pub fn drive(&self, conn: &mut Connection, protocol: &mut dyn Protocol) -> String {
        drive(conn, protocol, &|| self.tls.current(), self.timeouts)
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
        opened.conn.close();
        info!("{service} {peer}: {end}");
        Some(protocol)
    }
}

/// Runs a protocol over a connection until either side ends it; returns why
/// it ended, for the log.
pub fn drive(
    conn: &mut Connection,
    protocol: &mut dyn Protocol,
    tls_config: &dyn Fn() -> Arc<ServerConfig>,
    timeouts: Timeouts,
) -> String {
    let mut out = Vec::new();
    protocol.greeting(&mut out);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = conn.send(&out) {
            return format!("write failed: {e}");
        }
        out.clear();
        let step = if protocol.has_pending_input() {
            protocol.receive(&[], &mut out)
        } else {
            let timeout = if protocol.expecting_data() {
                timeouts.data
            } else {
                timeouts.command
            };
            match conn.read_input(&mut buf, timeout, protocol.is_idle()) {
                Ok(Input::Data(n)) => protocol.receive(&buf[..n], &mut out),
                Ok(Input::Closed) if protocol.expecting_data() => {
                    return "client disconnected during message data; nothing stored".into();
                }
                Ok(Input::Closed) => return "client disconnected".into(),
                Ok(Input::TimedOut) => {
                    protocol.timed_out(&mut out);
                    let _ = conn.send(&out);
                    return "timed out".into();
                }
                Ok(Input::ShuttingDown) => {
                    protocol.shutting_down(&mut out);
                    let _ = conn.send(&out);
                    return "gateway shutting down".into();
                }
                Err(e) => return format!("read failed: {e}"),
            }
        };
        match step {
            Step::Continue => {}
            Step::Close => {
                let _ = conn.send(&out);
                return "closed".into();
            }
            Step::Stream(mut outgoing) => {
                // The replies so far go first, then the response in pieces:
                // memory stays constant whatever its size.
                loop {
                    if let Err(e) = conn.send(&out) {
                        return format!("write failed: {e}");
                    }
                    out.clear();
                    match outgoing.next_chunk(&mut out) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => return format!("response aborted: {e}"),
                    }
                }
            }
            Step::StartTls => {
                // Whatever the client sent after the command in the same
                // packet is not fed on: it came before TLS.
                if let Err(e) = conn.send(&out) {
                    return format!("write failed: {e}");
                }
                out.clear();
                match conn.start_tls(tls_config(), timeouts.handshake) {
                    Ok(info) => {
                        debug!("{}: TLS {} {}", conn.peer(), info.version, info.cipher);
                        protocol.tls_started(info);
                    }
                    Err(e) => {
                        return format!("TLS handshake after the upgrade command failed: {e}");
                    }
                }
            }
        }
    }
}
