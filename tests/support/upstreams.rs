//! Real upstream servers for the proxies, started by the tests: a Dovecot
//! POP3 server with a filled Maildir, and a Postfix submission server with
//! Dovecot SASL. Certificates come from a test CA the proxies are told to trust.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::ca::TestCa;
use super::dovecot::Dovecot;
use super::postfix::Postfix;
use super::{FIXTURES, fixture};

/// Messages the POP3 upstream's Maildir starts with (the fixtures).
pub const FIXTURES_STORED: usize = FIXTURES.len();

pub const POP3_USER: &str = "anna@example.test";
pub const POP3_PASSWORD: &str = "upstream-secret-2";

/// A Dovecot POP3 server holding the fixtures for `POP3_USER`, on an
/// implicit-TLS port and an STLS port (`tls`), certificates from a test CA.
pub struct Pop3Upstream {
    pub dovecot: Dovecot,
    /// Implicit-TLS port (like 995).
    pub implicit: u16,
    /// STLS port (like 110).
    pub stls: u16,
    pub ca: TestCa,
}

impl Pop3Upstream {
    pub fn start(dir: &Path, tls: bool) -> Option<Pop3Upstream> {
        fs::create_dir_all(dir).unwrap();
        let ca = TestCa::new(dir, "pop-upstream");
        let (cert, key) = ca.issue(dir, "localhost", &["localhost"]);
        let ssl = if tls {
            format!(
                "ssl = yes\nssl_cert = <{}\nssl_key = <{}\ndisable_plaintext_auth = yes\n",
                cert.display(),
                key.display()
            )
        } else {
            "ssl = no\n".to_string()
        };
        let extra = |ports: &[u16]| {
            let (implicit, stls) = (ports[0], ports[1]);
            let pop3s = if tls {
                format!(
                    "  inet_listener pop3s {{\n    address = 127.0.0.1\n    port = {implicit}\n    ssl = yes\n  }}\n"
                )
            } else {
                String::new()
            };
            format!(
                "protocols = pop3\n{ssl}service pop3-login {{\n  inet_listener pop3 {{\n    address = 127.0.0.1\n    port = {stls}\n  }}\n{pop3s}}}\n"
            )
        };
        let (dovecot, ports) = Dovecot::start_on(
            &dir.join("dovecot"),
            &[(POP3_USER, POP3_PASSWORD)],
            2,
            extra,
        )?;
        let (implicit, stls) = (ports[0], ports[1]);
        let maildir = dovecot.home(POP3_USER).join("Maildir");
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        for (i, name) in FIXTURES.iter().enumerate() {
            fs::write(
                maildir.join("new").join(format!("1795000000.M{i}P1.test")),
                fixture(name),
            )
            .unwrap();
        }
        assert!(
            super::run(
                Command::new("chown")
                    .args(["-R", "nobody"])
                    .arg(dovecot.home(POP3_USER))
            )
            .status
            .success()
        );
        dovecot.wait_listening(format!("127.0.0.1:{stls}").parse().unwrap());
        Some(Pop3Upstream {
            dovecot,
            implicit,
            stls,
            ca,
        })
    }

    /// Messages left in the upstream Maildir.
    pub fn stored(&self) -> usize {
        let maildir = self.dovecot.home(POP3_USER).join("Maildir");
        ["cur", "new"]
            .iter()
            .map(|d| {
                fs::read_dir(maildir.join(d))
                    .map(|r| r.count())
                    .unwrap_or(0)
            })
            .sum()
    }
}

pub const SUBMISSION_USER: &str = "anna@example.test";
pub const SUBMISSION_PASSWORD: &str = "upstream-secret-1";

/// A submission server: Postfix + Dovecot SASL, delivering to one Maildir.
pub struct SubmissionUpstream {
    pub _dovecot: Dovecot,
    pub postfix: Postfix,
    /// STARTTLS submission port.
    pub starttls: u16,
    /// Implicit-TLS port.
    pub implicit: u16,
    /// A port that offers no STARTTLS at all.
    pub no_tls: u16,
    pub ca: TestCa,
    pub maildir: PathBuf,
}

impl SubmissionUpstream {
    /// A submission server whose SASL offers `mechanisms` (such as `plain login`).
    pub fn start(dir: &Path) -> Option<SubmissionUpstream> {
        SubmissionUpstream::with_mechanisms(dir, "plain login")
    }

    pub fn with_mechanisms(dir: &Path, mechanisms: &str) -> Option<SubmissionUpstream> {
        fs::create_dir_all(dir).unwrap();
        let ca = TestCa::new(dir, "upstream");
        let (cert, key) = ca.issue(dir, "localhost", &["localhost"]);
        let (dovecot, ports) = Dovecot::start_on(
            &dir.join("dovecot"),
            &[(SUBMISSION_USER, SUBMISSION_PASSWORD)],
            1,
            |ports| {
                format!(
                    "protocols =\nssl = no\nauth_mechanisms = {mechanisms}\nservice auth {{\n  inet_listener {{\n    address = 127.0.0.1\n    port = {}\n  }}\n}}\n",
                    ports[0]
                )
            },
        )?;
        let auth_port = ports[0];
        dovecot.wait_listening(format!("127.0.0.1:{auth_port}").parse().unwrap());
        let maildir = dir.join("maildir");
        fs::create_dir_all(&maildir).unwrap();
        assert!(
            super::run(Command::new("chown").arg("nobody").arg(&maildir))
                .status
                .success()
        );
        let main_extra = format!(
            "smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{auth_port}
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
virtual_mailbox_domains = static:all
virtual_mailbox_base = {dir}
virtual_mailbox_maps = static:maildir/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
virtual_mailbox_limit = 0
",
            cert = cert.display(),
            key = key.display(),
            dir = dir.display()
        );
        let services = |ports: &[u16]| {
            format!(
                "127.0.0.1:{} inet n - n - - smtpd -o smtpd_tls_security_level=encrypt
127.0.0.1:{} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes
127.0.0.1:{} inet n - n - - smtpd -o smtpd_tls_security_level=none -o smtpd_tls_auth_only=no",
                ports[0], ports[1], ports[2]
            )
        };
        let (postfix, ports) = Postfix::start_on(&dir.join("postfix"), &main_extra, 3, services)?;
        let (starttls, implicit, no_tls) = (ports[0], ports[1], ports[2]);
        for port in [starttls, implicit, no_tls] {
            postfix.wait_listening(format!("127.0.0.1:{port}").parse().unwrap());
        }
        Some(SubmissionUpstream {
            _dovecot: dovecot,
            postfix,
            starttls,
            implicit,
            no_tls,
            ca,
            maildir,
        })
    }

    /// The messages delivered so far.
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = fs::read_dir(self.maildir.join("new"))
            .map(|d| d.map(|e| fs::read(e.unwrap().path()).unwrap()).collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Waits until `count` messages have been delivered.
    pub fn wait_for(&self, count: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let delivered = self.delivered();
            if delivered.len() >= count {
                return delivered;
            }
            assert!(
                Instant::now() < deadline,
                "the upstream delivered {} of {count}:\n{}",
                delivered.len(),
                self.postfix.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl SubmissionUpstream {
    /// Waits until the submission server has seen `count` client sessions
    /// end (Postfix logs `disconnect from` for each): after that, whatever a
    /// session was going to submit has been submitted.
    pub fn wait_for_sessions(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.postfix.log();
            if log.matches("disconnect from").count() >= count {
                return;
            }
            assert!(Instant::now() < deadline, "sessions never ended:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Messages the submission server accepted (one `cleanup` line each).
    pub fn accepted(&self) -> usize {
        self.postfix.log().matches("message-id=").count()
    }
}
