//! Drives a protocol the way the loop does, without sockets, for the
//! protocols' own tests.

use super::*;

/// Feeds `input`, performs every step that follows (upstream requests
/// through `upstream`, streamed responses, held input) and returns what
/// the client got and how it ended: `continue`, `starttls` or `close`.
pub(crate) fn exchange(
    protocol: &mut dyn Protocol,
    upstream: &mut dyn Perform,
    input: &[u8],
) -> (String, &'static str) {
    let mut out = Vec::new();
    let mut step = protocol.receive(input, &mut out);
    let end = loop {
        step = match step {
            Step::Continue if protocol.has_pending_input() => protocol.receive(&[], &mut out),
            Step::Continue => break "continue",
            Step::StartTls => break "starttls",
            Step::Close => break "close",
            Step::Stream => {
                while protocol.next_chunk(&mut out).expect("streamed response") {}
                Step::Continue
            }
            Step::Upstream(request) => {
                let response = upstream.perform(request);
                protocol.upstream(response, &mut out)
            }
        };
    };
    (String::from_utf8(out).expect("replies are text"), end)
}
