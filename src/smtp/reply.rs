//! SMTP replies: a code, an enhanced status code (RFC 3463, advertised with
//! ENHANCEDSTATUSCODES, RFC 2034) and one or more lines of text.

use std::borrow::Cow;
use std::fmt;

use super::command::{CommandError, Party, Path};

/// One reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The enhanced status code, empty for greeting and EHLO/HELO replies.
    pub status: Cow<'static, str>,
    /// The text lines (at least one).
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, status: impl Into<Cow<'static, str>>, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: status.into(),
            lines: vec![text.into()],
        }
    }

    /// A reply without enhanced status code (greeting, EHLO, HELO).
    pub fn plain(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            status: Cow::Borrowed(""),
            lines,
        }
    }

    /// `552 5.3.4`: the message is larger than the configured limit (RFC 1870).
    pub fn too_big() -> Reply {
        Reply::new(552, "5.3.4", "Message exceeds fixed maximum message size")
    }

    /// The first line of an EHLO reply.
    pub fn greets(hostname: &str, client_name: &str, client_ip: std::net::IpAddr) -> String {
        format!("{hostname} greets {client_name} [{client_ip}]")
    }

    /// `500 5.5.2`: a command line longer than `limits.max_line_bytes`.
    pub fn line_too_long() -> Reply {
        Reply::new(500, "5.5.2", "Line too long")
    }

    /// `452 4.3.1`: below the disk reserve (RFC 3463 §3.4, "mail system
    /// full"), a temporary error the sender retries.
    pub fn storage_full() -> Reply {
        Reply::new(452, "4.3.1", "Insufficient system storage, try again later")
    }

    /// `452 4.5.3`: more recipients than the limit (RFC 5321 section 4.5.3.1.10).
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, "4.5.3", "Too many recipients")
    }

    /// `421 4.4.2`: the client was too slow (RFC 5321 section 4.5.3.2).
    pub fn timed_out(hostname: &str) -> Reply {
        Reply::new(
            421,
            "4.4.2",
            format!("{hostname} Timeout exceeded, closing connection"),
        )
    }

    /// `421 4.3.2`: the gateway is stopping.
    pub fn shutting_down(hostname: &str) -> Reply {
        Reply::new(
            421,
            "4.3.2",
            format!("{hostname} Service shutting down, try again later"),
        )
    }

    /// `421 4.7.0`: `limits.hard_error_limit` reached (Postfix's wording).
    pub fn too_many_errors(hostname: &str) -> Reply {
        Reply::new(421, "4.7.0", format!("{hostname} Error: too many errors"))
    }

    /// Whether the reply counts toward the error limit: every `4xx` and
    /// `5xx` but the `421` goodbyes.
    pub fn is_error(&self) -> bool {
        self.code >= 400 && self.code != 421
    }

    /// RFC 6531 section 3.4: a non-ASCII address needs the SMTPUTF8
    /// parameter, and the parameter needs the extension to be `offered`.
    pub fn check_utf8(path: &Path, smtputf8: bool, offered: bool) -> Result<(), Reply> {
        let text = match offered {
            true => "Non-ASCII address without the SMTPUTF8 parameter",
            false => "Non-ASCII addresses are not supported by this proxy",
        };
        let fine = match offered {
            true => path.is_ascii() || smtputf8,
            false => path.is_ascii() && !smtputf8,
        };
        match fine {
            true => Ok(()),
            false => Err(Reply::new(553, "5.6.7", text)),
        }
    }

    /// STARTTLS (RFC 3207 section 4): the 220 that starts the handshake, or
    /// the 503 that says why not. Written once for the server and the proxy.
    pub fn starttls(tls_active: bool, greeted: bool, in_transaction: bool) -> Result<Reply, Reply> {
        let refused = |text: &'static str| Err(Reply::new(503, "5.5.1", text));
        if tls_active {
            refused("TLS is already active")
        } else if !greeted {
            refused("Send EHLO first")
        } else if in_transaction {
            refused("A mail transaction is in progress; send RSET first")
        } else {
            Ok(Reply::new(220, "2.0.0", "Ready to start TLS"))
        }
    }

    /// `530 5.7.0`: MAIL before STARTTLS where TLS is required (RFC 3207
    /// section 4).
    pub fn must_starttls() -> Reply {
        Reply::new(530, "5.7.0", "Must issue a STARTTLS command first")
    }

    /// Whether this is a positive completion or intermediate reply.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// The wire form: `250-first\r\n250 last\r\n`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let text = if self.status.is_empty() {
                format!("{}{sep}{line}\r\n", self.code)
            } else {
                format!("{}{sep}{} {line}\r\n", self.code, self.status)
            };
            out.extend_from_slice(text.as_bytes());
        }
    }
}

/// What every SMTP session says the same way (the journal receiver and the
/// proxy): its host name's goodbyes and the over-long line.
#[derive(Debug, Clone)]
pub struct Smtp {
    /// Our name, in the goodbyes.
    pub hostname: String,
}

impl crate::net::engine::Dialect for Smtp {
    type Reply = Reply;

    fn line_too_long(&self) -> Reply {
        Reply::line_too_long()
    }

    fn too_many_errors(&self) -> Reply {
        Reply::too_many_errors(&self.hostname)
    }

    /// RFC 5321 section 4.5.3.2.
    fn timed_out(&self) -> Reply {
        Reply::timed_out(&self.hostname)
    }

    fn shutting_down(&self) -> Reply {
        Reply::shutting_down(&self.hostname)
    }
}

impl crate::net::engine::Answer for Reply {
    fn write_to(&self, out: &mut Vec<u8>) {
        Reply::write_to(self, out);
    }

    fn is_error(&self) -> bool {
        Reply::is_error(self)
    }

    /// `421` ends the session (RFC 5321 section 3.8).
    fn closes(&self) -> bool {
        self.code == 421
    }
}

impl From<CommandError> for Reply {
    /// The reply to a line that is not a valid command.
    fn from(e: CommandError) -> Reply {
        match e {
            CommandError::Unrecognized => Reply::new(500, "5.5.2", "Command not recognized"),
            CommandError::BadCharacters => {
                Reply::new(500, "5.5.2", "Command line is not valid UTF-8 text")
            }
            CommandError::Syntax(usage) => Reply::new(501, "5.5.4", format!("Syntax: {usage}")),
            CommandError::BadAddress(Party::Sender, why) => {
                Reply::new(501, "5.1.7", format!("Bad sender address syntax: {why}"))
            }
            CommandError::BadAddress(Party::Recipient, why) => {
                Reply::new(501, "5.1.3", format!("Bad recipient address syntax: {why}"))
            }
            CommandError::UnsupportedParameter(p) => {
                Reply::new(555, "5.5.4", format!("Unsupported parameter {p}"))
            }
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write_to(&mut out);
        f.write_str(String::from_utf8_lossy(&out).trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_replies_use_dashes_until_the_last_line() {
        let mut out = Vec::new();
        Reply::plain(
            250,
            vec!["host".into(), "SIZE 10".into(), "8BITMIME".into()],
        )
        .write_to(&mut out);
        assert_eq!(out, b"250-host\r\n250-SIZE 10\r\n250 8BITMIME\r\n");
    }

    #[test]
    fn enhanced_codes_follow_the_code() {
        let mut out = Vec::new();
        Reply::new(550, "5.1.1", "No such mailbox").write_to(&mut out);
        assert_eq!(out, b"550 5.1.1 No such mailbox\r\n");
    }
}
