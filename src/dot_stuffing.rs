//! Dot-stuffing, the transparency procedure of SMTP DATA (RFC 5321 section
//! 4.5.2) and of POP3 multi-line responses (RFC 1939 section 3): a line that
//! begins with `.` gets one more, and `CRLF . CRLF` ends the data.
//!
//! [`DataReceiver`] reads the stuffed form. Only `CRLF . CRLF` ends it. A bare
//! LF or bare CR anywhere (the SMTP smuggling vectors `\n.\n`, `\n.\r\n`,
//! `\r.\r`, `\r\n.\n` among them) never ends the data. The journal receiver
//! passes such bytes through intact, flagged, and rejects the message as a
//! whole; the proxies read in normalising mode, where each bare CR or LF
//! becomes CRLF (without starting a line for end detection), so that a copy
//! and what the other side gets are the same CRLF text. Either way the two
//! ends of a connection can never disagree on where a message ends.
//!
//! [`DotStuffer`] writes the stuffed form, whole or (POP3 TOP) cut after the
//! header and n body lines.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the start of the data).
    LineStart,
    /// A line started with `.`.
    Dot,
    /// A line started with `.` CR.
    DotCr,
    /// Inside a line.
    Middle,
    /// Inside a line, just after CR.
    Cr,
}

/// Reads dot-stuffed data: removes the stuffing, finds the end, flags bare CR/LF.
#[derive(Debug)]
pub struct DataReceiver {
    state: State,
    bare: bool,
    normalize: bool,
}

impl Default for DataReceiver {
    fn default() -> Self {
        DataReceiver::new()
    }
}

impl DataReceiver {
    /// A receiver positioned at the start of the message.
    pub fn new() -> DataReceiver {
        DataReceiver {
            state: State::LineStart,
            bare: false,
            normalize: false,
        }
    }

    /// A receiver that writes every bare CR or LF as CRLF.
    pub fn normalizing() -> DataReceiver {
        DataReceiver {
            normalize: true,
            ..DataReceiver::new()
        }
    }

    /// Whether a bare CR or LF has been seen.
    pub fn saw_bare_line_ending(&self) -> bool {
        self.bare
    }

    /// Consumes bytes from the front of `input`, appending message bytes to
    /// `out`. Returns `true` once the terminating `.CRLF` has been consumed;
    /// `input` then holds whatever follows it (pipelined commands).
    pub fn feed(&mut self, input: &mut &[u8], out: &mut Vec<u8>) -> bool {
        let bytes = *input;
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Middle {
                // Fast path: copy up to the next CR or LF in one go.
                let run = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(bytes.len() - i);
                out.extend_from_slice(&bytes[i..i + run]);
                i += run;
                if i == bytes.len() {
                    break;
                }
            }
            let b = bytes[i];
            i += 1;
            match (self.state, b) {
                (State::LineStart, b'.') => self.state = State::Dot,
                (State::LineStart | State::Middle, b'\r') => self.state = State::Cr,
                (State::LineStart | State::Middle, b'\n') => self.bare_byte(b'\n', out),
                (State::LineStart | State::Middle, _) => {
                    out.push(b);
                    self.state = State::Middle;
                }
                (State::Dot, b'\r') => self.state = State::DotCr,
                // A dot followed by more text: the first dot is stuffing (4.5.2).
                (State::Dot, _) => {
                    self.state = State::Middle;
                    i -= 1;
                }
                (State::DotCr, b'\n') => {
                    *input = &bytes[i..];
                    self.state = State::LineStart;
                    return true;
                }
                (State::DotCr, _) => {
                    self.bare_byte(b'\r', out);
                    i -= 1;
                }
                (State::Cr, b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    self.state = State::LineStart;
                }
                (State::Cr, b'\r') => {
                    self.bare_byte(b'\r', out);
                    self.state = State::Cr;
                }
                (State::Cr, _) => {
                    self.bare_byte(b'\r', out);
                    i -= 1;
                }
            }
        }
        *input = &[];
        false
    }

    /// A CR or LF that is not part of a CRLF. It never starts a line, so a
    /// dot after it can never end the data.
    fn bare_byte(&mut self, b: u8, out: &mut Vec<u8>) {
        self.bare = true;
        if self.normalize {
            out.extend_from_slice(b"\r\n");
        } else {
            out.push(b);
        }
        self.state = State::Middle;
    }
}

/// Writes the dot-stuffed form of a message arriving in pieces; I/O-free.
#[derive(Debug)]
pub struct DotStuffer {
    line_start: bool,
    line_bytes: usize,
    first_byte: u8,
    in_header: bool,
    body_lines_left: Option<u64>,
    done: bool,
}

impl DotStuffer {
    /// The whole message (SMTP DATA, POP3 RETR).
    pub fn whole() -> DotStuffer {
        DotStuffer {
            line_start: true,
            line_bytes: 0,
            first_byte: 0,
            in_header: true,
            body_lines_left: None,
            done: false,
        }
    }

    /// The header, the blank line and `n` body lines (POP3 `TOP msg n`).
    pub fn top(lines: u64) -> DotStuffer {
        DotStuffer {
            body_lines_left: Some(lines),
            ..DotStuffer::whole()
        }
    }

    /// Appends the stuffed form of `input` to `out`; `false` once a `top`
    /// stuffer has written enough (the rest of the message is not needed).
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> bool {
        while !input.is_empty() && !self.done {
            if self.line_start && input[0] == b'.' {
                out.push(b'.');
            }
            // A bare LF ends a line too, so a lenient client can never read a
            // dot line as the end of the response.
            let (piece, ends_line) = match input.iter().position(|&b| b == b'\n') {
                Some(i) => (&input[..=i], true),
                None => (input, false),
            };
            out.extend_from_slice(piece);
            if self.line_bytes == 0 {
                self.first_byte = piece[0];
            }
            input = &input[piece.len()..];
            if !ends_line {
                self.line_start = false;
                self.line_bytes += piece.len();
                continue;
            }
            let content = self.line_bytes + piece.len() - 1;
            let empty = content == 0 || (content == 1 && self.first_byte == b'\r');
            self.line_start = true;
            self.line_bytes = 0;
            if self.in_header {
                if empty {
                    self.in_header = false;
                    self.done = self.body_lines_left == Some(0);
                }
            } else if let Some(left) = &mut self.body_lines_left {
                *left -= 1;
                self.done = *left == 0;
            }
        }
        !self.done
    }

    /// Ends the response: a CRLF if the message did not end with one, then `.CRLF`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `size`; returns the message, whether the
    /// end was found, what followed it, and the bare flag.
    fn receive(input: &[u8], size: usize) -> (Vec<u8>, bool, Vec<u8>, bool) {
        let mut r = DataReceiver::new();
        let mut out = Vec::new();
        let mut rest = Vec::new();
        let mut done = false;
        for piece in input.chunks(size) {
            if done {
                rest.extend_from_slice(piece);
                continue;
            }
            let mut slice = piece;
            if r.feed(&mut slice, &mut out) {
                done = true;
                rest.extend_from_slice(slice);
            }
        }
        (out, done, rest, r.saw_bare_line_ending())
    }

    /// Runs `check` for every split size from 1 to the input length.
    fn at_every_split(input: &[u8], check: impl Fn(&[u8], bool, &[u8], bool, usize)) {
        for size in 1..=input.len() {
            let (out, done, rest, bare) = receive(input, size);
            check(&out, done, &rest, bare, size);
        }
    }

    #[test]
    fn dot_line_ends_data_only_after_crlf() {
        at_every_split(
            b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
            |out, done, rest, bare, size| {
                assert!(done, "split {size}");
                assert_eq!(out, b"Subject: x\r\n\r\nbody\r\n", "split {size}");
                assert_eq!(rest, b"QUIT\r\n", "split {size}");
                assert!(!bare);
            },
        );
    }

    #[test]
    fn an_empty_message_ends_at_once() {
        at_every_split(b".\r\n", |out, done, _, _, _| {
            assert!(done);
            assert!(out.is_empty());
        });
    }

    #[test]
    fn leading_dots_are_unstuffed() {
        at_every_split(
            b"..hidden\r\n...\r\n. x\r\n.\r\n",
            |out, done, _, bare, size| {
                assert!(done);
                assert_eq!(out, b".hidden\r\n..\r\n x\r\n", "split {size}");
                assert!(!bare);
            },
        );
    }

    #[test]
    fn a_dot_inside_a_line_is_not_stuffing() {
        at_every_split(b"a.b\r\nend.\r\n.\r\n", |out, done, _, _, _| {
            assert!(done);
            assert_eq!(out, b"a.b\r\nend.\r\n");
        });
    }

    #[test]
    fn smuggling_vectors_never_end_the_message() {
        for vector in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\n.\r",
        ] {
            let mut input = b"Subject: first\r\n\r\nbody".to_vec();
            input.extend_from_slice(vector);
            input.extend_from_slice(
                b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n",
            );
            let before_end = input.clone();
            input.extend_from_slice(b"\r\n.\r\n");
            at_every_split(&input, |out, done, rest, bare, size| {
                assert!(done, "{vector:?} split {size}");
                assert!(
                    rest.is_empty(),
                    "{vector:?} split {size}: ended early, left {rest:?}"
                );
                assert!(bare, "{vector:?} must be flagged");
                assert!(
                    out.len() >= before_end.len() - 1,
                    "{vector:?}: the smuggled part stays inside the one message"
                );
                // And it is there as content, word for word, in order.
                assert!(out.starts_with(b"Subject: first\r\n\r\nbody"), "{out:?}");
                assert!(
                    out.ends_with(
                        b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n\r\n"
                    ),
                    "{vector:?} split {size}: {out:?}"
                );
            });
        }
    }

    #[test]
    fn the_normalising_reader_turns_bare_line_ends_into_crlf_and_still_never_ends_early() {
        for (input, expected) in [
            (&b"a\nb\rc\r\n.\r\n"[..], &b"a\r\nb\r\nc\r\n"[..]),
            (b"body\n.\nmore\r\n.\r\n", b"body\r\n.\r\nmore\r\n"),
            (b"body\n.\r\nmore\r\n.\r\n", b"body\r\n.\r\nmore\r\n"),
            (b"x\r\r\n.\r\n", b"x\r\n\r\n"),
        ] {
            for size in 1..=input.len() {
                let mut r = DataReceiver::normalizing();
                let mut out = Vec::new();
                let mut done = false;
                let mut rest = Vec::new();
                for piece in input.chunks(size) {
                    let mut slice = piece;
                    if done {
                        rest.extend_from_slice(piece);
                    } else if r.feed(&mut slice, &mut out) {
                        done = true;
                        rest.extend_from_slice(slice);
                    }
                }
                assert!(done && rest.is_empty(), "{input:?} split {size}");
                assert_eq!(out, expected, "{input:?} split {size}");
            }
        }
    }

    #[test]
    fn bare_bytes_are_passed_through_intact() {
        let (out, done, _, bare) = receive(b"a\nb\rc\r\n.\r\n", 1);
        assert!(done && bare);
        assert_eq!(out, b"a\nb\rc\r\n");
    }

    #[test]
    fn a_clean_message_with_long_lines_is_not_flagged() {
        let mut input = vec![b'x'; 10_000];
        input.extend_from_slice(b"\r\n.\r\n");
        let (out, done, _, bare) = receive(&input, 4096);
        assert!(done && !bare);
        assert_eq!(out.len(), 10_002);
    }

    #[test]
    fn the_fixtures_round_trip_through_the_stuffer_and_the_reader() {
        for name in [
            "utf8-headers.eml",
            "m365-journal-report.eml",
            "long-lines.eml",
        ] {
            let message = std::fs::read(format!(
                "{}/tests/fixtures/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            let wire = stuff(DotStuffer::whole(), &message, 4096);
            for size in [1, 2, 3, 64, 1000] {
                let (out, done, _, bare) = receive(&wire, size);
                assert!(done && !bare, "{name}");
                assert_eq!(out, message, "{name} split {size}");
            }
        }
    }

    fn stuff(mut stuffer: DotStuffer, input: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in input.chunks(size) {
            if !stuffer.push(piece, &mut out) {
                break;
            }
        }
        stuffer.finish(&mut out);
        out
    }

    #[test]
    fn lines_starting_with_a_dot_get_another_at_every_split() {
        let message = b"Subject: x\r\n\r\n.hidden\r\n..two\r\n.\r\nend\r\n";
        for size in 1..=message.len() {
            assert_eq!(
                stuff(DotStuffer::whole(), message, size),
                b"Subject: x\r\n\r\n..hidden\r\n...two\r\n..\r\nend\r\n.\r\n",
                "split {size}"
            );
        }
    }

    #[test]
    fn a_message_without_a_final_crlf_still_ends_cleanly() {
        assert_eq!(
            stuff(DotStuffer::whole(), b"Subject: x\r\n\r\nno newline", 4),
            b"Subject: x\r\n\r\nno newline\r\n.\r\n"
        );
        assert_eq!(stuff(DotStuffer::whole(), b"", 1), b".\r\n");
    }

    #[test]
    fn a_dot_after_a_bare_lf_is_stuffed() {
        assert_eq!(
            stuff(DotStuffer::whole(), b"a\n.\r\n", 1),
            b"a\n..\r\n.\r\n"
        );
    }

    #[test]
    fn top_sends_the_header_the_blank_line_and_n_body_lines() {
        let message = b"A: 1\r\nB: 2\r\n\r\nline 1\r\n.line 2\r\nline 3\r\n";
        for size in 1..=message.len() {
            assert_eq!(
                stuff(DotStuffer::top(0), message, size),
                b"A: 1\r\nB: 2\r\n\r\n.\r\n",
                "split {size}"
            );
            assert_eq!(
                stuff(DotStuffer::top(2), message, size),
                b"A: 1\r\nB: 2\r\n\r\nline 1\r\n..line 2\r\n.\r\n",
                "split {size}"
            );
            assert_eq!(
                stuff(DotStuffer::top(99), message, size),
                stuff(DotStuffer::whole(), message, size)
            );
        }
    }

    #[test]
    fn top_of_a_message_without_a_body_sends_everything() {
        assert_eq!(
            stuff(DotStuffer::top(0), b"A: 1\r\nB: 2\r\n", 3),
            b"A: 1\r\nB: 2\r\n.\r\n"
        );
    }

    use proptest::prelude::*;

    use crate::net::line::tests::{split_at_cuts, wire};

    /// Feeds pieces; returns the message, where the end was found (bytes
    /// consumed overall) and the bare flag.
    fn receive_pieces(pieces: &[Vec<u8>], normalizing: bool) -> (Vec<u8>, Option<usize>, bool) {
        let mut r = if normalizing {
            DataReceiver::normalizing()
        } else {
            DataReceiver::new()
        };
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            let mut slice = piece.as_slice();
            if r.feed(&mut slice, &mut out) {
                return (
                    out,
                    Some(consumed + piece.len() - slice.len()),
                    r.saw_bare_line_ending(),
                );
            }
            consumed += piece.len();
        }
        (out, None, r.saw_bare_line_ending())
    }

    proptest! {
        #[test]
        fn the_data_reader_gives_the_same_result_at_any_split(
            input in wire(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
            normalizing in any::<bool>(),
        ) {
            let whole = receive_pieces(std::slice::from_ref(&input), normalizing);
            let split = receive_pieces(&split_at_cuts(&input, &cuts), normalizing);
            prop_assert_eq!(&whole, &split);
            // The end is only ever CRLF . CRLF.
            if let (_, Some(end), _) = whole {
                prop_assert!(end >= 3 && &input[end - 3..end] == b".\r\n");
                prop_assert!(end == 3 || input[..end - 3].ends_with(b"\r\n"));
            }
        }

        #[test]
        fn stuffing_then_reading_gives_the_message_back(
            message in wire(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            // A CRLF message (what the store holds) survives the round trip.
            let crlf: Vec<u8> = String::from_utf8_lossy(&message)
                .replace(['\r', '\n'], "")
                .into_bytes()
                .chunks(40)
                .flat_map(|l| [l, b"\r\n"].concat())
                .collect();
            let mut stuffer = DotStuffer::whole();
            let mut stuffed = Vec::new();
            for piece in split_at_cuts(&crlf, &cuts) {
                stuffer.push(&piece, &mut stuffed);
            }
            stuffer.finish(&mut stuffed);
            let (out, end, bare) = receive_pieces(&[stuffed.clone()], false);
            prop_assert_eq!(end, Some(stuffed.len()));
            prop_assert!(!bare);
            prop_assert_eq!(out, crlf);
        }
    }
}
