//! Line-ending normalisation for messages handed to `mailbox deliver`: local
//! tools (a Postfix pipe transport, a script) write LF; stored messages use
//! CRLF, as POP3 serves them.

use std::io::{self, Write};

/// Writes what it is given with every CRLF, lone LF and lone CR turned into CRLF.
pub struct CrlfWriter<W: Write> {
    inner: W,
    pending_cr: bool,
    out: Vec<u8>,
}

impl<W: Write> CrlfWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> CrlfWriter<W> {
        CrlfWriter {
            inner,
            pending_cr: false,
            out: Vec::new(),
        }
    }

    /// Ends a trailing lone CR and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.pending_cr {
            self.inner.write_all(b"\r\n")?;
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for CrlfWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.clear();
        for &b in buf {
            if self.pending_cr {
                self.pending_cr = false;
                self.out.extend_from_slice(b"\r\n");
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => self.out.extend_from_slice(b"\r\n"),
                other => self.out.push(other),
            }
        }
        self.inner.write_all(&self.out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalise_in_pieces(input: &[u8], piece: usize) -> Vec<u8> {
        let mut w = CrlfWriter::new(Vec::new());
        for chunk in input.chunks(piece) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn every_line_ending_becomes_crlf_at_any_split() {
        let input = b"a\nb\r\nc\rd\r\r\ne\n\nf\r";
        for piece in 1..=input.len() {
            assert_eq!(
                normalise_in_pieces(input, piece),
                b"a\r\nb\r\nc\r\nd\r\n\r\ne\r\n\r\nf\r\n",
                "piece {piece}"
            );
        }
    }

    #[test]
    fn crlf_input_is_unchanged() {
        let input = include_bytes!("../../tests/fixtures/utf8-headers.eml");
        assert_eq!(normalise_in_pieces(input, 7), input);
    }
}
