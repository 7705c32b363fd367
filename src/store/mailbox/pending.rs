//! A message on its way into a mailbox: sealed and fsynced in `tmp/`
//! ([`Mailbox::prepare`]), then renamed into `messages/` and the directory
//! fsynced ([`PendingMessage::commit`]). Until then nothing is visible, and
//! dropping it removes the file.

use super::*;
use crate::store::Source;

impl Mailbox {
    /// Encrypts a received message from the spool into `tmp/` and fsyncs it;
    /// it becomes visible only when the returned message is committed.
    pub fn prepare(
        &self,
        spool: &Spool,
        metadata: &Metadata,
    ) -> Result<PendingMessage, StoreError> {
        let name = MessageName::generate(SystemTime::now(), spool.size());
        let tmp_dir = self.dir.join(TMP_DIR);
        let tmp = tmp_dir.join(name.file_name());
        // Before the write begins: a grouped flush that fails from now on
        // fails this message too.
        let durability = flush::begin(&tmp_dir).map_err(io_error(&tmp_dir, "cannot open"))?;
        let file =
            durable::create_new_private_file(&tmp).map_err(io_error(&tmp, "cannot create"))?;
        let mut pending = PendingMessage {
            tmp,
            mailbox_dir: self.dir.clone(),
            sealed_to: self.info.public_key.clone(),
            messages_dir: self.dir.join(MESSAGES_DIR),
            name,
            file,
            durability,
            committed: false,
            digests: None,
            source: metadata.source,
        };
        durable::try_lock_exclusive(&pending.file)
            .map_err(io_error(&pending.tmp, "cannot lock"))?;
        let metadata = Metadata {
            size: spool.size(),
            ..metadata.clone()
        };
        let write = |pending: &mut PendingMessage| -> io::Result<()> {
            let sealed = Hashing::new(BufWriter::with_capacity(128 * 1024, &pending.file));
            let mut body = Hashing::new(spool.reader()?);
            let mut sealed =
                message::write_message(sealed, &self.info.public_key, &metadata, &mut body)?;
            sealed.inner.flush()?;
            pending.digests = Some(Digests {
                sealed: sealed.hash.finish(),
                size: sealed.count,
                message: body.hash.finish(),
            });
            match pending.durability {
                // fdatasync: a new file's length is part of what it flushes.
                flush::Durability::PerFile => pending.file.sync_data(),
                // The file system's flush after the rename covers it.
                flush::Durability::Grouped(_) => Ok(()),
            }
        };
        write(&mut pending).map_err(io_error(&pending.tmp, "cannot write"))?;
        Ok(pending)
    }
}

/// A message written and fsynced in `tmp/`, not yet visible. Dropping it
/// without committing removes the file.
pub struct PendingMessage {
    tmp: PathBuf,
    mailbox_dir: PathBuf,
    sealed_to: PublicKey,
    messages_dir: PathBuf,
    name: MessageName,
    file: File,
    durability: flush::Durability,
    committed: bool,
    /// Filled in once written: what its custody entry says.
    digests: Option<Digests>,
    source: Source,
}

/// What the custody log says of a stored message.
struct Digests {
    /// SHA-256 of the message file.
    sealed: [u8; 32],
    /// Bytes of the message file.
    size: u64,
    /// SHA-256 of the message as POP3 serves it (the spool's bytes).
    message: [u8; 32],
}

/// Hashes and counts what passes through, either way.
struct Hashing<T> {
    inner: T,
    hash: crypto::Sha256,
    count: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Hashing<T> {
        Hashing {
            inner,
            hash: crypto::Sha256::default(),
            count: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: io::Read> io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl PendingMessage {
    /// Appends its "stored" entry to the custody log.
    fn record_stored(&self) -> io::Result<()> {
        let Some(d) = &self.digests else {
            return Err(io::Error::other("the message was not written whole"));
        };
        let sealed = crypto::seal_to(&d.message, &self.sealed_to).map_err(io::Error::other)?;
        let mut entry = custody::Entry::new(custody::Event::Stored)
            .message(&mailbox_id_of(&self.mailbox_dir), &self.name.file_name());
        entry.source = Some(self.source.as_str().to_owned());
        entry.size = Some(d.size);
        entry.sha256 = Some(crypto::hex(&d.sealed));
        entry.sealed_message_sha256 = Some(crypto::base64_encode(&sealed));
        custody::append(data_root(&self.mailbox_dir), entry).map(|_| ())
    }

    /// The name it will have.
    pub fn name(&self) -> &MessageName {
        &self.name
    }

    /// Makes the file in `tmp/` durable now, before it is committed (the
    /// proxy's rule: the copy is durable before anything goes upstream).
    /// Where files are flushed one by one, [`Mailbox::prepare`] did it.
    pub fn make_durable(&mut self) -> Result<(), StoreError> {
        let tmp_dir = self.mailbox_dir.join(TMP_DIR);
        let again = flush::begin(&tmp_dir).map_err(io_error(&tmp_dir, "cannot open"))?;
        match std::mem::replace(&mut self.durability, again) {
            flush::Durability::PerFile => Ok(()),
            flush::Durability::Grouped(ticket) => {
                ticket.wait().map_err(io_error(&self.tmp, "cannot sync"))
            }
        }
    }

    /// Renames it into `messages/` and makes that durable ([`Self::place`],
    /// then [`Placed::make_durable`]).
    pub fn commit(self) -> Result<CommittedMessage, StoreError> {
        self.place()?.make_durable()
    }

    /// Renames it into `messages/`, where POP3 sees it; [`Placed::make_durable`]
    /// then waits for the file system's grouped flush, or the grouped
    /// directory fsync where files are flushed one by one. Should the
    /// mailbox's key have been reset since it was sealed, it goes among the
    /// messages of the retired key instead (see [`Mailbox::reset_keys`]).
    pub fn place(mut self) -> Result<Placed, StoreError> {
        let keys_path = self.mailbox_dir.join(KEYS_LOCK);
        let keys =
            durable::open_lock_file(&keys_path).map_err(io_error(&keys_path, "cannot open"))?;
        keys.lock_shared()
            .map_err(io_error(&keys_path, "cannot lock"))?;
        let info_path = self.mailbox_dir.join(INFO_FILE);
        let current = beneath::read_regular(&info_path, MAX_SMALL_FILE)
            .map_err(io_error(&info_path, "cannot read"))
            .and_then(|text| parse_info(&text, &info_path))?
            .public_key;
        let dir = if current == self.sealed_to {
            self.messages_dir.clone()
        } else {
            let sets = Mailbox::retired_sets_of(&self.mailbox_dir)?;
            let Some((_, dir)) = sets
                .into_iter()
                .rev()
                .find(|(key, _)| key.as_ref() == Some(&self.sealed_to))
            else {
                return Err(StoreError::Invalid(format!(
                    "{}: the mailbox's key changed while the message was stored, and no retired key matches",
                    self.mailbox_dir.display()
                )));
            };
            warn!(
                "{}: the mailbox's password was reset while {} was stored: kept with the messages of the retired key",
                self.mailbox_dir.display(),
                self.name
            );
            dir
        };
        let dest = dir.join(self.name.file_name());
        fs::rename(&self.tmp, &dest).map_err(io_error(&self.tmp, "cannot move into messages/"))?;
        self.committed = true;
        let committed = CommittedMessage {
            path: dest,
            name: self.name.clone(),
        };
        // Written before the flush below begins, so that it covers both:
        // no acknowledged message without its entry.
        if let Err(e) = self.record_stored() {
            committed.revoke();
            return Err(io_error(&self.mailbox_dir, "cannot write the custody log")(
                e,
            ));
        }
        if let Err(e) = super::touch_marker(&self.mailbox_dir, super::DELIVERED_FILE) {
            log::debug!(
                "{}: cannot record the delivery time: {e}",
                self.mailbox_dir.display()
            );
        }
        let durability = std::mem::replace(&mut self.durability, flush::Durability::PerFile);
        Ok(Placed {
            committed,
            wait: match durability {
                flush::Durability::PerFile => None,
                flush::Durability::Grouped(ticket) => Some(ticket.in_place()),
            },
            dir,
            _keys: keys,
        })
    }
}

/// A message renamed into place (visible to POP3), not yet durable.
pub struct Placed {
    committed: CommittedMessage,
    /// The grouped flush it waits for; `None`: the grouped directory fsync.
    wait: Option<flush::InPlace>,
    dir: PathBuf,
    /// The keys lock, held until the message is durable.
    _keys: File,
}

impl Placed {
    /// Waits for the flush that covers it. A message visible to POP3
    /// before its flush is taken back when the flush fails: an archiver
    /// that fetched it meanwhile holds a copy the sender will send again,
    /// a duplicate, which is safe.
    pub fn make_durable(self) -> Result<CommittedMessage, StoreError> {
        let synced = match self.wait {
            None => durable::sync_dir_grouped(&self.dir),
            Some(in_place) => in_place.wait(),
        };
        match synced {
            Ok(()) => Ok(self.committed),
            Err(e) => {
                self.committed.revoke();
                Err(io_error(&self.dir, "cannot sync")(e))
            }
        }
    }

    /// Takes it back (another copy of the same delivery failed).
    pub fn revoke(self) {
        self.committed.revoke();
    }
}

impl Drop for PendingMessage {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A message made visible by [`PendingMessage::commit`].
#[derive(Debug)]
pub struct CommittedMessage {
    path: PathBuf,
    name: MessageName,
}

impl CommittedMessage {
    /// Its name (the UIDL).
    pub fn name(&self) -> &MessageName {
        &self.name
    }

    /// Takes it back when a multi-mailbox delivery fails half-way, so the
    /// sender's retry does not leave a duplicate.
    pub fn revoke(self) {
        if fs::remove_file(&self.path).is_ok()
            && let Some(dir) = self.path.parent()
        {
            let _ = durable::sync_dir(dir);
        }
        // messages/ (or retired/<stamp>/messages/) of a mailbox directory.
        let Some(mailbox_dir) = self.path.ancestors().find(|p| {
            p.parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n == super::super::MAILBOXES_DIR)
        }) else {
            return;
        };
        let entry = custody::Entry::new(custody::Event::Abandoned)
            .message(&mailbox_id_of(mailbox_dir), &self.name.file_name());
        if let Err(e) = custody::append(data_root(mailbox_dir), entry) {
            warn!("{e}");
        }
    }
}
