//! POP3: the server archivers retrieve mail from, and the recording proxy.

use crate::net::driver::Step;
use crate::net::error_limit::{ErrorCount, Verdict};
use crate::net::line::{CommandQueue, Line};

pub mod command;
pub mod maildrop;
pub mod proxy;
pub mod proxy_service;
pub mod server;
pub mod session;
pub mod upstream;

/// Writes `+OK text`.
pub(crate) fn ok(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(format!("+OK {text}\r\n").as_bytes());
}

/// Writes `-ERR text`.
pub(crate) fn err(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(format!("-ERR {text}\r\n").as_bytes());
}

/// A POP3 session that handles one command line at a time.
pub(crate) trait Commands {
    /// Where the client's bytes wait.
    fn queue(&mut self) -> &mut CommandQueue;
    /// The client's errors so far.
    fn errors(&mut self) -> &mut ErrorCount;
    /// Whether QUIT or a failure ended the session.
    fn closed(&self) -> bool;
    /// Handles one command line.
    fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Step;
}

/// Feeds client bytes to a POP3 session. Commands pipelined after one that
/// needs the socket (a streamed answer, STLS, the end) wait in the queue
/// (RFC 2449 section 6.6: answers go out in order).
///
/// Every `-ERR` counts toward `limits.hard_error_limit`; at the limit the
/// session says so and closes.
pub(crate) fn feed<S: Commands>(session: &mut S, input: &[u8], out: &mut Vec<u8>) -> Step {
    session.queue().push(input);
    while !session.closed() {
        let start = out.len();
        let step = match session.queue().next_line() {
            None => return Step::Continue,
            Some(Line::TooLong) => {
                err(out, "Line too long");
                Step::Continue
            }
            Some(Line::Complete(line)) => session.command(&line, out),
        };
        if out[start..].starts_with(b"-ERR") && session.errors().record() == Verdict::Close {
            err(out, "[SYS/TEMP] Too many errors; closing");
            return Step::Close;
        }
        if !matches!(step, Step::Continue) {
            return step;
        }
    }
    Step::Close
}
