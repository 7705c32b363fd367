//! The spool: where a message waits while it is being received.
//!
//! A message file starts with metadata that includes the message size, which
//! is unknown until the last byte has arrived. So a message is first held
//! here, and then, size known, encrypted into each mailbox. A message of up
//! to 4 MiB is held in memory (wiped afterwards) while the memory budget of
//! all messages in transit allows. A larger one streams into a spool
//! file encrypted under a random key that exists only in memory; the file is
//! unlinked as soon as it is created: nothing readable, and nothing at all
//! after a crash.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::sealed::{Damage, SealedReader, SealedWriter, damaged};
use super::{StoreError, durable, io_error};
use crate::crypto::{self, Decryptor, Encryptor, STREAM_HEADER_BYTES, StreamKey};
use zeroize::Zeroizing;

/// Messages up to this size may stay in memory while they are received
/// (and are wiped afterwards); a larger one spills into an encrypted spool
/// file. 4 MiB holds nearly every journal report, so the common message is
/// never written twice.
pub const MAX_IN_MEMORY_BYTES: usize = 4 * 1024 * 1024;

/// Memory is taken in chunks of this size, each allocated once at its
/// bound, so that nothing is ever moved (a move would leave an unwiped copy).
const CHUNK_BYTES: usize = 256 * 1024;

/// What all messages in transit may hold in memory together. A message that
/// would go beyond it spills into a spool file instead, so memory stays
/// bounded whatever the number of connections.
pub const IN_MEMORY_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of the memory budget in use, by every message in transit.
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub const fn new(limit: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Takes `bytes` if they fit.
    fn take(&'static self, bytes: usize) -> Option<Reservation> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .ok()
            .map(|_| Reservation {
                budget: self,
                bytes,
            })
    }
}

static BUDGET: Budget = Budget::new(IN_MEMORY_BUDGET_BYTES);

/// Budget held by one chunk; given back when the chunk is dropped.
struct Reservation {
    budget: &'static Budget,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// One chunk of a message held in memory, wiped when dropped.
struct Chunk {
    bytes: Zeroizing<Vec<u8>>,
    _reservation: Reservation,
}

/// A message being received.
pub struct SpoolWriter {
    backing: Backing,
    size: u64,
    dir: std::path::PathBuf,
    budget: &'static Budget,
}

enum Backing {
    Memory(Vec<Chunk>),
    File {
        writer: SealedWriter<BufWriter<File>>,
        file: File,
        key: StreamKey,
    },
}

impl Backing {
    /// Creates an anonymous spool file in `dir` holding what `chunks` hold.
    fn spill(dir: &Path, chunks: &[Chunk]) -> io::Result<Backing> {
        let mut random = [0u8; 8];
        crypto::random_bytes(&mut random);
        let path = dir.join(format!("{:016x}.spool", u64::from_le_bytes(random)));
        let file = durable::create_new_private_file(&path)?;
        // Locked so that a concurrent start-up clean-up does not take it for a
        // crash leftover in the moment before it is unlinked.
        durable::try_lock_exclusive(&file)?;
        fs::remove_file(&path)?;
        let key = StreamKey::generate().map_err(io::Error::other)?;
        let (encryptor, header) = Encryptor::start(&key).map_err(io::Error::other)?;
        let mut out = BufWriter::with_capacity(128 * 1024, file.try_clone()?);
        out.write_all(&header)?;
        let mut writer = SealedWriter::new(out, encryptor);
        for chunk in chunks {
            writer.write_all(&chunk.bytes)?;
        }
        Ok(Backing::File { writer, file, key })
    }
}

impl SpoolWriter {
    /// Starts receiving a message; it spills into an anonymous spool file
    /// in `dir` if it grows past [`MAX_IN_MEMORY_BYTES`] or the memory
    /// budget of all messages in transit is spent.
    pub fn create(dir: &Path) -> io::Result<SpoolWriter> {
        Ok(SpoolWriter::with_budget(dir, &BUDGET))
    }

    fn with_budget(dir: &Path, budget: &'static Budget) -> SpoolWriter {
        SpoolWriter {
            backing: Backing::Memory(Vec::new()),
            size: 0,
            dir: dir.to_path_buf(),
            budget,
        }
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Completes the spool; it can then be read any number of times.
    pub fn finish(self) -> Result<Spool, StoreError> {
        let contents = match self.backing {
            Backing::Memory(chunks) => Contents::Memory(Arc::new(chunks)),
            Backing::File { writer, file, key } => {
                let written = writer.finish().and_then(|mut w| w.flush());
                written.map_err(io_error(&self.dir, "cannot write the spool"))?;
                Contents::File { file, key }
            }
        };
        Ok(Spool {
            contents,
            size: self.size,
        })
    }

    /// Room for `more` bytes in memory: the last chunk's, or a new chunk's
    /// within the message's bound and the budget.
    fn memory_room(&self, chunks: &mut Vec<Chunk>, more: usize) -> Option<()> {
        if chunks.last().is_some_and(|c| c.bytes.len() < CHUNK_BYTES) {
            return Some(());
        }
        if self.size as usize + more > MAX_IN_MEMORY_BYTES {
            return None;
        }
        let reservation = self.budget.take(CHUNK_BYTES)?;
        let mut bytes = Zeroizing::new(Vec::new());
        bytes.reserve_exact(CHUNK_BYTES);
        chunks.push(Chunk {
            bytes,
            _reservation: reservation,
        });
        Some(())
    }
}

impl Write for SpoolWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.backing {
            Backing::Memory(chunks) => {
                let mut taken = std::mem::take(chunks);
                let room = self.memory_room(&mut taken, buf.len());
                match room {
                    Some(()) => {
                        let last = taken.last_mut().expect("a chunk with room");
                        let n = buf.len().min(CHUNK_BYTES - last.bytes.len());
                        last.bytes.extend_from_slice(&buf[..n]);
                        self.backing = Backing::Memory(taken);
                        n
                    }
                    None => {
                        self.backing = Backing::spill(&self.dir, &taken)?;
                        // The chunks (and their budget) go here, wiped.
                        drop(taken);
                        return self.write(buf);
                    }
                }
            }
            Backing::File { writer, .. } => writer.write(buf)?,
        };
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.backing {
            Backing::Memory(_) => Ok(()),
            Backing::File { writer, .. } => writer.flush(),
        }
    }
}

/// A completely received message.
pub struct Spool {
    contents: Contents,
    size: u64,
}

enum Contents {
    /// Shared by its readers; wiped and its budget returned with the last.
    Memory(Arc<Vec<Chunk>>),
    File {
        file: File,
        key: StreamKey,
    },
}

/// Reads a message held in memory, chunk after chunk.
struct ChunkReader {
    chunks: Arc<Vec<Chunk>>,
    index: usize,
    offset: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(chunk) = self.chunks.get(self.index) {
            let rest = &chunk.bytes[self.offset..];
            if rest.is_empty() {
                self.index += 1;
                self.offset = 0;
                continue;
            }
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.offset += n;
            return Ok(n);
        }
        Ok(0)
    }
}

impl Spool {
    /// Exact size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads the message from the start. Readers of a spilled spool share one
    /// file position, so use one at a time.
    pub fn reader(&self) -> io::Result<Box<dyn Read + Send>> {
        let (file, key) = match &self.contents {
            Contents::Memory(chunks) => {
                return Ok(Box::new(ChunkReader {
                    chunks: Arc::clone(chunks),
                    index: 0,
                    offset: 0,
                }));
            }
            Contents::File { file, key } => (file, key),
        };
        let mut file = file.try_clone()?;
        file.seek(SeekFrom::Start(0))?;
        let mut src = BufReader::with_capacity(128 * 1024, file);
        let mut header = [0u8; STREAM_HEADER_BYTES];
        src.read_exact(&mut header)?;
        let decryptor = Decryptor::start(key, &header).map_err(|_| damaged(Damage::BadRecord))?;
        Ok(Box::new(SealedReader::new(src, decryptor)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_message_stays_in_memory_and_a_large_one_spills() {
        static OWN: Budget = Budget::new(IN_MEMORY_BUDGET_BYTES);
        let dir = tempfile::tempdir().unwrap();
        // Made unwritable: a message that fits in memory never touches it.
        let missing = dir.path().join("missing");
        let mut w = SpoolWriter::with_budget(&missing, &OWN);
        let small: Vec<u8> = (0..MAX_IN_MEMORY_BYTES).map(|i| (i % 251) as u8).collect();
        for piece in small.chunks(10_000) {
            w.write_all(piece).unwrap();
        }
        let spool = w.finish().unwrap();
        let mut back = Vec::new();
        spool.reader().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, small);
        assert_eq!(OWN.used.load(Ordering::SeqCst), MAX_IN_MEMORY_BYTES);
        drop(spool);
        assert_eq!(OWN.used.load(Ordering::SeqCst), 0, "the budget comes back");
        let mut w = SpoolWriter::with_budget(&missing, &OWN);
        w.write_all(&small).unwrap();
        assert!(
            w.write_all(b"y").is_err(),
            "one byte more needs the spool file"
        );
    }

    #[test]
    fn when_the_budget_is_spent_messages_spill_and_read_back_whole() {
        static SMALL: Budget = Budget::new(2 * CHUNK_BYTES);
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..CHUNK_BYTES + 10).map(|i| (i % 249) as u8).collect();
        let mut first = SpoolWriter::with_budget(dir.path(), &SMALL);
        first.write_all(&data).unwrap();
        assert_eq!(SMALL.used.load(Ordering::SeqCst), 2 * CHUNK_BYTES);
        // No budget left: the second message spills at once (needs the dir).
        let missing = dir.path().join("missing");
        let mut second = SpoolWriter::with_budget(&missing, &SMALL);
        assert!(second.write_all(b"x").is_err());
        let mut second = SpoolWriter::with_budget(dir.path(), &SMALL);
        second.write_all(&data).unwrap();
        for spool in [first.finish().unwrap(), second.finish().unwrap()] {
            let mut back = Vec::new();
            spool.reader().unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
        }
        assert_eq!(SMALL.used.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_spool_reads_back_what_was_written_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::create(dir.path()).unwrap();
        let data: Vec<u8> = (0..MAX_IN_MEMORY_BYTES as u32 + 300_000)
            .map(|i| (i % 253) as u8)
            .collect();
        for piece in data.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let spool = w.finish().unwrap();
        assert_eq!(spool.size(), data.len() as u64);
        for _ in 0..2 {
            let mut back = Vec::new();
            spool.reader().unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
        }
    }
}
