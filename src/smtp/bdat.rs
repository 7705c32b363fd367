//! BDAT chunks (RFC 3030) carry no dot-stuffing; the journal receiver still
//! refuses messages with a bare CR or LF, across chunk boundaries.

/// Watches BDAT chunks (which carry no dot-stuffing) for bare CR or LF,
/// across chunk boundaries.
#[derive(Debug, Default)]
pub struct LineEndingCheck {
    pending_cr: bool,
    bare: bool,
}

impl LineEndingCheck {
    /// Looks at the next bytes of the message.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match (self.pending_cr, b) {
                (true, b'\n') => self.pending_cr = false,
                (true, b'\r') => self.bare = true,
                (true, _) => {
                    self.bare = true;
                    self.pending_cr = false;
                }
                (false, b'\r') => self.pending_cr = true,
                (false, b'\n') => self.bare = true,
                (false, _) => {}
            }
        }
    }

    /// Whether the whole message had a bare CR or LF (a CR at the very end counts).
    pub fn finish(&self) -> bool {
        self.bare || self.pending_cr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdat_check_flags_bare_line_endings_across_chunks() {
        let check = |chunks: &[&[u8]]| {
            let mut c = LineEndingCheck::default();
            for chunk in chunks {
                c.feed(chunk);
            }
            c.finish()
        };
        assert!(!check(&[b"a\r", b"\nb\r\n"]));
        assert!(check(&[b"a\n"]));
        assert!(check(&[b"a\r", b"b\r\n"]));
        assert!(check(&[b"a\r\n", b"b\r"]));
        assert!(check(&[b"a\r\r\n"]));
        assert!(!check(&[b""]));
    }
}
