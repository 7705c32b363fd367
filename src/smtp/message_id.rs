//! The Message-ID of a message as it streams in, for the `result=stored`
//! log line: an administrator matches it against Microsoft's message trace
//! or Google's log search. Fed the message bytes in any pieces (I/O-free,
//! like `dot_stuffing.rs`); it looks only at the header section (RFC 5322
//! §2.2: up to the first empty line), joins folded lines (§2.2.3), keeps at
//! most [`MAX_VALUE`] bytes of the field and gives up after
//! [`MAX_HEADER`] bytes of header without one. Hand-written because it must
//! run inside the DATA reader's stream without holding the message.

/// The most of a Message-ID value kept (longer ones are cut).
pub const MAX_VALUE: usize = 200;
/// The most header bytes looked through.
pub const MAX_HEADER: u64 = 256 * 1024;

const NAME: &[u8] = b"message-id:";

/// Scans for the Message-ID header field.
#[derive(Debug, Default)]
pub struct MessageIdScan {
    /// Bytes seen so far.
    seen: u64,
    /// The start of the current line, up to `NAME.len()` bytes, lowercased.
    line_start: Vec<u8>,
    /// Whether the current line began at a line start (not a continuation
    /// of a long line we stopped looking at).
    at_line_start: bool,
    /// Inside the Message-ID field: its value so far.
    value: Option<Vec<u8>>,
    /// The previous byte was CR.
    after_cr: bool,
    /// The line just ended; the next byte says whether it continues (WSP).
    line_ended: bool,
    /// The last line was empty: the header section is over.
    done: bool,
    found: Option<String>,
}

impl MessageIdScan {
    /// A scanner at the start of a message.
    pub fn new() -> MessageIdScan {
        MessageIdScan {
            at_line_start: true,
            ..MessageIdScan::default()
        }
    }

    /// Feeds the next bytes of the message.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.done {
                return;
            }
            self.seen += 1;
            if self.seen > MAX_HEADER {
                self.finish_field();
                self.done = true;
                return;
            }
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        if self.line_ended {
            self.line_ended = false;
            if b == b' ' || b == b'\t' {
                // A folded continuation of the same field.
                if let Some(value) = &mut self.value {
                    push_bounded(value, b' ');
                }
                return;
            }
            self.finish_field();
            if b == b'\r' || b == b'\n' {
                // An empty line: the body starts.
                self.done = true;
                return;
            }
            self.line_start.clear();
            self.at_line_start = true;
        }
        match b {
            b'\r' => self.after_cr = true,
            b'\n' => {
                self.after_cr = false;
                self.line_ended = true;
            }
            _ => {
                self.after_cr = false;
                if let Some(value) = &mut self.value {
                    push_bounded(value, b);
                } else if self.at_line_start && self.line_start.len() < NAME.len() {
                    self.line_start.push(b.to_ascii_lowercase());
                    if self.line_start == NAME {
                        self.value = Some(Vec::new());
                    } else if !NAME.starts_with(&self.line_start) {
                        self.at_line_start = false;
                    }
                }
            }
        }
    }

    fn finish_field(&mut self) {
        if let Some(value) = self.value.take()
            && self.found.is_none()
        {
            self.found = Some(escape(&value));
        }
    }

    /// The Message-ID found, escaped for a log line (printable ASCII, with
    /// `\xNN` for anything else and for `"` and `\`), or `None`.
    pub fn message_id(&mut self) -> Option<&str> {
        if !self.done {
            // The message ended inside its header section.
            self.finish_field();
        }
        self.found.as_deref().filter(|v| !v.is_empty())
    }
}

fn push_bounded(value: &mut Vec<u8>, b: u8) {
    if value.len() < MAX_VALUE {
        value.push(b);
    }
}

fn escape(value: &[u8]) -> String {
    let trimmed = value.trim_ascii();
    let mut out = String::with_capacity(trimmed.len());
    for &b in trimmed {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(message: &[u8], piece: usize) -> Option<String> {
        let mut scan = MessageIdScan::new();
        for chunk in message.chunks(piece.max(1)) {
            scan.feed(chunk);
        }
        scan.message_id().map(str::to_owned)
    }

    fn scan_at_every_split(message: &[u8]) -> Option<String> {
        let whole = scan_in_pieces(message, message.len());
        for piece in 1..message.len() {
            assert_eq!(scan_in_pieces(message, piece), whole, "piece {piece}");
        }
        whole
    }

    #[test]
    fn the_message_id_is_found_at_every_split() {
        let m = b"From: a@example.org\r\nMessage-ID: <abc.123@example.org>\r\nSubject: x\r\n\r\nbody\r\n";
        assert_eq!(
            scan_at_every_split(m).as_deref(),
            Some("<abc.123@example.org>")
        );
    }

    #[test]
    fn a_folded_message_id_is_joined_and_the_name_matched_in_any_case() {
        let m = b"message-id:\r\n <folded@example.org>\r\nTo: b@example.org\r\n\r\n";
        assert_eq!(
            scan_at_every_split(m).as_deref(),
            Some("<folded@example.org>")
        );
    }

    #[test]
    fn a_message_id_in_the_body_or_inside_another_field_does_not_count() {
        let m = b"Subject: Message-ID: <no@example.org>\r\nX-Message-ID: <no2@example.org>\r\n\r\nMessage-ID: <body@example.org>\r\n";
        assert_eq!(scan_at_every_split(m), None);
    }

    #[test]
    fn the_value_is_escaped_and_bounded() {
        let mut m = b"Message-ID: <a\"b\\c\x7f\xc3\xa9".to_vec();
        m.extend(std::iter::repeat_n(b'x', 500));
        m.extend_from_slice(b">\r\n\r\n");
        let id = scan_at_every_split(&m).unwrap();
        assert!(id.starts_with("<a\\x22b\\x5cc\\x7f\\xc3\\xa9x"), "{id}");
        assert!(id.len() < MAX_VALUE + 40, "{}", id.len());
        assert!(id.bytes().all(|b| b.is_ascii_graphic()));
    }

    #[test]
    fn a_bare_lf_message_and_one_that_ends_in_its_header_still_give_the_id() {
        assert_eq!(
            scan_at_every_split(b"Message-ID: <lf@example.org>\nSubject: y\n\nbody").as_deref(),
            Some("<lf@example.org>")
        );
        assert_eq!(
            scan_at_every_split(b"Message-ID: <end@example.org>").as_deref(),
            Some("<end@example.org>")
        );
    }
}
