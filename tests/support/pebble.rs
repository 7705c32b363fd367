//! Let's Encrypt's test ACME server (Debian's `pebble`) and its mock DNS
//! server (`pebble-challtestsrv`), private instances on loopback ports,
//! killed when dropped. challtestsrv answers every A query with 127.0.0.1,
//! so Pebble validates every name against the gateway's listeners on the
//! `httpPort` and `tlsPort` given here.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ca::TestCa;
use super::{PortTaken, on_free_ports, peer, run, says_port_taken};

/// Ports chosen by the test rather than free ones.
#[derive(Default, Clone, Copy)]
pub struct Fixed {
    /// challtestsrv's DNS port.
    pub dns: Option<u16>,
    /// The TLS-ALPN-01 port Pebble validates on.
    pub tls: Option<u16>,
}

/// A running Pebble and challtestsrv.
pub struct Pebble {
    children: Vec<Child>,
    /// The ACME directory URL.
    pub directory: String,
    /// What the gateway trusts for Pebble's own HTTPS (`acme.ca_file`).
    pub ca_file: PathBuf,
    /// Pebble's management interface (`/roots/0`).
    pub management: SocketAddr,
    /// challtestsrv's management interface (`/set-txt`).
    pub dns_management: SocketAddr,
    /// Pebble's log (standard output and error).
    pub log_file: PathBuf,
    /// The HTTP-01 port Pebble validates on.
    pub http_port: u16,
    /// The TLS-ALPN-01 port Pebble validates on.
    pub tls_port: u16,
}

/// Whether `addr` accepts connections before `deadline`, unless `child` exits.
fn listening(addr: SocketAddr, child: &mut Child, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Pebble {
    /// Starts both on free ports, with `validity_secs` as the certificates'
    /// lifetime (Pebble's `certificateValidityPeriod`). `None` after saying
    /// why when Pebble is not installed (a failure under CI).
    pub fn start(dir: &Path, validity_secs: u64) -> Option<Pebble> {
        Pebble::start_with(dir, validity_secs, Fixed::default())
    }

    /// As [`Pebble::start`], with the ports `fixed` names (in a network
    /// namespace of the test's own, where 53 and 443 are free).
    pub fn start_with(dir: &Path, validity_secs: u64, fixed: Fixed) -> Option<Pebble> {
        let pebble = peer("pebble", &["pebble", "/usr/bin/pebble"])?;
        let challtestsrv = peer("pebble-challtestsrv", &["pebble-challtestsrv"])?;
        std::fs::create_dir_all(dir).unwrap();
        let ca = TestCa::new(dir, "pebble-https");
        let (cert, key) = ca.issue(dir, "pebble-https", &["localhost"]);
        Some(on_free_ports(6, |ports, attempt| {
            let mut ports = ports.to_vec();
            if let Some(dns) = fixed.dns {
                ports[2] = dns;
            }
            if let Some(tls) = fixed.tls {
                ports[5] = tls;
            }
            Pebble::start_on(
                dir,
                &pebble,
                &challtestsrv,
                &ports,
                attempt,
                validity_secs,
                &cert,
                &key,
            )
            .map(|mut p| {
                p.ca_file = ca.cert_file.clone();
                p
            })
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn start_on(
        dir: &Path,
        pebble: &Path,
        challtestsrv: &Path,
        ports: &[u16],
        attempt: usize,
        validity_secs: u64,
        cert: &Path,
        key: &Path,
    ) -> Result<Pebble, PortTaken> {
        let [acme, management, dns, dns_management, http_port, tls_port] = ports else {
            unreachable!()
        };
        let lo = |port: &u16| SocketAddr::from(([127, 0, 0, 1], *port));
        let dns_log = dir.join(format!("challtestsrv-{attempt}.log"));
        let mut dns_server = Command::new(challtestsrv)
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &lo(dns).to_string()])
            .args(["-management", &lo(dns_management).to_string()])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&dns_log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::options()
                    .append(true)
                    .open(&dns_log)
                    .unwrap(),
            ))
            .spawn()
            .expect("start pebble-challtestsrv");
        if !listening(
            lo(dns_management),
            &mut dns_server,
            Instant::now() + Duration::from_secs(20),
        ) {
            let _ = dns_server.kill();
            let _ = dns_server.wait();
            let log = std::fs::read_to_string(&dns_log).unwrap_or_default();
            assert!(says_port_taken(&log), "challtestsrv did not start:\n{log}");
            return Err(PortTaken);
        }
        let config = dir.join(format!("pebble-{attempt}.json"));
        let settings = serde_json::json!({ "pebble": {
            "listenAddress": lo(acme).to_string(),
            "managementListenAddress": lo(management).to_string(),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_secs,
        }});
        std::fs::write(&config, serde_json::to_vec_pretty(&settings).unwrap()).unwrap();
        let log_file = dir.join(format!("pebble-{attempt}.log"));
        // No sleeping before validations, and no authorization reused: a
        // reused one would let a "TLS-ALPN-01" order pass without any
        // validation. Its 5 % of refused nonces stay on (badNonce retried).
        let mut server = Command::new(pebble)
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &lo(dns).to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log_file).unwrap())
            .stderr(Stdio::from(
                std::fs::File::options()
                    .append(true)
                    .open(&log_file)
                    .unwrap(),
            ))
            .spawn()
            .expect("start pebble");
        let deadline = Instant::now() + Duration::from_secs(30);
        let up = listening(lo(acme), &mut server, deadline)
            && listening(lo(management), &mut server, deadline);
        let started = Pebble {
            children: vec![server, dns_server],
            directory: format!("https://localhost:{acme}/dir"),
            ca_file: PathBuf::new(),
            management: lo(management),
            dns_management: lo(dns_management),
            log_file,
            http_port: *http_port,
            tls_port: *tls_port,
        };
        if !up {
            let log = started.log();
            assert!(says_port_taken(&log), "pebble did not start:\n{log}");
            return Err(PortTaken);
        }
        Ok(started)
    }

    /// Everything Pebble logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// The root that issues this run's certificates (it changes at every
    /// start), written to `file`.
    pub fn root(&self, file: &Path) -> PathBuf {
        let url = format!("https://localhost:{}/roots/0", self.management.port());
        let out = run(Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "20", "--cacert"])
            .arg(&self.ca_file)
            .arg("-o")
            .arg(file)
            .arg(&url));
        assert!(out.status.success(), "curl {url}: {}", super::stderr(&out));
        file.to_path_buf()
    }

    /// Makes challtestsrv answer `host` (a full name) with one TXT record.
    pub fn set_txt(&self, host: &str, value: &str) {
        let body = serde_json::json!({ "host": format!("{host}."), "value": value }).to_string();
        let out = run(Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "20", "--data-binary", &body])
            .arg(format!("http://{}/set-txt", self.dns_management)));
        assert!(out.status.success(), "set-txt: {}", super::stderr(&out));
    }

    /// Stops Pebble (the certificate authority becomes unreachable).
    pub fn stop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}
