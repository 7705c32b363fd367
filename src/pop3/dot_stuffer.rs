//! Multi-line POP3 responses (RFC 1939 section 3): every line that begins
//! with `.` gets one more, and `.CRLF` ends the response. For TOP, only the
//! header, the blank line and the first n body lines go out.

/// Dot-stuffs a message arriving in pieces; I/O-free.
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
    /// For RETR: the whole message.
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

    /// For `TOP msg n`: the header and `n` body lines.
    pub fn top(lines: u64) -> DotStuffer {
        DotStuffer {
            body_lines_left: Some(lines),
            ..DotStuffer::whole()
        }
    }

    /// Appends the stuffed form of `input` to `out`; `false` once TOP has
    /// sent enough (the rest of the message is not needed).
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
}
