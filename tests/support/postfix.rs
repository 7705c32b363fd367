//! A throwaway Postfix instance with its own configuration directory, queue
//! and log, listening only on loopback, stopped when dropped. Needs root
//! (Postfix's master runs as root and drops to the postfix user).

// System calls the standard library does not offer (signals, pipes,
// namespaces, resource limits), each block with its SAFETY comment.
#![allow(unsafe_code)]

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::peer;

/// A port nobody listens on right now; another process may take it before
/// it is used, so peers that bind it start through [`super::on_free_ports`].
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port held by a socket that is bound but not listening, so
/// that connections to it are refused for as long as the guard lives and no
/// other test can take the port meanwhile.
pub fn refused_port() -> (std::os::fd::OwnedFd, u16) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we own and hand to OwnedFd.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len),
            0
        );
        assert_eq!(
            libc::getsockname(fd, &mut addr as *mut _ as *mut libc::sockaddr, &mut len),
            0
        );
        (owned, u16::from_be(addr.sin_port))
    }
}

/// Runs Postfix's `smtp-source` against `port`; the seconds until its last
/// message was answered (within 15 minutes, or the test fails).
pub fn smtp_source(source: &Path, port: u16, load: &Load, to: &str, per_session: bool) -> f64 {
    let mut cmd = Command::new(source);
    cmd.args(["-s", &load.sessions.to_string()])
        .args(["-m", &load.count.to_string()])
        .args(["-l", &load.size.to_string()])
        .args(["-f", "bench@example.org", "-t", to]);
    if per_session {
        cmd.arg("-d");
    }
    cmd.arg(format!("127.0.0.1:{port}"));
    let started = Instant::now();
    let out = super::run_with_timeout(&mut cmd, b"", Duration::from_secs(900));
    assert!(out.status.success(), "smtp-source: {}", super::stderr(&out));
    started.elapsed().as_secs_f64()
}

/// A load for `smtp-source`: `count` messages of about `size` bytes over
/// `sessions` connections at a time.
pub struct Load {
    /// Message size in bytes.
    pub size: usize,
    /// Messages in all.
    pub count: usize,
    /// Connections at a time.
    pub sessions: usize,
}

impl Load {
    /// `10 KiB x 5000 over 32 connections[, -d]`.
    pub fn label(&self, per_session: bool) -> String {
        let size = if self.size >= 1 << 20 {
            format!("{} MiB", self.size >> 20)
        } else {
            format!("{} KiB", self.size >> 10)
        };
        let how = if per_session { ", -d" } else { "" };
        format!(
            "{size} x {} over {} connections{how}",
            self.count, self.sessions
        )
    }
}

/// A running private Postfix.
pub struct Postfix {
    dir: PathBuf,
    /// The master's pid, read at start: the directory may be gone at drop.
    pid: Option<i32>,
}

const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

impl Postfix {
    /// Starts Postfix in `dir` with `main_extra` appended to main.cf and
    /// `services` (smtpd listeners) prepended to master.cf. `None` after
    /// saying why when Postfix or root is missing (a failure under CI).
    pub fn start(dir: &Path, main_extra: &str, services: &str) -> Option<Postfix> {
        Postfix::start_on(dir, main_extra, 0, |_| services.to_string()).map(|(p, _)| p)
    }

    /// Starts Postfix with `n` smtpd listeners on loopback ports chosen
    /// here: `services(ports)` gives master.cf's lines for them. Should one
    /// be taken before the master binds it (`postfix start` fails with
    /// EADDRINUSE in the log), it starts again on other ports, in a fresh
    /// directory beside `dir`. Returns Postfix and the ports.
    pub fn start_on(
        dir: &Path,
        main_extra: &str,
        n: usize,
        services: impl Fn(&[u16]) -> String,
    ) -> Option<(Postfix, Vec<u16>)> {
        super::on_free_ports(n, |ports, attempt| {
            let dir = match attempt {
                0 => dir.to_path_buf(),
                n => dir.with_extension(format!("retry{n}")),
            };
            match Postfix::start_in(&dir, main_extra, &services(ports)) {
                Err(super::PortTaken) => Err(super::PortTaken),
                Ok(started) => Ok(started.map(|p| (p, ports.to_vec()))),
            }
        })
    }

    fn start_in(
        dir: &Path,
        main_extra: &str,
        services: &str,
    ) -> Result<Option<Postfix>, super::PortTaken> {
        if peer("postfix", &["/usr/sbin/postfix"]).is_none() {
            return Ok(None);
        }
        if !super::is_root() {
            return Ok(super::missing_peer("a private Postfix instance needs root"));
        }
        let conf = dir.join("conf");
        for sub in ["conf", "queue", "data"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let status = super::run(Command::new("chown").arg("postfix").arg(dir.join("data"))).status;
        assert!(status.success());
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix-test.localdomain
mydomain = localdomain
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
message_size_limit = 0
smtp_line_length_limit = 0
{main_extra}
",
            dir = dir.display()
        );
        fs::write(conf.join("main.cf"), main_cf).unwrap();
        fs::write(conf.join("master.cf"), format!("{services}\n{MASTER_CF}")).unwrap();
        // The master daemonises; `run` captures through files, so the daemon
        // keeping them open does not matter.
        let out = super::run(Command::new("postfix").arg("-c").arg(&conf).arg("start"));
        // `postfix start` waits for the master's initialisation, in which
        // it binds its listeners: a port taken meanwhile fails it.
        if !out.status.success()
            && super::says_port_taken(&fs::read_to_string(dir.join("maillog")).unwrap_or_default())
        {
            return Err(super::PortTaken);
        }
        let postfix = Postfix {
            dir: dir.to_path_buf(),
            pid: super::daemon_pid(&dir.join("queue/pid/master.pid")),
        };
        assert!(
            out.status.success(),
            "postfix start failed: {}\n{}",
            super::stderr(&out),
            postfix.log()
        );
        Ok(Some(postfix))
    }

    /// The Postfix log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// Waits until `addr` accepts connections.
    pub fn wait_listening(&self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "postfix never listened on {addr}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // SIGTERM is how `postfix stop` stops the master; its children follow.
        super::terminate(self.pid);
    }
}
