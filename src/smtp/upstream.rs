//! The SMTP client the proxy uses toward the real server: TLS always
//! (implicit on 465, STARTTLS otherwise, refused if not offered), then AUTH
//! with the client's credentials, then commands relayed one at a time.

use std::io::{self, Read};

use log::debug;
use zeroize::Zeroizing;

use crate::crypto::{self, Password};
use crate::dot_stuffing::DotStuffer;
use crate::proxy::relay::Authorized;
use crate::proxy::upstream::{OpenError, UpstreamConn, UpstreamError, UpstreamSetup};

/// The SMTP submission port used when a login names none.
pub const DEFAULT_PORT: u16 = 587;
/// Most lines of one upstream reply we read.
const MAX_REPLY_LINES: usize = 200;

/// An upstream reply: the code and enhanced code are passed on; the text is
/// only logged (never shown to the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpReply {
    /// Three-digit code.
    pub code: u16,
    /// Enhanced status code of the last line, if any.
    pub enhanced: Option<String>,
    /// All text lines joined, for the log.
    pub text: String,
}

impl UpReply {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// How the message transfer ended.
#[derive(Debug)]
pub enum SendOutcome {
    /// The upstream's final reply (or its refusal of DATA).
    Reply(UpReply),
    /// The connection broke before the final dot: the upstream discards it.
    LostBeforeEnd(String),
    /// The connection broke after the final dot: the message may have been accepted.
    LostAfterEnd(String),
}

/// SASL mechanisms the proxy speaks upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616
    Plain,
    /// The de-facto LOGIN mechanism.
    Login,
}

/// An authenticated upstream SMTP session.
pub struct SmtpUpstream {
    conn: UpstreamConn,
    extensions: Vec<String>,
}

fn parse_reply(lines: &[Vec<u8>]) -> Result<UpReply, UpstreamError> {
    let last = lines
        .last()
        .ok_or_else(|| UpstreamError::Protocol("empty reply".into()))?;
    let code = std::str::from_utf8(last.get(..3).unwrap_or_default())
        .ok()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (200..600).contains(c))
        .ok_or_else(|| {
            UpstreamError::Protocol(format!(
                "not an SMTP reply: {:?}",
                String::from_utf8_lossy(last)
            ))
        })?;
    let rest = String::from_utf8_lossy(last.get(4..).unwrap_or_default()).into_owned();
    let enhanced = rest
        .split_whitespace()
        .next()
        .filter(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                && parts[0] == (code / 100).to_string()
        })
        .map(str::to_string);
    let text = lines
        .iter()
        .map(|l| String::from_utf8_lossy(l.get(4..).unwrap_or_default()).into_owned())
        .collect::<Vec<_>>()
        .join(" / ");
    Ok(UpReply {
        code,
        enhanced,
        text,
    })
}

fn read_reply(conn: &mut UpstreamConn) -> Result<UpReply, UpstreamError> {
    let mut lines = Vec::new();
    loop {
        let line = conn.read_line()?;
        let more = line.get(3) == Some(&b'-');
        lines.push(line);
        if !more {
            return parse_reply(&lines);
        }
        if lines.len() >= MAX_REPLY_LINES {
            return Err(UpstreamError::Protocol(
                "the upstream reply has too many lines".into(),
            ));
        }
    }
}

fn exchange(conn: &mut UpstreamConn, line: &str) -> Result<UpReply, UpstreamError> {
    conn.send_line(line)?;
    read_reply(conn)
}

/// An unexpected reply during the opening: 5xx refuses, anything else is temporary.
fn unexpected(reply: &UpReply, what: &str) -> OpenError {
    let why = format!("{what}: {} {}", reply.code, reply.text);
    if reply.code >= 500 {
        OpenError::Refused(why)
    } else {
        OpenError::Unavailable(why)
    }
}

fn expect(reply: UpReply, code: u16, what: &str) -> Result<UpReply, OpenError> {
    if reply.code == code {
        Ok(reply)
    } else {
        Err(unexpected(&reply, what))
    }
}

fn ehlo(conn: &mut UpstreamConn, hostname: &str) -> Result<Vec<String>, OpenError> {
    conn.send_line(&format!("EHLO {hostname}"))?;
    let mut keywords = Vec::new();
    loop {
        let line = conn.read_line()?;
        if !line.starts_with(b"250") {
            return Err(unexpected(&parse_reply(&[line])?, "EHLO"));
        }
        keywords
            .push(String::from_utf8_lossy(line.get(4..).unwrap_or_default()).to_ascii_uppercase());
        if line.get(3) != Some(&b'-') {
            // The first line is the greeting, not a keyword.
            keywords.remove(0);
            return Ok(keywords);
        }
        if keywords.len() >= MAX_REPLY_LINES {
            return Err(OpenError::Unavailable("EHLO reply too long".into()));
        }
    }
}

fn b64(text: &str) -> Zeroizing<String> {
    Zeroizing::new(crypto::base64_encode(text.as_bytes()))
}

impl SmtpUpstream {
    /// Resolves and checks the target, connects, secures the connection and
    /// logs in with the remote user and password of the authorized login.
    pub fn open(setup: &UpstreamSetup, authorized: &Authorized) -> Result<SmtpUpstream, OpenError> {
        let (login, password) = (&authorized.login, authorized.password());
        let mut conn = setup.connect(&login.target, DEFAULT_PORT)?;
        let host = &login.target.host;
        expect(read_reply(&mut conn)?, 220, "greeting")?;
        let mut extensions = ehlo(&mut conn, &setup.hostname)?;
        if conn.tls().is_none() {
            // Never send credentials in plaintext: no STARTTLS, no login.
            if !extensions.iter().any(|e| e == "STARTTLS") {
                return Err(OpenError::Refused(format!(
                    "{} offers no STARTTLS",
                    conn.peer()
                )));
            }
            expect(exchange(&mut conn, "STARTTLS")?, 220, "STARTTLS")?;
            conn.start_tls(&setup.tls, host, setup.connect_timeout)?;
            extensions = ehlo(&mut conn, &setup.hostname)?;
        }
        setup.settle(&mut conn);
        let mut upstream = SmtpUpstream { conn, extensions };
        upstream.authenticate(&login.remote_user, password)?;
        debug!(
            "smtp proxy: authenticated at {} as {}",
            upstream.conn.peer(),
            login.remote_user
        );
        Ok(upstream)
    }

    fn mechanisms(&self) -> Vec<&str> {
        self.extensions
            .iter()
            .filter_map(|e| e.strip_prefix("AUTH ").or_else(|| e.strip_prefix("AUTH=")))
            .flat_map(str::split_whitespace)
            .collect()
    }

    fn authenticate(&mut self, user: &str, password: &Password) -> Result<(), OpenError> {
        let mechanisms = self.mechanisms();
        let mechanism = if mechanisms.contains(&"PLAIN") {
            Mechanism::Plain
        } else if mechanisms.contains(&"LOGIN") {
            Mechanism::Login
        } else {
            return Err(OpenError::Refused(format!(
                "{} offers neither AUTH PLAIN nor LOGIN",
                self.conn.peer()
            )));
        };
        let reply = match mechanism {
            Mechanism::Plain => {
                let token = Zeroizing::new(format!("\0{user}\0{}", password.expose()));
                let line = Zeroizing::new(format!("AUTH PLAIN {}", *b64(&token)));
                exchange(&mut self.conn, &line)?
            }
            Mechanism::Login => {
                expect(exchange(&mut self.conn, "AUTH LOGIN")?, 334, "AUTH LOGIN")?;
                expect(
                    exchange(&mut self.conn, &b64(user))?,
                    334,
                    "AUTH LOGIN user",
                )?;
                exchange(&mut self.conn, &b64(password.expose()))?
            }
        };
        match reply.code {
            235 => Ok(()),
            c if c >= 500 => Err(OpenError::AuthFailed(format!(
                "{} {}",
                reply.code, reply.text
            ))),
            _ => Err(OpenError::Unavailable(format!(
                "AUTH: {} {}",
                reply.code, reply.text
            ))),
        }
    }

    /// Whether the upstream announced an EHLO keyword (`SIZE`, `8BITMIME`, …).
    pub fn supports(&self, keyword: &str) -> bool {
        self.extensions
            .iter()
            .any(|e| e.split_whitespace().next() == Some(keyword))
    }

    /// Sends one command line and returns the reply.
    pub fn command(&mut self, line: &str) -> Result<UpReply, UpstreamError> {
        exchange(&mut self.conn, line)
    }

    /// DATA, the message dot-stuffed with CRLF line ends, the final dot, and
    /// the final reply. `message` holds CRLF text (the proxy's data reader
    /// made sure of that).
    pub fn send_message(&mut self, message: &mut dyn Read) -> SendOutcome {
        let reply = match self.command("DATA") {
            Ok(r) => r,
            Err(e) => return SendOutcome::LostBeforeEnd(e.to_string()),
        };
        if reply.code != 354 {
            return SendOutcome::Reply(reply);
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::with_capacity(buf.len() + 1024);
        let mut stuffer = DotStuffer::whole();
        loop {
            let n = match message.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return SendOutcome::LostBeforeEnd(format!("reading the copy: {e}")),
            };
            out.clear();
            stuffer.push(&buf[..n], &mut out);
            if let Err(e) = self.conn.send(&out) {
                return SendOutcome::LostBeforeEnd(e.to_string());
            }
        }
        out.clear();
        stuffer.finish(&mut out);
        if let Err(e) = self.conn.send(&out) {
            return SendOutcome::LostAfterEnd(e.to_string());
        }
        match read_reply(&mut self.conn) {
            Ok(reply) => SendOutcome::Reply(reply),
            Err(e) => SendOutcome::LostAfterEnd(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(lines: &[&str]) -> UpReply {
        parse_reply(
            &lines
                .iter()
                .map(|l| l.as_bytes().to_vec())
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn replies_give_their_code_and_enhanced_code() {
        let r = reply(&["250-first", "250 2.1.5 Recipient ok"]);
        assert_eq!((r.code, r.enhanced.as_deref()), (250, Some("2.1.5")));
        let r = reply(&["550 No such user here"]);
        assert_eq!((r.code, r.enhanced), (550, None));
        let r = reply(&["550 2.1.5 mismatched class"]);
        assert_eq!(
            r.enhanced, None,
            "an enhanced code of another class is ignored"
        );
    }

    #[test]
    fn garbage_is_not_a_reply() {
        assert!(parse_reply(&[b"hello".to_vec()]).is_err());
        assert!(parse_reply(&[b"999 x".to_vec()]).is_err());
        assert!(parse_reply(&[]).is_err());
    }
}
