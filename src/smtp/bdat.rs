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

    use proptest::prelude::*;

    use crate::net::line::tests::{split_at_cuts, wire};

    proptest! {
        #[test]
        fn the_line_ending_check_does_not_depend_on_chunk_boundaries(
            input in wire(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut whole = LineEndingCheck::default();
            whole.feed(&input);
            let mut split = LineEndingCheck::default();
            for piece in split_at_cuts(&input, &cuts) {
                split.feed(&piece);
            }
            prop_assert_eq!(whole.finish(), split.finish());
            let bare = input.windows(2).enumerate().any(|(i, w)| {
                (w[0] == b'\r' && w[1] != b'\n') || (w[1] == b'\n' && w[0] != b'\r') || (i == 0 && w[0] == b'\n')
            }) || input.last() == Some(&b'\r') || input == b"\n";
            prop_assert_eq!(whole.finish(), bare);
        }
    }
}
