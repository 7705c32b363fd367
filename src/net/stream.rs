//! A TCP connection, plain or TLS (as the server or as the client), whose
//! every read, write and handshake is bounded by a *deadline*, not by a
//! timeout per system call.
//!
//! The difference matters against a slow client: with a timeout per read, a
//! client that sends one byte every few seconds never times out, and inside
//! a TLS record rustls' own `StreamOwned`/`complete_io` keep reading until
//! the record is whole. Here rustls is driven by hand (`read_tls`,
//! `process_new_packets`, `write_tls`), and every socket operation gets only
//! the time left until the deadline.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

use rustls::Connection;

/// Negotiated TLS parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// Cipher suite name, for logs and `Received:` headers.
    pub cipher: String,
}

/// `TLSv1.3` / `TLSv1.2`, as logs and `Received:` headers write it.
pub fn version_name(version: Option<rustls::ProtocolVersion>) -> String {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
        Some(other) => format!("{other:?}"),
        None => "unknown".into(),
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
}

/// The socket seen through a deadline: each read or write may take only the
/// time that is left. (Also what reads a PROXY header before a connection
/// becomes a `Stream`.)
pub(super) struct DeadlineSocket<'a> {
    pub(super) tcp: &'a TcpStream,
    pub(super) deadline: Instant,
}

impl DeadlineSocket<'_> {
    fn left(&self) -> io::Result<std::time::Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(timed_out())
        } else {
            Ok(left)
        }
    }
}

/// Blocked sockets report an expired timeout as `WouldBlock` (Unix) or
/// `TimedOut`; both mean the deadline passed.
fn retry<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timed_out()),
            other => return other,
        }
    }
}

impl Read for DeadlineSocket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.tcp.set_read_timeout(Some(left))?;
        retry(|| (&*self.tcp).read(buf))
    }
}

impl Write for DeadlineSocket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.tcp.set_write_timeout(Some(left))?;
        retry(|| (&*self.tcp).write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection to a client or to an upstream server.
pub struct Stream {
    tcp: TcpStream,
    tls: Option<Box<Connection>>,
}

/// A TLS protocol error (a bad record, a failed certificate check) as an
/// I/O error of kind `InvalidData`, after the alert went out.
fn tls_failed(
    tls: &mut Connection,
    tcp: &TcpStream,
    deadline: Instant,
    e: rustls::Error,
) -> io::Error {
    let mut sock = DeadlineSocket { tcp, deadline };
    while tls.wants_write() {
        if tls.write_tls(&mut sock).is_err() {
            break;
        }
    }
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Stream {
    /// A plain TCP connection.
    pub fn new(tcp: TcpStream) -> Stream {
        let _ = tcp.set_nodelay(true);
        Stream { tcp, tls: None }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Whether TLS is on.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Runs the handshake of `tls` (a server or client connection) to its end
    /// before `deadline`; from then on everything goes through TLS.
    pub fn start_tls(
        &mut self,
        tls: impl Into<Connection>,
        deadline: Instant,
    ) -> io::Result<TlsInfo> {
        if self.tls.is_some() {
            return Err(io::Error::other("TLS is already active"));
        }
        let mut tls = Box::new(tls.into());
        let mut sock = DeadlineSocket {
            tcp: &self.tcp,
            deadline,
        };
        loop {
            while tls.wants_write() {
                tls.write_tls(&mut sock)?;
            }
            if !tls.is_handshaking() {
                break;
            }
            if tls.read_tls(&mut sock)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
            if let Err(e) = tls.process_new_packets() {
                return Err(tls_failed(&mut tls, &self.tcp, deadline, e));
            }
        }
        let info = TlsInfo {
            version: version_name(tls.protocol_version()),
            cipher: tls
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_else(|| "unknown".into()),
        };
        self.tls = Some(tls);
        Ok(info)
    }

    /// Reads what arrives before `deadline`: `Ok(0)` at the end of the
    /// stream, an error of kind `TimedOut` once the deadline passed.
    pub fn read(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        let mut sock = DeadlineSocket {
            tcp: &self.tcp,
            deadline,
        };
        let Some(tls) = &mut self.tls else {
            return sock.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer vanished without close_notify: the end of the stream.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            let n = tls.read_tls(&mut sock)?;
            if let Err(e) = tls.process_new_packets() {
                return Err(tls_failed(tls, &self.tcp, deadline, e));
            }
            // Whatever TLS wants to say back (a key update) goes out now.
            while tls.wants_write() {
                tls.write_tls(&mut sock)?;
            }
            if n == 0 {
                // rustls saw the end; the reader now tells clean from unclean.
                continue;
            }
        }
    }

    /// Writes all of `bytes` before `deadline`.
    pub fn write_all(&mut self, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
        let mut sock = DeadlineSocket {
            tcp: &self.tcp,
            deadline,
        };
        let Some(tls) = &mut self.tls else {
            return sock.write_all(bytes);
        };
        while !bytes.is_empty() || tls.wants_write() {
            if !bytes.is_empty() {
                let n = tls.writer().write(bytes)?;
                bytes = &bytes[n..];
            }
            while tls.wants_write() {
                tls.write_tls(&mut sock)?;
            }
        }
        Ok(())
    }

    /// Ends the connection: a TLS close_notify where TLS is on (given a
    /// moment to leave), then a TCP shutdown.
    pub fn close(&mut self, deadline: Instant) {
        self.close_notify(deadline);
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

    /// A TLS close_notify, where TLS is on, given until `deadline` to leave.
    fn close_notify(&mut self, deadline: Instant) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let mut sock = DeadlineSocket {
                tcp: &self.tcp,
                deadline,
            };
            while tls.wants_write() {
                if tls.write_tls(&mut sock).is_err() {
                    break;
                }
            }
        }
    }

    /// Ends the connection after an answer to a request that was not read
    /// whole (a 431 to a huge header): the write side first, then what the
    /// client still sends is read and dropped until it stops, up to
    /// `deadline` and 1 MiB, so that the answer is not lost to the reset a
    /// close with unread data sends (Apache's lingering close).
    pub fn close_lingering(&mut self, deadline: Instant) {
        self.close_notify(deadline);
        let _ = self.tcp.shutdown(Shutdown::Write);
        let mut sock = DeadlineSocket {
            tcp: &self.tcp,
            deadline,
        };
        let mut buf = [0u8; 8192];
        let mut left = 1usize << 20;
        while left > 0 {
            match sock.read(&mut buf) {
                Ok(n) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
        let _ = self.tcp.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn a_trickling_peer_cannot_stretch_a_read_past_its_deadline() {
        let (mut client, server) = pair();
        let writer = std::thread::spawn(move || {
            for _ in 0..40 {
                if client.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        let mut stream = Stream::new(server);
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut got = 0;
        let mut buf = [0u8; 16];
        let end = loop {
            match stream.read(&mut buf, deadline) {
                Ok(0) => break "eof",
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => break "deadline",
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(end, "deadline");
        assert!(got > 0 && got < 40, "{got}");
        assert!(Instant::now() < deadline + Duration::from_millis(200));
        drop(stream);
        writer.join().unwrap();
    }

    #[test]
    fn a_handshake_that_never_completes_fails_at_its_deadline() {
        let (mut client, server) = pair();
        // Half a ClientHello, then silence.
        client
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .unwrap();
        let config = crate::net::tls::tests::server_config();
        let mut stream = Stream::new(server);
        let started = Instant::now();
        let err = stream
            .start_tls(
                rustls::ServerConnection::new(config).unwrap(),
                started + Duration::from_millis(300),
            )
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn plaintext_where_a_handshake_belongs_is_a_clear_tls_error() {
        let (mut client, server) = pair();
        client.write_all(b"EHLO plain.example\r\n").unwrap();
        let config = crate::net::tls::tests::server_config();
        let mut stream = Stream::new(server);
        let err = stream
            .start_tls(
                rustls::ServerConnection::new(config).unwrap(),
                Instant::now() + Duration::from_secs(5),
            )
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
}
