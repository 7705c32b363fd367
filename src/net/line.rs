//! Assembling command lines from arbitrarily split input, with a length cap
//! enforced while the bytes arrive (a client cannot make us buffer more than
//! the cap, however long its line).

/// One command line, or the news that it was too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The line without its line ending.
    Complete(Vec<u8>),
    /// The line exceeded the cap; its bytes up to the line end were discarded.
    TooLong,
}

/// Collects bytes until LF. A CR before the LF is removed; command lines
/// (unlike message data) accept a bare LF as the line end, as most servers do.
#[derive(Debug)]
pub struct LineAssembler {
    buf: Vec<u8>,
    max: usize,
    discarding: bool,
}

impl LineAssembler {
    /// `max` counts the whole line including CRLF.
    pub fn new(max: usize) -> LineAssembler {
        LineAssembler {
            buf: Vec::new(),
            max,
            discarding: false,
        }
    }

    /// Consumes bytes from the front of `input` until a line is complete;
    /// `None` when `input` ran out first (the partial line is kept).
    pub fn next_line(&mut self, input: &mut &[u8]) -> Option<Line> {
        let newline = input.iter().position(|&b| b == b'\n');
        let take = newline.map_or(input.len(), |i| i + 1);
        let (piece, rest) = input.split_at(take);
        *input = rest;
        if !self.discarding {
            if self.buf.len() + piece.len() > self.max {
                self.discarding = true;
                self.buf = Vec::new();
            } else {
                self.buf.extend_from_slice(piece);
            }
        }
        newline?;
        if std::mem::take(&mut self.discarding) {
            return Some(Line::TooLong);
        }
        let mut line = std::mem::take(&mut self.buf);
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(Line::Complete(line))
    }

    /// Whether no partial line is pending.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && !self.discarding
    }

    /// Forgets any partial line (after STARTTLS/STLS every buffered byte is dropped).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.discarding = false;
    }

    /// Whether the line being assembled is already over the cap (its
    /// bytes are being discarded until its line end).
    pub fn over_long(&self) -> bool {
        self.discarding
    }

    /// Hands back the partial line, for a reader that takes raw bytes.
    fn take_partial(&mut self) -> Vec<u8> {
        self.discarding = false;
        std::mem::take(&mut self.buf)
    }
}

/// Command lines waiting to be handled one at a time: what a client
/// pipelined after a command whose answer is still streaming stays here.
#[derive(Debug)]
pub struct CommandQueue {
    lines: LineAssembler,
    pending: Vec<u8>,
}

impl CommandQueue {
    /// Lines of at most `max` bytes, CRLF included.
    pub fn new(max: usize) -> CommandQueue {
        CommandQueue {
            lines: LineAssembler::new(max),
            pending: Vec::new(),
        }
    }

    /// Adds bytes from the client.
    pub fn push(&mut self, input: &[u8]) {
        self.pending.extend_from_slice(input);
    }

    /// The next complete line, if there is one.
    pub fn next_line(&mut self) -> Option<Line> {
        let mut rest: &[u8] = &self.pending;
        let line = self.lines.next_line(&mut rest);
        let consumed = self.pending.len() - rest.len();
        self.pending.drain(..consumed);
        line
    }

    /// Whether bytes are waiting that have not been looked at.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether nothing at all is buffered.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.lines.is_empty()
    }

    /// Drops everything buffered (after STLS).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.lines.clear();
    }

    /// Whether the line being assembled is already over the cap.
    pub fn over_long(&self) -> bool {
        self.lines.over_long()
    }

    /// Everything buffered, a partial line first, for a reader that takes
    /// raw bytes; what it does not use goes back with [`CommandQueue::unread`].
    pub fn take_all(&mut self) -> Vec<u8> {
        let mut all = self.lines.take_partial();
        all.append(&mut self.pending);
        all
    }

    /// Puts bytes back in front of what is waiting.
    pub fn unread(&mut self, bytes: &[u8]) {
        self.pending.splice(0..0, bytes.iter().copied());
    }

    /// Hands the raw bytes waiting (message data, which is not lines) to
    /// `take`, which advances the slice past what it used.
    pub fn take_raw(&mut self, take: impl FnOnce(&mut &[u8])) {
        let mut rest: &[u8] = &self.pending;
        take(&mut rest);
        let used = self.pending.len() - rest.len();
        self.pending.drain(..used);
    }
}

/// What a session knows of its client's connection: whether TLS is on, and
/// the bytes not handled yet.
#[derive(Debug)]
pub struct ClientSide {
    /// The TLS parameters, once TLS is on.
    pub tls: Option<super::stream::TlsInfo>,
    /// Bytes waiting to be handled.
    pub queue: CommandQueue,
}

impl ClientSide {
    /// A client connection (already TLS on implicit-TLS listeners) whose
    /// command lines may be `max_line` bytes long.
    pub fn new(tls: Option<super::stream::TlsInfo>, max_line: usize) -> ClientSide {
        ClientSide {
            tls,
            queue: CommandQueue::new(max_line),
        }
    }

    /// TLS is up: every byte that came before it is dropped (RFC 3207
    /// section 4.2, RFC 2595 section 4). The session then forgets its own
    /// state too.
    pub fn upgraded(&mut self, tls: super::stream::TlsInfo) {
        self.tls = Some(tls);
        self.queue.clear();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Feeds `input` in pieces of `size` bytes and collects the lines.
    pub fn lines_at_split(input: &[u8], size: usize, max: usize) -> Vec<Line> {
        let mut assembler = LineAssembler::new(max);
        let mut out = Vec::new();
        for piece in input.chunks(size) {
            let mut rest = piece;
            while let Some(line) = assembler.next_line(&mut rest) {
                out.push(line);
            }
            assert!(rest.is_empty());
        }
        out
    }

    fn complete(s: &str) -> Line {
        Line::Complete(s.as_bytes().to_vec())
    }

    #[test]
    fn lines_end_at_crlf_or_lf_at_every_split() {
        let input = b"EHLO a\r\nNOOP\nQUIT\r\n";
        for size in 1..=input.len() {
            assert_eq!(
                lines_at_split(input, size, 512),
                vec![complete("EHLO a"), complete("NOOP"), complete("QUIT")],
                "split {size}"
            );
        }
    }

    #[test]
    fn an_over_long_line_is_reported_once_and_the_next_line_is_intact() {
        let mut input = vec![b'x'; 2000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        for size in [1, 7, 100, 511, 512, 513, 4096] {
            assert_eq!(
                lines_at_split(&input, size, 512),
                vec![Line::TooLong, complete("NOOP")],
                "split {size}"
            );
        }
    }

    #[test]
    fn the_cap_counts_the_line_ending() {
        let mut exact = vec![b'a'; 10];
        exact.extend_from_slice(b"\r\n");
        assert_eq!(lines_at_split(&exact, 3, 12), vec![complete("aaaaaaaaaa")]);
        assert_eq!(lines_at_split(&exact, 3, 11), vec![Line::TooLong]);
    }

    #[test]
    fn a_command_queue_hands_out_one_line_at_a_time_and_keeps_the_rest() {
        let mut q = CommandQueue::new(100);
        q.push(b"STAT\r\nRETR 1\r\nNO");
        assert_eq!(q.next_line(), Some(complete("STAT")));
        assert!(q.has_pending());
        assert_eq!(q.next_line(), Some(complete("RETR 1")));
        assert_eq!(q.next_line(), None);
        assert!(!q.has_pending() && !q.is_empty(), "a partial line is kept");
        q.push(b"OP\r\n");
        assert_eq!(q.next_line(), Some(complete("NOOP")));
        assert!(q.is_empty());
        q.push(b"QUIT\r\n");
        q.clear();
        assert_eq!(q.next_line(), None);
    }

    #[test]
    fn clear_drops_a_partial_line() {
        let mut a = LineAssembler::new(100);
        let mut input: &[u8] = b"MAIL FR";
        assert_eq!(a.next_line(&mut input), None);
        assert!(!a.is_empty());
        a.clear();
        let mut input: &[u8] = b"NOOP\r\n";
        assert_eq!(a.next_line(&mut input), Some(complete("NOOP")));
    }

    use proptest::prelude::*;

    /// Bytes where line ends and carriage returns are common.
    pub fn wire() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                any::<u8>(),
                Just(b'\n'),
                Just(b'\r'),
                Just(b'.'),
                Just(b'A')
            ],
            0..1500,
        )
    }

    /// Splits `input` at the given cut points (taken modulo its length).
    pub fn split_at_cuts(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut pieces = Vec::new();
        let mut start = 0;
        for p in points.into_iter().chain([input.len()]) {
            pieces.push(input[start..p.max(start)].to_vec());
            start = p.max(start);
        }
        pieces
    }

    fn lines_of(pieces: &[Vec<u8>], max: usize) -> Vec<Line> {
        let mut assembler = LineAssembler::new(max);
        let mut out = Vec::new();
        for piece in pieces {
            let mut rest = piece.as_slice();
            while let Some(line) = assembler.next_line(&mut rest) {
                out.push(line);
            }
            assert!(rest.is_empty());
        }
        out
    }

    proptest! {
        #[test]
        fn any_input_at_any_split_gives_the_same_lines(
            input in wire(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
            max in 2usize..300,
        ) {
            let whole = lines_of(std::slice::from_ref(&input), max);
            let split = lines_of(&split_at_cuts(&input, &cuts), max);
            prop_assert_eq!(&whole, &split);
            for line in whole {
                if let Line::Complete(l) = line {
                    prop_assert!(l.len() < max && !l.contains(&b'\n'));
                }
            }
        }
    }
}
