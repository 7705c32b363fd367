//! The spool: where a message waits while it is being received.
//!
//! A message file starts with metadata that includes the message size, which
//! is unknown until the last byte has arrived. So a message is first held
//! here, and then, size known, encrypted into each mailbox. A small message
//! is held in memory (wiped afterwards). A large one streams into a spool
//! file encrypted under a random key that exists only in memory; the file is
//! unlinked as soon as it is created: nothing readable, and nothing at all
//! after a crash.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use super::sealed::{Damage, SealedReader, SealedWriter, damaged};
use super::{StoreError, durable, io_error};
use crate::crypto::{self, Decryptor, Encryptor, STREAM_HEADER_BYTES, StreamKey};
use zeroize::Zeroizing;

/// Messages up to this size stay in memory while they are received (and are
/// wiped afterwards); a larger one spills into an encrypted spool file. With
/// the connection limit this bounds the memory spent on messages in transit.
pub const IN_MEMORY_BYTES: usize = 256 * 1024;

/// A message being received.
pub struct SpoolWriter {
    backing: Backing,
    size: u64,
    dir: std::path::PathBuf,
}

enum Backing {
    Memory(Zeroizing<Vec<u8>>),
    File {
        writer: SealedWriter<BufWriter<File>>,
        file: File,
        key: StreamKey,
    },
}

impl Backing {
    /// Creates an anonymous spool file in `dir` holding `start`.
    fn spill(dir: &Path, start: &[u8]) -> io::Result<Backing> {
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
        writer.write_all(start)?;
        Ok(Backing::File { writer, file, key })
    }
}

impl SpoolWriter {
    /// Starts receiving a message; it spills into an anonymous spool file
    /// in `dir` if it grows past [`IN_MEMORY_BYTES`].
    pub fn create(dir: &Path) -> io::Result<SpoolWriter> {
        Ok(SpoolWriter {
            backing: Backing::Memory(Zeroizing::new(Vec::new())),
            size: 0,
            dir: dir.to_path_buf(),
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Completes the spool; it can then be read any number of times.
    pub fn finish(self) -> Result<Spool, StoreError> {
        let contents = match self.backing {
            Backing::Memory(bytes) => Contents::Memory(Shared(Arc::new(bytes))),
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
}

impl Write for SpoolWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.backing {
            Backing::Memory(bytes) if bytes.len() + buf.len() <= IN_MEMORY_BYTES => {
                if bytes.capacity() == 0 {
                    // Allocated once at its bound, so that it never moves
                    // (moving would leave an unwiped copy behind).
                    bytes.reserve_exact(IN_MEMORY_BYTES);
                }
                bytes.extend_from_slice(buf);
                buf.len()
            }
            Backing::Memory(bytes) => {
                self.backing = Backing::spill(&self.dir, bytes)?;
                return self.write(buf);
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
    Memory(Shared),
    File { file: File, key: StreamKey },
}

/// A message held in memory, shared by its readers; wiped with the last.
#[derive(Clone)]
struct Shared(Arc<Zeroizing<Vec<u8>>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
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
            Contents::Memory(bytes) => return Ok(Box::new(io::Cursor::new(bytes.clone()))),
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
        let dir = tempfile::tempdir().unwrap();
        // Made unwritable: a message that fits in memory never touches it.
        let missing = dir.path().join("missing");
        let mut w = SpoolWriter::create(&missing).unwrap();
        let small = vec![b'x'; IN_MEMORY_BYTES];
        w.write_all(&small).unwrap();
        let spool = w.finish().unwrap();
        let mut back = Vec::new();
        spool.reader().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, small);
        let mut w = SpoolWriter::create(&missing).unwrap();
        w.write_all(&small).unwrap();
        assert!(
            w.write_all(b"y").is_err(),
            "one byte more needs the spool file"
        );
    }

    #[test]
    fn a_spool_reads_back_what_was_written_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::create(dir.path()).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
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
