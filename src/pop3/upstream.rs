//! The POP3 client the proxy uses toward the real server: TLS always
//! (implicit on the `proxy.implicit_tls_ports`, STLS otherwise and refused
//! if not offered), then USER/PASS (or AUTH PLAIN), then commands relayed
//! one at a time.

use zeroize::Zeroizing;

use crate::crypto;
use crate::proxy::relay::Authorized;
use crate::proxy::upstream::{OpenError, UpstreamConn, UpstreamError, UpstreamSetup};

/// The POP3 port used when a login names none.
pub const DEFAULT_PORT: u16 = 110;
/// Most lines of a CAPA answer we read.
const MAX_CAPA_LINES: usize = 200;

/// An authenticated upstream POP3 session.
pub struct Pop3Upstream {
    conn: UpstreamConn,
}

fn status(conn: &mut UpstreamConn) -> Result<String, UpstreamError> {
    let line = conn.read_line()?;
    let text = String::from_utf8_lossy(&line).into_owned();
    if text.starts_with("+OK") || text.starts_with("-ERR") {
        Ok(text)
    } else {
        Err(UpstreamError::Protocol(format!(
            "not a POP3 status line: {text:?}"
        )))
    }
}

fn exchange(conn: &mut UpstreamConn, line: &str) -> Result<String, UpstreamError> {
    conn.send_line(line)?;
    status(conn)
}

/// CAPA (RFC 2449): the capability names in uppercase, or none if refused.
fn capabilities(conn: &mut UpstreamConn) -> Result<Vec<String>, UpstreamError> {
    if !exchange(conn, "CAPA")?.starts_with("+OK") {
        return Ok(Vec::new());
    }
    let mut caps = Vec::new();
    loop {
        let line = conn.read_line()?;
        if line == b"." {
            return Ok(caps);
        }
        if caps.len() >= MAX_CAPA_LINES {
            return Err(UpstreamError::Protocol("CAPA answer too long".into()));
        }
        caps.push(String::from_utf8_lossy(&line).to_ascii_uppercase());
    }
}

fn refused_or_temporary(line: &str, what: &str) -> OpenError {
    // RFC 2449/3206 response codes tell a temporary refusal from a bad login.
    let why = format!("{what}: {line}");
    if line.contains("[SYS/TEMP]") || line.contains("[IN-USE]") || line.contains("[LOGIN-DELAY]") {
        OpenError::Unavailable(why)
    } else {
        OpenError::AuthFailed(why)
    }
}

impl Pop3Upstream {
    /// Resolves and checks the target, connects, secures the connection and
    /// logs in with the remote user and password of the authorized login.
    pub fn open(setup: &UpstreamSetup, authorized: &Authorized) -> Result<Pop3Upstream, OpenError> {
        let (login, password) = (&authorized.login, authorized.password());
        let mut conn = setup.connect(&login.target, DEFAULT_PORT)?;
        let greeting = status(&mut conn)?;
        if !greeting.starts_with("+OK") {
            return Err(OpenError::Unavailable(format!("greeting: {greeting}")));
        }
        let mut caps = capabilities(&mut conn)?;
        if conn.tls().is_none() {
            // Never send credentials in plaintext: no STLS, no login.
            if !caps.iter().any(|c| c == "STLS") {
                return Err(OpenError::Refused(format!(
                    "{} offers no STLS",
                    conn.peer()
                )));
            }
            let answer = exchange(&mut conn, "STLS")?;
            if !answer.starts_with("+OK") {
                return Err(OpenError::Refused(format!("STLS refused: {answer}")));
            }
            conn.start_tls(&setup.tls, &login.target.host, setup.connect_timeout)?;
            caps = capabilities(&mut conn)?;
        }
        setup.settle(&mut conn);
        let user = &login.remote_user;
        let sasl_plain_only = !caps.iter().any(|c| c == "USER")
            && caps
                .iter()
                .any(|c| c.starts_with("SASL ") && c.split_whitespace().any(|m| m == "PLAIN"));
        if sasl_plain_only {
            let token = Zeroizing::new(format!("\0{user}\0{}", password.expose()));
            let line = Zeroizing::new(format!(
                "AUTH PLAIN {}",
                crypto::base64_encode(token.as_bytes())
            ));
            let answer = exchange(&mut conn, &line)?;
            if !answer.starts_with("+OK") {
                return Err(refused_or_temporary(&answer, "AUTH PLAIN"));
            }
        } else {
            let answer = exchange(&mut conn, &format!("USER {user}"))?;
            if !answer.starts_with("+OK") {
                return Err(refused_or_temporary(&answer, "USER"));
            }
            let line = Zeroizing::new(format!("PASS {}", password.expose()));
            let answer = exchange(&mut conn, &line)?;
            if !answer.starts_with("+OK") {
                return Err(refused_or_temporary(&answer, "PASS"));
            }
        }
        Ok(Pop3Upstream { conn })
    }

    /// Sends a command and returns its status line.
    pub fn command(&mut self, line: &str) -> Result<String, UpstreamError> {
        exchange(&mut self.conn, line)
    }

    /// Reads raw bytes of a multi-line response.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, UpstreamError> {
        self.conn.read_raw(buf)
    }

    /// Returns bytes read past the end of a multi-line response.
    pub fn unread(&mut self, bytes: &[u8]) {
        self.conn.unread(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_codes_tell_a_temporary_refusal_from_a_bad_login() {
        for line in [
            "-ERR [SYS/TEMP] try later",
            "-ERR [IN-USE] locked",
            "-ERR [LOGIN-DELAY] wait",
        ] {
            assert!(
                matches!(
                    refused_or_temporary(line, "PASS"),
                    OpenError::Unavailable(_)
                ),
                "{line}"
            );
        }
        for line in ["-ERR [AUTH] Authentication failed.", "-ERR bad password"] {
            assert!(
                matches!(refused_or_temporary(line, "PASS"), OpenError::AuthFailed(_)),
                "{line}"
            );
        }
    }
}
