//! The control socket: how `sealpost lockouts` reaches a running gateway.
//!
//! A Unix socket (`control_socket`, by default `<data_dir>/control.sock`,
//! mode 0600, so only the gateway's user and root may connect). One request
//! line per connection, one JSON answer:
//!
//! - `LOCKOUTS` → `{"lockouts": [{"service", "subject", "failures", "remaining_secs"}]}`
//! - `UNLOCK all|<address>|<mailbox id>` → `{"cleared": n}`
//!
//! Anything else gets `{"error": "…"}`.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};
use serde::{Deserialize, Serialize};

use crate::auth::{KdfSlots, KdfUse, LoginThrottle, Subject};
use crate::store::MailboxId;

/// Longest request line.
const MAX_REQUEST: u64 = 1024;
/// How long a client of the socket may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The throttle of every service, by service name.
#[derive(Clone, Default)]
pub struct Throttles(pub Vec<(&'static str, Arc<LoginThrottle>)>);

/// What the control socket reaches in the running gateway.
#[derive(Clone)]
pub struct Controls {
    /// Every service's login throttle.
    pub throttles: Throttles,
    /// The gateway's one cap on key derivations.
    pub kdf: Arc<KdfSlots>,
}

/// One lockout as the socket reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutReport {
    /// `pop3`, `smtp-proxy`, `pop3-proxy`, `console`.
    pub service: String,
    /// `address 192.0.2.7` or `mailbox mbx-…`.
    pub subject: String,
    /// Failures counted.
    pub failures: u64,
    /// Seconds until it ends by itself.
    pub remaining_secs: u64,
}

#[derive(Serialize, Deserialize, Default)]
struct Answer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lockouts: Option<Vec<LockoutReport>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cleared: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<KdfUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Who `UNLOCK` is about: everyone, an address or a mailbox.
fn parse_target(text: &str) -> Result<Option<Subject>, String> {
    if text == "all" {
        return Ok(None);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Some(Subject::Address(crate::net::cidr::canonical(ip))));
    }
    text.parse::<MailboxId>()
        .map(|id| Some(Subject::Mailbox(id)))
        .map_err(|_| format!("{text:?} is neither an IP address nor a mailbox id"))
}

impl Controls {
    fn answer(&self, request: &str) -> Answer {
        let mut words = request.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("KDF"), None, _) => Answer {
                kdf: Some(self.kdf.usage()),
                ..Answer::default()
            },
            _ => self.throttles.answer(request),
        }
    }
}

impl Throttles {
    fn answer(&self, request: &str) -> Answer {
        let mut words = request.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("LOCKOUTS"), None, _) => Answer {
                lockouts: Some(self.report()),
                ..Answer::default()
            },
            (Some("UNLOCK"), Some(target), None) => match parse_target(target) {
                Ok(subject) => {
                    let cleared = self.0.iter().map(|(_, t)| t.clear(subject.as_ref())).sum();
                    info!("control: cleared {cleared} lockout(s) of {target}");
                    Answer {
                        cleared: Some(cleared),
                        ..Answer::default()
                    }
                }
                Err(e) => Answer {
                    error: Some(e),
                    ..Answer::default()
                },
            },
            _ => Answer {
                error: Some(format!("unknown request {request:?}")),
                ..Answer::default()
            },
        }
    }

    fn report(&self) -> Vec<LockoutReport> {
        self.0
            .iter()
            .flat_map(|(service, throttle)| {
                throttle.lockouts().into_iter().map(|l| LockoutReport {
                    service: service.to_string(),
                    subject: l.subject.to_string(),
                    failures: l.failures,
                    remaining_secs: l.remaining.as_secs(),
                })
            })
            .collect()
    }
}

/// The socket of a running gateway; the file goes when this is dropped,
/// if it is still the socket this gateway bound.
pub struct ControlSocket {
    path: PathBuf,
    identity: (u64, u64),
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Binds `path` and answers requests on a thread of its own. A socket left
/// by a gateway that died is replaced; one that answers means another
/// gateway runs on this path, and starting is refused. Anything at the
/// path that is not a socket (a file, a directory, a link) is left alone
/// and starting is refused: a mistyped `control_socket` must not delete
/// the file it names.
pub fn serve(path: &Path, controls: Controls) -> Result<ControlSocket, String> {
    if UnixStream::connect(path).is_ok() {
        return Err(format!(
            "control_socket {}: another gateway is already running and answering there",
            path.display()
        ));
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            fs::remove_file(path).map_err(|e| format!("control_socket {}: {e}", path.display()))?
        }
        Ok(meta) => {
            return Err(format!(
                "control_socket {}: there is a {} at this path, not a socket; \
                 remove it or choose another control_socket",
                path.display(),
                crate::store::beneath::kind_name(rustix::fs::FileType::from_raw_mode(meta.mode()))
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("control_socket {}: {e}", path.display())),
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("control_socket {}: cannot listen: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("control_socket {}: {e}", path.display()))?;
    let identity = fs::symlink_metadata(path)
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| format!("control_socket {}: {e}", path.display()))?;
    std::thread::Builder::new()
        .name("control".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = handle(stream, &controls) {
                            warn!("control: {e}");
                        }
                    }
                    Err(e) => {
                        warn!("control: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the control thread: {e}"))?;
    Ok(ControlSocket {
        path: path.to_path_buf(),
        identity,
    })
}

fn handle(stream: UnixStream, controls: &Controls) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let answer = controls.answer(line.trim());
    let mut json = serde_json::to_vec(&answer).map_err(io::Error::other)?;
    json.push(b'\n');
    (&stream).write_all(&json)
}

/// Why the CLI could not get an answer.
#[derive(Debug)]
pub enum ClientError {
    /// No gateway answers on the socket.
    NotRunning(String),
    /// The gateway answered with an error.
    Refused(String),
}

fn request(path: &Path, line: &str) -> Result<Answer, ClientError> {
    let not_running = |e: io::Error| {
        ClientError::NotRunning(format!(
            "no gateway answers on {} ({e}); is `sealpost serve` running with this configuration?",
            path.display()
        ))
    };
    let mut stream = UnixStream::connect(path).map_err(not_running)?;
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(not_running)?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(not_running)?;
    let mut text = String::new();
    BufReader::new(stream.take(16 << 20))
        .read_line(&mut text)
        .map_err(not_running)?;
    let answer: Answer = serde_json::from_str(&text)
        .map_err(|e| ClientError::Refused(format!("unreadable answer: {e}")))?;
    match answer.error {
        Some(e) => Err(ClientError::Refused(e)),
        None => Ok(answer),
    }
}

/// The key derivations of a running gateway: its cap, how many run now,
/// and the most that ran at once.
pub fn kdf(path: &Path) -> Result<KdfUse, ClientError> {
    request(path, "KDF")?
        .kdf
        .ok_or_else(|| ClientError::Refused("no KDF figures in the answer".into()))
}

/// The current lockouts of a running gateway.
pub fn lockouts(path: &Path) -> Result<Vec<LockoutReport>, ClientError> {
    Ok(request(path, "LOCKOUTS")?.lockouts.unwrap_or_default())
}

/// Ends the lockouts of `target` (`all`, an address or a mailbox id);
/// returns how many ended.
pub fn unlock(path: &Path, target: &str) -> Result<usize, ClientError> {
    Ok(request(path, &format!("UNLOCK {target}"))?
        .cleared
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ThrottleSettings;

    fn throttle() -> Arc<LoginThrottle> {
        Arc::new(LoginThrottle::new(ThrottleSettings {
            max_failures: 1,
            lockout: Duration::from_secs(600),
            delay: Duration::ZERO,
            exempt: Vec::new(),
        }))
    }

    fn controls() -> Controls {
        Controls {
            throttles: Throttles::default(),
            kdf: Arc::new(KdfSlots::new(1)),
        }
    }

    #[test]
    fn lockouts_are_listed_and_cleared_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let pop3 = throttle();
        let proxy = throttle();
        let kdf = Arc::new(KdfSlots::new(3));
        let _socket = serve(
            &path,
            Controls {
                throttles: Throttles(vec![("pop3", pop3.clone()), ("pop3-proxy", proxy.clone())]),
                kdf: Arc::clone(&kdf),
            },
        )
        .unwrap();
        kdf.run(|| assert_eq!(super::kdf(&path).unwrap().in_flight, 1));
        assert_eq!(
            super::kdf(&path).unwrap(),
            KdfUse {
                max: 3,
                in_flight: 0,
                peak: 1
            }
        );
        let _ = pop3
            .begin("192.0.2.7".parse().unwrap(), None)
            .unwrap()
            .failed();
        let _ = proxy
            .begin("192.0.2.8".parse().unwrap(), None)
            .unwrap()
            .failed();
        let listed = lockouts(&path).unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(listed[0].service, "pop3");
        assert_eq!(listed[0].subject, "address 192.0.2.7");
        assert!(listed[0].remaining_secs > 500);
        assert_eq!(unlock(&path, "192.0.2.7").unwrap(), 1);
        assert_eq!(lockouts(&path).unwrap().len(), 1);
        assert_eq!(unlock(&path, "all").unwrap(), 1);
        assert!(lockouts(&path).unwrap().is_empty());
        assert!(matches!(
            unlock(&path, "nobody"),
            Err(ClientError::Refused(_))
        ));
    }

    #[test]
    fn a_second_gateway_on_the_same_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let _first = serve(&path, controls()).unwrap();
        let err = serve(&path, controls()).err().unwrap();
        assert!(err.contains("another gateway is already running"), "{err}");
    }

    #[test]
    fn only_a_socket_is_replaced_at_the_control_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        fs::write(&path, b"precious").unwrap();
        let err = serve(&path, controls()).err().unwrap();
        assert!(
            err.contains("regular file at this path, not a socket"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"precious");
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let err = serve(&path, controls()).err().unwrap();
        assert!(err.contains("directory at this path"), "{err}");
        fs::remove_dir(&path).unwrap();
        // A socket left by a gateway that died is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let socket = serve(&path, controls()).unwrap();
        // A file put in its place meanwhile is not removed at shutdown.
        fs::remove_file(&path).unwrap();
        fs::write(&path, b"other").unwrap();
        drop(socket);
        assert_eq!(fs::read(&path).unwrap(), b"other");
    }

    #[test]
    fn no_gateway_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = lockouts(&dir.path().join("control.sock")).unwrap_err();
        assert!(
            matches!(err, ClientError::NotRunning(m) if m.contains("is `sealpost serve` running"))
        );
    }
}
