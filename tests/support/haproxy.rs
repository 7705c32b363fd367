//! A private HAProxy in the foreground, from a configuration the test
//! writes, on loopback; killed when dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{PortTaken, on_free_ports, peer, says_port_taken, wait_until};

/// The TCP-mode defaults every test configuration starts with.
pub const DEFAULTS: &str =
    "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n";

/// A running HAProxy.
pub struct Haproxy(Child);

impl Haproxy {
    /// Writes `config` (after [`DEFAULTS`]) to `dir/haproxy.cfg`, starts
    /// HAProxy and waits until `front` accepts connections. `None` after
    /// saying why when HAProxy is missing (a failure under CI).
    pub fn start(dir: &Path, config: &str, front: SocketAddr) -> Option<Haproxy> {
        match Haproxy::start_in(dir, config, front) {
            Ok(started) => started,
            Err(PortTaken) => panic!("HAProxy could not bind {front}: it is taken"),
        }
    }

    /// Starts HAProxy with `config(ports)` on `n` loopback ports chosen
    /// here, the first of them its front; should one be taken before HAProxy
    /// binds it (it exits with EADDRINUSE), it starts again on other ports.
    pub fn start_on(
        dir: &Path,
        n: usize,
        config: impl Fn(&[u16]) -> String,
    ) -> Option<(Haproxy, Vec<u16>)> {
        on_free_ports(n, |ports, _| {
            let front = SocketAddr::from(([127, 0, 0, 1], ports[0]));
            Ok(Haproxy::start_in(dir, &config(ports), front)?.map(|h| (h, ports.to_vec())))
        })
    }

    fn start_in(dir: &Path, config: &str, front: SocketAddr) -> Result<Option<Haproxy>, PortTaken> {
        let Some(haproxy) = peer("haproxy", &["haproxy", "/usr/sbin/haproxy"]) else {
            return Ok(None);
        };
        let file = dir.join("haproxy.cfg");
        let log = dir.join("haproxy.log");
        std::fs::write(&file, format!("{DEFAULTS}{config}")).unwrap();
        let child = Command::new(haproxy)
            .arg("-f")
            .arg(&file)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start haproxy");
        let mut running = Haproxy(child);
        // Either it listens, or it exited: a bind that failed ends it.
        let mut exited = false;
        wait_until("HAProxy listens or exits", || {
            exited = matches!(running.0.try_wait(), Ok(Some(_)));
            exited || TcpStream::connect(front).is_ok()
        });
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        if exited && says_port_taken(&said) {
            return Err(PortTaken);
        }
        assert!(!exited, "HAProxy exited:\n{said}");
        Ok(Some(running))
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
