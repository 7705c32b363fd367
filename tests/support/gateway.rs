//! A running `sealpost serve`, and clients that talk to it over real sockets
//! and real TLS (rustls, trusting the gateway's generated certificate).

// System calls the standard library does not offer (signals, pipes,
// namespaces, resource limits), each block with its SAFETY comment.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::{Sandbox, sealpost_bin};

/// The gateway process of a sandbox.
pub struct Gateway {
    child: Option<Child>,
    addrs: HashMap<String, SocketAddr>,
    log: Arc<Mutex<String>>,
    /// The certificate clients must trust.
    pub cert: PathBuf,
}

impl Gateway {
    /// Starts `sealpost serve` and waits until every listener is bound.
    pub fn start(sb: &Sandbox) -> Gateway {
        Gateway::start_with(sb, |_| {})
    }

    /// [`Gateway::start`], with `adjust` given the command first (to set a
    /// resource limit, say).
    pub fn start_with(sb: &Sandbox, adjust: impl FnOnce(&mut Command)) -> Gateway {
        Gateway::start_program(sb, Command::new(sealpost_bin()), adjust)
    }

    /// [`Gateway::start`], handing the gateway `sockets` bound by the test
    /// (systemd's socket activation protocol: `LISTEN_PID`, `LISTEN_FDS`,
    /// descriptors from 3 on), so that its ports cannot be taken by anyone
    /// else, even between a stop and a restart.
    pub fn start_handing(sb: &Sandbox, sockets: &[&std::net::TcpListener]) -> Gateway {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fds: Vec<i32> = sockets.iter().map(|s| s.as_raw_fd()).collect();
        let mut command = Command::new("sh");
        // `exec` keeps the shell's pid, which LISTEN_PID must name.
        command.args([
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=$0 exec \"$@\"",
            &fds.len().to_string(),
        ]);
        command.arg(sealpost_bin());
        Gateway::start_program(sb, command, |command| {
            // SAFETY: only fcntl and dup2, async-signal-safe, on descriptors
            // this process owns, between fork and exec. Each is first moved
            // above 100 (close-on-exec) so that no dup2 overwrites another.
            unsafe {
                command.pre_exec(move || {
                    let high: Vec<i32> = fds
                        .iter()
                        .map(|&fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100))
                        .collect();
                    for (i, &fd) in high.iter().enumerate() {
                        if fd < 0 || libc::dup2(fd, 3 + i as i32) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        })
    }

    /// [`Gateway::start_with`] for another program: `command` is the
    /// binary to run, with anything that must come before the gateway's
    /// own arguments (an emulator and the binary it runs, say).
    pub fn start_program(
        sb: &Sandbox,
        mut command: Command,
        adjust: impl FnOnce(&mut Command),
    ) -> Gateway {
        command
            .arg("-c")
            .arg(sb.config())
            .arg("serve")
            .env("RUST_LOG", "info")
            .current_dir(&sb.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        adjust(&mut command);
        let mut child = command.spawn().expect("start sealpost serve");
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var("SEALPOST_TEST_LOG").is_ok() {
                    eprintln!("gateway: {line}");
                }
                let ready = line.contains(" ready (data in ");
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
                drop(log);
                if ready {
                    let _ = ready_tx.send(());
                }
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!("the gateway did not start:\n{}", log.lock().unwrap());
        }
        let mut addrs = HashMap::new();
        for line in log.lock().unwrap().lines() {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let mut words = rest.split_whitespace();
                if let (Some(key), Some(addr)) = (words.next(), words.next()) {
                    addrs.insert(key.to_string(), addr.parse().unwrap());
                }
            }
        }
        Gateway {
            child: Some(child),
            addrs,
            log,
            cert: sb.data().join("tls/cert.pem"),
        }
    }

    /// The bound address of a listener, by configuration key (`smtp.listen[0]`).
    pub fn addr(&self, key: &str) -> SocketAddr {
        *self
            .addrs
            .get(key)
            .unwrap_or_else(|| panic!("no listener {key}: {:?}", self.addrs))
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (or panics after `timeout`).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        self.wait_for_log_count(needle, 1, timeout);
    }

    /// Waits until the log contains `needle` at least `count` times (or
    /// panics after `timeout`): for a line an earlier step logged already.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().matches(needle).count() >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{needle:?} did not appear {count} time(s) in the log:\n{}",
            self.log()
        );
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The files the gateway holds open whose path contains `needle`
    /// (spool files show as `…/spool/… (deleted)`).
    pub fn open_files(&self, needle: &str) -> Vec<String> {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return Vec::new();
        };
        fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .map(|target| target.to_string_lossy().into_owned())
            .filter(|target| target.contains(needle))
            .collect()
    }

    /// Waits until the gateway holds no spool file open: every message it
    /// was receiving has been stored or dropped, and its key forgotten.
    pub fn wait_for_no_spool(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let open = self.open_files("/spool/");
            if open.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "spool files still open: {open:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Peak resident memory (VmHWM) since start or the last reset, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Starts counting the peak afresh from the current RSS (proc(5),
    /// /proc/pid/clear_refs: writing 5 resets the peak RSS).
    pub fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").unwrap();
    }

    /// Threads of the process.
    pub fn threads(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill with our own child's pid.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(30))
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the gateway did not exit:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TLS client configuration trusting exactly the certificate in `cert`.
pub fn client_config(cert: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A byte stream that is plain TCP or TLS.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Starts TLS as the client on `tcp`, verifying the gateway as `localhost`.
pub fn tls(tcp: TcpStream, cert: &Path) -> StreamOwned<ClientConnection, TcpStream> {
    tls_as(tcp, cert, "localhost")
}

/// Starts TLS as the client on `tcp`, verifying the gateway as `name`.
pub fn tls_as(tcp: TcpStream, cert: &Path, name: &str) -> StreamOwned<ClientConnection, TcpStream> {
    try_tls_as(tcp, cert, name).expect("TLS handshake")
}

/// As [`tls_as`], with the handshake's failure returned.
pub fn try_tls_as(
    tcp: TcpStream,
    cert: &Path,
    name: &str,
) -> std::io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let conn = ClientConnection::new(
        client_config(cert),
        ServerName::try_from(name.to_string()).unwrap(),
    )
    .unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// A line-protocol client (SMTP or POP3) over plain TCP or TLS.
pub struct LineClient {
    stream: Box<dyn Stream>,
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl LineClient {
    /// Connects over plain TCP.
    pub fn plain(addr: SocketAddr) -> LineClient {
        LineClient::plain_from(addr, None)
    }

    /// Connects over plain TCP from a chosen loopback address (127.0.0.x).
    pub fn plain_from(addr: SocketAddr, source: Option<&str>) -> LineClient {
        let tcp = match source {
            None => TcpStream::connect(addr).unwrap(),
            Some(ip) => connect_from(addr, ip),
        };
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        LineClient {
            stream: Box::new(tcp.try_clone().unwrap()),
            tcp,
            buf: Vec::new(),
        }
    }

    /// Connects with implicit TLS.
    pub fn implicit_tls(addr: SocketAddr, cert: &Path) -> LineClient {
        LineClient::implicit_tls_as(addr, cert, "localhost")
    }

    /// Connects with implicit TLS, verifying the server as `name` against
    /// the roots in `cert`.
    pub fn implicit_tls_as(addr: SocketAddr, cert: &Path, name: &str) -> LineClient {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let clone = tcp.try_clone().unwrap();
        LineClient {
            stream: Box::new(tls_as(tcp, cert, name)),
            tcp: clone,
            buf: Vec::new(),
        }
    }

    /// Upgrades a plain connection after STARTTLS/STLS was accepted. Any
    /// unread plaintext the server sent is an error.
    pub fn start_tls(self, cert: &Path) -> LineClient {
        assert!(
            self.buf.is_empty(),
            "the server sent more before the handshake: {:?}",
            self.buf
        );
        let clone = self.tcp.try_clone().unwrap();
        LineClient {
            stream: Box::new(tls(self.tcp, cert)),
            tcp: clone,
            buf: Vec::new(),
        }
    }

    /// One SMTP transaction after EHLO: MAIL, RCPT and DATA with `message`
    /// (CRLF lines, no line starting with a dot). Returns the reply to the
    /// message, or the first reply that refused the transaction.
    pub fn smtp_send(&mut self, from: &str, to: &str, message: &[u8]) -> String {
        for command in [format!("MAIL FROM:<{from}>"), format!("RCPT TO:<{to}>")] {
            let reply = self.smtp(&command);
            if !reply.starts_with("250") {
                return reply;
            }
        }
        expect(&self.smtp("DATA"), "354");
        self.send_raw(message);
        self.send_raw(b".\r\n");
        self.smtp_reply()
    }

    /// The client's own address and port, as the gateway sees it.
    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr().unwrap()
    }

    /// Sets how long reads wait.
    pub fn set_timeout(&self, timeout: Duration) {
        self.tcp.set_read_timeout(Some(timeout)).unwrap();
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// Writes raw bytes, reporting failure instead of panicking.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one line (with its CRLF); `None` at end of stream.
    pub fn read_line(&mut self) -> Option<String> {
        self.read_raw_line()
            .map(|line| String::from_utf8_lossy(&line).into_owned())
    }

    /// Reads one whole SMTP reply (all its lines); empty at end of stream.
    pub fn smtp_reply(&mut self) -> String {
        let mut reply = String::new();
        while let Some(line) = self.read_line() {
            reply.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        reply
    }

    /// Sends an SMTP command line and returns the reply.
    pub fn smtp(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.smtp_reply()
    }

    /// Sends a POP3 command and returns its status line.
    pub fn pop3(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.read_line().unwrap_or_default()
    }

    /// Reads the body of a multi-line POP3 response up to `.CRLF`, with the
    /// dot-stuffing removed.
    pub fn pop3_body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.read_raw_line().expect("the response ended early");
            if line == b".\r\n" {
                return body;
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            body.extend_from_slice(line);
        }
    }

    /// Sends a POP3 command with a multi-line answer; returns status and body.
    pub fn pop3_multi(&mut self, line: &str) -> (String, Vec<u8>) {
        let status = self.pop3(line);
        if status.starts_with("+OK") {
            (status, self.pop3_body())
        } else {
            (status, Vec::new())
        }
    }

    /// Reads one line as raw bytes (with its CRLF).
    pub fn read_raw_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Some(self.buf.drain(..=i).collect());
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Whether the server closed the connection (reads end of stream).
    pub fn closed(&mut self) -> bool {
        self.read_line().is_none()
    }
}

/// The three-digit code of a reply.
pub fn code(reply: &str) -> u16 {
    reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Asserts a reply starts with `expected` (such as `"250 2.1.5"`).
#[track_caller]
pub fn expect(reply: &str, expected: &str) {
    let last = reply.lines().last().unwrap_or("");
    assert!(
        last.starts_with(expected),
        "expected {expected:?}, got {reply:?}"
    );
}

/// A TCP connection from `source` (another loopback address, to look like
/// another client) to `addr`.
pub fn connect_from(addr: SocketAddr, source: &str) -> TcpStream {
    use std::os::fd::FromRawFd;
    let source: std::net::Ipv4Addr = source.parse().unwrap();
    let std::net::SocketAddr::V4(target) = addr else {
        panic!("IPv4 only")
    };
    // SAFETY: plain socket calls on a descriptor we own and hand to TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let local = sockaddr(source, 0);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, &local as *const _ as *const libc::sockaddr, len),
            0,
            "bind {source}"
        );
        let remote = sockaddr(*target.ip(), target.port());
        assert_eq!(
            libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len),
            0,
            "connect {addr}"
        );
        TcpStream::from_raw_fd(fd)
    }
}

/// The first flight of a TLS client: a real ClientHello (for tests that send
/// one where it does not belong, or send it slowly).
pub fn client_hello() -> Vec<u8> {
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
    let mut conn =
        ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}
