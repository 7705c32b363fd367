//! A scripted upstream server with a certificate from a test CA, speaking
//! implicit TLS or starting in plaintext and upgrading on the script's word
//! (STARTTLS, STLS): for the faults no real server will produce on demand
//! (closing in the middle of a response, answering nonsense), and for the
//! proxies' rules without root, Postfix or Dovecot ([`submission`],
//! [`maildrop`]). Postfix and Dovecot stay for the interop tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::ca::TestCa;

/// The connection under a [`Peer`]: plaintext until an upgrade, or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// One accepted connection (after the handshake on an implicit-TLS listener).
pub struct Peer {
    reader: BufReader<Conn>,
    config: Arc<ServerConfig>,
}

impl Peer {
    /// Reads one line without its line end; `None` when the client is gone.
    pub fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_string()),
        }
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        let stream = self.reader.get_mut();
        let _ = stream.write_all(bytes);
        let _ = stream.flush();
    }

    /// Whether TLS is on.
    pub fn is_tls(&self) -> bool {
        matches!(self.reader.get_ref(), Conn::Tls(_))
    }

    /// Starts TLS as the server (after its `220`/`+OK` to STARTTLS/STLS);
    /// whatever the client sent before is dropped (RFC 3207 section 4.2).
    pub fn upgrade(self) -> Peer {
        let Conn::Plain(tcp) = self.reader.into_inner() else {
            panic!("TLS is already on");
        };
        let conn = ServerConnection::new(Arc::clone(&self.config)).unwrap();
        Peer {
            reader: BufReader::new(Conn::Tls(Box::new(StreamOwned::new(conn, tcp)))),
            config: self.config,
        }
    }

    /// Ends the connection abruptly (no close_notify).
    pub fn vanish(self) {
        let tcp = match self.reader.into_inner() {
            Conn::Plain(tcp) => tcp,
            Conn::Tls(tls) => tls.sock,
        };
        let _ = tcp.shutdown(std::net::Shutdown::Both);
    }
}

/// How a scripted listener starts its connections.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The TLS handshake first.
    ImplicitTls,
    /// Plaintext; the script may [`Peer::upgrade`].
    Plain,
}

/// A listener on 127.0.0.1 running `script` for every connection.
pub struct Scripted {
    addr: SocketAddr,
}

impl Scripted {
    /// Serves `script` over implicit TLS for `localhost`, with a certificate
    /// `ca` issued into `dir`.
    pub fn start(dir: &Path, ca: &TestCa, script: fn(Peer)) -> Scripted {
        Scripted::serve(dir, ca, Start::ImplicitTls, Arc::new(script))
    }

    /// Serves `script` for every connection, started as `start` says.
    pub fn serve(
        dir: &Path,
        ca: &TestCa,
        start: Start,
        script: Arc<dyn Fn(Peer) + Send + Sync>,
    ) -> Scripted {
        let (cert, key) = ca.issue(dir, "scripted", &["localhost"]);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        let config = Arc::new(
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (config, script) = (Arc::clone(&config), Arc::clone(&script));
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
                    let peer = Peer {
                        reader: BufReader::new(Conn::Plain(tcp)),
                        config,
                    };
                    script(match start {
                        Start::ImplicitTls => peer.upgrade(),
                        Start::Plain => peer,
                    });
                });
            }
        });
        Scripted { addr }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// What a scripted submission server offers and saw.
#[derive(Default)]
pub struct Submission {
    /// Offer STARTTLS before TLS (otherwise credentials could only go in
    /// the clear, which the proxy refuses).
    pub starttls: bool,
    /// The SASL mechanisms offered after TLS (`PLAIN LOGIN`).
    pub mechanisms: &'static str,
    /// The one account it knows.
    pub user: &'static str,
    /// Its password.
    pub password: &'static str,
    /// Every command line it received, in order (AUTH lines as `AUTH <mech>`).
    pub commands: Mutex<Vec<String>>,
    /// Each accepted message, dot-unstuffed.
    pub messages: Mutex<Vec<Vec<u8>>>,
}

impl Submission {
    /// A submission server for `user`/`password` offering STARTTLS and PLAIN LOGIN.
    pub fn new(user: &'static str, password: &'static str) -> Submission {
        Submission {
            starttls: true,
            mechanisms: "PLAIN LOGIN",
            user,
            password,
            ..Submission::default()
        }
    }

    /// The commands received so far.
    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }

    /// The messages accepted so far.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.messages.lock().unwrap().clone()
    }

    fn credentials_ok(&self, user: &[u8], password: &[u8]) -> bool {
        user == self.user.as_bytes() && password == self.password.as_bytes()
    }
}

fn decoded(text: &str) -> Vec<u8> {
    sealpost::crypto::base64_decode(text.trim()).unwrap_or_default()
}

/// A submission server (RFC 6409): STARTTLS, AUTH PLAIN and LOGIN, then
/// MAIL, RCPT and DATA, each message kept in `state`.
pub fn submission(mut peer: Peer, state: &Submission) {
    peer.send(b"220 scripted ESMTP\r\n");
    let mut authenticated = false;
    while let Some(line) = peer.line() {
        let upper = line.to_ascii_uppercase();
        let logged = match upper.starts_with("AUTH ") {
            true => line.split(' ').take(2).collect::<Vec<_>>().join(" "),
            false => line.clone(),
        };
        state.commands.lock().unwrap().push(logged);
        let verb = upper.split(' ').next().unwrap_or("").to_string();
        match verb.as_str() {
            "EHLO" => {
                let mut lines = vec![
                    "scripted".to_string(),
                    "8BITMIME".into(),
                    "SIZE 100000000".into(),
                ];
                if peer.is_tls() {
                    lines.push(format!("AUTH {}", state.mechanisms));
                } else if state.starttls {
                    lines.push("STARTTLS".into());
                }
                let last = lines.len() - 1;
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i == last { ' ' } else { '-' };
                    peer.send(format!("250{sep}{l}\r\n").as_bytes());
                }
            }
            "STARTTLS" if !peer.is_tls() && state.starttls => {
                peer.send(b"220 2.0.0 go ahead\r\n");
                peer = peer.upgrade();
            }
            "AUTH" => {
                let Some((user, password)) = sasl(&mut peer, &line, state) else {
                    peer.send(b"504 5.5.4 mechanism not offered\r\n");
                    continue;
                };
                authenticated = state.credentials_ok(&user, &password);
                match authenticated {
                    true => peer.send(b"235 2.7.0 scripted: authenticated\r\n"),
                    false => peer.send(b"535 5.7.8 scripted: bad credentials\r\n"),
                }
            }
            "MAIL" | "RCPT" if !authenticated => {
                peer.send(b"530 5.7.0 scripted: authenticate first\r\n")
            }
            "MAIL" | "RCPT" | "RSET" | "NOOP" => peer.send(b"250 2.0.0 scripted: ok\r\n"),
            "DATA" if authenticated => {
                peer.send(b"354 scripted: go on\r\n");
                let Some(message) = message(&mut peer) else {
                    return;
                };
                state.messages.lock().unwrap().push(message);
                peer.send(b"250 2.0.0 scripted: queued\r\n");
            }
            "QUIT" => {
                peer.send(b"221 2.0.0 scripted: bye\r\n");
                return;
            }
            _ => peer.send(b"502 5.5.1 scripted: not here\r\n"),
        }
    }
}

/// The user name and password of an AUTH command (RFC 4616 PLAIN, with or
/// without an initial response, or LOGIN); `None` for a mechanism not offered.
fn sasl(peer: &mut Peer, line: &str, state: &Submission) -> Option<(Vec<u8>, Vec<u8>)> {
    let words: Vec<&str> = line.split(' ').collect();
    match words.get(1).map(|m| m.to_ascii_uppercase()).as_deref() {
        Some("PLAIN") => {
            let response = match words.get(2) {
                Some(r) => r.to_string(),
                None => {
                    peer.send(b"334 \r\n");
                    peer.line().unwrap_or_default()
                }
            };
            let plain = decoded(&response);
            let mut parts = plain.split(|&b| b == 0).skip(1);
            Some((
                parts.next().unwrap_or_default().to_vec(),
                parts.next().unwrap_or_default().to_vec(),
            ))
        }
        Some("LOGIN") if state.mechanisms.contains("LOGIN") => {
            peer.send(b"334 VXNlcm5hbWU6\r\n");
            let user = decoded(&peer.line().unwrap_or_default());
            peer.send(b"334 UGFzc3dvcmQ6\r\n");
            Some((user, decoded(&peer.line().unwrap_or_default())))
        }
        _ => None,
    }
}

/// A message after DATA up to its `.` line, dot-unstuffed; `None` if the
/// client left.
fn message(peer: &mut Peer) -> Option<Vec<u8>> {
    let mut message = Vec::new();
    loop {
        let line = peer.line()?;
        if line == "." {
            return Some(message);
        }
        let line = line.strip_prefix('.').unwrap_or(&line);
        message.extend_from_slice(line.as_bytes());
        message.extend_from_slice(b"\r\n");
    }
}

/// A multi-line answer's body, dot-stuffed, and its end.
fn send_stuffed(peer: &mut Peer, body: &[u8]) {
    let mut stuffed = Vec::new();
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            stuffed.push(b'.');
        }
        stuffed.extend_from_slice(line);
    }
    stuffed.extend_from_slice(b".\r\n");
    peer.send(&stuffed);
}

/// What a scripted POP3 server holds and saw.
#[derive(Default)]
pub struct Maildrop {
    /// Offer STLS before TLS.
    pub stls: bool,
    /// The one account it knows.
    pub user: &'static str,
    /// Its password.
    pub password: &'static str,
    /// The messages: UIDL and body (CRLF line ends), numbered from 1.
    pub messages: Mutex<Vec<(String, Vec<u8>)>>,
    /// Every command line it received (PASS shown without the password).
    pub commands: Mutex<Vec<String>>,
}

impl Maildrop {
    /// A maildrop for `user`/`password` offering STLS, holding `messages`.
    pub fn new(user: &'static str, password: &'static str, messages: &[(&str, &[u8])]) -> Maildrop {
        Maildrop {
            stls: true,
            user,
            password,
            messages: Mutex::new(
                messages
                    .iter()
                    .map(|(uidl, body)| (uidl.to_string(), body.to_vec()))
                    .collect(),
            ),
            ..Maildrop::default()
        }
    }

    /// The commands received so far.
    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }

    /// The UIDLs still held.
    pub fn uidls(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|(u, _)| u.clone())
            .collect()
    }
}

/// A POP3 server (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS): USER/PASS, then
/// STAT, LIST, UIDL, RETR, DELE and QUIT, which removes what DELE marked.
pub fn maildrop(mut peer: Peer, state: &Maildrop) {
    peer.send(b"+OK scripted POP3\r\n");
    let (mut user, mut logged_in, mut deleted) = (None, false, Vec::new());
    while let Some(line) = peer.line() {
        let mut words = line.split(' ');
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        let arg = words.next().unwrap_or("").to_string();
        let shown = if verb == "PASS" { "PASS" } else { &line };
        state.commands.lock().unwrap().push(shown.to_string());
        let messages = state.messages.lock().unwrap().clone();
        let number = arg
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=messages.len()).contains(n));
        match verb.as_str() {
            "CAPA" => {
                // Login only over TLS, STLS only before (RFC 2595 section 4).
                let login = match (peer.is_tls(), state.stls) {
                    (true, _) => "USER\r\n",
                    (false, true) => "STLS\r\n",
                    (false, false) => "",
                };
                peer.send(format!("+OK scripted\r\nUIDL\r\nTOP\r\n{login}.\r\n").as_bytes());
            }
            "STLS" if state.stls && !peer.is_tls() => {
                peer.send(b"+OK scripted: begin TLS\r\n");
                peer = peer.upgrade();
            }
            "USER" => {
                user = Some(arg);
                peer.send(b"+OK scripted: send PASS\r\n");
            }
            "PASS" => {
                logged_in = user.as_deref() == Some(state.user) && arg == state.password;
                match logged_in {
                    true => peer.send(b"+OK scripted: logged in\r\n"),
                    false => peer.send(b"-ERR [AUTH] scripted: bad credentials\r\n"),
                }
            }
            "QUIT" if logged_in => {
                state
                    .messages
                    .lock()
                    .unwrap()
                    .retain(|(u, _)| !deleted.contains(u));
                peer.send(b"+OK scripted: bye\r\n");
                return;
            }
            "QUIT" => {
                peer.send(b"+OK scripted: bye\r\n");
                return;
            }
            _ if !logged_in => peer.send(b"-ERR scripted: log in first\r\n"),
            "STAT" => {
                let octets: usize = messages.iter().map(|(_, b)| b.len()).sum();
                peer.send(format!("+OK {} {octets}\r\n", messages.len()).as_bytes());
            }
            "UIDL" | "LIST" if arg.is_empty() => {
                peer.send(b"+OK scripted: listing\r\n");
                for (i, (uidl, body)) in messages.iter().enumerate() {
                    let value = if verb == "UIDL" {
                        uidl.clone()
                    } else {
                        body.len().to_string()
                    };
                    peer.send(format!("{} {value}\r\n", i + 1).as_bytes());
                }
                peer.send(b".\r\n");
            }
            "RETR" if number.is_some() => {
                let body = &messages[number.unwrap() - 1].1;
                peer.send(format!("+OK {} octets\r\n", body.len()).as_bytes());
                send_stuffed(&mut peer, body);
            }
            "DELE" if number.is_some() => {
                deleted.push(messages[number.unwrap() - 1].0.clone());
                peer.send(b"+OK scripted: marked\r\n");
            }
            "NOOP" | "RSET" => peer.send(b"+OK\r\n"),
            _ => peer.send(b"-ERR scripted: no such message or command\r\n"),
        }
    }
}
