//! Messages leaving a mailbox through POP3: the QUIT's removal, durable
//! with its custody entries, and what an interrupted one left behind.

use super::*;

impl Mailbox {
    /// Removes messages (a POP3 QUIT of `session`; each name says whether
    /// that session retrieved it) and makes the removal durable: moved
    /// aside into `removing/`, their "deleted" custody entries written, one
    /// flush (the file system's grouped flush, or both directories' fsyncs
    /// where files are flushed one by one) for both, then unlinked. If the
    /// flush fails they go back: the messages stay, and the caller says so.
    pub fn remove_messages(
        &self,
        names: &[(MessageName, bool)],
        session: &str,
    ) -> Result<(), StoreError> {
        if names.is_empty() {
            return Ok(());
        }
        let messages = self.dir.join(MESSAGES_DIR);
        let aside = self.dir.join(REMOVING_DIR);
        durable::create_private_dir(&aside).map_err(io_error(&aside, "cannot create"))?;
        let durability = flush::begin(&messages).map_err(io_error(&messages, "cannot open"))?;
        let mut moved = Vec::with_capacity(names.len());
        for (name, retrieved) in names {
            let (from, to) = (self.message_path(name), aside.join(name.file_name()));
            match fs::rename(&from, &to) {
                Ok(()) => moved.push((from, to, name, *retrieved)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    put_back(&moved);
                    return Err(io_error(&from, "cannot remove")(e));
                }
            }
        }
        let record = |event: custody::Event| -> io::Result<()> {
            for (_, _, name, retrieved) in &moved {
                let mut entry =
                    custody::Entry::new(event).message(self.id().as_str(), &name.file_name());
                entry.session = Some(session.to_owned());
                if event == custody::Event::Deleted {
                    entry.retrieved = Some(*retrieved);
                }
                custody::append(data_root(&self.dir), entry)?;
            }
            Ok(())
        };
        if let Err(e) = record(custody::Event::Deleted) {
            put_back(&moved);
            let _ = record(custody::Event::DeletionUndone);
            return Err(io_error(&self.dir, "cannot write the custody log")(e));
        }
        let synced = match durability {
            flush::Durability::PerFile => {
                durable::sync_dir(&messages).and_then(|()| durable::sync_dir(&aside))
            }
            flush::Durability::Grouped(ticket) => ticket.wait(),
        };
        if let Err(e) = synced {
            put_back(&moved);
            if let Err(e) = record(custody::Event::DeletionUndone) {
                warn!("{e}");
            }
            return Err(io_error(&messages, "cannot sync")(e));
        }
        for (_, to, _, _) in &moved {
            let _ = fs::remove_file(to);
        }
        Ok(())
    }

    /// Removes what an interrupted QUIT left in `removing/`, unless a
    /// session holds the mailbox (it may be that QUIT, still running).
    pub fn finish_interrupted_removals(&self) -> Result<usize, StoreError> {
        let aside = self.dir.join(REMOVING_DIR);
        if !aside.is_dir() {
            return Ok(0);
        }
        let Ok(_session) = self.try_lock() else {
            return Ok(0);
        };
        durable::remove_unlocked_files(&aside).map_err(io_error(&aside, "cannot clean up"))
    }
}

/// Moves messages back from `removing/`.
fn put_back(moved: &[(PathBuf, PathBuf, &MessageName, bool)]) {
    for (from, to, _, _) in moved {
        let _ = fs::rename(to, from);
    }
}
