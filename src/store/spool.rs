//! The spool: where a message waits while it is being received.
//!
//! A message file starts with metadata that includes the message size, which
//! is unknown until the last byte has arrived. So a message is first streamed
//! into a spool file encrypted under a random key that exists only in memory,
//! and then, size known, re-encrypted from the spool into each mailbox. The
//! spool file is unlinked as soon as it is created: nothing readable, and
//! nothing at all after a crash.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::sealed::{Damage, SealedReader, SealedWriter, damaged};
use super::{StoreError, durable, io_error};
use crate::crypto::{self, Decryptor, Encryptor, STREAM_HEADER_BYTES, StreamKey};

/// A message being received.
pub struct SpoolWriter {
    writer: SealedWriter<BufWriter<File>>,
    file: File,
    key: StreamKey,
    size: u64,
    dir: std::path::PathBuf,
}

impl SpoolWriter {
    /// Creates an anonymous spool file in `dir`.
    pub fn create(dir: &Path) -> io::Result<SpoolWriter> {
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
        Ok(SpoolWriter {
            writer: SealedWriter::new(out, encryptor),
            file,
            key,
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
        let written = self.writer.finish().and_then(|mut w| w.flush());
        written.map_err(io_error(&self.dir, "cannot write the spool"))?;
        Ok(Spool {
            file: self.file,
            key: self.key,
            size: self.size,
        })
    }
}

impl Write for SpoolWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.writer.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// A completely received message.
pub struct Spool {
    file: File,
    key: StreamKey,
    size: u64,
}

impl Spool {
    /// Exact size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads the message from the start. Readers share one file position, so
    /// use one at a time.
    pub fn reader(&self) -> io::Result<impl Read + use<>> {
        let mut file = self.file.try_clone()?;
        file.seek(SeekFrom::Start(0))?;
        let mut src = BufReader::with_capacity(128 * 1024, file);
        let mut header = [0u8; STREAM_HEADER_BYTES];
        src.read_exact(&mut header)?;
        let decryptor =
            Decryptor::start(&self.key, &header).map_err(|_| damaged(Damage::BadRecord))?;
        Ok(SealedReader::new(src, decryptor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
