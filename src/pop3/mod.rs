//! POP3: the server archivers retrieve mail from, and the recording proxy.

use crate::net::driver::Step;
use crate::net::engine::{Answer, Dialect, Replies};

pub mod command;
pub mod maildrop;
pub mod proxy;
pub mod proxy_service;
pub mod server;
pub mod session;
pub mod upstream;

/// A POP3 status line: `+OK text` or `-ERR text` (RFC 1939 section 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    ok: bool,
    text: String,
}

impl Answer for StatusLine {
    fn write_to(&self, out: &mut Vec<u8>) {
        let sign: &[u8] = if self.ok { b"+OK " } else { b"-ERR " };
        out.extend_from_slice(sign);
        out.extend_from_slice(self.text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Every `-ERR` counts toward `limits.hard_error_limit`.
    fn is_error(&self) -> bool {
        !self.ok
    }
}

impl StatusLine {
    /// `+OK text`.
    pub fn ok(text: impl Into<String>) -> StatusLine {
        StatusLine {
            ok: true,
            text: text.into(),
        }
    }

    /// `-ERR text`.
    pub fn err(text: impl Into<String>) -> StatusLine {
        StatusLine {
            ok: false,
            text: text.into(),
        }
    }
}

/// Writes `+OK text`.
pub(crate) fn ok(out: &mut Replies, text: &str) {
    out.say(&StatusLine::ok(text));
}

/// Writes `-ERR text`.
pub(crate) fn err(out: &mut Replies, text: &str) {
    out.say(&StatusLine::err(text));
}

/// The answer to a login command before TLS (RFC 2595 section 4: no
/// credentials in the clear).
pub(crate) const TLS_REQUIRED: &str =
    "[AUTH] TLS is required before logging in: use STLS, or the implicit-TLS port";

/// STLS (RFC 2595 section 4): written once for the server and the proxy.
/// Writes the answer; `Step::StartTls` when the handshake follows.
pub(crate) fn stls(tls_active: bool, logged_in: bool, out: &mut Replies) -> Step {
    if tls_active {
        err(out, "TLS is already active");
    } else if logged_in {
        err(out, "STLS is only allowed before login");
    } else {
        ok(out, "Begin TLS negotiation");
        return Step::StartTls;
    }
    Step::Continue
}

/// What every POP3 session says the same way (the server and the proxy).
#[derive(Debug, Clone, Copy)]
pub struct Pop3;

impl Dialect for Pop3 {
    type Reply = StatusLine;

    fn line_too_long(&self) -> StatusLine {
        StatusLine::err("Line too long")
    }

    fn too_many_errors(&self) -> StatusLine {
        StatusLine::err("[SYS/TEMP] Too many errors; closing")
    }

    fn timed_out(&self) -> StatusLine {
        StatusLine::err("[SYS/TEMP] Idle too long; closing")
    }

    fn shutting_down(&self) -> StatusLine {
        StatusLine::err("[SYS/TEMP] Server shutting down; try again later")
    }
}
