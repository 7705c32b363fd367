//! A throwaway Dovecot instance (its own configuration, state and log),
//! listening only on loopback, stopped when dropped. Needs root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::{Duration, Instant};

use super::peer;

/// A running private Dovecot.
pub struct Dovecot {
    dir: PathBuf,
    /// The master's pid, read at start: the directory may be gone at drop.
    pid: Option<i32>,
}

impl Dovecot {
    /// Starts Dovecot in `dir` with passwd-file users `(name, password)`,
    /// mail in `dir/home/<user>/Maildir`, and `extra` appended to the
    /// configuration (protocols and listeners). `None` after saying why
    /// when Dovecot or root is missing (a failure under CI).
    pub fn start(dir: &Path, users: &[(&str, &str)], extra: &str) -> Option<Dovecot> {
        Dovecot::start_on(dir, users, 0, |_| extra.to_string()).map(|(d, _)| d)
    }

    /// Starts Dovecot with `extra(ports)` appended to its configuration,
    /// on `n` loopback ports chosen here. Should one be taken before the
    /// master binds it (it exits with EADDRINUSE), it starts again on other
    /// ports, in a fresh directory beside `dir`. Returns Dovecot and the ports.
    pub fn start_on(
        dir: &Path,
        users: &[(&str, &str)],
        n: usize,
        extra: impl Fn(&[u16]) -> String,
    ) -> Option<(Dovecot, Vec<u16>)> {
        super::on_free_ports(n, |ports, attempt| {
            let dir = match attempt {
                0 => dir.to_path_buf(),
                n => dir.with_extension(format!("retry{n}")),
            };
            match Dovecot::start_in(&dir, users, &extra(ports)) {
                Err(super::PortTaken) => Err(super::PortTaken),
                Ok(started) => Ok(started.map(|d| (d, ports.to_vec()))),
            }
        })
    }

    fn start_in(
        dir: &Path,
        users: &[(&str, &str)],
        extra: &str,
    ) -> Result<Option<Dovecot>, super::PortTaken> {
        if peer("dovecot", &["/usr/sbin/dovecot"]).is_none() {
            return Ok(None);
        }
        if !super::is_root() {
            return Ok(super::missing_peer("a private Dovecot instance needs root"));
        }
        for sub in ["run", "state", "home"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let passwd: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}::::::\n"))
            .collect();
        fs::write(dir.join("passwd"), passwd).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let conf = dir.join("dovecot.conf");
        fs::write(
            &conf,
            format!(
                "base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
instance_name = {name}
listen = 127.0.0.1
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:{d}/home/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/home/%u
}}
{extra}
",
                d = dir.display()
            ),
        )
        .unwrap();
        // Dovecot daemonises; `run` captures through files, so the daemon
        // keeping them open does not matter.
        let out = super::run(Command::new("dovecot").arg("-c").arg(&conf));
        // The master binds its listeners before it detaches: a port taken
        // meanwhile fails it.
        let log = fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default();
        if !out.status.success() && super::says_port_taken(&(log + &super::stderr(&out))) {
            return Err(super::PortTaken);
        }
        let dovecot = Dovecot {
            dir: dir.to_path_buf(),
            pid: super::daemon_pid(&dir.join("run/master.pid")),
        };
        assert!(
            out.status.success(),
            "dovecot failed to start: {}\n{}",
            super::stderr(&out),
            dovecot.log()
        );
        Ok(Some(dovecot))
    }

    /// The Dovecot log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// The home of `user` (its Maildir is below it).
    pub fn home(&self, user: &str) -> PathBuf {
        self.dir.join("home").join(user)
    }

    /// Waits until `addr` accepts connections.
    pub fn wait_listening(&self, addr: std::net::SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "dovecot never listened on {addr}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // Its children follow the master.
        super::terminate(self.pid);
    }
}
