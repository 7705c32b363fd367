//! The record framing shared by message files and spool files: after a
//! header, each record is a big-endian u32 length followed by that many bytes
//! of `crypto_secretstream_xchacha20poly1305_push` output. The last record
//! carries TAG_FINAL and nothing may follow it.

use std::fmt;
use std::io::{self, Read, Write};

use crate::crypto::{CryptoError, Decryptor, Encryptor, STREAM_ABYTES};

/// Plaintext bytes per message record.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Largest plaintext of the metadata record.
pub const METADATA_MAX_BYTES: usize = 1024 * 1024;

/// Why a sealed file cannot be read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The file ends before its final record.
    Truncated,
    /// A record length is impossible.
    BadLength(u32),
    /// A record fails authentication (altered, reordered or wrong key).
    BadRecord,
    /// Bytes follow the final record.
    TrailingBytes,
    /// The header is not what the format requires.
    BadHeader(&'static str),
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Truncated => f.write_str("the file is truncated (no final record)"),
            Damage::BadLength(n) => write!(f, "a record claims an impossible length ({n} bytes)"),
            Damage::BadRecord => f.write_str("a record fails authentication"),
            Damage::TrailingBytes => f.write_str("bytes follow the final record"),
            Damage::BadHeader(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Damage {}

/// Damage as an I/O error, so it can travel through `Read`.
pub fn damaged(d: Damage) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, d)
}

/// The damage inside an I/O error, if that is what it carries.
pub fn damage_of(e: &io::Error) -> Option<&Damage> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Damage>())
}

fn crypto_failed(_: CryptoError) -> io::Error {
    damaged(Damage::BadRecord)
}

/// Encrypts a byte stream into records of at most [`CHUNK_BYTES`].
pub struct SealedWriter<W: Write> {
    out: W,
    encryptor: Encryptor,
    chunk: Vec<u8>,
}

impl<W: Write> SealedWriter<W> {
    /// Starts writing records to `out`; the caller has already written the header.
    pub fn new(out: W, encryptor: Encryptor) -> SealedWriter<W> {
        SealedWriter {
            out,
            encryptor,
            chunk: Vec::with_capacity(CHUNK_BYTES),
        }
    }

    fn emit(&mut self, plain: &[u8], last: bool) -> io::Result<()> {
        let record = self.encryptor.push(plain, last).map_err(io::Error::other)?;
        let len = u32::try_from(record.len()).map_err(io::Error::other)?;
        self.out.write_all(&len.to_be_bytes())?;
        self.out.write_all(&record)
    }

    /// Writes `plain` as one record of its own (the metadata record).
    pub fn write_record(&mut self, plain: &[u8]) -> io::Result<()> {
        debug_assert!(self.chunk.is_empty());
        self.emit(plain, false)
    }

    /// Writes the buffered rest as the final record and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        let rest = std::mem::take(&mut self.chunk);
        self.emit(&rest, true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for SealedWriter<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let total = buf.len();
        while !buf.is_empty() {
            // A full chunk is emitted only once more data arrives, so the final
            // record always carries the last bytes of the stream.
            if self.chunk.len() == CHUNK_BYTES {
                let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_BYTES));
                self.emit(&full, false)?;
            }
            let take = (CHUNK_BYTES - self.chunk.len()).min(buf.len());
            self.chunk.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Decrypts records one at a time and serves them as a byte stream.
pub struct SealedReader<R: Read> {
    src: R,
    decryptor: Decryptor,
    plain: Vec<u8>,
    pos: usize,
    finished: bool,
    /// The ciphertext of the record being read, reused so that each record
    /// costs no allocation and no zeroing.
    record: Vec<u8>,
}

impl<R: Read> SealedReader<R> {
    /// Starts reading records from `src`, positioned just after the header.
    pub fn new(src: R, decryptor: Decryptor) -> SealedReader<R> {
        SealedReader {
            src,
            decryptor,
            plain: Vec::new(),
            pos: 0,
            finished: false,
            record: Vec::new(),
        }
    }

    /// Reads the next record whole; `None` once the final one has been read.
    pub fn next_record(&mut self, max_plain: usize) -> io::Result<Option<Vec<u8>>> {
        if self.finished {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        read_exact_or_truncated(&mut self.src, &mut len)?;
        let len = u32::from_be_bytes(len);
        let len_usize = len as usize;
        if len_usize < STREAM_ABYTES || len_usize > max_plain + STREAM_ABYTES {
            return Err(damaged(Damage::BadLength(len)));
        }
        self.record.resize(len_usize, 0);
        read_exact_or_truncated(&mut self.src, &mut self.record)?;
        let (plain, last) = self.decryptor.pull(&self.record).map_err(crypto_failed)?;
        if last {
            self.finished = true;
            let mut probe = [0u8; 1];
            loop {
                match self.src.read(&mut probe) {
                    Ok(0) => break,
                    Ok(_) => return Err(damaged(Damage::TrailingBytes)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Some(plain))
    }

    /// Whether the final record has been read (the stream is complete and verified).
    pub fn is_finished(&self) -> bool {
        self.finished && self.pos == self.plain.len()
    }
}

fn read_exact_or_truncated<R: Read>(src: &mut R, buf: &mut [u8]) -> io::Result<()> {
    src.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            damaged(Damage::Truncated)
        } else {
            e
        }
    })
}

impl<R: Read> Read for SealedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            match self.next_record(CHUNK_BYTES)? {
                Some(plain) => {
                    self.plain = plain;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.plain.len() - self.pos);
        buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::StreamKey;

    fn seal(parts: &[&[u8]]) -> (StreamKey, [u8; 24], Vec<u8>) {
        let key = StreamKey::generate().unwrap();
        let (enc, header) = Encryptor::start(&key).unwrap();
        let mut w = SealedWriter::new(Vec::new(), enc);
        for p in parts {
            w.write_all(p).unwrap();
        }
        (key, header, w.finish().unwrap())
    }

    fn open(key: &StreamKey, header: &[u8; 24], body: &[u8]) -> io::Result<Vec<u8>> {
        let mut r = SealedReader::new(body, Decryptor::start(key, header).unwrap());
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    /// Offsets where each record starts, and the end.
    fn record_boundaries(body: &[u8]) -> Vec<usize> {
        let mut at = 0;
        let mut out = vec![0];
        while at < body.len() {
            let len = u32::from_be_bytes(body[at..at + 4].try_into().unwrap()) as usize;
            at += 4 + len;
            out.push(at);
        }
        out
    }

    #[test]
    fn round_trips_any_size_in_chunks_of_64_kib() {
        for size in [
            0,
            1,
            CHUNK_BYTES - 1,
            CHUNK_BYTES,
            CHUNK_BYTES + 1,
            3 * CHUNK_BYTES + 7,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let (key, header, body) = seal(&[&data]);
            assert_eq!(open(&key, &header, &body).unwrap(), data, "size {size}");
            let records = record_boundaries(&body).len() - 1;
            assert_eq!(records, size.div_ceil(CHUNK_BYTES).max(1), "size {size}");
        }
    }

    #[test]
    fn writes_split_anyhow_give_the_same_plaintext() {
        let data: Vec<u8> = (0..200_000).map(|i| (i % 256) as u8).collect();
        let pieces: Vec<&[u8]> = data.chunks(4099).collect();
        let (key, header, body) = seal(&pieces);
        assert_eq!(open(&key, &header, &body).unwrap(), data);
    }

    #[test]
    fn truncation_at_every_record_boundary_is_detected() {
        let data = vec![b'x'; 3 * CHUNK_BYTES + 5];
        let (key, header, body) = seal(&[&data]);
        let boundaries = record_boundaries(&body);
        for &cut in &boundaries[..boundaries.len() - 1] {
            let err = open(&key, &header, &body[..cut]).unwrap_err();
            assert_eq!(damage_of(&err), Some(&Damage::Truncated), "cut at {cut}");
        }
        for cut in [1, 3, 4, 100, body.len() - 1] {
            let err = open(&key, &header, &body[..cut]).unwrap_err();
            assert_eq!(damage_of(&err), Some(&Damage::Truncated), "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_is_detected() {
        let (key, header, body) = seal(&[b"hello world, this is a message"]);
        for i in 0..body.len() {
            let mut bad = body.clone();
            bad[i] ^= 0x01;
            assert!(open(&key, &header, &bad).is_err(), "byte {i}");
        }
    }

    #[test]
    fn a_missing_final_tag_is_detected() {
        let key = StreamKey::generate().unwrap();
        let (enc, header) = Encryptor::start(&key).unwrap();
        let mut w = SealedWriter::new(Vec::new(), enc);
        w.write_record(b"only a non-final record").unwrap();
        let body = w.out;
        let err = open(&key, &header, &body).unwrap_err();
        assert_eq!(damage_of(&err), Some(&Damage::Truncated));
    }

    #[test]
    fn trailing_garbage_after_the_final_record_is_detected() {
        let (key, header, mut body) = seal(&[b"message"]);
        body.extend_from_slice(b"garbage");
        let err = open(&key, &header, &body).unwrap_err();
        assert_eq!(damage_of(&err), Some(&Damage::TrailingBytes));
    }

    #[test]
    fn an_impossible_record_length_is_refused_before_allocating() {
        let (key, header, mut body) = seal(&[b"message"]);
        body[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = open(&key, &header, &body).unwrap_err();
        assert_eq!(damage_of(&err), Some(&Damage::BadLength(u32::MAX)));
        body[..4].copy_from_slice(&3u32.to_be_bytes());
        let err = open(&key, &header, &body).unwrap_err();
        assert_eq!(damage_of(&err), Some(&Damage::BadLength(3)));
    }

    #[test]
    fn the_wrong_key_fails_on_the_first_record() {
        let (_, header, body) = seal(&[b"message"]);
        let other = StreamKey::generate().unwrap();
        let err = open(&other, &header, &body).unwrap_err();
        assert_eq!(damage_of(&err), Some(&Damage::BadRecord));
    }
}
