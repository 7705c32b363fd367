//! A private HAProxy in the foreground, from a configuration the test
//! writes, on loopback; killed when dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{peer, wait_until};

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
        let haproxy = peer("haproxy", &["haproxy", "/usr/sbin/haproxy"])?;
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, format!("{DEFAULTS}{config}")).unwrap();
        let child = Command::new(haproxy)
            .arg("-f")
            .arg(&file)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let running = Haproxy(child);
        wait_until("HAProxy listens", || TcpStream::connect(front).is_ok());
        Some(running)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
