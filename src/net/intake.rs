//! Message intake: a message written into its sink as it arrives, with the
//! size limit and the sink's errors handled the one way every session
//! handles them (the SMTP server's DATA and BDAT, the SMTP proxy's DATA,
//! the POP3 proxy's copies).
//!
//! Over the limit, the rest is still read (the client must be answered in
//! step) but nothing more is stored, and the sink is dropped, which throws
//! away what it held. A sink that fails is dropped the same way; the first
//! error is kept for the log.

use std::io::{self, Write};

/// Why a message could not be taken in.
#[derive(Debug)]
pub enum Refused {
    /// It grew past the limit (RFC 5321's 552, RFC 1870 section 6).
    TooLarge,
    /// The sink failed while it was written.
    Failed(io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::TooLarge => f.write_str("larger than the limit"),
            Refused::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// A message arriving into `S`.
pub struct Intake<S> {
    sink: Option<S>,
    size: u64,
    limit: u64,
    error: Option<io::Error>,
}

impl<S: Write> Intake<S> {
    /// Starts writing into `sink`; at most `limit` bytes are taken.
    pub fn new(sink: S, limit: u64) -> Intake<S> {
        Intake {
            sink: Some(sink),
            size: 0,
            limit,
            error: None,
        }
    }

    /// Takes the next bytes of the message.
    pub fn write(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.size > self.limit {
            self.sink = None;
        } else if let Some(sink) = &mut self.sink
            && let Err(e) = sink.write_all(bytes)
        {
            self.error = Some(e);
            self.sink = None;
        }
    }

    /// Bytes received so far, stored or not.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the message is already past the limit.
    pub fn too_large(&self) -> bool {
        self.size > self.limit
    }

    /// The end of the message: the sink with all of it, or why not.
    pub fn finish(self) -> Result<S, Refused> {
        if self.too_large() {
            return Err(Refused::TooLarge);
        }
        match (self.sink, self.error) {
            (Some(sink), None) => Ok(sink),
            (_, Some(e)) => Err(Refused::Failed(e)),
            (None, None) => Err(Refused::Failed(io::Error::other("no sink"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that fails once it holds more than `room` bytes.
    struct Cup {
        held: Vec<u8>,
        room: usize,
    }

    impl Write for Cup {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.held.len() + buf.len() > self.room {
                return Err(io::Error::other("disk full"));
            }
            self.held.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn cup(room: usize) -> Cup {
        Cup {
            held: Vec::new(),
            room,
        }
    }

    #[test]
    fn a_message_within_the_limit_is_all_in_the_sink() {
        let mut i = Intake::new(cup(100), 10);
        i.write(b"hello ");
        i.write(b"world");
        assert_eq!(i.size(), 11);
        assert!(matches!(i.finish(), Err(Refused::TooLarge)));
        let mut i = Intake::new(cup(100), 11);
        i.write(b"hello ");
        i.write(b"world");
        assert_eq!(i.finish().unwrap().held, b"hello world");
    }

    #[test]
    fn past_the_limit_the_rest_is_counted_but_not_stored() {
        let mut i = Intake::new(cup(100), 4);
        i.write(b"abcdef");
        assert!(i.too_large());
        i.write(b"gh");
        assert_eq!(i.size(), 8);
        assert!(matches!(i.finish(), Err(Refused::TooLarge)));
    }

    #[test]
    fn a_failing_sink_is_dropped_and_its_error_kept() {
        let mut i = Intake::new(cup(3), 100);
        i.write(b"ab");
        i.write(b"cd");
        i.write(b"ef");
        assert_eq!(i.size(), 6);
        match i.finish() {
            Err(Refused::Failed(e)) => assert_eq!(e.to_string(), "disk full"),
            other => panic!("{:?}", other.map(|c| c.held)),
        }
    }
}
